"""`t2i train RECIPE` (autoencoder, diffusion, lora, lcm, phrasing, prior, unclip, wuerstchen_b,
wuerstchen_c, controlnet,
t2i_adapter, textual_inversion, autoregressive, draw, gan, clip, classifier, emoji_clip, guide):
parse, build, run, report.

Flags that are not listed below are config overrides (`--optim.lr 1e-4`, `--model.channels 32,64`,
`--loop.steps 2000`); an unknown key is an error that lists the valid keys, before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RECIPES = (
    "autoencoder",
    "diffusion",
    "lora",
    "lcm",
    "phrasing",
    "prior",
    "unclip",
    "wuerstchen_b",
    "wuerstchen_c",
    "controlnet",
    "t2i_adapter",
    "textual_inversion",
    "autoregressive",
    "draw",
    "gan",
    "clip",
    "classifier",
    "emoji_clip",
    "guide",
)


def recipe_module(name: str):
    """The recipe module (CONFIG_PRESETS, preset(name), build(cfg, args)); imported when used."""
    from t2i.training import (
        autoencoder,
        autoregressive,
        classifier,
        clip,
        diffusion,
        diffusion_control,
        diffusion_lcm,
        diffusion_lora,
        diffusion_phrasing,
        diffusion_prior,
        diffusion_ti,
        diffusion_unclip,
        diffusion_wuerstchen_b,
        diffusion_wuerstchen_c,
        draw,
        emoji_clip,
        gan,
        guide,
    )

    modules = {"autoencoder": autoencoder, "diffusion": diffusion, "clip": clip}
    modules["lora"] = diffusion_lora
    modules["guide"] = guide
    modules["lcm"] = diffusion_lcm
    modules["phrasing"] = diffusion_phrasing
    modules["prior"] = diffusion_prior
    modules["unclip"] = diffusion_unclip
    modules["wuerstchen_b"] = diffusion_wuerstchen_b
    modules["wuerstchen_c"] = diffusion_wuerstchen_c
    modules["controlnet"] = modules["t2i_adapter"] = modules["t2i-adapter"] = diffusion_control
    modules["textual_inversion"] = modules["textual-inversion"] = diffusion_ti
    extractors = {"classifier": classifier, "emoji_clip": emoji_clip}  # t2i/evaluation/extractors
    families = {"autoregressive": autoregressive, "draw": draw, "gan": gan}
    return {**modules, **families, **extractors}[name]


EXPORTED = (
    "diffusion",
    "phrasing",
    "autoregressive",
    "draw",
    "gan",
    "autoencoder",
    "wuerstchen_b",
    "wuerstchen_c",
)  # runs `t2i export` takes

EXAMPLES = """examples:
  t2i train diffusion --preset shapes --out runs/shapes      # the shipped `shapes`, all stages
  t2i train diffusion --preset shapes --out runs/shapes --resume   # finished stages are skipped
  t2i train diffusion --preset emoji --show-config            # its resolved configs as JSON
  t2i train diffusion --data shapes --out runs/small --preset shapes_small
  t2i train diffusion --data shapes --out runs/tuned --preset shapes_small --init runs/small/model
  t2i train autoencoder --data fashion --out runs/ae --loop.steps 2000 --optim.lr 1e-3
  t2i train autoencoder --data shapes --out runs/vq --preset shapes_vq
  t2i train autoencoder --data shapes --out runs/patch --preset patch   # fixed: no training
  t2i train autoregressive --data shapes --out runs/ar --preset shapes --autoencoder runs/vq/model
  t2i train draw --data fashion --out runs/draw --preset fashion          # AlignDRAW
  t2i train gan --data fashion --out runs/gan --preset fashion            # GAN-CLS + GAN-INT
  t2i train classifier --data fashion --out runs/clf --preset fashion_classifier
  t2i train emoji_clip --data data_cache/emoji64 --out runs/emoji_clip --preset emoji_clip
  t2i train guide --init fashion --data fashion --preset fashion_classifier --out runs/g
  t2i train controlnet --init shapes --data shapes --control.kind layout --out runs/layout
  t2i train t2i_adapter --init emoji --data data_cache/emoji64 --control.kind edges --out runs/ea
  t2i train lcm --teacher shapes --data shapes --out runs/lcm --loop.steps 1500   # LCM-LoRA
  t2i train prior --clip runs/gclip/model --data data_cache/emoji64 --out runs/prior   # unCLIP
  t2i train unclip --init emoji --clip runs/gclip/model --prior runs/prior/model \
      --data data_cache/emoji64 --out runs/unclip                           # unCLIP's decoder
  t2i train wuerstchen_b --autoencoder emoji --data data_cache/emoji64 --out runs/wb  # stage B
  t2i train wuerstchen_c --stage-b runs/wb/model --data data_cache/emoji64 --out runs/wc
  torchrun --nproc_per_node 2 -m t2i train diffusion --data shapes --out runs/ddp
