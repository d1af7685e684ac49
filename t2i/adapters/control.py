"""Spatial controls on a loaded diffusion model: ControlNets and T2I-Adapters
(t2i/models/control.py) read from folders, checked against the exact base they were trained on,
and applied per request, several at once, each with its condition image, scale and step range.

A control folder holds config.json ({"type": "control", the ControlConfig, "meta": name, kind,
arch, base, base_hash, training}) and model.safetensors. A model folder's `controls/`
subfolders load by name; `--control NAME:IMAGE[:SCALE[:START:END]]` applies one.

`ControlledDenoiser` is a denoiser around the base denoiser: at each call it finds the sampler
step from sigma, asks every control whose [start, end) range covers that step for its residuals
on the scaled input c_in x and the network's c_noise, and passes their scaled sum to the UNet.
Classifier-free guidance wraps it, so both halves of the batch see the controls unless guess
mode (ControlNet's: the condition without a prompt) keeps them to the prompt's half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from t2i.adapters.lora import file_hash, network_hash
from t2i.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    atomic_write_json,
    config_from_dict,
    load_weights,
    read_json_object,
    read_safetensors,
)
from t2i.denoisers import append_dims, sigma_batch
from t2i.guidance import CFGDenoiser, DenoiserWrapper
from t2i.images import open_image
from t2i.models.control import ControlConfig, build_control
from t2i.models.control_residuals import Residuals
from t2i.params import check_controls
from t2i.samplers import get_sampler

CONTROL_TYPE = "control"
CONTROLS_DIR = "controls"  # a model folder's subfolder of controls, loaded by name
NET_KEYS = ("context", "context_mask", "pooled", "x_cond", "guidance")
DEFAULTS = (1.0, 0.0, 1.0)  # a control's scale, start and end when a request leaves them out
GREY_TOLERANCE = 8  # levels of 255 the colour channels of a grey map may differ by (JPEG noise)


@dataclass
class Control:
    net: nn.Module
    meta: dict  # name, kind, arch, base, base_hash[, training]
    digest: str  # file_hash of its weights: what image parameters record
    path: Path

    @property
    def config(self) -> ControlConfig:
        return self.net.config


def save(folder: str | Path, net: nn.Module, meta: dict, dtype=torch.float16) -> Path:
    """A control folder: config.json (the network's config and `meta`) and its weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_NAME))
    atomic_write_json(
        folder / CONFIG_NAME, {"type": CONTROL_TYPE, **asdict(net.config), "meta": meta}
    )
    return folder


def read(folder: str | Path) -> Control:
    """A control folder, checked: its config, then its weights' names and shapes."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"control {folder}: not a control folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    data = read_json_object(folder / CONFIG_NAME)
    if data.pop("type", None) != CONTROL_TYPE:
        raise ValueError(
            f"control {folder}: {CONFIG_NAME} is not a control's (type {CONTROL_TYPE!r})"
        )
    meta = data.pop("meta", None)
    required = ("name", "kind", "arch", "base", "base_hash")
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), str) for k in required):
        raise ValueError(f"control {folder}: {CONFIG_NAME} 'meta' needs strings {list(required)}")
    config = config_from_dict(ControlConfig, data, f"{folder}/{CONFIG_NAME}")
    net = build_control(config)
    tensors = read_safetensors(folder / WEIGHTS_NAME)
    load_weights(net, tensors, str(folder / WEIGHTS_NAME))
    return Control(net.eval().requires_grad_(False), meta, file_hash(folder / WEIGHTS_NAME), folder)


def load_hint(image, size: tuple[int, int], channels: int, what: str) -> torch.Tensor:
    """A condition image (path or PIL) -> (1, channels, H, W) in [0, 1]; it must have the
    request's size (W, H) and, for a grey map, no colour."""
    img = open_image(image, what)
    if img.size != tuple(size):
        raise ValueError(
            f"{what} is {img.size[0]}x{img.size[1]}; the image drawn is {size[0]}x{size[1]}: "
            "give a condition of the image's size"
        )
    if img.mode in ("RGBA", "LA", "P", "PA"):  # transparent strokes on nothing: over black
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, img.convert("RGBA")).convert("RGB")
    if img.mode not in ("1", "L", "RGB", "I", "I;16", "F"):
        raise ValueError(f"{what} has mode {img.mode!r}; give a grey or RGB image (PNG, JPEG)")
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    if channels == 1:
        spread = float((rgb.max(-1) - rgb.min(-1)).max())
        if spread > GREY_TOLERANCE:
            raise ValueError(
                f"{what} has colour (its channels differ by up to {spread:.0f} levels); this "
                "control reads a grey map: white lines or shapes on black"
            )
        a = rgb.mean(-1, keepdims=True)
    else:
        a = rgb
    return torch.from_numpy(a.transpose(2, 0, 1) / 255.0)[None]


