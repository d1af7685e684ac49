"""The one explicit training loop shared by every recipe.

A recipe is data, not a subclass: a model, a map-style dataset, a collate function, a loss, and
optionally a sample-grid and an export function. The loop owns everything else: AdamW, warmup +
cosine learning rate, gradient accumulation and clipping, EMA, bf16 autocast, DDP, the data order,
per-step random generators, checkpoints, logs, SIGINT/SIGTERM and NaN handling.

Exact resume: the data order is a function of (seed, epoch, position) and every random draw of a
step comes from a generator seeded by (seed, step, micro-batch), drawn for the whole global
micro-batch and sliced per rank, so a resumed or multi-process run repeats the same computation.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from t2i.checkpoint import INDEX_NAME
from t2i.training import state as ckpt
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.dist import World, all_reduce_sum, close_world, init_world
from t2i.training.export import add_training_card
from t2i.training.log import RunLogger, read_log


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


@dataclass
class Recipe:
    """What a recipe gives the loop. `loss(batch, rng)` returns the mean loss of the local batch
    and must run the trainable parameters of `model` (it is called inside the DDP forward)."""

    name: str
    model: nn.Module
    dataset: Sequence[Any]
    collate: Callable[[list[Any]], Any]
    loss: Callable[[Any, StepRNG], torch.Tensor]
    sample: Callable[[nn.Module], Image.Image] | None = None  # EMA model -> grid (image_grid)
    export: Callable[[nn.Module, Path], None] | None = None  # EMA model, folder
    config: dict = field(default_factory=dict)  # saved in config.json and every checkpoint
    decays: Callable[[str, nn.Parameter], bool] | None = None  # takes weight decay? None: all
    # the learning rate of a parameter as a multiple of the schedule's (a GAN's discriminator
    # learns faster than its generator: two time-scales); None: 1 for all
    lr_scale: Callable[[str], float] | None = None
    # the parts of the last step's loss, averaged into each log line beside "loss" (a GAN's
    # discriminator and generator terms); None: the loss alone
    parts: Callable[[], dict[str, float]] | None = None
    # measurements of the EMA model at each sample grid, logged as a "probe" event (a GAN's
    # diversity per prompt: mode collapse shows there first)
    probe: Callable[[nn.Module], dict[str, float]] | None = None


class StepRNG:
    """Random draws of one micro-batch: drawn for all `total` samples of the global micro-batch
    from a generator seeded by (seed, step, micro), then sliced to this rank's [lo, hi)."""

    def __init__(self, seed: int, step: int, micro: int, total: int, lo: int, hi: int):
        entropy = np.random.SeedSequence([seed, step, micro]).generate_state(2, np.uint32)
        self.generator = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        self.total, self.lo, self.hi = total, lo, hi
        self.step = step  # optimizer step (0-based), for losses that change over training
        self.micro = micro  # micro-batch of the step (0-based), for once-per-step work

    def randn(self, *shape: int) -> torch.Tensor:
        """(hi - lo, *shape) standard normal."""
        return torch.randn((self.total, *shape), generator=self.generator)[self.lo : self.hi]

    def rand(self, *shape: int) -> torch.Tensor:
        """(hi - lo, *shape) uniform on [0, 1)."""
        return torch.rand((self.total, *shape), generator=self.generator)[self.lo : self.hi]

    def draw(self, fn: Callable[[int, torch.Generator], torch.Tensor]) -> torch.Tensor:
        """fn(total, generator) -> (total, ...), sliced: e.g. rng.draw(denoiser.training_sigmas)."""
        return fn(self.total, self.generator)[self.lo : self.hi]


def data_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Dataset indices at stream positions [start, start + count): a fresh permutation each epoch,
    a pure function of (seed, epoch), so any position can be resumed without replaying."""
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = perm[offset : offset + count - len(out)].tolist()
        out += take
        pos += len(take)
    return out


class _LocalBatches:
    """Index lists of this rank's micro-batches from optimizer step `start_step` on."""

    def __init__(self, n: int, loop: LoopConfig, world: World, start_step: int):
        self.n, self.loop, self.world, self.start = n, loop, world, start_step
        self.micro = loop.batch_size // loop.grad_accum
        self.local = self.micro // world.size

    def __len__(self) -> int:
        return (self.loop.steps - self.start) * self.loop.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.loop.steps):
            for m in range(self.loop.grad_accum):
                pos = step * self.loop.batch_size + m * self.micro + self.world.rank * self.local
                yield data_indices(self.n, self.loop.seed, pos, self.local)


