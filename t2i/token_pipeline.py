"""The pipeline of an autoregressive model: prompt -> text states -> codes drawn one by one by the
token transformer -> the VQ autoencoder's decoder -> image.

`t2i.load(folder)` returns a `TokenPipeline` for a folder whose model_index.json says
"family": "autoregressive"; it answers the generation protocol (t2i/protocol.py), so the CLI,
the server and `t2i eval` run it unchanged. Its `supports` says what it has: one sampler, steps
fixed to its code count, no editing or inversion. Image i of a call draws its codes with
`torch.Generator().manual_seed(seed + i)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from t2i.likelihood import discretized_gaussian_nll
from t2i.models.token_transformer import check_sampling, sample_codes
from t2i.params import GenerationParams, check_no_noise_levels
from t2i.protocol import Generator, Supports

SAMPLER = "autoregressive"  # the one "sampler": codes in raster order, temperature and top-k


class TokenPipeline(Generator):
    """A loaded autoregressive model folder: text encoder, token transformer, VQ autoencoder."""

    family = "autoregressive"

    def __init__(self, components: dict, index: dict, name: str = "", bf16: bool = False):
        super().__init__(components["text_encoder"], index, name, bf16)
        self.transformer = components["transformer"]
        self.autoencoder = components["autoencoder"]
        sampler = dict(index.get("sampler", {}))
        self.temperature = float(sampler.pop("temperature", 1.0))
        self.top_k = int(sampler.pop("top_k", 0))
        self._defaults = {"name": SAMPLER, "steps": self.tokens, "guidance_scale": 3.0, **sampler}
        grid = self.autoencoder.config.latent_side(self.image_size)
        if grid != self.transformer.config.grid:
            raise ValueError(
                f"model {name!r}: image_size {self.image_size} through the autoencoder is a "
                f"{grid}x{grid} code grid; the transformer draws {self.transformer.config.grid}"
            )
        check_sampling(self.temperature, self.top_k)

    @property
    def supports(self) -> Supports:
        return Supports(samplers=(SAMPLER,), steps=False)

    @property
    def defaults(self) -> dict:
        return self._defaults

    @property
    def tokens(self) -> int:
        return self.transformer.config.length

    @property
    def factor(self) -> int:
        return self.image_size  # the transformer draws one grid size: its training size

    @property
    def image_channels(self) -> int:
        return self.autoencoder.config.in_channels

    def networks(self) -> list[torch.nn.Module]:
        return [self.transformer]

    @torch.no_grad()
    def likelihood(self, images, prompts, timesteps=None, generator=None):
        """-log2 p(x | caption) per dimension bounded by the exact NLL of x's codes under the
        transformer plus -log p(x | codes) under an 8-bit discretised Gaussian around the VQ
        decoder's image (its one std fitted to these images, a scalar): "codes" the first
        term alone (a code likelihood spread over the pixels, not an image likelihood),
        "bound" both. `timesteps` and `generator` do not apply (exact)."""
        grid = self.autoencoder.encode(images)[2]
        codes = grid.flatten(1)
        cond = self.encode_text(prompts)
        logits = self.transformer(codes, cond["context"], cond["context_mask"]).float()
        code_nats = -logits.log_softmax(-1).gather(-1, codes[..., None])[..., 0].sum(1)
        recon = self.autoencoder.decode_codes(grid).float()
        logvar = (recon - images).pow(2).mean().clamp(min=1e-8).log().expand_as(images)
        pixel_nats = discretized_gaussian_nll(images, recon, logvar).flatten(1).sum(1)
        dims = images[0].numel() * math.log(2)
        return {"codes": code_nats / dims, "bound": (code_nats + pixel_nats) / dims}

    def counted(self, run: Callable[[], torch.Tensor], p: GenerationParams):
        """One transformer step per code (its cached steps are not forward calls)."""
        return run(), self.total_steps(p)

    def total_steps(self, p: GenerationParams) -> int:
        return self.tokens  # one callback per code

    def check(self, p: GenerationParams) -> None:
        if p.sampler != SAMPLER:
            raise ValueError(
                f"sampler {p.sampler!r}: an autoregressive model draws its codes one by one; "
                f"the only sampler is {SAMPLER!r}"
            )
        if p.steps != self.tokens:
            raise ValueError(
                f"steps {p.steps}: an autoregressive model takes one step per code, "
                f"{self.tokens} for this model (leave steps unset)"
            )
        check_no_noise_levels(p, "autoregressive", self.image_size)

    @torch.no_grad()
    def draw(
        self,
        p: GenerationParams,
        seeds: list[int],
        cond: dict,
        callback: Callable | None = None,
    ) -> torch.Tensor:
        """(n, C, H, W) images in [-1, 1]; image i draws with the generator seeded seeds[i];
        classifier-free guidance away from p.negative."""
        uncond = None
        if p.guidance != 1.0:
            u = self.encode_text([p.negative])
            uncond = (u["context"], u["context_mask"])
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        report = None if callback is None else (lambda i: callback({"i": i}))
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            codes = sample_codes(
                self.transformer,
                cond["context"],
                cond["context_mask"],
                uncond,
                p.guidance,
                gens,
                self.temperature,
                self.top_k,
                report,
            )
            images = self.autoencoder.decode_codes(codes)
        return images.float().clamp(-1, 1)
