"""GAN recipe: `t2i train gan --data fashion --preset fashion --out runs/gan_fashion`.

A text-conditional GAN (t2i/models/gan.py) against a frozen text encoder (`--text_encoder minilm`,
or a model folder's `text_encoder/`, e.g. the shipped `shapes`'), on the shared loop (exact
resume). Every step updates both players at once from one batch (simultaneous gradient steps): the
discriminators' terms reach only the discriminators (the fakes are detached), and the generator's
terms run the discriminators with their weights detached (`frozen`), so one backward pass gives
each player the gradient of its own loss. The discriminators learn `d_lr_scale` times faster
(two time-scales, Heusel et al. 2017).

The terms, per stage of resolution (hinge form; `loss bce` the log form of Reed et al.):
  D: max(0, 1 - D(x, t)) + w max(0, 1 + D(x, t_wrong)) + (1 - w) max(0, 1 + D(G(z, t), t))
     with w = `mismatch_weight` (GAN-CLS: 1/2; 0: no matching-aware term), t_wrong the caption of
     another image of the batch whose text differs;
  G: -D(G(z, t), t), and with `gan_int` > 0 also -D(G(z', t_mix), t_mix) on sentence embeddings
     t_mix = beta t + (1 - beta) t_wrong (GAN-INT, beta = 1/2);
  a penalty on the real, matching pairs: MA-GP (DF-GAN: k ||grad_(x, s) D||^p) or R1;
  ControlGAN's word-level logit (`model.word_discriminator`) with the same labels;
  the style encoder: ||z - S(G(z, t))||^2 on detached fakes (it never moves the generator).
Logged beside the loss: each term, and at each sample grid the diversity per prompt.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from t2i.checkpoint import DTYPES, load_component, resolve_model, save_model_folder
from t2i.gan_pipeline import GanPipeline
from t2i.images import image_grid
from t2i.models.gan import GanConfig, GanDiscriminator, GanNet, sentence_embedding
from t2i.models.text_encoder import PretrainedTextEncoder, TextTransformer
from t2i.training.config import LoopConfig, OptimConfig, native_bf16
from t2i.training.data import TextCache, component_dir, first_captions, open_dataset
from t2i.training.export import model_weights, nested_config, run_facts, training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick

LOSSES = ("hinge", "bce")
PENALTIES = ("magp", "r1", "none")


@dataclass
class GanRecipeConfig:
    model: GanConfig = field(default_factory=lambda: GanConfig.preset("fashion"))
    data_length: int = 100_000
    text_encoder: str = "minilm"  # "minilm" or a model folder whose text_encoder/ is frozen here
    max_tokens: int = 40
    loss: str = "hinge"  # "hinge" or "bce" (Reed et al.'s log loss, non-saturating for G)
    mismatch_weight: float = 0.5  # the real-image, wrong-text term (GAN-CLS); 0 turns it off
    gan_int: float = 1.0  # weight of GAN-INT's interpolated-caption term for G; 0 turns it off
    int_beta: float = 0.5
    penalty: str = "magp"  # "magp" (DF-GAN), "r1" or "none"
    penalty_weight: float = 2.0  # MA-GP's k (R1's gamma)
    penalty_power: float = 6.0  # MA-GP's p
    # the penalty on every n-th step only, weighted n times (lazy regularisation, Karras et al.
    # 2020): its double backward costs as much as the rest of a step
    penalty_every: int = 4
    word_weight: float = 1.0  # the word-level logit's terms (with model.word_discriminator)
    style_weight: float = 1.0
    d_lr_scale: float = 4.0  # discriminator lr / generator lr
    sample_prompts: tuple[str, ...] = ()  # empty: the first 8 captions of the data
    sample_seed: int = 0
    diversity_seeds: int = 8  # images per prompt for the logged diversity
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(bf16=native_bf16()))
    optim: OptimConfig = field(default_factory=lambda: gan_optim(1e-4))


def gan_optim(lr: float) -> OptimConfig:
    """Adam with beta1 = 0 (as DF-GAN, BigGAN), constant lr, no decay or clipping; the EMA of
    the generator is what exports."""
    return OptimConfig(lr=lr, weight_decay=0.0, betas=(0.0, 0.9), schedule="constant",
                       warmup_steps=0, grad_clip=0.0, ema_decay=0.999)  # fmt: skip


def _fashion() -> GanRecipeConfig:
    """Fashion-MNIST 32 px grey against the frozen MiniLM (as the shipped `fashion`)."""
    cfg = GanRecipeConfig(model=GanConfig.preset("fashion"), data_length=60_000)
    cfg.loop = replace(cfg.loop, steps=6000, batch_size=64, ckpt_every=500, sample_every=1000)
    return cfg


def _shapes() -> GanRecipeConfig:
    """shapes 64 px against the shipped `shapes` model's word-level text encoder (frozen: MiniLM
    barely separates left from right, docs/history.md)."""
    cfg = GanRecipeConfig(
        model=GanConfig.preset("shapes"), data_length=50_000, text_encoder="shapes"
    )
    cfg.loop = replace(cfg.loop, steps=4000, batch_size=64, ckpt_every=250, sample_every=500)
    return cfg


def _emoji() -> GanRecipeConfig:
    """The emoji 64 px set (`t2i data emoji`) against the frozen MiniLM (as the shipped `emoji`)."""
    cfg = GanRecipeConfig(model=GanConfig.preset("emoji"), data_length=100_000)
    cfg.loop = replace(cfg.loop, steps=4000, batch_size=64, ckpt_every=250, sample_every=500)
    return cfg


def _tiny() -> GanRecipeConfig:
    """For tests: 16 px, every option on; a word-level text encoder built for the test; fp32."""
    return GanRecipeConfig(
        model=GanConfig.preset(
            "tiny", context_dim=384, word_attention=True, word_discriminator=True, stages=2
        ),
        data_length=64,
        diversity_seeds=2,
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=gan_optim(1e-3),
    )


CONFIG_PRESETS = {
    "default": GanRecipeConfig,
    "fashion": _fashion,
    "shapes": _shapes,
    "emoji": _emoji,
    "tiny": _tiny,
}


def preset(name: str) -> GanRecipeConfig:
    return pick("gan", CONFIG_PRESETS, name)


class FrozenText:
    """captions -> (context, mask) from a frozen text encoder, cached by caption text: MiniLM
    padded to max_tokens (TextCache), or a model folder's word-level transformer."""

    def __init__(self, name: str, max_tokens: int):
        if name == "minilm":
            self.cache = TextCache.load("minilm", max_tokens)
            self.encoder = self.cache.encoder
        else:
            folder = component_dir(resolve_model(name), "text_encoder")
            self.encoder = load_component(folder).requires_grad_(False).eval()
            if not isinstance(self.encoder, (TextTransformer, PretrainedTextEncoder)):
                raise ValueError(f"text_encoder {name!r}: {folder} holds no text encoder")
            self.cache = TextCache(self.encoder, max_tokens) if isinstance(
                self.encoder, PretrainedTextEncoder) else None  # fmt: skip
        self.dim = self.encoder.dim

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            return self.cache(captions)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            emb = self.encoder.encode(captions)
        return emb.context.float(), emb.mask


