"""`t2i train lcm --teacher MODEL --data D`: latent consistency distillation (Luo et al. 2023).

A trained diffusion model (the teacher) is distilled into a student f(x, sigma) that maps any
point of the teacher's guided probability-flow ODE straight to the ODE's end, so 1 to 4 steps of
the multistep consistency sampler (`sampler lcm`) draw what the teacher draws in 20 guided steps.
Each step of training:

    t_{n+k} drawn from the grid (every k-th of the T timesteps), x_{n+k} = x0 + sigma eps
    x_n  = a step of the teacher's ODE solver from t_{n+k} to t_n = t_{n+k} - k, under CFG at w
    loss = d(f_student(x_{n+k}, t_{n+k}, w), f_target(x_n, t_n, w)),  f = c_skip x + c_out D

with the boundary condition f(x, t=0) = x through (c_skip, c_out) (t2i/denoisers.py
`ConsistencyFunction`), a Huber or L2 distance d, the target network an EMA of the student (or the
student itself under no_grad), and the solver DDIM or DPM-Solver++(2S). Two students
(`lcm.adapter`):

- "lora" (LCM-LoRA, Luo et al. 2023b): a LoRA on the frozen teacher, the teacher being the same
  network with the LoRA at scale 0. One guidance scale w is distilled in. The run's `model/` folder
  is a model folder that adapts the teacher ("adapts" in its model_index.json) with
  `loras/lcm.safetensors`: the file also loads onto the teacher, or onto a LoRA fine-tune of it,
  with `--lora`.
- "full": the whole UNet, started from the teacher, with w drawn per example in [w_min, w_max]
  and fed as an embedding (UNetConfig.guidance_embedding), so one student serves every scale in
  one pass per step. The run's `model/` is a whole model folder.

`--preset multistep` (lcm.segments = S) trains either student as a multistep consistency model
(Heek et al. 2024): the map ends at the next of the S timesteps its sampler visits, not at the
ODE's end, and the card names the deterministic sampler `mcm` (`multistep_loss`).
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from t2i.adapters import lora
from t2i.checkpoint import (
    BUNDLED_DIR,
    INDEX_NAME,
    atomic_write_json,
    read_json_object,
    resolve_model,
)
from t2i.denoisers import ConsistencyFunction, DiscreteVPDenoiser, append_dims
from t2i.guidance import batch_cond_uncond
from t2i.images import image_grid
from t2i.models.unet import UNet
from t2i.pipeline import Pipeline
from t2i.schedules import lcm_grid, lcm_timesteps
from t2i.training import diffusion
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_init import adopt as adopt_teacher
from t2i.training.diffusion_init import init_unet
from t2i.training.diffusion_model import export_model, make_denoiser, model_index, split
from t2i.training.loop import Recipe, ema_update
from t2i.training.presets import pick

NAME = "lcm"
ADAPTERS = ("lora", "full")
SOLVERS = ("ddim", "dpmpp_2s")
DISTANCES = ("huber", "l2")
CARD_STEPS = (1, 2, 4, 8)  # the step counts whose timesteps the card lists
# with lora.convs (the ResBlocks' conv1 / conv2): every Linear and Conv2d of the UNet
LCM_TARGETS = (
    *lora.ATTENTION,
    "*proj_in",
    "*proj_out",
    "*skip",
    "*emb_proj",
    "conv_in",
    "conv_out",
)
LCM_TARGETS += ("time_mlp.0", "time_mlp.2")


@dataclass
class LcmConfig:
    adapter: str = "lora"  # "lora": LCM-LoRA on the frozen teacher; "full": the whole UNet + w
    grid_steps: int = 50  # N: the ODE on every k-th timestep, k = T / N (LCM's 50 of 1000)
    solver: str = "ddim"  # the teacher's step from t_{n+k} to t_n: ddim | dpmpp_2s
    # the guidance scales distilled in, drawn per example; 0, 0: the teacher card's scale (and its
    # guidance interval); "lora" distils one scale (no input tells it w)
    w_min: float = 0.0
    w_max: float = 0.0
    target_ema: float = 0.0  # mu of the target network; 0: the student itself, under no_grad
    #                          (LCM-LoRA's choice; the presets use 0.95, LCM's)
    distance: str = "huber"  # huber: sqrt(|a-b|^2 + c^2) - c, c = 0.00054 sqrt(dims) (iCT) | l2
    boundary_scale: float = 10.0  # LCM's timestep scaling of c_skip / c_out
    sigma_data: float = 0.5
    sample_steps: int = 4  # the student's default steps (card, grids)
    # the teacher's guidance interval, adopted from its card (sigma_lo, sigma_hi); None: everywhere
    teacher_interval: tuple[float, float] | None = None
    # 0: one consistency map to the ODE's end (LCM); S > 0: a multistep consistency model (Heek et
    # al. 2024) whose map ends at the next of S segment boundaries (the timesteps of S steps),
    # sampled deterministically (sampler "mcm")
    segments: int = 0


@dataclass
class LcmRecipeConfig(DiffusionRecipeConfig):
    lcm: LcmConfig = field(default_factory=LcmConfig)
    # the LCM-LoRA on every Linear and Conv2d of the UNet, as LCM-LoRA adapts its UNet's: a
    # consistency map changes the whole function, not only what the text attends to (on
    # `shapes`, attention + convolutions alone: 0.82 at 4 steps; every layer: 0.85)
    lora: lora.LoraConfig = field(
        default_factory=lambda: lora.LoraConfig(
            rank=16, alpha=16.0, targets=LCM_TARGETS, convs=True
        )
    )
    name: str = "lcm"  # the adapter's name (and file stem)


def _default() -> LcmRecipeConfig:
    """LCM-LoRA: 2,000 steps of 32 at lr 1e-4 with an EMA target (mu 0.95), bf16 (tens of
    minutes on 2 cores). lr 5e-4, or rank 64 at the same lr, drew worse (BENCHMARKS.md "LCM")."""
    cfg = LcmRecipeConfig(
        loop=LoopConfig(steps=2000, batch_size=32, log_every=20, ckpt_every=200, sample_every=500),
        optim=OptimConfig(lr=1e-4, warmup_steps=50, weight_decay=0.0, ema_decay=0.0),
    )
    cfg.lcm.target_ema = 0.95
    cfg.loop.bf16 = True
    return cfg


def _full() -> LcmRecipeConfig:
    """The whole UNet with a w-embedding and an EMA target (LCM's mu = 0.95), lr 5e-5."""
    cfg = _default()
    cfg.lcm = replace(cfg.lcm, adapter="full", w_min=1.0, w_max=6.0)
    cfg.optim = replace(cfg.optim, lr=5e-5)
    return cfg


def _multistep() -> LcmRecipeConfig:
    """The LCM-LoRA's settings with a multistep consistency map over the card's 4 segments."""
    cfg = _default()
    cfg.lcm = replace(cfg.lcm, segments=cfg.lcm.sample_steps)
    return cfg


def _tiny() -> LcmRecipeConfig:
    """For tests: a few steps, fp32."""
    cfg = _default()
    cfg.lora = replace(cfg.lora, rank=2, alpha=2.0)
    cfg.lcm = replace(cfg.lcm, grid_steps=10, sample_steps=2)
    cfg.loop = LoopConfig(steps=4, batch_size=2, log_every=1, ckpt_every=2, sample_every=0)
    return cfg


def _tiny_full() -> LcmRecipeConfig:
    cfg = _tiny()
    cfg.lcm = replace(_full().lcm, grid_steps=10, sample_steps=2)
    return cfg


def _tiny_multistep() -> LcmRecipeConfig:
    cfg = _tiny()
    cfg.lcm = replace(cfg.lcm, segments=2)
    return cfg


CONFIG_PRESETS = {
    "default": _default,
    "full": _full,
    "multistep": _multistep,
    "tiny": _tiny,
    "tiny_full": _tiny_full,
    "tiny_multistep": _tiny_multistep,
}


def preset(name: str) -> LcmRecipeConfig:
    return pick(NAME, CONFIG_PRESETS, name)


def adopt(cfg: LcmRecipeConfig, args) -> LcmRecipeConfig:
    """The teacher's architecture and settings (diffusion_init.adopt); its card's guidance scale
    and interval become what is distilled unless lcm.w_min / w_max say otherwise."""
    cfg = adopt_teacher(cfg, args)
    if cfg.lcm.w_min == 0 and cfg.lcm.w_max == 0:
        sampler = read_json_object(Path(args.init) / INDEX_NAME).get("sampler", {})
        interval = sampler.get("guidance_interval")
        interval = tuple(interval) if interval else None
        w = cfg.guidance_scale
        cfg.lcm = replace(cfg.lcm, w_min=w, w_max=w, teacher_interval=interval)
    return cfg


def check(cfg: LcmRecipeConfig) -> None:
    c = cfg.lcm
    for key, value, allowed in (
        ("adapter", c.adapter, ADAPTERS),
        ("solver", c.solver, SOLVERS),
        ("distance", c.distance, DISTANCES),
    ):
        if value not in allowed:
            raise ValueError(f"lcm.{key} {value!r}: choose from {list(allowed)}")
    if not 0 < c.w_min <= c.w_max <= 30:
        raise ValueError(
            f"lcm.w_min, w_max must satisfy 0 < w_min <= w_max <= 30, got {c.w_min}, {c.w_max}"
        )
    if c.adapter == "lora" and c.w_min != c.w_max:
        raise ValueError(
            "lcm.adapter lora distils one guidance scale (nothing tells it w): give w_min = w_max, "
            f"got {c.w_min}, {c.w_max}; adapter full reads w as an input"
        )
    if not 0 <= c.target_ema < 1:
        raise ValueError(f"lcm.target_ema must be in [0, 1), got {c.target_ema}")
    if cfg.parameterisation == "edm":
        raise ValueError("t2i train lcm distils a discrete (VP) teacher; this one is edm")
    lcm_timesteps(c.sample_steps, 1000, c.grid_steps)  # the grid and the card's steps are valid
    if c.segments and c.segments != c.sample_steps:
        raise ValueError(
            f"lcm.segments {c.segments}: a multistep student samples one step per segment, so "
            f"give segments = sample_steps ({c.sample_steps}), or 0 for a one-segment LCM"
        )


class Student(nn.Module):
    """What the loop trains and checkpoints: the student (the recipe's UNet or UNet + text),
    the frozen teacher UNet ("full" only: with "lora" the teacher is the student at LoRA scale 0)
    and the target network (an EMA of the student, when target_ema > 0)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, target: nn.Module | None):
        super().__init__()
        self.student, self.teacher, self.target = student, teacher, target


def build(cfg: LcmRecipeConfig, args: argparse.Namespace) -> Recipe:
    if not getattr(args, "init", None):
        raise ValueError("t2i train lcm needs --teacher MODEL: the diffusion model it distils")
    check(cfg)
    full = cfg.lcm.adapter == "full"
    if full:
        cfg.model = replace(cfg.model, guidance_embedding=True)
    parts = diffusion.build_parts(cfg, args)
    model = parts["model"].requires_grad_(False)
    net, encode = split(model, parts["text"])
    teacher = None
    if full:
        net.requires_grad_(True)
        teacher = UNet(replace(cfg.model, guidance_embedding=False))
        init_unet(teacher, args.init)
        teacher.requires_grad_(False).eval()
    else:
        base_hash = lora.network_hash(net)
        lora.attach(net, cfg.name, cfg.lora)
    target = None
    if cfg.lcm.target_ema > 0:
        target = copy.deepcopy(model).requires_grad_(False)
    holder = Student(model, teacher, target)
    denoiser = make_denoiser(cfg, net)
    if not isinstance(denoiser, DiscreteVPDenoiser):
        raise ValueError(
            f"t2i train lcm distils a discrete (VP) teacher, not {cfg.parameterisation}"
        )
    roles = Roles(cfg, holder, parts["text"], denoiser)
    make_loss = multistep_loss if cfg.lcm.segments else lcm_loss
    loss = make_loss(cfg, encode, roles, denoiser.sigmas)
    prompts = list(cfg.sample_prompts) or diffusion.first_captions(parts["dataset"], 8)
    config = {**diffusion.public_config(cfg), "data": parts["data_name"]}
    if parts["ae_record"] is not None:
        config["autoencoder"] = parts["ae_record"]
    config["init"] = parts["init_record"]  # the teacher: its folder and weights' digest

    def sample(ema: nn.Module) -> Image.Image:
        pipe = student_pipeline(cfg, ema, parts)
        items = [pipe.params(prompt, seed=cfg.sample_seed + i) for i, prompt in enumerate(prompts)]
        return image_grid(pipe.generate_items(items), cols=4)

    def export(ema: nn.Module, folder: Path) -> None:
        if full:
            export_full(cfg, ema, parts, folder, args.init)
        else:
            meta = lora_meta(cfg, Path(args.init).name, base_hash)
            export_lora(cfg, ema, folder, meta, args.init)

    collate = diffusion.collate_fn(cfg, torch.contiguous_format)
    return Recipe(NAME, holder, parts["dataset"], collate, loss, sample, export, config)


# ---------------------------------------------------------------- the three networks


class Roles:
    """Teacher, student and target as functions of (x, sigma, w, cond): the same denoiser with
    the LoRA at 0 (teacher) or 1, or separate UNets ("full")."""

    def __init__(self, cfg: LcmRecipeConfig, holder: Student, text, denoiser: DiscreteVPDenoiser):
        self.cfg, self.holder, self.name = cfg, holder, cfg.name
        self.full = cfg.lcm.adapter == "full"
        self.student = denoiser
        self.net = denoiser.net
        self.teacher = make_denoiser(cfg, holder.teacher) if self.full else denoiser
        target = split(holder.target, text)[0] if holder.target is not None else None
        self.target = make_denoiser(cfg, target) if target is not None else denoiser
        c = cfg.lcm
        self.f_student = ConsistencyFunction(self.student, c.sigma_data, c.boundary_scale)
        self.f_target = ConsistencyFunction(self.target, c.sigma_data, c.boundary_scale)

    def lora_scale(self, scale: float) -> None:
        if not self.full:
            lora.set_scales(self.net, {self.name: scale})

    def teacher_d(self, x, sigma, cond: dict) -> torch.Tensor:
        self.lora_scale(0.0)
        try:
            return self.teacher(x, sigma, **cond)
        finally:
            self.lora_scale(1.0)

    def f(self, which: str, x, sigma, w, cond: dict) -> torch.Tensor:
        extra = {"guidance": w} if self.full else {}
        fn = self.f_student if which == "student" else self.f_target
        return fn(x, sigma, **cond, **extra)

    def d(self, which: str, x, sigma, w, cond: dict) -> torch.Tensor:
        """The student's or target's own denoiser D(x, sigma): a multistep map's x0 estimate."""
        extra = {"guidance": w} if self.full else {}
        fn = self.student if which == "student" else self.target
        return fn(x, sigma, **cond, **extra)

    def update_target(self) -> None:
        if self.holder.target is not None:
            ema_update(self.holder.target, self.holder.student, self.cfg.lcm.target_ema)


def guided_teacher(roles: Roles, x, sigma, w, cond: dict, uncond: dict, interval):
    """The teacher under classifier-free guidance at per-example scale w (1 outside the
    teacher's guidance interval, as its card samples it): one batched call."""
    both = batch_cond_uncond(cond, uncond, len(x))
    d = roles.teacher_d(torch.cat([x, x]), torch.cat([sigma, sigma]), both)
    d_cond, d_uncond = d.chunk(2)
    if interval is not None:
        lo, hi = interval
        w = torch.where((sigma > lo) & (sigma <= hi), w, torch.ones_like(w))
    return d_uncond + append_dims(w, x.ndim) * (d_cond - d_uncond)


def solver_step(solver: str, denoise, x, sigma, sigma_next) -> torch.Tensor:
    """One step of the probability-flow ODE from sigma to sigma_next (> 0), in sigma-space:
    DDIM (= DPM-Solver++ 1st order), or DPM-Solver++(2S) with its midpoint in log sigma."""
    d = denoise(x, sigma)
    if solver == "dpmpp_2s":
        sigma_mid = (sigma * sigma_next).sqrt()
        d = denoise(ddim_to(x, sigma, d, sigma_mid), sigma_mid)
    return ddim_to(x, sigma, d, sigma_next)


def distance(cfg: LcmRecipeConfig, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example d(a, b): pseudo-Huber (Song & Dhariwal 2023) or the mean squared error."""
    diff = (a.float() - b.float()).flatten(1)
    if cfg.lcm.distance == "l2":
        return diff.pow(2).mean(1)
    c = 0.00054 * math.sqrt(diff.shape[1])
    return (diff.pow(2).sum(1) + c * c).sqrt() - c


@dataclass
class TeacherStep:
    """One batch's draws and the teacher's solver step from (x, sigma) to (x_next, sigma_next)."""

    n: torch.Tensor  # grid index per example
    w: torch.Tensor
    cond: dict
    x: torch.Tensor
    sigma: torch.Tensor
    x_next: torch.Tensor
    sigma_next: torch.Tensor


def teacher_steps(cfg: LcmRecipeConfig, encode, roles: Roles, table: torch.Tensor):
    """batch, rng -> TeacherStep: draws (grid index, w, noise) in a fixed order from the step's
    generator, so a resumed run repeats the straight run's steps, and moves the target network
    after each optimiser update."""
    c = cfg.lcm
    grid = torch.tensor(lcm_grid(len(table), c.grid_steps))
    k = len(table) // c.grid_steps

    def step(batch: dict, rng) -> TeacherStep:
        if rng.micro == 0 and torch.is_grad_enabled():  # the target follows the last update
            roles.update_target()
        x0 = batch["x0"]
        context, mask = encode(batch["captions"])
        cond = {"context": context, "context_mask": mask}
        empty_context, empty_mask = encode([""] * len(x0))
        uncond = {"context": empty_context, "context_mask": empty_mask}
        n = rng.draw(lambda total, g: torch.randint(0, len(grid), (total,), generator=g))
        w = c.w_min + (c.w_max - c.w_min) * rng.rand()
        noise = rng.randn(*x0.shape[1:])
        t_start = grid[n]
        sigma, sigma_next = table[t_start], table[(t_start - k).clamp(min=0)]
        x = x0 + append_dims(sigma, x0.ndim) * noise
        with torch.no_grad():

            def teacher(x_, s_):
                return guided_teacher(roles, x_, s_, w, cond, uncond, c.teacher_interval)

            x_next = solver_step(c.solver, teacher, x, sigma, sigma_next)
        return TeacherStep(n, w, cond, x, sigma, x_next, sigma_next)

    return step


def lcm_loss(cfg: LcmRecipeConfig, encode, roles: Roles, table: torch.Tensor):
    """The consistency distillation loss of a batch: the student's map to the ODE's end from
    (x, sigma) against the target's from the teacher's next point."""
    steps = teacher_steps(cfg, encode, roles, table)

    def loss(batch: dict, rng) -> torch.Tensor:
        s = steps(batch, rng)
        with torch.no_grad():
            target = roles.f("target", s.x_next, s.sigma_next, s.w, s.cond)
        pred = roles.f("student", s.x, s.sigma, s.w, s.cond)
        return distance(cfg, pred, target).mean()

    return loss


def segment_ends(table: torch.Tensor, grid: torch.Tensor, tops: list[int]) -> torch.Tensor:
    """For each grid timestep, the sigma its multistep consistency map ends at: the highest
    segment top strictly below it, or 0 in the lowest segment (the ODE's end)."""
    below = [[top for top in tops if top < t] for t in grid.tolist()]
    return torch.stack([table[max(b)] if b else table.new_zeros(()) for b in below])


def ddim_to(x, sigma, d, sigma_end) -> torch.Tensor:
    """The DDIM (sigma-space Euler) step from x at sigma to sigma_end with x0 estimate d."""
    r = append_dims(sigma_end / sigma, x.ndim)
    return r * x + (1 - r) * d


def multistep_target(x, sigma, x_next, sigma_next, d_next, sigma_end) -> torch.Tensor:
    """The x0 estimate at (x, sigma) whose DDIM step to sigma_end lands where the target's does
    from the teacher's next point (x_next, sigma_next): at the segment's end (sigma_next =
    sigma_end) the teacher step's own x0, in the lowest segment (sigma_end = 0) d_next."""
    landing = ddim_to(x_next, sigma_next, d_next, sigma_end)
    r = append_dims(sigma_end / sigma, x.ndim)
    return (landing - r * x) / (1 - r)


def multistep_loss(cfg: LcmRecipeConfig, encode, roles: Roles, table: torch.Tensor):
    """Multistep consistency distillation (Heek et al. 2024): the student's x0 estimate D, taken
    by DDIM from x at sigma to its segment's end sigma_e, must land where the teacher's solver
    step followed by the target's DDIM jump lands. Compared as x0 estimates: the target's is the
    x0 whose DDIM step from x reaches that point. A DDIM step to the point itself is the
    identity, so the boundary condition needs no c_skip; with one segment this is LCM's target.
    Draws what lcm_loss draws, in the same order."""
    c = cfg.lcm
    grid = torch.tensor(lcm_grid(len(table), c.grid_steps))
    ends = segment_ends(table, grid, lcm_timesteps(c.segments, len(table), c.grid_steps))
    steps = teacher_steps(cfg, encode, roles, table)

    def loss(batch: dict, rng) -> torch.Tensor:
        s = steps(batch, rng)
        with torch.no_grad():
            d_next = roles.d("target", s.x_next, s.sigma_next, s.w, s.cond).float()
            target = multistep_target(s.x, s.sigma, s.x_next, s.sigma_next, d_next, ends[s.n])
        pred = roles.d("student", s.x, s.sigma, s.w, s.cond)
        return distance(cfg, pred, target).mean()

    return loss


# ---------------------------------------------------------------- what the student is


def student_index(cfg: LcmRecipeConfig, teacher: str) -> dict:
    """The keys a distilled model's model_index.json adds: its sampler defaults (lcm, few steps,
    guidance 1 for a LoRA that has w built in, else the teacher's w as the embedding's input),
    and how it was distilled, with the timesteps of 1, 2, 4 and 8 steps."""
    c = cfg.lcm
    full = c.adapter == "full"
    w_default = min(max(cfg.guidance_scale, c.w_min), c.w_max) if full else 1.0
    sampler = "mcm" if c.segments else "lcm"
    return {
        "sampler": {"name": sampler, "steps": c.sample_steps, "guidance_scale": w_default},
        "consistency": {
            "method": ("mcm" if c.segments else "lcm") + ("" if full else "-lora"),
            "segments": c.segments or 1,
            "teacher": teacher,
            "grid_steps": c.grid_steps,
            "solver": c.solver,
            "w": [c.w_min, c.w_max],
            "teacher_interval": list(c.teacher_interval) if c.teacher_interval else None,
            "timesteps": {str(n): lcm_timesteps(n, 1000, c.grid_steps) for n in CARD_STEPS},
        },
    }


def student_pipeline(cfg: LcmRecipeConfig, holder: Student, parts: dict):
    """The live student as the exported folder loads it (the grids use it)."""
    net, text = split(holder.student, parts["text"])
    components = {"unet": net, "text_encoder": text.encoder}
    if parts["ae"] is not None:
        components["autoencoder"] = parts["ae"]
    if cfg.lcm.adapter == "lora":
        lora.set_scales(net, {cfg.name: 1.0})
    # the student's "sampler" replaces the teacher's whole (its guidance interval included)
    return Pipeline(components, {**model_index(cfg, ""), **student_index(cfg, "")})


def lora_meta(cfg: LcmRecipeConfig, base: str, base_hash: str) -> lora.LoraMeta:
    return lora.LoraMeta(
        name=cfg.name,
        base=base,
        base_hash=base_hash,
        rank=cfg.lora.rank,
        alpha=cfg.lora.alpha,
        targets=list(cfg.lora.patterns()),
        networks=["unet"],
        sampling={**student_index(cfg, base)["sampler"], "grid_steps": cfg.lcm.grid_steps},
    )


def export_lora(cfg: LcmRecipeConfig, holder: Student, folder: Path, meta, teacher: str) -> None:
    """folder/loras/lcm.safetensors and a model_index.json that adapts the teacher with it."""
    net, _ = split(holder.student, None)
    tensors = lora.adapter_state(net, cfg.name, "unet")
    lora.save(folder / "loras" / f"{cfg.name}.safetensors", tensors, meta, dtype=torch.float16)
    index = {
        "adapts": teacher_reference(teacher),
        "loras": {cfg.name: 1.0},
        **student_index(cfg, Path(teacher).name),
    }
    atomic_write_json(folder / "model_index.json", index)


def teacher_reference(teacher: str) -> str:
    """A bundled model by its name, any other teacher by its folder's absolute path."""
    folder = resolve_model(teacher).resolve()
    return folder.name if folder.parent == BUNDLED_DIR.resolve() else str(folder)


def export_full(cfg: LcmRecipeConfig, holder: Student, parts: dict, folder: Path, teacher) -> None:
    net, text = split(holder.student, parts["text"])
    extra = student_index(cfg, Path(teacher).name)  # replaces the teacher's "sampler" whole
    export_model(
        cfg,
        net,
        text,
        parts["ae"],
        folder,
        parts["data_name"],
        ae_record=parts["ae_record"],
        extra=extra,
    )
