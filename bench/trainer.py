"""Trainer benchmark: steps per second through the service against a bare diffusers + peft loop.

The service trains a LoRA on the demo model from a catalog album (through the catalog, with its progress
reporting, checkpoints and event stream); the step rate is taken between its first and last step events. The
baseline is the same configuration (rank, batch size, resolution, learning rate, AdamW, noise-prediction
loss on the UNet's attention projections) as a minimal loop in its own process, on the same images, timed
over the same number of steps. The two never run at the same time. Peak memory (VmHWM) of both processes is
reported. ``steps_ratio`` = service steps/s / bare loop steps/s (goal: >= 0.95).

    .venv/bin/python bench/trainer.py            # 100 steps, batch 4, 64 px
    .venv/bin/python bench/trainer.py --quick    # 30 steps
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the services' process harness
from harness.catalog_client import upload_image
from harness.images import png_bytes
from harness.processes import ADMIN_METADATA, catalog_process, trainer_process

from imagineer.catalog.v1 import catalog_service_pb2 as catalog_api
from imagineer.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.trainer.v1 import trainer_service_pb2 as api
from imagineer.trainer.v1 import trainer_service_pb2_grpc as api_grpc

GOAL = 0.95
IMAGES = 8
console = Console(stderr=True)


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_album(stub, folder: Path) -> tuple[str, Path]:
    """A training album in the catalog, and the same images with captions on disk for the bare loop."""
    album = stub.CreateAlbum(catalog_api.CreateAlbumRequest(album=res.Album(name="bench", is_training_source=True)),
                             metadata=ADMIN_METADATA)
    folder.mkdir(parents=True)
    captions = {}
    for index in range(IMAGES):
        data = png_bytes(96, 80, seed=7000 + index)
        image = upload_image(stub, data, ADMIN_METADATA, filename=f"bench{index}.png", album_id=album.id).image
        caption = f"a colourful pattern number {index}"
        stub.CreateLabel(catalog_api.CreateLabelRequest(image_id=image.id, label=res.Label(
            text=caption, label_type=res.LABEL_TYPE_CAPTION)), metadata=ADMIN_METADATA)
        (folder / f"{index}.png").write_bytes(data)
        captions[f"{index}.png"] = caption
    (folder / "captions.json").write_text(json.dumps(captions))
    return album.id, folder


def service_rate(trainer, album_id: str, args) -> float:
    with grpc.insecure_channel(trainer.address) as channel:
        stub = api_grpc.TrainerServiceStub(channel)
        training = stub.StartTraining(api.StartTrainingRequest(
            album_ids=[album_id], steps=args.steps, rank=args.rank, batch_size=args.batch_size,
            resolution=args.resolution, learning_rate=1e-4, seed=1, checkpoint_interval=args.steps),
            metadata=ADMIN_METADATA)
        first = last = None
        for event in stub.WatchTraining(api.WatchTrainingRequest(id=training.id), metadata=ADMIN_METADATA):
            if event.WhichOneof("event") == "step":
                now = time.perf_counter()
                first = first or (event.step.step, now)
                last = (event.step.step, now)
            if event.WhichOneof("event") == "finished" and event.finished.state != 4:
                raise RuntimeError(f"the service's training failed: {event.finished.reason}")
    return (last[0] - first[0]) / (last[1] - first[1])


BARE_LOOP = r'''
import json, sys, time
from pathlib import Path
import numpy
import torch
from PIL import Image
from diffusers import DDPMScheduler
from peft import LoraConfig
from imagineer_models.loading import load_model

models_dir, folder, steps, rank, batch, res = sys.argv[1], Path(sys.argv[2]), *map(int, sys.argv[3:7])
model = load_model(None, models_dir=Path(models_dir), device="cpu")
pipe = model.pipeline
unet, vae, encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
for module in (unet, vae, encoder):
    module.requires_grad_(False)
unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
params = [p for p in unet.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(params, lr=1e-4)
noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
captions = json.loads((folder / "captions.json").read_text())
names = sorted(captions)
def tensor(name):
    image = Image.open(folder / name).convert("RGB").resize((res, res))
    return torch.from_numpy(numpy.asarray(image)).permute(2, 0, 1).float() / 127.5 - 1
pixels = torch.stack([tensor(n) for n in names])
ids = tokenizer([captions[n] for n in names], padding="max_length", max_length=tokenizer.model_max_length,
                truncation=True, return_tensors="pt").input_ids
unet.train()
started = None
generator = torch.Generator().manual_seed(1)
for step in range(1, steps + 1):
    if step == 2:
        started = time.perf_counter()
    index = torch.randint(0, len(names), (batch,), generator=generator)
    with torch.no_grad():
        latents = vae.encode(pixels[index]).latent_dist.sample(generator) * vae.config.scaling_factor
        hidden = encoder(ids[index])[0]
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    loss = torch.nn.functional.mse_loss(unet(noisy, timesteps, hidden).sample.float(), noise.float())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
rate = (steps - 1) / (time.perf_counter() - started)
peak = [l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"rate": rate, "peak_mb": int(peak) / 1024}))
'''


def bare_rate(models_dir: Path, folder: Path, args) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", BARE_LOOP, str(models_dir), str(folder), str(args.steps),
                             str(args.rank), str(args.batch_size), str(args.resolution)],
                            capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        raise RuntimeError(f"the bare loop failed:\n{result.stderr[-2000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures["rate"], figures["peak_mb"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="30 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 30
    workdir = Path(tempfile.mkdtemp(prefix="imagineer-bench-trainer-"))
    catalog = trainer = None
    try:
        catalog = catalog_process(workdir / "catalog").start()
        trainer = trainer_process(workdir / "trainer", catalog.address).start(timeout=180)
        with grpc.insecure_channel(catalog.address) as channel:
            album_id, folder = make_album(catalog_grpc.CatalogServiceStub(channel), workdir / "images")
        service = service_rate(trainer, album_id, args)
        service_peak = peak_memory_mb(trainer.process.pid)
        console.log(f"service: {service:.2f} steps/s, peak {service_peak:.0f} MB")
        bare, bare_peak = bare_rate(workdir / "trainer" / "models", folder, args)
        console.log(f"bare loop: {bare:.2f} steps/s, peak {bare_peak:.0f} MB")
    except Exception as error:
        console.print(f"[red]benchmark failed:[/red] {error}")
        return 1
    finally:
        for service_process in (trainer, catalog):
            if service_process is not None:
                service_process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = service / bare
    table = Table("measure", "service", "bare loop")
    table.add_row("steps per second", f"{service:.2f}", f"{bare:.2f}")
    table.add_row("peak memory (MB)", f"{service_peak:.0f}", f"{bare_peak:.0f}")
    table.add_row("steps_ratio", f"{ratio:.3f}", f">= {GOAL}: {'met' if ratio >= GOAL else 'missed'}")
    Console().print(table)
    print(json.dumps({"bench": "trainer", "steps_ratio": round(ratio, 4), "service_steps_per_s": round(service, 3),
                      "bare_steps_per_s": round(bare, 3), "service_peak_mb": round(service_peak),
                      "bare_peak_mb": round(bare_peak), "steps": args.steps, "batch_size": args.batch_size,
                      "resolution": args.resolution, "rank": args.rank}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