"""


EXIT_DIVERGED = 3  # the loss became NaN/inf; the last good checkpoint is kept
EXIT_INTERRUPTED = 4  # SIGINT/SIGTERM: checkpointed at the end of the step; continue with --resume
EXIT_CODES = f"""exit status: 0 trained to the last step; 2 bad input (nothing trained);
  {EXIT_DIVERGED} the loss diverged (the last good checkpoint is kept);
  {EXIT_INTERRUPTED} interrupted by Ctrl-C or SIGTERM (checkpoint written; continue with --resume)
"""


class _OverridesParser(argparse.ArgumentParser):
    """Keeps unknown `--dotted.key value` flags as `args.overrides` instead of failing on them."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + rest
        return ns, []

    def format_help(self) -> str:
        """The usage, then one line per preset of the recipe (imported only for --help)."""
        from t2i.training.presets import describe, describe_keys

        name = getattr(self, "recipe_name", None)
        if name is None:
            return super().format_help()
        module = recipe_module(name)
        presets = describe(module.CONFIG_PRESETS, getattr(module, "SHIPPED", {}))
        keys = describe_keys(module.preset("default"))
        return f"{super().format_help()}\n{presets}\n{keys}"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model (autoencoder, diffusion, autoregressive, CLIP) or a feature extractor",
        description=__doc__,
        epilog=EXAMPLES + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipes = train.add_subparsers(
        dest="recipe", metavar="RECIPE", required=True, parser_class=_OverridesParser
    )
    for name in RECIPES:
        p = recipes.add_parser(
            name,
            aliases=[name.replace("_", "-")] if "_" in name else [],
            help=f"train the {name} recipe",
            description=f"Train the {name} recipe. Any other --section.key VALUE flag overrides "
            "the config (--optim.lr 1e-4, --loop.steps 2000); a run's config.json lists them all.",
            epilog=EXAMPLES + EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        p.recipe_name = name
        p.add_argument(
            "--data",
            help="data set: shapes, fashion, a folder, shards (a shipped preset has its own)",
        )
        p.add_argument("--out", help="run directory (default runs/<recipe>)")
        p.add_argument(
            "--preset",
            help="config preset of the recipe (below; default: `default`, or the resumed run's)",
        )
        p.add_argument(
            "--config",
            metavar="FILE",
            help="JSON of settings over the preset, as --show-config prints them (a run's "
            "config.json works); --section.key flags go over it",
        )
        p.add_argument(
            "--show-config",
            action="store_true",
            help="print the preset's resolved config (every key and value, overrides applied) "
            "as JSON and exit; any key can be given as --section.key VALUE",
        )
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue from the newest checkpoint that loads (an error if --out has none)",
        )
        p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
        if name == "wuerstchen_b":
            p.add_argument("--autoencoder", help="the autoencoder folder (stage A; required)")
        if name == "wuerstchen_c":
            p.add_argument(
                "--stage-b", dest="stage_b", metavar="DIR", help="a wuerstchen_b model (required)"
            )
        if name == "diffusion":
            p.add_argument("--autoencoder", help="trained autoencoder folder: train in its latents")
            p.add_argument(
                "--init",
                metavar="NAME|DIR",
                help="bundled model or model folder to fine-tune: the run adopts its settings",
            )
        if name in ("lora", "textual_inversion", "guide"):
            p.add_argument(
                "--init", metavar="NAME|DIR", help=f"the model the {name} is for (required)"
            )
        if name in ("controlnet", "t2i_adapter"):
            p.add_argument(
                "--init", metavar="NAME|DIR", help="the model the control steers (required)"
            )
        if name == "phrasing":
            p.add_argument(
                "--init", metavar="NAME|DIR", help="the model whose words it teaches (required)"
            )
        if name == "lcm":
            p.add_argument(
                "--teacher",
                "--init",
                dest="init",
                metavar="NAME|DIR",
                help="the diffusion model to distil (required): the run adopts its settings",
            )
        if name in ("prior", "unclip"):
            p.add_argument("--clip", metavar="DIR", help="the generation CLIP (required)")
        if name == "unclip":
            p.add_argument(
                "--init", metavar="NAME|DIR", help="the model the decoder starts from (required)"
            )
            p.add_argument("--prior", metavar="DIR", help="a `t2i train prior` model (required)")
        if name == "autoencoder":
            p.add_argument("--init", help="autoencoder folder to start from (fine-tuning)")
        if name == "autoregressive":
            p.add_argument("--autoencoder", required=True, help="trained VQ autoencoder folder")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from t2i.training.config import parse_dotted_args
    from t2i.training.loop import env_threads
    from t2i.training.presets import run_stages, sampling_flags

    module = recipe_module(args.recipe)
    overrides = parse_dotted_args(args.overrides)
    out = Path(args.out or f"runs/{args.recipe}")
    if args.resume:
        recorded_defaults(args, out)
    args.preset = args.preset or "default"
    stages = getattr(module, "SHIPPED", {}).get(args.preset)
    if args.show_config:
        print(json.dumps(resolved_config(module, args, stages, overrides), indent=2))
        return 0
    env_threads()
    if stages is None:
        if not args.data:
            raise ValueError(f"--data is required (preset {args.preset!r} names no data set)")
        return report(train_one(module, args.preset, overrides, args, out), out)
    for flag in ("init", "autoencoder", "config"):
        if getattr(args, flag, None):
            raise ValueError(f"--{flag}: preset {args.preset!r} makes its own in its stages")

    def train_stage(stage, run_dir: Path, flags: dict) -> dict:
        own = overrides if stage.recipe == args.recipe else {}  # keys are the named recipe's
        if flags.get("init"):  # a fine-tune samples (grids, card) as its own preset says
            own = {**sampling_flags(recipe_module(stage.recipe).preset(stage.preset)), **own}
        stage_args = argparse.Namespace(**{**vars(args), **flags})
        return train_one(recipe_module(stage.recipe), stage.preset, own, stage_args, run_dir)

    return report(run_stages(args.preset, stages, out, args.data, args.resume, train_stage), out)


