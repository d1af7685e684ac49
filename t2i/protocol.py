"""The generation protocol: what every family of models answers, so the CLI, the server, `t2i
eval` and the web page ask a model what it can do instead of testing its type.

A family (diffusion, cascade, autoregressive; GAN, AlignDRAW, unCLIP later) is a sibling class
of `Generator`; `t2i.families.load` picks it from model_index.json. A family implements:

    supports -> Supports                 samplers, whether steps are chosen, editing, inversion, ...
    defaults -> dict                     name (sampler), steps, guidance_scale[, guidance_interval]
    image_size, image_channels, factor   the size it draws, and what image sides must divide by
    check(p)                             what only this family knows of a request (sizes, samplers)
    total_steps(p) -> int                progress callbacks generating p makes, every stage counted
    draw(p, seeds, cond, callback)       (n, C, H, W) in [-1, 1]; image i from seeds[i]
    networks() -> list[nn.Module]        whose forward calls are the network evaluations (NFE;
                                         `counted` hooks them, a family may count otherwise)

and inherits the rest: `params` (a request completed with the defaults and checked), `generate`,
`generate_items` (one call over items with their own prompts and seeds: the server's batches,
`t2i eval`), `encode_text` (cached per prompt) and `__call__` (PIL images carrying their
parameters). Image i of a call is the image made alone from its seed.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from t2i.a1111 import t2i_sampler
from t2i.adapters import embeddings
from t2i.adapters.control import ControlSet, request_controls
from t2i.adapters.lora import file_hash, network_hash
from t2i.adapters.lora_set import LoraSet, load_each
from t2i.guides.guide_set import GuideSet
from t2i.images import read_image_size, to_pil
from t2i.params import (
    PNG_KEY,
    GenerationParams,
    check_common,
    check_seeds,
    resolve_interval,
)
from t2i.prompts import encode_prompt, split_lora_tags, unknown_words

MAX_CACHED_PROMPTS = 1024  # text states kept per model (~0.1 MB each for long prompts)
REQUEST_KEYS = {
    "negative",
    "sampler",
    "steps",
    "guidance",
    "seed",
    "size",
    "init",
    "mask",
    "strength",
    "resample",
    "mask_blur",
    "guidance_interval",
    "loras",
    "embeddings",
    "guides",
    "controls",
    "guess_mode",
    "image_prompt",
    "cads_noise",
    "cads_interval",
}


# what an LCM-LoRA's own sampling settings reset of its base's card: it was distilled and measured
# without a guidance interval or CADS
DISTILLED_SAMPLING = {"guidance_interval": None, "cads_noise": 0.0, "cads_interval": None}


@dataclass(frozen=True)
class Supports:
    """What a loaded model can do; the server sends it to the page with the model's defaults."""

    samplers: tuple[str, ...]
    steps: bool = True  # a request chooses the number of steps (else the model fixes them)
    guidance_interval: bool = False  # guidance limited to a range of noise levels
    img2img: bool = False
    inpainting: bool = False
    inversion: bool = False  # image -> the noise that draws it (needed by image interpolation)
    interpolation: bool = False  # walks between two seeds' noise and two prompts' text states
    adapters: tuple[str, ...] = ()  # kinds of adapter that attach to its networks (t2i/adapters)
    guides: bool = False  # noise-aware classifiers and noisy CLIPs steer it (t2i/guides)
    image_prompt: bool = False  # draws from an image's embedding (unCLIP's variations)
    cads: bool = False  # condition-annealed sampling: a noise-levelled blur of the prompt

    def to_json(self) -> dict:
        return asdict(self)


def _listed(interval):
    """An interval given as a tuple (Python) or list (JSON) as the list a PNG stores."""
    return list(interval) if isinstance(interval, tuple) else interval


def uses_word(text: str, word: str) -> bool:
    """Whether `word` stands as a word of its own in `text`, in any case."""
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text.lower()) is not None


