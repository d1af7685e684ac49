"""unCLIP's training (t2i/training/diffusion_prior.py, diffusion_unclip.py): the prior learns a
toy set, a decoder's variations stay near their image, and the two recipes run end to end into a
folder `t2i.load` draws from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import write_small_emoji_set, write_tiny_model

import t2i
from t2i.cli import main as t2i_main
from t2i.denoisers import make_denoiser
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import TextEmbedding
from t2i.models.unclip import (
    DiffusionPrior,
    EmbeddingRegressor,
    EmbeddingTokens,
    EmbeddingTokensConfig,
    PriorConfig,
    RegressorConfig,
    decoder_condition,
    embedding_input,
)
from t2i.models.unet import UNet, UNetConfig
from t2i.schedules import DiscreteSchedule
from t2i.unclip_pipeline import sample_prior

E, TEXT = 8, 12


def toy_pairs(n: int = 4):
    """n captions as one-token text states, each with its own image embedding."""
    torch.manual_seed(0)
    context = torch.randn(n, 1, TEXT)
    mask = torch.ones(n, 1, dtype=torch.bool)
    text_emb = embedding_input(torch.randn(n, E))
    image_emb = embedding_input(torch.randn(n, E))
    return context, mask, text_emb, image_emb


def test_the_diffusion_prior_learns_a_toy_set():
    context, mask, text_emb, image_emb = toy_pairs()
    prior = DiffusionPrior(PriorConfig(embed_dim=E, text_dim=TEXT, dim=32, layers=2, heads=2))
    denoiser = make_denoiser(prior, "x0", DiscreteSchedule.preset("cosine"))
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        pick = torch.randint(0, 4, (32,), generator=gen)
        sigma = denoiser.training_sigmas(32, gen)
        noise = torch.randn(32, E, generator=gen)
        cond = {"context": context[pick], "context_mask": mask[pick], "pooled": text_emb[pick]}
        loss = denoiser.loss(image_emb[pick], sigma, noise, **cond).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) < 0.3 * sum(losses[:20])
    cond = {"context": context, "context_mask": mask, "pooled": text_emb}
    samples = sample_prior(denoiser.eval(), cond, [0, 1, 2, 3], 1, 20)[:, 0]
    cos = F.cosine_similarity(samples[:, None], image_emb[None], dim=-1)  # (sample, truth)
    assert cos.argmax(1).tolist() == [0, 1, 2, 3] and cos.diagonal().min() > 0.8


def test_the_regression_baseline_learns_a_toy_set():
    _, _, text_emb, image_emb = toy_pairs()
    net = EmbeddingRegressor(RegressorConfig(embed_dim=E, text_dim=E, hidden=32, depth=1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    start = F.cosine_similarity(net(text_emb), image_emb, dim=-1).mean()
    for _ in range(200):
        loss = (1 - F.cosine_similarity(net(text_emb), image_emb, dim=-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start < 0.5 < 0.99 < F.cosine_similarity(net(text_emb), image_emb, dim=-1).min()


def trained_clip(images: torch.Tensor) -> CLIP:
    """A tiny CLIP taught to tell the images apart (each against a random text vector)."""
    clip = CLIP(CLIPConfig.preset("tiny", embed_dim=E))
    text = TextEmbedding(None, None, torch.randn(len(images), clip.config.text_dim))
    opt = torch.optim.Adam(clip.parameters(), lr=1e-2)
    for _ in range(60):
        loss = clip.loss(images, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clip.eval().requires_grad_(False)


def test_a_decoder_draws_variations_nearer_their_image_than_the_others():
    """Four 16 px images of different colours; a tiny decoder learns them from their CLIP
    embeddings alone; a variation of each is nearer it than the other three."""
    torch.manual_seed(0)
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])
    images = colours[:, :, None, None].expand(4, 3, 16, 16).clone()
    images[:, :, 4:12, 4:12] *= -1  # a square of the opposite colour
    clip = trained_clip(images)
    embeds = embedding_input(clip.encode_image(images))
    unet = UNet(UNetConfig.preset("tiny", pooled_dim=E))
    tokens = EmbeddingTokens(EmbeddingTokensConfig(E, unet.config.context_dim, 2))
    denoiser = make_denoiser(unet, "v", DiscreteSchedule.preset("ddpm"))
    params = [*unet.parameters(), *tokens.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    text = {"context": torch.zeros(8, 1, unet.config.context_dim)}
    text["context_mask"] = torch.ones(8, 1, dtype=torch.bool)
    for _ in range(250):
        pick = torch.randint(0, 4, (8,), generator=gen)
        cond = decoder_condition(tokens, text, embeds[pick])
        sigma = denoiser.training_sigmas(8, gen)
        noise = torch.randn(8, 3, 16, 16, generator=gen)
        loss = denoiser.loss(images[pick], sigma, noise, **cond).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    from t2i.samplers import sample_ddim, sigmas_for

    denoiser.eval()
    sigmas = sigmas_for(denoiser, 20)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * sigmas[0]
    with torch.no_grad():
        cond = decoder_condition(tokens, {k: v[:4] for k, v in text.items()}, embeds)
        drawn = sample_ddim(denoiser, x, sigmas, extra_args=cond).clamp(-1, 1)
        near = F.cosine_similarity(
            embedding_input(clip.encode_image(drawn))[:, None], embeds[None], dim=-1
        )
    pixels = (drawn[:, None] - images[None]).pow(2).mean((2, 3, 4))  # (variation, image)
    others = (near.sum(1) - near.diagonal()) / 3
    assert (near.diagonal() > others).all()  # nearer its image than the others, in CLIP's eyes
    assert pixels.argmin(1).tolist() == [0, 1, 2, 3]  # and in pixels, the nearest of all


@pytest.fixture(scope="module")
def emoji32(tmp_path_factory) -> Path:
    return write_small_emoji_set(tmp_path_factory.mktemp("emoji32"), 32, 25, 0.15)


def test_the_prior_and_decoder_recipes_make_a_folder_that_draws(emoji32, tmp_path, capsys):
    def train(recipe: str, run: Path, *flags: str) -> None:
        args = ["train", recipe, "--data", str(emoji32), "--out", str(run), "--no-progress"]
        assert t2i_main([*args, *flags]) == 0, capsys.readouterr().err

    cache = ["--cache_dir", str(tmp_path / "cache")]
    train("emoji_clip", tmp_path / "clip", "--preset", "tiny", *cache)
    clip = str(tmp_path / "clip" / "model")
    train("prior", tmp_path / "prior", "--preset", "tiny", "--clip", clip)
    card = json.loads((tmp_path / "prior" / "model" / "card.json").read_text())
    assert card["kind"] == "diffusion" and card["heldout"]["n"] > 0
    assert {"best_of_1", "best_of_2", "text_embedding_alone"} <= set(card["heldout"])
    log = [json.loads(line) for line in (tmp_path / "prior" / "log.jsonl").read_text().splitlines()]
    losses = [rec["loss"] for rec in log if "loss" in rec]
    assert losses[-1] < losses[0]
    base = write_tiny_model(tmp_path / "base", minilm=True)
    prior = str(tmp_path / "prior" / "model")
    flags = ["--init", str(base), "--clip", clip, "--prior", prior, "--loop.steps", "3"]
    flags += ["--loop.batch_size", "4", "--loop.sample_every", "3"]
    train("unclip", tmp_path / "dec", *flags)
    assert (tmp_path / "dec" / "samples").is_dir()
    pipe = t2i.load(tmp_path / "dec" / "model")
    assert pipe.family == "unclip" and pipe.index["prior"]["kind"] == "diffusion"
    assert pipe.generate(pipe.params("a cat face emoji", seed=1), 1).shape == (1, 3, 16, 16)
    other = tmp_path / "other_clip"
    train("emoji_clip", other, "--preset", "tiny", "--loop.seed", "5", *cache)
    wrong = ["train", "unclip", "--data", str(emoji32), "--out", str(tmp_path / "x")]
    wrong += ["--init", str(base), "--clip", str(other / "model"), "--prior", prior]
    assert t2i_main(wrong) == 2
    assert "train the prior on the same CLIP" in capsys.readouterr().err
