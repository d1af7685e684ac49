"""`t2i serve` under load on loopback: images per second and p50/p99 latency at 1, 4 and 16
concurrent clients, with batching of compatible requests off (--max-batch 1) and on (16).

The model is t2i's `small` UNet (32x32 pixels) with a tiny text encoder, untrained: the cost of
a forward pass does not depend on the weights. Each client sends one-image requests back to back
(own prompt, own seed, the same sampler settings, so all are compatible); each setting runs
`--repeats` times, interleaved, and the medians are printed.

    python3 benchmarks/bench_server.py                 # about two minutes on 2 cores
    python3 benchmarks/bench_server.py --requests 16 --repeats 1 --steps 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from t2i.checkpoint import save_model_folder
from t2i.families import load
from t2i.models.text_encoder import TextTransformer, TextTransformerConfig
from t2i.models.unet import UNet, UNetConfig
from t2i.schedules import DiscreteSchedule
from t2i.server import ServerConfig, make_server

WORDS = "a red blue green circle square star above below left of right".split()


def make_pipe(folder: str):
    torch.manual_seed(0)
    text = TextTransformer(TextTransformerConfig.preset("tiny", vocab=WORDS))
    unet = UNet(UNetConfig.preset("small", context_dim=text.config.dim))
    index = {
        "parameterisation": "eps",
        "schedule": DiscreteSchedule.preset("ddpm").to_dict(),
        "sampler": {"name": "ddim", "steps": 8, "guidance_scale": 3.0},
        "image_size": 32,
    }
    save_model_folder(folder, {"unet": unet, "text_encoder": text}, index)
    return load(folder)


def post(address: tuple[str, int], body: dict) -> float:
    """Seconds for one generate request; raises unless 200."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(*address, timeout=300)
    conn.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - start


def run(pipe, clients: int, max_batch: int, requests: int, steps: int) -> dict:
    server = make_server({"small": pipe}, ServerConfig(port=0, max_batch=max_batch, max_queue=64))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = server.server_address[:2]
    bodies = [
        {"prompt": f"a {WORDS[1 + i % 3]} {WORDS[4 + i % 3]}", "seed": i, "steps": steps}
        for i in range(requests)
    ]
    post(address, bodies[0])  # warm-up: text cache, allocator
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(lambda b: post(address, b), bodies))
    wall = time.perf_counter() - start
    server.shutdown()
    server.server_close()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {"ips": requests / wall, "p50": statistics.median(latencies), "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per setting")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [(c, b) for c in (1, 4, 16) for b in (1, 16)]
    results: dict[tuple[int, int], list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as folder:
        pipe = make_pipe(folder)
        for _ in range(args.repeats):
            for clients, max_batch in settings:
                results[clients, max_batch].append(
                    run(pipe, clients, max_batch, args.requests, args.steps)
                )
    print(
        f"{args.requests} one-image requests per setting, {args.steps} ddim steps, CFG on, "
        f"32x32, {args.repeats} repeats (medians), torch threads {args.threads}"
    )
    print("| clients | max_batch | images/s | p50 latency (s) | p99 latency (s) |")
    print("|---|---|---|---|---|")
    for clients, max_batch in settings:
        runs = results[clients, max_batch]
        med = {k: statistics.median(r[k] for r in runs) for k in ("ips", "p50", "p99")}
        cells = f"{med['ips']:.2f} | {med['p50']:.3f} | {med['p99']:.3f}"
        print(f"| {clients} | {max_batch} | {cells} |")


if __name__ == "__main__":
    main()
