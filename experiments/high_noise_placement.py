"""Can the shapes UNet learn where to put an object from the caption alone, at one high noise level?

At sigma 80 the input is almost pure noise, so the x0 prediction must come from the caption: "a
large red circle in the top left" should give a red disc in the top-left cell. This trains a fresh
UNet of the shapes architecture (+ position features) only at `--sigma`, on one-object scenes of
a chosen world, and every `--probe-every` steps checks the x0 predictions of the 9 cell phrases of
3 objects from one noise: a hit when the cell whose pixels are closest to the object's colour is
the asked one (chance 1/9).

Worlds: `grammar` (3 backgrounds, stated in about half of the captions, as in the data set),
`bg-stated` (3 backgrounds, every caption states it), `white-heavy` (the same with white drawn 3
times as often as black or grey: a dark blob in the asked cell then lowers the loss on average,
as it does on white alone), `white`, `grey`, `black` (that background only). Worlds that state
the background are probed on each of the three (hit rate = their mean).

    python3 experiments/high_noise_placement.py --world white --steps 400
    python3 experiments/high_noise_placement.py --world grammar --steps 1500 --picture x0.png
    python3 experiments/high_noise_placement.py --world white --steps 400 --save white.safetensors
    python3 experiments/high_noise_placement.py --world grammar --init white.safetensors
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from t2i.data.shapes import BACKGROUNDS, CELL_PHRASES, COLOURS, ShapesConfig, ShapesDataset
from t2i.denoisers import X0Denoiser
from t2i.models.unet import UNet, UNetConfig
from t2i.schedules import DiscreteSchedule
from t2i.training.data import TextCache

OBJECTS = (
    ("large red circle", "red"),
    ("large blue square", "blue"),
    ("small yellow star", "yellow"),
)
WORLDS = ("grammar", "bg-stated", "white-heavy", *BACKGROUNDS)
STATED = ("bg-stated", "white-heavy")  # worlds whose every caption names its background


def shapes_unet(pooled: bool = False, cond_channels: int = 0, context_layers: int = 0) -> UNet:
    """The shapes64x architecture (docs/history.md, "shapes64x") with position features; pooled:
    the caption's mean token state also added to the time embedding (FiLM of every ResBlock)."""
    cfg = UNetConfig(
        cond_channels=cond_channels,
        context_layers=context_layers,
        pooled_dim=384 if pooled else 0,
        in_channels=3,
        channels=(64, 128, 192),
        layers_per_block=1,
        attention_levels=(0, 1, 2),
        head_dim=32,
        groups=32,
        patch_size=4,
        position_features=8,
        context_dim=384,
    )
    return UNet(cfg)


def world_data(world: str) -> tuple[ShapesDataset, list[str]]:
    """(one-object scenes, the background phrases the probe's prompts carry, one probe each)."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose from {WORLDS}")
    backgrounds = (world,) if world in BACKGROUNDS else tuple(BACKGROUNDS)
    if world == "white-heavy":  # 3 : 1 : 1, so a dark blob pays on average (see the docstring)
        backgrounds = ("white", "white", "white", "black", "grey")
    data = ShapesDataset(ShapesConfig(max_objects=1, backgrounds=backgrounds), length=20_000)
    suffixes = [f" on a {bg} background" for bg in BACKGROUNDS] if world in STATED else [""]
    return data, suffixes


def caption(item: dict, world: str) -> str:
    text = item["caption"]
    if world in STATED and "background" not in text:
        text += f" on a {item['scene'].background} background"
    return text


def text_inputs(text, captions: list[str], pooled: bool) -> dict:
    context, mask = text(captions)
    cond = {"context": context, "context_mask": mask}
    if pooled:
        cond["pooled"] = mean_state(cond)
    return cond


def mean_state(cond: dict) -> torch.Tensor:
    """(B, D): the mean of the caption's real token states."""
    m = cond["context_mask"][..., None].float()
    return (cond["context"] * m).sum(1) / m.sum(1).clamp(min=1)


def border_colour(images: torch.Tensor) -> torch.Tensor:
    """(B, 3): the mean colour of each image's outer 2-pixel frame (the background, here)."""
    frame = torch.ones(images.shape[-2:], dtype=torch.bool)
    frame[2:-2, 2:-2] = False
    return images[:, :, frame].mean(-1)


