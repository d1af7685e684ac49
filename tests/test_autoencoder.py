"""Autoencoders on tiny presets: shapes, latent scaling, KL / VQ training, GAN loss."""

import pytest
import torch

from t2i.models.autoencoder import (
    AutoencoderConfig,
    AutoencoderKL,
    AutoencoderVQ,
    VQConfig,
    code_usage,
    latent_stats,
)
from t2i.models.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from t2i.models.autoencoder_patch import AutoencoderPatch, PatchConfig


def _batch(n: int = 4, size: int = 16) -> torch.Tensor:
    """Smooth images in [-1, 1]: a fixed batch the autoencoders can learn quickly."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def _train(ae, loss_fn, x, steps: int, disc_start_offset: int = 0):
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    losses, logs = [], {}
    for step in range(steps):
        out = ae(x, torch.Generator().manual_seed(step))
        loss, logs = loss_fn.generator_loss(x, out, step + disc_start_offset, ae.last_layer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, logs


def test_kl_shapes_and_posterior():
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny"))
    x = _batch()
    post = ae.encode(x)
    assert post.mean.shape == (4, 4, 8, 8) and ae.config.factor == 2
    z = post.sample(torch.Generator().manual_seed(0))
    z2 = post.sample(torch.Generator().manual_seed(0))
    assert torch.equal(z, z2) and not torch.equal(z, post.mode())
    assert ae.decode(z).shape == x.shape
    assert (post.kl() >= 0).all()


def test_kl_trains_and_loss_falls():
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny"))
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(kl_weight=1e-3, disc_start=10**9))
    losses, logs = _train(ae, loss_fn, _batch(), 40)
    assert losses[-1] < 0.5 * losses[0]
    assert "kl" in logs and "g" not in logs  # GAN still off before disc_start


def test_gan_switches_on_after_start_with_adaptive_weight():
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny"))
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(disc_start=3, disc_channels=8, disc_layers=2))
    x = _batch()
    out = ae(x)
    _, before = loss_fn.generator_loss(x, out, 2, ae.last_layer)
    _, after = loss_fn.generator_loss(x, out, 3, ae.last_layer)
    assert "g" not in before and after["disc_weight"] > 0
    assert not loss_fn.disc_active(2) and loss_fn.disc_active(3)
    d_loss, d_logs = loss_fn.discriminator_loss(x, out.x_rec.detach(), 3)
    d_loss.backward()
    assert all(p.grad is not None for p in loss_fn.discriminator.parameters())
    assert d_logs["d_loss"] >= 0


def test_vq_trains_updates_codebook_and_reports_usage():
    torch.manual_seed(0)
    ae = AutoencoderVQ(VQConfig.preset("tiny"))
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(disc_start=10**9))
    x = _batch()
    book = ae.quantizer.codebook.clone()
    losses, logs = _train(ae, loss_fn, x, 40)
    assert losses[-1] < 0.5 * losses[0] and "vq" in logs
    assert not torch.equal(book, ae.quantizer.codebook)  # EMA moved the codebook
    ae.eval()
    frozen = ae.quantizer.codebook.clone()
    out = ae(x)
    assert torch.equal(frozen, ae.quantizer.codebook)  # no EMA update in eval mode
    usage = code_usage(out.codes, ae.config.codebook_size)
    assert 0 < usage["used"] <= 1 and 1 <= usage["perplexity"] <= ae.config.codebook_size
    assert ae.decode_codes(out.codes).shape == x.shape


def test_latent_stats_standardise_latents():
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny"))
    batches = [_batch(4) * s for s in (1.0, 0.5)]
    scale, shift = latent_stats(ae, batches)
    ae.set_latent_stats(scale, shift)
    z = torch.cat([ae.to_latent(x) for x in batches]).transpose(0, 1).flatten(1)
    torch.testing.assert_close(z.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(4), atol=1e-4, rtol=0)
    x = batches[0]
    torch.testing.assert_close(ae.from_latent(ae.to_latent(x)), ae.decode(ae.encode(x).mode()))


def test_config_errors():
    with pytest.raises(ValueError, match="choose from"):
        AutoencoderConfig.preset("f16")
    with pytest.raises(ValueError, match="divisible"):
        AutoencoderConfig(channels=(20, 40), groups=32)
    with pytest.raises(ValueError, match="latent_scale"):
        AutoencoderConfig(latent_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="reconstruction"):
        AutoencoderLossConfig(reconstruction="l3")


def test_vq_picks_codes_in_fp32_under_bf16_autocast():
    """Nearest codes in bf16 pick another code for close pairs; the quantizer works in fp32."""
    torch.manual_seed(0)
    ae = AutoencoderVQ(VQConfig.preset("tiny")).eval()
    ae.quantizer.codebook.copy_(torch.randn_like(ae.quantizer.codebook) * 0.05 + 3.0)
    z = ae.quantizer.codebook[torch.randint(0, 64, (2 * 8 * 8,))].view(2, 8, 8, 8)
    z = z.permute(0, 3, 1, 2) + 0.01 * torch.randn(2, 8, 8, 8)
    _, _, exact = ae.quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, under_autocast = ae.quantizer(z)
    assert torch.equal(exact, under_autocast)


def test_vq_restarts_unused_codes_on_data():
    """A codebook initialised far from the data is pulled onto it: after a few updates most codes
    are chosen, not the one or two nearest the data."""
    torch.manual_seed(0)
    q = AutoencoderVQ(VQConfig.preset("tiny")).quantizer.train()
    q.initialised.fill_(True)  # skip the data init: start from a collapsed codebook
    q.codebook.copy_(torch.randn_like(q.codebook) * 0.01 + 10.0)
    q.embed_sum.copy_(q.codebook)
    for step in range(30):
        z = torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(step))
        with torch.enable_grad():
            _, _, codes = q(z)
    assert code_usage(codes, 64)["used"] > 0.5


def test_a_resampling_autoencoder_gives_one_latent_per_cell_of_a_3x3_grid():
    # 16 px read at 12 px, 3 levels (12 -> 6 -> 3): each level's grid lines up with the cells
    c = AutoencoderConfig.preset("tiny", channels=(16, 16, 32), resample=0.75)
    ae = AutoencoderKL(c)
    x = _batch(2, 16)
    z = ae.encode(x).mode()
    assert c.factor == 16 and z.shape == (2, 4, 3, 3) and ae.decode(z).shape == x.shape
    assert [c.latent_side(s) for s in (16, 32, 64)] == [3, 6, 12]
    for side in (8, 24):
        with pytest.raises(ValueError, match=f"image side {side}: .*multiples of 16"):
            c.latent_side(side)
    c.check_network_factor(1)
    with pytest.raises(ValueError, match="does not downsample; this one does by 2"):
        c.check_network_factor(2)
    with pytest.raises(ValueError, match="resample must be in \\(0, 4\\], got 0"):
        AutoencoderConfig.preset("tiny", resample=0)
    plain = AutoencoderConfig.preset("tiny")
    assert plain.latent_side(16) == 8 and plain.factor == 2
    plain.check_network_factor(4)  # plain latents: any factor that divides them


def test_a_resampling_autoencoder_trains_and_loss_falls():
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny", channels=(16, 16, 32), resample=0.75))
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(kl_weight=1e-3, disc_start=10**9))
    losses, _ = _train(ae, loss_fn, _batch(), 40)
    assert losses[-1] < 0.5 * losses[0]


def test_a_patch_autoencoder_is_pixels_cut_into_one_latent_per_cell():
    from t2i.data.judge import judge
    from t2i.data.shapes import ShapesConfig, shapes_item
    from t2i.models.autoencoder import resize

    ae = AutoencoderPatch(PatchConfig())  # 64 px read at 48 px, 16 px patches: 3x3x768
    items = [shapes_item(ShapesConfig(), "test", i) for i in range(24)]
    x = torch.stack([it["image"] for it in items])
    z = ae.to_latent(x)
    assert z.shape == (24, 768, 3, 3) and ae.config.factor == 64
    small = resize(x, (48, 48))  # latent (r, c) holds exactly the pixels of cell (r, c)
    assert torch.equal(z[:, :, 1, 2].reshape(24, 3, 16, 16), small[:, :, 16:32, 32:48])
    back = ae.from_latent(z)
    assert back.shape == x.shape
    assert all(judge(im, it["scene"]).ok for im, it in zip(back, items))  # nothing learnt to lose
    exact = AutoencoderPatch(PatchConfig(patch=4, resample=1))
    assert torch.equal(exact.from_latent(exact.to_latent(x)), x)
    with pytest.raises(ValueError, match="image side 60: this autoencoder takes multiples of 64"):
        ae.to_latent(torch.zeros(1, 3, 60, 60))
    with pytest.raises(ValueError, match="patch must be >= 1, got 0"):
        PatchConfig(patch=0)
    with pytest.raises(ValueError, match="resample must be in \\(0, 4\\], got 0"):
        PatchConfig(resample=0)
