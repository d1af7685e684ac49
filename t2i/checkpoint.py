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
import math
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
from t2i.models.config_bounds import check_fields
from t2i.models.draw import DrawConfig, DrawNet
from t2i.models.gan import GanConfig, GanNet
from t2i.models.noisy_guide import NoisyGuide, NoisyGuideConfig
from t2i.models.semantic import SemanticConfig, SemanticEncoder
from t2i.models.text_encoder import (
    PretrainedTextEncoder,
    PretrainedTextEncoderConfig,
    TextLSTM,
    TextLSTMConfig,
    TextTransformer,
    TextTransformerConfig,
)
from t2i.models.token_transformer import TokenTransformer, TokenTransformerConfig
from t2i.models.unclip import (
    DiffusionPrior,
    EmbeddingRegressor,
    EmbeddingTokens,
    EmbeddingTokensConfig,
    PriorConfig,
    RegressorConfig,
)
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
    "noisy_guide": (NoisyGuide, NoisyGuideConfig),
    "text_lstm": (TextLSTM, TextLSTMConfig),
    "draw": (DrawNet, DrawConfig),
    "gan": (GanNet, GanConfig),
    "diffusion_prior": (DiffusionPrior, PriorConfig),
    "embedding_regressor": (EmbeddingRegressor, RegressorConfig),
    "embedding_tokens": (EmbeddingTokens, EmbeddingTokensConfig),
    "semantic_encoder": (SemanticEncoder, SemanticConfig),
}
CONFIG_NAME, WEIGHTS_NAME, INDEX_NAME = "config.json", "model.safetensors", "model_index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_JSON_BYTES = 16 << 20  # config.json / model_index.json (a 10^6-word vocabulary fits)
MAX_HEADER_BYTES = 100 << 20  # a safetensors header (safetensors' own limit)
MAX_PARAMETERS = 10**9  # per component: 4 GB in fp32, more than a CPU project ever trains
# bytes per element of the safetensors dtypes a state dict can hold
ST_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


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
    """Build a config dataclass after checking every field's type and bounds
    (t2i/models/config_bounds.py); any problem is a ValueError naming the file and field."""
    check_fields(config_cls, data, source)
    try:
        return config_cls(**data)
    except (TypeError, ValueError) as e:  # __post_init__: fields that do not fit together
        raise ValueError(f"{source}: invalid config: {e}") from e


def read_json_object(path: Path) -> dict:
    """A JSON object from a small file; anything else is a ValueError naming the file."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path}: {size} bytes; at most {MAX_JSON_BYTES} are read")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise ValueError(f"{path} is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must be a JSON object, got {type(data).__name__}")
    return data


def confined(path: Path, root: Path, what: str) -> Path:
    """path with symlinks and '..' resolved; a ValueError if that is outside root."""
    resolved, top = path.resolve(), root.resolve()
    if resolved != top and top not in resolved.parents:
        raise ValueError(f"{path}: {what} resolves to {resolved}, outside the model folder {top}")
    return resolved


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} after reading only the 8-byte length and the JSON header; refused:
    a pickle, a bad header, a tensor whose offsets do not match its shape and dtype, a file
    larger or smaller than its header says (a symlink to a 20 GB file is never read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    expected = "a safetensors file (8-byte header length, JSON header, tensor data)"
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
        if not 0 < n <= min(size - 8, MAX_HEADER_BYTES) or head[8:9] != b"{":
            if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip archive / raw pickle
                raise ValueError(
                    f"{path} looks like a pickled PyTorch file (torch.save); t2i loads only "
                    f"{expected}, never pickles. Convert it with safetensors.torch.save_file."
                )
            raise ValueError(f"{path} is not {expected}: bad header (truncated or another format)")
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        tensors, end = _tensor_entries(header)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ValueError(f"{path} is not {expected}: unreadable header ({str(e)[:200]})") from None
    if 8 + n + end != size:
        raise ValueError(
            f"{path} is truncated or padded: header promises {8 + n + end} bytes, file has {size}"
        )
    return tensors


def _tensor_entries(header: dict) -> tuple[dict[str, tuple[str, tuple[int, ...]]], int]:
    """Check each entry's dtype, shape and offsets (contiguous, in order) -> entries, data end."""
    entries, spans = {}, []
    for name, v in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (start, stop) = v["dtype"], v["shape"], v["data_offsets"]
        if dtype not in ST_DTYPE_BYTES:
            raise ValueError(
                f"tensor {name!r}: dtype {str(dtype)[:20]!r}; known {sorted(ST_DTYPE_BYTES)}"
            )
        if not isinstance(shape, list) or len(shape) > 8:
            raise ValueError(f"tensor {name!r}: bad shape {str(shape)[:60]}")
        if not all(type(d) is int and 0 <= d <= 2**40 for d in shape):
            raise ValueError(f"tensor {name!r}: bad shape {str(shape)[:60]}")
        if not (type(start) is int and type(stop) is int and 0 <= start <= stop):
            raise ValueError(f"tensor {name!r}: bad data_offsets")
        if stop - start != math.prod(shape) * ST_DTYPE_BYTES[dtype]:
            raise ValueError(f"tensor {name!r}: {stop - start} bytes for shape {shape} {dtype}")
        entries[name] = (dtype, tuple(shape))
        spans.append((start, stop))
    at = 0
    for start, stop in sorted(spans):
        if start != at:
            raise ValueError("tensor data overlaps or leaves gaps")
        at = stop
    return entries, at


