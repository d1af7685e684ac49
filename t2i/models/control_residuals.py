"""What a control adds to a UNet's features: the one value that passes from a ControlNet or a
T2I-Adapter (t2i/models/control.py) into `UNet.forward(..., control=)`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Residuals:
    """skips: one entry per skip the down path keeps (None: nothing added), added where the up
    path reads them (ControlNet); mid: added to the middle block's output (ControlNet); down:
    {index in UNet.down: features added to that block's output}, so they flow on down the path
    and into its skip (T2I-Adapter)."""

    skips: list[torch.Tensor | None]
    mid: torch.Tensor | None = None
    down: dict[int, torch.Tensor] = field(default_factory=dict)

    def scaled(self, scale: float | torch.Tensor) -> Residuals:
        """Every tensor times `scale` (a float, or (B, 1, 1, 1) per row)."""

        def mul(t):
            return None if t is None else t * scale

        return Residuals(
            [mul(s) for s in self.skips],
            mul(self.mid),
            {i: t * scale for i, t in self.down.items()},
        )

    def __add__(self, other: Residuals) -> Residuals:
        def add(a, b):
            return b if a is None else a if b is None else a + b

        if len(self.skips) != len(other.skips):
            raise ValueError(f"{len(self.skips)} skips cannot add to {len(other.skips)}")
        down = dict(self.down)
        for i, t in other.down.items():
            down[i] = add(down.get(i), t)
        return Residuals(
            [add(a, b) for a, b in zip(self.skips, other.skips)], add(self.mid, other.mid), down
        )
