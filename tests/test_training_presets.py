"""Every shipped model is a named preset: its stages' configs are the ones its runs recorded
(docs/training/*/config.json), build the networks of its bundled folder, and give the schedule,
parameterisation, sampler defaults and stage structure its card (model_index.json) states."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from t2i.checkpoint import CONFIG_NAME, INDEX_NAME, bundled_models, config_from_dict
from t2i.cli import main as t2i_main
from t2i.models.autoencoder import AutoencoderConfig
from t2i.models.autoencoder_patch import PatchConfig
from t2i.models.unet import UNetConfig
from t2i.training import autoencoder, diffusion, diffusion_model, diffusion_phrasing
from t2i.training.presets import Stage, run_stages

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "t2i" / "bundled"
RUNS = ROOT / "docs" / "training"
RECIPES = {"diffusion": diffusion, "autoencoder": autoencoder, "phrasing": diffusion_phrasing}
# the run folder of docs/training that recorded each stage's config (its config.json, or the
# file named), the patch autoencoder having nothing to train and so no run
RUN_OF = {
    ("shapes", "high_noise"): "shapes_patch/p16h",
    ("shapes", "uniform"): "shapes_patch/p16hu",
    ("shapes", "phrasing"): "shapes_prompts/anchor_config.json",
    ("shapes", "crowded"): "shapes_prompts/crowded_config.json",
    ("shapes", "phrasing2"): "shapes_prompts/phrasing2_config.json",
    ("fashion", "fashion"): "fashion32",
    ("fashion", "varied"): "fashion_prompts",
    ("fashion", "varied2"): "fashion_prompts/config_varied2.json",
    ("emoji", "autoencoder"): "emoji_ae",
    ("emoji", "diffusion"): "emoji_ldm",
    ("emoji", "balanced"): "emoji_common/balanced_config.json",
    ("emoji", "balanced2"): "emoji_common/balanced2_config.json",
    ("emoji", "balanced3"): "emoji_common/balanced3_config.json",
    ("emoji", "balanced4"): "emoji_common/balanced4_ln_config.json",
}
# the step of a run's checkpoint that shipped (`t2i export --step`) where it is not the last: the
# preset stops there (loop.steps) on the run's own cosine (optim.decay_steps)
STOPPED_EARLY = {("emoji", "balanced4"): 3000}
# where a run was, not what it learnt: the machine's paths, the preset name it was started
# from (flags over `default`, for the fine-tunes), the data-built vocabulary, the prompts of its
# progress grids (drawn from their own seeds) and how many checkpoints it kept on disk
NOT_CONFIG = {"recipe", "preset", "data", "autoencoder", "init", "cache_dir", "sample_prompts"}
NOT_LOOP_CONFIG = {"keep_ckpts"}
# sampling defaults the card chose by measurement after the run (which sampled its grids with
# the recorded ones): the preset holds the card's, and the card is checked against it below
CHOSEN_AFTER = {("fashion", "varied2"): {"guidance_scale": 3.0, "guidance_interval": None}}
LATENT_STATS = ("latent_scale", "latent_shift")  # set from the data at export
STRUCTURE = {
    "shapes": [("patch", "autoencoder", "", ""), ("high_noise", "diffusion", "", "patch")]
    + [("uniform", "diffusion", "high_noise", "patch"), ("phrasing", "phrasing", "uniform", "")]
    + [("crowded", "diffusion", "phrasing", ""), ("phrasing2", "phrasing", "crowded", "")],
    "fashion": [
        ("fashion", "diffusion", "", ""),
        ("varied", "diffusion", "fashion", ""),
        ("varied2", "diffusion", "varied", ""),
    ],
    "emoji": [
        ("autoencoder", "autoencoder", "", ""),
        ("diffusion", "diffusion", "", "autoencoder"),
        ("balanced", "diffusion", "diffusion", "autoencoder"),
        ("balanced2", "diffusion", "balanced", "autoencoder"),
        ("balanced3", "diffusion", "balanced2", "autoencoder"),
        ("balanced4", "diffusion", "balanced3", "autoencoder"),
    ],
}


def config(stage: Stage):
    return RECIPES[stage.recipe].preset(stage.preset)


def jsonable(obj) -> dict:
    return json.loads(json.dumps(asdict(obj) if not isinstance(obj, dict) else obj))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def differences(want: dict, got: dict, where: str) -> list[str]:
    """Every key of `want` that `got` gives another value (nested dicts key by key)."""
    out = []
    for key, value in want.items():
        if isinstance(value, dict) and isinstance(got.get(key), dict):
            out += differences(value, got[key], f"{where}.{key}")
        elif got.get(key, "<missing>") != value:
            out.append(f"{where}.{key}: recorded {value!r}, preset {got.get(key, '<missing>')!r}")
    return out


def component(folder: Path, name: str, cls) -> dict:
    """A bundled component's config as its class fills it (older folders lack newer keys, whose
    defaults are the old behaviour), without the type and the data-set latent statistics."""
    data = read(folder / name / CONFIG_NAME)
    data.pop("type")
    data.pop("vocab", None)
    built = jsonable(config_from_dict(cls, data, str(folder / name)))
    return {k: v for k, v in built.items() if k not in LATENT_STATS}


def autoencoder_stage(stages: tuple[Stage, ...]) -> Stage | None:
    """The stage whose autoencoder the last stage encodes with: its own, or (a stage that names
    none but fine-tunes) the one its --init model adopted."""
    by_name = {s.name: s for s in stages}
    stage = stages[-1]
    while not stage.autoencoder and stage.init:
        stage = by_name[stage.init]
    return by_name.get(stage.autoencoder)


def mismatches(name: str) -> list[str]:
    """What in the shipped model `name` its preset does not reproduce (empty: all of it)."""
    stages = diffusion.SHIPPED[name]
    card = read(BUNDLED / name / INDEX_NAME)
    folder = BUNDLED / name
    wrong = []
    for stage in stages:  # each stage: the config its run recorded
        run = RUN_OF.get((name, stage.name))
        if run is None:
            continue
        path = RUNS / run if run.endswith(".json") else RUNS / run / "config.json"
        recorded = read(path)
        if recorded.get("data", stage.data) != stage.data:  # (older runs did not record it)
            wrong.append(f"{run}: data {recorded['data']!r}, stage {stage.data!r}")
        recorded = {k: v for k, v in recorded.items() if k not in NOT_CONFIG}
        loop = recorded.get("loop", {})
        recorded["loop"] = {k: v for k, v in loop.items() if k not in NOT_LOOP_CONFIG}
        for key, value in CHOSEN_AFTER.get((name, stage.name), {}).items():
            assert recorded.pop(key) == value, f"{run}: {key} is not what the run recorded"
        recorded.get("text_model", {}).pop("vocab", None)
        if (name, stage.name) in STOPPED_EARLY:
            recorded["optim"]["decay_steps"] = recorded["loop"]["steps"]
            recorded["loop"]["steps"] = STOPPED_EARLY[(name, stage.name)]
        wrong += differences(recorded, jsonable(config(stage)), f"{run}/config.json")
    last = stages[-1]
    cfg = config(last)
    wrong += differences(component(folder, "unet", UNetConfig), jsonable(cfg.model), "unet")
    # the card: parameterisation, schedule, sampler defaults, image size, data
    index = diffusion_model.model_index(cfg, last.data)
    wrong += differences({k: card[k] for k in index}, jsonable(index), "model_index.json")
    text = read(folder / "text_encoder" / CONFIG_NAME)
    if text["type"] == "text_transformer":
        if cfg.text_encoder != diffusion.TRAINED:
            wrong.append(f"text encoder: bundled trained, preset {cfg.text_encoder!r}")
        got = {k: v for k, v in jsonable(cfg.text_model).items() if k != "vocab"}
        wrong += differences({k: v for k, v in text.items() if k in got}, got, "text_encoder")
    elif (text["path"], text["max_length"]) != (
        None,
        cfg.max_tokens,
    ) or cfg.text_encoder != "minilm":
        wrong.append(f"text encoder: bundled {text}, preset {cfg.text_encoder} {cfg.max_tokens}")
    ae_stage = autoencoder_stage(stages)
    if (folder / "autoencoder").is_dir() != (ae_stage is not None):
        wrong.append("autoencoder: the folder has one and the preset none, or the reverse")
    elif ae_stage is not None:
        ae_model = config(ae_stage).model
        kind = PatchConfig if isinstance(ae_model, PatchConfig) else AutoencoderConfig
        bundled = component(folder, "autoencoder", kind)
        own = {k: v for k, v in jsonable(ae_model).items() if k not in LATENT_STATS}
        wrong += differences(bundled, own, "autoencoder")
    return wrong


@pytest.mark.parametrize("name", ["shapes", "fashion", "emoji"])
def test_each_shipped_preset_is_what_its_runs_recorded_and_its_folder_holds(name):
    assert mismatches(name) == []


def own_models() -> list[str]:
    """The bundled models with networks of their own (not folders that adapt one)."""
    return [n for n in bundled_models() if "adapts" not in read(BUNDLED / n / INDEX_NAME)]


def test_every_bundled_model_is_a_preset_its_card_names():
    assert set(own_models()) == set(diffusion.SHIPPED)
    for name in own_models():
        card = read(BUNDLED / name / INDEX_NAME)
        assert card["training"]["preset"] == name
        assert f"--preset {name}" in card["training"]["command"]
        assert not re.search(r"session \d", json.dumps(card).lower())  # the preset, not a diary


@pytest.mark.parametrize("name", ["shapes", "fashion", "emoji"])
def test_the_stages_are_the_ones_the_card_states(name):
    stages = diffusion.SHIPPED[name]
    structure = [(s.name, s.recipe, s.init, s.autoencoder) for s in stages]
    assert structure == STRUCTURE[name]
    card = read(BUNDLED / name / INDEX_NAME)
    training, last = card["training"], config(stages[-1])
    # the card's images are its steps at the preset's batch size
    assert training["images_seen"] == training["steps"] * last.loop.batch_size
    assert training["steps"] == last.loop.steps
    if len([s for s in stages if s.recipe == "diffusion"]) > 1:  # a fine-tuned stage
        assert stages[-1].init and training.get("stage") == stages[-1].name
        start = training["initialised_from"]
        first = next(s for s in stages if s.name == stages[-1].init)
        assert start["stage"] == first.name
        assert start["images_seen"] == start["steps"] * config(first).loop.batch_size
        if name == "fashion":  # its first stage: the checkpoint where that run was stopped
            assert start["steps"] == config(first).loop.steps and first.init == "fashion"
            base = start["initialised_from"]
            assert base["stage"] == "fashion" and "stopped at step" in base["note"]
            assert base["steps"] < config(stages[0]).loop.steps
            assert base["images_seen"] == base["steps"] * config(stages[0]).loop.batch_size
        else:
            assert start["steps"] == config(first).loop.steps
    ae_card = card.get("autoencoder", {}).get("training")
    if ae_card:  # an autoencoder trained for this model: its own stage
        ae = config(next(s for s in stages if s.recipe == "autoencoder"))
        assert ae_card["preset"] == name and ae_card["steps"] == ae.loop.steps
        assert ae_card["images_seen"] == ae.loop.steps * ae.loop.batch_size


def test_a_changed_preset_is_caught(monkeypatch):
    """The comparison can fail: one channel more in a stage's UNet, or another schedule."""
    original = diffusion.CONFIG_PRESETS["shapes_uniform"]

    def wider():
        cfg = original()
        cfg.model = replace(cfg.model, channels=(160,))
        return cfg

    monkeypatch.setitem(diffusion.CONFIG_PRESETS, "shapes_uniform", wider)
    found = mismatches("shapes")
    assert any("channels" in w and "unet" in w for w in found), found

    last = diffusion.SHIPPED["emoji"][-1].preset  # the stage whose card states the interval
    emoji = diffusion.CONFIG_PRESETS[last]

    def other_guidance():
        return replace(emoji(), guidance_interval=None)

    monkeypatch.setitem(diffusion.CONFIG_PRESETS, last, other_guidance)
    found = mismatches("emoji")
    assert any("guidance_interval" in w for w in found), found


