"""Fuzz of model folders (issue 39, Must show 2): mutated config.json, model_index.json and
safetensors headers of tiny model folders; every case loads or is a one-line ValueError /
FileNotFoundError naming the file, and none takes more than 2 s (the bounds keep memory small)."""

import json
import random
import shutil
import struct
import time
from collections import Counter

import pytest

import t2i.families
from tests.tiny_models import (
    write_tiny_autoregressive_model,
    write_tiny_draw_model,
    write_tiny_gan_model,
    write_tiny_model,
)

SPECIAL = [
    0,
    -1,
    1,
    2**31,
    10**9,
    10**18,
    -(10**9),
    1.5,
    float("nan"),
    True,
    None,
    "x",
    [],
    {},
    [1, 2],
    {"a": 1},
    [10**6] * 3,
    "",
    1e308,
]


def _mutate_json(rng: random.Random, data):
    """One mutation of a JSON object: a value swapped, a key removed or added, or a non-object."""
    if rng.random() < 0.08:
        return rng.choice([[data], "text", 3, None])
    data = dict(data)
    roll = rng.random()
    key = rng.choice(sorted(data)) if data else "x"
    if roll < 0.15:
        data.pop(key, None)
    elif roll < 0.25:
        data[rng.choice(["extra", "chanels", "type", "family"])] = rng.choice(SPECIAL)
    elif isinstance(data.get(key), dict) and data[key]:
        data[key] = _mutate_json(rng, data[key])
    elif isinstance(data.get(key), list) and data[key] and rng.random() < 0.5:
        items = list(data[key])
        items[rng.randrange(len(items))] = rng.choice(SPECIAL)
        data[key] = items
    else:
        data[key] = rng.choice(SPECIAL)
    return data


def _mutate_weights(rng: random.Random, raw: bytes) -> bytes:
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    roll = rng.random()
    if roll < 0.2:
        return raw[: rng.randrange(len(raw))]  # truncated
    if roll < 0.35:
        return struct.pack("<Q", rng.choice([0, 1, n + 1, 2**40, 2**64 - 1])) + raw[8:]
    if roll < 0.45:
        return raw[:8] + b"[" + raw[9:]  # bad JSON
    name = rng.choice([k for k in header if k != "__metadata__"])
    entry = dict(header[name])
    field = rng.choice(["dtype", "shape", "data_offsets"])
    entry[field] = rng.choice(
        {
            "dtype": ["F64", "I8", "XX", 3, None],
            "shape": [[], [10**9, 10**9], [-1], ["a"], [3] * 9, None],
            "data_offsets": [[0, 2**40], [5, 1], [0], None, "x"],
        }[field]
    )
    header[name] = entry
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body + raw[8 + n :]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "diffusion": write_tiny_model(root / "diffusion", latent=True),
        "autoregressive": write_tiny_autoregressive_model(root / "autoregressive"),
        "draw": write_tiny_draw_model(root / "draw"),
        "gan": write_tiny_gan_model(root / "gan", word_attention=True, stages=2),
    }


def _case(rng, source, folder):
    """Mutate one file of a copy of source; -> the file's name."""
    shutil.copytree(source, folder)
    targets = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    target = folder / rng.choice(targets)
    if target.suffix == ".safetensors":
        target.write_bytes(_mutate_weights(rng, target.read_bytes()))
    else:
        target.write_text(json.dumps(_mutate_json(rng, json.loads(target.read_text()))))
    return target


def test_mutated_model_folders_load_or_fail_with_one_line(tiny_folders, tmp_path):
    rng = random.Random(39)
    outcomes, slowest = Counter(), 0.0
    for i in range(240):
        family = "diffusion" if i % 3 else "autoregressive"
        target = _case(rng, tiny_folders[family], tmp_path / str(i))
        start = time.perf_counter()
        try:
            t2i.families.load(tmp_path / str(i))
            outcomes[family, target.suffix, "loaded"] += 1
        except (ValueError, FileNotFoundError) as e:
            msg = str(e)
            assert "\n" not in msg and (target.name in msg or target.parent.name in msg), (
                target,
                msg,
            )
            outcomes[family, target.suffix, type(e).__name__] += 1
        slowest = max(slowest, time.perf_counter() - start)
        shutil.rmtree(tmp_path / str(i))
    print(sorted(outcomes.items()), f"slowest {slowest:.2f} s")
    assert slowest < 2.0
    assert sum(v for k, v in outcomes.items() if k[2] != "loaded") > 100


@pytest.mark.parametrize("family,seed", [("draw", 33), ("gan", 41)])
def test_mutated_draw_and_gan_folders_load_or_fail_with_one_line(
    tiny_folders, tmp_path, family, seed
):
    rng = random.Random(seed)
    outcomes = Counter()
    for i in range(80):
        target = _case(rng, tiny_folders[family], tmp_path / str(i))
        try:
            t2i.families.load(tmp_path / str(i))("a red circle")
            outcomes[target.suffix, "loaded"] += 1
        except (ValueError, FileNotFoundError) as e:
            msg = str(e)
            assert "\n" not in msg and (target.name in msg or target.parent.name in msg), msg
            outcomes[target.suffix, type(e).__name__] += 1
        shutil.rmtree(tmp_path / str(i))
    print(sorted(outcomes.items()))
    assert sum(v for k, v in outcomes.items() if k[1] != "loaded") > 40