class GanTrainer(nn.Module):
    """What the loop trains: the generator and style encoder (`net`, exported) and one
    discriminator per stage (kept in the checkpoints only)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.net = GanNet(config)
        self.discriminators = nn.ModuleList(GanDiscriminator(config, r) for r in config.resolutions)


def check(cfg: GanRecipeConfig) -> None:
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss {cfg.loss!r}: choose from {list(LOSSES)}")
    if cfg.penalty not in PENALTIES:
        raise ValueError(f"penalty {cfg.penalty!r}: choose from {list(PENALTIES)}")
    if not 0.0 <= cfg.mismatch_weight < 1.0:
        raise ValueError(f"mismatch_weight {cfg.mismatch_weight} must be in [0, 1)")
    if not 0.0 <= cfg.int_beta <= 1.0:
        raise ValueError(f"int_beta {cfg.int_beta} must be in [0, 1]")
    if cfg.penalty_every < 1:
        raise ValueError(f"penalty_every {cfg.penalty_every} must be >= 1")
    for key in ("gan_int", "penalty_weight", "word_weight", "style_weight", "d_lr_scale"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} {getattr(cfg, key)} must be >= 0")


def build(cfg: GanRecipeConfig, args: argparse.Namespace) -> Recipe:
    """Everything is checked and loaded here, before the first step."""
    check(cfg)
    size, channels = cfg.model.image_size, cfg.model.image_channels
    dataset, found = open_dataset(args.data, size, cfg.data_length, channels=channels)
    if found != channels:
        raise ValueError(f"--data {args.data} gives {found}-channel images; model.image_channels "
                         f"is {channels}")  # fmt: skip
    text = FrozenText(cfg.text_encoder, cfg.max_tokens)
    if text.dim != cfg.model.context_dim:
        raise ValueError(
            f"model.context_dim {cfg.model.context_dim} != the width of text_encoder "
            f"{cfg.text_encoder!r}: {text.dim}"
        )
    seed_everything(cfg.loop.seed)
    # channels-last weights and images: oneDNN's convolutions ran a step 1.6-1.8x faster than in
    # NCHW on this CPU (files are written contiguous, so folders are unchanged)
    model = GanTrainer(cfg.model).to(memory_format=torch.channels_last)
    return gan_recipe(cfg, model, text, dataset, str(args.data))


def mismatched(captions: list[str]) -> tuple[list[int], torch.Tensor]:
    """For each caption, the next one of the batch (cyclically) with other text, and whether
    there was one (a batch of one caption has no wrong pairs)."""
    n = len(captions)
    wrong, valid = [], []
    for i, c in enumerate(captions):
        j = next(((i + k) % n for k in range(1, n) if captions[(i + k) % n] != c), None)
        wrong.append(i if j is None else j)
        valid.append(j is not None)
    return wrong, torch.tensor(valid, dtype=torch.float32)


def frozen(module: nn.Module, *args):
    """module(*args) with its parameters detached: gradients reach the inputs only."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)


