"""AlignDRAW's network (t2i/models/draw.py): the filter banks, the alignment over words, the KL,
the caption encoder, and drawing from the prior."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.models.draw import (
    DrawConfig,
    DrawNet,
    filterbank,
    gaussian_filters,
    gaussian_kl,
    read,
    write,
)
from t2i.models.text_encoder import TextLSTM, TextLSTMConfig


def raw_params(centre: float, delta: float, var: float, gamma: float, n: int, size: int):
    """The five raw numbers that put an n x n grid at 0-based pixel `centre` (both axes) with
    stride `delta`, variance `var` and intensity `gamma` on a size x size image."""
    g = 2 * (centre + 1) / (size + 1) - 1
    log_delta = math.log(delta * (n - 1) / (size - 1))
    return torch.tensor([[g, g, math.log(var), log_delta, math.log(gamma)]])


@pytest.mark.parametrize("n,centre", [(3, 8.0), (4, 9.0)])
def test_a_written_patch_lands_at_its_grid_and_reads_back(n, centre):
    size, delta = 20, 2.0
    bank = filterbank(raw_params(centre, delta, 0.01, 2.0, n, size), n, size, size)
    patch = torch.randn(1, 1, n, n)
    image = write(patch, bank)
    where = [int(centre + (i - n / 2 + 0.5) * delta) for i in range(n)]
    # each patch value sits on its grid point (divided by gamma), nothing elsewhere
    assert torch.allclose(image[0, 0][where][:, where], patch[0, 0] / 2.0, atol=1e-5)
    assert image.abs().sum() == pytest.approx((patch.abs() / 2.0).sum().item(), rel=1e-4)
    assert torch.allclose(read(image, bank), patch, atol=1e-5)


def test_wide_filters_blur_the_patch_but_keep_its_mass():
    size, n = 20, 3
    sharp = filterbank(raw_params(8.0, 2.0, 0.01, 1.0, n, size), n, size, size)
    blurred = filterbank(raw_params(8.0, 2.0, 1.0, 1.0, n, size), n, size, size)
    patch = torch.zeros(1, 1, n, n)
    patch[0, 0, 1, 1] = 1.0
    image = write(patch, blurred)
    assert image.sum().item() == pytest.approx(1.0, abs=1e-5)  # each filter sums to 1
    assert image[0, 0, 8, 8] == image.max() and image[0, 0, 8, 8] < 0.5  # spread around 8
    back = read(image, blurred)
    assert back[0, 0, 1, 1] == back.max() and back[0, 0, 1, 1] < 0.9  # blurred twice
    assert torch.allclose(read(write(patch, sharp), sharp), patch, atol=1e-5)


def test_filters_are_normalised_gaussians_at_their_centres():
    f = gaussian_filters(torch.tensor([5.0]), torch.tensor([3.0]), torch.tensor([0.5]), 2, 16)
    assert torch.allclose(f.sum(-1), torch.ones(1, 2))
    assert f[0].argmax(-1).tolist() == [4, 7] or f[0].argmax(-1).tolist() == [3, 6]


def test_kl_matches_the_closed_form_of_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(50, generator=g), torch.randn(50, generator=g)
    sq, sp = torch.rand(50, generator=g) + 0.3, torch.rand(50, generator=g) + 0.3
    normal = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(normal(mq, sq), normal(mp, sp))
    assert torch.allclose(gaussian_kl(mq, sq, mp, sp), expected, atol=1e-6)
    assert gaussian_kl(mq, sq, mq, sq).abs().max() < 1e-6


def tiny_net() -> DrawNet:
    torch.manual_seed(0)
    return DrawNet(DrawConfig.preset("tiny"))


def test_alignment_weights_sum_to_one_and_ignore_padding():
    net = tiny_net()
    context = torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    keys = net.align.words(context)
    alpha = net.align.weights(keys, mask, torch.randn(2, 32))
    assert torch.allclose(alpha.sum(-1), torch.ones(2))
    assert (alpha[1, 3:] == 0).all() and (alpha[1, :3] > 0).all()
    # what padding holds changes nothing the network computes
    noise = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(1))
    changed = context.clone()
    changed[1, 3:] = 100.0
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(net(x, context, mask, noise)[1], net(x, changed, mask, noise)[1])
    assert torch.equal(net.sample(context, mask, noise), net.sample(changed, mask, noise))


def test_the_kl_is_the_sum_of_each_steps_and_the_mean_is_in_range():
    net = tiny_net()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    context, mask = torch.randn(3, 4, 32), torch.ones(3, 4, dtype=torch.bool)
    trace = []
    mean, kl = net(x, context, mask, torch.randn(3, 4, 4), trace=trace)
    assert len(trace) == 4
    assert torch.allclose(kl, torch.stack([s.kl for s in trace]).sum(0))
    assert (kl > 0).all()
    assert torch.equal(mean, trace[-1].canvas)


def test_sampling_reports_every_step_and_is_a_function_of_its_noise():
    net = tiny_net()
    context, mask = torch.randn(2, 4, 32), torch.ones(2, 4, dtype=torch.bool)
    noise = torch.randn(2, 4, 4)
    steps = []
    images = net.sample(context, mask, noise, lambda t, out: steps.append((t, out.canvas)))
    assert [t for t, _ in steps] == [0, 1, 2, 3]
    assert torch.equal(images, steps[-1][1])
    assert torch.equal(images, net.sample(context, mask, noise))
    assert not torch.equal(images, net.sample(context, mask, torch.randn(2, 4, 4)))


def test_the_bilstm_reads_each_caption_as_if_alone():
    torch.manual_seed(0)
    enc = TextLSTM(TextLSTMConfig(vocab=["a", "red", "circle", "above", "blue"], hidden=8))
    alone = enc.encode(["a red circle"])
    batch = enc.encode(["a red circle", "a red circle above a blue circle"])
    n = alone.context.shape[1]
    assert enc.dim == 16 and batch.context.shape[-1] == 16
    assert torch.allclose(batch.context[0, :n], alone.context[0], atol=1e-6)
    assert not batch.mask[0, n:].any() and (batch.context[0, n:] == 0).all()
    assert torch.allclose(batch.pooled[0], alone.pooled[0], atol=1e-6)
    # both directions read the words: the backward state of the first word depends on the last
    other = enc.encode(["a red square"])  # "square" is unknown: a different last token
    assert not torch.allclose(other.context[0, 1, 8:], alone.context[0, 1, 8:])


def test_a_grid_larger_than_the_image_is_refused():
    with pytest.raises(ValueError, match="at most image_size"):
        DrawConfig(image_size=8, read_n=12)
