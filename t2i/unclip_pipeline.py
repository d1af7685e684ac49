"""The two-stage family of DALL-E 2 (unCLIP, Ramesh et al. 2022): text -> prior -> CLIP image
embedding -> decoder diffusion model -> image.

A folder whose model_index.json says "family": "unclip" holds a diffusion model's components
(`unet/`, `text_encoder/`, `autoencoder/` for a latent decoder) and three more:
- `clip/`: the CLIP trained here for generation, whose image embeddings the decoder reads and the
  prior predicts. It is never the CLIP that `t2i eval` judges with (`clip` in the index says
  which it is).
- `prior/`: a `DiffusionPrior` (sampled with DDIM, `candidates` samples per image, the one with
  the highest dot product with the prompt's CLIP text embedding kept) or an
  `EmbeddingRegressor` (one pass).
- `image_tokens/`: the embedding's extra context tokens for the UNet.

The decoder is a diffusion `Pipeline` whose condition is the text states with the embedding's
tokens appended and the embedding as `pooled`, so every sampler, img2img, inpainting and the
guidance interval work as for a diffusion model. Classifier-free guidance drops both the text
(to the negative prompt) and the embedding (to the null embedding, zeros).

Because the decoder reads an image embedding, it also draws **variations** of an image (its CLIP
embedding, no text) and **interpolations** between two images' embeddings (slerp).

Seeds: image i's prior noise comes from `torch.Generator().manual_seed(seed ^ PRIOR_STREAM)`,
its decoder noise from `manual_seed(seed)`, so image i of a batch is the image made alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from t2i.denoisers import make_denoiser
from t2i.guidance import CFGDenoiser
from t2i.images import load_image
from t2i.models.clip import CLIP
from t2i.models.text_encoder import TextEmbedding, masked_mean
from t2i.models.unclip import DiffusionPrior, decoder_condition, embedding_input
from t2i.params import GenerationParams, check_int, check_seeds
from t2i.pipeline import Pipeline
from t2i.protocol import Supports
from t2i.samplers import SAMPLERS, sample_ddim, sigmas_for
from t2i.schedules import DiscreteSchedule

PRIOR_STREAM = 0x5EED << 48  # xor-ed into a seed: the prior's noise is not the decoder's
PRIOR_DEFAULTS = {"steps": 25, "candidates": 2, "guidance": 1.0}
MAX_CANDIDATES = 16


class UnclipPipeline(Pipeline):
    """A loaded unCLIP folder: prior, generation CLIP, and the decoder diffusion model."""

    family = "unclip"

    def __init__(self, components: dict, index: dict, name: str = "", bf16: bool = False):
        super().__init__(components, index, name, bf16)
        self.clip: CLIP = components["clip"]
        self.tokens = components["image_tokens"]
        self.use_prior(components["prior"], index.get("prior", {}))
        check_fits(self, name)

    def use_prior(self, prior, settings: dict) -> None:
        """Draw with `prior` (a DiffusionPrior or an EmbeddingRegressor on this model's CLIP)
        and its sampling settings (the index's "prior", a prior card's "sampling")."""
        settings = {**PRIOR_DEFAULTS, **settings}
        self.prior = prior
        self.prior_steps = check_int("prior.steps", settings["steps"], 1, 1000)
        self.candidates = check_int("prior.candidates", settings["candidates"], 1, MAX_CANDIDATES)
        self.prior_guidance = float(settings["guidance"])
        self.prior_denoiser = None
        if isinstance(prior, DiffusionPrior):
            schedule = DiscreteSchedule.from_dict(settings["schedule"])
            self.prior_denoiser = make_denoiser(prior, "x0", schedule).eval()

    @property
    def supports(self) -> Supports:
        return Supports(
            samplers=tuple(sorted(SAMPLERS)),
            guidance_interval=True,
            img2img=True,
            inpainting=True,
            image_prompt=True,
        )

    def networks(self) -> list[torch.nn.Module]:
        return [self.unet, self.prior]

    def check(self, p: GenerationParams) -> None:
        super().check(p)
        if p.image_prompt:
            self.read_image(p.image_prompt)  # readable, bounded, of the model's channels
        if p.prompt:
            length = self.encode_text([p.prompt])["context"].shape[1]
            if isinstance(self.prior, DiffusionPrior) and length > self.prior.config.max_length:
                raise ValueError(
                    f"the prompt is {length} tokens long; this model's prior reads at most "
                    f"{self.prior.config.max_length}"
                )

    # ------------------------------------------------------------ the embeddings

    def clip_text(self, prompts: list[str], cond: dict) -> torch.Tensor:
        """(B, E) the prompts' CLIP text embeddings (as `embedding_input`): the CLIP's own text
        tower, or its projection of the model's text states pooled (masked mean + L2, the
        pretrained encoder's pooling)."""
        if self.clip.text_encoder is not None:
            text = self.clip.encode_prompts(prompts)
        else:
            pooled = F.normalize(masked_mean(cond["context"], cond["context_mask"]), dim=-1)
            text = TextEmbedding(None, None, pooled)
        return embedding_input(self.clip.encode_text(text))

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, E) their CLIP image embeddings (as `embedding_input`);
        the images are box-averaged to the CLIP's input size."""
        c = self.clip.config
        if images.ndim != 4 or images.shape[1] != c.image_channels:
            raise ValueError(
                f"images {tuple(images.shape)}: this model's CLIP reads "
                f"(B, {c.image_channels}, H, W)"
            )
        x = F.adaptive_avg_pool2d(images.float(), c.image_size)
        return embedding_input(self.clip.encode_image(x))

    def prior_embeddings(self, prompts: list[str], cond: dict, seeds: list[int]) -> torch.Tensor:
        """(B, E) an image embedding per prompt: the regressor's answer, or the best of
        `candidates` samples of the diffusion prior by dot product with the text embedding."""
        text = self.clip_text(prompts, cond)
        if self.prior_denoiser is None:
            return embedding_input(self.prior(text))
        uncond = None
        if self.prior_guidance != 1.0:
            uncond = {**self.encode_text([""]), "pooled": torch.zeros(1, text.shape[1])}
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            samples = sample_prior(
                self.prior_denoiser,
                {**cond, "pooled": text},
                seeds,
                self.candidates,
                self.prior_steps,
                self.prior_guidance,
                uncond,
            )
        return best_of(samples, text)

    # ------------------------------------------------------------ generation

    def unconditional(self, p: GenerationParams) -> dict:
        """Guidance steers away from the negative prompt with the null embedding."""
        return decoder_condition(self.tokens, self.encode_text([p.negative]), None)

    @torch.no_grad()
    def draw(
        self,
        p: GenerationParams,
        seeds: list[int],
        cond: dict,
        callback: Callable | None = None,
        noise: torch.Tensor | None = None,
        embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(n, C, H, W) in [-1, 1]; `embeds` (n, E) replaces the prior's (variations,
        interpolation); `cond` the text states of the batch."""
        if embeds is None and p.image_prompt:
            embeds = self.image_embeddings(self.read_image(p.image_prompt))
            embeds = embeds.expand(len(seeds), -1)
        if embeds is None:
            prompts = [p.prompt] * len(seeds)
            embeds = self.prior_embeddings(prompts, cond, seeds)
        elif embeds.shape != (len(seeds), self.clip.config.embed_dim):
            raise ValueError(
                f"embeds {tuple(embeds.shape)}: expected ({len(seeds)}, "
                f"{self.clip.config.embed_dim})"
            )
        full = decoder_condition(self.tokens, cond, embeds)
        return super().draw(p, seeds, full, callback, noise)

    @torch.no_grad()
    def generate_items(self, items: list[GenerationParams], callback: Callable | None = None):
        """As every family's, with each item's own prompt reaching the prior."""
        if not items:
            raise ValueError("generate_items needs at least one item")
        seeds = check_seeds(items[0], len(items), [p.seed for p in items])
        prompts = [p.prompt for p in items]
        cond = self.condition(items[0], prompts)
        embeds = None if items[0].image_prompt else self.prior_embeddings(prompts, cond, seeds)
        return self.draw(items[0], seeds, cond, callback, embeds=embeds)

    @torch.no_grad()
    def variations(self, image, n: int = 4, **request) -> torch.Tensor:
        """(n, C, H, W) in [-1, 1]: images drawn from one image's CLIP embedding with no text
        (DALL-E 2's variations); `image` a file (recorded in the images' parameters as
        `image_prompt`), a PIL image or a (1, C, H, W) tensor in [-1, 1]; request keywords as
        `params` (seed, steps, guidance, ...)."""
        n = check_int("n", n, 1, 64)
        if isinstance(image, (str, Path)):
            return self.generate(self.params("", image_prompt=str(image), **request), n)
        p = self.params("", **request)
        return self.generate(
            p, n, embeds=self.image_embeddings(self.read_image(image)).expand(n, -1)
        )

    @torch.no_grad()
    def interpolate_images(self, first, second, frames: int = 5, **request) -> torch.Tensor:
        """(frames, C, H, W): one seed, the embedding walked from the first image's to the
        second's along the great circle (slerp), no text."""
        p = self.params("", **request)
        frames = check_int("frames", frames, 2, 64)
        a, b = (self.image_embeddings(self.read_image(x))[0] for x in (first, second))
        walk = torch.stack([slerp(a, b, t) for t in torch.linspace(0, 1, frames).tolist()])
        return self.generate(p, frames, seeds=[p.seed] * frames, embeds=walk)

    def read_image(self, image) -> torch.Tensor:
        """(1, C, H, W) in [-1, 1] of a file, PIL image or tensor, in the model's channels."""
        if torch.is_tensor(image):
            return image.float()
        return load_image(image, None, self.image_channels, what="image prompt")


