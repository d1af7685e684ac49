"""Prompt weighting in the A1111 style and prompts longer than the text encoder's window.

    (word)        weight x 1.1          ((word))  x 1.21 (nesting multiplies)
    (word:1.3)    weight x 1.3          [word]    weight / 1.1
    \\( \\) \\[ \\]  literal brackets

`encode_prompt(encoder, prompt)` parses the prompt into (text, weight) spans, splits its words into
chunks that fit the encoder's window (max_length minus the two special tokens), encodes each chunk
on its own and concatenates the token states along L, as A1111 does with CLIP's 77-token chunks.
The states of weighted tokens are multiplied by their weight, which must lie in
[-MAX_WEIGHT, MAX_WEIGHT] (A1111 takes any float; (red:1e30) only gives a black image). Unlike
A1111 we do not rescale the result back to the unweighted mean: the encoders here end in a
LayerNorm, so the mean of the states is near zero and the ratio old_mean / new_mean is
ill-conditioned. A weight of 1 is the
identity either way.
"""

from __future__ import annotations

import re
import warnings

import torch

from t2i.models.text_encoder import WordTokenizer

ATTENTION_UP = 1.1  # (word) and [word] factors, as in A1111
MAX_WEIGHT = 10.0  # |weight| of a span, nesting multiplied in; beyond it the image is ruined
MAX_CHUNKS = 4  # windows per prompt; beyond this the prompt is truncated with a warning
_WEIGHT = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*$")  # 1.3, .5, 1e3


LORA_TAG = re.compile(r"<lora:([^<>]*)>")


def split_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """A1111's `<lora:name:scale>` tags (scale 1 when left out) taken out of a prompt:
    (the prompt without them, [(name, scale)]). A tag that does not parse is an error naming it."""
    found = []
    for match in LORA_TAG.finditer(prompt):
        parts = match.group(1).split(":")
        if len(parts) > 2 or not parts[0]:
            raise ValueError(f"{match.group(0)!r}: write <lora:NAME> or <lora:NAME:SCALE>")
        try:
            scale = float(parts[1]) if len(parts) == 2 else 1.0
        except ValueError:
            raise ValueError(f"{match.group(0)!r}: scale {parts[1]!r} is not a number") from None
        found.append((parts[0], scale))
    if "<lora:" in LORA_TAG.sub("", prompt):
        raise ValueError(f"an unclosed <lora:...> tag in prompt {prompt[:80]!r}")
    clean = " ".join(LORA_TAG.sub(" ", prompt).split()).strip(" ,") if found else prompt
    return clean, found


