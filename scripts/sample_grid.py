"""The README's sample grids: one row per prompt, one column per seed, the model's own defaults.

    python3 scripts/sample_grid.py --model emoji --seeds 6 --out docs/samples/emoji.png \
        "grinning face emoji, twemoji style" "red heart emoji, openmoji style"
"""

from __future__ import annotations

import argparse

from PIL import Image

import t2i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prompts", nargs="+")
    ap.add_argument("--model", default=t2i.DEFAULT_MODEL)
    ap.add_argument("--seeds", type=int, default=6, help="columns: seeds 0..N-1")
    ap.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscale of each cell")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pipe = t2i.load(args.model)
    rows = [pipe(prompt, n=args.seeds, seed=0) for prompt in args.prompts]  # image i: seed i
    w, h = rows[0][0].size
    w, h = w * args.scale, h * args.scale
    grid = Image.new("RGB", (w * args.seeds, h * len(rows)), "white")
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            grid.paste(image.resize((w, h), Image.NEAREST), (c * w, r * h))
    grid.save(args.out)
    print(f"wrote {args.out}: {len(rows)} prompts x {args.seeds} seeds, {args.model}")


if __name__ == "__main__":
    main()
