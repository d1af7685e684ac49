"""`t2i serve`: flags -> ServerConfig, model names -> loaded pipelines -> serve()."""

from __future__ import annotations

import argparse
import math
import os

EXAMPLES = """examples:
  t2i serve --model runs/shapes-model                 # http://127.0.0.1:8000
  t2i serve --model a/ --model b/ --port 9000 --max-batch 1
  t2i serve --model runs/m --host 0.0.0.0             # reachable from other machines
  t2i serve --model runs/m --token s3cret             # API needs "Authorization: Bearer s3cret";
                                                      # the page: http://127.0.0.1:8000/?token=s3cret
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web page + JSON HTTP API",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", help="bundled name or model folder (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    p.add_argument("--max-queue", type=int, default=32, help="waiting requests before 503")
    p.add_argument("--max-batch", type=int, default=16, help="images per sampler call (1 = off)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--max-steps", type=int, default=100, help="per-request limit")
    p.add_argument("--max-n", type=int, default=8, help="images per request")
    p.add_argument("--max-side", type=int, default=512, help="pixels per image side")
    p.add_argument("--max-prompt", type=int, default=1000, help="characters per prompt")
    p.add_argument(
        "--token", default=os.environ.get("T2I_TOKEN"), help="bearer token for /api/* (T2I_TOKEN)"
    )
    p.add_argument("--bf16", action="store_true", help="bf16 networks (see t2i generate --bf16)")
    p.add_argument(
        "--lora-dir",
        default=os.environ.get("T2I_LORA_DIR"),
        help="LoRAs loaded at start onto the models they were made for (T2I_LORA_DIR)",
    )
    p.add_argument(
        "--embedding-dir",
        default=None,
        help="textual-inversion words loaded at start onto the models they were learnt on",
    )
    p.add_argument(
        "--guide-dir",
        default=None,
        help="guide folders (t2i train guide) loaded at start onto the models they were "
        'trained on; a request names them in "guides"',
    )
    p.set_defaults(func=_serve)


def served_models(requested: list[str] | None) -> list[str]:
    """The --model names in order, or every bundled model with the default first (the web page
    selects the first one, as `t2i generate` uses the default)."""
    from t2i import DEFAULT_MODEL
    from t2i.checkpoint import bundled_models

    return requested or sorted(bundled_models(), key=lambda name: name != DEFAULT_MODEL)


def check_args(args: argparse.Namespace) -> None:
    """Every number in range before a model is loaded or a port bound (ValueError: exit 2)."""
    for key in ("max_queue", "max_batch", "max_steps", "max_n", "max_side", "max_prompt"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.token is not None and not args.token.strip():
        raise ValueError("--token (or T2I_TOKEN) is empty")


def _serve(args: argparse.Namespace) -> int:
    from t2i.families import load
    from t2i.server.api import Limits
    from t2i.server.app import ServerConfig, serve

    check_args(args)
    names = served_models(args.model)
    if not names:
        raise ValueError("no bundled model ships yet: give --model DIR (a folder from t2i train)")
    pipes = {name: load(name, bf16=args.bf16) for name in names}
    limits = Limits(args.max_steps, args.max_n, args.max_side, args.max_prompt)
    config = ServerConfig(
        args.host, args.port, args.max_queue, args.max_batch, args.timeout, limits, args.token
    )
    config.lora_dir, config.embedding_dir = args.lora_dir, args.embedding_dir
    config.guide_dir = args.guide_dir
    serve(pipes, config)
    return 0
