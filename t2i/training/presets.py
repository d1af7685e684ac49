"""Shipped models as named presets: the runs that made each one, as stages run in order.

A recipe keeps its single-run configs in `CONFIG_PRESETS` (name -> function returning the config)
and the shipped models in `SHIPPED` (name -> stages). A stage is one run of a recipe's preset in its
own folder; a later stage may start from an earlier one's model (`init`, fine-tuning) or train in
its autoencoder's latents (`autoencoder`). One command reproduces the whole model:

    t2i train diffusion --preset shapes --out runs/shapes   # runs/shapes/{patch,high_noise,uniform}
    t2i train diffusion --preset shapes --out runs/shapes --resume   # skips finished stages

A one-stage preset runs in --out itself. This module runs stages through a callable the training
CLI passes in (it alone picks recipes, so no recipe is imported here).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from t2i.checkpoint import INDEX_NAME


@dataclass(frozen=True)
class Stage:
    """One run of a shipped model's training."""

    name: str  # its run folder inside --out
    recipe: str  # the recipe that trains it: "autoencoder" or "diffusion"
    preset: str  # that recipe's CONFIG_PRESETS name
    data: str  # its --data: a built-in set, or the folder `t2i data` writes
    init: str = ""  # "": from scratch; else the earlier stage whose model it fine-tunes (--init)
    autoencoder: str = ""  # "": pixels; else the earlier stage whose model is its --autoencoder


def check_stages(name: str, stages: tuple[Stage, ...]) -> None:
    """Stage names are unique, and a stage starts from or encodes with earlier stages only."""
    seen: set[str] = set()
    for stage in stages:
        for needed in (stage.init, stage.autoencoder):
            if needed and needed not in seen:
                raise ValueError(f"preset {name!r}: stage {stage.name!r} needs {needed!r} first")
        if stage.name in seen:
            raise ValueError(f"preset {name!r}: two stages named {stage.name!r}")
        seen.add(stage.name)


def stage_dirs(stages: tuple[Stage, ...], out: Path) -> dict[str, Path]:
    """Each stage's run folder: --out itself for a one-stage preset, else out/<stage name>."""
    if len(stages) == 1:
        return {stages[0].name: out}
    return {stage.name: out / stage.name for stage in stages}


def stage_args(stage: Stage, dirs: dict[str, Path], data: str | None) -> dict:
    """The flags a stage runs with: its data (or the caller's --data) and earlier stages' models."""
    args = {"data": data or stage.data, "init": None, "autoencoder": None}
    if stage.init:
        args["init"] = str(dirs[stage.init] / "model")
    if stage.autoencoder:
        args["autoencoder"] = str(dirs[stage.autoencoder] / "model")
    return args


def run_stages(
    name: str,
    stages: tuple[Stage, ...],
    out: Path,
    data: str | None,
    resume: bool,
    train_stage: Callable[[Stage, Path, dict], dict],
) -> dict:
    """Run the stages in order; with `resume`, a stage whose model folder exists is done, one
    with checkpoints continues, and one not begun starts from step 0 (but --resume on an `out`
    where no stage has begun is the loop's error). train_stage(stage, run_dir, flags) -> the
    loop's summary; the first stage that does not finish ("interrupted") ends the sequence."""
    check_stages(name, stages)
    dirs = stage_dirs(stages, out)
    begun = any(_begun(d) for d in dirs.values())
    result: dict = {"status": "done"}
    for stage in stages:
        run_dir = dirs[stage.name]
        if resume and (run_dir / "model" / INDEX_NAME).is_file():
            print(f"stage {stage.name}: done already ({run_dir / 'model'})")
            continue
        print(f"stage {stage.name}: t2i train {stage.recipe} --preset {stage.preset} in {run_dir}")
        flags = stage_args(stage, dirs, data)
        flags["resume"] = resume and (_begun(run_dir) or not begun)
        result = train_stage(stage, run_dir, flags)
        if result.get("status") != "done":
            return {**result, "stage": stage.name}
    return {**result, "model": str(dirs[stages[-1].name] / "model")}


