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

from t2i.a1111 import T2I_TO_A1111, t2i_sampler, to_parameters
from t2i.server.api import ApiError

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
    "mask_blur",  # t2i's inpainting keeps the unmasked pixels exactly (RePaint + composite)
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


def to_request(data: dict, kind: str, model: str) -> tuple[dict, list[str]]:
    """An A1111 txt2img / img2img body -> (t2i's request body, the fields ignored)."""
    ignored = []
    for key, value in data.items():
        if key in MAPPED or key.startswith("hr_"):
            continue
        if key in OFF_VALUES:
            if value not in OFF_VALUES[key]:
                raise ApiError(400, f"{key}={json.dumps(value)[:60]} has no counterpart in t2i")
        elif key in IGNORED:
            if not (kind == "img2img" and key == "denoising_strength"):
                ignored.append(key)
        else:
            raise ApiError(400, f"unknown A1111 field {key[:60]!r}")
    out: dict = {"prompt": data.get("prompt", ""), "model": _model(data, model)}
    if data.get("negative_prompt"):
        out["negative"] = data["negative_prompt"]
    for theirs, ours in (("steps", "steps"), ("cfg_scale", "guidance")):
        if data.get(theirs) is not None:
            out[ours] = data[theirs]
    seed = data.get("seed", -1)
    out["seed"] = "random" if seed in (-1, None) else seed
    for key in ("width", "height"):
        if data.get(key) is not None:
            out[key] = data[key]
    out["n"] = _count(data)
    name = data.get("sampler_name") or data.get("sampler_index")
    if name:
        out["sampler"] = name if not isinstance(name, str) else t2i_sampler(name)
    if kind == "img2img":
        _img2img(data, out)
    return out, ignored


def _model(data: dict, model: str) -> str:
    settings = data.get("override_settings") or {}
    if not isinstance(settings, dict):
        raise ApiError(400, "override_settings must be an object")
    unknown = sorted(set(settings) - {"sd_model_checkpoint"})
    if unknown:
        raise ApiError(400, f"override_settings {unknown} have no counterpart in t2i")
    return settings.get("sd_model_checkpoint", model)


def _count(data: dict) -> int:
    batch, iters = data.get("batch_size", 1), data.get("n_iter", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (batch, iters)):
        raise ApiError(400, "batch_size and n_iter must be integers")
    return batch * iters


def _img2img(data: dict, out: dict) -> None:
    images = data.get("init_images")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str):
        raise ApiError(400, "init_images must be a list of one base64 image")
    out["init"] = images[0]
    if data.get("mask"):
        out["mask"] = data["mask"]
    strength = data.get("denoising_strength", 0.75)
    out["strength"] = strength


def reply(images: list, request: dict, ignored: list[str], model_hash: str) -> dict:
    """The A1111 reply: base64 PNGs, the request echoed, and info (a JSON string) with each
    image's seed and its parameters text."""
    params = [p for p, _ in images]
    info = {
        "prompt": params[0].prompt,
        "negative_prompt": params[0].negative,
        "seed": params[0].seed,
        "all_seeds": [p.seed for p in params],
        "steps": params[0].steps,
        "cfg_scale": params[0].guidance,
        "sampler_name": T2I_TO_A1111.get(params[0].sampler, params[0].sampler),
        "width": params[0].width,
        "height": params[0].height,
        "sd_model_name": params[0].model,
        "sd_model_hash": model_hash,
        "infotexts": [to_parameters(p, model_hash) for p in params],
        "ignored": ignored,
    }
    pngs = [base64.b64encode(png).decode() for _, png in images]
    return {"images": pngs, "parameters": request, "info": json.dumps(info)}


def samplers(names: set[str]) -> list[dict]:
    """GET /sdapi/v1/samplers: A1111's name for each t2i sampler the models take."""
    out = []
    for name in sorted(names):
        shown = T2I_TO_A1111.get(name, name)
        out.append({"name": shown, "aliases": [name], "options": {}})
    return out
