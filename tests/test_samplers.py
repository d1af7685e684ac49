"""Samplers on exact cases: with the exact denoiser of a Gaussian mixture every sampler reaches
the data distribution, and each deterministic solver shows its order of convergence."""

import pytest
import torch

from t2i.denoisers import EDMDenoiser, EpsDenoiser, GaussianMixtureDenoiser
from t2i.samplers import (
    SAMPLERS,
    get_sampler,
    randn_like_per_item,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_euler_ancestral,
    sample_lcm,
    sample_mcm,
    sigmas_for,
)
from t2i.schedules import DiscreteSchedule, discrete_sigmas, sigmas_karras

# data: 0.3 N(-2.8, 0.5^2) + 0.7 N(1.2, 0.5^2): mean 0, std sqrt(0.25 + 2.352 + 1.008) = 1.900.
# Zero mean, so starting from noise * sigma_max is the exact prior up to a 3.61/80^2 variance.
MIX = GaussianMixtureDenoiser(
    torch.tensor([[-2.8], [1.2]]), torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.7])
)
MEAN, STD, W_POS, SPLIT = 0.0, 3.61**0.5, 0.7, -0.8  # SPLIT: midway between the components
N = 20000  # samples: standard errors 0.013 (mean), 0.0032 (weight)
DDPM_SIGMAS = DiscreteSchedule.preset("ddpm").sigmas()  # a VP model's discrete sigmas, max 157
QUADRATIC = torch.linspace(999**0.5, 0, 100).pow(2).round().unique().flip(0).tolist()


class DiscreteMix(torch.nn.Module):
    """The exact mixture denoiser seen as a discrete VP model (has .sigmas) for sigmas_for()."""

    sigmas = DDPM_SIGMAS

    def forward(self, x, sigma, **cond):
        return MIX(x, sigma, **cond)


# name, options, sigmas (steps): deterministic solvers at the steps where their bias is small
CASES = [
    ("euler", {}, sigmas_karras(100, 0.002, 80.0)),
    ("heun", {}, sigmas_karras(30, 0.002, 80.0)),
    ("heun", {"s_churn": 10.0}, sigmas_karras(40, 0.002, 80.0)),
    ("dpmpp_2m", {}, sigmas_karras(30, 0.002, 80.0)),
    ("dpmpp_2m_sde", {}, sigmas_karras(50, 0.002, 80.0)),
    ("euler_ancestral", {}, sigmas_karras(100, 0.002, 80.0)),
    ("ddim", {"eta": 0.0}, sigmas_for(DiscreteMix(), 100, "discrete", "trailing")),
    ("ddim", {"eta": 1.0}, sigmas_for(DiscreteMix(), 100, "discrete", "trailing")),
    # DDIM on a non-uniform subset of the timesteps (quadratic spacing, denser near t = 0)
    ("ddim", {"eta": 0.0}, discrete_sigmas(DDPM_SIGMAS, 0, at=QUADRATIC)),
    ("ddpm", {"variance": "beta_tilde"}, sigmas_for(DiscreteMix(), 100, "discrete", "trailing")),
    ("ddpm", {"variance": "beta"}, sigmas_for(DiscreteMix(), 250, "discrete", "trailing")),
]


