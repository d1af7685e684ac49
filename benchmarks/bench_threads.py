"""`t2i generate` on a shared machine: wall and CPU seconds per image with the OpenMP settings a
user might run under, on idle cores and beside a second busy process.

Settings (each a fresh `python -m t2i generate` process):
  old       the CLI before: torch's default, one thread per core, libgomp's spinning wait
            (T2I_KEEP_OMP=1, OMP_WAIT_POLICY and OMP_NUM_THREADS unset)
  passive   OMP_WAIT_POLICY=PASSIVE alone (waiting threads sleep)
  spin20k   GOMP_SPINCOUNT=20000: threads spin briefly, then sleep (libgomp only)
  one       --threads 1
  new       the CLI now, nothing set: PASSIVE unless the user set a policy, threads = the cores
            this process may use (affinity, cgroup quota) unless OMP_NUM_THREADS or --threads
The busy neighbour is another torch process multiplying matrices with torch's defaults (a
thread per core, spinning), as a second user's job would. Settings run interleaved, `--repeats`
times; medians are printed, and each setting as a ratio to `old` in the same condition.

Two figures per image: `command` is the whole process (startup, loading, sampling) divided by
--n, what a user timing `t2i generate` sees; `sampling` is a second, warm call of the CLI's main()
in the same process (torch loaded, thread pool started), the part that threads change.

    uptime; python3 benchmarks/bench_threads.py                 # about 3 minutes on 2 cores
    python3 benchmarks/bench_threads.py --n 8 --repeats 3 --model emoji
Run it on cores nothing else uses: a third process (another user) shifts both conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "old": ({"T2I_KEEP_OMP": "1"}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "spin20k": ({"T2I_KEEP_OMP": "1", "GOMP_SPINCOUNT": "20000"}, []),
    "one": ({}, ["--threads", "1"]),
    "new": ({}, []),
}
CLEARED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "T2I_KEEP_OMP")
NEIGHBOUR = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"
CHILD = """
import json, resource, sys, time
from t2i.cli import main  # first: it sets the wait policy before torch loads
argv, n = json.loads(sys.argv[1]), sys.argv[2]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
main(argv + ["--n", n])
wall, used = time.perf_counter(), cpu()
main(argv + ["--n", n])
print(json.dumps([time.perf_counter() - wall, cpu() - used]))
"""


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return {**env, **extra}


def generate(setting: str, n: int, out: str, model: str) -> tuple[float, float, float, float]:
    """(command wall, command CPU, warm wall, warm CPU) seconds per image: one process that runs
    `t2i generate --n n` twice, the first run counted as the command."""
    env, flags = SETTINGS[setting]
    argv = ["generate", "a red circle above a blue square", "--model", model, "--quiet"]
    argv += ["--out", out, *flags]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(argv), str(n)],
        env=clean_env(env),
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    warm_wall, warm_cpu = json.loads(done.stdout.strip().splitlines()[-1])
    # the process ran the command twice: the first run is the process less the warm one
    return (wall - warm_wall) / n, (cpu - warm_cpu) / n, warm_wall / n, warm_cpu / n


def measure(n: int, repeats: int, out: str, model: str) -> dict[str, list[float]]:
    runs: dict[str, list[tuple[float, ...]]] = {s: [] for s in SETTINGS}
    for _ in range(repeats):
        for setting in SETTINGS:
            runs[setting].append(generate(setting, n, out, model))
    return {s: [statistics.median(col) for col in zip(*r)] for s, r in runs.items()}


def table(title: str, figures: dict[str, list[float]]) -> str:
    base = figures["old"]
    lines = [
        f"{title}: seconds per image (ratio to old)",
        f"{'setting':<9}{'command wall':>20}{'command CPU':>20}"
        f"{'sampling wall':>20}{'sampling CPU':>20}",
    ]
    for s, row in figures.items():
        cells = "".join(f"{v:>12.3f} ({v / b:4.2f}x)" for v, b in zip(row, base))
        lines.append(f"{s:<9}{cells}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4, help="images per generate call")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default="shapes")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"cores this process may use: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "x.png")
        idle = measure(args.n, args.repeats, out, args.model)
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=clean_env({}))
        try:
            time.sleep(2)
            loaded = measure(args.n, args.repeats, out, args.model)
        finally:
            neighbour.kill()
            neighbour.wait()
    print(table(f"idle, {args.model}, n {args.n}", idle))
    print(table("beside a busy torch process", loaded))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
