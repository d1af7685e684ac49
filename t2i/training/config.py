"""Training configuration: plain dataclasses, presets, and `--dotted.key value` overrides."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class OptimConfig:
    lr: float = 2e-4  # peak learning rate of AdamW
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decays
    eps: float = 1e-8  # AdamW's denominator epsilon
    schedule: str = "cosine"  # "cosine" (warmup then cosine to min_lr_ratio*lr) or "constant"
    warmup_steps: int = 100  # linear warmup from 0; 0 means start at full lr
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    decay_steps: int = 0  # the cosine's length in steps; 0 = loop.steps (a run may stop before)
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999  # 0 disables the EMA (the export then uses the raw weights)


def native_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 or AMX)? Elsewhere bf16 is emulated and
    slower than fp32, so recipes turn bf16 autocast on by default only here."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


@dataclass
class LoopConfig:
    steps: int = 10_000  # optimizer steps
    batch_size: int = 32  # global batch per optimizer step (all processes, all micro-batches)
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 0  # fixes init, data order, noise, sigmas and caption dropout
    bf16: bool = False  # bf16 autocast on CPU (only where it measured faster, see BENCHMARKS.md)
    log_every: int = 10  # steps between JSONL log lines (loss is averaged over them)
    ckpt_every: int = 500  # steps between checkpoints; 0 = only at the end (and on SIGINT/SIGTERM)
    keep_ckpts: int = 3  # newest checkpoints kept
    sample_every: int = 1000  # steps between sample grids; 0 disables
    num_workers: int = 0  # DataLoader worker processes for fetching items
    tensorboard: bool = False  # also log scalars to TensorBoard (needs the tensorboard package)


def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a nested dataclass, e.g. ['loop.seed', 'optim.lr', ...]."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return sorted(keys)


def apply_overrides(cfg: Any, overrides: dict[str, str]) -> Any:
    """Set `{"optim.lr": "1e-4", ...}` on a nested dataclass in place, converting each string to the
    field's type. An unknown key or an unconvertible value raises ValueError before any work."""
    keys = valid_keys(cfg)
    for key, text in overrides.items():
        if key not in keys:
            raise ValueError(f"unknown config key {key!r}; valid keys: {keys}")
        *parents, leaf = key.split(".")
        target = cfg
        for name in parents:
            target = getattr(target, name)
        hint = typing.get_type_hints(type(target))[leaf]
        try:
            value = _convert(text, hint)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad value {text!r} for {key} ({_type_name(hint)}): {err}") from None
        setattr(target, leaf, value)
    return cfg


def parse_dotted_args(argv: list[str]) -> dict[str, str]:
    """['--optim.lr', '1e-4', '--loop.bf16=true'] -> {'optim.lr': '1e-4', 'loop.bf16': 'true'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"unexpected argument {arg!r}; overrides look like --optim.lr 1e-4")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ValueError(f"missing value for {arg}")
            key, text = arg[2:], argv[i + 1]
            i += 2
        out[key] = text
    return out


def _json_list(text: str) -> list:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON list ({e.msg})") from None
    if not isinstance(values, list):
        raise ValueError("expected a JSON list")
    return values


def _convert(text: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _convert(text, hint)
    if origin is tuple or origin is list:
        inner = args[0] if args else str
        if text.lstrip().startswith("["):  # a JSON list: items may hold commas (prompts)
            values = [_convert(str(v), inner) for v in _json_list(text)]
            return tuple(values) if origin is tuple else values
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        values = [_convert(p.strip(), inner) for p in parts]
        return tuple(values) if origin is tuple else values
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if hint is int:
        return int(float(text)) if "e" in text.lower() else int(text)
    if hint in (float, str):
        return hint(text)
    raise TypeError(f"cannot override a field of type {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