def read_safetensors(
    path: str | os.PathLike, expected: dict[str, tuple[int, ...]] | None = None
) -> dict[str, torch.Tensor]:
    """Read a safetensors file after checking its header (read_safetensors_header); with
    `expected` ({name: shape}), names and shapes are compared before the data is read. Every
    floating tensor must be finite (a NaN weight is a black image)."""
    path = Path(path)
    header = read_safetensors_header(path)
    if expected is not None:
        check_names_and_shapes({k: s for k, (_, s) in header.items()}, expected, str(path))
    try:
        tensors = st_load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error type
        raise ValueError(f"{path} is not a safetensors file: {str(e)[:200]}") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values")
    return tensors


def check_names_and_shapes(
    found: dict[str, tuple[int, ...]], own: dict[str, tuple[int, ...]], source: str, what="model"
) -> None:
    """Every name present on both sides with the same shape; else one error listing them all."""
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    mismatched = [
        f"{k}: file {tuple(found[k])} vs {what} {tuple(own[k])}"
        for k in sorted(set(own) & set(found))
        if tuple(found[k]) != tuple(own[k])
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source} does not fit {what}: missing {missing[:20]}, "
            f"unexpected {unexpected[:20]}, shape mismatches {mismatched[:20]}"
        )


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors into module after checking every name and shape; lists every problem."""
    own = module.state_dict()
    check_names_and_shapes(
        {k: tuple(v.shape) for k, v in tensors.items()},
        {k: tuple(v.shape) for k, v in own.items()},
        source,
        type(module).__name__,
    )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(tensors[k])  # casts to the module's dtype (fp16 file -> fp32 model)


def planned_shapes(module_cls: type[nn.Module], config, source: str) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the state dict module_cls(config) would have, built on the meta device
    (nothing allocated, the global RNG untouched); more than MAX_PARAMETERS is refused."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            module = module_cls(config)
    except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError) as e:
        raise ValueError(f"{source}: cannot build {module_cls.__name__}: {str(e)[:200]}") from None
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    n = sum(math.prod(s) for s in shapes.values())
    if n > MAX_PARAMETERS:
        raise ValueError(f"{source}: {n:,} parameters; a component has at most {MAX_PARAMETERS:,}")
    return shapes


def load_component(
    directory: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    root: str | os.PathLike | None = None,
) -> nn.Module:
    """Build the component named in config.json and load its weights (checked). dtype None: fp32.

    Every file read must resolve inside `root` (the model folder; None: `directory`). The config
    is checked field by field, the weights file's header against the network's shapes, all
    before the network is allocated."""
    directory = Path(directory)
    root = Path(root) if root is not None else directory
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: not a t2i component folder")
    confined(config_path, root, CONFIG_NAME)
    data = read_json_object(config_path)
    kind = data.pop("type", None)
    if not isinstance(kind, str) or kind not in COMPONENT_TYPES:
        raise ValueError(
            f"{config_path}: type: component type {str(kind)[:60]!r}; "
            f"choose from {sorted(COMPONENT_TYPES)}"
        )
    module_cls, config_cls = COMPONENT_TYPES[kind]
    config = config_from_dict(config_cls, data, str(config_path))
    if getattr(module_cls, "save_weights", True):
        weights = directory / WEIGHTS_NAME
        if weights.is_symlink() or weights.exists():
            confined(weights, root, WEIGHTS_NAME)
        tensors = read_safetensors(weights, planned_shapes(module_cls, config, str(config_path)))
        module = module_cls(config)
        load_weights(module, tensors, str(weights))
    else:  # a pointer (PretrainedTextEncoder): a relative path is the component folder's
        module = module_cls(_pointer_resolved(config, directory, root, config_path))
        module.config = config  # saved again as it was written
    module.eval()
    return module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)


def _pointer_resolved(config, directory: Path, root: Path, config_path: Path):
    """A relative `path` resolves against the component folder (never the working directory)
    and must stay inside the model folder; an absolute one is the user's own folder."""
    if config.path is None or os.path.isabs(config.path):
        return config
    where = confined(directory / config.path, root, f"{config_path.name}: path")
    return dataclasses.replace(config, path=str(where))


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