def request_controls(control_set, kw: dict, size: tuple[int, int]) -> tuple[tuple, bool]:
    """A request's "controls" and "guess_mode" keywords -> (resolved controls, guess mode);
    `control_set()` gives the model's ControlSet (asked only when controls are given)."""
    controls, guess = kw.get("controls") or (), kw.get("guess_mode") or False
    if not isinstance(guess, bool):
        raise ValueError(f"guess_mode must be true or false, got {guess!r}")
    if guess and not controls:
        raise ValueError("guess_mode draws from the controls' conditions: give a control")
    if not controls:
        return (), guess
    if isinstance(controls, (str, bytes)) or not all(
        isinstance(c, (list, tuple)) for c in controls
    ):
        raise ValueError("controls is a list of (name, image[, scale[, start, end]])")
    return control_set().resolve(controls, size), guess


class ControlSet:
    """The controls loaded onto one model's UNet."""

    def __init__(self, unet: nn.Module, model_name: str, folder: Path | None):
        self.unet, self.model_name, self.folder = unet, model_name, folder
        self.loaded: dict[str, Control] = {}
        self._base_hash: str | None = None
        self._scanned = False

    def base_hash(self) -> str:
        if self._base_hash is None:
            self._base_hash = network_hash(self.unet)
        return self._base_hash

    def load(self, path: str | Path, name: str | None = None) -> str:
        """Attach the control folder at `path` (named by its meta, or `name`)."""
        control = read(path)
        name = name or control.meta["name"]
        check_controls([(name, "", 1.0, 0.0, 1.0, "")])
        if name in self.loaded:
            raise ValueError(
                f"a control named {name!r} is loaded already ({self.loaded[name].path})"
            )
        if control.meta["base_hash"] != self.base_hash():
            raise ValueError(
                f"control {path} was trained on {control.meta['base']!r} (weights "
                f"{control.meta['base_hash'][:12]}), not on this model {self.model_name!r} "
                f"(weights {self.base_hash()[:12]})"
            )
        if control.config.unet != self.unet.config:
            raise ValueError(f"control {path} was built for another UNet configuration")
        self.loaded[name] = control
        return name

    def scan(self) -> None:
        """The model folder's controls/ subfolders, once (a bad one is an error naming it)."""
        if self._scanned:
            return
        self._scanned = True
        if self.folder is None or not self.folder.is_dir():
            return
        for sub in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            if sub.name not in self.loaded:
                self.load(sub, sub.name)

    def names(self) -> list[str]:
        self.scan()
        return sorted(self.loaded)

    def resolve(self, requested, size: tuple[int, int]) -> tuple:
        """(name, image[, scale[, start, end]]) entries -> checked (name, image, scale, start,
        end, weights hash); each condition image is read and checked now, before any work."""
        self.scan()
        digests = {}  # name -> the weights hash an image's parameters recorded
        out = []
        for entry in requested:
            entry = tuple(entry)
            if len(entry) == 6:  # as an image's parameters record it, with its weights' hash
                digests.setdefault(entry[0], entry[5])
                entry = entry[:5]
            if not 2 <= len(entry) <= 5 or len(entry) == 4:
                raise ValueError(
                    f"a control is (name, image[, scale[, start, end]]), got {len(entry)} values"
                )
            name, image = entry[0], entry[1]
            scale, start, end = (*entry[2:], *DEFAULTS[len(entry) - 2 :])
            control = self.get(name)
            if digests.get(name, control.digest) != control.digest:
                raise ValueError(
                    f"the image was made with control {name!r} {digests[name]}; the loaded one "
                    f"is {control.digest}"
                )
            out.append((name, str(image), scale, start, end, control.digest))
        check_controls(out)
        for name, image, *_ in out:
            self.hint(name, image, size)
        return tuple(out)

    def get(self, name: str) -> Control:
        if name not in self.loaded:
            self.scan()
        if name not in self.loaded:
            loaded = sorted(self.loaded) or "none"
            raise ValueError(
                f"control {name!r} is not loaded on {self.model_name!r} (loaded: {loaded}); "
                "load one with --control-model DIR"
            )
        return self.loaded[name]

    def hint(self, name: str, image, size: tuple[int, int]) -> torch.Tensor:
        control = self.get(name)
        side = control.config.image_size
        if tuple(size) != (side, side):
            raise ValueError(
                f"control {name!r} reads {side}x{side} images, not {size[0]}x{size[1]}"
            )
        return load_hint(image, size, control.config.hint_channels, f"control image of {name!r}")

    def wrap(self, model: nn.Module, controls, size, sigmas: torch.Tensor, guess: bool):
        """`model` (the base denoiser) with the request's controls."""
        if not hasattr(model, "scalings"):
            raise ValueError(f"controls need a plain denoiser; {type(model).__name__} is not one")
        active = [
            (self.get(name).net, self.hint(name, image, size), scale, start, end)
            for name, image, scale, start, end, _ in controls
        ]
        return ControlledDenoiser(model, active, sigmas, guess)


