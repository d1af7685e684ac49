"""Which class draws a model folder: `load` reads model_index.json and picks the family.

    pipe = t2i.load("shapes")                 # a bundled model name, or a model folder

A folder names its family in model_index.json ("family"); without one it is a diffusion model,
and a diffusion folder with a base model ("base", "low_res") is a cascade; "unclip" is DALL-E 2's
two stages (t2i/unclip_pipeline.py), "wuerstchen" a semantic-grid prior and its decoder
(t2i/wuerstchen_pipeline.py). A new family adds its loader to FAMILIES; nothing else in
the CLI, server or evaluation changes, because they speak the protocol of t2i/protocol.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from t2i import DEFAULT_MODEL
from t2i.adapters.control import CONTROLS_DIR
from t2i.cascade import CascadePipeline
from t2i.checkpoint import (
    INDEX_NAME,
    bundled_models,
    confined,
    load_model_folder,
    read_json_object,
    resolve_model,
)
from t2i.draw_pipeline import DrawPipeline
from t2i.gan_pipeline import GanPipeline
from t2i.models.autoencoder import AutoencoderKL, AutoencoderVQ
from t2i.models.autoencoder_patch import AutoencoderPatch
from t2i.models.clip import CLIP
from t2i.models.draw import DrawNet
from t2i.models.gan import GanNet
from t2i.models.semantic import SemanticEncoder
from t2i.models.text_encoder import PretrainedTextEncoder, TextLSTM, TextTransformer
from t2i.models.token_transformer import TokenTransformer
from t2i.models.unclip import DiffusionPrior, EmbeddingRegressor, EmbeddingTokens
from t2i.models.unet import UNet
from t2i.params import check_lora_name, check_lora_scale
from t2i.pipeline import Pipeline
from t2i.protocol import Generator
from t2i.token_pipeline import TokenPipeline
from t2i.unclip_pipeline import UnclipPipeline
from t2i.wuerstchen_pipeline import STAGE_C_KEY, WuerstchenPipeline


def load_diffusion(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    """A diffusion folder; with "low_res" an upscaler stage, with "base" its base model too."""
    if STAGE_C_KEY in index:
        raise ValueError(
            f"{folder} is a Würstchen stage C: it draws semantic grids, not images; load the "
            "folder above it (its stage B)"
        )
    pipe = Pipeline(components, index, name=name, bf16=bf16)
    if "base" not in index and "low_res" not in index:
        return pipe
    base = None
    if "base" in index:
        base = load(base_folder(folder, index), bf16=bf16)
        if "low_res" not in index:
            raise ValueError(f"model {name!r} has a base model but is no upscaler")
    return CascadePipeline(base, pipe)


def base_folder(folder: Path, index: dict) -> Path:
    """The subfolder an index's "base" names (a cascade's base, a Würstchen's stage C)."""
    sub = index["base"]
    if not isinstance(sub, str) or Path(sub).name != sub or sub in ("", ".", ".."):
        raise ValueError(f"{folder}: 'base' must name a subfolder, got {sub!r}")
    return confined(folder / sub, folder, "base")  # a symlinked base/ may not lead out


