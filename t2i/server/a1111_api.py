"""AUTOMATIC1111's HTTP API (`/sdapi/v1/...`) beside t2i's own, so its clients, scripts and
plug-ins work unchanged: txt2img, img2img (with mask), samplers, sd-models, options (the model
choice), progress, interrupt and scripts. A request is translated into t2i's own request and
goes through the same checks, queue and worker.

A1111 clients send every field their UI has, most at values that mean "off". A field whose value
asks for something t2i does not do (hires fix, face restoration, tiling, scripts, a scheduler)
is a 400 naming it; a field that only tunes a step t2i does differently (mask blur, inpainting
fill, "only masked" inpainting) is accepted and listed in the reply's info as ignored.
"""

from __future__ import annotations

import base64
import json

from t2i.a1111 import T2I_TO_A1111, sampler_names, t2i_sampler, to_parameters
from t2i.params import MAX_MASK_BLUR
from t2i.server.api import ApiError, Limits, top_seed

# fields that must keep the value that means "off": what t2i has no counterpart for
OFF_VALUES: dict[str, tuple] = {
    "enable_hr": (False, None),
    "restore_faces": (False, None),
    "tiling": (False, None),
    "subseed_strength": (0, 0.0, None),
    "styles": ([], None),
    "script_name": (None, ""),
    "script_args": ([], None),
    "alwayson_scripts": ({}, None),
    "send_images": (True, None),
    "save_images": (False, None),
    "resize_mode": (0, None),
    "inpainting_mask_invert": (0, None),
    "initial_noise_multiplier": (1, 1.0, None),
    "s_churn": (0, 0.0, None),
    "s_tmin": (0, 0.0, None),
    "s_tmax": (0, 0.0, None, float("inf")),
    "s_noise": (1, 1.0, None),
    "scheduler": (None, "", "automatic", "Automatic"),
}
# fields accepted and ignored: tuning of steps t2i does its own way, or of features left off
IGNORED = {
    "mask_blur",  # read by img2img with a mask; nothing to blur otherwise
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "image_cfg_scale",  # instruct-pix2pix only
    "include_init_images",
    "eta",  # t2i's ancestral samplers add the full noise
    "denoising_strength",  # txt2img: used by hires fix only (img2img reads it)
    "subseed",
    "seed_resize_from_h",
    "seed_resize_from_w",
    "do_not_save_samples",
    "do_not_save_grid",
    "override_settings_restore_afterwards",
    "sampler_index",  # the old name of sampler_name
    "firstphase_width",
    "firstphase_height",
    "sampler",
    "refiner_checkpoint",
    "refiner_switch_at",
    "comments",
    "disable_extra_networks",
    "infotext",
    "force_task_id",
}
MAPPED = {
    "prompt",
    "negative_prompt",
    "steps",
    "cfg_scale",
    "seed",
    "width",
    "height",
    "batch_size",
    "n_iter",
    "sampler_name",
    "override_settings",
    "init_images",
    "mask",
}


