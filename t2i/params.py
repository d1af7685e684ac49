"""A generation request: its parameters, the checks every model family shares, and the PNG text
chunk that carries them so an image reproduces itself.

`GenerationParams` is what decides an image. A model completes a request with its defaults
(`model.params(prompt, ...)`) and checks what only it knows (samplers, sizes, editing); the
checks here are the family-independent ones.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from t2i.guidance import MAX_CADS_NOISE, check_interval
from t2i.images import MAX_SIDE, open_checked
from t2i.prompts import parse_prompt

PNG_KEY = "t2i"  # the PNG text chunk that holds a GenerationParams as JSON
MAX_IMAGES = 64  # per call: more is a typo or a job for a loop
MAX_SEED = 2**63 - 1
MAX_LORAS = 8  # LoRAs applied at once
MAX_EMBEDDINGS = 32  # learnt words one image's parameters name
MAX_MASK_BLUR = 64  # pixels
MAX_LORA_SCALE = 10.0
MAX_CONTROLS = 4  # spatial controls applied at once
MAX_CONTROL_SCALE = 4.0  # a control's residuals times this (1: as trained)
MAX_GUIDE_SCALE = 1000.0  # a guide's gradient is sigma^2 * grad log p: scales of 1-100 are usual
LORA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a file name without .safetensors
MAX_PARAMS_CHARS = 100_000  # a PNG's parameter text: prompts, paths and numbers fit in far less


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
    mask_blur: int = 0  # inpainting: pixels of Gaussian feathering where the result meets the init
    guidance_interval: list[float] | None = None  # [lo, hi]: guide only where lo < sigma <= hi
    # LoRAs applied: ((name, scale, sha256 of the file, first 12 hex digits), ...)
    loras: tuple[tuple[str, float, str], ...] = ()
    # learnt words the prompts use: ((word, sha256 of its embedding file, 12 hex digits), ...)
    embeddings: tuple[tuple[str, str], ...] = ()
    # guides (t2i/guides): ((name, scale, sha256 of the weights, first 12 hex digits), ...)
    guides: tuple[tuple[str, float, str], ...] = ()
    # spatial controls (t2i/adapters/control.py): ((name, condition image, scale, start, end,
    # sha256 of the control's weights, 12 hex digits), ...); start and end are fractions of the
    # steps; guess_mode: the controls reach the prompt's half of guidance only
    controls: tuple[tuple[str, str, float, float, float, str], ...] = ()
    guess_mode: bool = False
    # an image whose CLIP embedding the model draws from instead of the prompt's prior (unCLIP's
    # variations; "" = none)
    image_prompt: str = ""
    # condition-annealed sampling (CADS): the prompt's states noised by this much (in units of
    # their own std) where sigma >= cads_interval[1], fading to none at cads_interval[0]; 0: off
    cads_noise: float = 0.0
    cads_interval: list[float] | None = None  # [lo, hi] sigmas; None: the model's (t = 0.6T, 0.9T)

    def to_json(self) -> str:
        data = asdict(self)
        keys = ("loras", "embeddings", "mask_blur", "guides", "controls", "guess_mode")
        for key in (*keys, "image_prompt", "cads_noise", "cads_interval"):
            # images without them keep the parameters they always had
            if not data[key]:
                del data[key]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str, source: str = "params") -> GenerationParams:
        """Parameters from JSON that came from outside (a PNG, a file): its size, nesting and
        every field's type are checked; ValueError names `source` and the field."""
        if len(text) > MAX_PARAMS_CHARS:
            raise ValueError(
                f"{source}: parameters are {len(text)} characters; at most {MAX_PARAMS_CHARS}"
            )
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: deep nesting
            raise ValueError(f"{source}: parameters are not valid JSON: {err}") from err
        allowed = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or "prompt" not in data or set(data) - allowed:
            raise ValueError(f"{source}: expected a JSON object with keys from {sorted(allowed)}")
        for name, value in data.items():
            _check_type(name, value, source)
        for key in ("loras", "embeddings", "guides", "controls"):
            if key in data:
                data[key] = tuple(tuple(entry) for entry in data[key])
        return cls(**data)


_STRINGS = {"prompt", "negative", "model", "sampler", "init", "mask", "image_prompt"}
_INTS = {"steps", "seed", "width", "height", "resample", "mask_blur"}
_NUMBERS = {"guidance", "strength", "cads_noise"}


