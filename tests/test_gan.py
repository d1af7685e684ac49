"""The GAN networks and losses (t2i/models/gan.py, t2i/training/gan.py): the discriminator's three
terms, GAN-INT's mixture, each player moved by its own loss only, the style encoder's round trip,
spectral normalisation, and images that depend on their own noise and caption only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from t2i.models.gan import GanConfig, GanDiscriminator, GanNet, SNConv2d, sentence_embedding
from t2i.training.gan import GanRecipeConfig, check
from t2i.training.gan_losses import (
    d_terms,
    frozen,
    g_term,
    interpolate_sentences,
    mismatched,
    penalty,
    stage_losses,
)


def tiny(**kw) -> GanConfig:
    return GanConfig.preset("tiny", **kw)


def text(b: int = 4, length: int = 5, dim: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(b, length, dim, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 3:] = False
    return ctx, mask


@pytest.mark.parametrize(
    "loss,weight,valid,expected",
    [
        # real-right 0.5, real-wrong -0.2, fake-right 2.0
        ("hinge", 0.5, 1.0, (1 - 0.5) + 0.5 * (1 + 2.0) + 0.5 * (1 - 0.2)),
        ("hinge", 0.0, 1.0, (1 - 0.5) + (1 + 2.0)),  # no matching-aware term
        ("hinge", 0.5, 0.0, (1 - 0.5) + 0.5 * (1 + 2.0)),  # no caption to mismatch with
        (
            "bce",
            0.5,
            1.0,
            math.log1p(math.exp(-0.5))
            + 0.5 * math.log1p(math.exp(2.0))
            + 0.5 * math.log1p(math.exp(-0.2)),
        ),  # fmt: skip
    ],
)
def test_the_discriminators_three_terms(loss, weight, valid, expected):
    cfg = GanRecipeConfig(loss=loss, mismatch_weight=weight)
    out = d_terms(cfg, torch.tensor([0.5]), torch.tensor([-0.2]), torch.tensor([2.0]),
                  torch.tensor([valid]))  # fmt: skip
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_the_generators_term_is_minus_the_logit_or_non_saturating():
    logit = torch.tensor([0.3, -1.0])
    assert torch.equal(g_term(GanRecipeConfig(loss="hinge"), logit), -logit)
    assert torch.allclose(g_term(GanRecipeConfig(loss="bce"), logit), F.softplus(-logit))


def test_wrong_captions_differ_from_the_right_ones():
    captions = ["a", "a", "b", "a", "c"]
    wrong, valid = mismatched(captions)
    assert all(captions[j] != c for j, c in zip(wrong, captions))
    assert valid.tolist() == [1.0] * 5
    wrong, valid = mismatched(["same", "same"])  # nothing to mismatch with: the term is off
    assert valid.tolist() == [0.0, 0.0]


def test_gan_int_mixes_the_sentence_embeddings_as_stated():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]])
    mix = interpolate_sentences(s, [1, 0, 0], torch.tensor([1.0, 1.0, 0.0]), beta=0.5)
    assert torch.equal(mix[0], torch.tensor([0.5, 0.5]))  # beta t1 + (1 - beta) t2
    assert torch.equal(mix[1], torch.tensor([0.5, 0.5]))
    assert torch.equal(mix[2], s[2])  # no other caption: its own
    quarter = interpolate_sentences(s, [1, 0, 0], torch.ones(3), beta=0.25)
    assert torch.equal(quarter[0], torch.tensor([0.25, 0.75]))


def test_gan_int_feeds_the_mixture_to_the_generator(monkeypatch):
    cfg = GanRecipeConfig(model=tiny())
    net = GanNet(cfg.model)
    ctx, mask = text()
    got = {}
    original = net.generator.forward

    def spy(z, context, mask, sentence=None):
        got["sentence"] = sentence
        return original(z, context, mask, sentence)

    monkeypatch.setattr(net.generator, "forward", spy)
    mix = interpolate_sentences(sentence_embedding(ctx, mask), [1, 2, 3, 0], torch.ones(4), 0.5)
    net.generator(torch.randn(4, cfg.model.z_dim), ctx, mask, sentence=mix)
    assert torch.equal(got["sentence"], mix)


def test_a_frozen_pass_moves_the_input_and_never_the_discriminator():
    c = tiny()
    d = GanDiscriminator(c, 16)
    ctx, mask = text()
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    logit, _ = frozen(d, x, ctx, mask)
    logit.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())


def test_each_player_is_moved_by_its_own_loss_only():
    """The summed loss of a stage: D's parameters get exactly the gradient of D's terms (the
    fakes detached), G's exactly that of its own term (through the frozen D)."""
    cfg = GanRecipeConfig(model=tiny(), penalty="none")
    c = cfg.model
    net, d = GanNet(c), GanDiscriminator(c, 16)
    ctx, mask = text()
    s = sentence_embedding(ctx, mask)
    wrong, valid = mismatched(["a", "b", "c", "d"])
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    z = torch.randn(4, c.z_dim)
    d.eval()  # spectral norm's vector fixed: the three passes below see the same weights
    fake = net.generator(z, ctx, mask)[-1]
    total = stage_losses(cfg, d, real, fake, (ctx, mask, s), (ctx[wrong], mask[wrong], s[wrong]),
                         valid, {}, 0, step=1)  # fmt: skip
    total.backward()
    d_grads = [p.grad.clone() for p in d.parameters()]
    g_grads = [p.grad.clone() for p in net.generator.parameters()]
    d.zero_grad(), net.zero_grad()
    r, w, f = d(torch.cat([real, real, fake.detach()]), torch.cat([ctx, ctx[wrong], ctx]),
                torch.cat([mask, mask[wrong], mask]))[0].split(4)  # fmt: skip
    d_terms(cfg, r, w, f, valid).mean().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(d_grads, d.parameters()))
    fake = net.generator(z, ctx, mask)[-1]
    g_term(cfg, frozen(d, fake, ctx, mask)[0]).mean().backward()
    gen = list(net.generator.parameters())
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(g_grads, gen))


