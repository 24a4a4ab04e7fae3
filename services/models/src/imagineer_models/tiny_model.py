"""A tiny Stable-Diffusion-1.5-shaped pipeline built offline from configs, for the demo mode, tests and benchmarks.

It has the same components and the same folder layout as a real SD 1.5 model (``model_index.json``, ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), so the loader treats it exactly like a real model; only
the sizes are small (about 2 M parameters in all, a few MB on disk):

* UNet2DConditionModel: block_out_channels (32, 64), one layer per block, ``DownBlock2D`` + ``CrossAttnDownBlock2D``
  (mirrored up), cross_attention_dim 32, ``sample_size`` 32 (the latent side);
* AutoencoderKL with two blocks (32, 64): it downsamples by 2, so ``vae_scale_factor`` is 2 (SD 1.5: 8);
* CLIPTextModel with hidden size 32 and 2 layers, and a byte-level BPE CLIP tokenizer whose vocabulary is generated
  here, deterministically, with the common words of prompts as whole tokens;
* the SD 1.5 scheduler configuration (PNDM, scaled-linear betas, ``steps_offset=1``).

Default image size: ``unet.sample_size * vae_scale_factor = 32 * 2 = 64`` pixels a side, which is what
``StableDiffusionPipeline`` renders when no height/width is given. Any multiple of 8 works.

The weights are random (seeded, so two builds are byte-identical), and the VAE decoder is rescaled so that the
images are colourful abstract patterns rather than flat grey. They mean nothing: the demo model proves the plumbing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

DEMO_MODEL_NAME = "imagineer/tiny-sd"
DEMO_MODEL_VERSION = 1
DEMO_MODEL_FOLDER = "imagineer-tiny-sd"
MARKER_FILE = "imagineer-demo-model.json"
DEFAULT_SIZE = 64

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_TOKENS = 77

# Words that prompts commonly use; each becomes one token. Anything else still tokenises (byte-level fallback).
PROMPT_WORDS: tuple[str, ...] = tuple(
    """
    a an the of and or with in on at by for from to into over under near behind above below between
    is are it its this that these those no not very more most highly ultra extremely
    art artwork painting drawing sketch illustration photo photograph photography render rendering image picture
    portrait landscape cityscape seascape still life scene view shot closeup close up wide angle full body face
    style styled concept digital oil watercolor watercolour acrylic pencil ink charcoal pastel vector pixel
    anime manga cartoon comic realistic photorealistic hyperrealistic surreal abstract minimalist minimal
    impressionist impressionism expressionist cubist baroque renaissance gothic fantasy science fiction scifi
    cyberpunk steampunk vaporwave retro vintage futuristic modern ancient medieval
    detailed detail details intricate sharp focus blurry blur bokeh depth field soft hard smooth rough
    high quality low best worst masterpiece resolution hd uhd hdr sharpness trending artstation
    lighting light lights dark darkness bright shadow shadows glow glowing neon sunlight moonlight
    cinematic dramatic studio volumetric ambient golden hour sunset sunrise dawn dusk night day morning evening
    red orange yellow green blue purple violet pink brown black white grey gray gold golden silver
    colorful colourful vibrant pastel monochrome saturated muted warm cool color colour colors colours
    cat cats dog dogs bird birds fish horse fox wolf bear lion tiger dragon owl rabbit deer butterfly
    man woman men women boy girl child children person people knight wizard witch robot astronaut warrior
    princess king queen soldier monk samurai ninja pirate
    house castle city town village street road bridge tower temple church ruins room interior kitchen garden
    forest tree trees flower flowers rose grass field meadow mountain mountains hill valley river lake sea ocean
    beach island desert snow ice rain storm cloud clouds sky sun moon star stars space planet galaxy nebula
    water fire smoke stone rock crystal glass metal wood wooden paper
    car train ship boat plane airplane spaceship bicycle
    hat dress armor armour sword shield crown cloak mask
    small large big tiny huge giant little old young new beautiful cute ugly happy sad scary epic magical mystical
    sitting standing walking running flying swimming sleeping reading holding wearing looking smiling
    background foreground texture pattern shape shapes circle square geometric fractal
    ugly deformed disfigured bad anatomy extra limbs fingers hands watermark text signature cropped
    out frame jpeg artifacts noise noisy duplicate mutated lowres
    by greg rutkowski alphonse mucha van gogh monet picasso
    """.split()
)


# --------------------------------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (the alphabet of byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _apply_bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Standard BPE: repeatedly merge every occurrence of the adjacent pair with the lowest rank."""
    while len(symbols) > 1:
        pairs = [(ranks[pair], pair) for pair in itertools.pairwise(symbols) if pair in ranks]
        if not pairs:
            break
        _, (first, second) = min(pairs)
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def build_vocabulary(words: Iterable[str] = PROMPT_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary in which each of ``words`` is a single token.

    The layout follows CLIP's: the 256 byte symbols, the same with ``</w>``, one token per merge, then the two
    special tokens last. Merges are added word by word (in a fixed order), joining left to right whatever the
    merges so far leave of the word; a merge added later never changes how an earlier word splits, because BPE
    always prefers the earlier merges that already join it completely. The result is deterministic.
    """
    alphabet = list(_bytes_to_unicode().values())
    tokens: list[str] = alphabet + [symbol + END_OF_WORD for symbol in alphabet]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({word.lower() for word in words if word.isalpha() and word.isascii()}):
        symbols = _apply_bpe([*word[:-1], word[-1] + END_OF_WORD], ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            joined = pair[0] + pair[1]
            if joined not in known:
                known.add(joined)
                tokens.append(joined)
            symbols = [joined, *symbols[2:]]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path, words: Iterable[str] = PROMPT_WORDS) -> None:
    """Writes ``vocab.json`` and ``merges.txt``, the files of SD 1.5's tokenizer folder that older readers need.

    transformers 5 saves only ``tokenizer.json``, and reads it first; these two files say the same thing.
    """
    vocab, merges = build_vocabulary(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{first} {second}" for first, second in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_tokenizer(words: Iterable[str] = PROMPT_WORDS):  # -> CLIPTokenizer
    """The demo tokenizer. transformers 5 silently ignores ``vocab_file=``/``merges_file=`` given to the
    constructor (the tokenizer then knows only the special tokens), so the vocabulary is passed as ``vocab=`` and
    ``merges=``, and checked."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocabulary(words)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    cat = tokenizer("cat").input_ids[1:-1]
    if len(tokenizer) != len(vocab) or tokenizer.convert_ids_to_tokens(cat) != ["cat" + END_OF_WORD]:
        raise RuntimeError(f"the demo tokenizer lost its vocabulary ({len(tokenizer)} of {len(vocab)} tokens)")
    return tokenizer


# --------------------------------------------------------------------------------------------------- pipeline


def _scheduler_config() -> dict[str, object]:
    """SD 1.5's scheduler configuration (note ``steps_offset=1``: with 0 the pipeline patches it at load time)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
    }


def _make_pipeline(seed: int):  # -> StableDiffusionPipeline
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = make_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=DEFAULT_SIZE // 2,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            layers_per_block=1,
            sample_size=DEFAULT_SIZE,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=MAX_TOKENS,
                projection_dim=32,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        _make_colourful(vae)
    scheduler = PNDMScheduler(**_scheduler_config())
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipeline


def _make_colourful(vae) -> None:
    """Reshapes the random VAE decoder so that images are smooth colour fields instead of flat grey noise.

    A randomly initialised decoder turns the latent noise the UNet leaves behind into faint, pixel-sized grey noise.
    Replacing every 3x3 kernel of the decoder by its spatial mean makes each convolution a box blur (plus the random
    channel mixing), so the noise becomes blobs a dozen pixels wide; a different gain per RGB channel at the output
    then uses the whole colour range (about 14 % of the values are clipped).
    """
    import torch

    decoder = vae.decoder
    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3) and module is not decoder.conv_out:
                module.weight.copy_(module.weight.mean(dim=(2, 3), keepdim=True).expand_as(module.weight))
        conv = decoder.conv_out
        smoothed = conv.weight.mean(dim=(2, 3), keepdim=True).expand_as(conv.weight)
        conv.weight.copy_(smoothed * torch.tensor([2.0, -1.8, 2.2]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.05, -0.1, 0.1]))


def build_tiny_pipeline(target_dir: Path, seed: int = 0) -> Path:
    """Builds the tiny demo pipeline into ``target_dir`` (which must not exist yet) and returns it.

    The model is built in a temporary sibling folder and renamed into place, so a crash never leaves half a model
    under ``target_dir``. Two builds with the same seed give byte-identical weight files.
    """
    target_dir = Path(target_dir)
    if target_dir.exists():
        raise FileExistsError(f"{target_dir} already exists; build_tiny_pipeline never overwrites a folder")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.building-", dir=target_dir.parent))
    try:
        pipeline = _make_pipeline(seed)
        pipeline.save_pretrained(scratch, safe_serialization=True)
        write_tokenizer_files(scratch / "tokenizer")
        marker = {"name": DEMO_MODEL_NAME, "version": DEMO_MODEL_VERSION, "seed": seed, "default_size": DEFAULT_SIZE}
        (scratch / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(scratch, 0o755)  # mkdtemp makes it 0700
        os.rename(scratch, target_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target_dir


def read_marker(folder: Path) -> dict[str, object] | None:
    """The demo marker of ``folder``, or None when the folder is not the demo model."""
    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("name") != DEMO_MODEL_NAME:
        return None
    return marker


def is_demo_model(folder: Path) -> bool:
    return read_marker(folder) is not None


_REQUIRED_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/tokenizer.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds the current version of the demo model with all its files."""
    marker = read_marker(folder)
    if marker is None or marker.get("version") != DEMO_MODEL_VERSION:
        return False
    return all((Path(folder) / name).is_file() for name in _REQUIRED_FILES)


def ensure_tiny_model(models_dir: Path, seed: int = 0) -> Path:
    """Returns ``models_dir/imagineer-tiny-sd``, building it first unless a complete current copy is there.

    Safe against a crash mid-build (the folder appears whole or not at all) and against two processes building at
    once (the loser discards its copy). A stale copy (older version, or missing files) is replaced.
    """
    models_dir = Path(models_dir)
    target = models_dir / DEMO_MODEL_FOLDER
    if is_complete(target):
        return target
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{DEMO_MODEL_FOLDER}.stale-", dir=models_dir))
        os.rename(target, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        return build_tiny_pipeline(target, seed=seed)
    except OSError:
        if is_complete(target):  # another process finished first
            return target
        raise
