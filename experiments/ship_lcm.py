"""How the bundled `<model>-lcm` folders were made from an LCM-LoRA run and its evaluations.

    python3 experiments/ship_lcm.py shapes runs/lcm/shapes eval/lcm_shapes_4 "t2i train lcm ..."

copies the run's `model/loras/lcm.safetensors` into `t2i/bundled/<model>/loras/` and writes
`t2i/bundled/<model>-lcm/model_index.json`: the run's folder (it adapts the bundled model with
the LoRA) with its training facts and the `t2i eval` report at the card's 4 steps.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from t2i.checkpoint import BUNDLED_DIR, atomic_write_json

METRIC_KEYS = ("value", "real", "per_category")


def main(model: str, run: str, report_dir: str, command: str) -> None:
    run_dir = Path(run)
    index = json.loads((run_dir / "model" / "model_index.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    report = json.loads((Path(report_dir) / "report.json").read_text())
    if index["adapts"] != model:
        raise SystemExit(f"{run} adapts {index['adapts']!r}, not the bundled {model!r}")
    loras = BUNDLED_DIR / model / "loras"
    loras.mkdir(exist_ok=True)
    shutil.copyfile(run_dir / "model" / "loras" / "lcm.safetensors", loras / "lcm.safetensors")
    index["training"] = {
        **index.get("training", {}),
        "preset": config.get("preset", "default"),
        "command": command,  # as run
    }
    metrics = {
        name: {k: v for k, v in m.items() if k in METRIC_KEYS}
        for name, m in report["metrics"].items()
    }
    evaluated = f"t2i eval {model}-lcm --data {report['data']} --n {report['n']} "
    evaluated += (
        f"--steps {report['steps']} --seed {report['seed']} --batch-size {report['batch_size']}"
    )
    if report["data"] == "shapes" and "compositional_accuracy_heldout" not in metrics:
        evaluated += " --no-heldout"
    index["evaluation"] = {
        "command": evaluated,
        "n": report["n"],
        "sampler": report["sampler"],
        "steps": report["steps"],
        "guidance": report["guidance"],
        "seed": report.get("seed", 0),
        **metrics,
    }
    folder = BUNDLED_DIR / f"{model}-lcm"
    folder.mkdir(exist_ok=True)
    atomic_write_json(folder / "model_index.json", index)
    print(f"wrote {folder} and {loras / 'lcm.safetensors'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
