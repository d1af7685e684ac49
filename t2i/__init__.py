"""t2i: text-to-image diffusion you can train and run on a CPU."""

__version__ = "0.1.0"
