"""How people type a caption: the case of its letters (shared by the varied captions of `shapes`
and `fashion`)."""

from __future__ import annotations


def typed_case(text: str, u: float) -> str:
    """`text` for a uniform draw `u`: as is (0.65), first letter capitalised (0.25), shouted
    (0.05) or in title case (0.05)."""
    if u < 0.25:
        return text[0].upper() + text[1:]
    if u < 0.3:
        return text.upper()
    if u < 0.35:
        return text.title()
    return text