def background_image(names: list[str]) -> torch.Tensor:
    """(B, 3, 64, 64) flat images of the named backgrounds in [-1, 1] (`--bg-input`)."""
    rgb = torch.tensor([BACKGROUNDS[n] for n in names], dtype=torch.float32) / 127.5 - 1
    return rgb[:, :, None, None].expand(-1, -1, 64, 64)


@torch.no_grad()
def x0_predictions(
    denoiser, text, sigma: float, suffix: str, pooled: bool, extra=None, self_cond=False
) -> list[torch.Tensor]:
    """Per object: (9, 3, 64, 64) x0 predictions in [0, 255] for the 9 cell phrases, one noise."""
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * sigma
    out = []
    with torch.autocast("cpu", torch.bfloat16):
        for obj, _ in OBJECTS:
            cond = text_inputs(
                text, [f"a {obj} {p}{suffix}" for p in CELL_PHRASES.values()], pooled
            )
            if extra is not None:
                cond["x_cond"] = extra(cond, [suffix.split()[-2]] * 9 if suffix else [])
            x, sigmas = noise.expand(9, -1, -1, -1), torch.full((9,), sigma)
            if self_cond:  # a first pass from nothing, then one fed its own estimate
                cond["x_cond"] = torch.zeros_like(x)
                cond["x_cond"] = denoiser(x, sigmas, **cond).float()
            x0 = denoiser(x, sigmas, **cond)
            out.append((x0.float().clamp(-1, 1) + 1) * 127.5)
    return out


