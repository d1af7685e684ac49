"""The CLI's OpenMP settings (t2i/cli.py): threads that sleep while waiting unless the user chose
otherwise, set before torch loads, and a thread count from --threads, OMP_NUM_THREADS or the
cores this process may use (BENCHMARKS.md, "Threads": spinning threads beside a busy process
took 5-9x the CPU time per image)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from t2i import cli
from t2i.cli import choose_threads, main, usable_cores

PROBE = "import t2i.cli, os, torch; print(os.environ.get('OMP_WAIT_POLICY', '-'))"


def _env(**extra: str) -> dict:
    keep = ("OMP_WAIT_POLICY", "T2I_KEEP_OMP")
    return {**{k: v for k, v in os.environ.items() if k not in keep}, **extra}


@pytest.mark.parametrize(
    "env,expected",
    [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"), ({"T2I_KEEP_OMP": "1"}, "-")],
)
def test_the_cli_sets_a_passive_wait_unless_told_otherwise(env, expected):
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=_env(**env), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_the_policy_is_set_before_torch_is_loaded():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: importing the CLI (what `t2i` and
    `python -m t2i` do first) must set it and must not load torch."""
    code = "import os, sys, t2i.cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "", "100000"])
@pytest.mark.parametrize("command", ["generate", "interpolate a", "eval m --data shapes", "serve"])
def test_bad_threads_exit_2_with_a_clear_message(command, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--threads", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"argument --threads: must be a whole number of threads from 1 to 1024, got {value!r}"
        in err
    )


def test_threads_flag_sets_torch_threads_before_the_command_runs(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        code = main(["generate", "--from", str(tmp_path / "missing.png"), "--threads", "1"])
        assert code == 2  # the command ran (and failed on its own) after the threads were set
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_choose_threads_flag_then_the_users_variable_then_usable_cores(monkeypatch):
    assert choose_threads(3, 8, environ={"OMP_NUM_THREADS": "1"}) == 3  # --threads wins
    assert choose_threads(None, 8, environ={"OMP_NUM_THREADS": "1"}) is None  # torch read it
    monkeypatch.setattr(cli, "usable_cores", lambda: 2)
    assert choose_threads(None, 8, environ={}) == 2  # never more than the cores we may use
    assert choose_threads(None, 1, environ={}) == 1  # nor more than torch (or a caller) chose


def test_usable_cores_reads_a_cgroup_quota(tmp_path, monkeypatch):
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cli.cgroup_cpus(str(tmp_path)) == 2  # 1.5 CPUs of quota: 2 threads
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cli.cgroup_cpus(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cli.cgroup_cpus(str(v1)) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cli.cgroup_cpus(str(v1)) is None
    monkeypatch.setattr(cli, "cgroup_cpus", lambda: 1)
    assert usable_cores() == 1