def _batches(recipe: Recipe, loop: LoopConfig, world: World, start: int) -> Iterator[Any]:
    """This rank's collated micro-batches from optimizer step `start` on."""
    local = loop.batch_size // loop.grad_accum // world.size
    if isinstance(recipe.dataset, torch.utils.data.IterableDataset):
        return _stream_batches(
            recipe.dataset, recipe.collate, local, start * loop.grad_accum * local
        )
    loader = torch.utils.data.DataLoader(
        recipe.dataset,
        batch_sampler=_LocalBatches(len(recipe.dataset), loop, world, start),
        collate_fn=recipe.collate,
        num_workers=loop.num_workers,
        generator=torch.Generator().manual_seed(loop.seed + start),  # keeps the global RNG unused
    )
    return iter(loader)


def _stream_batches(dataset, collate, local: int, skip: int) -> Iterator[Any]:
    """Micro-batches from a stream (tar shards, split over ranks by the data layer): epoch after
    epoch (set_epoch reshuffles), skipping the `skip` items this rank consumed before a resume."""
    epoch, buf = 0, []
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        seen = 0
        for item in dataset:
            seen += 1
            if skip:
                skip -= 1
                continue
            buf.append(item)
            if len(buf) == local:
                yield collate(buf)
                buf = []
        if seen == 0:
            raise ValueError("the data stream gave no items")
        epoch += 1


def lr_at(optim: OptimConfig, step: int, total: int) -> float:
    """Linear warmup, then constant or cosine decay to optim.min_lr_ratio * lr."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps))
    floor = optim.min_lr_ratio
    return optim.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def check_configs(loop: LoopConfig, optim: OptimConfig, world_size: int) -> None:
    """Bad settings raise ValueError before any work."""
    if optim.schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown optim.schedule {optim.schedule!r}; choose from cosine, constant")
    if loop.steps < 1 or loop.batch_size < 1 or loop.grad_accum < 1:
        raise ValueError("loop.steps, loop.batch_size and loop.grad_accum must be >= 1")
    if optim.decay_steps < 0:
        raise ValueError(f"optim.decay_steps {optim.decay_steps} must be >= 0 (0: loop.steps)")
    if loop.batch_size % (loop.grad_accum * world_size):
        raise ValueError(
            f"loop.batch_size {loop.batch_size} must divide by loop.grad_accum {loop.grad_accum}"
            f" x processes {world_size}"
        )
    if not 0.0 <= optim.ema_decay < 1.0:
        raise ValueError(f"optim.ema_decay {optim.ema_decay} must be in [0, 1)")
    if loop.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ValueError("loop.tensorboard needs `pip install tensorboard`") from None


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model (Polyak averaging); buffers are copied."""
    with torch.no_grad():
        e = [p for p in ema.parameters()]
        m = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(e, m, 1.0 - decay)
        for b_e, b_m in zip(ema.buffers(), model.buffers()):
            b_e.copy_(b_m)


