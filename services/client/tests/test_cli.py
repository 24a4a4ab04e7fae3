"""The command line's own logic: argument parsing and exit codes (services are covered by contract tests)."""

from __future__ import annotations

import grpc
import pytest

from imagineer_client import cli
from imagineer_client.client import ImagineerError, Lora


@pytest.mark.parametrize("text, lora", [("12", Lora("12", 1.0)), ("12:0.5", Lora("12", 0.5)),
                                        ("7:-1", Lora("7", -1.0))])
def test_lora_parsing(text, lora):
    assert Lora.parse(text) == lora


def test_bad_lora_is_bad_input(capsys):
    assert cli.main(["--generator", "127.0.0.1:1", "generate", "x", "--lora", "3:heavy"]) == cli.EXIT_BAD_INPUT
    assert "ID:WEIGHT" in capsys.readouterr().out


def test_unreachable_generator_is_a_fault_not_bad_input():
    # Port 1 refuses connections: UNAVAILABLE is the server side's problem, exit code 1.
    assert cli.main(["--generator", "127.0.0.1:1", "generate", "a fox"]) == cli.EXIT_FAULT


@pytest.mark.parametrize("code, bad", [(grpc.StatusCode.INVALID_ARGUMENT, True), (grpc.StatusCode.NOT_FOUND, True),
                                       (grpc.StatusCode.UNAVAILABLE, False), (grpc.StatusCode.INTERNAL, False),
                                       (grpc.StatusCode.RESOURCE_EXHAUSTED, False)])
def test_error_classes(code, bad):
    assert ImagineerError("x", code).bad_input is bad


def test_generate_options_parse():
    args = cli.build_parser().parse_args(["generate", "a castle at dusk", "--steps", "20", "--seed", "7",
                                          "--lora", "5:0.8", "--lora", "6", "-n", "4", "--out", "/tmp/x"])
    assert (args.prompt, args.steps, args.seed, args.n, args.out) == ("a castle at dusk", 20, 7, 4, "/tmp/x")
    assert args.lora == ["5:0.8", "6"]


@pytest.mark.parametrize("argv", [
    ["--json", "--catalog", "h:1", "albums", "list"],
    ["albums", "list", "--json", "--catalog", "h:1"],
    ["--catalog", "h:1", "albums", "list", "--json"],
])
def test_global_options_go_before_or_after_the_command(argv):
    args = cli.build_parser().parse_args(argv)
    assert args.json is True and args.catalog == "h:1"


def test_global_options_after_the_command_do_not_erase_those_before():
    args = cli.build_parser().parse_args(["--token", "t0", "--trainer", "x:9", "runs", "list", "--json"])
    assert (args.token, args.trainer, args.json, args.catalog) == ("t0", "x:9", True, None)
    plain = cli.build_parser().parse_args(["images", "list"])
    assert plain.json is False and plain.token is None


def test_a_local_file_that_cannot_be_written_is_bad_input_not_a_traceback(tmp_path, capsys):
    target = tmp_path / "missing-folder" / "backup.tar"
    # The catalog is unreachable too, but the file fails first: nothing is asked of the server.
    assert cli.main(["--catalog", "127.0.0.1:1", "backup", str(target)]) == cli.EXIT_BAD_INPUT
    assert "No such file or directory" in capsys.readouterr().out