class Generator(ABC):
    """A loaded model folder of any family: text encoder, networks, defaults."""

    family: str = ""

    def __init__(self, text_encoder, index: dict, name: str = "", bf16: bool = False):
        self.text_encoder, self.index, self.name = text_encoder, index, name
        # bf16 autocast of the networks: faster on CPUs with AMX/AVX512-BF16; its accuracy
        # against fp32 is measured in BENCHMARKS.md ("Generation time")
        self.bf16 = bf16
        # prompt -> text states, least recently used evicted past MAX_CACHED_PROMPTS (a server
        # sees unboundedly many distinct prompts)
        self._text_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._loras: LoraSet | None = None
        self.lora_dir: Path | None = None  # the model folder's loras/: where names are found
        self.control_dir: Path | None = None  # the model folder's controls/: found by name
        self._controls: ControlSet | None = None
        self.pinned_loras: dict[str, float] = {}  # applied in every request (an adapting folder)
        self._text_loras: tuple = ()  # LoRAs on the text encoder the cached states were made with
        self._word_files: dict[str, str] = {}  # learnt word -> file_hash of its embedding file
        self._model_hash: str | None = None
        self.guides = GuideSet(name, self.guide_space)  # t2i/guides

    # ------------------------------------------------------------ what a family says

    @property
    @abstractmethod
    def supports(self) -> Supports: ...

    @property
    @abstractmethod
    def defaults(self) -> dict: ...

    @property
    @abstractmethod
    def factor(self) -> int: ...

    @property
    @abstractmethod
    def image_channels(self) -> int: ...

    @abstractmethod
    def check(self, p: GenerationParams) -> None: ...

    @abstractmethod
    def total_steps(self, p: GenerationParams) -> int: ...

    @abstractmethod
    def draw(
        self, p: GenerationParams, seeds: list[int], cond: dict, callback: Callable | None
    ) -> torch.Tensor: ...

    @abstractmethod
    def networks(self) -> list[torch.nn.Module]: ...

    def likelihood(
        self, images: torch.Tensor, prompts: list[str], timesteps=None, generator=None
    ) -> dict[str, torch.Tensor]:
        """Per image (B,), bits per dimension of images (B, C, H, W) in [-1, 1] on 8 bits given
        their prompts: the family's own bound or exact likelihood, one entry per variant it
        has (a diffusion model's reverse variances). A family with none raises."""
        raise ValueError(f"the {self.family} family reports no likelihood")

    def preview(self, info: dict, index: int = 0) -> torch.Tensor | None:
        """(C, H, W) in [-1, 1]: what image `index` of a sampler step's progress `info` looks
        like so far, for a live preview; None when the family has no such estimate."""
        return None

    # ------------------------------------------------------------ shared

    @property
    def image_size(self) -> int:
        return int(self.index.get("image_size", 64))

    @property
    def samplers(self) -> list[str]:
        return list(self.supports.samplers)

    # ------------------------------------------------------------ adapters

    def adapter_networks(self) -> dict[str, torch.nn.Module]:
        """The networks adapters change, by the names their files use ("unet",
        "text_encoder"); a family that lists "lora" in `supports.adapters` names them."""
        return {}

    @property
    def loras(self) -> LoraSet:
        """The LoRAs of this model (t2i/adapters/lora_set.py): load, unload, fuse, unfuse."""
        if "lora" not in self.supports.adapters:
            raise ValueError(f"model {self.name!r} ({self.family}) takes no LoRA")
        if self._loras is None:
            self._loras = LoraSet(self.adapter_networks(), self.name, self.lora_dir)
        return self._loras

    def load_lora(self, path, name: str | None = None) -> str:
        """Attach a LoRA file (by default named after it); a request applies it by name."""
        return self.loras.load(path, name)

    @property
    def controls(self) -> ControlSet:
        """The spatial controls of this model (t2i/adapters/control.py): ControlNets and
        T2I-Adapters, loaded by folder or found by name in the model folder's controls/."""
        if "control" not in self.supports.adapters:
            raise ValueError(f"model {self.name!r} ({self.family}) takes no spatial control")
        if self._controls is None:
            unet = self.adapter_networks()["unet"]
            self._controls = ControlSet(unet, self.name, self.control_dir)
        return self._controls

    def load_control(self, path, name: str | None = None) -> str:
        """Attach a control folder; a request applies it by name with its condition image."""
        return self.controls.load(path, name)

    def load_embedding(self, path) -> str:
        """Add a textual-inversion word (t2i/adapters/embeddings.py) to the text encoder; the
        word then reads its learnt vectors in every prompt. Returns the word."""
        word = embeddings.load(self.text_encoder, path, self.name)
        self._word_files[word] = file_hash(path)
        self._text_cache.clear()
        return word

    # ------------------------------------------------------------ guides

    def guide_space(self) -> tuple[int, int]:
        """(channels, side) of what its sampler draws at the default size: what a guide reads."""
        raise ValueError(f"model {self.name!r} ({self.family}) takes no guide")

    def load_guide(self, path, name: str | None = None, kind: str | None = None) -> str:
        """Attach a guide folder (t2i/guides; named as it was trained, else after its folder);
        a request applies it by name and scale. `kind` ("classifier" or "clip"), when given,
        must be what it is."""
        if not self.supports.guides:
            raise ValueError(f"model {self.name!r} ({self.family}) takes no guide")
        return self.guides.load(path, name, kind)

    def condition(self, p: GenerationParams, prompts: list[str]) -> dict:
        """The text states of a batch of prompts, and each guide's targets for them."""
        cond = self.encode_text(prompts)
        return {**cond, **self.guides.targets(p.guides, prompts, cond)} if p.guides else cond

    @property
    def model_hash(self) -> str:
        """The first 10 hex digits of a hash of its networks' weights as loaded (A1111's "Model
        hash"; LoRAs and learnt words left out), computed once."""
        if self._model_hash is None:
            digests = "".join(network_hash(net) for net in self.networks())
            self._model_hash = hashlib.sha256(digests.encode()).hexdigest()[:10]
        return self._model_hash

    @property
    def words_loaded(self) -> list[str]:
        """The learnt words (textual inversion) its prompts may use."""
        return sorted(self._word_files)

    def learnt_words(self, p: GenerationParams, recorded=()) -> tuple[tuple[str, str], ...]:
        """(word, file hash) of each learnt word the prompts use, as an image records them;
        each word of `recorded` (an image's own list) that the prompts use must be loaded from
        that same file."""
        text = f"{p.prompt} {p.negative or ''}"
        for word, digest in recorded:
            have = self._word_files.get(word)
            if not uses_word(text, word) or have == digest:
                continue
            if have is None:
                raise ValueError(
                    f"the image used the learnt word {word!r} (embedding file {digest}); "
                    "load it with --embedding FILE (or the server's --embedding-dir)"
                )
            raise ValueError(
                f"the image was made with learnt word {word!r} {digest}; the loaded file is {have}"
            )
        return tuple((w, h) for w, h in self._word_files.items() if uses_word(text, w))

    def load_embeddings(self, folder) -> tuple[list[str], list[str]]:
        """Every embedding file in `folder` learnt on this model, as A1111 loads its embeddings
        folder: (the words added, the files skipped with why)."""
        return load_each(folder, self.load_embedding)

    def unknown_words(self, p: GenerationParams) -> list[str]:
        """Words of the prompt and the negative prompt that the model cannot read (each becomes
        one unknown token): the CLI warns, the server reports them."""
        encoder = getattr(self, "text_encoder", None)
        texts = [p.prompt, p.negative or ""]
        return list(dict.fromkeys(w for t in texts for w in unknown_words(encoder, t)))

    def encode_text(self, prompts: list[str]) -> dict:
        """{context (B, L, D), context_mask (B, L)}; each distinct prompt is encoded once,
        weighted and chunked by t2i.prompts.encode_prompt."""
        states = {p: self._cached_states(p) for p in dict.fromkeys(prompts)}
        length = max(states[p][0].shape[0] for p in prompts)
        ctx = torch.zeros(len(prompts), length, states[prompts[0]][0].shape[-1])
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            c, m = states[p]
            ctx[i, : len(c)], mask[i, : len(m)] = c, m
        return {"context": ctx, "context_mask": mask}

    def _cached_states(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if prompt in self._text_cache:
            self._text_cache.move_to_end(prompt)
        else:
            self._text_cache[prompt] = encode_prompt(self.text_encoder, prompt)
            while len(self._text_cache) > MAX_CACHED_PROMPTS:
                self._text_cache.popitem(last=False)
        return self._text_cache[prompt]

    def apply_loras(self, p: GenerationParams) -> None:
        """The request's LoRAs at its scales, every other attached one at 0."""
        if not (p.loras or self._loras is not None):
            return
        self.loras.apply(p.loras)
        loaded = self.loras.loaded
        text = tuple((n, s) for n, s, _ in p.loras if "text_encoder" in loaded[n].meta.networks)
        if text != self._text_loras:  # the encoder changed: its cached states are stale
            self._text_cache.clear()
            self._text_loras = text

    def counted(self, run: Callable[[], torch.Tensor], p: GenerationParams):
        """(run(), the network evaluations it made): calls of the networks' forward."""
        calls = []
        hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in self.networks()]
        try:
            return run(), len(calls)
        finally:
            for hook in hooks:
                hook.remove()

    def invert(self, image: torch.Tensor, prompt: str = "", steps: int | None = None):
        """Images -> the noise that draws them back (where `supports.inversion`)."""
        raise ValueError(
            f"inversion maps an image to a diffusion model's noise; model {self.name!r} is "
            f"{self.family}"
        )

    def check_request(self, p: GenerationParams) -> None:
        """Every check of p: the shared ones, then the family's."""
        check_common(p)
        if p.image_prompt and not self.supports.image_prompt:
            raise ValueError(
                f"image_prompt: model {self.name!r} ({self.family}) draws from a prompt only; an "
                "unCLIP model (t2i train unclip) draws from an image's embedding"
            )
        if p.cads_noise and not self.supports.cads:
            raise ValueError(
                f"cads_noise: model {self.name!r} ({self.family}) has no noise levels to anneal "
                "the prompt over; condition-annealed sampling needs a diffusion model"
            )
        self.check(p)

    def params(self, prompt: str, **kw) -> GenerationParams:
        """A request completed with the model's defaults (for values left None) and checked."""

        unknown = set(kw) - REQUEST_KEYS
        if unknown:
            raise ValueError(
                f"unknown request keys {sorted(unknown)}; allowed: {sorted(REQUEST_KEYS)}"
            )

        def pick(key: str, default):
            return default if kw.get(key) is None else kw[key]

        prompt, tagged = split_lora_tags(prompt)  # A1111's <lora:name:scale>
        requested = [*(kw.get("loras") or ()), *tagged]
        named = {entry[0] for entry in requested}
        requested = [(n, s) for n, s in self.pinned_loras.items() if n not in named] + requested
        loras = self.loras.resolve(requested) if requested else ()
        made_for = self.loras.sampling(loras) if loras else {}  # an LCM-LoRA's sampler settings
        defaults = (
            {**self.defaults, **DISTILLED_SAMPLING, **made_for} if made_for else self.defaults
        )
        init, mask = pick("init", ""), pick("mask", "")
        size = kw.get("size") or (read_image_size(init) if init else None)
        width, height = size or (self.image_size, self.image_size)
        p = GenerationParams(
            prompt=prompt,
            negative=pick("negative", ""),
            model=self.name,
            sampler=t2i_sampler(pick("sampler", defaults["name"])),  # or A1111's name
            steps=pick("steps", defaults["steps"]),
            guidance=pick("guidance", defaults["guidance_scale"]),
            seed=pick("seed", 0),
            width=width,
            height=height,
            init=str(init),
            mask=str(mask),
            strength=pick("strength", 1.0 if mask or not init else 0.75),
            resample=pick("resample", 1),
            mask_blur=pick("mask_blur", 0),
            guidance_interval=resolve_interval(
                kw.get("guidance_interval"), defaults.get("guidance_interval")
            ),
            loras=loras,
            image_prompt=str(pick("image_prompt", "")),
            cads_noise=pick("cads_noise", defaults.get("cads_noise", 0.0)),
            cads_interval=_listed(pick("cads_interval", defaults.get("cads_interval"))),
        )
        p.embeddings = self.learnt_words(p, kw.get("embeddings") or ())
        p.controls, p.guess_mode = request_controls(lambda: self.controls, kw, (width, height))
        guides = kw.get("guides") or ()
        p.guides = self.guides.resolve(guides, [g for g in guides if len(g) > 2])
        self.check_request(p)
        if p.prompt:  # "" is a template (t2i eval's): its items are checked when drawn
            self.guides.check_prompts(p.guides, [p.prompt])
        return p

    @torch.no_grad()
    def generate(
        self,
        p: GenerationParams,
        n: int = 1,
        callback: Callable | None = None,
        seeds: list[int] | None = None,
        cond: dict | None = None,
        **draw_kw,
    ) -> torch.Tensor:
        """(n, C, H, W) images in [-1, 1] of a request made by `params` (a request built by hand
        is checked with `check_request` first); image i from seed p.seed + i (or seeds[i]);
        `cond` replaces the prompt's text states (a batch of n). Other keywords go to the
        family's `draw` (diffusion: `noise` (n, C, h, w) replaces the seeded noise)."""
        seeds = check_seeds(p, n, seeds)
        self.apply_loras(p)
        if cond is not None and p.guides:
            raise ValueError("guides read the request's prompts: give no cond= with guides")
        cond = cond if cond is not None else self.condition(p, [p.prompt] * len(seeds))
        return self.draw(p, seeds, cond, callback, **draw_kw)

    @torch.no_grad()
    def generate_items(
        self, items: list[GenerationParams], callback: Callable | None = None
    ) -> torch.Tensor:
        """(len(items), C, H, W): image i from items[i].prompt and items[i].seed in one call;
        every other setting is taken from items[0] (callers batch only compatible items)."""
        if not items:
            raise ValueError("generate_items needs at least one item")
        seeds = check_seeds(items[0], len(items), [p.seed for p in items])
        self.apply_loras(items[0])
        self.guides.check_prompts(items[0].guides, [p.prompt for p in items])
        cond = self.condition(items[0], [p.prompt for p in items])
        return self.draw(items[0], seeds, cond, callback)

    def __call__(
        self,
        prompt: str,
        negative: str = "",
        n: int = 1,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        seed: int = 0,
        size: tuple[int, int] | None = None,
        callback: Callable | None = None,
        init=None,
        mask=None,
        strength: float | None = None,
        resample: int | None = None,
        guidance_interval: tuple[float, float] | str | None = None,
        guides: list[tuple[str, float]] | None = None,
        controls: list[tuple] | None = None,
        guess_mode: bool = False,
        cads_noise: float | None = None,
        cads_interval: tuple[float, float] | None = None,
    ) -> list[Image.Image]:
        """Generate n PIL images; each carries its GenerationParams in `image.info["t2i"]`.

        init: image file for img2img (strength in [0, 1], default 0.75) or, with mask (white =
        repaint, same size), inpainting (strength default 1, resample = RePaint passes).
        guidance_interval: (lo, hi) guides only where lo < sigma <= hi, "all" every step, None
        the model's default. guides: (name, scale) of guides loaded with `load_guide`; with
        guidance 0 they steer the unconditional model. controls: (name, image file[, scale[,
        start, end]]) of controls (`load_control` or the folder's controls/); guess_mode: they
        reach the prompt's half of guidance only (a condition with an empty prompt).
        cads_noise: condition-annealed sampling (the prompt's states noised at high sigma, for
        variety; 0 off, None the model's), over cads_interval (lo, hi) sigmas."""
        p = self.params(
            prompt,
            negative=negative,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            seed=seed,
            size=size,
            init=init,
            mask=mask,
            strength=strength,
            resample=resample,
            guidance_interval=guidance_interval,
            guides=guides,
            controls=controls,
            guess_mode=guess_mode,
            cads_noise=cads_noise,
            cads_interval=cads_interval,
        )
        images = to_pil(self.generate(p, n, callback))
        for i, img in enumerate(images):
            img.info[PNG_KEY] = GenerationParams(**{**asdict(p), "seed": p.seed + i}).to_json()
        return images


def after(callback: Callable | None, done: int) -> Callable | None:
    """The callback of a later stage: its step numbers continue the earlier stages' (`done`)."""
    if callback is None or done == 0:
        return callback
    return lambda info: callback({**info, "i": info["i"] + done})
