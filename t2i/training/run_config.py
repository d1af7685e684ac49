"""Where a run's configuration comes from, in order: the preset, what `--init` adopts, a
`--config FILE`, the `--section.key VALUE` flags. On `--resume` the run folder's config.json is
the truth: it replaces the preset and the file, and a flag that disagrees with it is an error
naming both values (a resumed run never quietly becomes another run, and its config.json is never
rewritten).

Keys of a run's config.json that are records, not settings (`recipe`, `data`, `preset`,
`autoencoder`, `init`), are read where they matter: `data` and the folders become the flags'
defaults, `recipe` must match.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

from t2i.training.config import apply_overrides, valid_keys

RECORDS = ("recipe", "data", "preset", "autoencoder", "init")
FOLDER_FLAGS = ("autoencoder", "init")  # recorded as {"path", "digest"}


def read_config_file(path: str | Path) -> dict:
    """A JSON object from `path` (a run's config.json works): the file named in every error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    if path.stat().st_size > 4 * 2**20:
        raise ValueError(f"--config {path}: {path.stat().st_size} bytes; a config is under 4 MB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"--config {path}: not a JSON file ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: must be a JSON object of config sections")
    return data


def apply_file(cfg: Any, data: dict, source: str, recipe: str) -> Any:
    """Set every setting of `data` (nested sections, JSON values) on `cfg`; an unknown key or a
    bad value is an error naming `source` and the key."""
    if data.get("recipe", recipe) != recipe:
        raise ValueError(f"{source}: a {data['recipe']!r} config, not {recipe!r}")
    try:
        return apply_overrides(cfg, settings(cfg, data))
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def settings(cfg: Any, data: dict) -> dict[str, str]:
    """The settings of a config file (its records left out) as dotted keys and flag text."""
    return flatten({k: v for k, v in data.items() if k not in RECORDS}, set(valid_keys(cfg)))


def flatten(data: dict, keys: set[str], prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 1e-4}} -> {"optim.lr": "0.0001"}: the text a flag would carry."""
    out: dict[str, str] = {}
    for name, value in data.items():
        key = prefix + name
        if key not in keys and isinstance(value, dict):
            out.update(flatten(value, keys, key + "."))
        else:
            out[key] = as_text(value)
    return out


def as_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def value_at(cfg: Any, key: str) -> Any:
    for name in key.split("."):
        cfg = getattr(cfg, name)
    return list(cfg) if isinstance(cfg, tuple) else cfg


def check_agrees(cfg: Any, overrides: dict[str, str], source: str) -> None:
    """Each flag must give the value `cfg` already has (the resumed run's)."""
    for key, text in overrides.items():
        wanted = value_at(apply_overrides(copy.deepcopy(cfg), {key: text}), key)
        held = value_at(cfg, key)
        if wanted != held:
            raise ValueError(
                f"--{key} {text} conflicts with the run's {key} = {json.dumps(held)} ({source}); "
                "a resumed run keeps its config: drop the flag, or start a new --out "
                "(--init RUN/model to go on from its weights)"
            )


def resumed(cfg: Any, args, overrides: dict, run_dir: Path, name: str, preset: str):
    """On --resume: `cfg` becomes the run's recorded config and `args` its recorded data and
    folders; every flag given must agree with them. Returns cfg."""
    source = run_dir / "config.json"
    if not source.is_file():
        return cfg  # a run killed before its first checkpoint wrote nothing to agree with
    recorded = read_config_file(source)
    if recorded.get("preset", preset) != preset:
        raise ValueError(
            f"--preset {preset} conflicts with the run's preset {recorded['preset']!r} "
            f"({source}); drop --preset or start a new --out"
        )
    cfg = apply_file(cfg, recorded, str(source), name)
    check_agrees(cfg, overrides, str(source))
    adopt_records(args, recorded, source)
    return cfg


def adopt_records(args: argparse.Namespace, recorded: dict, source: Path) -> None:
    """--data, --autoencoder and --init from the run's records; a flag that names
    something else is an error."""
    pairs = [("data", recorded.get("data"))]
    pairs += [(f, (recorded.get(f) or {}).get("path")) for f in FOLDER_FLAGS]
    for flag, held in pairs:
        given = getattr(args, flag, None)
        if held is None:
            continue
        if given is None:
            setattr(args, flag, held)
        elif not same(flag, given, held):
            raise ValueError(
                f"--{flag} {given} conflicts with the run's {flag} {held!r} ({source}); a "
                "resumed run keeps its data and folders: drop the flag or start a new --out"
            )


def same(flag: str, given: str, held: str) -> bool:
    if flag in FOLDER_FLAGS or Path(given).is_dir():
        return Path(given).resolve() == Path(held).resolve()
    return given == held
