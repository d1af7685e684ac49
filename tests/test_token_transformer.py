"""The autoregressive token transformer: causality, the KV-cached sampler agrees with teacher
forcing, batch equals single, guidance, and it learns a fixed batch."""

from __future__ import annotations

import pytest
import torch

from t2i.models.token_transformer import (
    TokenTransformer,
    TokenTransformerConfig,
    pick,
    sample_codes,
)


def _model(seed: int = 0) -> TokenTransformer:
    torch.manual_seed(seed)
    return TokenTransformer(TokenTransformerConfig.preset("tiny")).eval()


def _context(b: int = 2, length: int = 5, dim: int = 32):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, 3:] = False  # padding: a shorter caption
    return torch.randn(b, length, dim, generator=g), mask


def test_logits_at_i_depend_only_on_codes_before_i():
    model, (ctx, mask) = _model(), _context()
    codes = torch.randint(
        0, 64, (2, model.config.length), generator=torch.Generator().manual_seed(2)
    )
    changed = codes.clone()
    changed[:, 20] = (codes[:, 20] + 1) % 64
    with torch.no_grad():
        a, b = model(codes, ctx, mask), model(changed, ctx, mask)
    torch.testing.assert_close(a[:, :21], b[:, :21])  # position 20 is predicted before it is seen
    assert not torch.allclose(a[:, 21:], b[:, 21:])


def test_cached_sampling_agrees_with_teacher_forcing():
    """Greedy codes drawn one at a time through the KV cache are the argmax of the full forward
    pass over those same codes: the cache computes what training computes."""
    model, (ctx, mask) = _model(), _context()
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    codes = sample_codes(model, ctx, mask, None, 1.0, gens, temperature=0.0)
    with torch.no_grad():
        logits = model(codes.flatten(1), ctx, mask)
    assert torch.equal(logits.argmax(-1), codes.flatten(1))


def test_batch_equals_single_and_seeds_matter():
    model, (ctx, mask) = _model(), _context()
    uncond = (torch.zeros(1, 1, 32), torch.ones(1, 1, dtype=torch.bool))

    def draw(rows, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return sample_codes(model, ctx[rows], mask[rows], uncond, 2.0, gens, top_k=16)

    both = draw([0, 1], [5, 6])
    assert torch.equal(both[0], draw([0], [5])[0]) and torch.equal(both[1], draw([1], [6])[0])
    assert not torch.equal(both[0], draw([0], [7])[0])


def test_guidance_mixes_conditional_and_unconditional_logits():
    logits_c, logits_u = torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 3.0]])
    mixed = logits_u + 3.0 * (logits_c - logits_u)
    assert pick(mixed, 0.0, 0, [None]).item() == 0  # guidance flips argmax from code 2 to code 0
    gens = [torch.Generator().manual_seed(0)]
    drawn = {pick(torch.tensor([[0.0, 5.0, 4.9, -9.0]]), 1.0, 2, gens).item() for _ in range(50)}
    assert drawn == {1, 2}  # top-k 2 never draws the other codes


def test_learns_a_fixed_batch():
    model, (ctx, mask) = _model(), _context()
    model.train()
    codes = torch.randint(
        0, 64, (2, model.config.length), generator=torch.Generator().manual_seed(3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        logits = model(codes, ctx, mask)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), codes.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_bad_config_and_codes_fail_clearly():
    with pytest.raises(ValueError, match="divisible"):
        TokenTransformerConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="unknown token transformer preset"):
        TokenTransformerConfig.preset("huge")
    model, (ctx, mask) = _model(), _context()
    with pytest.raises(ValueError, match=r"expected \(B, 64\)"):
        model(torch.zeros(2, 10, dtype=torch.long), ctx, mask)
    gens = [torch.Generator() for _ in range(2)]
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        sample_codes(model, ctx, mask, None, 1.0, gens, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be an integer >= 0"):
        sample_codes(model, ctx, mask, None, 1.0, gens, top_k=2.5)


def test_a_fresh_transformer_tells_grid_positions_apart():
    # the same code everywhere: only the position embeddings separate cell 20 from the last
    # cell (the causal mask alone barely does); with code embeddings 50x their scale, a grid's
    # places were nearly indistinguishable at the start
    torch.manual_seed(0)
    model = TokenTransformer(TokenTransformerConfig.preset("tiny"))
    length = model.config.length
    context = torch.randn(1, 4, model.config.context_dim)
    with torch.no_grad():
        logits = model(torch.zeros(1, length, dtype=torch.long), context)[0]
    a, b = logits[20], logits[length - 1]
    assert (a - b).norm() / a.norm() > 0.2  # 0.03 with positions at 2% of the codes' scale
