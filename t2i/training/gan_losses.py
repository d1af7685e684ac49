"""The GAN recipe's losses (t2i/training/gan.py): the matching-aware discriminator's three terms,
the generator's term through a frozen discriminator, the gradient penalties, GAN-INT.

Simultaneous updates from one backward pass: the discriminators' terms see detached fakes, and the
generator's terms run the discriminators with detached weights (`frozen`), so each player gets
the gradient of its own loss only (tests/test_gan.py checks it against separate passes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def interpolate_sentences(s: torch.Tensor, wrong: list[int], valid: torch.Tensor, beta: float):
    """beta s_i + (1 - beta) s_wrong(i); s_i itself where the batch had no other caption."""
    mix = beta * s + (1 - beta) * s[wrong]
    return torch.where(valid[:, None] > 0, mix, s)


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
