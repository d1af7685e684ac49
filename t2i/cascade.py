"""Cascaded generation (Ho et al. 2021, "Cascaded Diffusion Models"): a base model draws the image
small, an upscaler draws it again at full size, conditioned on the small one.

The upscaler is an ordinary text-conditioned diffusion pipeline whose UNet has `cond_channels`
extra input channels: the small image, resized to the upscaler's grid (`x_cond`). It is trained
on the data's own images shrunk to `low_res` (`low_res_condition`), so it learns to keep what the
small image shows (layout, colours) and to draw what it cannot (edges, shapes). On `shapes` the
placement a 64x64 model struggles to learn from the caption is learned at once when the layout
reaches the UNet as an input; in a cascade the base model has that easier part of the job at a
small fraction of the pixels (docs/history.md, the cascade).

A cascade folder is the upscaler's, with its base model in a subfolder (model_index.json "base",
"low_res"); a base may itself be a cascade. Both stages take the prompt, negative prompt and
seeds; the sampler, steps and guidance of a request apply to the last stage, the base runs with
its own defaults (a stage that draws 1 pixel wants guidance 1, one that draws shapes more).
Edits: img2img uses the init's own small version, inpainting keeps the init's small version
outside the mask and the base's drawing inside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction

import torch

from t2i.images import enlarge, load_image, load_mask, shrink
from t2i.params import GenerationParams, check_seeds, check_sides, resolve_interval
from t2i.pipeline import Pipeline
from t2i.protocol import Generator, Supports, after


def low_res_condition(
    low: torch.Tensor, size: tuple[int, int], noise: torch.Tensor | None = None, scale=None
) -> torch.Tensor:
    """The upscaler's training input from the images' small versions `low` (B, C, h, w): optional
    Gaussian noise (`noise` of the small shape times per-image `scale` (B,): conditioning
    augmentation, so the upscaler learns not to copy a base model's errors), enlarged to `size`
    (the upscaler's pixels, or its latent grid for a latent upscaler)."""
    if noise is not None:
        low = low + noise * scale.view(-1, 1, 1, 1)
    return enlarge(low, size)


class CascadePipeline(Generator):
    """A base model (any generator) and an upscaler stage (a `Pipeline` whose index has low_res).
    Without a base, `generate_low` takes the small images from the caller."""

    family = "cascade"

    def __init__(self, base: Generator | None, upscaler: Pipeline):
        super().__init__(upscaler.text_encoder, upscaler.index, upscaler.name, upscaler.bf16)
        self.base, self.upscaler = base, upscaler
        self.check_stages(base, upscaler)

    def check_stages(self, base: Generator | None, upscaler: Pipeline) -> None:
        check_stages(base, upscaler)

    # ------------------------------------------------------------ what it can do

    @property
    def supports(self) -> Supports:
        return replace(self.upscaler.supports, inversion=False, interpolation=False)

    @property
    def defaults(self) -> dict:
        return self.upscaler.defaults

    @property
    def scale(self) -> Fraction:
        """The image side over its small image's (64/3 from a 3 px base)."""
        return Fraction(self.image_size, self.index["low_res"])

    @property
    def factor(self) -> int:
        """Sides must suit the upscaler, and give a small side the base can draw (whole
        multiples of its factor)."""
        base = self.base.factor if self.base is not None else 1
        return math.lcm(self.upscaler.factor, (self.scale * base).numerator)

    @property
    def image_channels(self) -> int:
        return self.upscaler.image_channels

    def low_size(self, height: int, width: int) -> tuple[int, int]:
        """The small image's (height, width) for an image of height x width (exact: see factor)."""
        return int(height / self.scale), int(width / self.scale)

    def networks(self) -> list[torch.nn.Module]:
        return self.upscaler.networks() + (self.base.networks() if self.base else [])

    def base_runs(self, p: GenerationParams) -> bool:
        """Whether generating p runs the base stages (img2img starts from the init's own small
        version instead; inpainting has the base draw the masked part)."""
        return self.base is not None and not (p.init and not p.mask)

    def base_steps(self, p: GenerationParams) -> int:
        """Sampler steps the base stages run for p before the upscaler's own (0: none)."""
        return self.base.total_steps(self.base_params(p)) if self.base_runs(p) else 0

    def total_steps(self, p: GenerationParams) -> int:
        return self.upscaler.total_steps(p) + self.base_steps(p)

    def check(self, p: GenerationParams) -> None:
        check_sides(p, self.factor)
        self.upscaler.check(p)

    # ------------------------------------------------------------ generation

    def base_params(self, p: GenerationParams) -> GenerationParams:
        """The base stage's part of a request: p's prompt, negative and seed at the base's size,
        with the base's own sampler, steps, guidance and interval (edits: keep_init)."""
        base = self.base
        height, width = self.low_size(p.height, p.width)
        return replace(
            p,
            model=base.name,
            width=width,
            height=height,
            sampler=base.defaults["name"],
            steps=base.defaults["steps"],
            guidance=base.defaults["guidance_scale"],
            guidance_interval=resolve_interval(None, base.defaults.get("guidance_interval")),
            init="",  # an edit's init and mask are applied to the base's image (keep_init)
            mask="",
            strength=1.0,
            resample=1,
        )

    def base_images(
        self, p: GenerationParams, seeds: list[int], prompts: list[str], callback: Callable | None
    ) -> torch.Tensor:
        """The first stage: the base model's images of the prompts, at its size."""
        if self.base is None:
            raise ValueError(
                f"model {self.name!r} is an upscaler from {self.index['low_res']} px without a "
                "base model: give its small images (generate_low) or a cascade folder with 'base'"
            )
        if not self.base_runs(p):
            # img2img: nothing to draw, keep_init puts the init's own small version here
            h, w = self.low_size(p.height, p.width)
            return torch.zeros(len(seeds), self.image_channels, h, w)
        small = self.base_params(p)
        items = [replace(small, prompt=q, seed=s) for q, s in zip(prompts, seeds)]
        return self.base.generate_items(items, callback)

    def keep_init(self, low: torch.Tensor, p: GenerationParams) -> torch.Tensor:
        """An edit's small image: the init shrunk, where the mask keeps it (img2img: everywhere);
        the base draws the rest afresh, and the last stage redraws the whole as usual."""
        if not p.init:
            return low
        size = low.shape[-2:]
        init = shrink(load_image(p.init, (p.width, p.height), self.image_channels), size)
        if not p.mask:
            return init.expand_as(low)
        repaint = shrink(load_mask(p.mask, (p.width, p.height)), size)
        return repaint * low + (1 - repaint) * init

    @torch.no_grad()
    def draw(
        self,
        p: GenerationParams,
        seeds: list[int],
        cond: dict,
        callback: Callable | None = None,
        prompts: list[str] | None = None,
    ) -> torch.Tensor:
        """The base's images of the prompts (p.prompt for every seed by default), then the
        upscaler's from them."""
        prompts = prompts or [p.prompt] * len(seeds)
        low = self.base_images(p, seeds, prompts, callback)
        return self.draw_from(p, seeds, cond, low, after(callback, self.base_steps(p)))

    @torch.no_grad()
    def draw_from(
        self,
        p: GenerationParams,
        seeds: list[int],
        cond: dict,
        low: torch.Tensor,
        callback: Callable | None = None,
    ) -> torch.Tensor:
        """The upscaler's images from given small images `low` (n, C, H/scale, W/scale)."""
        grid = self.upscaler.latent_size(p.height, p.width)
        x_cond = enlarge(self.keep_init(low, p), grid)
        return self.upscaler.draw(p, seeds, {**cond, "x_cond": x_cond}, callback)

    @torch.no_grad()
    def generate_items(
        self, items: list[GenerationParams], callback: Callable | None = None
    ) -> torch.Tensor:
        """As every generator's, with each item's own prompt at the base stage too."""
        if not items:
            raise ValueError("generate_items needs at least one item")
        seeds = check_seeds(items[0], len(items), [p.seed for p in items])
        cond = self.encode_text([p.prompt for p in items])
        return self.draw(items[0], seeds, cond, callback, prompts=[p.prompt for p in items])

    @torch.no_grad()
    def generate_low(
        self, p: GenerationParams, low: torch.Tensor, seeds: list[int] | None = None
    ) -> torch.Tensor:
        """The upscaler's images of p from the caller's small images `low` (n, C, h, w)."""
        seeds = check_seeds(p, len(low), seeds)
        return self.draw_from(p, seeds, self.encode_text([p.prompt] * len(seeds)), low)


def check_stages(base: Generator | None, upscaler: Pipeline) -> None:
    """An upscaler reads its small image on cond_channels; the base must draw exactly that."""
    name, low = upscaler.name, upscaler.index.get("low_res")
    cond = upscaler.unet.config.cond_channels
    if isinstance(low, bool) or not isinstance(low, int) or not 0 < low < upscaler.image_size:
        raise ValueError(
            f"model {name!r}: low_res {low!r} must be an integer in [1, {upscaler.image_size})"
        )
    if cond != upscaler.image_channels:
        raise ValueError(
            f"model {name!r}: an upscaler sees its small image on cond_channels, so it "
            f"needs cond_channels = {upscaler.image_channels} (the image's), got {cond}"
        )
    if base is not None and (base.image_size != low or base.image_channels != cond):
        raise ValueError(
            f"model {name!r}: its base draws {base.image_size} px with "
            f"{base.image_channels} channels; the upscaler takes {low} px, {cond} channels"
        )
