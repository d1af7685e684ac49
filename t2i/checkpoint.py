"""Model folders: `model_index.json` + one subfolder per component (`config.json` +
`model.safetensors`). Nothing is pickled; every write is atomic; loading checks everything.

    save_component(unet, "my-model/unet", dtype=torch.float16)
    unet = load_component("my-model/unet")                 # type from config.json, fixed table
    save_model_folder("my-model", {"unet": unet, "text_encoder": enc}, index={"schedule": ...})
    components, index = load_model_folder("my-model")
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from t2i.models.autoencoder import AutoencoderConfig, AutoencoderKL, AutoencoderVQ, VQConfig
from t2i.models.autoencoder_patch import AutoencoderPatch, PatchConfig
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import (
    PretrainedTextEncoder,
    PretrainedTextEncoderConfig,
    TextTransformer,
    TextTransformerConfig,
)
from t2i.models.token_transformer import TokenTransformer, TokenTransformerConfig
from t2i.models.unet import UNet, UNetConfig

# The one table from a config.json "type" to classes (no other string-to-class lookup).
COMPONENT_TYPES: dict[str, tuple[type[nn.Module], type]] = {
    "unet": (UNet, UNetConfig),
    "autoencoder_kl": (AutoencoderKL, AutoencoderConfig),
    "autoencoder_vq": (AutoencoderVQ, VQConfig),
    "autoencoder_patch": (AutoencoderPatch, PatchConfig),
    "text_transformer": (TextTransformer, TextTransformerConfig),
    "pretrained_text_encoder": (PretrainedTextEncoder, PretrainedTextEncoderConfig),
    "clip": (CLIP, CLIPConfig),
    "token_transformer": (TokenTransformer, TokenTransformerConfig),
}
CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME = "config.json", "model.safetensors", "model_index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)  # read once (it can only be read by setting it), then put back
os.umask(_UMASK)


BUNDLED_DIR = Path(__file__).parent / "bundled"  # the model folders that ship in the package


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder + os.replace: readers never see a partial
    file, and a crash leaves the old file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a model folder is for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------- components


def component_type(module: nn.Module) -> str:
    for name, (cls, _) in COMPONENT_TYPES.items():
        if type(module) is cls:
            return name
    raise ValueError(
        f"cannot save {type(module).__name__}: not a component type; "
        f"known: {sorted(COMPONENT_TYPES)}"
    )


def save_component(
    module: nn.Module, directory: str | os.PathLike, dtype: torch.dtype = torch.float32
) -> None:
    """config.json ({"type": ..., **config}) + model.safetensors with floats cast to dtype."""
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype} not supported; choose from {list(DTYPES)}")
    directory = Path(directory)
    config = {"type": component_type(module), **dataclasses.asdict(module.config)}
    atomic_write_json(directory / CONFIG_NAME, config)
    if getattr(module, "save_weights", True):
        tensors = {
            k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous().clone()
            for k, v in module.state_dict().items()
        }
        dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
        atomic_write_bytes(directory / WEIGHTS_NAME, st_save(tensors, {"dtype": dtype_name}))


def config_from_dict(config_cls: type, data: dict, source: str):
    """Build a config dataclass; unknown or invalid keys are errors naming the file."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{source}: unknown config keys {unknown}; {config_cls.__name__} has {sorted(names)}"
        )
    try:
        return config_cls(**data)
    except TypeError as e:  # e.g. a nested config with a bad key
        raise ValueError(f"{source}: invalid config: {e}") from e


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file after checking it is one; a pickle or a cut file is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    data = path.read_bytes()
    expected = "a safetensors file (8-byte header length, JSON header, tensor data)"
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else -1
    if not 0 < n <= len(data) - 8 or data[8:9] != b"{":
        if data[:2] == b"PK" or data[:1] == b"\x80":  # torch.save zip archive / raw pickle
            raise ValueError(
                f"{path} looks like a pickled PyTorch file (torch.save); t2i loads only "
                f"{expected}, never pickles. Convert it with safetensors.torch.save_file."
            )
        raise ValueError(f"{path} is not {expected}: bad header (truncated or another format)")
    try:
        header = json.loads(data[8 : 8 + n])
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not {expected}: unreadable header ({e})") from e
    if 8 + n + end != len(data):
        raise ValueError(
            f"{path} is truncated or padded: header promises {8 + n + end} bytes, "
            f"file has {len(data)}"
        )
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error type
        raise ValueError(f"{path} is not {expected}: {e}") from e


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors into module after checking every name and shape; lists every problem."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(tensors))
        if tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source} does not fit {type(module).__name__}: missing {missing}, "
            f"unexpected {unexpected}, shape mismatches {mismatched}"
        )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(tensors[k])  # casts to the module's dtype (fp16 file -> fp32 model)


def load_component(
    directory: str | os.PathLike, dtype: torch.dtype | None = None, device: str = "cpu"
) -> nn.Module:
    """Build the component named in config.json and load its weights (checked). dtype None: fp32."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: not a t2i component folder")
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON: {e}") from e
    kind = data.pop("type", None)
    if kind not in COMPONENT_TYPES:
        raise ValueError(
            f"{config_path}: component type {kind!r}; choose from {sorted(COMPONENT_TYPES)}"
        )
    module_cls, config_cls = COMPONENT_TYPES[kind]
    module = module_cls(config_from_dict(config_cls, data, str(config_path)))
    if getattr(module, "save_weights", True):
        weights = directory / WEIGHTS_NAME
        load_weights(module, read_safetensors(weights), str(weights))
    module.eval()
    return module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)


# ---------------------------------------------------------------- model folders


def save_model_folder(
    directory: str | os.PathLike,
    components: dict[str, nn.Module],
    index: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """One subfolder per component + model_index.json {"components": {name: type}, **index}
    (index: schedule, default sampler settings, data card; JSON-serialisable)."""
    directory = Path(directory)
    index = dict(index or {})
    if "components" in index:
        raise ValueError("index must not contain 'components': it is written from the modules")
    for name, module in components.items():
        save_component(module, directory / name, dtype)
    index["components"] = {name: component_type(m) for name, m in components.items()}
    atomic_write_json(directory / INDEX_NAME, index)


def load_model_folder(
    directory: str | os.PathLike, dtype: torch.dtype | None = None, device: str = "cpu"
) -> tuple[dict[str, nn.Module], dict]:
    """-> ({name: module}, index without "components")."""
    directory = Path(directory)
    path = directory / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a t2i model folder")
    index = json.loads(path.read_text())
    names = index.pop("components", None)
    if not isinstance(names, dict):
        raise ValueError(f"{path}: missing 'components' mapping")
    components = {}
    for name, kind in names.items():
        module = load_component(directory / name, dtype, device)
        if component_type(module) != kind:
            raise ValueError(
                f"{path}: component {name!r} is {component_type(module)!r} in its "
                f"config.json but {kind!r} in the index"
            )
        components[name] = module
    return components, index
