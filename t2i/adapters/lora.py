"""LoRA (Hu et al. 2022): low-rank weight deltas beside a frozen network's Linear and Conv2d layers.

A targeted layer is wrapped in `LoraLayer`, which computes `base(x) + sum_i s_i * up_i(down_i(x))
* alpha_i / rank_i` over the adapters attached to it, each under its own name with its own scale,
so several apply together at run time and a scale of 0 is exactly the base network. `down` starts
random and `up` at zero, so a fresh adapter changes nothing until trained.

Fusing merges adapters into the base weights in fp32 (one matmul per layer instead of three at
sampling time) and keeps the original weights, so unfusing copies them back bit for bit rather
than subtracting. `detach` puts the original modules back.

The file is one safetensors file: tensors `<network>.<layer path>.lora_down.weight` / `lora_up`,
and in the header's metadata `t2i_adapter` = JSON of `LoraMeta` (the base model it was trained
on, the hash of that base's network weights, rank, alpha, targets, trigger words). A file is
bounded and checked against the network before it attaches; a different base is an error naming
both.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

KIND = "lora"
FORMAT = 1
META_KEY = "t2i_adapter"
MAX_FILE_BYTES = 512 * 2**20  # an adapter is small; this bounds what a hostile file can cost
MAX_RANK = 256
# the attention projections of the UNet and of the trained text encoder (t2i/models/layers.py)
ATTENTION = ("*to_q", "*to_kv", "*to_qkv", "*to_out")
CONVS = ("*conv1", "*conv2")  # the ResBlocks' 3x3 convolutions


@dataclass
class LoraConfig:
    rank: int = 4  # the deltas' rank r
    alpha: float = 4.0  # the deltas are scaled by alpha / rank (alpha = rank: scale 1)
    targets: tuple[str, ...] = ATTENTION  # fnmatch patterns over layer paths (Linear, Conv2d)
    dropout: float = 0.0  # dropout on the adapter's input while training
    convs: bool = False  # also the ResBlocks' convolutions (CONVS)
    text_encoder: bool = False  # also the trained text encoder's attention (word-level only)

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= MAX_RANK:
            raise ValueError(f"lora rank must be in [1, {MAX_RANK}], got {self.rank}")
        if not (math.isfinite(self.alpha) and 0 < self.alpha <= 4 * MAX_RANK):
            raise ValueError(f"lora alpha must be in (0, {4 * MAX_RANK}], got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("lora targets: give at least one layer pattern, e.g. '*to_q'")

    def patterns(self) -> tuple[str, ...]:
        return tuple(self.targets) + (CONVS if self.convs else ())


@dataclass
class LoraMeta:
    """What a LoRA file says about itself (its safetensors header, as JSON)."""

    name: str
    base: str  # the base model's name (a bundled name or its folder's name)
    base_hash: str  # sha256 of the base's UNet weights file: the exact base it was trained on
    rank: int
    alpha: float
    targets: list[str]
    networks: list[str]  # "unet", and "text_encoder" when it adapts the trained encoder
    trigger: list[str] = field(default_factory=list)  # words its captions used for the concept
    # the sampler settings it was made for (an LCM-LoRA: {"name": "lcm", "steps", "guidance_scale"})
    sampling: dict = field(default_factory=dict)
    kind: str = KIND
    format: int = FORMAT


class LowRank(nn.Module):
    """One adapter on one layer: x -> up(down(dropout(x))) * alpha / rank."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.rank, self.alpha = rank, alpha
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        else:
            if base.groups != 1:
                raise ValueError("lora: grouped convolutions are not supported")
            self.down = nn.Conv2d(
                base.in_channels,
                rank,
                base.kernel_size,
                base.stride,
                base.padding,
                base.dilation,
                bias=False,
            )
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))  # as nn.Linear's own init
        nn.init.zeros_(self.up.weight)  # a fresh adapter is exactly the base network
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.to(base.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(self.dropout(x))) * (self.alpha / self.rank)

    def delta(self) -> torch.Tensor:
        """The dense weight change, in fp32, of the base weight's shape."""
        up = self.up.weight.float().flatten(1)  # (out, r)
        down = self.down.weight.float().flatten(1)  # (r, in * k * k)
        shape = (up.shape[0], *self.down.weight.shape[1:])
        return (up @ down).view(shape) * (self.alpha / self.rank)


class LoraLayer(nn.Module):
    """A frozen Linear or Conv2d with named low-rank adapters beside it."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleDict()
        self.scales: dict[str, float] = {}
        self.merged: dict[str, float] = {}  # fused adapters and the scale each was fused at
        self.original: torch.Tensor | None = None  # the base weight while anything is fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        for name, adapter in self.adapters.items():
            scale = self.scales.get(name, 0.0)
            if scale and name not in self.merged:
                y = y + scale * adapter(x).to(y.dtype)
        return y


def network_hash(network: nn.Module) -> str:
    """sha256 of a network's own weights in fp16 (the precision models ship in), LoRAs and
    learnt words left out: the identity of the exact base an adapter was trained on."""
    digest = hashlib.sha256()
    state = network.state_dict()
    for key in sorted(k for k in state if ".adapters." not in k and ".learnt." not in k):
        digest.update(key.replace(".base.", ".").encode())
        digest.update(state[key].detach().to(torch.float16).cpu().numpy().tobytes())
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    """The first 12 hex digits of a file's sha256: how an image's parameters name its LoRA."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------- attach, scale, detach


