"""`t2i train RECIPE` (autoencoder, diffusion, autoregressive, clip, classifier, emoji_clip): parse,
build, run, report.

Flags that are not listed below are config overrides (`--optim.lr 1e-4`, `--model.channels 32,64`,
`--loop.steps 2000`); an unknown key is an error that lists the valid keys, before any work.
"""

from __future__ import annotations

import argparse
import os
import sys

RECIPES = ("autoencoder", "diffusion", "autoregressive", "clip", "classifier", "emoji_clip")


def recipe_module(name: str):
    """The recipe module (CONFIG_PRESETS, preset(name), build(cfg, args)); imported when used."""
    from t2i.training import autoencoder, autoregressive, classifier, clip, diffusion, emoji_clip

    modules = {"autoencoder": autoencoder, "diffusion": diffusion, "clip": clip}
    extractors = {"classifier": classifier, "emoji_clip": emoji_clip}  # t2i/evaluation/extractors
    return {**modules, "autoregressive": autoregressive, **extractors}[name]


EXAMPLES = """examples:
  t2i train diffusion --data shapes --out runs/shapes --preset shapes
  t2i train diffusion --data shapes --out runs/shapes --resume
  t2i train diffusion --data shapes --out runs/tuned --preset shapes --init runs/shapes/model
  t2i train autoencoder --data fashion --out runs/ae --loop.steps 2000 --optim.lr 1e-3
  t2i train autoencoder --data shapes --out runs/vq --preset shapes_vq
  t2i train autoencoder --data shapes --out runs/patch --preset patch   # fixed: no training
  t2i train autoregressive --data shapes --out runs/ar --preset shapes --autoencoder runs/vq/model
  t2i train classifier --data fashion --out runs/clf --preset fashion_classifier
  t2i train emoji_clip --data data_cache/emoji64 --out runs/emoji_clip --preset emoji_clip
  torchrun --nproc_per_node 2 -m t2i train diffusion --data shapes --out runs/ddp
"""


class _OverridesParser(argparse.ArgumentParser):
    """Keeps unknown `--dotted.key value` flags as `args.overrides` instead of failing on them."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + rest
        return ns, []


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model (autoencoder, diffusion, autoregressive, CLIP) or a feature extractor",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipes = train.add_subparsers(
        dest="recipe", metavar="RECIPE", required=True, parser_class=_OverridesParser
    )
    for name in RECIPES:
        p = recipes.add_parser(
            name,
            help=f"train the {name} recipe",
            description=f"Train the {name} recipe. Any other --section.key VALUE flag overrides "
            "the config (--optim.lr 1e-4, --loop.steps 2000); a run's config.json lists them all.",
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        p.add_argument("--data", required=True, help="data set: shapes, fashion, a folder, shards")
        p.add_argument("--out", help="run directory (default runs/<recipe>)")
        p.add_argument("--preset", default="default", help="config preset of the recipe")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
        p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
        if name == "diffusion":
            p.add_argument("--autoencoder", help="trained autoencoder folder: train in its latents")
            p.add_argument("--init", help="model folder whose UNet to start from (fine-tuning)")
        if name == "autoencoder":
            p.add_argument("--init", help="autoencoder folder to start from (fine-tuning)")
        if name == "autoregressive":
            p.add_argument("--autoencoder", required=True, help="trained VQ autoencoder folder")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from t2i.training.config import apply_overrides, parse_dotted_args
    from t2i.training.loop import TrainingDiverged, env_threads, train

    module = recipe_module(args.recipe)
    cfg = module.preset(args.preset)
    apply_overrides(cfg, parse_dotted_args(args.overrides))
    out = Path(args.out or f"runs/{args.recipe}")
    env_threads()
    if (folder := getattr(module, "fixed_model", lambda *_: None)(cfg, out)) is not None:
        print(f"{type(cfg.model).__name__} has nothing to train; model in {folder}")
        return 0
    recipe = module.build(cfg, args)
    try:
        result = train(recipe, cfg.loop, cfg.optim, out, args.resume, not args.no_progress)
    except TrainingDiverged as err:
        msg = f"t2i train: stopped: {err}; last good checkpoint in {out}/checkpoints"
        print(msg, file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    if result["status"] == "interrupted":
        print(
            f"interrupted at step {result['step']}; checkpoint {result['checkpoint']}; "
            f"continue with --resume"
        )
    else:
        print(f"trained {result['step']} steps; run in {out}; model in {result.get('model', '-')}")
    return 0
