"""The diffusion pipeline, top to bottom: text -> noise -> sigmas -> guided denoiser -> sampler ->
decode.

    pipe = t2i.load("shapes")          # a bundled model name, or a model folder path
    images = pipe("a red circle above a blue square", steps=20, guidance=3.0, seed=1)

Image i of a call starts from `torch.Generator().manual_seed(seed + i)`, so image i of a batch is
the image made alone with seed + i. The pieces stay reachable for people who write their own loop:
`pipe.text_encoder`, `pipe.denoiser` (a t2i.denoisers.Denoiser around `pipe.unet`),
`pipe.autoencoder` (None for pixel models), `pipe.sigmas(steps)` and `t2i.samplers`.

Editing is a plan from t2i/editing.py, not a branch here: `init=` (img2img from `strength`),
`mask=` (inpainting, white = repaint), `pipe.invert(image)` (DDIM inversion). Prompts take A1111
weights `(word:1.3)` and may exceed the text encoder's window (t2i/prompts.py). Other families
(a cascade: t2i/cascade.py; autoregressive: t2i/token_pipeline.py) are siblings behind the same
protocol (t2i/protocol.py); `t2i.load` picks the class from the folder's model_index.json.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from t2i.checkpoint import load_model_folder, resolve_model
from t2i.denoisers import make_denoiser
from t2i.editing import (
    SamplingPlan,
    check_strength,
    ddim_invert,
    edit_plan,
    plain_plan,
    sampler_steps,
    strength_sigmas,
)
from t2i.guidance import CFGDenoiser, ConditionAnnealing, EmbeddedGuidance, Unconditional
from t2i.images import load_image, load_mask
from t2i.likelihood import bounds, continuous_bits
from t2i.models.log_snr import LearnedLogSNR
from t2i.models.text_encoder import TextTransformer
from t2i.params import GenerationParams, check_int, check_sides
from t2i.protocol import Generator, Supports
from t2i.samplers import CONSISTENCY_SAMPLERS, SAMPLERS, get_sampler, sigmas_for
from t2i.schedules import DiscreteSchedule, discrete_sigmas, lcm_timesteps

DEFAULT_SAMPLING = {"name": "ddim", "steps": 20, "guidance_scale": 3.0}
CONTINUOUS_DRAWS = 100  # t draws per image of a learnt schedule's continuous-time bound
LCM_GRID_STEPS = 50  # the distillation grid of t2i train lcm (LCM's N = 50 of T = 1000)
# CADS draws image i's prompt noise from seed_i ^ CADS_STREAM: not the stream of its image noise
CADS_STREAM = 0x5EED_CAD5


class Pipeline(Generator):
    """A loaded diffusion model folder: text encoder, denoiser (UNet inside), optional
    autoencoder. As an upscaler stage (model_index.json "low_res") its UNet also reads the small
    image as `x_cond`; `t2i.cascade.CascadePipeline` supplies it."""

    family = "diffusion"

    def __init__(self, components: dict, index: dict, name: str = "", bf16: bool = False):
        super().__init__(components["text_encoder"], index, name, bf16)
        self.unet = components["unet"]
        self.autoencoder = components.get("autoencoder")
        schedule = index.get("schedule")
        schedule = DiscreteSchedule.from_dict(schedule) if schedule else None
        self.denoiser = make_denoiser(
            self.unet,
            index["parameterisation"],
            schedule,
            sigma_data=index.get("sigma_data", 0.5),
            variance=index.get("variance", "fixed"),
        ).eval()
        self._defaults = {**DEFAULT_SAMPLING, **index.get("sampler", {})}
        if self.autoencoder is not None:
            self.autoencoder.config.check_network_factor(self.unet.config.factor)
            # oneDNN's preferred layout: the emoji decoder runs ~10% faster at batch 8 in fp32
            # (pixels move by under 0.001 of a level; benchmarks/bench_decode.py)
            self.autoencoder.to(memory_format=torch.channels_last)

    @classmethod
    def from_pretrained(cls, model, bf16: bool = False) -> Pipeline:
        """A plain diffusion model folder (or bundled name); `t2i.load` takes every family."""
        folder = resolve_model(model)
        components, index = load_model_folder(folder)
        if "unet" not in components or "base" in index or "low_res" in index:
            kind = index.get("family") or "cascade stage"
            raise ValueError(
                f"{folder} is not a plain diffusion model folder (it is a {kind} folder); "
                f"load it with t2i.load({str(model)!r})"
            )
        return cls(components, index, name=str(model), bf16=bf16)

    # ------------------------------------------------------------ what it can do

    @property
    def supports(self) -> Supports:
        return Supports(
            samplers=tuple(sorted(SAMPLERS)),
            guidance_interval=True,
            img2img=True,
            inpainting=True,
            inversion=True,
            interpolation=True,
            adapters=("lora", "control"),
            guides=True,
            cads=True,
        )

    @property
    def defaults(self) -> dict:
        return self._defaults

    @property
    def factor(self) -> int:
        """Image sides must be multiples of this: UNet downsamplings x autoencoder factor."""
        own = self.unet.config.factor
        return own * (self.autoencoder.config.factor if self.autoencoder is not None else 1)

    @property
    def image_channels(self) -> int:
        """Channels of the images this model draws (a latent model's autoencoder decodes them)."""
        if self.autoencoder is not None:
            return self.autoencoder.config.in_channels
        return self.unet.config.in_channels

    def networks(self) -> list[torch.nn.Module]:
        return [self.unet]

    @torch.no_grad()
    def likelihood(self, images, prompts, timesteps=None, generator=None):
        """The variational bound (t2i/likelihood.py), summed over every training step
        (timesteps None) or estimated from `timesteps` drawn per image: with the model's learnt
        variance, or with each fixed one ("small" beta~_t, "large" beta_t); a learnt schedule
        adds its continuous-time bound ("continuous", from `timesteps` or 100 draws of t)."""
        if self.autoencoder is not None:
            raise ValueError(
                f"{self.name}: a latent model's bound is over its autoencoder's latents, not "
                "the image's pixels; t2i reports none"
            )
        if self.index.get("schedule") is None:
            raise ValueError(f"{self.name}: the bound needs a discrete (VP) schedule, not edm")
        schedule = DiscreteSchedule.from_dict(self.index["schedule"])
        cond = self.encode_text(prompts)
        variances = ("learned",) if self.denoiser.learns_variance else ("small", "large")
        found = bounds(
            self.denoiser, images, schedule.betas(), timesteps, generator, variances, cond=cond
        )
        out = {variance: bound.per_image for variance, bound in zip(variances, found)}
        if schedule.beta_schedule == "learned":  # also its own continuous-time bound
            log_snr = LearnedLogSNR.from_dict(schedule.log_snr)
            draws = timesteps or CONTINUOUS_DRAWS
            out["continuous"] = continuous_bits(
                self.denoiser, images, log_snr, draws, generator, cond
            )
        return out

    def adapter_networks(self) -> dict[str, torch.nn.Module]:
        """The UNet, and the text encoder when it is one trained here (word-level)."""
        nets = {"unet": self.unet}
        if isinstance(self.text_encoder, TextTransformer):
            nets["text_encoder"] = self.text_encoder
        return nets

    def total_steps(self, p: GenerationParams) -> int:
        """Progress callbacks generating p makes: one per sampler step (RePaint's repeats too)."""
        if not p.init:
            return p.steps
        sigmas = strength_sigmas(self.sigmas(p.steps, p.sampler, self.lcm_grid(p)), p.strength)
        return sampler_steps(sigmas, p.resample)

    def guide_space(self) -> tuple[int, int]:
        side, _ = self.latent_size(self.image_size, self.image_size)
        return self.unet.config.in_channels, side

    def check(self, p: GenerationParams) -> None:
        get_sampler(p.sampler)
        if p.guides and (p.width, p.height) != (self.image_size, self.image_size):
            raise ValueError(
                f"a guide reads the size it was trained on: {self.image_size}x{self.image_size}, "
                f"not {p.width}x{p.height}"
            )
        check_int("steps", p.steps, 1, 1000)
        check_sides(p, self.factor)
        self.latent_size(p.height, p.width)  # the autoencoder's own check of the sides
        check_strength(p.strength)
        check_int("resample", p.resample, 1, 20)
        if p.sampler in CONSISTENCY_SAMPLERS:
            self.sigmas(p.steps, p.sampler, self.lcm_grid(p))  # steps on the distillation grid
        if self.embeds_guidance and (p.negative or p.guidance_interval is not None):
            raise ValueError(
                f"model {self.name!r} reads the guidance scale as an input (a distilled model, "
                "one pass per step): it takes no negative prompt and no guidance interval"
            )

    # ------------------------------------------------------------ pieces

    @property
    def embeds_guidance(self) -> bool:
        return bool(self.unet.config.guidance_embedding)

    def sigmas(self, steps: int, sampler: str | None = None, grid: int | None = None):
        """The (steps + 1,) noise levels of a run; the index may name a schedule per model.
        Samplers "lcm" and "mcm" on a discrete model step on the timesteps a consistency model is
        distilled on (schedules.lcm_timesteps): those of `grid` points (an LCM-LoRA's, see
        lcm_grid), else of the grid the index's "consistency" names."""
        table = getattr(self.denoiser, "sigmas", None)
        if sampler in CONSISTENCY_SAMPLERS and table is not None:
            grid = grid or self.index.get("consistency", {}).get("grid_steps", LCM_GRID_STEPS)
            return discrete_sigmas(table, steps, at=lcm_timesteps(steps, len(table), grid))
        return sigmas_for(self.denoiser, steps, self.index.get("sigma_schedule", "auto"))

    def lcm_grid(self, p: GenerationParams) -> int | None:
        """The distillation grid of the LCM-LoRA p applies (its file's sampling.grid_steps), so
        `--lora lcm` steps where `<model>-lcm` does; None where p applies none."""
        return self.loras.sampling(p.loras).get("grid_steps") if p.loras else None

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """The sampler's grid for an image of height x width (the image's own without an
        autoencoder)."""
        if self.autoencoder is None:
            return height, width
        side = self.autoencoder.config.latent_side
        return side(height), side(width)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> what the sampler works on (the identity for pixel models)."""
        return self.autoencoder.to_latent(image) if self.autoencoder is not None else image

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Sampler output -> (B, C, H, W) images in [-1, 1].

        With bf16 the decoder runs under autocast too: it moves pixels far less than the UNet's
        bf16 does (54.7 dB PSNR, at most 2 levels of 255, on the emoji model) and is ~10% of a call.
        """
        if self.autoencoder is None:
            return x0.clamp(-1, 1)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            x0 = self.autoencoder.from_latent(x0)
        return x0.float().clamp(-1, 1)

    def preview(self, info: dict, index: int = 0) -> torch.Tensor | None:
        """The step's denoised estimate of image `index`, decoded (a latent through the
        autoencoder)."""
        denoised = info.get("denoised")
        if denoised is None or denoised.shape[1] != self.unet.config.in_channels:
            return None  # another stage's estimate (a cascade's), not this model's space
        with torch.no_grad():
            return self.decode(denoised[index : index + 1].float())[0]

    def guided(self, p: GenerationParams, sigmas: torch.Tensor, seeds: list[int] | None = None):
        """The denoiser with the request's spatial controls over the run's `sigmas`, then
        classifier-free guidance towards p.prompt, away from p.negative (scale 0: the
        unconditional model alone), then the prompt's annealed noise (CADS: image i's from
        seeds[i]), then each guide's gradient (t2i/guides)."""
        model = self.denoiser
        if p.controls:
            size = (p.width, p.height)
            model = self.controls.wrap(model, p.controls, size, sigmas, p.guess_mode)
        if self.embeds_guidance:
            model = EmbeddedGuidance(model, p.guidance)
        elif p.guidance == 0.0:
            model = Unconditional(model, self.unconditional(p))
        elif p.guidance != 1.0:
            uncond = self.unconditional(p)
            if p.guess_mode:  # the controls reach the prompt's half only
                uncond["control_rows"] = torch.zeros(1)
            model = CFGDenoiser(model, uncond, p.guidance, interval=p.guidance_interval)
        if p.cads_noise:
            seeds = [p.seed] if seeds is None else seeds
            gens = [torch.Generator().manual_seed(s ^ CADS_STREAM) for s in seeds]
            model = ConditionAnnealing(model, p.cads_noise, self.cads_interval(p), gens)
        return self.guides.wrap(model, p.guides)

    def cads_interval(self, p: GenerationParams) -> tuple[float, float]:
        """p's CADS interval, or by default the sigmas of timesteps 0.6T and 0.9T (the paper's
        tau1, tau2) on a discrete model; a continuous one has no T, so it must be given."""
        if p.cads_interval is not None:
            return tuple(p.cads_interval)
        table = getattr(self.denoiser, "sigmas", None)
        if table is None:
            raise ValueError(
                f"model {self.name!r} has no discrete timesteps: give cads_interval [lo, hi] sigmas"
            )
        last = len(table) - 1
        return float(table[round(0.6 * last)]), float(table[round(0.9 * last)])

    def unconditional(self, p: GenerationParams) -> dict:
        """What guidance steers away from: the negative (or empty) prompt's text states."""
        return self.encode_text([p.negative])

    def noise(
        self, p: GenerationParams, n: int, seeds: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Generator]]:
        """(n, C, h, w) unit noise and the per-image generators, seeded p.seed + i (or seeds[i])."""
        shape = (self.unet.config.in_channels, *self.latent_size(p.height, p.width))
        seeds = [p.seed + i for i in range(n)] if seeds is None else seeds
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens

    def plan(
        self, p: GenerationParams, noise: torch.Tensor, seeds: list[int] | None = None
    ) -> SamplingPlan:
        """Where the sampler starts, what it samples and with which denoiser (t2i/editing.py)."""
        sigmas = self.sigmas(p.steps, p.sampler, self.lcm_grid(p))
        model = self.guided(p, sigmas, seeds)
        if not p.init:
            return plain_plan(model, sigmas, noise)
        size = (p.width, p.height)
        image = load_image(p.init, size, self.image_channels)
        x_init = self.encode_image(image).expand_as(noise)
        mask = load_mask(p.mask, size) if p.mask else None  # pixels: edit_plan maps it to the grid
        return edit_plan(
            model, sigmas, noise, x_init, mask, p.strength, p.resample, image, p.mask_blur
        )

    # ------------------------------------------------------------ generation

    @torch.no_grad()
    def draw(
        self,
        p: GenerationParams,
        seeds: list[int],
        cond: dict,
        callback: Callable | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(n, C, H, W) images in [-1, 1]: image i from the generator seeded seeds[i], or from
        `noise[i]` (interpolation passes its own); `cond` the text states of the batch, with
        `x_cond` for an upscaler stage."""
        seeded, gens = self.noise(p, len(seeds), seeds)
        if p.guess_mode and p.guidance not in (0.0, 1.0) and not self.embeds_guidance:
            cond = {**cond, "control_rows": torch.ones(len(seeds))}
        plan = self.plan(p, seeded if noise is None else noise, seeds)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            x0 = plan.run(get_sampler(p.sampler), cond, callback, gens)
        return plan.restore(self.decode(x0.float()))  # inpainting: the kept pixels, exactly

    @torch.no_grad()
    def invert(
        self, image: torch.Tensor, prompt: str = "", steps: int | None = None
    ) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, C, h, w) unit noise that sampler "ddim" (eta 0),
        guidance 1, the same prompt and steps map back to the images (DDIM inversion)."""
        steps = check_int("steps", steps or self.defaults["steps"], 1, 1000)
        cond = self.encode_text([prompt] * image.shape[0])
        sigmas = self.sigmas(steps)
        return ddim_invert(self.denoiser, self.encode_image(image), sigmas, cond) / sigmas[0]