def targeted(network: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Paths of the Linear / Conv2d layers whose path matches any pattern."""
    found = []
    for path, module in network.named_modules():
        if isinstance(module, LoraLayer):
            found.append(path)
        elif isinstance(module, (nn.Linear, nn.Conv2d)) and not path.endswith(".base"):
            if any(fnmatch.fnmatchcase(path, p) for p in patterns) and ".adapters." not in path:
                found.append(path)
    return found


def attach(network: nn.Module, name: str, cfg: LoraConfig, paths: list[str] | None = None):
    """Add a fresh adapter `name` (scale 1) to the targeted layers; returns their paths."""
    paths = targeted(network, cfg.patterns()) if paths is None else paths
    if not paths:
        raise ValueError(f"lora targets {list(cfg.patterns())} match no layer of the network")
    for path in paths:
        layer = wrap(network, path)
        if name in layer.adapters:
            raise ValueError(f"a LoRA named {name!r} is attached already; detach it first")
        layer.adapters[name] = LowRank(layer.base, cfg.rank, cfg.alpha, cfg.dropout)
        layer.scales[name] = 1.0
    return paths


def wrap(network: nn.Module, path: str) -> LoraLayer:
    """The LoraLayer at `path`, wrapping the plain layer there on first use."""
    parent_path, _, leaf = path.rpartition(".")
    parent = network.get_submodule(parent_path) if parent_path else network
    module = getattr(parent, leaf)
    if isinstance(module, LoraLayer):
        return module
    layer = LoraLayer(module)
    setattr(parent, leaf, layer)
    return layer


def layers(network: nn.Module) -> dict[str, LoraLayer]:
    return {p: m for p, m in network.named_modules() if isinstance(m, LoraLayer)}


def names(network: nn.Module) -> list[str]:
    """The adapters attached to a network, in the order they were attached."""
    return list(dict.fromkeys(n for layer in layers(network).values() for n in layer.adapters))


def set_scales(network: nn.Module, scales: dict[str, float]) -> None:
    """Each adapter's scale (an adapter not named: 0, it stays attached but does nothing)."""
    unknown = sorted(set(scales) - set(names(network)))
    if unknown:
        raise ValueError(f"no LoRA named {unknown} is attached; attached: {names(network)}")
    for layer in layers(network).values():
        for name in layer.adapters:
            if name in layer.merged and scales.get(name, 0.0) != layer.merged[name]:
                raise ValueError(f"LoRA {name!r} is fused at {layer.merged[name]}: unfuse first")
            layer.scales[name] = float(scales.get(name, 0.0))


def detach(network: nn.Module, name: str | None = None) -> None:
    """Remove adapter `name` (every adapter when None); a layer left with none is unwrapped."""
    for path, layer in layers(network).items():
        if layer.merged:
            raise ValueError(f"LoRA {sorted(layer.merged)} fused in {path}: unfuse before detach")
        for key in [name] if name is not None else list(layer.adapters):
            if key in layer.adapters:
                del layer.adapters[key]
                layer.scales.pop(key, None)
        if not layer.adapters:
            parent_path, _, leaf = path.rpartition(".")
            parent = network.get_submodule(parent_path) if parent_path else network
            setattr(parent, leaf, layer.base)


# ---------------------------------------------------------------- fuse, unfuse


@torch.no_grad()
def fuse(network: nn.Module, scales: dict[str, float] | None = None) -> None:
    """Merge adapters into the base weights at their scales (all attached, at their current
    scales, when None): W = W0 + sum_i s_i * delta_i, computed in fp32 from the kept W0."""
    for layer in layers(network).values():
        chosen = scales if scales is not None else dict(layer.scales)
        todo = {n: s for n, s in chosen.items() if n in layer.adapters and n not in layer.merged}
        if not todo:
            continue
        if layer.original is None:
            layer.original = layer.base.weight.detach().clone()
        merged = {**layer.merged, **todo}
        weight = layer.original.float()
        for name, scale in merged.items():
            weight = weight + scale * layer.adapters[name].delta()
        layer.base.weight.copy_(weight.to(layer.base.weight.dtype))
        layer.merged = merged
        for name, scale in todo.items():
            layer.scales[name] = scale


@torch.no_grad()
def unfuse(network: nn.Module) -> None:
    """The original base weights back, bit for bit; the adapters stay attached, unfused."""
    for layer in layers(network).values():
        if layer.original is not None:
            layer.base.weight.copy_(layer.original)
            layer.original, layer.merged = None, {}


# ---------------------------------------------------------------- files


def adapter_state(network: nn.Module, name: str, prefix: str) -> dict[str, torch.Tensor]:
    """Adapter `name`'s tensors, keyed `<prefix>.<layer path>.lora_down.weight` / `lora_up`."""
    out = {}
    for path, layer in layers(network).items():
        if name in layer.adapters:
            adapter = layer.adapters[name]
            out[f"{prefix}.{path}.lora_down.weight"] = adapter.down.weight.detach().contiguous()
            out[f"{prefix}.{path}.lora_up.weight"] = adapter.up.weight.detach().contiguous()
    return out


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: LoraMeta, dtype=None) -> Path:
    """One safetensors file; fp16 by default (the adapters' precision is the base's concern)."""
    dtype = dtype or torch.float16
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.to(dtype).contiguous() for k, v in tensors.items()},
        str(path),
        metadata={META_KEY: json.dumps(asdict(meta))},
    )
    return path


