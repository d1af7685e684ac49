"""A recipe's kill-and-resume check, shared by its tests: a run stopped after its second-last
checkpoint and resumed ends in the straight run's last checkpoint, tensor for tensor."""

from __future__ import annotations

import shutil

import torch

from t2i.training import state


def assert_resume_repeats(run, tmp_path, steps: int, every: int) -> None:
    """run(tmp_path, name, resume=False, steps=..., ckpt_every=...) trains one run folder."""
    run(tmp_path, "a", steps=steps, ckpt_every=every)
    last = f"ckpt-{steps:06d}"
    shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("model"))
    shutil.rmtree(tmp_path / "b" / "checkpoints" / last)  # as if killed after the one before
    run(tmp_path, "b", resume=True, steps=steps, ckpt_every=every)
    straight, _ = state.load_checkpoint(tmp_path / "a" / "checkpoints" / last)
    resumed, _ = state.load_checkpoint(tmp_path / "b" / "checkpoints" / last)
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def losses_on_one_batch(recipe, batch, steps: int = 40, lr: float = 3e-3) -> list[float]:
    """The recipe's loss over `steps` Adam steps on one batch with the same draws every time:
    the objective itself must fall, whatever the sampling noise."""
    from t2i.training.loop import StepRNG

    params = [p for p in recipe.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = recipe.loss(batch, StepRNG(0, 0, 0, len(batch["x0"]), 0, len(batch["x0"])))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
