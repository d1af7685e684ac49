"""Command-line value types shared by the subcommands (`t2i generate`, `t2i eval`, ...); light,
so building the parsers imports no torch."""

from __future__ import annotations


def parse_interval(text: str) -> tuple[float, ...] | str:
    """Command-line 'LO,HI' -> (lo, hi); anything else is returned for the pipeline to accept
    ('all') or refuse with a message naming it."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        return text


def add_cads_arguments(p) -> None:
    """--cads-noise and --cads-interval (condition-annealed sampling) on a generating parser."""
    p.add_argument(
        "--cads-noise",
        type=float,
        default=None,
        help="condition-annealed sampling: noise the prompt's states by this much (their own std) "
        "at high sigma, for variety under strong guidance; 0 off (model's default)",
    )
    p.add_argument(
        "--cads-interval",
        type=parse_interval,
        default=None,
        help="CADS: full noise where sigma >= HI, none where sigma <= LO ('LO,HI'; default the "
        "sigmas of timesteps 0.6T and 0.9T)",
    )
