"""t2i: text-to-image diffusion you can train and run on a CPU.

import t2i
pipe = t2i.load("shapes")                       # a bundled model, or a model folder
images = pipe("a red circle above a blue square", steps=20, guidance=3.0, seed=1)
"""

__version__ = "0.1.0"
DEFAULT_MODEL = "shapes"  # what `t2i generate` and `t2i.load()` use without a model


def load(model=DEFAULT_MODEL, bf16=False):
    """Load a bundled model by name, or a model folder written by `t2i train` (t2i/families.py)."""
    from t2i.families import load as _load  # torch is imported only when a model is

    return _load(model, bf16=bf16)