SAMPLING_KEYS = ("sampler", "sample_steps", "guidance_scale", "guidance_interval")


def sampling_flags(cfg) -> dict[str, str]:
    """A stage preset's sampling defaults as override flags: a stage that fine-tunes an earlier
    one samples its grids and writes its card as its own preset says, not as the model it starts
    from (what --init adopts otherwise)."""
    flags = {}
    for key in (k for k in SAMPLING_KEYS if hasattr(cfg, k)):
        value = getattr(cfg, key)
        if isinstance(value, tuple):
            flags[key] = json.dumps(list(value))
        else:
            flags[key] = "none" if value is None else str(value)
    return flags


def _begun(run_dir: Path) -> bool:
    """A stage has begun once it has written a checkpoint or its model."""
    return (run_dir / "checkpoints").is_dir() or (run_dir / "model" / INDEX_NAME).is_file()


def describe(presets: dict, shipped: dict) -> str:
    """--help's list: one line per preset (a shipped model's stages; a config's docstring)."""
    lines = []
    for name in sorted(shipped):
        chain = " -> ".join(
            f"{s.recipe} {s.preset}" + (f" (from {s.init})" if s.init else "")
            for s in shipped[name]
        )
        lines.append((name, f"the bundled `{name}`: {chain}"))
    for name in sorted(set(presets) - set(shipped)):
        make = presets[name]
        if isinstance(make, type):
            lines.append((name, "the recipe config's defaults"))
            continue
        doc = (make.__doc__ or "").strip()
        lines.append((name, doc.splitlines()[0] if doc else "-"))
    width = max(len(n) for n, _ in lines)
    body = "\n".join(f"  {n:<{width}}  {text}" for n, text in lines)
    return (
        "presets (--preset NAME; --show-config prints one's resolved config as JSON: every key\n"
        f"and its value, overrides applied; any key can be set as --section.key VALUE):\n{body}\n"
    )


def describe_keys(cfg) -> str:
    """--help's list of config keys: each dotted key, its default (the `default` preset's) and
    what it means (the comment beside the field in its dataclass)."""
    rows = [(key, json.dumps(value), meaning) for key, value, meaning in key_rows(cfg)]
    width = max(len(f"{k} = {v}") for k, v, _ in rows if len(f"{k} = {v}") <= 40)
    lines = []
    for key, value, meaning in rows:
        head = f"{key} = {value}"
        head = head if len(head) <= 60 else head[:57] + "..."
        meaning = meaning if len(meaning) <= 90 else meaning[:87] + "..."
        lines.append(f"  {head:<{width}}  {meaning}".rstrip())
    return (
        "config keys (--section.key VALUE, or in --config FILE; defaults of the `default` "
        "preset):\n" + "\n".join(lines) + "\n"
    )


def key_rows(cfg, prefix: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, value, meaning) of every leaf of a nested config dataclass."""
    meanings = field_comments(type(cfg))
    rows = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += key_rows(value, f"{prefix}{f.name}.")
        else:
            shown = list(value) if isinstance(value, tuple) else value
            rows.append((prefix + f.name, shown, meanings.get(f.name, "")))
    return rows


def field_comments(cls) -> dict[str, str]:
    """{field: its comment}: the comment at the end of the field's line, else the comment lines
    just above it."""
    try:
        source = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    comments, above = {}, []
    for line in source:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        match = re.match(r"(\w+)\s*:[^#]*?(?:#\s*(.*))?$", text)
        if match and not text.startswith(("def ", "class ", "return")):
            comments[match.group(1)] = match.group(2) or " ".join(above)
        above = []
    return comments


def pick(recipe: str, presets: dict[str, Callable], name: str):
    """A recipe's config preset `name`, built fresh; an unknown name names the known ones."""
    if name not in presets:
        raise ValueError(f"unknown {recipe} preset {name!r}; choose from {sorted(presets)}")
    return presets[name]()
