"""Guidance wrappers on exact cases: classifier guidance with the exact posterior, CFG identities,
context padding, guidance rescale, batch == one by one, bad arguments."""

import pytest
import torch

from t2i.denoisers import GaussianMixtureDenoiser
from t2i.guidance import CFGDenoiser, ClassifierGuidance, GradientGuidance
from t2i.samplers import get_sampler, randn_like_per_item, sigmas_for
from t2i.schedules import sigmas_karras

MIX = GaussianMixtureDenoiser(
    torch.tensor([[-2.8], [1.2]]), torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.7])
)
UNCOND = {"y": torch.tensor([-1])}  # the mixture denoiser's "no label"


@pytest.mark.parametrize("name, steps", [("heun", 30), ("euler_ancestral", 100), ("dpmpp_2m", 30)])
@pytest.mark.parametrize("label", [0, 1])
def test_classifier_guidance_with_exact_posterior_samples_one_component(name, steps, label):
    """grad log p(y | x_sigma) at scale 1 turns the unconditional D into the conditional one."""
    guided = ClassifierGuidance(MIX, classifier=MIX.log_posterior, scale=1.0)
    sigmas = sigmas_karras(steps, 0.002, 80.0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10000, 1, generator=g) * sigmas[0]
    y = torch.full((10000,), label)
    out = get_sampler(name)(guided, x, sigmas, extra_args={"y": y}, generator=g)
    in_y = (out > -0.8) if label else (out < -0.8)  # -0.8: midway between the components
    assert in_y.float().mean() > 0.995  # component y alone (unguided: 0.3 / 0.7)
    assert abs(out.mean().item() - [-2.8, 1.2][label]) < 0.04
    assert abs(out.std().item() - 0.5) < 0.04


def test_classifier_guidance_equals_conditional_denoiser_pointwise():
    guided = ClassifierGuidance(MIX, classifier=MIX.log_posterior, scale=1.0)
    x = torch.linspace(-6, 6, 50, dtype=torch.float64)[:, None]
    for sigma in (0.1, 1.0, 10.0):
        y = torch.zeros(50, dtype=torch.long)
        torch.testing.assert_close(guided(x, sigma, y=y), MIX(x, sigma, y=y))


def test_gradient_guidance_hook_adds_sigma_squared_times_gradient():
    a, k = 1.5, 0.3  # log p = -k/2 |x - a|^2  ->  grad = -k (x - a)
    hook = GradientGuidance(MIX, lambda x, sigma, x0: -0.5 * k * (x - a).pow(2).sum(1), scale=2.0)
    x, sigma = torch.randn(5, 1), torch.full((5,), 0.7)
    torch.testing.assert_close(hook(x, sigma), MIX(x, sigma) + 2.0 * 0.49 * (-k) * (x - a))


def test_cfg_scale_1_is_conditional_and_scale_s_is_the_linear_combination():
    x, sigma = torch.randn(8, 1, dtype=torch.float64) * 3, torch.rand(8, dtype=torch.float64) * 5
    y = torch.randint(0, 2, (8,))
    cond, uncond = MIX(x, sigma, y=y), MIX(x, sigma)
    torch.testing.assert_close(CFGDenoiser(MIX, UNCOND, 1.0)(x, sigma, y=y), cond)
    torch.testing.assert_close(CFGDenoiser(MIX, UNCOND, 0.0)(x, sigma, y=y), uncond)
    torch.testing.assert_close(
        CFGDenoiser(MIX, UNCOND, 4.0)(x, sigma, y=y), uncond + 4 * (cond - uncond)
    )