def read(path: str | Path) -> tuple[LoraMeta, dict[str, torch.Tensor]]:
    """A LoRA file's metadata and tensors, every field and shape bounded before use."""
    header, tensors = read_adapter_file(path, "a LoRA", MAX_FILE_BYTES)
    return parse_meta(header, Path(path)), check_tensors(tensors, Path(path))


def read_adapter_file(path: str | Path, what: str, max_bytes: int) -> tuple[dict, dict]:
    """(header metadata, tensors) of an adapter's safetensors file: its suffix, existence and size
    checked before it is opened (t2i never unpickles)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: {what} is a .safetensors file (t2i never unpickles)")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path}: {path.stat().st_size} bytes; {what} is under {max_bytes}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own errors for a damaged header
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def parse_meta(header: dict, path: Path) -> LoraMeta:
    if META_KEY not in header:
        raise ValueError(f"{path}: no {META_KEY!r} metadata; not a t2i LoRA file")
    try:
        data = json.loads(header[META_KEY])
    except ValueError as err:
        raise ValueError(f"{path}: {META_KEY} metadata is not JSON ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ValueError(f"{path}: kind {data.get('kind') if isinstance(data, dict) else data!r}")
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}; this t2i reads {FORMAT}")
    try:
        meta = LoraMeta(**data)
        LoraConfig(rank=meta.rank, alpha=meta.alpha, targets=tuple(meta.targets))
        check_sampling(meta.sampling)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad LoRA metadata: {err}") from None
    return meta


# grid_steps: the distillation grid an LCM-LoRA's few steps are picked from (schedules.lcm_grid)
SAMPLING_KEYS = {"name", "steps", "guidance_scale", "grid_steps"}


def check_sampling(sampling) -> None:
    """The sampler settings a LoRA names: a dict of SAMPLING_KEYS with plain values."""
    if not isinstance(sampling, dict) or not set(sampling) <= SAMPLING_KEYS:
        raise ValueError(
            f"sampling must be a dict of {sorted(SAMPLING_KEYS)}, got {str(sampling)[:80]}"
        )
    for key, value in sampling.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"sampling.{key} must be a string or number, got {str(value)[:40]}")
    grid = sampling.get("grid_steps", 1)
    if not isinstance(grid, int) or not 1 <= grid <= 1000:
        raise ValueError(f"sampling.grid_steps must be an integer in [1, 1000], got {grid!r}")


def check_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    for key, t in tensors.items():
        if not key.endswith((".lora_down.weight", ".lora_up.weight")):
            raise ValueError(f"{path}: tensor {key!r} is not a LoRA weight")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: tensor {key!r} is not finite floating point")
    return tensors


def load_into(network: nn.Module, prefix: str, name: str, meta: LoraMeta, tensors: dict) -> int:
    """Attach adapter `name` to the layers `tensors` name under `prefix`; every shape checked
    against the network first. Returns the number of layers adapted."""
    own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    paths = sorted({k.rsplit(".lora_", 1)[0] for k in own})
    cfg = LoraConfig(rank=meta.rank, alpha=meta.alpha, targets=tuple(meta.targets))
    for path in paths:
        try:
            module = network.get_submodule(path)
        except AttributeError:
            raise ValueError(f"LoRA {name!r}: the network has no layer {prefix}.{path}") from None
        base = module.base if isinstance(module, LoraLayer) else module
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise ValueError(f"LoRA {name!r}: {prefix}.{path} is not a Linear or Conv2d layer")
        probe = LowRank(base, cfg.rank, cfg.alpha)
        for part in ("down", "up"):
            t = own.get(f"{path}.lora_{part}.weight")
            want = getattr(probe, part).weight.shape
            if t is None or t.shape != want:
                got = None if t is None else tuple(t.shape)
                raise ValueError(
                    f"LoRA {name!r}: {prefix}.{path} {part} is {got}, not {tuple(want)}"
                )
    attach(network, name, cfg, paths)
    for path in paths:
        adapter = layers(network)[path].adapters[name]
        with torch.no_grad():
            adapter.down.weight.copy_(own[f"{path}.lora_down.weight"])
            adapter.up.weight.copy_(own[f"{path}.lora_up.weight"])
    return len(paths)
