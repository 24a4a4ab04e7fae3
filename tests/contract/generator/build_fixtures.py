"""Builds the generator contract tests' heavy fixtures in a process of its own (torch must not share the CPU
with a rendering generator; see conftest.py).

    python build_fixtures.py loras MODEL_DIR OUT_DIR
        LoRA adapters for that model, each a ``pytorch_lora_weights.safetensors`` written the way the trainer
        writes them (peft + ``convert_state_dict_to_diffusers`` + ``save_lora_weights``):

        * ``lora-a``, ``lora-b`` and ``lora-c``: rank 4 on to_q/to_k/to_v/to_out.0 with random (seeded) non-zero A and B
          matrices, strong enough to change the demo model's images visibly;
        * ``incompatible``: ``lora-a`` with the cross-attention key/value adapters widened to a text width the
          demo model does not have (48 instead of 32), as a LoRA made for another base model would be.
"""

from __future__ import annotations

import sys
from pathlib import Path

TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
RANK = 4
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"




def _lora_state_dict(model_dir: Path, seed: int, scale: float):
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGET_MODULES, init_lora_weights=False))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def _save(state_dict, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=state_dict, safe_serialization=True)
    assert (folder / WEIGHTS_NAME).is_file(), f"no {WEIGHTS_NAME} in {folder}"


def build_loras(model_dir: Path, out_dir: Path) -> None:
    import torch

    torch.manual_seed(0)
    first = _lora_state_dict(model_dir, seed=1, scale=0.5)
    _save(first, out_dir / "lora-a")
    _save(_lora_state_dict(model_dir, seed=2, scale=0.5), out_dir / "lora-b")
    _save(_lora_state_dict(model_dir, seed=4, scale=0.5), out_dir / "lora-c")

    incompatible = {}
    widened = 0
    for key, tensor in first.items():
        # attn2 is the cross-attention: its to_k / to_v read the text encoder's hidden states (32 wide here).
        if "attn2" in key and (".to_k." in key or ".to_v." in key) and ".lora.down." in key:
            tensor = torch.randn(tensor.shape[0], 48, generator=torch.Generator().manual_seed(3))
            widened += 1
        incompatible[key] = tensor.clone()
    assert widened, "no cross-attention adapters found to widen"
    _save(incompatible, out_dir / "incompatible")
    print(out_dir)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "loras":
        build_loras(Path(argv[1]), Path(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
