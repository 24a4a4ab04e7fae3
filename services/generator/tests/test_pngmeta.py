"""PNG metadata: the A1111 ``parameters`` text, the full JSON, round trips and deterministic bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imagineer_generator.pngmeta import encode_png, parameters_text, parse_parameters, read_png_parameters

PARAMS = {
    "prompt": "a painting of a cat",
    "negative_prompt": "blurry",
    "seed": 7,
    "steps": 20,
    "guidance_scale": 7.5,
    "scheduler": "euler",
    "width": 64,
    "height": 64,
    "model": "imagineer/tiny-sd",
    "loras": [],
}


def _image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_parameters_text_follows_a1111():
    assert parameters_text(PARAMS) == (
        "a painting of a cat\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: imagineer/tiny-sd"
    )


def test_no_negative_prompt_line_when_there_is_none():
    text = parameters_text({**PARAMS, "negative_prompt": "", "guidance_scale": 7.0, "scheduler": "dpmpp_2m_karras"})
    assert text == ("a painting of a cat\n"
                    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 7, Size: 64x64, Model: imagineer/tiny-sd")


def test_loras_and_quoting():
    params = {**PARAMS, "model": "my model, v2",
              "loras": [{"name": "ink style", "weight": 0.8, "hash": "abc123"}, {"name": "cats", "weight": 1.0}]}
    text = parameters_text(params)
    assert text.splitlines()[0] == "a painting of a cat <lora:ink_style:0.8> <lora:cats:1>"
    assert 'Model: "my model, v2"' in text
    assert 'Lora hashes: "ink_style: abc123"' in text


def test_round_trip():
    image = _image()
    data = encode_png(image, PARAMS)
    meta = read_png_parameters(data)
    assert meta["imagineer"] == PARAMS
    assert meta["parameters"] == parameters_text(PARAMS)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.size == (64, 64)
        assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(image))


def test_parsing_the_text_back():
    parsed = parse_parameters(parameters_text({**PARAMS, "model": "a: b, c", "prompt": "line one\nline two"}))
    assert parsed["prompt"] == "line one\nline two"
    assert parsed["negative_prompt"] == "blurry"
    assert parsed["Steps"] == "20" and parsed["Sampler"] == "Euler" and parsed["CFG scale"] == "7.5"
    assert parsed["Seed"] == "7" and parsed["Size"] == "64x64" and parsed["Model"] == "a: b, c"


def test_unicode_prompts_survive():
    params = {**PARAMS, "prompt": "un chat peint à l'huile, 猫", "negative_prompt": "flou"}
    meta = read_png_parameters(encode_png(_image(), params))
    assert meta["imagineer"]["prompt"] == "un chat peint à l'huile, 猫"
    assert meta["parameters"].startswith("un chat peint à l'huile, 猫\nNegative prompt: flou\n")


def test_bytes_are_deterministic():
    first = encode_png(_image(), PARAMS)
    assert encode_png(_image(), dict(reversed(list(PARAMS.items())))) == first
    assert b"tIME" not in first
    assert encode_png(_image(), {**PARAMS, "seed": 8}) != first
    assert encode_png(_image(1), PARAMS) != first


def test_pngs_from_elsewhere_read_as_none():
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    assert read_png_parameters(buffer.getvalue()) == {"parameters": None, "imagineer": None}
