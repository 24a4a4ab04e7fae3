"""Dataset assembly: caption rules, trigger words, skipped images and image preparation."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from imagineer_trainer.dataset import (
    SKIP_NO_CAPTION,
    SKIP_UNREADABLE,
    DatasetError,
    SourceImage,
    build_examples,
    caption_for,
    choose_caption,
    prepare_image,
)


def png_bytes(size: tuple[int, int] = (48, 40), colour: tuple[int, ...] = (200, 30, 60), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def source(image_id: str = "img", labels: list[tuple[str, str]] | None = None, prompt: str = "",
           data: bytes | None = None) -> SourceImage:
    return SourceImage(image_id=image_id, data=png_bytes() if data is None else data, labels=labels or [],
                       prompt=prompt)


# ------------------------------------------------------------------------------------------------ caption rules


def test_default_prefers_the_newest_caption():
    image = source(labels=[("caption", "an old caption"), ("tag", "cat"), ("manual", "note"),
                           ("caption", "a newer caption")], prompt="the prompt")
    assert choose_caption(image, "default") == "a newer caption"


def test_default_falls_back_to_manual_labels_joined():
    image = source(labels=[("tag", "cat"), ("manual", "a cat"), ("manual", "on a red sofa")], prompt="the prompt")
    assert choose_caption(image, "default") == "a cat, on a red sofa"


def test_default_falls_back_to_tags_keeping_multi_word_tags_whole():
    image = source(labels=[("tag", "golden hour"), ("tag", " cat "), ("tag", "oil painting"), ("tag", "cat")],
                   prompt="the prompt")
    assert choose_caption(image, "default") == "golden hour, cat, oil painting"


def test_default_falls_back_to_the_prompt_and_ignores_ratings_and_user_labels():
    image = source(labels=[("user", "favourite"), ("ai_generated", "nsfw: 0.01"), ("caption", "   ")],
                   prompt="  a castle at dusk ")
    assert choose_caption(image, "default") == "a castle at dusk"


def test_labels_rule_never_uses_the_prompt():
    assert choose_caption(source(labels=[("tag", "cat")], prompt="p"), "labels") == "cat"
    assert choose_caption(source(labels=[("user", "x")], prompt="a prompt"), "labels") == ""


def test_prompt_rule_uses_only_the_prompt():
    assert choose_caption(source(labels=[("caption", "a caption")], prompt="a prompt"), "prompt") == "a prompt"
    assert choose_caption(source(labels=[("caption", "a caption")]), "prompt") == ""


def test_trigger_word_is_prepended():
    examples, _ = build_examples([source(labels=[("tag", "red hat"), ("tag", "cat")])], trigger_word=" sks ")
    assert examples[0].caption == "sks, red hat, cat"
    examples, _ = build_examples([source(labels=[("caption", "a cat")])], trigger_word="")
    assert examples[0].caption == "a cat"


def test_caption_for_needs_no_image():
    assert caption_for([("tag", "red hat"), ("user", "x")], "a prompt", "default", "sks") == "sks, red hat"
    assert caption_for([("user", "x")], "a prompt", "labels", "sks") == ""
    assert caption_for([], "a prompt", "prompt") == "a prompt"


def test_unknown_caption_source_is_bad_input():
    with pytest.raises(DatasetError) as raised:
        build_examples([source(prompt="x")], caption_source="captions")
    assert raised.value.reason == "INVALID_CAPTION_SOURCE"


# ------------------------------------------------------------------------------------------------ skipping


def test_skips_keep_input_order_and_say_why():
    sources = [
        source("a", labels=[("caption", "first")]),
        source("b", labels=[("user", "liked")]),
        source("c", labels=[("caption", "broken")], data=b"not an image at all"),
        source("d", prompt="from the prompt", data=png_bytes((20, 30), (10, 20, 30, 128), mode="RGBA")),
        source("e", labels=[("caption", "truncated")], data=png_bytes()[:60]),
    ]
    examples, skipped = build_examples(sources, caption_source="default", trigger_word="tw")
    assert [(e.image_id, e.caption) for e in examples] == [("a", "tw, first"), ("d", "tw, from the prompt")]
    assert skipped == [("b", SKIP_NO_CAPTION), ("c", SKIP_UNREADABLE), ("e", SKIP_UNREADABLE)]
    assert all(example.image.mode == "RGB" for example in examples)
    assert examples[1].image.size == (20, 30)
    # transparency is composited on white, not dropped to black
    expected = [c * 128 / 255 + 255 * (1 - 128 / 255) for c in (10, 20, 30)]
    assert all(abs(got - want) <= 1 for got, want in zip(examples[1].image.getpixel((0, 0)), expected, strict=True))


def test_no_usable_images_counts_the_reasons():
    sources = [source("a"), source("b"), source("c", labels=[("caption", "x")], data=b"junk")]
    with pytest.raises(DatasetError) as raised:
        build_examples(sources, caption_source="labels", trigger_word="")
    error = raised.value
    assert error.reason == "NO_USABLE_IMAGES"
    assert error.skipped == {SKIP_NO_CAPTION: 2, SKIP_UNREADABLE: 1}
    assert "2 no caption" in error.message and "1 not a readable image" in error.message


def test_an_empty_dataset_is_not_usable():
    with pytest.raises(DatasetError) as raised:
        build_examples([], caption_source="default", trigger_word="")
    assert raised.value.reason == "NO_USABLE_IMAGES"


# ------------------------------------------------------------------------------------------------ image preparation


def stripes(width: int, height: int, horizontal: bool = True) -> Image.Image:
    """Stripes of 32 px: red, green, blue, ... along the longer side."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for index in range(0, max(width, height), 32):
        colour = colours[(index // 32) % len(colours)]
        if horizontal:
            array[:, index:index + 32] = colour
        else:
            array[index:index + 32, :] = colour
    return Image.fromarray(array)


@pytest.mark.parametrize(("width", "height"), [(96, 32), (32, 96)])
def test_centre_crop_of_a_non_square_image(width, height):
    image = stripes(width, height, horizontal=width > height)
    tensor = prepare_image(image, 32, random_crop=False, rng=random.Random(0))
    assert tensor.shape == (3, 32, 32)
    assert tensor.dtype == torch.float32
    expected = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 32, 32)  # the green middle stripe
    assert torch.equal(tensor, expected)


def test_resizes_the_shorter_side_up_or_down():
    for size in [(16, 12), (300, 200), (64, 64), (65, 130)]:
        tensor = prepare_image(Image.new("RGB", size, (255, 0, 128)), 64, random_crop=False, rng=random.Random(0))
        assert tensor.shape == (3, 64, 64)
        assert tensor.min() >= -1.0 and tensor.max() <= 1.0


def test_random_crop_is_deterministic_for_a_seeded_rng_and_varies_with_it():
    image = stripes(160, 32)
    crops = [prepare_image(image, 32, random_crop=True, rng=random.Random(seed)) for seed in range(8)]
    again = [prepare_image(image, 32, random_crop=True, rng=random.Random(seed)) for seed in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))
    assert all(crop.shape == (3, 32, 32) for crop in crops)
    assert len({crop.numpy().tobytes() for crop in crops}) > 1
    centre = prepare_image(image, 32, random_crop=False, rng=random.Random(0))
    assert torch.equal(centre, prepare_image(image, 32, random_crop=False, rng=random.Random(99)))


