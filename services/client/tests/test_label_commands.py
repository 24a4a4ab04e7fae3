"""`imagineer label` and `imagineer labeling`: parsing and exit codes (the service side is in contract tests)."""

from __future__ import annotations

import pytest

from imagineer_client import cli


def test_label_targets_and_options_parse():
    args = cli.build_parser().parse_args(["--json", "label", "album", "12", "--labeler", "anthropic", "--no-wait"])
    assert (args.label_kind, args.id, args.labeler, args.no_wait, args.json) == ("album", "12", "anthropic", True, True)
    args = cli.build_parser().parse_args(["label", "image", "7"])
    assert (args.label_kind, args.id, args.labeler) == ("image", "7", "")


def test_unknown_labeler_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(["label", "image", "7", "--labeler", "gpt"])
    assert raised.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["labeling", "list"], ["labeling", "watch", "x"], ["labeling", "cancel", "x"],
                                  ["label", "image", "1"]])
def test_an_unreachable_trainer_is_a_fault(argv):
    assert cli.main(["--trainer", "127.0.0.1:1", *argv]) == cli.EXIT_FAULT
