"""Textual inversion (Gal et al. 2022): new words whose token vectors are learnt with everything
else frozen, for both text encoders: the word-level `TextTransformer` trained with a model and a
frozen pretrained Hugging Face encoder (`PretrainedTextEncoder`, MiniLM by default).

A learnt word reads its own rows past the vocabulary: `ExtendedEmbedding` keeps the encoder's
input embedding table frozen and untouched and appends one parameter per word (one or several
vectors: the word then stands for that many tokens), so the rest of every prompt encodes exactly
as before. In the pretrained encoder the learnt word replaces its WordPiece spelling. A file is
one safetensors tensor `vectors` (k, dim) with `t2i_adapter` metadata (kind "embedding", the
word, the base model and the hash of its text encoder's weights).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from t2i.adapters.lora import META_KEY, network_hash, read_adapter_file
from t2i.models.text_encoder import PretrainedTextEncoder, TextTransformer, words

KIND = "embedding"
FORMAT = 1
MAX_VECTORS = 16  # tokens one learnt word may stand for
MAX_FILE_BYTES = 16 * 2**20


@dataclass
class EmbeddingMeta:
    token: str  # the word that stands for the learnt vectors in a prompt
    base: str
    base_hash: str  # network_hash of the base's text encoder
    vectors: int
    kind: str = KIND
    format: int = FORMAT


class ExtendedEmbedding(nn.Module):
    """A frozen nn.Embedding with learnt rows appended, one parameter per learnt word."""

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.learnt = nn.ParameterDict()

    @property
    def weight(self) -> torch.Tensor:  # callers read .weight.device / .dtype
        return self.base.weight

    def rows(self) -> int:
        return self.base.num_embeddings + sum(p.shape[0] for p in self.learnt.values())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = self.base.num_embeddings
        out = self.base(ids.clamp(max=n - 1))
        if not len(self.learnt):
            return out
        extra = torch.cat(list(self.learnt.values())).to(out.dtype)
        new = ids >= n
        return torch.where(new[..., None], extra[(ids - n).clamp(min=0, max=len(extra) - 1)], out)


def _learnt(encoder: nn.Module) -> dict[str, list[int]]:
    """The encoder's map of learnt words to their token ids."""
    if isinstance(encoder, TextTransformer):
        return encoder.tokenizer.added
    if isinstance(encoder, PretrainedTextEncoder):
        return encoder.learnt
    raise ValueError(f"textual inversion needs a t2i text encoder, not a {type(encoder).__name__}")


def _table(encoder: nn.Module) -> ExtendedEmbedding:
    """The encoder's input embedding table, extended (once) to take learnt rows."""
    if isinstance(encoder, TextTransformer):
        if not isinstance(encoder.embed, ExtendedEmbedding):
            encoder.embed = ExtendedEmbedding(encoder.embed)
        return encoder.embed
    _learnt(encoder)
    model = encoder.model  # a Hugging Face model: its input table by its own accessors
    if not isinstance(model.get_input_embeddings(), ExtendedEmbedding):
        model.set_input_embeddings(ExtendedEmbedding(model.get_input_embeddings()))
    return model.get_input_embeddings()


def check_token(encoder: nn.Module, token: str) -> str:
    if words(token) != [token]:
        raise ValueError(f"token {token!r} must be one lower-case word of letters and digits")
    learnt = _learnt(encoder)
    if isinstance(encoder, TextTransformer) and token in encoder.tokenizer.index:
        raise ValueError(f"token {token!r} is a word the model knows already; pick a new one")
    if token in learnt:
        raise ValueError(f"token {token!r} is loaded already")
    return token


def add_word(
    encoder: nn.Module, token: str, vectors: torch.Tensor, trainable: bool = False
) -> nn.Parameter:
    """Give `token` the rows `vectors` (k, dim); returns the parameter that holds them (frozen
    unless `trainable`: a loaded word builds no autograd graph)."""
    check_token(encoder, token)
    if vectors.ndim != 2 or vectors.shape[1] != encoder.dim or not 1 <= len(vectors) <= MAX_VECTORS:
        raise ValueError(
            f"embedding {token!r}: vectors {tuple(vectors.shape)}; need (1..{MAX_VECTORS}, "
            f"{encoder.dim})"
        )
    learnt, table = _learnt(encoder), _table(encoder)
    first = table.rows()
    param = nn.Parameter(vectors.detach().clone().to(table.weight), requires_grad=trainable)
    table.learnt[token] = param
    learnt[token] = list(range(first, first + len(vectors)))
    return param


