"""`t2i data pack` (folder -> tar shards), `t2i data preview` (a grid PNG of any data source) and
`t2i data shapes-concept` / `t2i data emoji-style` (a folder of captioned images of a concept
`shapes` or `emoji` never saw)."""

from __future__ import annotations

import argparse

PACK_EXAMPLES = """examples:
  t2i data pack my_images/ shards/ --shard-size 1000
  t2i data pack my_images/ shards/ --prefix val --strict
then train with --data 'shards/train-{000000..000009}.tar' (or 'shards/*.tar')"""

PREVIEW_EXAMPLES = """examples:
  t2i data preview shapes --out shapes.png
  t2i data preview fashion --n 64 --out fashion.png
  t2i data preview 'shards/*.tar' --size 64"""

CONCEPT_EXAMPLES = """examples:
  t2i data shapes-concept --concept teal --count 50 --out data/teal
  t2i data shapes-concept --concept diamond --count 50 --out data/diamond --seed 3
then train an adapter with --data data/teal (name.png + name.txt, a plain image folder)"""


STYLE_EXAMPLES = """examples:
  t2i data emoji-style --out data/symbola --count 50
then train an adapter with --init emoji --data data/symbola ("fox emoji, symbola style")"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `pack` and `preview` to the `t2i data` subcommand group."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "pack",
        help="pack a folder of images + captions into tar shards",
        epilog=PACK_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("src", help="folder of name.png + name.txt (or metadata.jsonl)")
    p.add_argument("out", help="output folder for PREFIX-000000.tar, ...")
    p.add_argument("--prefix", default="train", help="shard name prefix (default: train)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--strict", action="store_true", help="fail on an unreadable image")
    p.set_defaults(func=run_pack)

    p = subparsers.add_parser(
        "preview",
        help="write a grid PNG of a data source with its captions",
        epilog=PREVIEW_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("data", help="shapes, fashion, a folder or a shard pattern")
    p.add_argument("--out", default="preview.png", help="output PNG (captions go to OUT.txt)")
    p.add_argument("--n", type=int, default=16, help="number of items")
    p.add_argument("--size", type=int, default=None, help="image side")
    p.add_argument("--split", default="train")
    p.set_defaults(func=run_preview)

    p = subparsers.add_parser(
        "shapes-concept",
        help="write a folder of captioned shapes images of a concept the shapes model never saw",
        epilog=CONCEPT_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--concept", required=True, help="teal, pink or diamond")
    p.add_argument("--out", required=True, help="output folder (name.png + name.txt)")
    p.add_argument("--count", type=int, default=50, help="number of images (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folder's scenes")
    p.add_argument("--size", type=int, default=64, help="image side (default: 64)")
    p.set_defaults(func=run_shapes_concept)

    p = subparsers.add_parser(
        "emoji-style",
        help="write a folder of captioned emoji in the Symbola style, which the emoji model "
        "never saw (needs fonts-symbola)",
        epilog=STYLE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--out", required=True, help="output folder (name.png + name.txt)")
    p.add_argument("--count", type=int, default=50, help="number of images (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folder's subjects")
    p.add_argument("--size", type=int, default=64, help="image side (default: 64)")
    p.set_defaults(func=run_emoji_style)


def run_pack(args: argparse.Namespace) -> int:
    from t2i.data.shards import pack_folder

    if args.shard_size < 1:
        raise ValueError(f"--shard-size {args.shard_size}: must be >= 1")
    paths, n, skipped = pack_folder(args.src, args.out, args.prefix, args.shard_size, args.strict)
    print(
        f"packed {n} samples into {len(paths)} shards in {args.out} "
        f"({paths[0].name} .. {paths[-1].name}); skipped {len(skipped)} unreadable"
    )
    print(f"use: --data '{args.out}/{args.prefix}-{{000000..{len(paths) - 1:06d}}}.tar'")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torch.utils.data import IterableDataset

    from t2i.data import load_dataset

    if args.n < 1:
        raise ValueError(f"--n {args.n}: must be >= 1")
    ds = load_dataset(args.data, image_size=args.size, split=args.split)
    stream = iter(ds) if isinstance(ds, IterableDataset) else (ds[i] for i in range(len(ds)))
    items = [item for _, item in zip(range(args.n), stream)]
    grid_image([it["image"] for it in items]).save(args.out)
    Path(args.out).with_suffix(".txt").write_text("\n".join(it["caption"] for it in items) + "\n")
    print(
        f"wrote {len(items)} items of {args.data} to {args.out} (captions in "
        f"{Path(args.out).with_suffix('.txt')})"
    )
    return 0


def run_shapes_concept(args: argparse.Namespace) -> int:
    from t2i.data.shapes_concepts import write_concept_folder

    if args.count < 1:
        raise ValueError(f"--count {args.count}: must be >= 1")
    folder = write_concept_folder(args.out, args.concept, args.count, args.seed, args.size)
    print(f"wrote {args.count} captioned images of {args.concept} to {folder}")
    print(f"use: --data {folder}")
    return 0


def run_emoji_style(args: argparse.Namespace) -> int:
    from t2i.data.emoji_symbola import write_style_folder

    folder = write_style_folder(args.out, args.count, args.seed, args.size)
    print(f"wrote {args.count} captioned Symbola emoji to {folder}")
    print(f"use: --data {folder}")
    return 0


def grid_image(images: list, cols: int | None = None):
    """Tensors (C, H, W) in [-1, 1] -> one PIL image, `cols` per row (about square by default)."""
    import math

    import numpy as np
    from PIL import Image

    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    c, h, w = images[0].shape
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for k, x in enumerate(images):
        a = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        grid[(k // cols) * h : (k // cols + 1) * h, (k % cols) * w : (k % cols + 1) * w] = a
    return Image.fromarray(grid[:, :, 0] if c == 1 else grid)