@pytest.mark.parametrize("kind", ["magp", "r1"])
def test_the_penalty_is_the_gradient_norm_of_the_real_pairs(kind):
    cfg = GanRecipeConfig(penalty=kind, penalty_weight=2.0, penalty_power=6.0)
    x = torch.randn(3, 4, requires_grad=True)
    s = torch.randn(3, 2, requires_grad=True)
    logit = (x * 2).sum(1) + (s * 3).sum(1)  # gradients: 2 on each of 4, 3 on each of 2
    got = penalty(cfg, logit, x, s).item()
    sq = 4 * 4 + (2 * 9 if kind == "magp" else 0)
    assert got == pytest.approx(2.0 * sq**3 if kind == "magp" else sq, rel=1e-5)


def test_spectral_norm_divides_by_the_largest_singular_value():
    torch.manual_seed(0)
    conv = SNConv2d(4, 6, 3, padding=1)
    conv.train()
    for _ in range(50):  # power iterations, one per training forward
        conv(torch.randn(1, 4, 5, 5))
    w = conv.normalised().detach().flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=1e-3)
    plain = SNConv2d(4, 6, 3, padding=1, sn=False)
    assert plain.normalised() is plain.weight


def test_an_image_depends_on_its_own_noise_and_caption_only():
    net = GanNet(tiny(word_attention=True, stages=2)).eval()
    ctx, mask = text()
    z = torch.randn(4, net.config.z_dim)
    batch = net(z, ctx, mask)
    alone = net(z[1:2], ctx[1:2, :3], mask[1:2, :3])  # its own length: no padding at all
    assert torch.allclose(batch[1:2], alone, atol=1e-5)


def test_the_word_logit_reads_words_and_ignores_padding():
    d = GanDiscriminator(tiny(word_discriminator=True), 16).eval()
    ctx, mask = text()
    x = torch.randn(4, 3, 16, 16)
    _, words = d(x, ctx, mask)
    padded = torch.cat([ctx, torch.randn(4, 2, 32)], 1)
    _, words_padded = d(x, padded, torch.cat([mask, torch.zeros(4, 2, dtype=torch.bool)], 1))
    assert torch.allclose(words, words_padded, atol=1e-5)
    _, other = d(x, ctx.flip(0), mask.flip(0))
    assert not torch.allclose(words, other)


def test_stages_draw_each_resolution_and_each_has_a_discriminator():
    c = tiny(stages=2)
    assert c.resolutions == [8, 16]
    ctx, mask = text()
    images = GanNet(c).generator(torch.randn(4, c.z_dim), ctx, mask)
    assert [im.shape[-1] for im in images] == [8, 16]
    assert all(im.abs().max() <= 1 for im in images)
    for r, im in zip(c.resolutions, images):
        logit, _ = GanDiscriminator(c, r)(im, ctx, mask)
        assert logit.shape == (4,)


def test_the_style_encoder_learns_to_read_back_the_noise():
    """||z - S(G(z, t))||^2 trained on a fixed generator falls well below its start (z ~ N(0, I)
    has a mean square of 1), and the restyled image is closer to the original than a random
    redraw is."""
    torch.manual_seed(0)
    net = GanNet(tiny())
    net.generator.requires_grad_(False)
    opt = torch.optim.Adam(net.style.parameters(), lr=3e-3)
    ctx, mask = text(b=32, seed=1)

    def error() -> float:
        z = torch.randn(32, net.config.z_dim, generator=torch.Generator().manual_seed(99))
        return F.mse_loss(net.style(net(z, ctx, mask)), z).item()

    start = error()
    for _ in range(300):
        z = torch.randn(32, net.config.z_dim)
        loss = F.mse_loss(net.style(net(z, ctx, mask)), z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert error() < 0.3 * start
    z = torch.randn(32, net.config.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        images = net(z, ctx, mask)
        again = net(net.style(images), ctx, mask)
        other = net(torch.randn_like(z), ctx, mask)
    assert F.mse_loss(again, images) < 0.5 * F.mse_loss(other, images)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("loss", "wgan", "loss 'wgan'"),
        ("penalty", "l2", "penalty 'l2'"),
        ("mismatch_weight", 1.0, "mismatch_weight 1.0"),
        ("penalty_every", 0, "penalty_every 0"),
        ("d_lr_scale", -1.0, "d_lr_scale -1.0"),
    ],
)
def test_bad_settings_are_refused_with_the_value(field, value, message):
    cfg = GanRecipeConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=message):
        check(cfg)


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"image_size": 24}, "power of 2"),
        ({"channels": [8, 8]}, "need 3 levels"),
        ({"stages": 3}, "stages 3"),
    ],
)
def test_bad_network_configs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)
