"""img2img, inpainting and DDIM inversion through the one sampling loop, on tiny real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_model

from t2i.cli import main
from t2i.denoisers import GaussianMixtureDenoiser
from t2i.editing import (
    JUMPS_BELOW,
    ddim_invert,
    jump_stretches,
    sampler_steps,
    soften,
    strength_sigmas,
)
from t2i.families import load
from t2i.images import load_image, psnr
from t2i.samplers import sample_euler
from t2i.schedules import sigmas_karras

PROMPT = "a red circle"
VOCAB = "a red blue green circle square".split()


def _folder(tmp_path_factory, latent: bool):
    folder = tmp_path_factory.mktemp("latent" if latent else "pixel")
    return load(write_tiny_model(folder, steps=4, latent=latent, vocab=VOCAB))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return _folder(tmp_path_factory, latent=False)


@pytest.fixture(scope="module")
def init_png(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "init.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def mask_png(tmp_path_factory):
    a = np.zeros((16, 16), dtype=np.uint8)
    a[4:12, 2:10] = 255  # repaint this box
    path = tmp_path_factory.mktemp("mask") / "mask.png"
    Image.fromarray(a).save(path)
    return path


def test_strength_zero_returns_the_input_exactly_on_a_pixel_model(pipe, init_png):
    out = pipe.generate(pipe.params(PROMPT, init=init_png, strength=0.0))
    assert torch.equal(out, load_image(init_png))


def test_strength_zero_returns_the_autoencoder_reconstruction(tmp_path_factory, init_png):
    latent = _folder(tmp_path_factory, latent=True)
    out = latent.generate(latent.params(PROMPT, init=init_png, strength=0.0))
    with torch.no_grad():
        recon = latent.autoencoder.from_latent(latent.autoencoder.to_latent(load_image(init_png)))
    torch.testing.assert_close(out, recon.clamp(-1, 1))
    again = latent.generate(latent.params(PROMPT, init=init_png, strength=0.5))
    assert again.shape == out.shape and (again - out).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral", "dpmpp_2m"])
def test_strength_one_equals_plain_generation_with_the_same_seed(pipe, init_png, sampler):
    kw = {"steps": 3, "seed": 7, "sampler": sampler}
    plain = pipe.generate(pipe.params(PROMPT, **kw))
    img2img = pipe.generate(pipe.params(PROMPT, init=init_png, strength=1.0, **kw))
    assert torch.equal(plain, img2img)


def test_strength_picks_the_number_of_steps_and_the_starting_sigma(pipe, init_png):
    sigmas = pipe.sigmas(10)
    assert torch.equal(strength_sigmas(sigmas, 0.6), sigmas[4:])
    assert len(strength_sigmas(sigmas, 0.0)) == 1
    calls = []
    pipe.generate(pipe.params(PROMPT, steps=10, init=init_png, strength=0.6), callback=calls.append)
    assert len(calls) == 6
    assert calls[0]["sigma"] == pytest.approx(sigmas[4].item())


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral", "dpmpp_2m", "heun"])
def test_inpainting_keeps_unmasked_pixels_and_repaints_the_mask(pipe, init_png, mask_png, sampler):
    x = load_image(init_png)
    keep = ~torch.from_numpy(np.asarray(Image.open(mask_png)) > 127)
    out = pipe.generate(pipe.params(PROMPT, steps=4, sampler=sampler, init=init_png, mask=mask_png))
    torch.testing.assert_close(out[..., keep], x[..., keep], atol=1e-5, rtol=0)
    assert (out[..., ~keep] - x[..., ~keep]).abs().mean() > 0.1


def test_mask_blur_fades_the_result_into_the_init_across_the_edge_only(pipe, init_png, mask_png):
    x = load_image(init_png)
    box = torch.from_numpy(np.asarray(Image.open(mask_png)) > 127)
    sharp = pipe.generate(pipe.params(PROMPT, steps=4, init=init_png, mask=mask_png))
    p = pipe.params(PROMPT, steps=4, init=init_png, mask=mask_png, mask_blur=2)
    soft = pipe.generate(p)
    far = torch.ones(16, 16, dtype=torch.bool)
    far[2:14, 0:12] = False  # more than the radius (2 px) from the box [4:12, 2:10]
    assert torch.equal(soft[..., far], x[..., far])  # far outside: the init, exactly
    inner = torch.zeros(16, 16, dtype=torch.bool)
    inner[7:9, 5:7] = True  # more than the radius inside: the sharp result, to float rounding
    torch.testing.assert_close(soft[..., inner], sharp[..., inner], atol=1e-6, rtol=0)
    edge = box & ~inner
    blend = (soft[..., edge] - x[..., edge]).abs().mean() / (
        sharp[..., edge] - x[..., edge]
    ).abs().mean()
    assert 0.05 < float(blend) < 0.95  # across the edge: between the init and the result
    assert '"mask_blur": 2' in p.to_json() and "mask_blur" not in sharp_params(
        pipe, init_png, mask_png
    )
    soft_mask = soften(
        torch.from_numpy(np.asarray(Image.open(mask_png)) > 127).float()[None, None], 2
    )
    assert float(soft_mask.min()) == 0.0 and float(soft_mask.max()) == 1.0
    assert torch.equal(soften(soft_mask, 0), soft_mask)


def sharp_params(pipe, init_png, mask_png) -> str:
    return pipe.params(PROMPT, steps=4, init=init_png, mask=mask_png).to_json()


def test_resampling_jumps_keep_the_known_region_and_change_the_result(pipe, init_png, mask_png):
    keep = ~torch.from_numpy(np.asarray(Image.open(mask_png)) > 127)
    kw = {"steps": 4, "sampler": "ddim", "init": init_png, "mask": mask_png}
    once = pipe.generate(pipe.params(PROMPT, **kw))
    calls = []
    p = pipe.params(PROMPT, resample=2, **kw)
    twice = pipe.generate(p, callback=calls.append)
    sigmas = pipe.sigmas(4).tolist()
    high = sum(s > JUMPS_BELOW for s in sigmas)  # steps from above JUMPS_BELOW run once
    assert 0 < high < 4
    assert len(calls) == pipe.total_steps(p) == high + 2 * (4 - high)
    assert [c["sigma"] for c in calls[:high]] == pytest.approx(sigmas[:high])
    torch.testing.assert_close(twice[..., keep], once[..., keep], atol=0, rtol=0)
    assert (twice - once).abs().max() > 1e-3


def test_jump_stretches_resample_only_below_the_bound():
    sigmas = torch.tensor([80.0, 20.0, 9.0, 5.0, 2.0, 1.0, 0.5, 0.25, 0.0])
    parts = jump_stretches(sigmas, 3, jump_length=5)
    assert [(s.tolist(), n) for s, n in parts] == [
        ([80.0, 20.0, 9.0], 1),
        ([9.0, 5.0, 2.0, 1.0, 0.5, 0.25], 3),
        ([0.25, 0.0], 3),
    ]
    assert sampler_steps(sigmas, 3) == 2 + 3 * 6 and sampler_steps(sigmas, 1) == 8
    ((only, passes),) = jump_stretches(sigmas[:2], 3)  # nothing below the bound: no jumps
    assert torch.equal(only, sigmas[:2]) and passes == 1


def test_inpainting_on_a_latent_model_keeps_the_latent_and_the_pixels_of_the_unmasked_region(
    tmp_path_factory, init_png
):
    # the decoder (GroupNorm, 3x3 convs) couples all pixels: the latents are kept by the sampler,
    # the pixels by the composite after decoding
    latent = _folder(tmp_path_factory, latent=True)
    a = np.zeros((16, 16), dtype=np.uint8)
    a[:, :6] = 255  # repaint the left 6 columns: latent columns 0..2 (factor 2)
    mask = tmp_path_factory.mktemp("m") / "left.png"
    Image.fromarray(a).save(mask)
    steps = []
    p = latent.params(PROMPT, steps=3, init=init_png, mask=mask)
    out = latent.generate(p, callback=steps.append)
    with torch.no_grad():
        z = latent.autoencoder.to_latent(load_image(init_png))
    final = steps[-1]["x"]
    assert steps[-1]["sigma_next"] == 0
    torch.testing.assert_close(final[..., 3:], z[..., 3:], atol=1e-5, rtol=0)
    assert (final[..., :3] - z[..., :3]).abs().mean() > 0.1
    assert torch.equal(out[..., 6:], load_image(init_png)[..., 6:])
    assert (out[..., :6] - load_image(init_png)[..., :6]).abs().mean() > 0.1


class ExactDenoiser(torch.nn.Module):
    """The exact denoiser of a Gaussian N(mean, 0.3^2 I), ignoring the text: inversion is then
    an ODE solve whose only error is the discretisation. (A mixture of two modes decides between
    them at high noise, where a 1e-6 difference flips the mode a sampled-back image lands in: no
    measure of the inversion.)"""

    def __init__(self, mean: torch.Tensor):
        super().__init__()
        self.gmm = GaussianMixtureDenoiser(mean, torch.tensor([0.3]), torch.tensor([1.0]))
        self.sigma_min, self.sigma_max = 0.002, 80.0

    def forward(self, x, sigma, **cond):
        return self.gmm(x, sigma)


def _inversion_psnr(model, x0: torch.Tensor, steps: int, refine: int = 2) -> float:
    sigmas = sigmas_karras(steps, 0.002, 80.0)
    noise = ddim_invert(model, x0, sigmas, refine=refine)
    assert noise.std() > 40  # really at sigma_max, not near the image
    return psnr(sample_euler(model, noise, sigmas), x0)


def test_ddim_inversion_solves_the_sampler_steps_backwards():
    torch.manual_seed(0)
    x0 = torch.randn(1, 3, 8, 8) * 0.5
    model = ExactDenoiser(x0 + 0.3 * torch.randn(1, 3, 8, 8))
    # plain Euler up (no refinement): first order, ~6 dB a doubling of the steps
    coarse, fine = _inversion_psnr(model, x0, 25, 0), _inversion_psnr(model, x0, 50, 0)
    assert 25 < coarse < fine - 5
    assert _inversion_psnr(model, x0, 25) > coarse + 20  # 54.4 dB against 29.8
    assert _inversion_psnr(model, x0, 50) > 60  # 72.0 dB


def test_pipeline_inversion_then_ddim_sampling_reconstructs_the_image(tmp_path_factory, init_png):
    exact = _folder(tmp_path_factory, latent=False)
    x = load_image(init_png)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    exact.denoiser = ExactDenoiser(x - 0.3 * z)  # x is a typical sample of the Gaussian
    noise = exact.invert(x, PROMPT, steps=50)
    assert 0.5 < noise.std() < 2  # unit noise, as the sampler's start expects
    p = exact.params(PROMPT, steps=50, sampler="ddim", guidance=1.0)
    back, other = exact.generate(p, noise=noise), exact.generate(p)
    assert psnr(back, x) > 50  # ddim = Euler, karras sigmas
    assert psnr(back, x) > psnr(other, x) + 10


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"strength": 1.5}, ValueError, r"strength must be in \[0, 1\], got 1.5"),
        ({"strength": -0.1}, ValueError, r"strength must be in \[0, 1\], got -0.1"),
        ({"resample": 0}, ValueError, r"resample must be in \[1, 20\], got 0"),
        ({"mask_blur": 2}, ValueError, r"mask_blur softens an inpainting mask's edge"),
    ],
)
def test_bad_editing_values_are_clear_errors(pipe, init_png, kwargs, error, message):
    with pytest.raises(error, match=message):
        pipe.params(PROMPT, init=init_png, **kwargs)


def test_bad_files_are_clear_errors(pipe, init_png, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read init image"):
        pipe.params(PROMPT, init=junk)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipe.params(PROMPT, init=tmp_path / "missing.png")
    small = tmp_path / "small.png"
    Image.new("L", (8, 8)).save(small)
    with pytest.raises(ValueError, match="mask is 8x8 but the image is 16x16"):
        pipe.generate(pipe.params(PROMPT, init=init_png, mask=small))
    with pytest.raises(ValueError, match="cannot read mask"):
        pipe.generate(pipe.params(PROMPT, init=init_png, mask=junk))
    with pytest.raises(ValueError, match="a mask needs the image"):
        pipe.params(PROMPT, mask=small)
    with pytest.raises(ValueError, match="init image is 16x16, the request is 32x32"):
        pipe.generate(pipe.params(PROMPT, init=init_png, size=(32, 32)))


def test_cli_img2img_and_inpainting(pipe, init_png, mask_png, tmp_path, capsys):
    model = str(pipe.name)
    out = tmp_path / "edit.png"
    argv = ["generate", PROMPT, "--model", model, "--init", str(init_png), "--quiet"]
    assert main([*argv, "--strength", "0", "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(init_png)))
    assert main([*argv, "--mask", str(mask_png), "--steps", "2", "--out", str(out)]) == 0
    assert main([*argv, "--strength", "2", "--out", str(out)]) == 2
    assert "strength must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert main([*argv, "--mask", str(tmp_path / "none.png"), "--out", str(out)]) == 2
    assert "mask" in capsys.readouterr().err
    bad_prompt = ["generate", "a (red circle", "--model", model, "--out", str(out), "--quiet"]
    assert main(bad_prompt) == 2
    assert "unbalanced '(' at position 2" in capsys.readouterr().err
    assert main(["generate", PROMPT, "--negative", "blue]", *bad_prompt[2:]]) == 2
    assert "unbalanced ']' at position 4" in capsys.readouterr().err


def test_a_grid_latent_model_generates_and_inpaints_on_its_3x3_latents(tmp_path_factory, init_png):
    grid = load(write_tiny_model(tmp_path_factory.mktemp("grid"), steps=3, grid=True, vocab=VOCAB))
    assert grid.factor == 16 and grid.latent_size(16, 16) == (3, 3)
    assert grid.generate(grid.params(PROMPT, steps=2)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="image size 24x16: each side must be a multiple of 16"):
        grid.params(PROMPT, size=(24, 16))
    a = np.zeros((16, 16), dtype=np.uint8)
    a[:, :5] = 255  # the left 5 columns lie in the first latent column's share only
    mask = tmp_path_factory.mktemp("m") / "left.png"
    Image.fromarray(a).save(mask)
    steps = []
    grid.generate(grid.params(PROMPT, steps=3, init=init_png, mask=mask), callback=steps.append)
    with torch.no_grad():
        z = grid.autoencoder.to_latent(load_image(init_png))
    final = steps[-1]["x"]
    torch.testing.assert_close(final[..., 1:], z[..., 1:], atol=1e-5, rtol=0)
    assert (final[..., :1] - z[..., :1]).abs().mean() > 0.1
