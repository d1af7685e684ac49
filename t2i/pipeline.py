"""The one place where components meet: prompt -> text states, seed -> noise, sampler -> x0 ->
(autoencoder) -> image.

    pipe = t2i.load("shapes")          # a bundled model name, or a model folder path
    images = pipe("a red circle above a blue square", steps=20, guidance=3.0, seed=1)

Image i of a call starts from `torch.Generator().manual_seed(seed + i)`, so image i of a batch is
the image made alone with seed + i. The pieces stay reachable for people who write their own loop:
`pipe.text_encoder`, `pipe.denoiser` (a t2i.denoisers.Denoiser around `pipe.unet`),
`pipe.autoencoder` (None for pixel models), `pipe.sigmas(steps)` and `t2i.samplers`.

An autoregressive model's folder (model_index.json "family": "autoregressive") loads as a
`t2i.token_pipeline.TokenPipeline`, which answers the same calls.

A cascade (t2i/cascade.py) is an upscaler's folder with its base model in a subfolder
(model_index.json "base"): the base draws the image at `low_res`, the upscaler draws it again at
full size conditioned on it. Both stages take the prompt, negative prompt and seeds; the sampler,
steps and guidance given apply to the last stage, the base runs with its own defaults (a stage that
draws 1 pixel wants guidance 1, one that draws shapes more).

Editing goes through the same loop (t2i/editing.py): `init=` (img2img from `strength`), `mask=`
(inpainting, white = repaint), `pipe.invert(image)` (DDIM inversion). Prompts take A1111 weights
`(word:1.3)` and may exceed the text encoder's window (t2i/prompts.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from t2i.cascade import enlarge, shrink
from t2i.checkpoint import INDEX_NAME, load_model_folder
from t2i.denoisers import make_denoiser
from t2i.editing import (
    InpaintDenoiser,
    check_strength,
    ddim_invert,
    load_image,
    load_mask,
    mask_to_latent,
    sample_with_jumps,
    strength_sigmas,
)
from t2i.guidance import CFGDenoiser, check_interval
from t2i.prompts import encode_prompt, parse_prompt
from t2i.samplers import SAMPLERS, get_sampler, sigmas_for
from t2i.schedules import DiscreteSchedule

BUNDLED_DIR = Path(__file__).parent / "bundled"
PNG_KEY = "t2i"  # the PNG text chunk that holds a GenerationParams as JSON
MAX_IMAGES = 64  # per call: more is a typo or a job for a loop
MAX_SIDE = 1024  # pixels


def bundled_models() -> list[str]:
    """Names of the models that ship inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / INDEX_NAME).is_file())


def resolve_model(model: str | Path) -> Path:
    """A bundled model name or a model folder -> the folder; anything else is a ValueError."""
    path = Path(model)
    if (path / INDEX_NAME).is_file():
        return path
    if str(model) in bundled_models():
        return BUNDLED_DIR / str(model)
    if path.is_dir():
        raise ValueError(f"{path} is a folder without {INDEX_NAME}: not a t2i model folder")
    raise ValueError(
        f"unknown model {str(model)!r}; choose from the bundled models {bundled_models()} "
        "or give a model folder (with model_index.json)"
    )


@dataclass
class GenerationParams:
    """Everything that decides an image; stored in its PNG so the image reproduces itself."""

    prompt: str
    negative: str = ""
    model: str = ""
    sampler: str = ""
    steps: int = 0
    guidance: float = 0.0
    seed: int = 0
    width: int = 0
    height: int = 0
    init: str = ""  # img2img / inpainting source image ("" = plain generation)
    mask: str = ""  # inpainting mask, white = repaint ("" = none)
    strength: float = 1.0  # img2img: fraction of the steps run from the noised init
    resample: int = 1  # inpainting: RePaint resampling passes per stretch of steps
    guidance_interval: list[float] | None = None  # [lo, hi]: guide only where lo < sigma <= hi

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: str = "params") -> GenerationParams:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: parameters are not valid JSON: {err}") from err
        allowed = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or "prompt" not in data or set(data) - allowed:
            raise ValueError(f"{source}: expected a JSON object with keys from {sorted(allowed)}")
        return cls(**data)


