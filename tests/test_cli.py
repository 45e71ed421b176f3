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


def test_demo_rows_can_be_selected_and_each_writes_its_plot(tmp_path, capsys):
    rows = cli.demo(str(tmp_path), num_chains=1, num_steps=200, only=["mala", "fbgvi", "diff"])
    # one own row, two entry-point rows (those come in entry-point order)
    assert sorted(r["method"].split()[0] for r in rows) == ["diffusion", "fbgvi", "mala"]
    assert "fbgvi" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diffusion.png", "fbgvi.png", "mala.png"]
    for row in rows:  # the arrays drawn are not handed back
        assert Path(row["plot"]).stat().st_size > 0 and "draws" not in row


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
        assert row["min_ess"] > 0
    # one plot per row, each named after its row
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(n + ".png" for n in cli.demo_rows())
    for row in rows:
        assert Path(row["plot"]).stat().st_size > 0


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


def test_python_dash_m_samplers_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "samplers", "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "verify" in result.stdout


def test_demo_only_with_an_unknown_row_names_the_rows_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--only", "nonexistent", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "'nonexistent'" in err
    assert all(name in err for name in cli.demo_rows())
    assert "mala" in err and "sw_flow" in err and "smc" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="no demo row named 'nope'"):
        cli.demo(str(out), only=["mala", "nope"])
    assert not out.exists()


def test_demo_row_names_are_the_rows_it_runs():
    import jax

    from samplers.demos import demo_cases

    names = [m.split()[0] for m in (c.method for c in demo_cases(jax.random.key(0), 10))]
    assert names == cli.demo_rows()[:5]
    assert cli.demo_rows()[5:] == ["diffusion", "fbgvi", "smc", "stein", "sw_flow"]


def test_demo_entry_points_name_row_functions_of_the_demos_modules():
    """pyproject.toml's ``samplers.demos`` entry points (read from the file, not from the
    installed metadata) each name a function of a package's demos module, the only modules
    that hold demo rows."""
    import importlib
    import inspect
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    entries = pyproject["project"]["entry-points"]["samplers.demos"]
    assert sorted(entries) == ["diffusion", "fbgvi", "smc", "stein", "sw_flow"]
    for name, target in entries.items():
        module, attr = target.split(":")
        assert module in ("samplers.demos", "vi.demos", "diffusion.demos"), (name, target)
        assert inspect.isfunction(getattr(importlib.import_module(module), attr)), target


def test_demo_help_says_one_plot_per_row(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "one plot per row" in out and "one plot per method" not in out
    assert all(name in out for name in cli.demo_rows())  # the --only choices


def _collections(fig):
    return fig.axes[0].collections


def test_demo_figure_shows_both_clouds_labels_and_a_legend():
    """The exact draws go on top (higher zorder) as hollow circles and the sampler's draws
    are translucent, so neither cloud hides the other; both are in the legend."""
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)
    row = {"method": "m", "target": "t", "draws": rng.normal(size=(3000, 2)),
           "exact_draws": rng.normal(size=(3000, 2))}
    fig = cli._figure(row)
    ax = fig.axes[0]
    draws, exact = _collections(fig)
    assert exact.get_zorder() > draws.get_zorder() and draws.get_alpha() < 1
    assert exact.get_facecolor().size == 0 or exact.get_facecolor()[0, 3] == 0  # hollow
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m", "exact draws"]
    plt.close(fig)
    marg = {"t": np.arange(5), "mean": np.zeros(5), "sd": np.ones(5), "exact_mean": np.zeros(5),
            "exact_sd": np.ones(5), "observations": np.ones(5)}
    fig = cli._figure({"method": "m", "target": "t", "marginals": marg})
    assert fig.axes[0].get_xlabel() and len(fig.axes[0].get_legend().get_texts()) == 3
    plt.close(fig)
    assert cli._figure({"method": "m", "target": "t"}) is None


def test_particle_rows_bring_their_pictures():
    """The stein and sw_flow rows return what their plots need (tiny sizes)."""
    import matplotlib.pyplot as plt

    from samplers.demos import stein_row, sw_flow_row

    for row, n in ((stein_row(num_particles=10, num_steps=5), 10),
                   (sw_flow_row(num_points=20, num_steps=5), 20)):
        assert row["draws"].shape[0] == n and row["exact_draws"].shape[1] == row["draws"].shape[1]
        plt.close(cli._figure(row))


@pytest.mark.slow  # PPG compiles for 7-20 s on 2 busy cores, whatever the size
def test_smoothing_row_brings_its_marginals():
    import matplotlib.pyplot as plt

    from samplers.demos import smc_row

    row = smc_row(num_steps=6, num_particles=8, num_sweeps=3, burn_in=1, num_chains=2)
    assert all(len(v) == 6 for v in row["marginals"].values())
    plt.close(cli._figure(row))
