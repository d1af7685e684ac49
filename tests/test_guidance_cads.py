"""Condition-annealed sampling (CADS): the prompt's states noised by sigma, around guidance."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.guidance import CFGDenoiser, ConditionAnnealing


class Recorder(torch.nn.Module):
    """A denoiser that keeps the context it was called with."""

    def forward(self, x, sigma, context=None, context_mask=None):
        self.seen = context.clone()
        return x * 0.5


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_kept_share_is_0_above_hi_1_below_lo_and_log_linear_between():
    cads = ConditionAnnealing(Recorder(), 0.5, (1.0, 100.0), gens(0))
    kept = cads.kept(torch.tensor([200.0, 100.0, 10.0, 1.0, 0.2]))
    torch.testing.assert_close(kept, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_below_lo_the_prompt_passes_exactly():
    net = Recorder()
    cads = ConditionAnnealing(net, 0.5, (1.0, 100.0), gens(0, 1))
    ctx = torch.randn(2, 5, 8)
    cads(torch.zeros(2, 3), torch.full((2,), 0.9), context=ctx)
    assert torch.equal(net.seen, ctx)


def test_above_hi_the_states_are_noise_with_each_items_mean_and_std():
    net = Recorder()
    cads = ConditionAnnealing(net, 0.5, (1.0, 100.0), gens(0, 1))
    ctx = torch.randn(2, 5, 8) * torch.tensor([1.0, 3.0])[:, None, None] + 2.0
    cads(torch.zeros(2, 3), torch.full((2,), 150.0), context=ctx)
    seen = net.seen
    torch.testing.assert_close(seen.mean((1, 2)), ctx.mean((1, 2)))
    torch.testing.assert_close(seen.std((1, 2)), ctx.std((1, 2)))
    # nothing of the prompt is left: uncorrelated with it
    for i in range(2):
        a, b = seen[i].flatten() - seen[i].mean(), ctx[i].flatten() - ctx[i].mean()
        assert abs(float(a @ b / (a.norm() * b.norm()))) < 0.5


def test_between_the_noise_grows_with_sigma_and_with_the_scale():
    ctx = torch.randn(1, 16, 32)

    def distance(noise, sigma):
        net = Recorder()
        ConditionAnnealing(net, noise, (1.0, 100.0), gens(3))(
            torch.zeros(1, 3), torch.tensor([sigma]), context=ctx
        )
        return float((net.seen - ctx).pow(2).mean())

    assert 0 < distance(0.25, 3.0) < distance(0.25, 30.0)
    assert distance(0.25, 10.0) < distance(1.0, 10.0)


def test_image_i_gets_the_same_noise_alone_or_in_a_batch():
    ctx = torch.randn(3, 4, 6)
    batch, alone = Recorder(), Recorder()
    ConditionAnnealing(batch, 0.5, (1.0, 10.0), gens(7, 8, 9))(
        torch.zeros(3, 2), torch.full((3,), 5.0), context=ctx
    )
    ConditionAnnealing(alone, 0.5, (1.0, 10.0), gens(8))(
        torch.zeros(1, 2), torch.full((1,), 5.0), context=ctx[1:2]
    )
    torch.testing.assert_close(batch.seen[1:2], alone.seen)


def test_fresh_noise_at_every_call():
    net = Recorder()
    cads = ConditionAnnealing(net, 0.5, (1.0, 10.0), gens(0))
    ctx = torch.randn(1, 4, 6)
    cads(torch.zeros(1, 2), torch.tensor([5.0]), context=ctx)
    first = net.seen
    cads(torch.zeros(1, 2), torch.tensor([5.0]), context=ctx)
    assert not torch.equal(first, net.seen)


def test_outside_guidance_the_negative_prompt_stays_exact():
    """CADS(CFG(D)): only the prompt's half is noised; the unconditional half sees `neg`."""

    class Halves(torch.nn.Module):
        def forward(self, x, sigma, context=None, context_mask=None):
            self.seen = context.clone()
            return x * 0.0 + context.mean((1, 2))[:, None]

    net, neg = Halves(), torch.randn(1, 4, 6)
    model = ConditionAnnealing(CFGDenoiser(net, {"context": neg}, 3.0), 1.0, (1.0, 10.0), gens(0))
    ctx = torch.randn(1, 4, 6)
    model(torch.zeros(1, 2), torch.tensor([50.0]), context=ctx)
    assert torch.equal(net.seen[1:], neg)
    assert not torch.equal(net.seen[:1], ctx)


@pytest.mark.parametrize(
    "noise, interval, match",
    [
        (0.0, (1.0, 10.0), r"CADS noise must be in \(0, 10\], got 0.0"),
        (11.0, (1.0, 10.0), r"CADS noise must be in \(0, 10\], got 11.0"),
        (math.nan, (1.0, 10.0), "CADS noise must be in"),
        (0.5, (0.0, 10.0), "needs lo > 0"),
        (0.5, (10.0, 1.0), "guidance interval must be two sigmas"),
    ],
)
def test_bad_settings_name_the_value(noise, interval, match):
    with pytest.raises(ValueError, match=match):
        ConditionAnnealing(Recorder(), noise, interval, gens(0))