def prior_noise(seed: int, k: int, dim: int) -> torch.Tensor:
    """(k, dim) unit noise of one image's prior candidates: candidate j is the same for any k."""
    return torch.randn(k, dim, generator=torch.Generator().manual_seed(seed ^ PRIOR_STREAM))


@torch.no_grad()
def sample_prior(
    denoiser,
    cond: dict,
    seeds: list[int],
    k: int,
    steps: int,
    guidance: float = 1.0,
    uncond: dict | None = None,
) -> torch.Tensor:
    """(B, k, E): k samples of a diffusion prior per image by DDIM in `steps` steps, from image
    i's own seed; cond: context, context_mask and pooled (the text embeddings) of B images;
    guidance != 1: classifier-free guidance against `uncond`."""
    e = denoiser.net.config.embed_dim
    noise = torch.cat([prior_noise(s, k, e) for s in seeds])
    cond = {key: v.repeat_interleave(k, 0) for key, v in cond.items()}
    model = CFGDenoiser(denoiser, uncond, guidance) if guidance != 1.0 else denoiser
    sigmas = sigmas_for(denoiser, steps)
    x0 = sample_ddim(model, noise * sigmas[0], sigmas, extra_args=cond)
    return x0.float().view(len(seeds), k, e)


def best_of(samples: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, k, E) candidates -> (B, E) the one of each image with the highest cosine to its text
    embedding (DALL-E 2's best-of-n by dot product; the samples' norms are equal to a few %)."""
    scores = F.normalize(samples, dim=-1) @ F.normalize(text, dim=-1)[:, :, None]
    best = scores[..., 0].argmax(1)
    return embedding_input(samples[torch.arange(len(samples)), best])


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two embeddings of one norm (t in [0, 1])."""
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum().clamp(-1, 1)
    angle = torch.arccos(cos)
    if angle < 1e-4:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / torch.sin(angle)