def recorded_defaults(args: argparse.Namespace, out: Path) -> None:
    """--resume: a run's --preset and --data default to the ones it recorded."""
    from t2i.training.run_config import read_config_file

    if not (out / "config.json").is_file():
        return
    recorded = read_config_file(out / "config.json")
    args.preset = args.preset or recorded.get("preset")
    args.data = args.data or recorded.get("data")


def resolved_config(module, args: argparse.Namespace, stages, overrides: dict) -> dict:
    """--show-config: the preset's config with the overrides applied; a shipped model's stages,
    each with its run folder, flags and config."""
    from dataclasses import asdict

    from t2i.training.config import apply_overrides
    from t2i.training.presets import stage_args, stage_dirs

    if stages is None:
        return asdict(configure(module, args.preset, overrides, args, None))
    dirs = stage_dirs(stages, Path(args.out or f"runs/{args.recipe}"))
    shown = []
    for stage in stages:
        cfg = recipe_module(stage.recipe).preset(stage.preset)
        if stage.recipe == args.recipe:
            apply_overrides(cfg, overrides)
        flags = stage_args(stage, dirs, args.data)
        shown.append(
            {**asdict(stage), "run_dir": str(dirs[stage.name]), **flags, "config": asdict(cfg)}
        )
    return {"preset": args.preset, "stages": shown}