def remove_word(encoder: nn.Module, token: str) -> None:
    """Forget a learnt word (the rows of later words move down with it)."""
    learnt = _learnt(encoder)
    if token not in learnt:
        raise ValueError(f"no learnt word {token!r}; loaded: {sorted(learnt)}")
    table = _table(encoder)
    del table.learnt[token]
    del learnt[token]
    start = table.base.num_embeddings
    for word, param in table.learnt.items():
        learnt[word] = list(range(start, start + len(param)))
        start += len(param)


def init_vectors(encoder: nn.Module, like: str, count: int) -> torch.Tensor:
    """`count` starting vectors: the embedding of the known word `like` (the mean of its
    WordPiece rows in a pretrained encoder), repeated."""
    table = _table(encoder)
    if isinstance(encoder, TextTransformer):
        if like not in encoder.tokenizer.index:
            raise ValueError(f"init word {like!r} is not a word the model knows")
        ids = [encoder.tokenizer.index[like]]
    else:
        ids = encoder.tokenizer(like, add_special_tokens=False)["input_ids"]
        if words(like) != [like] or encoder.tokenizer.unk_token_id in ids:
            raise ValueError(f"init word {like!r} must be one word the text encoder can spell")
    row = table.base(torch.tensor(ids, device=table.weight.device)).mean(0, keepdim=True)
    return row.detach().repeat(count, 1)


def save(path: str | Path, vectors: torch.Tensor, meta: EmbeddingMeta) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"vectors": vectors.detach().float().contiguous()}
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(asdict(meta))})
    return path


def read(path: str | Path) -> tuple[EmbeddingMeta, torch.Tensor]:
    """An embedding file's metadata and vectors, bounded and checked before use."""
    header, tensors = read_adapter_file(path, "an embedding", MAX_FILE_BYTES)
    if list(tensors) != ["vectors"]:
        raise ValueError(
            f"{path}: an embedding file holds one tensor 'vectors', not {list(tensors)}"
        )
    vectors = tensors["vectors"]
    try:
        data = json.loads(header[META_KEY])
        meta = EmbeddingMeta(**data)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: no valid {META_KEY!r} embedding metadata ({err})") from None
    if meta.kind != KIND or meta.format != FORMAT:
        raise ValueError(f"{path}: kind {meta.kind!r} format {meta.format}; want {KIND} {FORMAT}")
    if not bool(torch.isfinite(vectors).all()) or vectors.ndim != 2:
        raise ValueError(f"{path}: vectors must be a finite (k, dim) matrix")
    return meta, vectors


def load(encoder: nn.Module, path: str | Path, model_name: str = "") -> str:
    """Add the word of an embedding file to `encoder`, which must be the exact base it was
    learnt on; returns the word."""
    meta, vectors = read(path)
    own = text_hash(encoder)
    if meta.base_hash != own:
        raise ValueError(
            f"embedding {path} was learnt on {meta.base!r} (text encoder {meta.base_hash[:12]}), "
            f"not on this model {model_name!r} ({own[:12]})"
        )
    add_word(encoder, meta.token, vectors)
    return meta.token


def text_hash(encoder: nn.Module) -> str:
    """network_hash of the encoder's weights (learnt words left out; a pretrained encoder's
    state holds only its learnt words, so its Hugging Face model is hashed)."""
    return network_hash(encoder.model if isinstance(encoder, PretrainedTextEncoder) else encoder)


def learnt_vectors(encoder: nn.Module, token: str) -> nn.Parameter:
    """The vectors of a learnt word."""
    if token not in _learnt(encoder):
        raise ValueError(f"no learnt word {token!r}; loaded: {sorted(_learnt(encoder))}")
    return _table(encoder).learnt[token]
