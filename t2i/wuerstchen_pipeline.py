"""The Würstchen-style family (Pernias et al. 2023): the text-conditional diffusion runs in a
highly compressed semantic grid (stage C), a second diffusion model draws the autoencoder's
latents from that grid (stage B), and the autoencoder decodes them (stage A).

    pipe = t2i.load("runs/wu/model")              # a folder written by t2i train wuerstchen_c
    images = pipe("fox emoji, noto style", seed=1)

For emoji: 64x64 pixels -> 16x16x4 latents (stage A, the emoji autoencoder) -> a 4x4x16 grid
(t2i/models/semantic.py). Stage C is a plain diffusion Pipeline over 16-channel 4x4 "images"
(values in (-1, 1) like pixels); stage B is an upscaler stage whose UNet reads the grid, enlarged
to its latent grid, on its cond_channels. So this is a cascade (t2i/cascade.py) whose small
"image" is the semantic grid: the request's sampler, steps and guidance apply to stage B, stage C
runs with its own defaults, and edits start from the init's own grid (encode -> semantic).

The folder is stage B's (unet, text_encoder, autoencoder, semantic) with stage C in the
subfolder the index's "base" names; a stage C folder cannot be loaded alone (it draws no image).
Without stage C (a `t2i train wuerstchen_b` run's model) the pipeline redraws given images from
their grids: `reconstruct`, which is how stage B is measured on its own.
"""

from __future__ import annotations

import torch

from t2i.cascade import CascadePipeline
from t2i.images import load_image, load_mask, shrink
from t2i.models.semantic import SemanticEncoder
from t2i.params import GenerationParams
from t2i.pipeline import Pipeline
from t2i.protocol import Generator

STAGE_C_KEY = "semantic_stage"  # a stage C index says what it draws (and is refused alone)


class WuerstchenPipeline(CascadePipeline):
    """Stage C (`base`, a Pipeline over the semantic grid; None: reconstruction only), stage B
    (`upscaler`, a latent Pipeline reading the grid) and the semantic encoder."""

    family = "wuerstchen"

    def __init__(self, stage_c: Pipeline | None, stage_b: Pipeline, semantic: SemanticEncoder):
        self.semantic = semantic.eval()
        super().__init__(stage_c, stage_b)

    def check_stages(self, base: Generator | None, upscaler: Pipeline) -> None:
        check_semantic_stages(base, upscaler, self.semantic)

    def networks(self) -> list[torch.nn.Module]:
        return [*super().networks(), self.semantic]

    @torch.no_grad()
    def semantic_grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, C, H/s, W/s) their semantic grids."""
        return self.semantic(self.upscaler.encode_image(images).float())

    def keep_init(self, low: torch.Tensor, p: GenerationParams) -> torch.Tensor:
        """An edit's grid: the init's own (img2img), or stage C's inside the mask."""
        if not p.init:
            return low
        size = (p.width, p.height)
        init = self.semantic_grid(load_image(p.init, size, self.image_channels))
        if not p.mask:
            return init.expand_as(low)
        repaint = shrink(load_mask(p.mask, size), low.shape[-2:])
        return repaint * low + (1 - repaint) * init

    def base_images(self, p, seeds, prompts, callback) -> torch.Tensor:
        if self.base is None:
            raise ValueError(
                f"model {self.name!r} is a Würstchen stage B without its stage C: it redraws "
                "images from their grids (reconstruct), or train stage C on it: "
                "t2i train wuerstchen_c --stage-b MODEL"
            )
        return super().base_images(p, seeds, prompts, callback)

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, prompts: list[str] | None = None, seed: int = 0, **settings
    ) -> torch.Tensor:
        """Stage B's redrawing of (B, 3, H, W) images in [-1, 1] from their semantic grids (with
        their captions, else ""): what stage B and the grid keep, without stage C."""
        prompts = prompts or [""] * len(images)
        height, width = images.shape[-2:]
        p = self.params(prompts[0], seed=seed, size=(width, height), **settings)
        low = self.semantic_grid(images)
        seeds = [seed + i for i in range(len(images))]
        return self.draw_from(p, seeds, self.encode_text(prompts), low)


def check_semantic_stages(
    stage_c: Generator | None, stage_b: Pipeline, semantic: SemanticEncoder
) -> None:
    """Stage B reads the encoder's grid on cond_channels; stage C must draw exactly that grid."""
    name, low, cond = stage_b.name, stage_b.index.get("low_res"), stage_b.unet.config.cond_channels
    grid = semantic.config.out_channels
    if stage_b.autoencoder is None:
        raise ValueError(f"model {name!r}: stage B works in an autoencoder's latents; it has none")
    if semantic.config.in_channels != stage_b.unet.config.in_channels or cond != grid:
        raise ValueError(
            f"model {name!r}: the semantic encoder reads {semantic.config.in_channels}-channel "
            f"latents into {grid} channels; stage B's UNet has {stage_b.unet.config.in_channels} "
            f"in and {cond} cond channels"
        )
    side, _ = stage_b.latent_size(stage_b.image_size, stage_b.image_size)
    if isinstance(low, bool) or low != semantic.config.grid_side(side):
        raise ValueError(
            f"model {name!r}: low_res {low!r} must be the semantic grid's side, "
            f"{semantic.config.grid_side(side)}"
        )
    if stage_c is not None and (stage_c.image_size != low or stage_c.image_channels != grid):
        raise ValueError(
            f"model {name!r}: its stage C draws {stage_c.image_size}x{stage_c.image_size}x"
            f"{stage_c.image_channels}; stage B reads a {low}x{low}x{grid} grid"
        )