def test_stages_run_in_order_from_each_others_models_and_resume_skips_finished_ones(tmp_path):
    stages = (
        Stage("ae", "autoencoder", "patch", "shapes"),
        Stage("first", "diffusion", "tiny", "shapes", autoencoder="ae"),
        Stage("second", "diffusion", "tiny", "shapes", init="first", autoencoder="ae"),
    )
    calls = []

    def train_stage(stage, run_dir, flags):
        calls.append((stage.name, run_dir, flags))
        (run_dir / "model").mkdir(parents=True, exist_ok=True)
        (run_dir / "model" / INDEX_NAME).write_text("{}")
        if len(calls) == 2:  # the first try of stage "first" is stopped
            return {"status": "interrupted", "step": 3, "checkpoint": "c"}
        return {"status": "done", "step": 5}

    result = run_stages("x", stages, tmp_path, None, False, train_stage)
    assert result["status"] == "interrupted" and result["stage"] == "first"
    assert [c[0] for c in calls] == ["ae", "first"]
    (tmp_path / "first" / "model" / INDEX_NAME).unlink()  # interrupted: not exported
    result = run_stages("x", stages, tmp_path, "other", True, train_stage)
    assert [c[0] for c in calls] == ["ae", "first", "first", "second"]
    name, run_dir, flags = calls[-1]
    assert run_dir == tmp_path / "second"
    assert flags == {
        "data": "other",
        "init": str(tmp_path / "first" / "model"),
        "autoencoder": str(tmp_path / "ae" / "model"),
        "resume": False,  # not begun: from step 0 (a begun stage with checkpoints resumes)
    }
    assert result["model"] == str(tmp_path / "second" / "model")
    with pytest.raises(ValueError, match="needs 'later' first"):
        run_stages(
            "x",
            (Stage("a", "diffusion", "tiny", "shapes", init="later"),),
            tmp_path,
            None,
            False,
            train_stage,
        )