def save_png(image: Image.Image, path: str | Path, params: GenerationParams) -> Path:
    """Write a PNG carrying its generation parameters in a text chunk."""
    info = PngInfo()
    info.add_text(PNG_KEY, params.to_json())
    path = Path(path)
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_png_params(path: str | Path) -> GenerationParams:
    """The GenerationParams stored in a PNG written by `save_png`."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            text = img.text.get(PNG_KEY) if hasattr(img, "text") else None
    except OSError as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from err
    if text is None:
        raise ValueError(f"{path} carries no t2i parameters (no {PNG_KEY!r} PNG text chunk)")
    return GenerationParams.from_json(text, str(path))


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] -> B PIL images (RGB or L)."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) of an init image, read without decoding its pixels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init image {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            return img.size
    except OSError as err:
        raise ValueError(f"cannot read init image {str(path)!r} as an image: {err}") from err


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


class Pipeline:
    """A loaded model folder: text encoder, denoiser (UNet inside), optional autoencoder; for a
    cascade's upscaler also its base model (`pipe.base`, a Pipeline)."""

    def __init__(
        self,
        components: dict,
        index: dict,
        name: str = "",
        bf16: bool = False,
        base: Pipeline | None = None,
    ):
        self.unet = components["unet"]
        # bf16 autocast of the networks: faster on CPUs with AMX/AVX512-BF16; its accuracy
        # against fp32 is measured in BENCHMARKS.md ("Generation time")
        self.bf16 = bf16
        self.text_encoder = components["text_encoder"]
        self.autoencoder = components.get("autoencoder")
        self.index, self.name = index, name
        schedule = index.get("schedule")
        schedule = DiscreteSchedule.from_dict(schedule) if schedule else None
        self.denoiser = make_denoiser(
            self.unet, index["parameterisation"], schedule, sigma_data=index.get("sigma_data", 0.5)
        ).eval()
        self.defaults = {"name": "ddim", "steps": 20, "guidance_scale": 3.0}
        self.defaults.update(index.get("sampler", {}))
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.base = base
        self._check_cascade()
        if self.autoencoder is not None:
            self.autoencoder.config.check_network_factor(self.unet.config.factor)

    @classmethod
    def from_pretrained(cls, model: str | Path, bf16: bool = False) -> Pipeline:
        folder = resolve_model(model)
        components, index = load_model_folder(folder)
        if index.get("family") == "autoregressive":
            from t2i.token_pipeline import TokenPipeline

            return TokenPipeline(components, index, name=str(model), bf16=bf16)
        base = None
        if "base" in index:
            name = index["base"]
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"{folder}: 'base' must name a subfolder, got {name!r}")
            base = cls.from_pretrained(folder / name, bf16=bf16)
        return cls(components, index, name=str(model), bf16=bf16, base=base)

    def _check_cascade(self) -> None:
        low = self.index.get("low_res")
        cond = self.unet.config.cond_channels
        if low is None:
            if self.base is not None:
                raise ValueError(f"model {self.name!r} has a base model but is no upscaler")
            return
        if isinstance(low, bool) or not isinstance(low, int) or not 0 < low < self.image_size:
            raise ValueError(
                f"model {self.name!r}: low_res {low!r} must be an integer in [1, {self.image_size})"
            )
        if cond != self.image_channels:
            raise ValueError(
                f"model {self.name!r}: an upscaler sees its small image on cond_channels, so it "
                f"needs cond_channels = {self.image_channels} (the image's), got {cond}"
            )
        if self.base is not None and (
            self.base.image_size != low or self.base.image_channels != cond
        ):
            raise ValueError(
                f"model {self.name!r}: its base draws {self.base.image_size} px with "
                f"{self.base.image_channels} channels; the upscaler takes {low} px, "
                f"{cond} channels"
            )

    # ------------------------------------------------------------ pieces

    @property
    def factor(self) -> int:
        """Image sides must be multiples of this: UNet downsamplings x autoencoder factor (and
        for a cascade, what its base needs, times the upscaling)."""
        unet = self.unet.config.factor
        own = unet * (self.autoencoder.config.factor if self.autoencoder is not None else 1)
        if not self.is_upscaler:
            return own
        # the small image's side (side / scale) must be a whole multiple of the base's factor
        base = self.base.factor if self.base is not None else 1
        return math.lcm(own, (self.scale * base).numerator)

    @property
    def is_upscaler(self) -> bool:
        return bool(self.index.get("low_res"))

    @property
    def scale(self) -> Fraction:
        """An upscaler's image side over its input's (64/3 from a 3 px base); 1 otherwise."""
        low = self.index.get("low_res")
        return Fraction(self.image_size, low) if low else Fraction(1)

    def low_size(self, height: int, width: int) -> tuple[int, int]:
        """The small image's (height, width) for an image of height x width (exact: see factor)."""
        return int(height / self.scale), int(width / self.scale)

    @property
    def image_channels(self) -> int:
        """Channels of the images this model draws (a latent model's autoencoder decodes them)."""
        if self.autoencoder is not None:
            return self.autoencoder.config.in_channels
        return self.unet.config.in_channels

    def base_runs(self, p: GenerationParams) -> bool:
        """Whether generating p runs the base stages (img2img starts from the init's own small
        version instead; inpainting has the base draw the masked part)."""
        return self.base is not None and not (p.init and not p.mask)

    def base_steps(self, p: GenerationParams) -> int:
        """Sampler steps a cascade's base stages run for p before this model's own (0: none)."""
        return self.base.total_steps(self.base_params(p)) if self.base_runs(p) else 0

    def total_steps(self, p: GenerationParams) -> int:
        """Progress callbacks generating p makes: sampler steps over every stage that runs."""
        own = int(p.strength * p.steps) * p.resample if p.init else p.steps
        return own + self.base_steps(p)

    @property
    def image_size(self) -> int:
        return int(self.index.get("image_size", 64))

    def encode_text(self, prompts: list[str]) -> dict:
        """{context (B, L, D), context_mask (B, L)}; each distinct prompt is encoded once,
        weighted and chunked by t2i.prompts.encode_prompt."""
        for p in dict.fromkeys(prompts):
            if p not in self._text_cache:
                self._text_cache[p] = encode_prompt(self.text_encoder, p)
        length = max(self._text_cache[p][0].shape[0] for p in prompts)
        ctx = torch.zeros(len(prompts), length, self._text_cache[prompts[0]][0].shape[-1])
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            c, m = self._text_cache[p]
            ctx[i, : len(c)], mask[i, : len(m)] = c, m
        return {"context": ctx, "context_mask": mask}

    def sigmas(self, steps: int, sampler: str | None = None) -> torch.Tensor:
        """The (steps + 1,) noise levels of a run; the index may name a schedule per model."""
        return sigmas_for(self.denoiser, steps, self.index.get("sigma_schedule", "auto"))

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

    def guided(self, p: GenerationParams):
        """The denoiser with classifier-free guidance towards p.prompt, away from p.negative."""
        if p.guidance == 1.0:
            return self.denoiser
        uncond = self.encode_text([p.negative])
        return CFGDenoiser(self.denoiser, uncond, p.guidance, interval=p.guidance_interval)

    def noise(
        self, p: GenerationParams, n: int, seeds: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Generator]]:
        """(n, C, h, w) unit noise and the per-image generators, seeded p.seed + i (or seeds[i])."""
        shape = (self.unet.config.in_channels, *self.latent_size(p.height, p.width))
        seeds = [p.seed + i for i in range(n)] if seeds is None else seeds
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens

    # ------------------------------------------------------------ generation

    def params(self, prompt: str, **kw) -> GenerationParams:
        """Complete a request with the model's defaults (for values left None) and check it."""

        def pick(key: str, default):
            return default if kw.get(key) is None else kw[key]

        init, mask = pick("init", ""), pick("mask", "")
        size = kw.get("size") or (read_image_size(init) if init else None)
        width, height = size or (self.image_size, self.image_size)
        p = GenerationParams(
            prompt=prompt,
            negative=pick("negative", ""),
            model=self.name,
            sampler=pick("sampler", self.defaults["name"]),
            steps=pick("steps", self.defaults["steps"]),
            guidance=pick("guidance", self.defaults["guidance_scale"]),
            seed=pick("seed", 0),
            width=width,
            height=height,
            init=str(init),
            mask=str(mask),
            strength=pick("strength", 1.0 if mask or not init else 0.75),
            resample=pick("resample", 1),
            guidance_interval=self._interval(kw.get("guidance_interval")),
        )
        self.check(p)
        return p

    def _interval(self, value) -> list[float] | None:
        """None: the model's default interval; "all": guide every step; else (lo, hi)."""
        if value is None:
            value = self.defaults.get("guidance_interval")
        elif isinstance(value, str):
            if value != "all":
                raise ValueError(f"guidance interval must be 'all' or (lo, hi), got {value!r}")
            return None
        interval = check_interval(value)
        return None if interval is None else list(interval)

    def check(self, p: GenerationParams) -> None:
        if not isinstance(p.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(p.prompt).__name__}")
        for text in (p.prompt, p.negative):  # brackets balance: fail before any work
            parse_prompt(text)
        self.check_sampler(p.sampler)
        _check_int("steps", p.steps, 1, 1000)
        _check_int("seed", p.seed, 0, 2**63 - 1)
        if isinstance(p.guidance, bool) or not isinstance(p.guidance, (int, float)):
            raise ValueError(f"guidance must be a number in [0, 100], got {p.guidance!r}")
        if not 0 <= p.guidance <= 100:
            raise ValueError(f"guidance must be in [0, 100], got {p.guidance}")
        for side in (p.width, p.height):
            _check_int("image size", side, self.factor, MAX_SIDE)
            if side % self.factor:
                raise ValueError(
                    f"image size {p.width}x{p.height}: each side must be a multiple of "
                    f"{self.factor} for this model"
                )
        self.latent_size(p.height, p.width)  # the autoencoder's own check of the sides
        check_strength(p.strength)
        _check_int("resample", p.resample, 1, 20)
        check_interval(p.guidance_interval)
        if p.mask and not p.init:
            raise ValueError("a mask needs the image it applies to: give init (--init) as well")

    @property
    def samplers(self) -> list[str]:
        """The sampler names this model takes."""
        return sorted(SAMPLERS)

    def check_sampler(self, name: str) -> None:
        get_sampler(name)

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
        """(n, C, H, W) images in [-1, 1]; image i from the generator seeded p.seed + i.

        With p.init: img2img from p.strength, and with p.mask inpainting (t2i/editing.py).
        `noise` (n, C, h, w) and `cond` (text states of batch n) replace the seeded noise and the
        prompt's states (interpolation passes its own); `seeds` (n,) replace p.seed + i.
        An upscaler draws from `low` (n, C, H/scale, W/scale), or from its base's images of p.
        """
        self.check(p)
        n = _check_int("n", n, 1, MAX_IMAGES)
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} images")
        cond = cond if cond is not None else self.encode_text([p.prompt] * n)
        if self.is_upscaler:
            if low is None:
                low = self.base_images([p] * n, callback, seeds or [p.seed + i for i in range(n)])
            grid = self.latent_size(p.height, p.width)
            cond = {**cond, "x_cond": enlarge(self.keep_init(low, p), grid)}
            callback = _after(callback, self.base_steps(p))
        seeded, gens = self.noise(p, n, seeds)
        noise = seeded if noise is None else noise
        model, sigmas = self.guided(p), self.sigmas(p.steps, p.sampler)
        if not p.init:
            x = noise * sigmas[0]
        else:
            image = load_image(p.init, (p.width, p.height), self.image_channels)
            x_init = self.encode_image(image).expand_as(noise)
            if p.mask:
                mask = load_mask(p.mask, (p.width, p.height))
                mask = mask_to_latent(mask, self.latent_size(p.height, p.width))
                model = InpaintDenoiser(model, x_init, mask, noise)
            sigmas = strength_sigmas(sigmas, p.strength)
            if len(sigmas) == 1:  # strength 0: nothing to sample
                return self.decode(x_init)
            # strength 1 starts from pure noise, exactly as plain generation does
            x = noise * sigmas[0] + (x_init if p.strength < 1 else 0)
        sampler = get_sampler(p.sampler)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            x0 = sample_with_jumps(sampler, model, x, sigmas, cond, callback, gens, p.resample)
        return self.decode(x0.float())

    def generate_items(
        self, items: list[GenerationParams], callback: Callable | None = None
    ) -> torch.Tensor:
        """(len(items), C, H, W): image i from items[i].prompt and items[i].seed in one sampler
        call; every other setting is taken from items[0] (callers batch only compatible items)."""
        if not items:
            raise ValueError("generate_items needs at least one item")
        cond = self.encode_text([p.prompt for p in items])
        seeds = [p.seed for p in items]
        low = self.base_images(items, callback, seeds) if self.is_upscaler else None
        return self.generate(items[0], len(items), callback, cond=cond, seeds=seeds, low=low)

    def base_images(
        self, items: list[GenerationParams], callback: Callable | None, seeds: list[int]
    ) -> torch.Tensor:
        """A cascade's first stage: the base model's images of the items, at its size."""
        if self.base is None:
            raise ValueError(
                f"model {self.name!r} is an upscaler from {self.index['low_res']} px without a "
                "base model: give its small images (low=) or a cascade folder with 'base'"
            )
        if not self.base_runs(items[0]):
            # img2img: nothing to draw, keep_init puts the init's own small version here
            h, w = self.low_size(items[0].height, items[0].width)
            return torch.zeros(len(items), self.image_channels, h, w)
        small = [replace(self.base_params(p), seed=s) for p, s in zip(items, seeds)]
        return self.base.generate_items(small, callback)

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

    def base_params(self, p: GenerationParams) -> GenerationParams:
        """The base stage's part of a cascade request: p's prompt, negative and seed at the base's
        size, with the base's own sampler, steps, guidance and interval (edits: keep_init)."""
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
            guidance_interval=base._interval(None),
            init="",  # an edit's init and mask are applied to the base's image (keep_init)
            mask="",
            strength=1.0,
            resample=1,
        )

    @torch.no_grad()
    def invert(
        self, image: torch.Tensor, prompt: str = "", steps: int | None = None
    ) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, C, h, w) unit noise that sampler "ddim" (eta 0),
        guidance 1, the same prompt and steps map back to the images (DDIM inversion)."""
        steps = _check_int("steps", steps or self.defaults["steps"], 1, 1000)
        cond = self.encode_text([prompt] * image.shape[0])
        sigmas = self.sigmas(steps)
        return ddim_invert(self.denoiser, self.encode_image(image), sigmas, cond) / sigmas[0]

    def __call__(
        self,
        prompt: str,
        negative: str = "",
        n: int = 1,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        seed: int = 0,
        size: tuple[int, int] | None = None,
        callback: Callable | None = None,
        init: str | Path | None = None,
        mask: str | Path | None = None,
        strength: float | None = None,
        resample: int | None = None,
        guidance_interval: tuple[float, float] | str | None = None,
    ) -> list[Image.Image]:
        """Generate n PIL images; each carries its GenerationParams in `image.info["t2i"]`.

        init: image file for img2img (strength in [0, 1], default 0.75) or, with mask (white =
        repaint, same size), inpainting (strength default 1, resample = RePaint passes).
        guidance_interval: (lo, hi) guides only where lo < sigma <= hi, "all" every step, None
        the model's default."""
        p = self.params(
            prompt,
            negative=negative,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            seed=seed,
            size=size,
            init=init,
            mask=mask,
            strength=strength,
            resample=resample,
            guidance_interval=guidance_interval,
        )
        images = to_pil(self.generate(p, n, callback))
        for i, img in enumerate(images):
            img.info[PNG_KEY] = GenerationParams(**{**asdict(p), "seed": p.seed + i}).to_json()
        return images


def _after(callback: Callable | None, done: int) -> Callable | None:
    """The callback of a later stage: its step numbers continue the earlier stages' (`done`)."""
    if callback is None or done == 0:
        return callback
    return lambda info: callback({**info, "i": info["i"] + done})


def load(model: str | Path = "fashion", bf16: bool = False) -> Pipeline:
    """Load a bundled model by name, or a model folder written by `t2i train`.

    bf16: run the networks under bf16 autocast (BENCHMARKS.md "Generation time": faster on CPUs
    with AVX512-BF16 or AMX, images within ~1 level of 255 of fp32; slow where bf16 is emulated)."""
    return Pipeline.from_pretrained(model, bf16=bf16)