def parse_prompt(prompt: str) -> list[tuple[str, float]]:
    """A1111 prompt syntax -> [(text, weight)] with adjacent equal weights merged.

    Raises ValueError naming the position of an unbalanced bracket, or a weight (nested factors
    multiplied) outside [-MAX_WEIGHT, MAX_WEIGHT].
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    spans: list[list] = []  # [text, weight]
    stack: list[tuple[str, int, int]] = []  # (bracket, position in prompt, first span index)
    i = 0
    while i < len(prompt):
        ch = prompt[i]
        if ch == "\\" and i + 1 < len(prompt):
            spans.append([prompt[i + 1], 1.0])
            i += 2
            continue
        if ch in "([":
            stack.append((ch, i, len(spans)))
        elif ch in ")]":
            _close(prompt, i, stack, spans)
        else:
            spans.append([ch, 1.0])
        i += 1
    if stack:
        ch, pos, _ = stack[-1]
        raise ValueError(f"unbalanced {ch!r} at position {pos} in prompt {prompt!r}: never closed")
    merged = _merge(spans)
    for text, weight in merged:
        if not abs(weight) <= MAX_WEIGHT:
            raise ValueError(
                f"prompt weight {weight:g} on {text!r} is outside [-{MAX_WEIGHT:g}, "
                f"{MAX_WEIGHT:g}] (nested brackets multiply) in prompt {prompt!r}"
            )
    return merged


def _close(prompt: str, i: int, stack: list, spans: list[list]) -> None:
    """Apply the weight of the bracket that closes at position i to the spans it encloses."""
    want = "(" if prompt[i] == ")" else "["
    if not stack or stack[-1][0] != want:
        raise ValueError(
            f"unbalanced {prompt[i]!r} at position {i} in prompt {prompt!r}: no matching {want!r}"
        )
    _, _, start = stack.pop()
    factor = 1 / ATTENTION_UP if want == "[" else ATTENTION_UP
    if want == "(":
        inner = "".join(s[0] for s in spans[start:])
        m = _WEIGHT.search(inner)
        if m:
            factor = float(m.group(1))
            del spans[len(spans) - len(m.group(0)) :]  # drop the ":1.3" characters
    for s in spans[start:]:
        s[1] *= factor


def _merge(spans: list[list]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for text, weight in spans:
        if out and out[-1][1] == weight:
            out[-1] = (out[-1][0] + text, weight)
        else:
            out.append((text, weight))
    return out or [("", 1.0)]


def unknown_words(encoder, prompt: str) -> list[str]:
    """Words of a prompt (weights syntax removed) that `encoder` cannot read; [] for an encoder
    that does not say."""
    known = getattr(encoder, "unknown_words", None)
    if known is None:
        return []
    return list(dict.fromkeys(w for text, _ in parse_prompt(prompt) for w in known(text)))


def count_tokens(encoder, text: str) -> int:
    """Tokens of `text` without special tokens, for either tokenizer family."""
    if isinstance(encoder.tokenizer, WordTokenizer):
        return encoder.tokenizer.count(text)
    return len(encoder.token_ids(text))


def _weighted_words(spans: list[tuple[str, float]], encoder) -> list[tuple[str, float, int]]:
    """(word, weight, tokens) for every whitespace-separated word of the spans."""
    return [(w, weight, count_tokens(encoder, w)) for text, weight in spans for w in text.split()]


def chunk_words(words: list[tuple[str, float, int]], window: int) -> list[list]:
    """Greedy split into chunks of at most `window` tokens each (a longer word is its own chunk)."""
    chunks: list[list] = [[]]
    used = 0
    for word in words:
        if chunks[-1] and used + word[2] > window:
            chunks.append([])
            used = 0
        chunks[-1].append(word)
        used += word[2]
    return chunks


@torch.no_grad()
def encode_prompt(encoder, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One prompt -> (context (L, D), mask (L,) bool), weighted and chunked (module docstring)."""
    spans = parse_prompt(prompt)
    window = encoder.config.max_length - 2  # [BOS]/[CLS] and [EOS]/[SEP]
    chunks = chunk_words(_weighted_words(spans, encoder), window)
    if len(chunks) > MAX_CHUNKS:
        dropped = sum(len(c) for c in chunks[MAX_CHUNKS:])
        warnings.warn(
            f"prompt longer than {MAX_CHUNKS} windows of {window} tokens: "
            f"the last {dropped} words were truncated",
            stacklevel=2,
        )
        chunks = chunks[:MAX_CHUNKS]
    emb = encoder.encode([" ".join(w for w, _, _ in c) for c in chunks])
    states, masks = [], []
    for k, chunk in enumerate(chunks):
        n = int(emb.mask[k].sum())
        weights = _token_weights(chunk, n)
        states.append(emb.context[k, :n] * weights[:, None].to(emb.context))
        masks.append(emb.mask[k, :n])
    return torch.cat(states), torch.cat(masks)


def _token_weights(chunk: list[tuple[str, float, int]], n: int) -> torch.Tensor:
    """(n,) weights: 1 on the special tokens, each word's weight on its tokens."""
    w = [1.0] + [weight for _, weight, k in chunk for _ in range(k)] + [1.0]
    if len(w) != n:  # a tokenizer may split differently in context: pad/cut with weight 1
        w = (w[:-1] + [1.0] * n)[: n - 1] + [1.0]
    return torch.tensor(w)