def _check_type(name: str, value, source: str) -> None:
    """One field of outside parameters has its dataclass type (numbers finite); ranges are the
    model's checks, made later like any request's."""
    if name in _STRINGS:
        ok = isinstance(value, str)
    elif name in _INTS:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif name in _NUMBERS:
        ok = _finite(value)
    elif name in ("loras", "guides"):
        ok = (
            isinstance(value, list)
            and len(value) <= MAX_LORAS
            and all(_lora_entry(v) for v in value)
        )
    elif name == "controls":
        ok = isinstance(value, list) and len(value) <= MAX_CONTROLS
        ok = ok and all(_control_entry(v) for v in value)
    elif name == "guess_mode":
        ok = isinstance(value, bool)
    elif name == "embeddings":
        ok = (
            isinstance(value, list)
            and len(value) <= MAX_EMBEDDINGS
            and all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                for v in value
            )
        )
    else:  # guidance_interval, cads_interval: null or [lo, hi]
        ok = value is None or (
            isinstance(value, list) and len(value) == 2 and all(_finite(v) for v in value)
        )
    if not ok:
        want = {
            "guidance_interval": "null or [lo, hi]",
            "cads_interval": "null or [lo, hi]",
            "loras": f"at most {MAX_LORAS} [name, scale, hash] lists",
            "guides": f"at most {MAX_LORAS} [name, scale, hash] lists",
            "embeddings": f"at most {MAX_EMBEDDINGS} [word, hash] lists",
            "controls": f"at most {MAX_CONTROLS} [name, image, scale, start, end, hash] lists",
            "guess_mode": "true or false",
        }.get(name, _kind(name))
        raise ValueError(f"{source}: {name} must be {want}, got {brief(value)}")


def _control_entry(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 6
        and all(isinstance(value[i], str) for i in (0, 1, 5))
        and all(_finite(value[i]) for i in (2, 3, 4))
    )


def _lora_entry(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and _finite(value[1])
        and isinstance(value[2], str)
    )


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind(name: str) -> str:
    return "a string" if name in _STRINGS else "an integer" if name in _INTS else "a finite number"