def test_show_config_prints_a_shipped_presets_stages_as_json(capsys):
    assert (
        t2i_main(["train", "diffusion", "--preset", "shapes", "--show-config", "--out", "r"]) == 0
    )
    shown = json.loads(capsys.readouterr().out)
    names = [s["name"] for s in shown["stages"]]
    assert names == ["patch", "high_noise", "uniform", "phrasing", "crowded", "phrasing2"]
    uniform, phrasing, crowded, phrasing2 = shown["stages"][-4:]
    assert uniform["init"] == str(Path("r/high_noise/model"))
    assert uniform["config"]["optim"]["lr"] == 3.5e-4
    assert phrasing["init"] == str(Path("r/uniform/model"))
    assert phrasing["config"]["train_parts"] == "text"
    assert crowded["init"] == str(Path("r/phrasing/model"))
    assert crowded["config"]["train_parts"] == "unet" and crowded["data"] == "shapes:crowded"
    assert (
        phrasing2["init"] == str(Path("r/crowded/model")) and phrasing2["data"] == "shapes:varied"
    )
    assert phrasing2["config"]["train_parts"] == "text" and phrasing2["config"]["loop"]["seed"] == 1
    argv = ["train", "diffusion", "--preset", "tiny", "--show-config", "--optim.lr", "0.5"]
    assert t2i_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["lr"] == 0.5


