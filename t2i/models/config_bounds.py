"""The one rule for a config read from a file: every field of the right JSON type and every size
inside generous but finite bounds, checked on the raw dict before a network is built.

    check_fields(UNetConfig, json.loads(text), "my-model/unet/config.json")

The bounds are what a CPU project could ever train (channels <= 4096, layers <= 64, vocabulary
<= 10^6 words), not what the presets use; they keep a hostile config.json from asking for
gigabytes (`channels` 20000 was 6.4 GB) and zero from reaching a division (`head_dim` 0).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

# int fields (and each element of int lists): inclusive (low, high), by field name
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 16384),  # a patch stem: 3 * 16^2 = 768 (shapes), up to 3 * 64^2
    "out_channels": (1, 16384),
    "cond_channels": (0, 16384),
    "latent_channels": (1, 16384),
    "image_channels": (1, 64),
    "channels": (1, 4096),
    "layers_per_block": (1, 64),
    "attention_levels": (0, 7),  # validate() also keeps them below len(channels)
    "head_dim": (1, 4096),
    "transformer_depth": (1, 64),
    "mid_depth": (0, 64),  # 0: transformer_depth
    "context_dim": (0, 4096),  # 0: no cross-attention
    "pooled_dim": (0, 4096),
    "groups": (1, 4096),
    "patch_size": (1, 64),
    "patch": (1, 64),
    "position_features": (0, 1024),
    "context_layers": (0, 64),
    "stem_kernel": (1, 3),
    "codebook_size": (1, 1_000_000),
    "image_size": (1, 4096),
    "embed_dim": (1, 4096),
    "text_dim": (1, 4096),
    "dim": (1, 4096),
    "layers": (0, 64),
    "heads": (1, 256),
    "max_length": (1, 8192),  # tokens
    "grid": (1, 64),  # codes per side: 4096 tokens
    "ff_mult": (1, 16),
    "outputs": (1, 4096),
    "depth": (1, 64),
    "text_width": (0, 4096),
    "cell_outputs": (0, 4096),
    "steps": (1, 256),  # AlignDRAW's glimpses
    "read_n": (1, 64),
    "write_n": (1, 64),
    "z_dim": (1, 4096),
    "hidden": (1, 4096),
    "word_dim": (1, 4096),
    "align_dim": (1, 4096),
    "cond_dim": (1, 4096),
    "d_channels": (1, 4096),
    "attention_res": (1, 4096),
    "stages": (1, 3),
    "tokens": (1, 256),  # unCLIP: context tokens of an image embedding
}
# float fields (and each element of float lists): inclusive (low, high); every float is finite
FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "dropout": (0.0, 1.0),
    "resample": (0.0, 4.0),  # validate() refuses 0
    "commitment": (0.0, 1e3),
    "ema_decay": (0.0, 1.0),
    "init_temperature": (1e-6, 1e3),
    "max_logit_scale": (1e-6, 1e6),
    "latent_scale": (-1e6, 1e6),
    "latent_shift": (-1e6, 1e6),
    "sigma_data": (1e-6, 1e6),
}
# lists: inclusive (low, high) on their length
LENGTH_BOUNDS: dict[str, tuple[int, int]] = {
    "channels": (1, 8),  # levels: 2^7 downsampling
    "d_channels": (1, 8),
    "attention_levels": (0, 8),
    "vocab": (0, 1_000_000),
    "latent_scale": (1, 16384),
    "latent_shift": (1, 16384),
}
MAX_STRING = 4096  # a path, a vocabulary word
DEFAULT_INT, DEFAULT_FLOAT, DEFAULT_LENGTH = (0, 1_000_000), (-1e6, 1e6), (0, 1024)


def check_fields(config_cls: type, data: dict, source: str, prefix: str = "") -> None:
    """Raise ValueError '<source>: <field> ...' for an unknown key, a wrong type or a size out of
    bounds; nested config dataclasses (CLIPConfig.text) are checked field by field."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: {prefix or 'config'} must be a JSON object, got {_show(data)}")
    hints = typing.get_type_hints(config_cls)
    names = sorted(f.name for f in dataclasses.fields(config_cls) if f.init)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(
            f"{source}: unknown config keys {[prefix + k for k in unknown]}; "
            f"{config_cls.__name__} has {names}"
        )
    for name in names:
        if name in data:
            _check(data[name], hints[name], name, prefix + name, source)


def _check(value, hint, name: str, where: str, source: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        (hint,) = [a for a in args if a is not type(None)]  # configs use X | None only
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not dataclasses.is_dataclass(value):
            check_fields(hint, value, source, prefix=where + ".")
    elif origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: {where} must be a list, got {_show(value)}")
        low, high = LENGTH_BOUNDS.get(name, DEFAULT_LENGTH)
        if not low <= len(value) <= high:
            raise ValueError(f"{source}: {where} has {len(value)} items; allowed {low}..{high}")
        for i, item in enumerate(value):
            _check(item, args[0], name, f"{where}[{i}]", source)
    elif hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{source}: {where} must be true or false, got {_show(value)}")
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{source}: {where} must be an integer, got {_show(value)}")
        _check_range(value, INT_BOUNDS.get(name, DEFAULT_INT), where, source)
    elif hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{source}: {where} must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{source}: {where} must be finite, got {value}")
        _check_range(value, FLOAT_BOUNDS.get(name, DEFAULT_FLOAT), where, source)
    elif hint is str:
        if not isinstance(value, str) or len(value) > MAX_STRING:
            raise ValueError(f"{source}: {where} must be a string (<= {MAX_STRING} characters)")
    else:  # pragma: no cover - a new field type needs a rule here
        raise TypeError(f"no rule for a config field of type {hint}")


def _check_range(value, bounds: tuple, where: str, source: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{source}: {where}={_show(value)} out of bounds; allowed {low}..{high}")


def _show(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."
