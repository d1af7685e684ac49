"""The guides of one loaded model: loaded by folder, resolved per request by name (with the
weights hash an image records), their targets put into the condition dict, their wrappers put
around the guided denoiser. A `Generator` holds one as `pipe.guides`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from t2i.guides.guide import Guide, check_fits, load_guide
from t2i.params import check_guides


class GuideSet:
    """Guides loaded onto a model whose sampler draws `space()` = (channels, side) samples."""

    def __init__(self, model_name: str, space: Callable[[], tuple[int, int]]):
        self.model_name, self.space = model_name, space
        self.loaded: dict[str, Guide] = {}

    def load(self, path, name: str | None = None, kind: str | None = None) -> str:
        """A guide folder, checked against the model's sampling space; returns its name (the
        one it was trained under, else its folder's)."""
        return self.add(load_guide(path, kind), name)

    def add(self, guide: Guide, name: str | None = None) -> str:
        """A guide already read (a server puts one folder onto several models)."""
        check_fits(guide, *self.space(), self.model_name)
        name = name or guide.net.config.name or Path(guide.path).resolve().name
        check_guides([(name, 1.0, "")])
        self.loaded[name] = guide
        return name

    def resolve(self, requested, recorded=()) -> tuple[tuple[str, float, str], ...]:
        """(name, scale) pairs -> (name, scale, weights hash), each guide loaded; `recorded`
        (an image's own list) must name the same weights."""
        digests = {entry[0]: entry[2] for entry in recorded}
        out = []
        for entry in requested:
            name, scale = entry[0], entry[1]
            guide = self.loaded.get(name)
            if guide is None:
                loaded = sorted(self.loaded) or "none"
                raise ValueError(
                    f"guide {name!r} is not loaded (loaded: {loaded}); load it with "
                    "--guide KIND:DIR[:SCALE] (or the server's --guide-dir)"
                )
            if digests.get(name, guide.digest) != guide.digest:
                raise ValueError(
                    f"the image was made with guide {name!r} {digests[name]}; the loaded one is "
                    f"{guide.digest}"
                )
            out.append((name, scale, guide.digest))
        return tuple(out)

    def check_prompts(self, guides, prompts: list[str]) -> None:
        """ValueError for a prompt one of the request's guides cannot read."""
        for name, _, _ in guides:
            for prompt in prompts:
                self.loaded[name].check_prompt(prompt)

    def targets(self, guides, prompts: list[str], cond: dict) -> dict:
        """Each guide's targets for a batch under keys "guide<i>.<key>": its wrapper takes
        them, the networks never see them."""
        out = {}
        for i, (name, _, _) in enumerate(guides):
            for key, value in self.loaded[name].targets(prompts, cond).items():
                out[f"guide{i}.{key}"] = value
        return out

    def wrap(self, model, guides):
        """`model` steered by each of the request's guides at its scale."""
        for i, (name, scale, _) in enumerate(guides):
            model = self.loaded[name].wrap(model, scale, prefix=f"guide{i}.")
        return model