def train_one(module, preset: str, overrides: dict, args: argparse.Namespace, out: Path) -> dict:
    """One run of a recipe's preset in `out`: the loop's summary ("status": done, interrupted,
    or diverged)."""
    from t2i.training.loop import TrainingDiverged, train

    cfg = configure(module, preset, overrides, args, out if args.resume else None)
    if (folder := getattr(module, "fixed_model", lambda *_: None)(cfg, out)) is not None:
        print(f"{type(cfg.model).__name__} has nothing to train; model in {folder}")
        return {"status": "done", "step": 0, "model": str(folder), "fixed": True}
    recipe = module.build(cfg, args)
    recipe.config = {"preset": preset, **recipe.config}
    try:
        return train(recipe, cfg.loop, cfg.optim, out, args.resume, not args.no_progress)
    except TrainingDiverged as err:
        msg = f"t2i train: stopped: {err}; last good checkpoint in {out}/checkpoints"
        print(msg, file=sys.stderr)
        return {"status": "diverged"}


def configure(module, preset: str, overrides: dict, args: argparse.Namespace, resumed_in):
    """The run's config: the preset, then what --init adopts, --config FILE, the flags; or, when
    resuming in `resumed_in`, the run's own config.json, which every flag must agree with."""
    from t2i.training.config import apply_overrides
    from t2i.training.run_config import apply_file, read_config_file, resumed, settings

    name = getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1])
    asked = str(getattr(args, "recipe", "")).replace("-", "_")
    if asked in getattr(module, "NAMES", ()):  # one module, several recipes (controlnet, ...)
        name = asked
    cfg = module.preset(preset)
    if hasattr(module, "adopt") and getattr(args, "init", None):
        cfg = module.adopt(cfg, args)
    given = dict(overrides)
    if getattr(args, "config", None):
        data = read_config_file(args.config)
        cfg = apply_file(cfg, data, f"--config {args.config}", name)
        given = {**settings(cfg, data), **given}
        args.data = args.data or data.get("data")
    cfg = apply_overrides(cfg, overrides)
    if resumed_in is not None:
        cfg = resumed(cfg, args, given, Path(resumed_in), name, preset)
    return cfg


def report(result: dict, out: Path) -> int:
    """Print where the run is; its exit status (EXIT_CODES)."""
    if result["status"] == "diverged":
        return EXIT_DIVERGED
    code = EXIT_INTERRUPTED if result["status"] == "interrupted" else 0
    if os.environ.get("RANK", "0") != "0" or result.get("fixed"):
        return code  # rank 0 reports; a fixed model has said where it is
    if result["status"] == "interrupted":
        stage = f" (stage {result['stage']})" if "stage" in result else ""
        print(
            f"interrupted at step {result['step']}{stage}; checkpoint {result['checkpoint']}; "
            f"continue with --resume"
        )
    else:
        step = result.get("step", "-")
        print(f"trained {step} steps; run in {out}; model in {result.get('model', '-')}")
    return code


def export_run(
    run_dir: str | Path,
    out: str | Path,
    dtype: str = "float16",
    data: str | None = None,
    ema: bool = True,
    base: str | Path | None = None,
    guidance: float | None = None,
    step: int | None = None,
) -> Path:
    """The newest complete checkpoint of a run (or that of `step`) -> a model folder at `out`
    (`t2i export`); the run's recipe (from the checkpoint) writes it.

    data: the run's `--data`, for the data card (runs record it; give it for older runs).
    ema: export the EMA weights (when the run keeps them), else the raw trained weights.
    base: for an upscaler run, the model folder of its base model, copied into `out/base`: the
    folder is then a cascade (t2i/cascade.py) that `t2i generate` runs end to end.
    guidance: the folder's default guidance scale instead of the run's (a cascade's base stages
    sample with their own default: a 1 px stage wants 1).
    """
    from t2i.training.export import at_step, latest

    if step is None:
        found, tensors, meta = latest(run_dir, dtype)
    else:
        found, tensors, meta = at_step(run_dir, step, dtype)
    name = meta.get("recipe")
    if name not in EXPORTED:
        raise ValueError(f"{found}: recipe {name!r}; export handles {', '.join(EXPORTED)}")
    if name != "diffusion" and (base is not None or guidance is not None):
        raise ValueError("--base and --guidance apply to diffusion runs only")
    kw = {"run_dir": Path(run_dir), "dtype": dtype, "data": data, "ema": ema}
    module = recipe_module(name)
    return module.export_checkpoint(
        found, tensors, meta, Path(out), base=base, guidance=guidance, **kw
    )