@pytest.mark.parametrize(
    "name, opts, sigmas", CASES, ids=[f"{c[0]}{c[1]}-{len(c[2]) - 1}" for c in CASES]
)
def test_sampler_reaches_the_mixture(name, opts, sigmas):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, 1, generator=g) * sigmas[0]
    out = get_sampler(name)(MIX, x, sigmas, generator=g, **opts)
    assert abs(out.mean().item() - MEAN) < 0.06, out.mean()
    assert abs(out.std().item() - STD) < 0.06, out.std()
    assert abs((out > SPLIT).float().mean().item() - W_POS) < 0.015
    # each sample belongs to a component: the within-component spread is the data's 0.5
    within = (out - torch.where(out > SPLIT, 1.2, -2.8)).std().item()
    assert abs(within - 0.5) < 0.05, within


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_lcm_with_a_consistency_function_is_exact_at_any_steps(steps):
    """For N(mu, s^2) data the PF-ODE end point is f(x, sigma) = mu + (x - mu) s / sqrt(s^2 +
    sigma^2); multistep consistency sampling with it gives the data law at 1, 2 and 4 steps."""
    mu, s = 1.0, 0.5
    f = lambda x, sigma: mu + (x - mu) * s / (s**2 + sigma[:, None] ** 2).sqrt()  # noqa: E731
    sigmas = sigmas_karras(steps, 0.5, 80.0) if steps > 1 else torch.tensor([80.0, 0.0])
    g = torch.Generator().manual_seed(0)
    out = sample_lcm(f, torch.randn(N, 1, generator=g) * 80.0, sigmas, generator=g)
    assert abs(out.mean().item() - mu) < 0.02 and abs(out.std().item() - s) < 0.02


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_mcm_with_an_exact_multistep_map_is_exact_and_with_lcms_map_is_not(steps):
    """A multistep consistency map sends x at sigma to the ODE's point at the next sigma of the
    run, read as the x0 estimate whose DDIM step lands there; `mcm` with it gives the data law
    for N(mu, s^2) at any steps. LCM's map to the ODE's end is right only in one step."""
    mu, s = 1.0, 0.5
    sigmas = sigmas_karras(steps, 0.5, 80.0) if steps > 1 else torch.tensor([80.0, 0.0])
    following = {float(a): b for a, b in zip(sigmas[:-1], sigmas[1:])}

    def to_next(x, sigma):
        end = following[float(sigma[0])]
        landing = mu + (x - mu) * ((s**2 + end**2) / (s**2 + sigma[:, None] ** 2)).sqrt()
        r = end / sigma[:, None]
        return (landing - r * x) / (1 - r)

    def to_end(x, sigma):
        return mu + (x - mu) * s / (s**2 + sigma[:, None] ** 2).sqrt()

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(N, 1, generator=g) * 80.0
    out = sample_mcm(to_next, noise, sigmas)
    assert abs(out.mean().item() - mu) < 0.02 and abs(out.std().item() - s) < 0.02
    std_lcm_map = sample_mcm(to_end, noise, sigmas).std().item()
    assert (abs(std_lcm_map - s) < 0.02) == (steps == 1), std_lcm_map


