"""UNet on the tiny preset: shapes, gradients, key-padding mask, batching, config errors."""

import pytest
import torch

from t2i.models.layers import position_features
from t2i.models.unet import UNet, UNetConfig


def _inputs(c: UNetConfig, b: int = 2, size: int = 16, length: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c.in_channels, size, size, generator=g)
    t = torch.rand(b, generator=g) * 999
    ctx = torch.randn(b, length, c.context_dim, generator=g)
    return x, t, ctx


def test_shapes_and_extra_inputs():
    c = UNetConfig.preset("tiny", in_channels=4, out_channels=8, cond_channels=2, pooled_dim=12)
    net = UNet(c).eval()
    x, t, ctx = _inputs(c)
    y = net(x, t, ctx, pooled=torch.randn(2, 12), x_cond=torch.randn(2, 2, 16, 16))
    assert y.shape == (2, 8, 16, 16)
    with pytest.raises(ValueError, match="x_cond"):
        net(x, t, ctx, pooled=torch.randn(2, 12))
    with pytest.raises(ValueError, match="pooled"):
        net(x, t, ctx, x_cond=torch.randn(2, 2, 16, 16))


def test_gradients_reach_every_parameter():
    c = UNetConfig.preset("tiny", cond_channels=1, pooled_dim=8, position_features=2)
    torch.manual_seed(0)
    net = UNet(c)
    x, t, ctx = _inputs(c)
    y = net(
        x, t, ctx, torch.ones(2, 5, dtype=torch.bool), torch.randn(2, 8), torch.randn(2, 1, 16, 16)
    )
    y.square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_padding_tokens_do_not_change_output():
    c = UNetConfig.preset("tiny")
    torch.manual_seed(0)
    net = UNet(c).eval()
    x, t, ctx = _inputs(c, length=4)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    garbage = torch.randn(2, 3, c.context_dim) * 5
    padded = torch.cat([ctx, garbage], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    # row 1 also has garbage in its own padded positions 2, 3
    padded[1, 2:4] = torch.randn(2, c.context_dim) * 5
    with torch.no_grad():
        ref = net(x, t, ctx[:, :4], mask)
        out = net(x, t, padded, padded_mask)
        ignored = net(x, t, padded, torch.ones_like(padded_mask))  # same tokens, mask off
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert (ignored - ref).abs().max() > 1e-3  # the padding really would matter without the mask


def test_row_without_tokens_is_finite_and_batch_independent():
    c = UNetConfig.preset("tiny")
    net = UNet(c).eval()
    x, t, ctx = _inputs(c)
    mask = torch.tensor([[True] * 5, [False] * 5])
    with torch.no_grad():
        both = net(x, t, ctx, mask)
        first = net(x[:1], t[:1], ctx[:1], mask[:1])
    assert torch.isfinite(both).all()
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)


def test_batch_equals_one_by_one_and_t_changes_output():
    c = UNetConfig.preset("tiny")
    net = UNet(c).eval()
    x, t, ctx = _inputs(c, b=3)
    with torch.no_grad():
        batch = net(x, t, ctx)
        single = torch.cat([net(x[i : i + 1], t[i : i + 1], ctx[i : i + 1]) for i in range(3)])
        other_t = net(x, t + 100, ctx)
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)
    assert (other_t - batch).abs().max() > 1e-4


def test_config_errors():
    with pytest.raises(ValueError, match="choose from"):
        UNetConfig.preset("huge-typo")
    with pytest.raises(ValueError, match="divisible by groups"):
        UNetConfig(channels=(30, 60), groups=32)
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channels=(32, 64), attention_levels=(2,))
    with pytest.raises(ValueError, match="head_dim"):
        UNetConfig(channels=(32, 64), head_dim=24, attention_levels=(1,))
    net = UNet(UNetConfig.preset("tiny"))
    with pytest.raises(ValueError, match="context"):
        net(torch.randn(1, 3, 16, 16), torch.zeros(1))


@pytest.mark.parametrize("name", ["small", "latent", "base"])
def test_presets_build(name):
    c = UNetConfig.preset(name)
    assert c.channels and UNet(c).conv_out.out_channels == c.in_channels


def test_bf16_attention_path_matches_fp32_sdpa():
    """bf16 uses the written-out attention (faster backward on CPU): same result as fp32 SDPA."""
    from t2i.models.layers import attend, attention_mask

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=g) for _ in range(3))
    mask, _ = attention_mask(torch.tensor([[True] * 6, [True] * 3 + [False] * 3]))
    ref = attend(q, k, v, mask)
    out = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    # masked keys carry no weight in either path
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 3:], v2[1, :, 3:] = 100.0, 100.0
    torch.testing.assert_close(attend(q.bfloat16(), k2.bfloat16(), v2.bfloat16(), mask), out)


def test_bf16_autocast_training_step():
    c = UNetConfig.preset("tiny")
    torch.manual_seed(0)
    net = UNet(c)
    x, t, ctx = _inputs(c)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, t, ctx, mask)
    assert y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(y.float(), net(x, t, ctx, mask), atol=0.1, rtol=0.1)


