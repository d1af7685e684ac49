"""A training run's log: a tqdm bar (loss, images/s, ETA), log.jsonl, and TensorBoard scalars when
asked, written by the main process only."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from tqdm import tqdm

from t2i.training.config import LoopConfig
from t2i.training.dist import World


def read_log(path: Path) -> list[dict]:
    """The records of a run's log.jsonl. A torn last line (the process was killed mid-write) is
    dropped with a warning; a bad line anywhere else is a ValueError naming the file and line."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError(f"a record is a JSON object, got {type(rec).__name__}")
        except ValueError as err:
            if i < len(lines) - 1:
                raise ValueError(f"{path}, line {i + 1}: not a log record: {err}") from err
            warnings.warn(f"{path}: dropped its torn last line {line[:60]!r}", stacklevel=2)
            continue
        records.append(rec)
    return records


class RunLogger:
    """tqdm bar (loss, images/s, ETA) + log.jsonl + optional TensorBoard, on rank 0 only."""

    def __init__(self, run_dir: Path, loop: LoopConfig, world: World, start: int, progress: bool):
        self.run_dir, self.loop, self.world, self.start = run_dir, loop, world, start
        self.progress = progress and world.is_main
        self.losses: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.t_last = time.perf_counter()
        self.step_last = start
        self.t0 = self.t_last

    def __enter__(self):
        if not self.world.is_main:
            return self
        self.file = open(self.run_dir / "log.jsonl", "a")
        self.bar = tqdm(
            total=self.loop.steps, initial=self.start, disable=not self.progress, unit="step"
        )
        self.tb = None
        if self.loop.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self

    def step(self, step: int, loss: float, gnorm: float, lr: float, parts=None) -> None:
        """parts: the loss's named terms of this step (a recipe's Recipe.parts), averaged like
        the loss over the steps of a log line."""
        if not self.world.is_main:
            return
        self.losses.append(loss)
        for key, value in (parts or {}).items():
            self.parts.setdefault(key, []).append(float(value))
        self.bar.update(1)
        if step % self.loop.log_every and step != self.loop.steps:
            return
        now = time.perf_counter()
        ips = (step - self.step_last) * self.loop.batch_size / max(now - self.t_last, 1e-9)
        rec = {
            "step": step,
            "loss": sum(self.losses) / len(self.losses),
            "lr": lr,
            "grad_norm": gnorm,
            "images_per_s": ips,
            "elapsed_s": now - self.t0,
            **{k: sum(v) / len(v) for k, v in self.parts.items()},
        }
        self.losses, self.t_last, self.step_last = [], now, step
        self.parts = {}
        self.bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{ips:.1f}")
        self._write(rec)
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "images_per_s"):
                self.tb.add_scalar(f"train/{key}", rec[key], step)

    def event(self, name: str, step: int, **fields) -> None:
        if self.world.is_main:
            self._write({"step": step, "event": name, **fields})

    def _write(self, rec: dict) -> None:
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def __exit__(self, *exc):
        if self.world.is_main:
            self.bar.close()
            self.file.close()
            if self.tb is not None:
                self.tb.close()
        return False
