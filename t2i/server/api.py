"""The JSON API's request checking and its OpenAPI schema, kept apart from the HTTP plumbing.

Every bad request becomes an `ApiError` with a 4xx status and a message naming the bad value and
what is allowed; the pipeline's own checks (`Generator.params`) raise ValueError the same way.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from t2i.a1111 import sampler_names
from t2i.images import load_image, load_mask, open_checked
from t2i.params import (
    MAX_CONTROLS,
    MAX_LORAS,
    MAX_MASK_BLUR,
    MAX_SEED,
    GenerationParams,
    brief,
    check_seeds,
)
from t2i.protocol import Generator
from t2i.samplers import SAMPLERS


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass
class Limits:
    """Per-request limits (CLI: --max-steps, --max-n, ...); a request above one gets a 400."""

    max_steps: int = 100
    max_n: int = 8  # images per request
    max_side: int = 512  # pixels
    max_prompt: int = 1000  # characters, prompt and negative each
    max_body: int = 8 * 2**20  # bytes of JSON (init and mask images travel inside, base64)
    max_resample: int = 4  # RePaint passes per stretch: each multiplies the cost


# field -> (allowed JSON types, meaning); seed also takes "random" or null
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": ((str,), "what to draw"),
    "negative": ((str,), "what to steer away from"),
    "model": ((str,), "a model this server loaded (GET /api/models)"),
    "sampler": ((str,), f"one of {sorted(SAMPLERS)}"),
    "steps": ((int,), "sampling steps"),
    "guidance": ((int, float), "classifier-free guidance scale"),
    "seed": ((int, str), 'integer, or "random"; image i uses seed + i'),
    "n": ((int,), "number of images"),
    "width": ((int,), "pixels, a multiple of the model's factor"),
    "height": ((int,), "pixels, a multiple of the model's factor"),
    "format": ((str,), '"json" (base64 PNGs, default) or "png" (the PNG itself, n = 1)'),
    "init": ((str,), "base64 PNG/JPEG to start from (img2img; with mask, inpainting)"),
    "mask": ((str,), "base64 image of init's size: white = repaint, black = keep"),
    "strength": ((int, float), "img2img: fraction of the steps run from the noised init, [0, 1]"),
    "resample": ((int,), "inpainting: RePaint resampling passes, [1, max_resample]"),
    "mask_blur": ((int,), "inpainting: pixels of feathering at the mask's edge, [0, 64]"),
    "guidance_interval": ((list, str), '[lo, hi]: guide only where lo < sigma <= hi, or "all"'),
    "cads_noise": (
        (int, float),
        "condition-annealed sampling: the prompt's states noised by this much (their own std) "
        "at high sigma, [0, 10]; 0 off",
    ),
    "cads_interval": ((list,), "[lo, hi] sigmas: CADS noise is full at hi and gone at lo"),
    "loras": ((list,), "[[name, scale], ...]: LoRAs of the model (GET /api/models lists them)"),
    "controls": (
        (list,),
        f"at most {MAX_CONTROLS} objects {{name, image, scale, start, end}}: spatial controls of "
        "the model (GET /api/models lists them), image a base64 grey map of the image's size "
        "(white lines or shapes on black); scale [0, 4] (1), start and end fractions of the "
        "steps (0, 1)",
    ),
    "guess_mode": ((bool,), "true: the controls reach the prompt's half of guidance only"),
    "image_prompt": (
        (str,),
        "base64 PNG/JPEG whose CLIP embedding an unCLIP model draws from (variations; the "
        "prompt may be empty)",
    ),
    "guides": (
        (list,),
        "[[name, scale], ...]: classifier or CLIP guides of the model (GET /api/models lists "
        "them); with guidance 0 they steer the unconditional model",
    ),
}
FORMATS = ("json", "png")


@dataclass
class Request:
    model: str
    params: GenerationParams
    n: int
    format: str
    uploads: list[Path] = field(default_factory=list)  # files this request wrote; remove after


def body_too_large(n_bytes: int, limits: Limits) -> str:
    return f"body of {n_bytes} bytes exceeds the limit max_body={limits.max_body}"


def read_json(body: bytes, limits: Limits) -> dict:
    if not body.strip():
        raise ApiError(400, 'empty body: send a JSON object such as {"prompt": "a red circle"}')
    if len(body) > limits.max_body:
        raise ApiError(413, body_too_large(len(body), limits))
    if not body.lstrip().startswith(b"{"):  # refused before an 8 MB array is ever parsed
        raise ApiError(400, "body must be a JSON object ({...})")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ApiError(400, f"body is not UTF-8: {err}") from err
    except RecursionError as err:  # JSON nested too deep for the parser
        raise ApiError(400, "body is nested too deeply") from err
    except ValueError as err:  # not JSON, or an integer past Python's digit limit
        raise ApiError(400, f"body is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ApiError(400, f"body must be a JSON object, got {type(data).__name__}")
    return data


def _check_types(data: dict) -> None:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s) {unknown}; allowed: {sorted(FIELDS)}")
    if "prompt" not in data:
        raise ApiError(400, "missing field 'prompt'")
    for key, value in data.items():
        types, meaning = FIELDS[key]
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if key == "seed" and (value is None or value == "random"):
            continue
        if not ok or (key == "seed" and isinstance(value, str)):
            raise ApiError(400, f"{key} must be {meaning}, got {brief(value)}")


def top_seed(limits: Limits, batches: int = 1) -> int:
    """The largest seed a request may give: its last image's, seed + n - 1, is a seed too."""
    return MAX_SEED - (limits.max_n * batches - 1)


