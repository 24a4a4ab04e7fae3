"""The local captioner on a tiny BLIP model built offline in the session (real from_pretrained loading)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from imagineer_trainer.labelers.base import LabelerUnavailable, LabelingError
from imagineer_trainer.labelers.local import LocalCaptioner, LocalSettings, check_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory):
    from imagineer_trainer.labelers.tiny_captioner import build_tiny_captioner

    return build_tiny_captioner(tmp_path_factory.mktemp("captioner") / "tiny-blip")


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_saved_folder_is_a_blip_captioner_whose_tokenizer_knows_words(tiny_captioner_dir):
    check_model_dir(tiny_captioner_dir)
    from transformers import BlipProcessor

    processor = BlipProcessor.from_pretrained(str(tiny_captioner_dir), local_files_only=True)
    ids = processor.tokenizer("a photo of a cat").input_ids
    assert processor.tokenizer.unk_token_id not in ids and len(ids) == 7


def test_captions_load_lazily_and_are_deterministic(tiny_captioner_dir):
    captioner = LocalCaptioner(LocalSettings(model_dir=tiny_captioner_dir, device="cpu", max_new_tokens=8))
    assert captioner._loaded is None  # nothing is loaded before the first image
    first = captioner.label(png())
    assert captioner._loaded is not None
    assert first.caption.startswith("a picture of") and len(first.caption.split()) > 3
    assert first.tags == () and first.nsfw is None  # a captioner neither tags nor rates
    assert captioner.label(png()) == first
    assert captioner.source_model == "local:tiny-blip" and captioner.source_prompt == "a picture of"


def test_unconditional_captions(tiny_captioner_dir):
    captioner = LocalCaptioner(LocalSettings(model_dir=tiny_captioner_dir, device="cpu", prompt="", max_new_tokens=6,
                                             num_beams=1))
    assert captioner.label(png((10, 10, 250))).caption


def test_an_undecodable_image_fails_that_image_only(tiny_captioner_dir):
    captioner = LocalCaptioner(LocalSettings(model_dir=tiny_captioner_dir, device="cpu", max_new_tokens=4))
    with pytest.raises(LabelingError, match="not a decodable image"):
        captioner.label(b"\x89PNG broken")
    assert captioner.label(png()).caption


def test_a_broken_folder_makes_the_labeler_unavailable(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip"}))
    captioner = LocalCaptioner(LocalSettings(model_dir=tmp_path, device="cpu"))
    with pytest.raises(LabelerUnavailable, match="could not be loaded"):
        captioner.label(png())


def test_other_model_kinds_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="supported: blip"):
        check_model_dir(tmp_path)
    with pytest.raises(ValueError, match="cannot be read"):
        check_model_dir(tmp_path / "missing")


def test_the_demo_captioner_is_built_on_first_use(tmp_path, tiny_captioner_dir):
    folder = tmp_path / "models" / "imagineer-tiny-blip"
    captioner = LocalCaptioner(LocalSettings(model_dir=folder, device="cpu", max_new_tokens=8, build_demo=True))
    assert not folder.exists()
    built = captioner.label(png())
    assert (folder / "config.json").is_file()
    # The same offline build as the session's tiny captioner: the same caption.
    same = LocalCaptioner(LocalSettings(model_dir=tiny_captioner_dir, device="cpu", max_new_tokens=8))
    assert built == same.label(png())
