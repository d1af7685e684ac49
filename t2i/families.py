"""Which class draws a model folder: `load` reads model_index.json and picks the family.

    pipe = t2i.load("shapes")                 # a bundled model name, or a model folder

A folder names its family in model_index.json ("family"); without one it is a diffusion model,
and a diffusion folder with a base model ("base", "low_res") is a cascade. A new family (GAN,
AlignDRAW, unCLIP) adds its loader to FAMILIES; nothing else in the CLI, server or evaluation
changes, because they speak the protocol of t2i/protocol.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from t2i import DEFAULT_MODEL
from t2i.cascade import CascadePipeline
from t2i.checkpoint import load_model_folder, resolve_model
from t2i.pipeline import Pipeline
from t2i.protocol import Generator
from t2i.token_pipeline import TokenPipeline


def load_diffusion(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    """A diffusion folder; with "low_res" an upscaler stage, with "base" its base model too."""
    pipe = Pipeline(components, index, name=name, bf16=bf16)
    if "base" not in index and "low_res" not in index:
        return pipe
    base = None
    if "base" in index:
        sub = index["base"]
        if not isinstance(sub, str) or Path(sub).name != sub or sub in ("", ".", ".."):
            raise ValueError(f"{folder}: 'base' must name a subfolder, got {sub!r}")
        base = load(folder / sub, bf16=bf16)
        if "low_res" not in index:
            raise ValueError(f"model {name!r} has a base model but is no upscaler")
    return CascadePipeline(base, pipe)


def load_autoregressive(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return TokenPipeline(components, index, name=name, bf16=bf16)


FAMILIES: dict[str, Callable[..., Generator]] = {
    "diffusion": load_diffusion,
    "autoregressive": load_autoregressive,
}


def load(model: str | Path = DEFAULT_MODEL, bf16: bool = False) -> Generator:
    """Load a bundled model by name, or a model folder written by `t2i train` / `t2i export`.

    bf16: run the networks under bf16 autocast (BENCHMARKS.md "Generation time": faster on CPUs
    with AVX512-BF16 or AMX, images within ~1 level of 255 of fp32; slow where bf16 is emulated)."""
    folder = resolve_model(model)
    components, index = load_model_folder(folder)
    family = index.get("family", "diffusion")
    if family not in FAMILIES:
        raise ValueError(f"{folder}: unknown family {family!r}; t2i draws {sorted(FAMILIES)}")
    return FAMILIES[family](folder, components, index, str(model), bf16)
