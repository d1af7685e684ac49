"""The LoRAs of one loaded model: loaded by file or by name from a LoRA folder, checked against
the exact base they were trained on, and applied per request at the request's scales.

A request names LoRAs as (name, scale) pairs (`<lora:name:scale>` in a prompt parses to one);
`resolve` completes each with the first 12 hex digits of its file's sha256, which the image's
parameters record so `--from` reproduces it or says the file changed. `apply` sets every
attached LoRA's scale for the request (one not named: 0), so requests with different LoRAs can
follow each other on one model without reloading anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from t2i.adapters import lora
from t2i.params import check_lora_name, check_lora_scale

LORA_DIR_ENV = "T2I_LORA_DIR"  # where <lora:name> looks when no folder was given


def load_each(folder: str | Path, load) -> tuple[list[str], list[str]]:
    """`load(path)` on every adapter file of a folder: (what each returned, the refusals)."""
    loaded, skipped = [], []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            loaded.append(load(path))
        except ValueError as err:
            skipped.append(str(err))
    return loaded, skipped


@dataclass
class Loaded:
    path: Path
    meta: lora.LoraMeta
    digest: str  # file_hash: what image parameters record


class LoraSet:
    """LoRAs attached to a model's networks ({"unet": ..., "text_encoder": ...})."""

    def __init__(self, networks: dict[str, nn.Module], model_name: str, folder: Path | None = None):
        self.networks, self.model_name = networks, model_name
        self.loaded: dict[str, Loaded] = {}
        env = os.environ.get(LORA_DIR_ENV)  # over the model's own loras/ folder
        self.folder: Path | None = Path(env) if env else folder
        # a server loads its folder once, before it serves: a request never attaches a module
        # while the worker samples, and names only what was loaded
        self.frozen = False
        self._base_hash: str | None = None

    def base_hash(self) -> str:
        if self._base_hash is None:
            self._base_hash = lora.network_hash(self.networks["unet"])
        return self._base_hash

    def load(self, path: str | Path, name: str | None = None) -> str:
        """Attach the LoRA file at `path` (at scale 0 until a request names it); its name."""
        path = Path(path)
        meta, tensors = lora.read(path)
        name = check_lora_name(name or path.stem)
        if name in self.loaded:
            raise ValueError(f"a LoRA named {name!r} is loaded already ({self.loaded[name].path})")
        if meta.base_hash != self.base_hash():
            raise ValueError(
                f"LoRA {path} was trained on {meta.base!r} (weights {meta.base_hash[:12]}), not "
                f"on this model {self.model_name!r} (weights {self.base_hash()[:12]})"
            )
        missing = sorted(set(meta.networks) - set(self.networks))
        if missing:
            raise ValueError(f"LoRA {path} adapts {missing}, which {self.model_name!r} lacks")
        for prefix in meta.networks:
            lora.load_into(self.networks[prefix], prefix, name, meta, tensors)
            lora.set_scales(self.networks[prefix], self.scales_for({}, prefix))
        self.loaded[name] = Loaded(path, meta, lora.file_hash(path))
        return name

    def unload(self, name: str) -> None:
        if name not in self.loaded:
            raise ValueError(f"no LoRA named {name!r} is loaded; loaded: {sorted(self.loaded)}")
        for prefix in self.loaded.pop(name).meta.networks:
            lora.detach(self.networks[prefix], name)

    def load_folder(self, folder: str | Path) -> tuple[list[str], list[str]]:
        """Load every LoRA in `folder` made for this model: (loaded names, skipped, each with
        its reason)."""
        loaded = load_each(folder, self.load)
        self.folder = Path(folder)
        return loaded

    def find(self, name: str) -> Path:
        """A LoRA's file by name in the LoRA folder."""
        if self.frozen:
            raise ValueError(f"no LoRA named {name!r} here; loaded: {sorted(self.loaded)}")
        if self.folder is None:
            raise ValueError(
                f"LoRA {name!r} is not loaded and no LoRA folder is set: load it (--lora FILE) "
                f"or give the folder (--lora-dir DIR or {LORA_DIR_ENV})"
            )
        path = self.folder / f"{check_lora_name(name)}.safetensors"
        if not path.is_file():
            known = sorted(p.stem for p in self.folder.glob("*.safetensors"))
            raise ValueError(f"no LoRA {name!r} in {self.folder}; it holds {known[:20]}")
        return path

    def resolve(self, requested) -> tuple[tuple[str, float, str], ...]:
        """(name, scale[, hash]) pairs -> (name, scale, hash), each loaded (from the folder when
        not yet); a hash that differs from the loaded file's is an error."""
        out = []
        for entry in requested:
            name = check_lora_name(entry[0])
            scale = check_lora_scale(name, entry[1])
            if name not in self.loaded:
                self.load(self.find(name), name)
            digest = self.loaded[name].digest
            if len(entry) > 2 and entry[2] and entry[2] != digest:
                raise ValueError(
                    f"the image was made with LoRA {name!r} {entry[2]}; "
                    f"{self.loaded[name].path} is {digest}"
                )
            out.append((name, scale, digest))
        return tuple(out)

    def sampling(self, loras: tuple) -> dict:
        """The sampler settings the first LoRA of a request that names some was made for (an
        LCM-LoRA: sampler lcm, few steps, guidance 1), among those applied at a scale > 0."""
        for name, scale, _ in loras:
            if scale and self.loaded[name].meta.sampling:
                return dict(self.loaded[name].meta.sampling)
        return {}

    def apply(self, loras: tuple) -> None:
        """Each attached LoRA at the request's scale (0 when it names it not)."""
        wanted = {name: scale for name, scale, _ in loras}
        for prefix, network in self.networks.items():
            if lora.layers(network):
                lora.set_scales(network, self.scales_for(wanted, prefix))

    def scales_for(self, wanted: dict[str, float], prefix: str) -> dict[str, float]:
        attached = lora.names(self.networks[prefix])
        return {name: wanted.get(name, 0.0) for name in attached}

    def fuse(self, scales: dict[str, float]) -> None:
        """Merge LoRAs into the weights at these scales (a request must then name them so)."""
        for name, scale in scales.items():
            if name not in self.loaded:
                raise ValueError(f"no LoRA named {name!r} is loaded; loaded: {sorted(self.loaded)}")
            check_lora_scale(name, scale)
        for prefix, network in self.networks.items():
            own = {n: s for n, s in scales.items() if prefix in self.loaded[n].meta.networks}
            if own:
                lora.set_scales(network, {**self.scales_for({}, prefix), **own})
                lora.fuse(network, own)

    def unfuse(self) -> None:
        for network in self.networks.values():
            lora.unfuse(network)