def rows_of(t: torch.Tensor, batch: int) -> torch.Tensor:
    """t (n, ...) for a batch of `batch` rows: one row for all, or repeated as guidance
    stacks its halves (n images, then the same n again)."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    if batch % t.shape[0]:
        raise ValueError(f"{t.shape[0]} conditions for a batch of {batch}")
    return t.repeat(batch // t.shape[0], *([1] * (t.ndim - 1)))


def guess_ramp(n: int) -> list[float]:
    """Guess mode's scales of the n skips, deepest 1, the first 0.1 (log-spaced, as diffusers)."""
    return [float(v) for v in torch.logspace(-1, 0, n)]


class ControlledDenoiser(DenoiserWrapper):
    """The base denoiser with controls: [(net, hint (1, C, H, W), scale, start, end), ...] over
    a run of `sigmas` (steps + 1, descending); `guess`: guess mode's ramp over the skips."""

    def __init__(self, inner: nn.Module, active: list, sigmas: torch.Tensor, guess: bool = False):
        super().__init__(inner)
        self.active, self.guess = active, guess
        self.steps = len(sigmas) - 1
        self.register_buffer("run_sigmas", sigmas.float(), persistent=False)
        self._static: dict[int, dict] = {}  # an adapter's features: one computation per image

    def step_of(self, sigma: torch.Tensor) -> int:
        """The sampler step a call at `sigma` belongs to (sigma in (sigmas[i+1], sigmas[i]])."""
        s = float(sigma.max()) * (1 - 1e-5)  # sigmas[i] itself is step i
        return max(0, int((self.run_sigmas[:-1] >= s).sum()) - 1)

    def on(self, step: int) -> list:
        n = self.steps
        return [a for a in self.active if a[2] and a[3] <= step / n and (step + 1) / n <= a[4]]

    def residuals(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict, rows) -> Residuals | None:
        active = self.on(self.step_of(sigma))
        if not active:
            return None
        _, _, c_in = self.inner.scalings(sigma)
        t = self.inner.c_noise(sigma)
        x_in = x * append_dims(c_in, x.ndim)
        net_cond = {k: v for k, v in cond.items() if k in NET_KEYS}
        total = None
        for i, (net, hint, scale, _, _) in enumerate(active):
            r = self.one(i, net, hint, x_in, t, net_cond)
            weight = scale if rows is None else rows.to(x.dtype).view(-1, 1, 1, 1) * scale
            r = r.scaled(weight)
            total = r if total is None else total + r
        if self.guess:
            ramp = guess_ramp(len(total.skips))
            total.skips = [None if s is None else s * w for s, w in zip(total.skips, ramp)]
        return total

    def one(self, i: int, net, hint, x_in, t, cond) -> Residuals:
        batch = x_in.shape[0]
        if hasattr(net, "features"):  # a T2I-Adapter: the condition alone decides its features
            if i not in self._static:
                self._static[i] = net.features(hint.to(x_in.dtype))
            down = {k: rows_of(f, batch) for k, f in self._static[i].items()}
            return Residuals([None] * net.skips, None, down)
        return net(x_in, t, rows_of(hint, batch).to(x_in.dtype), **cond)

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        rows = cond.pop("control_rows", None)
        sigma = sigma_batch(sigma, x)
        control = self.residuals(x, sigma, cond, rows)
        if control is None:
            return self.inner(x, sigma, **cond)
        return self.inner(x, sigma, control=control, **cond)


@torch.no_grad()
def draw_conditioned(pipe, nets: list, hints: list, prompts: list[str], seeds=None, scales=None):
    """(N, C, H, W) images of `prompts` through a loaded diffusion pipeline, image i under
    condition hints[k][i] of control nets[k] (each at its scale, every step), with the
    pipeline's sampler defaults, image i from seed seeds[i] (default i): a training run's grid
    and the benchmarks draw many conditions in one batch this way."""
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    scales = [1.0] * len(nets) if scales is None else scales
    p = pipe.params("", seed=seeds[0])
    noise, gens = pipe.noise(p, len(prompts), seeds)
    sigmas = pipe.sigmas(p.steps, p.sampler)
    active = [(n, h, s, 0.0, 1.0) for n, h, s in zip(nets, hints, scales)]
    model = ControlledDenoiser(pipe.denoiser, active, sigmas)
    if p.guidance != 1.0:
        model = CFGDenoiser(model, pipe.encode_text([""]), p.guidance, interval=p.guidance_interval)
    cond = pipe.encode_text(prompts)
    with torch.autocast("cpu", torch.bfloat16, enabled=pipe.bf16):
        x0 = get_sampler(p.sampler)(
            model, noise * sigmas[0], sigmas, extra_args=cond, generator=gens
        )
    return pipe.decode(x0.float())