class ContextNet(torch.nn.Module):
    """A denoiser reading a masked mean of its context (as cross-attention would); counts calls."""

    calls = 0

    def forward(self, x, sigma, context=None, context_mask=None):
        ContextNet.calls += 1
        mask = (
            torch.ones(context.shape[:2], dtype=torch.bool)
            if context_mask is None
            else context_mask
        )
        m = (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        m = m[:, :1, None, None]
        return x * (0.5 + 0.2 * m) + m * sigma[:, None, None, None]


def test_cfg_is_one_batched_call_and_pads_context_of_other_length():
    net = ContextNet()
    x, sigma = torch.randn(2, 1, 2, 2), torch.tensor([1.0, 2.0])
    ctx, neg = torch.randn(2, 7, 4), torch.randn(1, 3, 4)  # negative prompt: shorter, batch 1
    ContextNet.calls = 0
    out = CFGDenoiser(net, {"context": neg}, scale=3.0)(x, sigma, context=ctx)
    assert ContextNet.calls == 1
    c, u = net(x, sigma, context=ctx), net(x, sigma, context=neg.expand(2, 3, 4))
    torch.testing.assert_close(out, u + 3.0 * (c - u))


def test_cfg_mask_on_one_side_only():
    """Masked cond, unmasked negative prompt of the same length: uncond counts all its tokens."""
    net = ContextNet()
    x, sigma = torch.randn(2, 1, 2, 2), torch.tensor([0.5, 4.0])
    ctx, neg = torch.randn(2, 4, 4), torch.randn(1, 4, 4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    out = CFGDenoiser(net, {"context": neg}, scale=2.0)(x, sigma, context=ctx, context_mask=mask)
    c = net(x, sigma, context=ctx, context_mask=mask)
    u = net(x, sigma, context=neg.expand(2, 4, 4))
    torch.testing.assert_close(out, u + 2.0 * (c - u))


def test_guidance_interval_guides_inside_and_runs_the_conditional_alone_outside():
    """lo < sigma <= hi: the full CFG call; elsewhere one un-doubled conditional call."""
    net = ContextNet()
    x, ctx, neg = torch.randn(2, 1, 2, 2), torch.randn(2, 5, 4), torch.randn(1, 5, 4)
    guided = CFGDenoiser(net, {"context": neg}, scale=3.0, interval=(0.5, 2.0))
    full = CFGDenoiser(net, {"context": neg}, scale=3.0)
    for s, inside in ((0.5, False), (0.51, True), (2.0, True), (2.01, False), (80.0, False)):
        sigma = torch.full((2,), s)
        ContextNet.calls = 0
        out = guided(x, sigma, context=ctx)
        assert ContextNet.calls == 1
        want = full(x, sigma, context=ctx) if inside else net(x, sigma, context=ctx)
        torch.testing.assert_close(out, want)
        assert not inside or not torch.allclose(out, net(x, sigma, context=ctx))


@pytest.mark.parametrize(
    "interval", [(2.0, 1.0), (-1.0, 2.0), (0.0, float("inf")), (0.0, float("nan")), (1.0,), "a"]
)
def test_bad_guidance_interval_names_the_value(interval):
    with pytest.raises(ValueError, match=r"guidance interval must be two sigmas lo,hi .*got"):
        CFGDenoiser(MIX, UNCOND, 2.0, interval=interval)


def test_guidance_interval_refuses_a_batch_that_straddles_it():
    guided = CFGDenoiser(MIX, UNCOND, 2.0, interval=(0.5, 2.0))
    with pytest.raises(ValueError, match="one sigma per call"):
        guided(torch.zeros(2, 1), torch.tensor([1.0, 3.0]), y=torch.zeros(2))


def test_guidance_rescale():
    net = ContextNet()
    x, sigma = torch.randn(2, 1, 4, 4), torch.tensor([1.0, 2.0])
    cond, uncond = {"context": torch.randn(2, 3, 4)}, {"context": torch.randn(2, 3, 4)}
    plain = CFGDenoiser(net, uncond, 7.0)(x, sigma, **cond)
    assert torch.equal(CFGDenoiser(net, uncond, 7.0, rescale=0.0)(x, sigma, **cond), plain)
    full = CFGDenoiser(net, uncond, 7.0, rescale=1.0)(x, sigma, **cond)
    s = sigma[:, None, None, None]
    eps_full, eps_c = (x - full) / s, (x - net(x, sigma, **cond)) / s
    torch.testing.assert_close(eps_full.std(dim=(1, 2, 3)), eps_c.std(dim=(1, 2, 3)))
    assert not torch.allclose(full, plain)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "ddpm"])
def test_batch_of_4_with_seeds_equals_four_single_calls(name):
    guided = CFGDenoiser(MIX, UNCOND, scale=2.0)
    sigmas, s = sigmas_for(MIX, 8), 1000
    y = torch.tensor([0, 1, 1, 0])

    def run(idx):
        gens = [torch.Generator().manual_seed(s + i) for i in idx]
        x = randn_like_per_item(torch.empty(len(idx), 1, 2, 2), gens) * sigmas[0]
        return get_sampler(name)(guided, x, sigmas, extra_args={"y": y[idx]}, generator=gens)

    batch = run([0, 1, 2, 3])
    for i in range(4):
        torch.testing.assert_close(batch[i : i + 1], run([i]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: CFGDenoiser(MIX, {"z": torch.zeros(1)}, 2.0)(
                torch.zeros(2, 1), 1.0, y=torch.zeros(2)
            ),
            r"uncond has keys \['z'\] that cond lacks; allowed: \['y'\]",
        ),
        (
            lambda: CFGDenoiser(MIX, {"y": torch.zeros(3)}, 2.0)(
                torch.zeros(2, 1), 1.0, y=torch.zeros(2)
            ),
            r"uncond\['y'\] has batch 3; expected 1 or 2",
        ),
        (
            lambda: CFGDenoiser(ContextNet(), {}, 2.0)(
                torch.zeros(2, 1, 1, 1), 1.0, context=torch.zeros(2, 3, 4)
            ),
            r"uncond lacks \['context'\]: pass the empty or negative prompt's embeddings",
        ),
        (
            lambda: CFGDenoiser(MIX, UNCOND, 2.0, rescale=1.5),
            r"rescale must be in \[0, 1\], got 1.5",
        ),
        (
            lambda: CFGDenoiser(MIX, UNCOND, 2.0)(torch.zeros(2, 1), -1.0, y=torch.zeros(2)),
            "sigma must be >= 0",
        ),
        (
            lambda: GradientGuidance(MIX, lambda x, s, x0: x.sum())(torch.zeros(2, 1), 1.0),
            r"log_prob must return shape \(2,\)",
        ),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