def pyramid(images: torch.Tensor, resolutions: list[int]) -> list[torch.Tensor]:
    """The real images at each stage's size (area-averaged)."""
    size = images.shape[-1]
    return [images if r == size else F.avg_pool2d(images, size // r) for r in resolutions]


def d_terms(cfg, real_logit, wrong_logit, fake_logit, valid) -> torch.Tensor:
    """(B,) the discriminator's loss per example: real-right, real-wrong, fake-right."""
    act = (lambda x: F.relu(1 + x)) if cfg.loss == "hinge" else F.softplus
    real = F.relu(1 - real_logit) if cfg.loss == "hinge" else F.softplus(-real_logit)
    w = cfg.mismatch_weight
    out = real + (1 - w) * act(fake_logit)
    if w > 0:
        out = out + w * act(wrong_logit) * valid
    return out


def g_term(cfg, fake_logit) -> torch.Tensor:
    """(B,) the generator's loss per example (hinge: -D; bce: the non-saturating -log D)."""
    return -fake_logit if cfg.loss == "hinge" else F.softplus(-fake_logit)


def penalty(cfg, real_logit, real, sentence) -> torch.Tensor:
    """The gradient penalty on real, matching pairs: MA-GP k ||grad_(x, s)||^p or R1."""
    if cfg.penalty == "none":
        return real_logit.new_zeros(())
    inputs = (real, sentence) if cfg.penalty == "magp" else (real,)
    grads = torch.autograd.grad(real_logit.float().sum(), inputs, create_graph=True)
    sq = sum(g.float().flatten(1).pow(2).sum(1) for g in grads)
    if cfg.penalty == "r1":
        return cfg.penalty_weight / 2 * sq.mean()
    return cfg.penalty_weight * (sq + 1e-12).pow(cfg.penalty_power / 2).mean()


def stage_losses(cfg, d, real, fake, text, wrong_text, valid, parts: dict, k: int, step: int):
    """One stage: the discriminator's terms on (real, right), (real, wrong), (fake, right), the
    penalty on its steps, and the generator's term on (fake, right) through the frozen
    discriminator."""
    ctx, mask, s = text
    n = len(real)
    wctx, wmask, ws = wrong_text
    x = torch.cat([real, real, fake.detach()])
    logits, words = d(x, torch.cat([ctx, wctx, ctx]), torch.cat([mask, wmask, mask]),
                      torch.cat([s, ws, s]))  # fmt: skip
    r, w, f = logits.float().split(n)
    loss_d = d_terms(cfg, r, w, f, valid).mean()
    gp = r.new_zeros(())
    if cfg.penalty != "none" and step % cfg.penalty_every == 0:
        gp = penalised_pass(cfg, d, real, ctx, mask, s) * cfg.penalty_every
    g_logit, g_words = frozen(d, fake, ctx, mask, s)
    loss_g = g_term(cfg, g_logit.float()).mean()
    if words is not None:
        wr, ww, wf = words.float().split(n)
        loss_d = loss_d + cfg.word_weight * d_terms(cfg, wr, ww, wf, valid).mean()
        loss_g = loss_g + cfg.word_weight * g_term(cfg, g_words.float()).mean()
    parts[f"d{k}_real"] = r.mean().item()
    parts[f"d{k}_fake"] = f.mean().item()
    parts[f"d{k}_loss"] = loss_d.item()
    parts[f"g{k}_loss"] = loss_g.item()
    parts[f"penalty{k}"] = gp.item()
    return loss_d + gp + loss_g


def penalised_pass(cfg, d, real, ctx, mask, s) -> torch.Tensor:
    """The penalty from a pass of its own over the real, matching pairs (inside the batched
    pass, oneDNN's bf16 double backward died of SIGFPE on 96 64-px images)."""
    real = real.detach().requires_grad_(True)
    s = s.detach().requires_grad_(cfg.penalty == "magp")
    logit, _ = d(real, ctx, mask, s)
    return penalty(cfg, logit, real, s)


def gan_recipe(cfg, model: GanTrainer, text: FrozenText, dataset, data_name: str) -> Recipe:
    prompts = list(cfg.sample_prompts) or first_captions(dataset, 8)
    c = cfg.model
    parts: dict[str, float] = {}

    def collate(items: list[dict]) -> dict:
        return {
            "images": torch.stack([it["image"] for it in items]).contiguous(
                memory_format=torch.channels_last
            ),
            "captions": [it["caption"] for it in items],
        }

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        parts.clear()
        z, z_int = rng.randn(c.z_dim), rng.randn(c.z_dim)
        ctx, mask = text(batch["captions"])
        s = sentence_embedding(ctx, mask)
        wrong, valid = mismatched(batch["captions"])
        wrong_text = (ctx[wrong], mask[wrong], s[wrong])
        fakes = model.net.generator(z, ctx, mask)
        reals = pyramid(batch["images"], c.resolutions)
        total = z.new_zeros(())
        for k, d in enumerate(model.discriminators):
            total = total + stage_losses(cfg, d, reals[k], fakes[k], (ctx, mask, s), wrong_text,
                                         valid, parts, k, rng.step)  # fmt: skip
        if cfg.gan_int > 0:
            total = total + cfg.gan_int * interpolated_term(cfg, model, z_int, ctx, mask, s,
                                                            wrong, valid, parts)  # fmt: skip
        style = F.mse_loss(model.net.style(fakes[-1].detach()).float(), z)
        parts["style"] = style.item()
        return total + cfg.style_weight * style

    def sample(ema: nn.Module) -> Image.Image:
        pipe = sampling_pipeline(cfg, ema, text, data_name)
        images = pipe.generate_items([pipe.params(p, seed=cfg.sample_seed + i)
                                      for i, p in enumerate(prompts)])  # fmt: skip
        return image_grid(images, cols=4)

    def probe(ema: nn.Module) -> dict[str, float]:
        pipe = sampling_pipeline(cfg, ema, text, data_name)
        return {"diversity": diversity_per_prompt(pipe, prompts, cfg.diversity_seeds)}

    def export(ema: nn.Module, folder: Path) -> None:
        export_model(cfg, ema, text, folder, data_name)

    def lr_scale(name: str) -> float:
        return cfg.d_lr_scale if name.startswith("discriminators.") else 1.0

    config = {**public_config(cfg), "data": data_name}
    return Recipe("gan", model, dataset, collate, loss, sample, export, config,
                  lr_scale=lr_scale, parts=lambda: dict(parts), probe=probe)  # fmt: skip


def interpolated_term(cfg, model, z, ctx, mask, s, wrong, valid, parts) -> torch.Tensor:
    """GAN-INT: the generator fools every discriminator on sentence embeddings between two
    captions (beta t1 + (1 - beta) t2); the word states stay the first caption's."""
    mix = interpolate_sentences(s, wrong, valid, cfg.int_beta)
    fakes = model.net.generator(z, ctx, mask, sentence=mix)
    out = z.new_zeros(())
    for d, fake in zip(model.discriminators, fakes):
        logit, _ = frozen(d, fake, ctx, mask, mix)
        out = out + g_term(cfg, logit.float()).mean()
    parts["g_int"] = out.item()
    return out


def interpolate_sentences(s: torch.Tensor, wrong: list[int], valid: torch.Tensor, beta: float):
    """beta s_i + (1 - beta) s_wrong(i); s_i itself where the batch had no other caption."""
    mix = beta * s + (1 - beta) * s[wrong]
    return torch.where(valid[:, None] > 0, mix, s)


def diversity_per_prompt(pipe, prompts: list[str], seeds: int) -> float:
    """Mean over prompts of the RMS pixel distance between images of one prompt (pairs of
    `seeds` draws, in [-1, 1] units): near 0 is mode collapse."""
    values = []
    for prompt in prompts:
        images = pipe.generate(pipe.params(prompt, seed=0), n=seeds)
        flat = images.flatten(1)
        dist = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
        values.append(dist.sum().item() / (seeds * (seeds - 1)))
    return sum(values) / len(values)


def model_index(cfg: GanRecipeConfig, data_name: str) -> dict:
    return {
        "family": "gan",
        "image_size": cfg.model.image_size,
        "sampler": {"temperature": 1.0},
        "data": {"source": data_name, "text_encoder": cfg.text_encoder},
    }


def sampling_pipeline(cfg, model: GanTrainer, text: FrozenText, data_name: str) -> GanPipeline:
    """A pipeline over the live generator with the index export writes."""
    components = {"gan": model.net, "text_encoder": text.encoder}
    return GanPipeline(components, model_index(cfg, data_name), name="training")


def export_model(
    cfg,
    model: GanTrainer,
    text: FrozenText,
    folder: Path,
    data_name: str,
    dtype: torch.dtype = torch.float32,
    training: dict | None = None,
) -> None:
    """A model folder: model_index.json, gan/ (generator + style encoder), text_encoder/."""
    components = {"gan": model.net, "text_encoder": text.encoder}
    index = {**model_index(cfg, data_name), **run_facts(training, None)}
    save_model_folder(folder, components, index, dtype)


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """A gan run's checkpoint -> gan/ and text_encoder/ (`t2i export`). kw: run_dir, dtype,
    data, ema."""
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("preset", None)
    data = recipe.pop("data", None) or kw["data"]
    cfg = nested_config(GanRecipeConfig, recipe, str(found), GanConfig)
    model = GanTrainer(cfg.model)
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    text = FrozenText(cfg.text_encoder, cfg.max_tokens)
    card = training_card(kw["run_dir"], meta)
    export_model(cfg, model.eval(), text, out, data, DTYPES[kw["dtype"]], card)
    return out


def public_config(cfg: GanRecipeConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
