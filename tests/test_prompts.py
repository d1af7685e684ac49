"""A1111 prompt weights, long prompts in chunks, and their errors, on a tiny text encoder."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from t2i.models.text_encoder import TextTransformer, TextTransformerConfig
from t2i.prompts import MAX_WEIGHT, chunk_words, count_tokens, encode_prompt, parse_prompt

VOCAB = "a red blue green circle square star above below small big".split()


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TextTransformer(TextTransformerConfig.preset("tiny", vocab=VOCAB, max_length=8)).eval()


@pytest.mark.parametrize(
    "prompt, spans",
    [
        ("a red circle", [("a red circle", 1.0)]),
        ("a (red:1.3) circle", [("a ", 1.0), ("red", 1.3), (" circle", 1.0)]),
        ("(red)", [("red", 1.1)]),
        ("((red))", [("red", 1.1 * 1.1)]),
        ("[red]", [("red", 1 / 1.1)]),
        ("((red:2) circle:0.5)", [("red", 1.0), (" circle", 0.5)]),
        ("(a red circle: 1.5 )", [("a red circle", 1.5)]),
        (r"a \(red\) circle", [("a (red) circle", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_prompt(prompt, spans):
    got = parse_prompt(prompt)
    assert [t for t, _ in got] == [t for t, _ in spans]
    assert [w for _, w in got] == pytest.approx([w for _, w in spans])


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("a (red circle", r"unbalanced '\(' at position 2 .* never closed"),
        ("a red) circle", r"unbalanced '\)' at position 5 .* no matching '\('"),
        ("[red", r"unbalanced '\[' at position 0"),
        ("(red]", r"unbalanced '\]' at position 4 .* no matching '\['"),
    ],
)
def test_unbalanced_brackets_name_the_position(prompt, message):
    with pytest.raises(ValueError, match=message):
        parse_prompt(prompt)


def test_weight_one_equals_no_weighting(encoder):
    plain_ctx, plain_mask = encode_prompt(encoder, "a red circle")
    ctx, mask = encode_prompt(encoder, "a (red:1.0) circle")
    assert torch.equal(ctx, plain_ctx) and torch.equal(mask, plain_mask)
    with torch.no_grad():
        direct = encoder.encode(["a red circle"]).context[0]
    torch.testing.assert_close(plain_ctx, direct)


def test_a_weight_scales_exactly_the_states_of_its_tokens(encoder):
    plain, _ = encode_prompt(encoder, "a red circle")
    ctx, _ = encode_prompt(encoder, "a (red:2) circle")
    # tokens: [BOS] a red circle [EOS]; only "red" (index 2) changes, by exactly x2
    torch.testing.assert_close(ctx[2], 2 * plain[2])
    keep = [0, 1, 3, 4]
    assert torch.equal(ctx[keep], plain[keep])


def test_long_prompts_are_chunked_by_the_window_without_truncation(encoder):
    words = "a red circle above a blue square below a green star".split()  # 11 words
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is truncated: no warning
        ctx, mask = encode_prompt(encoder, " ".join(words))
    # window 8 = 6 words + [BOS] + [EOS]: chunks of 6 and 5 words, each with its specials
    assert ctx.shape[0] == (6 + 2) + (5 + 2) and mask.all()
    with torch.no_grad():
        second = encoder.encode([" ".join(words[6:])]).context[0]
    torch.testing.assert_close(ctx[8:], second)


def test_prompts_beyond_the_chunk_limit_warn_that_they_were_truncated(encoder):
    with pytest.warns(UserWarning, match="truncated"):
        ctx, _ = encode_prompt(encoder, " ".join(["red"] * 40))  # 7 chunks of 6 > 4
    assert ctx.shape[0] == 4 * 8


def test_chunking_keeps_each_chunk_within_the_window():
    words = [(f"w{i}", 1.0, k) for i, k in enumerate([2, 3, 1, 4, 2, 2])]
    chunks = chunk_words(words, 5)
    assert [sum(k for *_, k in c) for c in chunks] == [5, 5, 4]
    assert [w for c in chunks for w in c] == words


def test_count_tokens_of_the_word_tokenizer(encoder):
    assert count_tokens(encoder, "a red, circle") == 4  # punctuation is a token
    assert count_tokens(encoder, "") == 0


@pytest.mark.parametrize(
    "prompt, weight",
    [
        ("a (red:1e30) circle", "1e+30"),  # issue 39: a black image with exit 0
        ("(red:1e999)", "inf"),
        ("((red:0):1e999)", "nan"),
        ("(red:10.5)", "10.5"),
        ("(red:-11)", "-11"),
        ("((red:5):3)", "15"),  # nested factors multiply
        ("(" * 30 + "red" + ")" * 30, "17.4494"),  # 1.1 ** 30
    ],
)
def test_weight_outside_the_bound_is_an_error_naming_it(prompt, weight):
    with pytest.raises(ValueError, match=rf"prompt weight {re.escape(weight)} on 'r"):
        parse_prompt(prompt)


def test_weights_within_the_bound_parse():
    assert parse_prompt("(red:10) (blue:-10) [a]")[0] == ("red", 10.0)
    assert parse_prompt("(red:1.5e-1)") == [("red", 0.15)]
    assert parse_prompt(f"(red:{MAX_WEIGHT})") == [("red", MAX_WEIGHT)]