def to_request(data: dict, kind: str, model: str, limits: Limits) -> tuple[dict, list[str], int]:
    """An A1111 txt2img / img2img body -> (t2i's request body for its first batch of
    batch_size, the fields ignored, n_iter: the batches to draw one after another)."""
    ignored = []
    for key, value in data.items():
        if key in MAPPED or key.startswith("hr_"):
            continue
        if key in OFF_VALUES:
            if not _is_one_of(value, OFF_VALUES[key]):
                raise ApiError(400, f"{key}={json.dumps(value)[:60]} has no counterpart in t2i")
        elif key in IGNORED:
            read = {"denoising_strength"} | ({"mask_blur"} if data.get("mask") else set())
            if not (kind == "img2img" and key in read):
                ignored.append(key)
        else:
            raise ApiError(400, f"unknown A1111 field {key[:60]!r}")
    data = {k: _integral(k, v) for k, v in data.items()}
    for key in ("prompt", "negative_prompt"):
        if not isinstance(data.get(key, ""), (str, type(None))):
            raise ApiError(400, f"{key} must be text, got {json.dumps(data[key])[:60]}")
    out: dict = {"prompt": data.get("prompt") or "", "model": _model(data, model)}
    if data.get("negative_prompt"):
        out["negative"] = data["negative_prompt"]
    for theirs, ours in (("steps", "steps"), ("cfg_scale", "guidance")):
        if data.get(theirs) is not None:
            out[ours] = data[theirs]
    seed = data.get("seed", -1)
    out["seed"] = "random" if seed in (-1, None) else seed
    if isinstance(seed, int) and seed > top_seed(limits, MAX_ITERATIONS):
        raise ApiError(400, f"seed={seed} is above {top_seed(limits, MAX_ITERATIONS)}")
    for key in ("width", "height"):
        if data.get(key) is not None:
            out[key] = data[key]
    out["n"], iterations = _count(data)
    name = data.get("sampler_name")
    if name is not None and not (isinstance(name, str) and name):
        raise ApiError(400, f"sampler_name must be a sampler's name, got {json.dumps(name)[:60]}")
    name = name or data.get("sampler_index")  # the old field, when it names one
    if isinstance(name, str) and name:
        out["sampler"] = t2i_sampler(name)
    if kind == "img2img":
        _img2img(data, out)
    return out, ignored, iterations


INTEGERS = {"steps", "seed", "width", "height", "batch_size", "n_iter"}
MAX_ITERATIONS = 16  # batches a request may ask for one after another (A1111's batch count)


def _integral(key: str, value):
    """JSON Schema's integers include 2.0, and A1111 (pydantic) takes it: so does this API."""
    if key in INTEGERS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_one_of(value, allowed: tuple) -> bool:
    """`value` among `allowed`, false never standing for 0 (nor true for 1) as in Python."""
    return any(isinstance(value, bool) == isinstance(v, bool) and value == v for v in allowed)


def _model(data: dict, model: str) -> str:
    settings = data.get("override_settings")
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise ApiError(400, "override_settings must be an object")
    if not isinstance(settings.get("sd_model_checkpoint", model), str):
        raise ApiError(400, "override_settings.sd_model_checkpoint must be a model name")
    unknown = sorted(set(settings) - {"sd_model_checkpoint"})
    if unknown:
        raise ApiError(400, f"override_settings {unknown} have no counterpart in t2i")
    return settings.get("sd_model_checkpoint", model)


def _count(data: dict) -> tuple[int, int]:
    batch, iters = data.get("batch_size", 1), data.get("n_iter", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (batch, iters)):
        raise ApiError(400, "batch_size and n_iter must be integers")
    if not 1 <= iters <= MAX_ITERATIONS:
        raise ApiError(400, f"n_iter={iters} is outside [1, {MAX_ITERATIONS}]")
    return batch, iters


