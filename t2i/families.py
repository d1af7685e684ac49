"""Which class draws a model folder: `load` reads model_index.json and picks the family.

    pipe = t2i.load("shapes")                 # a bundled model name, or a model folder

A folder names its family in model_index.json ("family"); without one it is a diffusion model,
and a diffusion folder with a base model ("base", "low_res") is a cascade. A new family (GAN,
unCLIP) adds its loader to FAMILIES; nothing else in the CLI, server or evaluation
changes, because they speak the protocol of t2i/protocol.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from t2i import DEFAULT_MODEL
from t2i.cascade import CascadePipeline
from t2i.checkpoint import INDEX_NAME, confined, load_model_folder, resolve_model
from t2i.draw_pipeline import DrawPipeline
from t2i.models.autoencoder import AutoencoderKL, AutoencoderVQ
from t2i.models.autoencoder_patch import AutoencoderPatch
from t2i.models.draw import DrawNet
from t2i.models.text_encoder import PretrainedTextEncoder, TextLSTM, TextTransformer
from t2i.models.token_transformer import TokenTransformer
from t2i.models.unet import UNet
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
        confined(folder / sub, folder, "base")  # a symlinked base/ may not lead out
        base = load(folder / sub, bf16=bf16)
        if "low_res" not in index:
            raise ValueError(f"model {name!r} has a base model but is no upscaler")
    return CascadePipeline(base, pipe)


def load_autoregressive(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return TokenPipeline(components, index, name=name, bf16=bf16)


def load_draw(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return DrawPipeline(components, index, name=name, bf16=bf16)


TEXT_ENCODERS = (TextTransformer, PretrainedTextEncoder)
WORD_ENCODERS = (TextLSTM, TextTransformer)  # trained with the network over its own words
AUTOENCODERS = (AutoencoderKL, AutoencoderVQ, AutoencoderPatch)
# what each family reads from its folder (name -> classes); a pixel diffusion model has no
# autoencoder, so there it is checked only when present (OPTIONAL)
FAMILY_COMPONENTS: dict[str, dict[str, tuple[type, ...]]] = {
    "diffusion": {"unet": (UNet,), "text_encoder": TEXT_ENCODERS, "autoencoder": AUTOENCODERS},
    "autoregressive": {
        "transformer": (TokenTransformer,),
        "autoencoder": (AutoencoderVQ,),
        "text_encoder": TEXT_ENCODERS,
    },
    "draw": {"draw": (DrawNet,), "text_encoder": WORD_ENCODERS},
}
OPTIONAL = {("diffusion", "autoencoder")}

FAMILIES: dict[str, Callable[..., Generator]] = {
    "diffusion": load_diffusion,
    "autoregressive": load_autoregressive,
    "draw": load_draw,
}


def load(model: str | Path = DEFAULT_MODEL, bf16: bool = False) -> Generator:
    """Load a bundled model by name, or a model folder written by `t2i train` / `t2i export`.

    bf16: run the networks under bf16 autocast (BENCHMARKS.md "Generation time": faster on CPUs
    with AVX512-BF16 or AMX, images within ~1 level of 255 of fp32; slow where bf16 is emulated)."""
    folder = resolve_model(model)
    components, index = load_model_folder(folder)
    family = index.get("family", "diffusion")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(
            f"{folder / INDEX_NAME}: family: unknown family {str(family)[:60]!r}; "
            f"t2i draws {sorted(FAMILIES)}"
        )
    check_components(family, components, folder / INDEX_NAME)
    try:
        return FAMILIES[family](folder, components, index, str(model), bf16)
    except (ValueError, KeyError, TypeError) as e:  # an index field the family cannot use
        if isinstance(e, ValueError) and str(folder) in str(e):
            raise
        what = f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0][:300]
        raise ValueError(f"{folder / INDEX_NAME}: {what}") from e


def check_components(family: str, components: dict, source: Path) -> None:
    """The components a family reads, each of a class it can use; else one line naming them."""
    for name, classes in FAMILY_COMPONENTS[family].items():
        module = components.get(name)
        if module is None and (family, name) in OPTIONAL:
            continue
        if not isinstance(module, classes):
            found = type(module).__name__ if module is not None else "missing"
            raise ValueError(
                f"{source}: components.{name}: the {family} family needs "
                f"{' or '.join(c.__name__ for c in classes)}, found {found} "
                f"(components: {sorted(components)})"
            )
