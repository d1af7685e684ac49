"""`--text_encoder trained`: a word-level TextTransformer trained with the UNet, exported with it,
and carried on by fine-tuning (`--init`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
import torch

from t2i.checkpoint import load_component, read_safetensors
from t2i.cli import main
from t2i.families import load
from t2i.training import diffusion, state
from t2i.training.loop import StepRNG


def tiny_trained_text() -> diffusion.DiffusionRecipeConfig:
    cfg = diffusion.preset("tiny")
    cfg.text_encoder = diffusion.TRAINED
    cfg.model.context_dim = 32
    cfg.text_model.dim, cfg.text_model.layers, cfg.text_model.heads = 32, 1, 2
    cfg.vocab_captions = 64
    return cfg


def test_the_trained_encoder_learns_with_the_unet_on_the_datas_words():
    cfg = tiny_trained_text()
    cfg.caption_dropout = 0.0
    recipe = diffusion.build(cfg, argparse.Namespace(data="shapes"))
    vocab = set(recipe.config["text_model"]["vocab"])
    assert {"red", "circle", "left"} <= vocab, sorted(vocab)

    batch = recipe.collate([recipe.dataset[i] for i in range(4)])
    recipe.loss(batch, StepRNG(0, 0, 0, 4, 0, 4)).backward()
    text = recipe.model.text
    for name, p in text.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in recipe.model.unet.parameters())


def test_a_wrong_text_width_is_refused_before_work():
    cfg = tiny_trained_text()
    cfg.text_model.dim = 48
    with pytest.raises(ValueError, match="context_dim 32 != text width 48"):
        diffusion.build(cfg, argparse.Namespace(data="shapes"))


TRAIN = ["train", "diffusion", "--data", "shapes", "--preset", "tiny", "--no-progress"]
TRAIN += ["--loop.sample_every", "0", "--loop.steps", "3", "--text_encoder", "trained"]
TRAIN += ["--model.context_dim", "32", "--text_model.dim", "32", "--text_model.layers", "1"]
TRAIN += ["--text_model.heads", "2", "--vocab_captions", "64"]


def test_export_and_fine_tuning_carry_the_trained_encoder(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "exported"
    assert main([*TRAIN, "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0

    config = json.loads((out / "text_encoder" / "config.json").read_text())
    assert config["type"] == "text_transformer" and "left" in config["vocab"]
    tensors, _ = state.load_checkpoint(state.latest_checkpoint(run / "checkpoints"))
    exported = read_safetensors(out / "text_encoder" / "model.safetensors")
    for name, value in exported.items():
        assert torch.equal(value, tensors[f"ema.text.{name}"].to(torch.float16)), name
    pipe = load(out)
    (a,), (b,) = (pipe(prompt, steps=2, seed=0) for prompt in ("a red circle", "a blue square"))
    assert a.size == (16, 16) and a.tobytes() != b.tobytes()  # the prompt reaches the image

    # fine-tuning starts from both trained parts and keeps the folder's words
    cfg = tiny_trained_text()
    cfg.vocab_captions = 1  # would give a different vocabulary if it were rebuilt
    recipe = diffusion.build(cfg, argparse.Namespace(data="shapes", init=str(run / "model")))
    assert recipe.config["text_model"]["vocab"] == config["vocab"]
    trained = load_component(run / "model" / "text_encoder").state_dict()
    own = recipe.model.text.state_dict()
    assert all(torch.equal(own[k], v) for k, v in trained.items())

    other = [*TRAIN, "--out", str(tmp_path / "bad"), "--init", str(run / "model")]
    assert main([*other, "--text_model.heads", "1"]) == 2
    assert "does not fit this run's text_model" in capsys.readouterr().err


def test_fine_tuning_grows_the_encoder_and_starts_from_what_it_computed(tmp_path):
    from t2i.models.text_encoder import grow_text_transformer

    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    cfg = tiny_trained_text()
    cfg.text_model.layers = 3
    args = argparse.Namespace(data="shapes:varied", init=str(run / "model"))
    recipe = diffusion.build(cfg, args)
    folder = load_component(run / "model" / "text_encoder").eval()
    grown = recipe.model.text.eval()
    vocab = recipe.config["text_model"]["vocab"]
    assert vocab[: len(folder.config.vocab)] == folder.config.vocab
    assert {"crimson", "violet", "tiny"} <= set(vocab) - set(folder.config.vocab)
    assert len(grown.blocks) == 3
    prompts = ["a large red circle in the top left", "a blue square above a green star"]
    with torch.no_grad():
        assert torch.allclose(grown.encode(prompts).context, folder.encode(prompts).context)
        # a new word has its own row: it no longer reads as the unknown token
        assert not torch.allclose(
            grown.encode(["a crimson circle"]).context, grown.encode(["a zzz circle"]).context
        )
    with pytest.raises(ValueError, match="must start with the encoder's own words"):
        grow_text_transformer(folder, replace(folder.config, vocab=["zzz"]))
    with pytest.raises(ValueError, match="layers=0: the encoder has 1; it only grows"):
        grow_text_transformer(folder, replace(folder.config, layers=0))


def test_train_parts_unet_leaves_the_trained_encoder_untouched(tmp_path):
    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run), "--train_parts", "unet"]) == 0
    tensors, _ = state.load_checkpoint(state.latest_checkpoint(run / "checkpoints"))
    cfg = tiny_trained_text()
    cfg.train_parts = "unet"
    fresh = diffusion.build(cfg, argparse.Namespace(data="shapes")).model  # the same seed
    moved = {
        n for n, p in fresh.named_parameters() if not torch.equal(tensors[f"model.{n}"], p.data)
    }
    assert moved and all(n.startswith("unet.") for n in moved), sorted(moved)


def test_a_fresh_encoder_reads_word_order_not_a_bag_of_words():
    # "red circle ... blue square" and "blue circle ... red square" have the same words: only
    # their positions tell them apart. With positions at 2% of the words' scale a fresh encoder
    # changed the noun's state by 0.1% (0.05-0.2% over seeds; ~1-3.5% now), and training never
    # learnt to bind a colour to its shape.
    from t2i.models.text_encoder import TextTransformer, TextTransformerConfig

    torch.manual_seed(0)
    vocab = "a red blue circle square and".split()
    encoder = TextTransformer(TextTransformerConfig(vocab=vocab, dim=32, layers=2, heads=2))
    with torch.no_grad():
        out = encoder.encode(["a red circle and a blue square", "a blue circle and a red square"])
    circle = 3  # [BOS] a red circle
    a, b = out.context[0, circle], out.context[1, circle]
    assert (a - b).norm() / a.norm() > 0.005


def test_train_parts_leaves_the_frozen_unet_untouched(tmp_path):
    run = tmp_path / "run"
    argv = [*TRAIN, "--out", str(run), "--train_parts", "text_attention"]
    assert main(argv) == 0
    tensors, _ = state.load_checkpoint(state.latest_checkpoint(run / "checkpoints"))
    cfg = tiny_trained_text()
    cfg.train_parts = "text_attention"
    fresh = diffusion.build(cfg, argparse.Namespace(data="shapes")).model  # the same seed
    moved = {
        n for n, p in fresh.named_parameters() if not torch.equal(tensors[f"model.{n}"], p.data)
    }
    assert moved and all(n.startswith("text.") or ".attn2." in n for n in moved), sorted(moved)
    assert any(".attn2." in n for n in moved) and any(n.startswith("text.") for n in moved)

    cfg = tiny_trained_text()
    cfg.train_parts = "vae"
    with pytest.raises(ValueError, match="unknown train_parts 'vae'; choose from"):
        diffusion.build(cfg, argparse.Namespace(data="shapes"))
    cfg = diffusion.preset("tiny")
    cfg.train_parts = "text"
    with pytest.raises(ValueError, match="needs --text_encoder trained"):
        diffusion.build(cfg, argparse.Namespace(data="shapes"))