def test_patch_stem_keeps_the_image_shape_and_sees_every_pixel():
    torch.manual_seed(0)
    net = UNet(UNetConfig.preset("tiny", patch_size=2))
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    ctx, mask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    out = net(x, torch.tensor([3.0, 500.0]), context=ctx, context_mask=mask)
    assert out.shape == x.shape
    out[0, :, 0, 0].sum().backward()  # one output pixel depends on its own patch's pixels
    assert x.grad[0, :, :2, :2].abs().min() > 0
    with pytest.raises(ValueError, match="patch_size must be >= 1, got 0"):
        UNetConfig.preset("tiny", patch_size=0)


def test_a_one_by_one_stem_reads_each_position_alone():
    # latents whose positions are patches (3x3x768 for shapes) get a linear patch embedding
    net = UNet(UNetConfig.preset("tiny", in_channels=48, stem_kernel=1, mid_attention=False))
    assert net.conv_in.weight.shape[-2:] == (1, 1) and net.conv_out.weight.shape[-2:] == (1, 1)
    x = torch.randn(2, 48, 4, 4)
    out = net(x, torch.tensor([3.0, 500.0]), torch.randn(2, 5, 32), torch.ones(2, 5, dtype=bool))
    assert out.shape == x.shape
    three = UNet(UNetConfig.preset("tiny", in_channels=48, mid_attention=False))
    n = [sum(p.numel() for p in m.parameters()) for m in (net, three)]
    assert n[1] - n[0] == 8 * 48 * 16 * 2  # 8 of the 9 kernel taps gone, in and out
    with pytest.raises(ValueError, match="stem_kernel must be 1 or 3, got 2"):
        UNetConfig.preset("tiny", stem_kernel=2)


def test_position_features_start_as_nothing_then_tell_positions_apart():
    torch.manual_seed(0)
    plain = UNet(UNetConfig.preset("tiny")).eval()
    with_pos = UNet(UNetConfig.preset("tiny", position_features=3)).eval()
    missing, _ = with_pos.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["pos_proj.bias", "pos_proj.weight"]
    x, t, ctx = _inputs(plain.config)
    with torch.no_grad():
        assert torch.equal(with_pos(x, t, ctx), plain(x, t, ctx))  # zero-initialised: no change
        with_pos.pos_proj.weight.normal_()
        assert not torch.allclose(with_pos(x, t, ctx), plain(x, t, ctx))
    feats = position_features(5, 7, 2).flatten(2)[0].T  # (35 positions, 8 features)
    assert torch.cdist(feats, feats).add(torch.eye(35)).min() > 0.1  # every position is distinct
    centre = position_features(3, 3, 2)[0, :, 1, 1]  # in units of the image: the centre is
    assert torch.allclose(position_features(9, 9, 2)[0, :, 4, 4], centre)  # the centre at any size
    with pytest.raises(ValueError, match="position_features must be >= 0, got -1"):
        UNetConfig.preset("tiny", position_features=-1)


def test_context_layers_start_as_identity_then_mix_tokens_and_respect_the_mask():
    torch.manual_seed(0)
    plain = UNet(UNetConfig.preset("tiny")).eval()
    mixed = UNet(UNetConfig.preset("tiny", context_layers=2)).eval()
    missing, _ = mixed.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("context_blocks.") for k in missing)
    x, t, ctx = _inputs(plain.config, length=4)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    with torch.no_grad():
        assert torch.equal(mixed(x, t, ctx, mask), plain(x, t, ctx, mask))  # zero branches
        for block in mixed.context_blocks:
            block.attn1.to_out.weight.normal_()
            block.ff.proj_out.weight.normal_()
        ref = mixed(x, t, ctx, mask)
        assert not torch.allclose(ref, plain(x, t, ctx, mask))
        garbage = ctx.clone()
        garbage[1, 2:] = torch.randn(2, ctx.shape[-1]) * 5  # padded tokens of row 1
        torch.testing.assert_close(mixed(x, t, garbage, mask), ref, atol=1e-5, rtol=1e-5)
        empty = mixed(x, t, ctx, torch.zeros_like(mask))  # rows with no token at all
        assert torch.isfinite(empty).all()
    mixed.train()
    mixed(x, t, ctx, mask).square().mean().backward()
    dead = [n for n, p in mixed.context_blocks.named_parameters() if not p.grad.abs().sum() > 0]
    assert dead == []
    with pytest.raises(ValueError, match="context_layers must be >= 0"):
        UNetConfig.preset("tiny", context_layers=-1)
    with pytest.raises(ValueError, match="needs context_dim > 0"):
        UNetConfig.preset("tiny", context_layers=1, context_dim=0)


def test_mid_depth_sets_the_middle_transformers_blocks_alone():
    default = UNet(UNetConfig.preset("tiny", transformer_depth=2))
    deeper = UNet(UNetConfig.preset("tiny", transformer_depth=2, mid_depth=5))
    assert len(default.mid_attn.blocks) == 2 and len(deeper.mid_attn.blocks) == 5
    levels = [b[1] for b in deeper.down if len(b) > 1 and b[1] is not None]
    assert levels and all(len(t.blocks) == 2 for t in levels)  # the other levels keep theirs
    x, t, ctx = torch.randn(1, 3, 16, 16), torch.tensor([3]), torch.randn(1, 4, 32)
    assert deeper(x, t, ctx).shape == x.shape
    with pytest.raises(ValueError, match="mid_depth must be >= 0"):
        UNetConfig.preset("tiny", mid_depth=-1)
    with pytest.raises(ValueError, match="needs mid_attention"):
        UNetConfig.preset("tiny", mid_depth=2, mid_attention=False)