def brief(value, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters: an error names the bad value without echoing a
    4,000-digit number or a megabyte string back to whoever sent it."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # repr may refuse it outright
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def check_int(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high]; a bool, float or string is a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {brief(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {brief(value)}")
    return int(value)


def check_sides(p: GenerationParams, factor: int) -> None:
    """Each side of p's image a multiple of `factor`, from `factor` to MAX_SIDE pixels."""
    for side in (p.width, p.height):
        check_int("image size", side, factor, MAX_SIDE)
        if side % factor:
            raise ValueError(
                f"image size {p.width}x{p.height}: each side must be a multiple of "
                f"{factor} for this model"
            )


def check_seeds(p: GenerationParams, n: int, seeds: list[int] | None) -> list[int]:
    """The n seeds of a call (p.seed + i, or `seeds`), each a valid seed."""
    n = check_int("n", n, 1, MAX_IMAGES)
    seeds = [p.seed + i for i in range(n)] if seeds is None else list(seeds)
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images")
    for seed in seeds:
        check_int("seed", seed, 0, MAX_SEED)
    return seeds


def check_common(p: GenerationParams) -> None:
    """The checks of a request that hold for every model family."""
    if not isinstance(p.prompt, str):
        raise ValueError(f"prompt must be a string, got {type(p.prompt).__name__}")
    for text in (p.prompt, p.negative):  # brackets balance: fail before any work
        parse_prompt(text)
    check_int("seed", p.seed, 0, MAX_SEED)
    if isinstance(p.guidance, bool) or not isinstance(p.guidance, (int, float)):
        raise ValueError(f"guidance must be a number in [0, 100], got {brief(p.guidance)}")
    if not 0 <= p.guidance <= 100:
        raise ValueError(f"guidance must be in [0, 100], got {p.guidance}")
    check_interval(p.guidance_interval)
    check_cads(p.cads_noise, p.cads_interval)
    check_loras(p.loras)
    check_guides(p.guides)
    check_controls(p.controls)
    if p.mask and not p.init:
        raise ValueError("a mask needs the image it applies to: give init (--init) as well")
    check_int("mask_blur", p.mask_blur, 0, MAX_MASK_BLUR)
    if p.mask_blur and not p.mask:
        raise ValueError("mask_blur softens an inpainting mask's edge: give a mask as well")


def check_cads(noise, interval) -> None:
    """CADS settings: a noise scale in [0, MAX_CADS_NOISE] and an interval of sigmas 0 < lo < hi
    (or None: the model's)."""
    if not _finite(noise) or not 0 <= noise <= MAX_CADS_NOISE:
        raise ValueError(
            f"cads_noise must be a number in [0, {MAX_CADS_NOISE:g}] (0: off), got {brief(noise)}"
        )
    if interval is None:
        return
    ok = isinstance(interval, (tuple, list)) and len(interval) == 2 and all(map(_finite, interval))
    if not ok or not 0 < interval[0] < interval[1]:
        raise ValueError(
            f"cads_interval must be two sigmas lo,hi with 0 < lo < hi (a ramp in log sigma), "
            f"got {brief(interval)}"
        )


def noise_temperature(index: dict) -> float:
    """model_index.json "sampler": {"temperature"}: the scale of a family's noise draws
    (AlignDRAW's prior, a GAN's z); 1 draws them as trained, 0 takes their means."""
    value = float(index.get("sampler", {}).get("temperature", 1.0))
    if not 0.0 <= value <= 2.0:
        raise ValueError(f"sampler.temperature {value} must be in [0, 2]")
    return value


def check_network_fits(name: str, image_size: int, text_dim: int, config, what: str) -> None:
    """A one-size family's folder: its image_size and text width are its network's
    (`config.image_size`, `config.context_dim`)."""
    if image_size != config.image_size:
        raise ValueError(
            f"model {name!r}: image_size {image_size} but the {what} draws "
            f"{config.image_size}x{config.image_size}"
        )
    if text_dim != config.context_dim:
        raise ValueError(
            f"model {name!r}: the text encoder's states are {text_dim} wide; the {what} reads "
            f"{config.context_dim}"
        )


def check_no_noise_levels(p: GenerationParams, family: str, size: int) -> None:
    """What a family without a diffusion model's noise levels refuses (autoregressive,
    AlignDRAW): img2img and inpainting, a guidance interval, any size but its own."""
    if p.init or p.mask:
        raise ValueError("img2img and inpainting (init, mask) need a diffusion model")
    if p.guidance_interval is not None:
        raise ValueError("a guidance interval needs a diffusion model's noise levels")
    if (p.width, p.height) != (size, size):
        raise ValueError(
            f"image size {p.width}x{p.height}: this {family} model draws {size}x{size} only"
        )


def check_lora_name(name) -> str:
    if not isinstance(name, str) or not LORA_NAME.fullmatch(name):
        raise ValueError(
            f"LoRA name {brief(name)} must be 1-64 letters, digits, '_', '.' or '-' (its file "
            "name without .safetensors)"
        )
    return name


def check_lora_scale(name: str, scale) -> float:
    if not _finite(scale) or not abs(scale) <= MAX_LORA_SCALE:
        raise ValueError(
            f"LoRA {name!r} scale must be a number in [-{MAX_LORA_SCALE:g}, "
            f"{MAX_LORA_SCALE:g}], got {brief(scale)}"
        )
    return float(scale)


def check_loras(loras) -> None:
    if len(loras) > MAX_LORAS:
        raise ValueError(f"{len(loras)} LoRAs; at most {MAX_LORAS} apply at once")
    seen = set()
    for name, scale, _ in loras:
        check_lora_scale(check_lora_name(name), scale)
        if name in seen:
            raise ValueError(f"LoRA {name!r} is given twice; give it once with one scale")
        seen.add(name)


def check_guides(guides) -> None:
    if len(guides) > MAX_LORAS:
        raise ValueError(f"{len(guides)} guides; at most {MAX_LORAS} apply at once")
    seen = set()
    for name, scale, _ in guides:
        if not isinstance(name, str) or not LORA_NAME.fullmatch(name):
            raise ValueError(
                f"guide name {brief(name)} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if not _finite(scale) or not abs(scale) <= MAX_GUIDE_SCALE:
            raise ValueError(
                f"guide {name!r} scale must be a number in [-{MAX_GUIDE_SCALE:g}, "
                f"{MAX_GUIDE_SCALE:g}], got {brief(scale)}"
            )
        if name in seen:
            raise ValueError(f"guide {name!r} is given twice; give it once with one scale")
        seen.add(name)


def check_controls(controls) -> None:
    """(name, image, scale, start, end, hash) entries: names, scales and step ranges."""
    if len(controls) > MAX_CONTROLS:
        raise ValueError(f"{len(controls)} controls; at most {MAX_CONTROLS} apply at once")
    for name, _, scale, start, end, _ in controls:
        if not isinstance(name, str) or not LORA_NAME.fullmatch(name):
            raise ValueError(
                f"control name {brief(name)} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if not _finite(scale) or not 0 <= scale <= MAX_CONTROL_SCALE:
            raise ValueError(
                f"control {name!r} scale must be a number in [0, {MAX_CONTROL_SCALE:g}], "
                f"got {brief(scale)}"
            )
        if not (_finite(start) and _finite(end) and 0 <= start < end <= 1):
            raise ValueError(
                f"control {name!r} start and end are fractions of the steps with "
                f"0 <= start < end <= 1, got start {brief(start)}, end {brief(end)}"
            )


def resolve_interval(value, default) -> list[float] | None:
    """A request's guidance interval: None takes the model's `default`, "all" guides every
    step, else (lo, hi)."""
    if value is None:
        value = default
    elif isinstance(value, str):
        if value != "all":
            raise ValueError(f"guidance interval must be 'all' or (lo, hi), got {brief(value)}")
        return None
    interval = check_interval(value)
    return None if interval is None else list(interval)


def save_png(
    image: Image.Image, path: str | Path, params: GenerationParams, model_hash: str = ""
) -> Path:
    """Write a PNG carrying its generation parameters in two text chunks: t2i's JSON (every
    field exactly) and A1111's "parameters" text, which other tools read (t2i/a1111.py)."""
    path = Path(path)
    image.save(path, format="PNG", pnginfo=png_info(params, model_hash))
    return path


def png_info(params: GenerationParams, model_hash: str = "") -> PngInfo:
    """The text chunks of an image's parameters: t2i's JSON and A1111's "parameters" text."""
    from t2i import __version__
    from t2i.a1111 import PNG_KEY as A1111_KEY
    from t2i.a1111 import to_parameters

    info = PngInfo()
    info.add_text(PNG_KEY, params.to_json())
    info.add_text(A1111_KEY, to_parameters(params, model_hash, f"t2i {__version__}"))
    return info


def read_png_params(path: str | Path) -> GenerationParams:
    """The GenerationParams stored in a PNG written by `save_png`; read from the chunks before
    the image data (where `save_png` puts them), so no pixel is decoded."""
    text, _ = _png_texts(path)
    if not isinstance(text, str):
        raise ValueError(f"{path} carries no t2i parameters (no {PNG_KEY!r} PNG text chunk)")
    return GenerationParams.from_json(text, str(path))


def read_png_request(path: str | Path | bytes, source: str = "") -> dict:
    """A PNG's parameters (a file, or its bytes) as keyword arguments of Generator.params, plus
    "prompt" and "model": from t2i's JSON chunk, or else from A1111's "parameters" text (an
    image made elsewhere: the fields t2i has, each checked when the request is)."""
    from t2i.a1111 import parse_parameters, request_from_parameters

    source = source or ("the image" if isinstance(path, bytes) else str(path))
    text, a1111 = _png_texts(path, source)
    if not isinstance(text, str) and isinstance(a1111, str):
        return request_from_parameters(parse_parameters(a1111, source), source)
    if not isinstance(text, str):
        raise ValueError(f"{source} carries no parameters (no t2i or A1111 PNG text chunk)")
    kw = asdict(GenerationParams.from_json(text, source))
    kw["size"] = (kw.pop("width"), kw.pop("height"))
    if kw["guidance_interval"] is None:  # the image was guided at every step
        kw["guidance_interval"] = "all"
    return kw


def _png_texts(path: str | Path | bytes, source: str = "") -> tuple:
    """(t2i's JSON chunk, A1111's parameters chunk) of a PNG file or its bytes, either None
    when absent."""
    import io

    from t2i.a1111 import PNG_KEY as A1111_KEY

    if isinstance(path, bytes):
        data, source = io.BytesIO(path), source or "the image"
    else:
        data = path = Path(path)
        source = source or f"--from image {str(path)!r}"
        if not path.is_file():
            raise FileNotFoundError(f"--from image {str(path)!r} does not exist")
    try:
        with open_checked(data, source) as img:
            return img.info.get(PNG_KEY), img.info.get(A1111_KEY)
    except ValueError as err:  # PIL's own limits (a zTXt bomb) name no file
        raise err if source in str(err) else ValueError(f"{source}: {err}") from err
