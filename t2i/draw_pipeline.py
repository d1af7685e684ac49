"""The sequential family: AlignDRAW (t2i/models/draw.py) behind the generation protocol.

A folder whose model_index.json says "family": "draw" holds `draw/` (the network) and
`text_encoder/` (the bidirectional LSTM trained with it, or a transformer). An image is T steps
of the learnt prior: z_t drawn, the generative LSTM attends over the words and writes a patch
onto the canvas; the image is the likelihood's mean, the canvas c_T (clamped). Image i of a call
draws its z_1..z_T from `torch.Generator().manual_seed(seed + i)`. Each step's canvas reaches the
callback, so `preview` (the server's live image, `t2i generate --strip`) shows the drawing grow.

The likelihood: 8-bit pixels under a discretised Gaussian around the mean with one learnt std
per channel (a Bernoulli fits binarised digits, not grey levels or colours). `elbo` is the
negative evidence lower bound in nats, reconstruction + KL(Q || learnt prior) summed over the
steps, one posterior sample per image: what training minimises and `t2i eval --nll` reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from t2i.likelihood import discretized_gaussian_nll
from t2i.models.draw import DrawNet, image_mean
from t2i.params import (
    GenerationParams,
    check_network_fits,
    check_no_noise_levels,
    noise_temperature,
)
from t2i.protocol import Generator, Supports

SAMPLER = "draw"  # the one "sampler": T steps of the learnt prior


def elbo(net: DrawNet, images, context, mask, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (reconstruction, KL), each (B,) in nats: -log p(x | z) of the 8-bit images under the
    discretised Gaussian around the canvas c_T, and the KL of every step's posterior to the prior;
    their sum bounds -log p(x | caption). noise (B, T, z_dim): the posterior's draws."""
    mean, kl = net(images, context, mask, noise)
    logvar = (2 * net.log_std.float()).view(1, -1, 1, 1).expand_as(images)
    recon = discretized_gaussian_nll(images.float(), mean.float(), logvar).flatten(1).sum(1)
    return recon, kl.float()


def step_noise(net: DrawNet, generators: list[torch.Generator]) -> torch.Tensor:
    """(B, T, z_dim) standard normals, row i from generators[i] alone."""
    c = net.config
    return torch.stack([torch.randn(c.steps, c.z_dim, generator=g) for g in generators])


class DrawPipeline(Generator):
    """A loaded AlignDRAW folder: text encoder and the DRAW network."""

    family = "draw"

    def __init__(self, components: dict, index: dict, name: str = "", bf16: bool = False):
        super().__init__(components["text_encoder"], index, name, bf16)
        self.net: DrawNet = components["draw"]
        c = self.net.config
        # the prior's draws scaled by a temperature (model_index.json "sampler"): 1 samples the
        # learnt prior as trained, 0 takes its means
        self.temperature = noise_temperature(index)
        check_network_fits(name, self.image_size, self.text_encoder.dim, c, "network")

    @property
    def supports(self) -> Supports:
        return Supports(samplers=(SAMPLER,), steps=False)

    @property
    def defaults(self) -> dict:
        return {"name": SAMPLER, "steps": self.net.config.steps, "guidance_scale": 1.0}

    @property
    def factor(self) -> int:
        return self.image_size  # the canvas has one size: its training size

    @property
    def image_channels(self) -> int:
        return self.net.config.image_channels

    def networks(self) -> list[torch.nn.Module]:
        return [self.net]

    def counted(self, run: Callable[[], torch.Tensor], p: GenerationParams):
        """One generative step per glimpse (T), all inside one forward call."""
        return run(), self.total_steps(p)

    def total_steps(self, p: GenerationParams) -> int:
        return self.net.config.steps

    def check(self, p: GenerationParams) -> None:
        steps = self.net.config.steps
        if p.sampler != SAMPLER:
            raise ValueError(
                f"sampler {p.sampler!r}: an AlignDRAW model draws its {steps} steps from its "
                f"learnt prior; the only sampler is {SAMPLER!r}"
            )
        if p.steps != steps:
            raise ValueError(
                f"steps {p.steps}: this AlignDRAW model was trained to draw in {steps} steps "
                "(leave steps unset)"
            )
        if p.guidance != 1.0 or p.negative:
            raise ValueError(
                f"guidance {p.guidance} / negative prompt {p.negative!r}: AlignDRAW has no "
                "classifier-free guidance (guidance must be 1, no negative prompt)"
            )
        check_no_noise_levels(p, "AlignDRAW", self.image_size)

    @torch.no_grad()
    def draw(
        self, p: GenerationParams, seeds: list[int], cond: dict, callback: Callable | None = None
    ) -> torch.Tensor:
        """(n, C, H, W) in [-1, 1]; callback({"i", "canvas", "alpha"}) after each step."""
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        noise = step_noise(self.net, gens) * self.temperature

        def report(t, out):
            if callback is not None:
                callback({"i": t, "canvas": out.canvas, "alpha": out.alpha})

        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            images = self.net.sample(cond["context"], cond["context_mask"], noise, report)
        return images.float().clamp(-1, 1)

    def preview(self, info: dict, index: int = 0) -> torch.Tensor | None:
        """The canvas so far of image `index`: the mean it would give if drawing stopped here."""
        canvas = info.get("canvas")
        return None if canvas is None else image_mean(canvas[index].float())

    @torch.no_grad()
    def likelihood(self, images, prompts, timesteps=None, generator=None):
        """The negative ELBO per dimension in bits, one posterior sample per image drawn from
        `generator`; "reconstruction" and "kl" its two parts. `timesteps` does not apply."""
        cond = self.encode_text(prompts)
        shared = generator if generator is not None else torch.Generator().manual_seed(0)
        noise = step_noise(self.net, [shared] * len(images))  # row i: the next T x z draws
        recon, kl = elbo(self.net, images, cond["context"], cond["context_mask"], noise)
        dims = images[0].numel() * math.log(2)
        return {"elbo": (recon + kl) / dims, "reconstruction": recon / dims, "kl": kl / dims}