@pytest.fixture(scope="module")
def ode_reference():
    x = torch.randn(500, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x, get_sampler("heun")(MIX, x * 20.0, sigmas_karras(1025, 0.05, 20.0).double()[:-1])


def _ode_error(name, steps, x, ref):
    sigmas = sigmas_karras(steps + 1, 0.05, 20.0).double()[:-1]  # stop at sigma_min: no last jump
    return (get_sampler(name)(MIX, x * 20.0, sigmas) - ref).abs().mean().item()


@pytest.mark.parametrize("name, order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_order_of_convergence(name, order, ode_reference):
    """Error vs a 1024-step Heun solution at sigma_min; doubling the steps divides it by 2^order."""
    x, ref = ode_reference
    e16, e32, e64 = (_ode_error(name, n, x, ref) for n in (16, 32, 64))
    for ratio in (e16 / e32, e32 / e64):
        assert abs(ratio - 2**order) < 0.25 * 2**order, (e16, e32, e64)


def test_ddim_eta0_is_euler_and_ddpm_is_ancestral_euler():
    sigmas = sigmas_for(DiscreteMix(), 20, "discrete", "leading")
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    torch.testing.assert_close(sample_ddim(MIX, x, sigmas), sample_euler(MIX, x, sigmas))
    a = sample_ddpm(MIX, x, sigmas, generator=torch.Generator().manual_seed(1))
    b = sample_euler_ancestral(MIX, x, sigmas, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_batch_equals_one_by_one(name):
    sigmas = sigmas_karras(6, 0.01, 10.0)
    seeds = range(40, 44)
    noise = randn_like_per_item(
        torch.empty(4, 1, 3, 3), [torch.Generator().manual_seed(s) for s in seeds]
    )
    batch = get_sampler(name)(
        MIX, noise * 10.0, sigmas, generator=[torch.Generator().manual_seed(s + 100) for s in seeds]
    )
    for i, s in enumerate(seeds):
        one = get_sampler(name)(
            MIX, noise[i : i + 1] * 10.0, sigmas, generator=[torch.Generator().manual_seed(s + 100)]
        )
        torch.testing.assert_close(batch[i : i + 1], one, rtol=1e-5, atol=1e-5)


def test_callback_sees_every_step():
    seen = []
    sigmas = sigmas_karras(5, 0.1, 10.0)
    out = sample_euler(MIX, torch.ones(2, 1) * 10.0, sigmas, callback=seen.append)
    assert [d["i"] for d in seen] == [0, 1, 2, 3, 4]
    assert [d["sigma"] for d in seen] == pytest.approx(sigmas[:-1].tolist())
    assert seen[-1]["x"] is out and seen[-1]["sigma_next"] == 0
    assert seen[0]["denoised"].shape == (2, 1)


def test_sigmas_for():
    eps = EpsDenoiser(lambda x, t: x, DiscreteSchedule.preset("sd"))
    s = sigmas_for(eps, 10)  # auto: the model's own sigmas, trailing
    assert len(s) == 11 and s[-1] == 0 and s[0] == eps.sigmas[-1]
    assert torch.isin(s[:-1], eps.sigmas).all()
    k = sigmas_for(eps, 10, "karras")
    assert k[0] == pytest.approx(eps.sigma_max) and k[-2] == pytest.approx(eps.sigma_min)
    edm = sigmas_for(EDMDenoiser(lambda x, t: x), 10)  # auto: karras between 0.002 and 80
    assert edm[0] == pytest.approx(80.0) and edm[-2] == pytest.approx(0.002)
    assert torch.equal(sigmas_for(DiscreteSchedule.preset("sd"), 10), s)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: get_sampler("eulr"),
            r"unknown sampler 'eulr'; choose from \['ddim', 'ddpm', 'dpmpp_2m'",
        ),
        (lambda: sigmas_for(MIX, 0), "steps must be an integer >= 1, got 0"),
        (lambda: sigmas_for(MIX, 10, "cosine"), r"unknown schedule 'cosine'; choose from \['auto'"),
        (
            lambda: sigmas_for(EDMDenoiser(lambda x, t: x), 10, "discrete"),
            "needs a model with discrete sigmas",
        ),
        (
            lambda: sample_euler(MIX, torch.zeros(2, 1), torch.tensor([1.0, -0.5, 0.0])),
            r"sigmas must be >= 0, got \[1.0, -0.5, 0.0\]",
        ),
        (lambda: sample_euler(MIX, torch.zeros(2, 1), torch.tensor([1.0])), "steps >= 1"),
        (
            lambda: sample_euler(MIX, torch.zeros(2, 1), torch.tensor([1.0, 2.0, 0.0])),
            "non-increasing",
        ),
        (
            lambda: sample_euler_ancestral(
                MIX, torch.zeros(2, 1), torch.tensor([1.0, 0.0]), generator=[torch.Generator()]
            ),
            "got 1 generators for a batch of 2",
        ),
        (
            lambda: sample_ddpm(MIX, torch.zeros(2, 1), torch.tensor([1.0, 0.0]), variance="large"),
            r"unknown variance 'large'; choose from \['beta', 'beta_tilde', 'learned'\]",
        ),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_readme_ten_lines_run():
    """The README's "diffusion core in ten lines" block runs and guides each image to its label."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## The diffusion core in ten lines", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    ns: dict = {"print": lambda *a: None}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["name"] == "dpmpp_2m"
    assert (ns["x0"][:, 0].sign() == torch.tensor([-1.0, 1.0, -1.0, 1.0])).all()
