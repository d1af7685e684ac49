"""The adversarial family: a text-conditional GAN (t2i/models/gan.py) behind the protocol.

A folder whose model_index.json says "family": "gan" holds `gan/` (the generator and its style
encoder) and `text_encoder/` (the frozen encoder it was trained against). An image is one pass of
the generator: z ~ N(0, I) from `torch.Generator().manual_seed(seed + i)` for image i, and the
caption's states. So steps are 1, there is no sampler to choose and no classifier-free guidance;
what needs a diffusion model's noise levels (img2img, inpainting, a guidance interval) is refused
with that reason.

Style transfer (Reed et al. 2016): `restyle(images, prompts)` reads each image's z with the style
encoder and redraws it under another caption: what the caption leaves open (pose, shade,
background) is meant to carry over.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from t2i.models.gan import GanNet
from t2i.params import (
    GenerationParams,
    check_network_fits,
    check_no_noise_levels,
    noise_temperature,
)
from t2i.protocol import Generator, Supports

SAMPLER = "gan"  # the one "sampler": a single pass of the generator


def noise(z_dim: int, seeds: list[int], temperature: float = 1.0) -> torch.Tensor:
    """(n, z_dim): row i from seed i alone, scaled by the temperature (the truncation trick's
    simplest form: < 1 trades variety for typical images)."""
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows) * temperature


class GanPipeline(Generator):
    """A loaded GAN folder: text encoder and generator."""

    family = "gan"

    def __init__(self, components: dict, index: dict, name: str = "", bf16: bool = False):
        super().__init__(components["text_encoder"], index, name, bf16)
        self.net: GanNet = components["gan"]
        c = self.net.config
        self.temperature = noise_temperature(index)
        check_network_fits(name, self.image_size, self.text_encoder.dim, c, "generator")

    @property
    def supports(self) -> Supports:
        return Supports(samplers=(SAMPLER,), steps=False)

    @property
    def defaults(self) -> dict:
        return {"name": SAMPLER, "steps": 1, "guidance_scale": 1.0}

    @property
    def factor(self) -> int:
        return self.image_size  # the generator draws one size: its training size

    @property
    def image_channels(self) -> int:
        return self.net.config.image_channels

    def networks(self) -> list[torch.nn.Module]:
        return [self.net]

    def total_steps(self, p: GenerationParams) -> int:
        return 1

    def check(self, p: GenerationParams) -> None:
        if p.sampler != SAMPLER:
            raise ValueError(
                f"sampler {p.sampler!r}: a GAN draws in one pass of its generator; the only "
                f"sampler is {SAMPLER!r}"
            )
        if p.steps != 1:
            raise ValueError(f"steps {p.steps}: a GAN draws in 1 step (leave steps unset)")
        if p.guidance != 1.0 or p.negative:
            raise ValueError(
                f"guidance {p.guidance} / negative prompt {p.negative!r}: a GAN has no "
                "classifier-free guidance (guidance must be 1, no negative prompt)"
            )
        check_no_noise_levels(p, "GAN", self.image_size)

    @torch.no_grad()
    def draw(
        self, p: GenerationParams, seeds: list[int], cond: dict, callback: Callable | None = None
    ) -> torch.Tensor:
        """(n, C, H, W) in [-1, 1]."""
        z = noise(self.net.config.z_dim, seeds, self.temperature)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            images = self.net(z, cond["context"], cond["context_mask"])
        return images.float().clamp(-1, 1)

    @torch.no_grad()
    def restyle(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """images (B, C, H, W) in [-1, 1] at the model's size -> each redrawn with its style
        (z = S(image)) under prompts[i]; (B, C, H, W) in [-1, 1]."""
        c = self.net.config
        expected = (c.image_channels, c.image_size, c.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"style images {tuple(images.shape)}: this GAN reads (B, {expected[0]}, "
                f"{expected[1]}, {expected[2]})"
            )
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts for {len(images)} style images")
        cond = self.encode_text(prompts)
        z = self.net.style(images.float())
        return self.net(z, cond["context"], cond["context_mask"]).clamp(-1, 1)