def hit_rate(predictions: list[torch.Tensor]) -> float:
    hits = 0
    for x0, (_, colour) in zip(predictions, OBJECTS):
        target = torch.tensor(COLOURS[colour], dtype=torch.float32)[None, :, None, None]
        closeness = -(x0 - target).abs().sum(1)[:, :63, :63]  # (9, 63, 63): 3x3 cells of 21 px
        per_cell = closeness.reshape(9, 3, 21, 3, 21).mean((2, 4)).reshape(9, 9)
        hits += int((per_cell.argmax(1) == torch.arange(9)).sum())
    return hits / (9 * len(OBJECTS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="grammar", choices=WORLDS)
    ap.add_argument("--sigma", type=float, default=80.0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--probe-every", type=int, default=50)
    ap.add_argument("--picture", default=None, help="write the final x0 predictions (PNG)")
    ap.add_argument("--init", default=None, help="start from these UNet weights (.safetensors)")
    ap.add_argument("--save", default=None, help="write the final UNet weights (.safetensors)")
    ap.add_argument(
        "--freeze-where",
        action="store_true",
        help="keep the position path fixed: cross-attention queries/keys and position features",
    )
    ap.add_argument("--pooled", action="store_true", help="also FiLM by the mean token state")
    ap.add_argument(
        "--context-layers",
        type=int,
        default=0,
        help="UNetConfig.context_layers: trainable blocks over the frozen token states (each "
        "token can take in the others, e.g. the background into the position words)",
    )
    ap.add_argument(
        "--bg-input",
        action="store_true",
        help="also give the background as a flat image on 3 extra input channels",
    )
    ap.add_argument(
        "--pooled-stem",
        action="store_true",
        help="add a learned linear map of the mean token state to every position of the input "
        "(8 extra channels): --bg-input, but from the caption",
    )
    ap.add_argument(
        "--bg-label",
        action="store_true",
        help="--pooled-stem's learned map, but from the stated background as a one-hot label",
    )
    ap.add_argument(
        "--self-cond",
        action="store_true",
        help="self-conditioning (Chen et al. 2022): the x0 estimate of a first pass is an input "
        "of the second (3 extra channels; half of the training samples get zeros)",
    )
    ap.add_argument(
        "--summary-stem",
        action="store_true",
        help="a small head predicts the image's border colour from the mean token state (an "
        "extra loss; the target comes from the image), fed in as --bg-input feeds the truth",
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.bg_input + args.pooled_stem + args.bg_label + args.self_cond + args.summary_stem > 1:
        raise SystemExit(
            "--bg-input, --pooled-stem, --bg-label, --self-cond and --summary-stem each use the "
            "extra input channels: choose one"
        )
    if (args.bg_input or args.bg_label) and args.world not in STATED:
        raise SystemExit(f"--bg-input/--bg-label need a world that states the background: {STATED}")
    cond_channels = 3 if args.bg_input or args.self_cond or args.summary_stem else 0
    cond_channels = 8 if args.pooled_stem or args.bg_label else cond_channels
    net = shapes_unet(args.pooled, cond_channels, args.context_layers)
    feeds_extra = args.bg_input or args.pooled_stem or args.bg_label or args.summary_stem
    learned = None  # the trainable map of --pooled-stem, --bg-label or --summary-stem
    if args.pooled_stem:
        learned = torch.nn.Linear(384, 8)
    elif args.bg_label:
        learned = torch.nn.Linear(len(BACKGROUNDS), 8)
    elif args.summary_stem:
        learned = torch.nn.Sequential(
            torch.nn.Linear(384, 256), torch.nn.SiLU(), torch.nn.Linear(256, 3)
        )

    def extra(cond: dict, backgrounds: list[str]) -> torch.Tensor:
        """The extra input channels: the stated background, or a learned map of the caption's
        mean state (of the background's one-hot label with --bg-label)."""
        if args.bg_input:
            return background_image(backgrounds)
        source = mean_state(cond)
        if args.bg_label:
            names = list(BACKGROUNDS)
            source = torch.eye(len(names))[[names.index(b) for b in backgrounds]]
        return learned(source)[:, :, None, None].expand(-1, -1, 64, 64)

    if args.init:
        net.load_state_dict(load_file(args.init))
    denoiser = X0Denoiser(net, DiscreteSchedule.preset("ddpm"))
    sigma = min(args.sigma, float(denoiser.sigmas.max()))
    text = TextCache.load("minilm", 40)
    data, suffixes = world_data(args.world)

    def predict(suffix: str) -> list[torch.Tensor]:
        feed = extra if feeds_extra else None
        return x0_predictions(denoiser, text, sigma, suffix, args.pooled, feed, args.self_cond)

    where = ("attn2.to_q.", "attn2.to_kv.", "pos_proj.")
    for name, param in net.named_parameters():
        param.requires_grad_(not (args.freeze_where and any(w in name for w in where)))
    trainable = [q for q in net.parameters() if q.requires_grad]
    trainable += list(learned.parameters()) if learned is not None else []
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g).tolist()
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.probe_every == 0 or step == args.steps:
            rates = [hit_rate(predict(suffix)) for suffix in suffixes]
            line = {"step": step, "hit_rate": round(float(np.mean(rates)), 3)}
            if len(rates) > 1:  # per stated background, in BACKGROUNDS' order
                line["per_background"] = [round(r, 3) for r in rates]
            print(json.dumps({**line, "s": round(time.perf_counter() - start)}), flush=True)
        if step == args.steps:
            break
        items = [data[order[(step * args.batch + k) % len(data)]] for k in range(args.batch)]
        x0 = torch.stack([it["image"] for it in items])
        drop = torch.rand(args.batch, generator=g) < 0.1  # as the recipe: CFG's empty caption
        captions = ["" if d else caption(it, args.world) for d, it in zip(drop.tolist(), items)]
        cond = text_inputs(text, captions, args.pooled)
        if feeds_extra:
            cond["x_cond"] = extra(cond, [it["scene"].background for it in items])
        noise = torch.randn(x0.shape, generator=g)
        sigmas = torch.full((args.batch,), sigma)
        if args.self_cond:
            cond["x_cond"] = torch.zeros_like(x0)
            use_estimate = (torch.rand(args.batch, generator=g) < 0.5)[:, None, None, None]
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
                estimate = denoiser(x0 + sigma * noise, sigmas, **cond).float()
            cond["x_cond"] = torch.where(use_estimate, estimate, 0.0)
        with torch.autocast("cpu", torch.bfloat16):
            loss = denoiser.loss(x0, sigmas, noise, **cond).mean()
            if args.summary_stem:  # the head learns the border colour from the caption
                loss = loss + (cond["x_cond"][:, :, 0, 0] - border_colour(x0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if args.save:
        save_file(net.state_dict(), args.save)
    if args.picture:
        rows = [np.concatenate(list(x0.byte().permute(0, 2, 3, 1).numpy()), 1)
                for suffix in suffixes
                for x0 in predict(suffix)]  # fmt: skip
        Image.fromarray(np.concatenate(rows, 0)).save(args.picture)


if __name__ == "__main__":
    main()
