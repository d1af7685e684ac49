"""AUTOMATIC1111's conventions, mapped onto t2i's: its sampler names and the "parameters" text
its PNGs carry, which image viewers, model sites and metadata readers parse:

    a red circle above a blue square
    Negative prompt: blurry
    Steps: 20, Sampler: DDIM, CFG scale: 5, Seed: 7, Size: 64x64, Model hash: 1a2b3c4d5e, Model: x

t2i writes it beside its own JSON chunk (which holds every field exactly) and reads it back when
a PNG has no JSON chunk (an image from A1111 or another tool), keeping the fields that have a t2i
counterpart and naming the ones it cannot use.
"""

from __future__ import annotations

import re

PNG_KEY = "parameters"  # A1111's PNG text chunk

# A1111 sampler names (with its scheduler suffixes left off) -> t2i's; t2i's names are accepted
# as they are. "DPM++ 2M Karras" is A1111's "DPM++ 2M" on the Karras schedule: the same solver.
SAMPLER_NAMES = {
    "DDIM": "ddim",
    "DDPM": "ddpm",
    "Euler": "euler",
    "Euler a": "euler_ancestral",
    "Heun": "heun",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M SDE": "dpmpp_2m_sde",
    "LCM": "lcm",
}
T2I_TO_A1111 = {v: k for k, v in SAMPLER_NAMES.items()}
SCHEDULER_SUFFIXES = (" Karras", " Exponential", " Uniform")
MAX_TEXT = 100_000

_FIELD = re.compile(r'\s*([\w ./+-]+):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')


def t2i_sampler(name: str) -> str:
    """An A1111 sampler name ("Euler a", "DPM++ 2M Karras") -> t2i's ("euler_ancestral",
    "dpmpp_2m"); any other name is returned as it is, for the model to accept or refuse."""
    bare = name
    for suffix in SCHEDULER_SUFFIXES:
        bare = bare.removesuffix(suffix)
    return SAMPLER_NAMES.get(bare, name)


def sampler_names(samplers: list[str]) -> list[str]:
    """Every name a request may give for these t2i samplers: t2i's and A1111's (with its
    scheduler suffixes)."""
    a1111 = [k for k, v in SAMPLER_NAMES.items() if v in samplers]
    return sorted({*samplers, *a1111, *(n + x for n in a1111 for x in SCHEDULER_SUFFIXES)})


def a1111_sampler(name: str) -> str:
    return T2I_TO_A1111.get(name, name)


def _quote(value: str) -> str:
    """A field value as A1111 writes it: quoted when it holds a comma, colon or quote."""
    if any(c in value for c in ',:"\n'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return value


def to_parameters(p, model_hash: str = "", version: str = "") -> str:
    """A GenerationParams as A1111's "parameters" text."""
    lines = [p.prompt]
    if p.negative:
        lines.append(f"Negative prompt: {p.negative}")
    fields = {
        "Steps": str(p.steps),
        "Sampler": a1111_sampler(p.sampler),
        "CFG scale": f"{p.guidance:g}",
        "Seed": str(p.seed),
        "Size": f"{p.width}x{p.height}",
    }
    if model_hash:
        fields["Model hash"] = model_hash
    fields["Model"] = p.model
    if p.init:
        fields["Denoising strength"] = f"{p.strength:g}"
    if p.mask_blur:
        fields["Mask blur"] = str(p.mask_blur)
    if p.loras:
        fields["Lora hashes"] = ", ".join(f"{name}: {digest}" for name, _, digest in p.loras)
    if p.embeddings:
        fields["TI hashes"] = ", ".join(f"{word}: {digest}" for word, digest in p.embeddings)
    if version:
        fields["Version"] = version
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items()))
    return "\n".join(lines)


def parse_parameters(text: str, source: str = "parameters") -> dict:
    """A1111's "parameters" text -> {"prompt", "negative", and each field by its A1111 name}.
    Only the shape is checked here; values are checked when they become a request."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"{source}: A1111 parameters must be text of at most {MAX_TEXT} chars")
    lines = text.strip().split("\n")
    last = lines[-1] if len(lines) > 1 or "Steps:" in lines[-1] else ""
    fields = _fields(last) if last.startswith("Steps:") else {}
    body = lines[:-1] if fields else lines
    prompt, negative, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    return {"prompt": "\n".join(prompt).strip(), "negative": "\n".join(negative).strip(), **fields}


def _fields(line: str) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(line):
        match = _FIELD.match(line, pos)
        if match is None or match.end() == pos:
            break
        key, value = match.group(1).strip(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
        pos = match.end()
    return out


def request_from_parameters(fields: dict, source: str) -> dict:
    """Parsed A1111 fields -> keyword arguments of Generator.params (model left to the caller
    as "model"); a value that is not a number where one is needed is named."""
    kw: dict = {"prompt": fields["prompt"], "negative": fields.get("negative", "")}

    def number(key: str, kind=int):
        try:
            return kind(fields[key])
        except ValueError:
            raise ValueError(f"{source}: {key} {fields[key][:60]!r} is not a number") from None

    if "Steps" in fields:
        kw["steps"] = number("Steps")
    if "CFG scale" in fields:
        kw["guidance"] = number("CFG scale", float)
    if "Seed" in fields:
        kw["seed"] = number("Seed")
    if "Size" in fields:
        width, _, height = fields["Size"].partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise ValueError(f"{source}: Size {fields['Size'][:60]!r} is not WIDTHxHEIGHT")
        kw["size"] = (int(width), int(height))
    if "Sampler" in fields:
        kw["sampler"] = fields["Sampler"]  # mapped by the model, which knows its samplers
    if "Model" in fields:
        kw["model"] = fields["Model"]
    return kw