class _LossModule(nn.Module):
    """Puts the recipe's loss inside forward(), so DDP sees the forward pass it needs."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss

    def forward(self, batch: Any, rng: StepRNG) -> torch.Tensor:
        return self.loss_fn(batch, rng)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and returns at the end of the step."""

    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:  # a second signal: the user does not want to wait for the checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    recipe: Recipe,
    loop: LoopConfig,
    optim: OptimConfig,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train `recipe.model` for loop.steps optimizer steps in `run_dir`.

    Writes config.json, log.jsonl, samples/step-XXXXXX.png, checkpoints/ckpt-XXXXXX/ and, when the
    last step is reached, the exported model folder `run_dir/model`. Returns a summary dict with
    "status" ("done" or "interrupted"), "step" and "checkpoint".
    """
    world = init_world()
    ok = False
    try:
        check_configs(loop, optim, world.size)
        out = _train(recipe, loop, optim, Path(run_dir), resume, progress, world)
        ok = True
        return out
    finally:
        close_world(world, barrier=ok)  # after an error the other ranks may never arrive


def _train(recipe, loop, optim, run_dir, resume, progress, world) -> dict:
    ckpt_dir = run_dir / "checkpoints"
    found = ckpt.latest_checkpoint(ckpt_dir) if ckpt_dir.exists() else None
    if found is not None and not resume:
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume or pick a new --out")
    if found is None and resume:
        raise ValueError(
            f"--resume: no checkpoint in {ckpt_dir}; drop --resume to start {run_dir} from step 0"
        )
    loaded = ckpt.load_latest(ckpt_dir) if resume else None  # falls back past a damaged one
    model = recipe.model
    ema = copy.deepcopy(model).requires_grad_(False) if optim.ema_decay > 0 else None
    opt = _optimizer(model, recipe, optim)
    start, skipped = 0, []
    if loaded is not None:
        found, tensors, meta, skipped = loaded
        start = _resume(found, tensors, meta, model, ema, opt, loop)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if loaded is None:  # a resumed run keeps the config.json it started with
            _write_config(run_dir, recipe, loop, optim)
        _trim_log(run_dir / "log.jsonl", start)
    wrapped = _LossModule(model, recipe.loss)
    if world.size > 1:
        wrapped = nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True)
    batches = _batches(recipe, loop, world, start)
    with _StopFlag() as stop, RunLogger(run_dir, loop, world, start, progress) as log:
        step, saved = start, found
        for reason in skipped:
            log.event("checkpoint_skipped", start, reason=reason)
        while step < loop.steps:
            loss, gnorm, lr = _step(wrapped, model, opt, batches, loop, optim, world, step)
            if ema is not None:
                ema_update(ema, model, min(optim.ema_decay, (1 + step) / (10 + step)))
            step += 1
            log.step(step, loss, gnorm, lr, recipe.parts() if recipe.parts else None)
            stopping = _agree(stop.signum, world)
            last = step == loop.steps
            if stopping or last or (loop.ckpt_every and step % loop.ckpt_every == 0):
                saved = _save(ckpt_dir, step, model, ema, opt, recipe, loop, optim, world)
                log.event("checkpoint", step, path=str(saved))
            if (
                world.is_main
                and recipe.sample
                and loop.sample_every
                and (step % loop.sample_every == 0 or last)
            ):
                _save_grid(recipe, ema if ema is not None else model, run_dir, step)
                if recipe.probe is not None:
                    probed = _evaluating(ema if ema is not None else model, recipe.probe)
                    log.event("probe", step, **probed)
            if stopping:
                log.event("interrupted", step, signal=int(stopping))
                return {"status": "interrupted", "step": step, "checkpoint": str(saved)}
        out = {"status": "done", "step": step, "checkpoint": str(saved)}
        if world.is_main and recipe.export is not None:
            recipe.export(ema if ema is not None else model, run_dir / "model")
            if (run_dir / "model" / INDEX_NAME).is_file():  # a feature extractor writes its card
                add_training_card(run_dir / "model", run_dir, saved)
            out["model"] = str(run_dir / "model")
            log.event("exported", step, path=out["model"])
        return out


def _optimizer(model: nn.Module, recipe: Recipe, optim: OptimConfig) -> torch.optim.AdamW:
    groups = _param_groups(model, recipe.decays, optim.weight_decay)
    if recipe.lr_scale is not None:
        groups = _scaled_groups(model, groups, recipe.lr_scale)
    return torch.optim.AdamW(
        groups,
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=True,  # one kernel over all parameters: the per-tensor loop cost ~10% of a step
    )


def _param_groups(model: nn.Module, decays, weight_decay: float) -> list[dict]:
    """AdamW groups: every trainable parameter, or (with a `decays` rule) those it picks with
    weight_decay and the rest without (CLIP's recipe leaves biases, norms and the temperature)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decays is None:
        return [{"params": [p for _, p in named]}]
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def _scaled_groups(model: nn.Module, groups: list[dict], lr_scale) -> list[dict]:
    """Each group split by the learning-rate multiple of its parameters ("lr_scale")."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for group in groups:
        by_scale: dict[float, list] = {}
        for p in group["params"]:
            by_scale.setdefault(float(lr_scale(names[id(p)])), []).append(p)
        out += [{**group, "params": ps, "lr_scale": k} for k, ps in sorted(by_scale.items())]
    return out


def _step(wrapped, model, opt, batches, loop, optim, world, step):
    """One optimizer step over loop.grad_accum micro-batches; returns (loss, grad norm, lr)."""
    lr = lr_at(optim, step, optim.decay_steps or loop.steps)
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    micro = loop.batch_size // loop.grad_accum
    local = micro // world.size
    loss_sum = torch.zeros(())
    for m in range(loop.grad_accum):
        batch = next(batches)
        rng = StepRNG(loop.seed, step, m, micro, world.rank * local, (world.rank + 1) * local)
        sync = m == loop.grad_accum - 1 or world.size == 1
        ctx = contextlib.nullcontext() if sync else wrapped.no_sync()
        with ctx:  # skip the gradient all-reduce until the last micro-batch
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=loop.bf16):
                loss = wrapped(batch, rng)
            (loss.float() / loop.grad_accum).backward()
        loss_sum += loss.detach().float()
    loss_mean = all_reduce_sum(loss_sum, world).item() / (loop.grad_accum * world.size)
    if not math.isfinite(loss_mean):
        raise TrainingDiverged(f"loss is {loss_mean} at step {step + 1}; stopped before the update")
    params = [p for p in model.parameters() if p.grad is not None]
    clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
    gnorm = torch.nn.utils.clip_grad_norm_(params, clip).item()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss_mean, gnorm, lr


def _agree(signum: int, world: World) -> int:
    """All ranks stop at the same step if any of them got a signal."""
    if world.size == 1:
        return signum
    flag = torch.tensor(float(signum))
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


def _save(ckpt_dir, step, model, ema, opt, recipe, loop, optim, world) -> Path:
    path = ckpt_dir / f"ckpt-{step:06d}"
    if world.is_main:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        opt_tensors, opt_meta = ckpt.flatten_optimizer(opt)
        rng_tensors, rng_meta = ckpt.rng_state()
        meta = {
            "step": step,
            "samples_seen": step * loop.batch_size,
            "world_size": world.size,
            "recipe": recipe.name,
            "optimizer": opt_meta,
            "rng": rng_meta,
            "config": {
                "recipe": recipe.config,
                "loop": dataclasses.asdict(loop),
                "optim": dataclasses.asdict(optim),
            },
        }
        path = ckpt.save_checkpoint(
            ckpt_dir, step, {**tensors, **opt_tensors, **rng_tensors}, meta, loop.keep_ckpts
        )
    if world.size > 1:
        torch.distributed.barrier()
    return path


def _resume(found: Path, tensors: dict, meta: dict, model, ema, opt, loop: LoopConfig) -> int:
    """Load a checkpoint's state into the model, EMA, optimizer and RNGs; its step."""
    saved = meta["config"]["loop"]
    for key in ("seed", "batch_size", "grad_accum"):  # they fix the data order and the noise
        if saved[key] != getattr(loop, key):
            raise ValueError(
                f"{found} was trained with loop.{key}={saved[key]}, not {getattr(loop, key)}; "
                "resume with the same value (loop.steps may change)"
            )
    model.load_state_dict(_prefixed(tensors, "model."))
    if ema is not None:
        ema.load_state_dict(_prefixed(tensors, "ema.") or _prefixed(tensors, "model."))
    ckpt.unflatten_optimizer(opt, tensors, meta["optimizer"])
    ckpt.set_rng_state(tensors, meta["rng"])
    return int(meta["step"])


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _write_config(run_dir: Path, recipe: Recipe, loop: LoopConfig, optim: OptimConfig) -> None:
    cfg = {
        "recipe": recipe.name,
        **recipe.config,
        "loop": dataclasses.asdict(loop),
        "optim": dataclasses.asdict(optim),
    }
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (a killed run logged past it)."""
    if not path.exists():
        return
    keep = [rec for rec in read_log(path) if rec.get("step", 0) <= step]  # a torn line dropped
    path.write_text("".join(json.dumps(rec) + "\n" for rec in keep))


def _evaluating(model: nn.Module, fn: Callable[[nn.Module], Any]) -> Any:
    """fn(model) in eval mode without gradients, the training stream's RNG left as it was."""
    was_training = model.training
    rng = torch.get_rng_state()  # sampling must not disturb the training stream
    model.eval()
    with torch.no_grad():
        out = fn(model)
    model.train(was_training)
    torch.set_rng_state(rng)
    return out


def _save_grid(recipe: Recipe, model: nn.Module, run_dir: Path, step: int) -> None:
    grid = _evaluating(model, recipe.sample)
    (run_dir / "samples").mkdir(exist_ok=True)
    grid.save(run_dir / "samples" / f"step-{step:06d}.png")


def seed_everything(seed: int) -> None:
    """Seed the global generators before building a recipe (model init is then reproducible)."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def env_threads() -> None:
    """Respect OMP_NUM_THREADS when torchrun sets it (it defaults to 1 thread per process)."""
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
