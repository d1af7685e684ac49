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
