"""The CLI's OpenMP wait policy (t2i/cli.py): threads that sleep while waiting unless the user
chose otherwise, set before torch loads (BENCHMARKS.md, "Threads": spinning threads beside a busy
process took 5-9x the CPU time per image)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import t2i.cli, os, torch; print(os.environ.get('OMP_WAIT_POLICY', '-'))"


@pytest.mark.parametrize(
    "env,expected",
    [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"), ({"T2I_KEEP_OMP": "1"}, "-")],
)
def test_the_cli_sets_a_passive_wait_unless_told_otherwise(env, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "T2I_KEEP_OMP")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_torch_is_not_loaded_before_the_policy_is_set():
    code = "import sys, t2i.cli; import os; print(os.environ['OMP_WAIT_POLICY'])"
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
    import ast
    from pathlib import Path

    source = (Path(__file__).resolve().parent.parent / "t2i" / "cli.py").read_text()
    tree = ast.parse(source)
    first_import = next(
        node.lineno
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2i")
    )
    setdefault = source.index('os.environ.setdefault("OMP_WAIT_POLICY"')
    assert source[:setdefault].count("\n") + 1 < first_import  # set before any t2i import
