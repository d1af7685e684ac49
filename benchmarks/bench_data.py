"""Does data loading keep up with training? Items/s of each source vs a training step's appetite.

    python benchmarks/bench_data.py              # about two minutes on 2 cores
    python benchmarks/bench_data.py --quick      # fewer items, one round

Loading: a DataLoader (batch 32, num_workers=0: the main process alone, the worst case) over each
source, interleaved over rounds, median items/s. Training: forward + backward + AdamW step of the
UNet presets the recipes use, on random inputs with a (B, 40, 384) text context, median images/s.
The ratio is how many times faster data arrives than training consumes it (> 1: keeps up).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from t2i.data import collate, load_dataset
from t2i.data.cache import LatentDataset
from t2i.data.shapes import ShapesConfig, render_scene, sample_scene, scene_rng
from t2i.data.shards import pack_folder

BATCH = 32


def make_folder(root: Path, n: int) -> Path:
    """n shapes renders as a user's folder of 64x64 PNGs + captions."""
    root.mkdir(parents=True)
    cfg = ShapesConfig()
    for i in range(n):
        scene = sample_scene(scene_rng(7, "train", i), cfg)
        render_scene(scene, 64).save(root / f"{i:05d}.png")
        (root / f"{i:05d}.txt").write_text(f"image {i}")
    return root


def items_per_second(dataset, n: int) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=0, collate_fn=collate)
    t0, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["caption"])
        if seen >= n:
            break
    return seen / (time.perf_counter() - t0)


def train_images_per_second(preset: str, channels: int, size: int, steps: int) -> float:
    from t2i.models.unet import UNet, UNetConfig

    net = UNet(UNetConfig.preset(preset, in_channels=channels, context_dim=384))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(BATCH, channels, size, size)
    ctx, mask = torch.randn(BATCH, 40, 384), torch.ones(BATCH, 40, dtype=torch.bool)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        loss = (net(x, torch.rand(BATCH) * 999, ctx, mask) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return BATCH / statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    n, rounds = (256, 1) if args.quick else (1024, 3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "folder", n)
        shards, _, _ = pack_folder(folder, Path(tmp) / "shards", shard_size=256)
        sources = {
            "shapes 64 px (rendered on the fly)": load_dataset("shapes", image_size=64),
            "fashion 32 px": load_dataset("fashion"),
            "folder of PNGs, 64 px": load_dataset(str(folder), image_size=64),
            "tar shards, 64 px": load_dataset(f"{Path(tmp)}/shards/*.tar", image_size=64),
            "cached latents 4x16x16": LatentDataset(torch.randn(n, 4, 16, 16), ["c"] * n),
        }
        rates: dict[str, list[float]] = {k: [] for k in sources}
        for _ in range(rounds):  # interleaved rounds: shared cores drift, medians compare fairly
            for name, ds in sources.items():
                rates[name].append(items_per_second(ds, n))
        del shards
    steps = 2 if args.quick else 4
    train = {
        "small UNet, 3x64x64 (shapes, folders)": train_images_per_second("small", 3, 64, steps),
        "small UNet, 1x32x32 (fashion)": train_images_per_second("small", 1, 32, steps),
        "latent UNet, 4x16x16": train_images_per_second("latent", 4, 16, steps),
    }
    need = {
        "shapes 64 px (rendered on the fly)": "small UNet, 3x64x64 (shapes, folders)",
        "fashion 32 px": "small UNet, 1x32x32 (fashion)",
        "folder of PNGs, 64 px": "small UNet, 3x64x64 (shapes, folders)",
        "tar shards, 64 px": "small UNet, 3x64x64 (shapes, folders)",
        "cached latents 4x16x16": "latent UNet, 4x16x16",
    }
    print(f"batch {BATCH}, {n} items x {rounds} rounds, 1 process, 2 threads\n")
    print("| source | loading (items/s) | training step (images/s) | ratio |")
    print("|---|---|---|---|")
    for name, rs in rates.items():
        load, use = statistics.median(rs), train[need[name]]
        print(f"| {name} | {load:,.0f} | {use:,.0f} ({need[name]}) | {load / use:,.1f}x |")


if __name__ == "__main__":
    main()
