"""A tiny BLIP captioner built offline from configs, for tests and the demo: the same classes and folder layout
as a real BLIP captioning model (``config.json``, ``model.safetensors``, the processor and a BERT word-piece
tokenizer), random weights, a vocabulary of common caption words. Its captions are word salad; it proves the
plumbing."""

from __future__ import annotations

from pathlib import Path

WORDS = tuple("""
a an the of and with in on at photo picture painting drawing of cat dog fox bird red blue green yellow small large
sitting standing on couch grass field tree sky forest city street woman man child portrait landscape
""".split())
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_tiny_captioner(folder: Path, seed: int = 0) -> Path:
    """Saves the tiny captioner into ``folder`` (created) and returns it."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    vocab = {token: index for index, token in enumerate(dict.fromkeys((*SPECIAL, *WORDS)))}
    # transformers 5: pass the vocabulary itself; a vocab file argument is silently ignored.
    tokenizer = BertTokenizer(vocab=vocab)
    ids = tokenizer("a photo of a cat").input_ids
    if tokenizer.unk_token_id in ids:
        raise RuntimeError("the tiny captioner's tokenizer does not know its own words")
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": vocab["[CLS]"],
                     "sep_token_id": vocab["[SEP]"], "eos_token_id": vocab["[SEP]"], "pad_token_id": vocab["[PAD]"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    import sys

    print(build_tiny_captioner(Path(sys.argv[1])))
