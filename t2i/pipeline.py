"""The one place where components meet: prompt -> text states, seed -> noise, sampler -> x0 ->
(autoencoder) -> image.

    pipe = t2i.load("shapes")          # a bundled model name, or a model folder path
    images = pipe("a red circle above a blue square", steps=20, guidance=4.0, seed=1)

Image i of a call starts from `torch.Generator().manual_seed(seed + i)`, so image i of a batch is
the image made alone with seed + i. The pieces stay reachable for people who write their own loop:
`pipe.text_encoder`, `pipe.denoiser` (a t2i.denoisers.Denoiser around `pipe.unet`),
`pipe.autoencoder` (None for pixel models), `pipe.sigmas(steps)` and `t2i.samplers`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from t2i.checkpoint import INDEX_NAME, load_model_folder
from t2i.denoisers import make_denoiser
from t2i.guidance import CFGDenoiser
from t2i.samplers import get_sampler, sigmas_for
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


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


class Pipeline:
    """A loaded model folder: text encoder, denoiser (UNet inside), optional autoencoder."""

    def __init__(self, components: dict, index: dict, name: str = ""):
        self.unet = components["unet"]
        self.text_encoder = components["text_encoder"]
        self.autoencoder = components.get("autoencoder")
        self.index, self.name = index, name
        schedule = index.get("schedule")
        schedule = DiscreteSchedule.from_dict(schedule) if schedule else None
        self.denoiser = make_denoiser(self.unet, index["parameterisation"], schedule).eval()
        self.defaults = {"name": "ddim", "steps": 20, "guidance_scale": 3.0}
        self.defaults.update(index.get("sampler", {}))
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_pretrained(cls, model: str | Path) -> Pipeline:
        folder = resolve_model(model)
        components, index = load_model_folder(folder)
        return cls(components, index, name=str(model))

    # ------------------------------------------------------------ pieces

    @property
    def factor(self) -> int:
        """Image sides must be multiples of this: UNet downsamplings x autoencoder factor."""
        unet = 2 ** (len(self.unet.config.channels) - 1) * self.unet.config.patch_size
        return unet * (self.autoencoder.config.factor if self.autoencoder is not None else 1)

    @property
    def image_size(self) -> int:
        return int(self.index.get("image_size", 64))

    def encode_text(self, prompts: list[str]) -> dict:
        """{context (B, L, D), context_mask (B, L)}; each distinct prompt is encoded once."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if new:
            emb = self.text_encoder.encode(new)
            for i, p in enumerate(new):
                n = int(emb.mask[i].sum())
                self._text_cache[p] = (emb.context[i, :n], emb.mask[i, :n])
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

    # ------------------------------------------------------------ generation

    def params(self, prompt: str, **kw) -> GenerationParams:
        """Complete a request with the model's defaults (for values left None) and check it."""

        def pick(key: str, default):
            return default if kw.get(key) is None else kw[key]

        width, height = pick("size", (self.image_size, self.image_size))
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
        )
        self.check(p)
        return p

    def check(self, p: GenerationParams) -> None:
        if not isinstance(p.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(p.prompt).__name__}")
        get_sampler(p.sampler)
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

    @torch.no_grad()
    def generate(
        self, p: GenerationParams, n: int = 1, callback: Callable | None = None
    ) -> torch.Tensor:
        """(n, C, H, W) images in [-1, 1]; image i from the generator seeded p.seed + i."""
        self.check(p)
        n = _check_int("n", n, 1, MAX_IMAGES)
        cond = self.encode_text([p.prompt] * n)
        model = self.denoiser
        if p.guidance != 1.0:
            model = CFGDenoiser(self.denoiser, self.encode_text([p.negative]), p.guidance)
        f = self.autoencoder.config.factor if self.autoencoder is not None else 1
        shape = (self.unet.config.in_channels, p.height // f, p.width // f)
        gens = [torch.Generator().manual_seed(p.seed + i) for i in range(n)]
        noise = torch.stack([torch.randn(shape, generator=g) for g in gens])
        sigmas = self.sigmas(p.steps, p.sampler)
        x0 = get_sampler(p.sampler)(model, noise * sigmas[0], sigmas, cond, callback, gens)
        if self.autoencoder is not None:
            x0 = self.autoencoder.from_latent(x0)
        return x0.clamp(-1, 1)

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
    ) -> list[Image.Image]:
        """Generate n PIL images; each carries its GenerationParams in `image.info["t2i"]`."""
        p = self.params(
            prompt,
            negative=negative,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            seed=seed,
            size=size,
        )
        images = to_pil(self.generate(p, n, callback))
        for i, img in enumerate(images):
            img.info[PNG_KEY] = GenerationParams(**{**asdict(p), "seed": p.seed + i}).to_json()
        return images


def load(model: str | Path = "shapes") -> Pipeline:
    """Load a bundled model by name, or a model folder written by `t2i train`."""
    return Pipeline.from_pretrained(model)