def test_random_crop_of_a_square_image_is_the_whole_image():
    image = stripes(64, 64)
    assert torch.equal(prepare_image(image, 64, random_crop=True, rng=random.Random(5)),
                       prepare_image(image, 64, random_crop=False, rng=random.Random(0)))


def noisy_png(size: tuple[int, int], seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("random_crop", [False, True], ids=["centre", "random"])
def test_large_images_are_shrunk_at_decode_to_exactly_the_pixels_training_uses(random_crop):
    sizes = [(640, 400), (300, 900), (64, 64), (40, 50)]
    sources = [source(f"img-{i}", labels=[("caption", "x")], data=noisy_png(size, i)) for i, size in enumerate(sizes)]
    full, _ = build_examples(sources, caption_source="default")
    shrunk, _ = build_examples(iter(sources), caption_source="default", resolution=64)
    assert [e.image.size for e in full] == sizes
    # the shorter side becomes 64 when that shrinks the picture; small pictures stay as they are
    assert [e.image.size for e in shrunk] == [(102, 64), (64, 192), (64, 64), (40, 50)]
    for whole, small in zip(full, shrunk, strict=True):
        for seed in range(3):
            assert torch.equal(prepare_image(whole.image, 64, random_crop=random_crop, rng=random.Random(seed)),
                               prepare_image(small.image, 64, random_crop=random_crop, rng=random.Random(seed)))


def test_sources_may_be_a_generator_read_once():
    fetched: list[str] = []

    def lazily():
        for index in range(3):
            fetched.append(f"img-{index}")
            yield source(f"img-{index}", labels=[("caption", "x")], data=png_bytes())

    examples, _ = build_examples(lazily(), resolution=32)
    assert [e.image_id for e in examples] == fetched == ["img-0", "img-1", "img-2"]
