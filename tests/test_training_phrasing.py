"""`t2i train phrasing` (t2i/training/diffusion_phrasing.py): the student starts as the teacher on
the canonical grammar, the loss falls with the UNet frozen, runs resume bit for bit, and the
export is an ordinary model folder that reads the new words."""

from __future__ import annotations

import argparse

import pytest
import torch
from resume_check import losses_on_one_batch
from test_training_cli import straight_and_killed
from tiny_models import write_tiny_model

import t2i
from t2i.data.shapes import ShapesConfig, parse_caption, shapes_item
from t2i.data.shapes_phrasing import spec_caption
from t2i.models.text_encoder import build_vocab
from t2i.training import diffusion_phrasing as dp
from t2i.training.loop import StepRNG

CONFIG = ShapesConfig()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # the words of the canonical grammar, as the shipped shapes model reads them
    words = build_vocab(
        [c for i in range(500) for c in [shapes_item(CONFIG, "train", i)["caption"]]]
    )
    return write_tiny_model(tmp_path_factory.mktemp("base") / "tiny", steps=2, vocab=words)


def built(base, data: str = "shapes:varied", layers: int = 3):
    args = argparse.Namespace(init=str(base), data=data, autoencoder=None, no_progress=True)
    cfg = dp.adopt(dp.preset("default"), args)
    cfg.data_length, cfg.vocab_captions, cfg.text_model.layers = 64, 64, layers
    cfg.caption_dropout = 0.0
    return dp.build(cfg, args)


def test_the_preset_grows_the_encoder_it_adopts_and_the_default_keeps_it(base):
    args = argparse.Namespace(init=str(base), data="shapes:varied", autoencoder=None)
    own = t2i.load(base).text_encoder.config.layers
    assert own < 4
    assert dp.adopt(dp.preset("shapes_phrasing"), args).text_model.layers == 4  # as it shipped
    assert dp.adopt(dp.preset("default"), args).text_model.layers == own


def test_the_student_starts_as_the_teacher_and_learns_with_the_unet_frozen(base):
    recipe = built(base)
    items = [recipe.dataset[i] for i in range(16)]
    same = [it for it in items if it["caption"] == it["canonical"]]
    assert same and len(same) < len(items)  # the grammar share, and paraphrases
    rng = StepRNG(0, 0, 0, len(same), 0, len(same))
    with torch.no_grad():  # the grown encoder computes what the teacher does: no distillation
        batch = recipe.collate(same)
        distill, plain, anchor = recipe.loss.terms(batch, rng)
        assert torch.all(distill == 0) and torch.all(plain > 0) and torch.all(anchor == 0)
        batch["canonical"] = ["a large blue square"] * len(same)
        assert torch.all(recipe.loss.terms(batch, rng)[0] > 0)
    unet = {k: v.clone() for k, v in recipe.model.unet.state_dict().items()}
    assert all(not p.requires_grad for p in recipe.model.unet.parameters())
    batch, rng = recipe.collate(items[:8]), StepRNG(0, 0, 0, 8, 0, 8)
    trainable = [p for p in recipe.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=3e-3)
    distill = []
    for _ in range(30):  # the distillation term alone: the student comes to read as the teacher
        loss = recipe.loss.terms(batch, rng)[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        distill.append(loss.item())
    assert distill[-1] < 0.3 * distill[0], distill[::6]
    losses = losses_on_one_batch(recipe, batch)  # the whole loss falls too (a tiny frozen UNet)
    assert losses[-1] < 0.98 * losses[0], losses[::8]
    assert all(torch.equal(unet[k], v) for k, v in recipe.model.unet.state_dict().items())


def test_the_anchor_measures_how_far_the_encoder_reads_the_grammar_from_the_teacher(base):
    recipe = built(base)
    items = [recipe.dataset[i] for i in range(8)]
    batch, rng = recipe.collate(items), StepRNG(0, 0, 0, 8, 0, 8)
    student = recipe.model.text
    with torch.no_grad():
        assert torch.all(recipe.loss.terms(batch, rng)[2] == 0)
        student.embed.weight[student.tokenizer.ids("red")] += 0.5  # a word of the grammar moves
        anchor = recipe.loss.terms(batch, rng)[2]
    reads_red = torch.tensor(["red" in c.split() for c in batch["canonical"]])
    assert reads_red.any() and not reads_red.all()
    assert torch.all(anchor[reads_red] > 0)
    # a caption without the word reads as before: only its own real tokens count
    assert torch.all(anchor[~reads_red] == 0)


def test_canonical_wording_states_the_same_facts():
    from t2i.data.shapes_phrasing import paraphrase_prompts

    for p in paraphrase_prompts(100) + paraphrase_prompts(50, phrasing="heldout"):
        back = parse_caption(spec_caption(p.spec))
        assert [vars(o) for o in back.objects] == [vars(o) for o in p.spec.objects], p.text
        assert (back.relations, back.background) == (p.spec.relations, p.spec.background)


def test_the_recipe_needs_a_trained_encoder_and_paired_data(base, tmp_path):
    with pytest.raises(ValueError, match="needs --init MODEL"):
        dp.build(dp.preset("default"), argparse.Namespace(init=None, data="shapes:varied"))
    with pytest.raises(ValueError, match="--data shapes:varied, not 'shapes'"):
        built(base, data="shapes")
    minilm = write_tiny_model(tmp_path / "minilm", minilm=True)
    with pytest.raises(ValueError, match="frozen 'minilm'"):
        built(minilm)


@pytest.mark.slow
def test_phrasing_resumes_bit_for_bit_and_exports_a_model_that_reads_new_words(base, tmp_path):
    args = ["phrasing", "--init", str(base), "--data", "shapes:varied", "--no-progress"]
    args += ["--loop.steps", "6", "--loop.batch_size", "4", "--loop.ckpt_every", "3"]
    args += ["--loop.sample_every", "0", "--data_length", "64", "--vocab_captions", "64"]
    a, b, killed = straight_and_killed(args, tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pipe = t2i.load(killed / "model")
    assert pipe.unknown_words(pipe.params("a crimson disc")) == []
    assert t2i.load(base).unknown_words(t2i.load(base).params("a crimson disc")) == [
        "crimson",
        "disc",
    ]