def _plain_name(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


# model_index.json fields every family reads before it starts: int sizes, bounded
INDEX_SIZES = {"image_size": (1, 4096), "low_res": (1, 4096)}


def check_index(index: dict, path: Path) -> None:
    """The fields of model_index.json that size anything: types and bounds, named with the file."""
    for key, (low, high) in INDEX_SIZES.items():
        v = index.get(key)
        if key in index and (type(v) is not int or not low <= v <= high):
            raise ValueError(
                f"{path}: {key} must be an integer in {low}..{high}, got {str(v)[:60]}"
            )
    for key in ("family", "base", "parameterisation"):
        if key in index and not isinstance(index[key], str):
            raise ValueError(f"{path}: {key} must be a string, got {str(index[key])[:60]}")
    for key in ("schedule", "sampler"):
        if key in index and not isinstance(index[key], dict):
            raise ValueError(f"{path}: {key} must be a JSON object, got {str(index[key])[:60]}")


def load_model_folder(
    directory: str | os.PathLike, dtype: torch.dtype | None = None, device: str = "cpu"
) -> tuple[dict[str, nn.Module], dict]:
    """-> ({name: module}, index without "components"). Each component is a subfolder of
    `directory` (a name, no symlink out of it) and every file it reads stays inside it."""
    directory = Path(directory)
    path = directory / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a t2i model folder")
    index = read_json_object(path)
    names = index.pop("components", None)
    if not isinstance(names, dict) or not names:
        raise ValueError(f"{path}: components: missing or not an object {{name: type}}")
    check_index(index, path)
    components = {}
    for name, kind in names.items():
        if not _plain_name(name):
            raise ValueError(f"{path}: components: {name[:60]!r} must name a subfolder")
        if not isinstance(kind, str) or kind not in COMPONENT_TYPES:
            raise ValueError(
                f"{path}: components.{name}: type {str(kind)[:60]!r}; "
                f"choose from {sorted(COMPONENT_TYPES)}"
            )
        confined(directory / name, directory, f"component {name!r}")
        module = load_component(directory / name, dtype, device, root=directory)
        if component_type(module) != kind:
            raise ValueError(
                f"{path}: components.{name}: {component_type(module)!r} in its "
                f"config.json but {kind!r} in the index"
            )
        components[name] = module
    return components, index
