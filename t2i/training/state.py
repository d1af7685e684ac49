"""Training checkpoints: safetensors + JSON, written atomically, the last K kept.

A checkpoint is a directory `ckpt-000100/` holding `state.safetensors` (weights, EMA, optimizer
tensors, torch RNG state) and `state.json` (step, data position, python/numpy RNG, config). It is
written as `ckpt-000100.tmp/`, fsynced, then renamed; `latest` (a one-line text file, also replaced
atomically) names the newest complete one. A crash at any moment leaves the previous one loadable;
a checkpoint damaged later (a truncated copy, a full disk) is skipped with a warning by
`load_latest`, which falls back to the newest one that loads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

TENSORS = "state.safetensors"
META = "state.json"
_HANG_ENV = "T2I_TEST_HANG_IN_CKPT"  # test hook: step whose checkpoint write stalls mid-way


def save_checkpoint(
    ckpt_dir: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep: int
) -> Path:
    """Write `ckpt_dir/ckpt-{step:06d}/` atomically, point `latest` at it, prune to `keep`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"ckpt-{step:06d}"
    tmp = ckpt_dir / f"ckpt-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
    _fsync(tmp / TENSORS)
    if os.environ.get(_HANG_ENV) == str(step):
        time.sleep(3600)  # lets a test kill -9 the process half-way through this write
    (tmp / META).write_text(json.dumps(meta))
    _fsync(tmp / META)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_dir)
    _write_atomic(ckpt_dir / "latest", final.name + "\n")
    _prune(ckpt_dir, keep)
    return final


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint: `latest` if valid, else the highest complete ckpt dir."""
    pointer = ckpt_dir / "latest"
    if pointer.exists():
        cand = ckpt_dir / pointer.read_text().strip()
        if _complete(cand):
            return cand
    done = [p for p in sorted(ckpt_dir.glob("ckpt-*")) if _complete(p)]
    return done[-1] if done else None


def load_latest(ckpt_dir: Path) -> tuple[Path, dict[str, torch.Tensor], dict, list[str]] | None:
    """(path, tensors, meta, skipped) of the newest checkpoint that loads, None if there is none.

    A complete checkpoint that does not load (truncated weights, broken JSON) is skipped with a
    warning, and the next older one is tried; `skipped` says which and why. If checkpoints exist
    but none loads, a ValueError names each and its error.
    """
    newest = latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
    if newest is None:
        return None
    older = [p for p in sorted(ckpt_dir.glob("ckpt-*"), reverse=True) if _complete(p)]
    skipped: list[str] = []
    for path in [newest, *(p for p in older if p != newest)]:
        try:
            tensors, meta = load_checkpoint(path)
            int(meta["step"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            skipped.append(f"{path.name} ({type(err).__name__}: {err})")
            warnings.warn(f"skipping checkpoint {path}: {err}", stacklevel=2)
            continue
        return path, tensors, meta, skipped
    raise ValueError(f"no checkpoint in {ckpt_dir} loads: {'; '.join(skipped)}")


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not _complete(path):
        raise FileNotFoundError(f"no complete checkpoint at {path} (need {TENSORS} and {META})")
    return load_file(str(path / TENSORS)), json.loads((path / META).read_text())


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> ({'optim.<param>.<key>': tensor}, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    for group in opt.param_groups:  # safetensors stores contiguous tensors: give each state
        for p in group["params"]:  # tensor its parameter's layout (channels_last), as a
            st = opt.state.get(p, {})  # fresh run has it; the fused AdamW kernel relies on it
            for key, val in st.items():
                if torch.is_tensor(val) and val.shape == p.shape and val.stride() != p.stride():
                    st[key] = torch.empty_like(p, dtype=val.dtype).copy_(val)


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Global RNG states: torch as a uint8 tensor, python and numpy as JSON."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
    }
    return {"rng.torch": torch.get_rng_state()}, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _complete(path: Path) -> bool:
    return path.is_dir() and not path.name.endswith(".tmp") and (path / META).exists()


def _prune(ckpt_dir: Path, keep: int) -> None:
    done = [p for p in sorted(ckpt_dir.glob("ckpt-*")) if _complete(p)]
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in ckpt_dir.glob("ckpt-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed writer


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
