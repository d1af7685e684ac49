"""`t2i generate` on a shared machine: wall and CPU seconds per image with the OpenMP settings a
user might run under, on idle cores and beside a second busy process.

Settings: `unset` (torch's default: one thread per core, libgomp's spinning wait), `passive`
(OMP_WAIT_POLICY=PASSIVE: waiting threads sleep), `one` (OMP_NUM_THREADS=1), and `t2i` (what
the CLI does when the user set neither, set in t2i/cli.py before torch loads). The busy neighbour
is another torch
process multiplying matrices on every core with the default settings, as a second user's job
would. Each setting runs `--repeats` times, interleaved; medians are printed.

    python3 benchmarks/bench_threads.py                  # about 4 minutes on 2 cores
    python3 benchmarks/bench_threads.py --n 4 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "unset": {"T2I_KEEP_OMP": "1"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
    "t2i": {},
}
NEIGHBOUR = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    return {**env, **extra}


def generate(setting: str, n: int, out: str, model: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `t2i generate --n n` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "t2i", "generate", "a red circle above a blue square"]
    cmd += ["--model", model, "--n", str(n), "--quiet", "--out", out]
    subprocess.run(cmd, env=clean_env(SETTINGS[setting]), check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(n: int, repeats: int, out: str, model: str) -> dict[str, tuple[float, float]]:
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in SETTINGS}
    for _ in range(repeats):
        for setting in SETTINGS:
            runs[setting].append(generate(setting, n, out, model))
    return {
        s: (statistics.median(w for w, _ in r) / n, statistics.median(c for _, c in r) / n)
        for s, r in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="images per generate call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="shapes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.png")
        print(f"load before: {os.getloadavg()[0]:.2f}")
        idle = measure(args.n, args.repeats, out, args.model)
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=clean_env({}))
        try:
            time.sleep(2)
            loaded = measure(args.n, args.repeats, out, args.model)
        finally:
            neighbour.kill()
    print("setting   idle: wall s/img  cpu s/img   loaded: wall s/img  cpu s/img")
    for s in SETTINGS:
        (iw, ic), (lw, lc) = idle[s], loaded[s]
        print(f"{s:<8} {iw:>17.3f} {ic:>10.3f} {lw:>19.3f} {lc:>10.3f}")


if __name__ == "__main__":
    main()
