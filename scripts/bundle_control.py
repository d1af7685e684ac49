"""Copy a trained control into a bundled model folder as controls/<name>/, its meta completed
with the run's training card (steps, images, wall time, learning rate, data, command).

    python scripts/bundle_control.py runs/control/shapes_layout/model/layout shapes layout
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from t2i.checkpoint import BUNDLED_DIR


def training_card(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    last = [s for s in steps if "loss" in s][-1]
    loop, optim, recipe = config["loop"], config["optim"], config["recipe"]
    init = Path(config["init"]["path"]).name
    command = (
        f"t2i train {recipe} --init {init} --data {config['data']} --control.kind "
        f"{config['control']['kind']} --loop.steps {loop['steps']} --loop.batch_size "
        f"{loop['batch_size']} --optim.lr {optim['lr']:g}"
    )
    if config["control"]["adapter_blocks"] != 1 and recipe == "t2i_adapter":
        command += f" --control.adapter_blocks {config['control']['adapter_blocks']}"
    return {
        "command": command,
        "data": config["data"],
        "steps": last["step"],
        "images_seen": last["step"] * loop["batch_size"],
        "batch_size": loop["batch_size"],
        "lr": optim["lr"],
        "wall_time_s": round(last["elapsed_s"], 1),
        "machine": "2 CPU cores, one thread (OMP_NUM_THREADS=1), beside a second run",
    }


def main() -> None:
    source, model, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    run = source.parent.parent
    target = BUNDLED_DIR / model / "controls" / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["meta"] = {**config["meta"], "name": name, "training": training_card(run)}
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{source} -> {target}: {json.dumps(config['meta'])}")


if __name__ == "__main__":
    main()
