import pytest
import torch

from t2i.models.layers import TransformerBlock


@pytest.mark.parametrize("context_dim", [None, 8])
def test_a_block_started_as_the_identity_passes_its_input_and_still_learns(context_dim):
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, context_dim).start_as_identity()
    x = torch.randn(2, 5, 16)
    context = torch.randn(2, 3, 8) if context_dim else None
    out = block(x, context)
    assert torch.equal(out, x)
    out.square().sum().backward()
    zeroed = [block.attn1.to_out, block.ff.proj_out] + ([block.attn2.to_out] if context_dim else [])
    for layer in zeroed:
        assert layer.weight.grad.abs().sum() > 0, "a zeroed output must still get a gradient"


def test_a_fresh_block_is_not_the_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    assert not torch.equal(TransformerBlock(16, 2)(x), x)