def _limit(name: str, value: int, high: int, low: int = 1) -> None:
    if not low <= value <= high:
        limit = f"server limit max_{name}"
        raise ApiError(400, f"{name}={brief(value)} is outside [{low}, {high}] ({limit})")


def _save_upload(text: str, name: str, folder: Path) -> Path:
    """A base64 image -> a PNG file in `folder` (the pipeline takes init and mask as files)."""
    try:
        raw = base64.b64decode(text.split(",", 1)[-1], validate=True)  # data: URLs too
        with open_checked(io.BytesIO(raw), name) as img:  # format and size from the header
            img.load()
            path = folder / f"{name}-{uuid.uuid4().hex}.png"
            img.save(path, format="PNG")
    except (binascii.Error, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ApiError(400, f"{name} must be a base64-encoded PNG or JPEG image: {err}") from err
    return path


def _uploads(data: dict, folder: Path | None) -> dict:
    """init / mask / image_prompt fields -> {name: path} of saved files (or nothing)."""
    if "mask" in data and "init" not in data:
        raise ApiError(400, "a mask needs the image it applies to: send init as well")
    if "mask_blur" in data and "mask" not in data:
        raise ApiError(400, "mask_blur applies to inpainting only: send init and mask")
    if "resample" in data and "mask" not in data:
        raise ApiError(400, "resample applies to inpainting only: send init and mask")
    images = {key: data[key] for key in ("init", "mask", "image_prompt") if key in data}
    images.update({f"control{i}": c["image"] for i, c in enumerate(_controls(data))})
    if not images:
        return {}
    if folder is None:
        raise ApiError(
            400, "this server takes no image uploads (init, mask, controls, image_prompt)"
        )
    saved: dict = {}
    try:
        for key, text in images.items():
            saved[key] = _save_upload(text, key, folder)
    except ApiError:  # the request owns its files: a bad mask takes the saved init with it
        for path in saved.values():
            path.unlink(missing_ok=True)
        raise
    return saved


def _controls(data: dict) -> list[dict]:
    """The request's controls, each an object with a name and an image (checked for shape
    here; names, scales, steps and the images themselves by the model)."""
    controls = data.get("controls") or []
    keys = {"name", "image", "scale", "start", "end"}
    if len(controls) > MAX_CONTROLS or not all(
        isinstance(c, dict)
        and set(c) <= keys
        and isinstance(c.get("name"), str)
        and isinstance(c.get("image"), str)
        for c in controls
    ):
        raise ApiError(
            400, f"controls must be at most {MAX_CONTROLS} objects with a name, an image "
            f"(base64) and optional scale, start, end; got {brief(controls)}"
        )  # fmt: skip
    if data.get("guess_mode") and not controls:
        raise ApiError(400, "guess_mode draws from the controls' conditions: send controls")
    return controls


def _control_entries(data: dict, files: dict) -> list[tuple] | None:
    """(name, saved image, scale, start, end) of each control of the request."""
    out = []
    for i, c in enumerate(_controls(data)):
        numbers = [c.get(k, d) for k, d in (("scale", 1.0), ("start", 0.0), ("end", 1.0))]
        out.append((c["name"], str(files[f"control{i}"]), *numbers))
    return out or None


def parse_generate(
    data: dict, pipes: dict[str, Generator], limits: Limits, upload_dir: Path | None = None
) -> Request:
    """A decoded JSON body -> a checked Request, or an ApiError naming what is wrong.

    Uploaded init / mask images are written to `upload_dir`; Request.uploads lists them."""
    _check_types(data)
    model = data.get("model", next(iter(pipes)))
    if model not in pipes:
        raise ApiError(400, f"unknown model {brief(model)}; this server loaded {sorted(pipes)}")
    fmt, n = data.get("format", "json"), data.get("n", 1)
    if fmt not in FORMATS:
        raise ApiError(400, f"unknown format {brief(fmt)}; choose from {list(FORMATS)}")
    if fmt == "png" and n != 1:
        raise ApiError(400, f'format "png" returns one image; got n={n} (use format "json")')
    _limit("n", n, limits.max_n)
    for key in ("prompt", "negative"):
        if len(data.get(key, "")) > limits.max_prompt:
            n_chars, limit = len(data[key]), limits.max_prompt
            raise ApiError(400, f"{key} has {n_chars} characters; server limit max_prompt={limit}")
    if isinstance(data.get("seed"), int) and data["seed"] > top_seed(limits):
        # one bound for every request, the schema's: seed + n - 1 is a seed too for any n
        raise ApiError(400, f"seed={brief(data['seed'])} is above {top_seed(limits)}")
    if "steps" in data:
        _limit("steps", data["steps"], limits.max_steps)
    for key in ("width", "height"):
        if key in data:
            _limit("side", data[key], limits.max_side)
    if "resample" in data:
        _limit("resample", data["resample"], limits.max_resample)
    files = _uploads(data, upload_dir)
    try:
        p = _params(pipes[model], data, files)
        check_seeds(p, n, None)  # seed + n - 1 too: a bad last seed fails here, not its batch
        _limit("side", max(p.width, p.height), limits.max_side)
        if pipes[model].supports.steps:  # else the model fixes them (a code count)
            _limit("steps", p.steps, limits.max_steps)
    except (ValueError, ApiError) as err:
        for path in files.values():
            path.unlink(missing_ok=True)
        raise err if isinstance(err, ApiError) else ApiError(400, str(err)) from err
    return Request(model, p, n, fmt, list(files.values()))


def _params(pipe: Generator, data: dict, files: dict) -> GenerationParams:
    """The model's params() with the request's values; init/mask sizes checked here, not
    mid-queue."""
    seed = data.get("seed")
    if seed is None or seed == "random":
        seed = secrets.randbelow(2**31)
    size = None
    if "width" in data or "height" in data or "init" not in files:
        size = (data.get("width", pipe.image_size), data.get("height", pipe.image_size))
    p = pipe.params(
        data["prompt"],
        negative=data.get("negative"),
        sampler=data.get("sampler"),
        steps=data.get("steps"),
        guidance=data.get("guidance"),
        seed=seed,
        size=size,
        init=files.get("init"),
        mask=files.get("mask"),
        strength=data.get("strength"),
        resample=data.get("resample"),
        mask_blur=data.get("mask_blur"),
        guidance_interval=data.get("guidance_interval"),
        cads_noise=data.get("cads_noise"),
        cads_interval=data.get("cads_interval"),
        loras=_loras(data.get("loras")),
        guides=_pairs("guides", data.get("guides")),
        controls=_control_entries(data, files),
        guess_mode=data.get("guess_mode"),
        image_prompt=files.get("image_prompt"),
    )
    if p.init:
        load_image(p.init, (p.width, p.height))
    if p.mask:
        load_mask(p.mask, (p.width, p.height))
    return p


def _loras(value) -> list[tuple] | None:
    return _pairs("loras", value)


def _pairs(key: str, value) -> list[tuple] | None:
    """[[name, scale], ...] as the request gave it; names and scales are checked by the model."""
    if value is None:
        return None
    if len(value) > MAX_LORAS or not all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) for v in value
    ):
        raise ApiError(400, f"{key} must be at most {MAX_LORAS} [name, scale] pairs")
    return [tuple(v) for v in value]


