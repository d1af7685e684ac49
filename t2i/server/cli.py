"""`t2i serve`: flags -> ServerConfig, model names -> loaded pipelines -> serve()."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  t2i serve --model runs/shapes-model                 # http://127.0.0.1:8000
  t2i serve --model a/ --model b/ --port 9000 --max-batch 1
  t2i serve --model runs/m --host 0.0.0.0             # reachable from other machines
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
    p.add_argument("--bf16", action="store_true", help="bf16 networks (see t2i generate --bf16)")
    p.set_defaults(func=_serve)


def served_models(requested: list[str] | None) -> list[str]:
    """The --model names in order, or every bundled model with the default first (the web page
    selects the first one, as `t2i generate` uses the default)."""
    from t2i import DEFAULT_MODEL
    from t2i.checkpoint import bundled_models

    return requested or sorted(bundled_models(), key=lambda name: name != DEFAULT_MODEL)


def _serve(args: argparse.Namespace) -> int:
    from t2i.families import load
    from t2i.server.api import Limits
    from t2i.server.app import ServerConfig, serve

    names = served_models(args.model)
    if not names:
        raise ValueError("no bundled model ships yet: give --model DIR (a folder from t2i train)")
    for key in ("max_queue", "max_batch", "max_steps", "max_n", "max_side", "max_prompt"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    pipes = {name: load(name, bf16=args.bf16) for name in names}
    limits = Limits(args.max_steps, args.max_n, args.max_side, args.max_prompt)
    config = ServerConfig(
        args.host, args.port, args.max_queue, args.max_batch, args.timeout, limits
    )
    serve(pipes, config)
    return 0