def _img2img(data: dict, out: dict) -> None:
    images = data.get("init_images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        raise ApiError(400, "init_images must be a list of one base64 image")
    out["init"] = images[0]
    if data.get("mask"):
        out["mask"] = data["mask"]
        if data.get("mask_blur") is not None:
            out["mask_blur"] = data["mask_blur"]
    strength = data.get("denoising_strength", 0.75)
    out["strength"] = strength


def reply(
    first, images: list, request: dict, ignored: list[str], model_hash: str, interrupted=False
) -> dict:
    """The A1111 reply: base64 PNGs, the request echoed, and info (a JSON string) with each
    image's seed and its parameters text; `first`: the request's first GenerationParams. An
    interrupted request answers with the images it has (the running one's latest preview), as
    A1111 answers with the partial image."""
    params = [p for p, _ in images]
    info = {
        "prompt": first.prompt,
        "negative_prompt": first.negative,
        "seed": first.seed,
        "all_seeds": [p.seed for p in params],
        "steps": first.steps,
        "cfg_scale": first.guidance,
        "sampler_name": T2I_TO_A1111.get(first.sampler, first.sampler),
        "width": first.width,
        "height": first.height,
        "sd_model_name": first.model,
        "sd_model_hash": model_hash,
        "infotexts": [to_parameters(p, model_hash) for p in params],
        "ignored": ignored,
        "interrupted": interrupted,
    }
    pngs = [base64.b64encode(png).decode() for _, png in images]
    return {"images": pngs, "parameters": request, "info": json.dumps(info)}


def samplers(names: list[str]) -> list[dict]:
    """GET /sdapi/v1/samplers: A1111's name for each t2i sampler the models take."""
    out = []
    for name in sorted(names):
        shown = T2I_TO_A1111.get(name, name)
        out.append({"name": shown, "aliases": [name], "options": {}})
    return out


def request_schema(
    kind: str, model: dict, side: dict, limits: Limits, samplers: list[str]
) -> tuple[dict, list[str]]:
    """(properties, required) of an A1111 body, from the same tables `to_request` reads: the
    mapped fields typed, the "off" fields held to their values, the ignored ones free."""
    integer, number = {"type": "integer"}, {"type": "number"}
    maybe = {"type": ["integer", "null"]}  # null: the model's default (random for seed)
    props: dict = {
        "prompt": {"type": ["string", "null"]},
        "negative_prompt": {"type": ["string", "null"]},
        "steps": maybe | {"minimum": 1, "maximum": limits.max_steps},
        "cfg_scale": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        "seed": maybe | {"minimum": -1, "maximum": top_seed(limits, MAX_ITERATIONS)},
        "width": maybe | side,
        "height": maybe | side,
        "batch_size": integer | {"minimum": 1, "maximum": limits.max_n},
        "n_iter": integer | {"minimum": 1, "maximum": MAX_ITERATIONS},
        "sampler_name": {"enum": [*sampler_names(samplers), None]},
        "override_settings": {
            "type": ["object", "null"],
            "properties": {"sd_model_checkpoint": model},
            "additionalProperties": False,
        },
    }
    for key, values in OFF_VALUES.items():
        props[key] = {"enum": [v for v in values if v != float("inf")]}
    for key in IGNORED:
        props[key] = {}
    required = []
    if kind == "img2img":
        props["init_images"] = {"type": "array", "items": {"type": "string"}, "minItems": 1}
        props["init_images"]["maxItems"] = 1
        props["mask"] = {"type": "string"}
        props["denoising_strength"] = number | {"minimum": 0, "maximum": 1}
        props["mask_blur"] = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_MASK_BLUR}
        required = ["init_images"]
    return props, required


def paths(
    get, post, body_of, models: list[str], side: dict, limits: Limits, samplers: list[str]
) -> dict:
    """A1111's routes (t2i/server/a1111_api.py): its own field names, from the tables that
    translate them."""
    draw = {"200": {"description": "{images: [base64 PNG], parameters, info (a JSON string)}"}}
    failed = {"500": {"description": "the generation failed or was interrupted"}}
    model = {"type": "string"} | ({"enum": list(models)} if models else {})
    options = body_of({"sd_model_checkpoint": model}, []) | {"required": True}
    txt2img = body_of(*request_schema("txt2img", model, side, limits, samplers))
    img2img = body_of(*request_schema("img2img", model, side, limits, samplers))
    for body in (txt2img, img2img):  # hires fix settings: read only with enable_hr, which is off
        body["content"]["application/json"]["schema"]["patternProperties"] = {"^hr_": {}}
        body["required"] = True
    routes = {
        "txt2img": post("A1111 txt2img", draw, failed, txt2img),
        "img2img": post("A1111 img2img: init_images, mask, strength", draw, failed, img2img),
        "options": {
            **get("A1111 options: sd_model_checkpoint"),
            **post("set sd_model_checkpoint", {"200": {"description": "{}"}}, None, options),
        },
        "interrupt": post("stop the running generation", {"200": {"description": "{}"}}, None, {}),
        "samplers": get("samplers by A1111's names"),
        "sd-models": get("the loaded models"),
        "progress": get("the running generation's step"),
        "scripts": get("none: t2i runs no A1111 scripts"),
    }
    return {f"/sdapi/v1/{name}": route for name, route in routes.items()}