def load_wuerstchen(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    """Stage B's folder with its semantic encoder; stage C in the "base" subfolder, if any."""
    stage_c = None
    if "base" in index:
        sub = base_folder(folder, index)
        parts, sub_index = load_model_folder(sub)
        if STAGE_C_KEY not in sub_index:
            raise ValueError(f"{sub}: not a Würstchen stage C (its index lacks {STAGE_C_KEY!r})")
        check_components("diffusion", parts, sub / INDEX_NAME)
        stage_c = Pipeline(parts, sub_index, name=f"{name}/{sub.name}", bf16=bf16)
    stage_b = Pipeline(components, index, name=name, bf16=bf16)
    return WuerstchenPipeline(stage_c, stage_b, components["semantic"])


def load_autoregressive(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return TokenPipeline(components, index, name=name, bf16=bf16)


def load_draw(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return DrawPipeline(components, index, name=name, bf16=bf16)


def load_gan(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return GanPipeline(components, index, name=name, bf16=bf16)


def load_unclip(folder: Path, components: dict, index: dict, name: str, bf16: bool):
    return UnclipPipeline(components, index, name=name, bf16=bf16)


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
    "gan": {"gan": (GanNet,), "text_encoder": TEXT_ENCODERS},
    "unclip": {
        "unet": (UNet,),
        "text_encoder": TEXT_ENCODERS,
        "autoencoder": AUTOENCODERS,
        "clip": (CLIP,),
        "prior": (DiffusionPrior, EmbeddingRegressor),
        "image_tokens": (EmbeddingTokens,),
    },
    "wuerstchen": {
        "unet": (UNet,),
        "text_encoder": TEXT_ENCODERS,
        "autoencoder": AUTOENCODERS,
        "semantic": (SemanticEncoder,),
    },
}
OPTIONAL = {("diffusion", "autoencoder"), ("unclip", "autoencoder")}

LORA_DIR = "loras"  # a model folder's own LoRAs, found by name
MAX_PINNED = 8
# what a folder that adapts a model replaces in that model's index
OVERRIDDEN = ("sampler", "consistency", "evaluation", "training", "adapts", "loras")

FAMILIES: dict[str, Callable[..., Generator]] = {
    "diffusion": load_diffusion,
    "autoregressive": load_autoregressive,
    "draw": load_draw,
    "gan": load_gan,
    "unclip": load_unclip,
    "wuerstchen": load_wuerstchen,
}


def load(model: str | Path = DEFAULT_MODEL, bf16: bool = False) -> Generator:
    """Load a bundled model by name, or a model folder written by `t2i train` / `t2i export`.

    bf16: run the networks under bf16 autocast (BENCHMARKS.md "Generation time": faster on CPUs
    with AVX512-BF16 or AMX, images within ~1 level of 255 of fp32; slow where bf16 is emulated)."""
    folder = resolve_model(model)
    index = read_json_object(folder / INDEX_NAME)
    if "adapts" in index:
        return load_adapted(folder, index, str(model), bf16)
    pipe = load_folder(folder, str(model), bf16)
    if (folder / LORA_DIR).is_dir():
        pipe.lora_dir = folder / LORA_DIR
    if (folder / CONTROLS_DIR).is_dir():
        pipe.control_dir = folder / CONTROLS_DIR
    return pipe


def load_adapted(folder: Path, index: dict, name: str, bf16: bool) -> Generator:
    """A folder that adapts another model (model_index.json "adapts": a bundled name or a model
    folder; "loras": name -> scale): the model, with those LoRAs (from this folder's loras/, else
    the model's) fused into it and applied in every request, and this folder's sampler
    defaults. An LCM-LoRA's run writes one: `t2i generate --model shapes-lcm`."""
    loras = index.get("loras", {})
    base_folder = adapted_model(folder, index)
    if not isinstance(loras, dict) or not loras or len(loras) > MAX_PINNED:
        raise ValueError(f"{folder / INDEX_NAME}: loras must map 1 to {MAX_PINNED} names to scales")
    pipe = load_folder(base_folder, name, bf16, override=index)
    own_dir = folder / LORA_DIR
    pipe.lora_dir = own_dir if own_dir.is_dir() else base_folder / LORA_DIR
    for lora_name, scale in loras.items():
        file = f"{check_lora_name(lora_name)}.safetensors"
        path = own_dir / file if (own_dir / file).is_file() else base_folder / LORA_DIR / file
        pipe.load_lora(path, lora_name)
        pipe.pinned_loras[lora_name] = check_lora_scale(lora_name, scale)
    # fused: a step costs what the model's own does (unfused, an LCM-LoRA on every layer made a
    # `shapes` step 1.5x slower); a request that names one at another scale is refused until
    # `pipe.loras.unfuse()`
    pipe.loras.fuse(pipe.pinned_loras)
    return pipe


def adapted_model(folder: Path, index: dict) -> Path:
    """The folder of the model that an adapting folder's "adapts" names: a bundled name, or a
    folder (a relative path is read from the adapting folder); never itself another adapter."""
    base = index["adapts"]
    if not isinstance(base, str) or not base or (folder / base).resolve() == folder.resolve():
        raise ValueError(f"{folder / INDEX_NAME}: adapts must name another model, got {base!r}")
    base_folder = resolve_model(base if base in bundled_models() else folder / base)
    if "adapts" in read_json_object(base_folder / INDEX_NAME):
        raise ValueError(f"{folder / INDEX_NAME}: {base!r} adapts a model itself; name that one")
    return base_folder


def load_folder(folder: Path, name: str, bf16: bool, override: dict | None = None) -> Generator:
    """The family's generator over a model folder; `override`: index keys an adapting folder
    replaces (its sampler defaults, card)."""
    components, index = load_model_folder(folder)
    model = name
    if override:
        index = {**index, **{k: v for k, v in override.items() if k in OVERRIDDEN}}
    family = index.get("family", "diffusion")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(
            f"{folder / INDEX_NAME}: family: unknown family {str(family)[:60]!r}; "
            f"t2i draws {sorted(FAMILIES)}"
        )
    check_components(family, components, folder / INDEX_NAME)
    try:
        return FAMILIES[family](folder, components, index, model, bf16)
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