def openapi(
    limits: Limits,
    models: dict[str, int] | None = None,
    samplers: list[str] | None = None,
    more_paths: Callable | None = None,
) -> dict:
    """OpenAPI 3.1 description of the API (served at /api/openapi.json); `models`: the names a
    request may give (the server's) and the multiple each takes its sides in; `samplers`:
    those the models take; `more_paths`: another API's routes (A1111's), from the same
    helpers."""
    samplers = samplers or sorted(SAMPLERS)
    props = {k: {"type": _json_type(t), "description": d} for k, (t, d) in FIELDS.items()}
    if models:
        props["model"]["enum"] = list(models)
    props["sampler"]["enum"] = sampler_names(samplers)
    side = size_schema(limits, models)
    # the bounds the checks apply (_limit, check_seeds, check_common): seed + n - 1 is a seed too
    seed = {"type": "integer", "minimum": 0, "maximum": top_seed(limits)}
    props["seed"] = {"oneOf": [seed, {"const": "random"}, {"type": "null"}], "description": "seed"}
    for key, high in (("steps", limits.max_steps), ("n", limits.max_n), ("resample", 4)):
        props[key] |= {"minimum": 1, "maximum": high}
    props["resample"]["maximum"] = limits.max_resample
    props["mask_blur"] |= {"minimum": 0, "maximum": MAX_MASK_BLUR}
    for key in ("width", "height"):
        props[key] |= side
    for key in ("prompt", "negative"):
        props[key]["maxLength"] = limits.max_prompt
    props["guidance"] |= {"minimum": 0, "maximum": 100}
    props["strength"] |= {"minimum": 0, "maximum": 1}
    props["format"]["enum"] = list(FORMATS)
    request = {
        "type": "object",
        "required": ["prompt"],
        "properties": props,
        "additionalProperties": False,  # an unknown field is a 400, not ignored
    }
    json_body = {"content": {"application/json": {"schema": request}}, "required": True}
    common = {  # any route: every error body is {"error": message}
        "401": {"description": "the server has a token (--token) and it was not sent"},
        "403": {"description": "Host is not served here, or Origin is another site"},
        "404": {"description": "no such route or job"},
        "408": {"description": "the request was not received within the read timeout"},
        "405": {"description": "method not allowed; see the Allow header"},
        "503": {"description": "queue or connections full; see the Retry-After header"},
    }
    body_errors = {
        "400": {"description": "bad request: framing, JSON, or a value (named with its limit)"},
        "411": {"description": "no Content-Length (chunked Transfer-Encoding is refused)"},
        "413": {"description": "body larger than limits.max_body"},
        "415": {"description": "Content-Type is not application/json"},
    }

    def get(summary: str) -> dict:
        responses = {"200": {"description": "JSON"}, **common}
        return {"get": {"summary": summary, "responses": responses}}

    def post(summary: str, ok: dict, extra: dict | None = None, body: dict | None = None) -> dict:
        """A POST route; body None: the generate request's, {}: none."""
        responses = {**ok, **(body_errors if body != {} else {}), **common, **(extra or {})}
        operation = {"summary": summary, "responses": responses}
        if body != {}:
            operation["requestBody"] = body or json_body
        return {"post": operation}

    def body_of(properties: dict, required: list[str]) -> dict:
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        return {"content": {"application/json": {"schema": schema | {"required": required}}}}

    png_body = body_of({"image": {"type": "string", "description": "base64 PNG"}}, ["image"])
    png_body["required"] = True
    job_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "t2i", "version": "1"},
        "paths": {
            "/api/generate": post(
                "generate images and wait for them",
                {"200": {"description": "images: [{params, png_base64}] or image/png"}},
                {
                    "500": {
                        "description": "the generation failed in the worker (a bug or a broken"
                        " model); only this request fails, the server keeps serving"
                    },
                    "504": {"description": "timeout"},
                },
            ),
            "/api/jobs": post(
                "queue a generation; poll /api/jobs/{id} for progress",
                {"202": {"description": "{id, status_url}"}},
            ),
            "/api/jobs/{id}": {
                **get("status, step/steps, queue position, preview, images"),
                "parameters": [job_id],
            },
            "/api/jobs/{id}/cancel": {
                **post(
                    "cancel a queued or running job",
                    {"200": {"description": "{id, status}"}},
                    None,
                    {},
                ),
                "parameters": [job_id],
            },
            "/api/png-info": post(
                "the request a PNG's parameters make (t2i's chunk or A1111's text)",
                {"200": {"description": "prompt, negative, model, sampler, steps, ..."}},
                None,
                png_body,
            ),
            "/api/models": get("loaded models, their defaults, the samplers"),
            "/api/health": get("status and queue length (needs no token)"),
            **(
                more_paths(get, post, body_of, list(models or ()), side, limits, samplers)
                if more_paths
                else {}
            ),
        },
    }


def size_schema(limits: Limits, models: dict[str, int] | None) -> dict:
    """Image sides: multiples of every served model's factor, up to max_side."""
    multiple = math.lcm(*(models or {"": 1}).values())
    return {"minimum": multiple, "maximum": limits.max_side, "multipleOf": multiple}


def _json_type(types: tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", float: "number", list: "array", bool: "boolean"}
    return names[float] if float in types else names[types[0]]
