"""Smoke tests of the ``samplers`` command."""
import subprocess
import sys
from pathlib import Path

import pytest

from samplers import cli


def test_help_lists_demo(capsys):
    assert cli.main([]) == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0


def test_demo_rows_can_be_selected(tmp_path, capsys):
    rows = cli.demo(str(tmp_path), num_chains=1, num_steps=200, only=["mala", "fbgvi"])
    assert [r["method"] for r in rows] == ["mala", "fbgvi"]  # one own row, one entry-point row
    assert (tmp_path / "mala.png").stat().st_size > 0 and "fbgvi" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_prints_a_table_and_writes_plots(tmp_path, capsys):
    rows = cli.demo(str(tmp_path), num_chains=2, num_steps=2000)
    out = capsys.readouterr().out
    methods = [r["method"] for r in rows]
    assert methods[:5] == ["ula", "mala", "underdamped (BAOAB)", "sgld", "fald (K=5)"]
    assert "fbgvi" in methods  # contributed by vi through the samplers.demos entry point
    assert "sw flow (upper CV)" in methods and len(methods) == 10  # + diffusion, stein, smc
    for row in rows:
        assert row["method"] in out and row["w2_error"] >= 0
    for row in rows[:5]:
        assert (tmp_path / row["plot"].split("/")[-1]).stat().st_size > 0 and row["min_ess"] > 0


def test_diffusion_subcommand_comes_from_the_diffusion_package(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["diffusion", "--help"])
    assert exit_.value.code == 0 and "--solvers" in capsys.readouterr().out


def test_bad_demo_arguments_are_named():
    result = subprocess.run([sys.executable, "-m", "samplers.cli", "demo", "--steps", "15"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--steps must be a positive multiple of 10, got 15" in result.stderr


def test_help_lists_verify_and_bench(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "verify" in out and "bench" in out


def test_bench_needs_a_source_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_bench_runs_a_benchmark_module_and_writes_one_report(tmp_path, monkeypatch, capsys):
    """`samplers bench NAME` from the checkout: the harness times ours against the peer and
    writes NAME.json, NAME.md and the combined report.md (a tiny stand-in module: the real
    ones take minutes and need the peers)."""
    import types

    import jax.numpy as jnp

    import benchmarks
    from benchmarks.harness import Case

    tiny = types.ModuleType("tiny_bench")
    tiny.NAME, tiny.TITLE, tiny.NOTES, tiny.PEERS = "tiny", "a sum against a sum", "", ()
    tiny.config = lambda quick: {"repeats": 2, "min_time": 0.001}
    tiny.cases = lambda cfg: [Case("sum", {"n": 8}, lambda: jnp.arange(8.0).sum(),
                                   lambda: jnp.arange(8.0).sum(), "itself")]
    monkeypatch.setitem(sys.modules, "tiny_bench", tiny)
    monkeypatch.setitem(benchmarks.BENCHMARKS, "tiny", "tiny_bench")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the checkout's root
    assert cli.main(["bench", "tiny", "--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "a sum against a sum" in report and "peer/ours" in report and "Machine:" in report
    assert (tmp_path / "tiny.json").exists()
