"""`python -m t2i ...` (and `torchrun -m t2i train ...`) run the command-line interface."""

from t2i.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
