"""PNG files that carry how they were made.

Two text chunks:

* ``parameters``: the AUTOMATIC1111 convention that most tools read (Civitai, ComfyUI and InvokeAI importers,
  PNG-info viewers)::

      a painting of a cat
      Negative prompt: blurry
      Steps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: imagineer/tiny-sd

  with ``Model hash``, ``Lora hashes`` and ``Version`` when known, and values that contain ``,`` ``:`` or a new line
  quoted as JSON strings, as A1111 does. The negative-prompt line is left out when there is none. LoRAs are
  appended to the prompt line in A1111's own syntax, ``<lora:name:weight>``, so A1111 re-runs them; the JSON keeps
  the prompt exactly as given.
* ``imagineer``: the full ``params`` as canonical JSON (sorted keys), for a lossless round trip.

``params`` keys used for the A1111 text: ``prompt``, ``negative_prompt``, ``steps``, ``scheduler`` (our name, written
as A1111's sampler name) or ``sampler`` (written as given), ``guidance_scale``, ``seed``, ``width`` and ``height``
(default: the image's size), ``model``, ``model_hash``, ``loras`` (a list of ``{"name", "weight", "hash"}``) and
``version``. Every key goes into the JSON chunk.

The bytes depend only on the image and ``params``: no time chunk, fixed compression level.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image, PngImagePlugin

from imagineer_models.schedulers import scheduler_label

PARAMETERS_KEY = "parameters"
IMAGINEER_KEY = "imagineer"
COMPRESS_LEVEL = 6

# A1111's own parser for the settings line (modules/infotext_utils.py).
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _quote(value: object) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parameters_text(params: Mapping[str, Any], size: tuple[int, int] | None = None) -> str:
    """The A1111-style ``parameters`` text for ``params`` (``size`` is the image's, used when params lack it)."""
    prompt = str(params.get("prompt") or "")
    loras = params.get("loras") or []
    tags = [_lora_tag(lora) for lora in loras]
    prompt = " ".join([prompt, *(tag for tag in tags if tag)]).strip()
    negative = str(params.get("negative_prompt") or "")
    width = params.get("width") or (size[0] if size else None)
    height = params.get("height") or (size[1] if size else None)
    sampler = params.get("sampler") or (scheduler_label(params["scheduler"]) if params.get("scheduler") else None)
    lora_hashes = ", ".join(
        f"{_lora_name(lora)}: {_lora_field(lora, 'hash')}" for lora in loras if _lora_field(lora, "hash")
    )
    fields: list[tuple[str, object]] = [
        ("Steps", params.get("steps")),
        ("Sampler", sampler),
        ("CFG scale", _number(params["guidance_scale"]) if params.get("guidance_scale") is not None else None),
        ("Seed", params.get("seed")),
        ("Size", f"{width}x{height}" if width and height else None),
        ("Model hash", params.get("model_hash")),
        ("Model", params.get("model")),
        ("Lora hashes", lora_hashes or None),
        ("Version", params.get("version")),
    ]
    settings = ", ".join(f"{key}: {_quote(value)}" for key, value in fields if value not in (None, ""))
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{settings}".strip()


def _lora_tag(lora: object) -> str:
    """A1111's in-prompt LoRA syntax, ``<lora:name:weight>``, which A1111 itself and Civitai read back."""
    name = _lora_name(lora)
    weight = _lora_field(lora, "weight")
    if not name:
        return ""
    return f"<lora:{name}:{_number(float(weight)) if weight is not None else 1}>"


def _lora_name(lora: object) -> str:
    return re.sub(r"[<>:,\s]+", "_", str(_lora_field(lora, "name") or "")).strip("_")


def _lora_field(lora: object, key: str) -> object:
    if isinstance(lora, Mapping):
        return lora.get(key)
    return getattr(lora, key, None)


def _json_default(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def params_json(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def encode_png(image: Image.Image, params: Mapping[str, Any]) -> bytes:
    """The image as PNG bytes with the ``parameters`` and ``imagineer`` text chunks.

    Text that Latin-1 can encode is written as tEXt, anything else as iTXt (UTF-8), which is what A1111 does too.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, parameters_text(params, image.size))
    info.add_text(IMAGINEER_KEY, params_json(params))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=COMPRESS_LEVEL)
    return buffer.getvalue()


def read_png_parameters(data: bytes) -> dict[str, Any]:
    """The metadata of a PNG: ``{"parameters": str | None, "imagineer": dict | None}``.

    ``parameters`` is the raw A1111 text (``parse_parameters`` splits it up); ``imagineer`` is the JSON written by
    ``encode_png``, or None when the file has none or it is not valid JSON. Works on PNGs written by other tools.
    """
    with Image.open(io.BytesIO(data)) as image:
        text: dict[str, str] = dict(getattr(image, "text", {}) or {})
    raw = text.get(IMAGINEER_KEY)
    try:
        imagineer = json.loads(raw) if raw is not None else None
    except ValueError:
        imagineer = None
    return {PARAMETERS_KEY: text.get(PARAMETERS_KEY), IMAGINEER_KEY: imagineer}


def parse_parameters(text: str) -> dict[str, str]:
    """Splits an A1111 ``parameters`` text into ``prompt``, ``negative_prompt`` and its settings (as strings)."""
    lines = text.strip().split("\n")
    settings: dict[str, str] = {}
    if lines and len(_PARAM_RE.findall(lines[-1])) >= 3:
        for key, value in _PARAM_RE.findall(lines.pop()):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            settings[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:"):
            negative_lines.append(line[len("Negative prompt:"):].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    return {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines), **settings}
