"""A guide: a network trained on a diffusion model's noisy samples whose log-probability of the
prompt steers sampling, x0_hat + scale * sigma^2 * grad_x log p(prompt | x_t, sigma)
(t2i/guidance.py, GradientGuidance): a noise-aware classifier (Dhariwal & Nichol 2021) or a
noisy CLIP (GLIDE, Nichol et al. 2022).

A guide folder is a component folder (config.json of type "noisy_guide", model.safetensors) and
a card.json with what the recipe measured; `t2i train guide` writes it. It reads the sampler's
own space (pixels, or the model's latents) directly, so the gradient costs the guide's backward
pass alone: no pass through the UNet or the decoder.

    guide = load_guide("runs/fashion_guide/model")
    pipe.load_guide("runs/fashion_guide/model")       # then guides=[("model", 2.0)] per request
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from t2i.adapters.lora import file_hash
from t2i.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_component, read_json_object
from t2i.guidance import GradientGuidance
from t2i.guides import tasks
from t2i.models.noisy_guide import NoisyGuide

CARD_NAME = "card.json"
KINDS = {"classifier": ("fashion", "shapes"), "clip": ("clip",)}


@dataclass
class Guide:
    net: NoisyGuide
    path: Path
    digest: str  # first 12 hex digits of the weights file's sha256: what images record

    @property
    def task(self) -> str:
        return self.net.config.task

    @property
    def kind(self) -> str:
        return "clip" if self.task == "clip" else "classifier"

    def check_prompt(self, prompt: str) -> None:
        """ValueError when the guide cannot read the prompt (before any work)."""
        if self.kind == "classifier":
            tasks.targets(self.task, [prompt])

    def targets(self, prompts: list[str], cond: dict) -> dict[str, torch.Tensor]:
        """What log_prob needs for a batch of prompts; `cond` holds their text states."""
        if self.kind == "classifier":
            return tasks.targets(self.task, prompts)
        with torch.no_grad():
            text = self.net.encode_text(cond["context"].float(), cond["context_mask"])
        return {"text": text}

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor, **targets) -> torch.Tensor:
        """(B,): log p(prompt | x, sigma) of a classifier; scale * cos(f(x), g(prompt)) of a
        clip guide."""
        dtype = self.net.head.weight.dtype  # fp32, or fp64 where a test checks the gradient
        pooled, cells = self.net(x.to(dtype), sigma.to(dtype))
        if self.task == "fashion":
            return tasks.fashion_log_prob(pooled, **targets)
        if self.task == "shapes":
            return tasks.shapes_log_prob(pooled, cells, **targets)
        image = torch.nn.functional.normalize(pooled, dim=-1)
        return self.net.scale() * (image * targets["text"]).sum(-1)

    def wrap(self, model, scale: float, prefix: str) -> GradientGuidance:
        """`model` steered by this guide at `scale`; it reads its targets from the condition
        keys `prefix` + name (Generator.condition puts them there)."""
        keys = tuple(prefix + k for k in self.target_keys)

        def log_prob(x, sigma, x0, **found):
            return self.log_prob(x, sigma, **{k.removeprefix(prefix): v for k, v in found.items()})

        return GradientGuidance(model, log_prob, scale, keys, through_denoiser=False)

    @property
    def target_keys(self) -> tuple[str, ...]:
        return {
            "fashion": ("label",),
            "shapes": ("cells", "sizes", "valid", "background"),
            "clip": ("text",),
        }[self.task]

    def card(self) -> dict:
        path = self.path / CARD_NAME
        return read_json_object(path) if path.is_file() else {}


def load_guide(path: str | Path, kind: str | None = None) -> Guide:
    """A guide folder, checked as every component is; `kind` ("classifier" or "clip"), when
    given, must be what the folder holds."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise ValueError(f"guide {str(path)!r} is not a guide folder (no {CONFIG_NAME})")
    data = read_json_object(path / CONFIG_NAME)
    if data.get("type") != "noisy_guide":
        raise ValueError(
            f"guide {str(path)!r}: config.json type {str(data.get('type'))[:40]!r}; a guide "
            "folder has type 'noisy_guide' (t2i train guide writes one)"
        )
    net = load_component(path)
    guide = Guide(net, path, file_hash(path / WEIGHTS_NAME))
    if kind is not None and guide.kind != kind:
        raise ValueError(f"guide {str(path)!r} is a {guide.kind} guide, not a {kind} guide")
    return guide


def check_fits(guide: Guide, channels: int, side: int, model: str) -> None:
    """The guide reads what the model samples: its channels and side."""
    c = guide.net.config
    if (c.in_channels, c.image_size) != (channels, side):
        raise ValueError(
            f"guide {str(guide.path)!r} reads {c.in_channels}x{c.image_size}x{c.image_size} "
            f"samples (trained for {c.base or 'another model'}); model {model!r} samples "
            f"{channels}x{side}x{side}"
        )


def describe(guide: Guide) -> dict:
    """What /api/models and `t2i info` say of a loaded guide."""
    c = guide.net.config
    return {"kind": guide.kind, "task": c.task, "base": c.base, "hash": guide.digest}