def check_fits(pipe: UnclipPipeline, name: str) -> None:
    """The components of an unCLIP folder agree on the CLIP space and the text width."""
    e = pipe.clip.config.embed_dim
    found = {
        "prior": pipe.prior.config.embed_dim,
        "image_tokens": pipe.tokens.config.embed_dim,
        "unet.pooled_dim": pipe.unet.config.pooled_dim,
    }
    wrong = {k: v for k, v in found.items() if v != e}
    if wrong:
        raise ValueError(f"model {name!r}: its CLIP's embedding has {e} dims but {wrong}")
    if pipe.tokens.config.context_dim != pipe.unet.config.context_dim:
        raise ValueError(
            f"model {name!r}: image_tokens.context_dim {pipe.tokens.config.context_dim} != "
            f"unet.context_dim {pipe.unet.config.context_dim}"
        )
    if pipe.clip.text_encoder is None and pipe.clip.config.text_dim != pipe.text_encoder.dim:
        raise ValueError(
            f"model {name!r}: its CLIP projects {pipe.clip.config.text_dim}-wide pooled text, "
            f"the text encoder gives {pipe.text_encoder.dim}"
        )
    reads = pipe.prior.config.text_dim if isinstance(pipe.prior, DiffusionPrior) else None
    if reads is not None and reads != pipe.text_encoder.dim:
        raise ValueError(
            f"model {name!r}: its prior reads {pipe.prior.config.text_dim}-wide text states, "
            f"the text encoder gives {pipe.text_encoder.dim}"
        )