def test_help_lists_every_preset(capsys):
    with pytest.raises(SystemExit):
        t2i_main(["train", "diffusion", "--help"])
    out = capsys.readouterr().out
    for name in [*diffusion.CONFIG_PRESETS, *diffusion.SHIPPED]:
        assert f"\n  {name} " in out, name
    assert "--show-config" in out


def test_one_command_trains_the_stages_and_a_later_one_starts_from_an_earlier(
    tmp_path, monkeypatch, capsys
):
    def guided():  # the second stage's own sampling defaults (as `fashion`'s last stage has)
        return replace(diffusion.preset("tiny"), guidance_scale=5.0, guidance_interval=(0.3, 2.0))

    monkeypatch.setitem(diffusion.CONFIG_PRESETS, "tiny_guided", guided)
    stages = (
        Stage("first", "diffusion", "tiny", "shapes"),
        Stage("second", "diffusion", "tiny_guided", "shapes", init="first"),
    )
    monkeypatch.setitem(diffusion.SHIPPED, "tiny_two", stages)
    argv = ["train", "diffusion", "--preset", "tiny_two", "--out", str(tmp_path), "--no-progress"]
    argv += ["--loop.steps", "2", "--loop.sample_every", "0"]
    assert t2i_main(argv) == 0
    second = read(tmp_path / "second" / "config.json")
    assert second["init"]["path"] == str((tmp_path / "first" / "model").resolve())
    assert (tmp_path / "second" / "model" / INDEX_NAME).is_file()
    # the fine-tune samples as its preset says, not as the first stage's card (guidance 3, none)
    assert (second["guidance_scale"], second["guidance_interval"]) == (5.0, [0.3, 2.0])
    sampler = read(tmp_path / "second" / "model" / INDEX_NAME)["sampler"]
    assert (sampler["guidance_scale"], sampler["guidance_interval"]) == (5.0, [0.3, 2.0])
    # a plain --init run takes the scale with its interval from the model it starts from
    third = ["train", "diffusion", "--preset", "tiny", "--data", "shapes", "--no-progress"]
    third += ["--init", str(tmp_path / "second" / "model"), "--out", str(tmp_path / "third")]
    assert t2i_main([*third, "--loop.steps", "1", "--loop.sample_every", "0"]) == 0
    adopted = read(tmp_path / "third" / "config.json")
    assert (adopted["guidance_scale"], adopted["guidance_interval"]) == (5.0, [0.3, 2.0])
    assert t2i_main([*argv, "--resume"]) == 0  # both done: nothing to train again
    out = capsys.readouterr().out
    assert out.count("done already") == 2, out


def test_the_shapes_stages_data_builds_the_shipped_words():
    """The trained text encoder's vocabulary comes from the stages' data (their first captions):
    the grammar's words from the first stage, then the words of the phrasing stage's captions
    it lacked, after them."""
    from t2i.models.text_encoder import build_vocab
    from t2i.training.data import first_captions, open_dataset

    def words(stage: Stage) -> list[str]:
        cfg = config(stage)
        dataset, _ = open_dataset(stage.data, cfg.image_size, cfg.data_length)
        return build_vocab(first_captions(dataset, cfg.vocab_captions))

    stages = {s.name: s for s in diffusion.SHIPPED["shapes"]}
    grammar = words(stages["high_noise"])
    vocab = grammar + [w for w in words(stages["phrasing"]) if w not in grammar]
    assert len(vocab) > len(grammar) and {"crimson", "disc", "beneath"} <= set(vocab)
    assert vocab == read(BUNDLED / "shapes" / "text_encoder" / CONFIG_NAME)["vocab"]
