"""Textual inversion words (t2i/adapters/embeddings.py): a learnt word changes only the prompts
that use it, files round-trip and refuse another base, and `t2i train lora` /
`t2i train textual_inversion` resume bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_training_cli import straight_and_killed
from tiny_models import write_tiny_model

import t2i
from t2i.adapters import embeddings, lora


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny", steps=2)


def test_a_learnt_word_changes_only_the_prompts_that_use_it(model_dir):
    pipe = t2i.load(model_dir)
    enc = pipe.text_encoder
    before = enc.encode(["a red circle above a blue square"]).context
    embeddings.add_word(enc, "teal", torch.randn(2, enc.dim))
    assert torch.equal(enc.encode(["a red circle above a blue square"]).context, before)
    ids, _ = enc.tokenizer(["a teal circle"], 32)
    first = enc.embed.base.num_embeddings
    assert ids[0, 2:4].tolist() == [first, first + 1]  # two vectors: two tokens
    assert pipe.unknown_words(pipe.params("a teal circle")) == []
    teal = enc.encode(["a teal circle"]).context
    embeddings.remove_word(enc, "teal")
    assert not torch.equal(enc.encode(["a teal circle"]).context, teal)  # [UNK] again


def test_a_file_round_trips_and_refuses_another_base_and_bad_words(model_dir, tmp_path):
    pipe = t2i.load(model_dir)
    enc = pipe.text_encoder
    vectors = torch.randn(1, enc.dim)
    meta = embeddings.EmbeddingMeta("teal", "tiny", embeddings.text_hash(enc), 1)
    path = embeddings.save(tmp_path / "teal.safetensors", vectors, meta)
    assert pipe.load_embedding(path) == "teal"
    assert torch.equal(enc.embed.learnt["teal"].data, vectors)
    with pytest.raises(ValueError, match="is loaded already"):
        pipe.load_embedding(path)
    other = t2i.load(model_dir)
    with torch.no_grad():
        other.text_encoder.embed.weight.mul_(1.01)
    with pytest.raises(ValueError, match="was learnt on 'tiny'"):
        other.load_embedding(path)
    for token, message in [("red", "a word the model knows"), ("Two Words", "one lower-case")]:
        with pytest.raises(ValueError, match=message):
            embeddings.add_word(t2i.load(model_dir).text_encoder, token, vectors)
    with pytest.raises(ValueError, match="never unpickles"):
        pipe.load_embedding(tmp_path / "teal.pt")


@pytest.fixture(scope="module")
def minilm_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny_minilm", steps=2, minilm=True)


def test_a_learnt_word_in_the_pretrained_encoder_replaces_its_wordpieces(minilm_model_dir):
    pipe = t2i.load(minilm_model_dir)
    enc = pipe.text_encoder
    prompts = ["fox emoji, noto style", "a cat"]
    before, ids_before = enc.encode(prompts).context, enc.tokenize(["dog, symbola style"])[0]
    vectors = embeddings.init_vectors(enc, "drawing", 2)
    embeddings.add_word(enc, "symbola", vectors)
    assert torch.equal(enc.encode(prompts).context, before)  # bit for bit
    ids, mask = enc.tokenize(["dog, Symbola style"])
    first = enc.model.get_input_embeddings().base.num_embeddings
    assert ids[0].tolist() == [101, 3899, 1010, first, first + 1, 2806, 102] and mask.all()
    assert ids_before[0, 3:5].tolist() == [6454, 2050]  # before: its WordPieces "symbol ##a"
    assert not enc.encode(["dog, symbola style"]).context.requires_grad  # loaded: frozen
    meta = embeddings.EmbeddingMeta("symbola", "tiny", embeddings.text_hash(enc), 2)
    with pytest.raises(ValueError, match="init word 'qqqq zz'"):
        embeddings.init_vectors(enc, "qqqq zz", 1)
    embeddings.remove_word(enc, "symbola")
    assert torch.equal(enc.tokenize(["dog, symbola style"])[0], ids_before)
    assert "model.embeddings.word_embeddings.weight" not in enc.state_dict()  # a pointer
    assert meta.base_hash == embeddings.text_hash(t2i.load(minilm_model_dir).text_encoder)


@pytest.mark.slow
def test_inversion_through_the_pretrained_encoder_resumes_bit_for_bit(minilm_model_dir, tmp_path):
    args = ["textual_inversion", "--init", str(minilm_model_dir), "--data", "shapes"]
    args += ["--preset", "tiny", "--no-progress", "--token", "violet", "--init_word", "purple"]
    args += ["--loop.steps", "6", "--loop.ckpt_every", "3"]
    a, b, killed = straight_and_killed(args, tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len([k for k in a if k.startswith("model.text.")]) == 1  # the word, not MiniLM
    pipe = t2i.load(minilm_model_dir)
    start = pipe.text_encoder.encode(["a violet circle"]).context
    assert pipe.load_embedding(killed / "model" / "violet.safetensors") == "violet"
    assert not torch.equal(pipe.text_encoder.encode(["a violet circle"]).context, start)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe,extra",
    [("lora", ["--name", "style"]), ("textual_inversion", ["--token", "violet"])],
)
def test_adapter_training_resumes_bit_for_bit(model_dir, tmp_path, recipe, extra):
    args = [recipe, "--init", str(model_dir), "--data", "shapes", "--preset", "tiny"]
    args += ["--no-progress", *extra, "--loop.steps", "6", "--loop.ckpt_every", "3"]
    a, b, killed = straight_and_killed(args, tmp_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    name = "style" if recipe == "lora" else "violet"
    assert (killed / "model" / f"{name}.safetensors").is_file()


def test_adapter_runs_resume_from_their_record_alone(model_dir, tmp_path, capsys):
    from t2i.cli import main

    out = tmp_path / "style"
    argv = ["train", "lora", "--init", str(model_dir), "--data", "shapes", "--preset", "tiny"]
    assert main([*argv, "--out", str(out), "--no-progress", "--loop.steps", "2"]) == 0
    assert main(["train", "lora", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert main(["train", "lora", "--data", "shapes", "--out", str(tmp_path / "x")]) == 2
    assert "needs --init MODEL" in capsys.readouterr().err


def test_a_folder_of_words_loads_those_learnt_on_this_model(model_dir, tmp_path):
    pipe = t2i.load(model_dir)
    enc = pipe.text_encoder
    own = embeddings.EmbeddingMeta("teal", "tiny", embeddings.text_hash(enc), 1)
    other = embeddings.EmbeddingMeta("pink", "other", "0" * 64, 1)
    embeddings.save(tmp_path / "teal.safetensors", torch.randn(1, enc.dim), own)
    embeddings.save(tmp_path / "pink.safetensors", torch.randn(1, enc.dim), other)
    words, skipped = pipe.load_embeddings(tmp_path)
    assert words == ["teal"] and len(skipped) == 1 and "was learnt on 'other'" in skipped[0]
    assert pipe.unknown_words(pipe.params("a teal circle")) == []


def test_prior_preservation_trains_the_base_data_beside_the_folder(model_dir):
    import argparse

    from t2i.training import diffusion_lora

    cfg = diffusion_lora.preset("tiny")
    cfg.data_length, cfg.prior_data, cfg.prior_images = 8, "shapes", 4
    args = argparse.Namespace(data="shapes", init=str(model_dir), out="style")
    cfg = diffusion_lora.adopt(cfg, args)
    recipe = diffusion_lora.build(cfg, args)
    assert len(recipe.dataset) == 8 + 4
    assert recipe.dataset[8]["caption"] == recipe.dataset[0]["caption"]  # shapes item 0 again
    cfg.prior_images = 0
    with pytest.raises(ValueError, match="needs prior_images >= 1"):
        diffusion_lora.build(cfg, args)


def test_png_parameters_name_the_learnt_words_and_from_reproduces(model_dir, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from t2i.cli import main
    from t2i.params import PNG_KEY, GenerationParams

    enc = t2i.load(model_dir).text_encoder
    meta = embeddings.EmbeddingMeta("teal", "tiny", embeddings.text_hash(enc), 1)
    path = embeddings.save(tmp_path / "teal.safetensors", torch.randn(1, enc.dim), meta)
    out, again, plain = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    base = ["generate", "--model", str(model_dir), "--quiet"]
    assert main([*base, "a teal circle", "--embedding", str(path), "--out", str(out)]) == 0
    params = GenerationParams.from_json(Image.open(out).text[PNG_KEY])
    assert params.embeddings == (("teal", lora.file_hash(path)),)
    assert main(["generate", "--from", str(out), "--quiet", "--out", str(again)]) == 2
    assert "learnt word 'teal'" in capsys.readouterr().err  # not silently [UNK]
    argv = ["generate", "--from", str(out), "--quiet", "--out", str(again), "--embedding"]
    assert main([*argv, str(path)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    other = embeddings.save(tmp_path / "o" / "teal.safetensors", torch.randn(1, enc.dim), meta)
    assert main([*argv, str(other)]) == 2
    assert "made with learnt word 'teal'" in capsys.readouterr().err
    assert main([*base, "a red circle", "--embedding", str(path), "--out", str(plain)]) == 0
    assert "embeddings" not in Image.open(plain).text[PNG_KEY]  # not used: not recorded
