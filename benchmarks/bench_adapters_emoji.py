"""Personalisation of `emoji` with an art style it never saw: Symbola's monochrome glyphs
(t2i/data/emoji_symbola.py), learnt from a user's kind of folder of 50 captioned images by a LoRA
and by a textual-inversion word through the frozen MiniLM encoder, judged by the style classifier
trained here on real images (t2i/evaluation/emoji_style.py; never used in training).

For the base and each adapter: the share of images in the Symbola style on prompts about other
emoji ("pretzel emoji, symbola style"); retention: the share of the base's own prompts (one per
real image of a spread of the emoji data set, "fox emoji, noto style") drawn in the style they
ask for, adapter applied; training time and file size. The adapters are trained with the CLI as a
user would (skipped when their file exists in --out).

    python3 benchmarks/bench_adapters_emoji.py --data data_cache/emoji64 --out runs/adapters-emoji

Writes `results.json` and `grid.png` (one row per method, style prompts) in --out.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_adapters import draw  # noqa: E402

import t2i  # noqa: E402
from t2i.cli import main as t2i_main  # noqa: E402
from t2i.data.emoji_symbola import STYLE, style_prompts, write_style_folder  # noqa: E402
from t2i.evaluation.emoji_style import load_style_judge, style_accuracy  # noqa: E402
from t2i.images import image_grid  # noqa: E402

ADAPTERS = {  # name -> (recipe, extra flags)
    "lora": ("lora", ["--name", STYLE, "--trigger", STYLE]),
    "lora_prior": ("lora", ["--name", STYLE, "--trigger", STYLE, "--prior_images", "500"]),
    "ti": ("textual_inversion", ["--token", STYLE, "--init_word", "black"]),
}


def fixed_prompts(emoji_dir: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(captions, styles) of n training images of the emoji data, drawn with `seed`."""
    rows = [json.loads(line) for line in (emoji_dir / "metadata.jsonl").read_text().splitlines()]
    rows = random.Random(seed).sample([r for r in rows if r["split"] == "train"], n)
    return [r["text"] for r in rows], [r["style"] for r in rows]


def prior_folder(emoji_dir: Path, out: Path, n: int = 500) -> Path:
    """A folder of n images spread over the emoji data (every k-th training row, copied), for
    prior preservation."""
    folder = out / "data" / "emoji-prior"
    rows = [json.loads(line) for line in (emoji_dir / "metadata.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    picked = train[:: len(train) // n][:n]
    for r in picked:
        (folder / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(emoji_dir / r["file_name"], folder / r["file_name"])
    lines = "".join(json.dumps(r) + "\n" for r in picked)
    (folder / "metadata.jsonl").write_text(lines)
    return folder


def train(name: str, folder: Path, out: Path, prior: Path, steps: int) -> tuple[Path, float]:
    recipe, extra = ADAPTERS[name]
    run = out / name
    path = run / "model" / f"{STYLE}.safetensors"
    if path.is_file():
        return path, float("nan")  # trained before: its log has the time
    args = ["train", recipe, "--init", "emoji", "--data", str(folder), "--out", str(run)]
    args += [*extra, "--no-progress", "--loop.steps", str(steps)]
    if "--prior_images" in extra:
        args += ["--prior_data", str(prior)]
    start = time.perf_counter()
    if t2i_main(args) != 0:
        raise RuntimeError(f"training {name} failed")
    return path, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", default="data_cache/emoji64", help="the emoji data set (fixed prompts)"
    )
    ap.add_argument("--out", default="runs/adapters-emoji")
    ap.add_argument("--images", type=int, default=50, help="training images")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per adapter")
    ap.add_argument("--n", type=int, default=100, help="style prompts judged")
    ap.add_argument("--retention", type=int, default=200, help="fixed prompts judged")
    ap.add_argument("--adapters", nargs="+", default=list(ADAPTERS), choices=list(ADAPTERS))
    args = ap.parse_args()
    out, data = Path(args.out), Path(args.data)
    judge = load_style_judge()
    folder = write_style_folder(out / "data" / STYLE, args.images)
    prior = prior_folder(data, out)
    prompts, (fixed, styles) = style_prompts(args.n), fixed_prompts(data, args.retention)
    base = t2i.load("emoji")
    images = draw(base, prompts)
    rows = [images[:8]]
    results: dict = {"settings": vars(args), "adapters": {}}
    results["base"] = {
        STYLE: style_accuracy(judge, torch.stack(images), STYLE),
        "fixed": style_accuracy(judge, torch.stack(draw(base, fixed)), styles),
    }
    print("base", results["base"])
    for name in args.adapters:
        path, seconds = train(name, folder, out, prior, args.steps)
        pipe = t2i.load("emoji")
        if name.startswith("lora"):
            tag = f"<lora:{pipe.load_lora(path)}:1>"
        else:
            pipe.load_embedding(path)
            tag = ""
        images = draw(pipe, prompts, tag)
        rows.append(images[:8])
        results["adapters"][name] = {
            STYLE: style_accuracy(judge, torch.stack(images), STYLE),
            "fixed": style_accuracy(judge, torch.stack(draw(pipe, fixed, tag)), styles),
            "train_seconds": round(seconds, 1),
            "file_bytes": path.stat().st_size,
        }
        print(name, results["adapters"][name])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    image_grid(torch.stack([x for row in rows for x in row]), cols=8).save(out / "grid.png")
    print(f"wrote {out / 'results.json'} and {out / 'grid.png'}")


if __name__ == "__main__":
    main()
