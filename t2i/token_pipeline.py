"""The pipeline of an autoregressive model: prompt -> text states -> codes drawn one by one by the
token transformer -> the VQ autoencoder's decoder -> image.

`t2i.load(folder)` returns a `TokenPipeline` for a folder whose model_index.json says
"family": "autoregressive"; it answers the calls a `Pipeline` answers (params, generate,
generate_items, total_steps, __call__), so the CLI, the server and `t2i eval` run it unchanged.
What only diffusion has (samplers and steps, img2img, inpainting, inversion, cascades) is refused
with a message. Image i of a call draws its codes with `torch.Generator().manual_seed(seed + i)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from t2i.models.token_transformer import check_sampling, sample_codes
from t2i.pipeline import MAX_IMAGES, GenerationParams, Pipeline, _check_int

SAMPLER = "autoregressive"  # the one "sampler": codes in raster order, temperature and top-k


class TokenPipeline(Pipeline):
    """A loaded autoregressive model folder: text encoder, token transformer, VQ autoencoder."""

    def __init__(self, components: dict, index: dict, name: str = "", bf16: bool = False):
        self.transformer = components["transformer"]
        self.text_encoder = components["text_encoder"]
        self.autoencoder = components["autoencoder"]
        self.index, self.name, self.bf16, self.base = index, name, bf16, None
        sampler = dict(index.get("sampler", {}))
        self.temperature = float(sampler.pop("temperature", 1.0))
        self.top_k = int(sampler.pop("top_k", 0))
        self.defaults = {"name": SAMPLER, "steps": self.tokens, "guidance_scale": 3.0, **sampler}
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        grid = self.autoencoder.config.latent_side(self.image_size)
        if grid != self.transformer.config.grid:
            raise ValueError(
                f"model {name!r}: image_size {self.image_size} through the autoencoder is a "
                f"{grid}x{grid} code grid; the transformer draws {self.transformer.config.grid}"
            )
        check_sampling(self.temperature, self.top_k)

    @property
    def tokens(self) -> int:
        return self.transformer.config.length

    @property
    def factor(self) -> int:
        return self.image_size  # the transformer draws one grid size: its training size

    @property
    def scale(self) -> int:
        return 1

    def total_steps(self, p: GenerationParams) -> int:
        return self.tokens  # one callback per code

    @property
    def samplers(self) -> list[str]:
        return [SAMPLER]

    def check_sampler(self, name: str) -> None:
        if name != SAMPLER:
            raise ValueError(
                f"sampler {name!r}: an autoregressive model draws its codes one by one; "
                f"the only sampler is {SAMPLER!r}"
            )

    def check(self, p: GenerationParams) -> None:
        self.check_sampler(p.sampler)
        if p.steps != self.tokens:
            raise ValueError(
                f"steps {p.steps}: an autoregressive model takes one step per code, "
                f"{self.tokens} for this model (leave steps unset)"
            )
        if p.init or p.mask:
            raise ValueError("img2img and inpainting (init, mask) need a diffusion model")
        if p.guidance_interval is not None:
            raise ValueError("a guidance interval needs a diffusion model's noise levels")
        if (p.width, p.height) != (self.image_size, self.image_size):
            raise ValueError(
                f"image size {p.width}x{p.height}: this autoregressive model draws "
                f"{self.image_size}x{self.image_size} only"
            )
        super().check(p)

    @torch.no_grad()
    def generate(
        self,
        p: GenerationParams,
        n: int = 1,
        callback: Callable | None = None,
        noise: torch.Tensor | None = None,
        cond: dict | None = None,
        seeds: list[int] | None = None,
        low: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(n, C, H, W) images in [-1, 1]; image i draws with the generator seeded p.seed + i
        (or seeds[i]); classifier-free guidance away from p.negative."""
        self.check(p)
        n = _check_int("n", n, 1, MAX_IMAGES)
        if noise is not None or low is not None:
            raise ValueError("an autoregressive model takes no noise or low-resolution input")
        seeds = [p.seed + i for i in range(n)] if seeds is None else seeds
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} images")
        cond = cond if cond is not None else self.encode_text([p.prompt] * n)
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

    def generate_items(
        self, items: list[GenerationParams], callback: Callable | None = None
    ) -> torch.Tensor:
        if not items:
            raise ValueError("generate_items needs at least one item")
        cond = self.encode_text([p.prompt for p in items])
        return self.generate(
            items[0], len(items), callback, cond=cond, seeds=[p.seed for p in items]
        )

    def invert(self, *args, **kwargs):
        raise ValueError("inversion maps an image to a diffusion model's noise: not autoregressive")
