"""`samplers diffusion`: argument errors, help, what "seconds" and the SW noise floor mean;
the real-data run (`--data FILE.npz`): its JSON, plots, grids and one-line errors."""
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffusion import experiment, solvers
from mc import Z4, assert_within
from samplers import cli
from samplers.sliced import sliced_wasserstein


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["diffusion", *argv])
    return exit_.value.code, capsys.readouterr()


def test_unknown_target_or_solver_is_a_usage_error_naming_the_choices(capsys, tmp_path):
    code, out = _exit(["--target", "foo", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "Traceback" not in out.err
    assert "'foo'" in out.err and all(t in out.err for t in ("ring", "grid", "gaussian", "file:PATH"))
    code, out = _exit(["--solvers", "euler,foo", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "'foo'" in out.err and "Traceback" not in out.err
    assert all(s in out.err for s in solvers.SOLVERS)
    for bad in (["--steps", "0"], ["--steps", "a"], ["--grid", "foo"], ["--num-samples", "1"],
                ["--target", "file:/no/such/file.npy"]):
        code, out = _exit([*bad, "--out", str(tmp_path / "r")], capsys)
        assert code == 2 and "error:" in out.err, bad
    assert not (tmp_path / "r").exists()


def test_help_lists_targets_solvers_and_grids(capsys):
    code, out = _exit(["--help"], capsys)
    text = out.out
    assert code == 0 and "wire" not in text and "into the CLI" not in text
    for name in ("ring", "gmm2d", "grid", "gaussian", "file:PATH", *solvers.SOLVERS,
                 *solvers.TIME_GRIDS, "noise floor", "seconds", "compile_seconds"):
        assert name in text, name


def _small(**kw):
    args = dict(num_samples=200, reference_steps=20, progress=False)
    args.update(kw)
    return experiment.run_experiment("ring", ["euler", "heun"], [2, 4], **args)


def test_sw_of_runs_and_floor_use_one_estimator_and_the_floor_is_an_exact_samplers_score():
    """Every reported SW is SW_2 to the same exact set with the same 200 directions; the
    floor is the mean of that score over fresh exact samples of the runs' size, so an
    independent estimate of what an exact sampler scores (fresh draws from another seed)
    agrees with it within Monte Carlo error (4 standard errors of the difference)."""
    res = _small()
    key = jax.random.key(0 + 1)
    with jax.enable_x64(True):
        exact = jnp.asarray(res["_exact"])
        for row in res["results"]:
            x = jnp.asarray(res["_samples"][(row["solver"], row["num_steps"])])
            assert row["sw"] == float(sliced_wasserstein(key, x, exact, num_projections=200))
        _, draw, _ = experiment.make_target("ring", experiment.VPSDE())
        rng = np.random.default_rng(12345)
        own = np.array([float(sliced_wasserstein(key, jnp.asarray(draw(rng, 200)), exact,
                                                 num_projections=200)) for _ in range(20)])
    floor, sd, r = res["sw_noise_floor"], res["sw_noise_floor_sd"], res["sw_noise_floor_draws"]
    assert r == 20 and sd > 0
    se = np.sqrt(sd ** 2 / r + own.var(ddof=1) / own.size)
    assert_within(own.mean(), se, floor, z=Z4, what="SW noise floor")
    assert np.isfinite(res["sw_reference"]) and res["mmd_bandwidth"] > 0


def test_seconds_are_the_compiled_runs_wall_time_and_compilation_is_its_own_field(monkeypatch):
    """A solver whose first call takes 0.5 s more (as compiling does) and every call 0.05 s:
    "seconds" is each run's wall time without the compilation, "compile_seconds" (first run
    of each solver) carries it, "metrics_seconds" the scoring."""
    real = solvers.solve_ode
    seen = set()

    def slow_ode(x_T, sde, score, *, solver, **kw):
        if solver != "rk4":
            time.sleep(0.05 + (0.5 if solver not in seen else 0.0))
            seen.add(solver)
        return real(x_T, sde, score, solver=solver, **kw)

    monkeypatch.setattr(solvers, "solve_ode", slow_ode)
    res = _small()
    rows = res["results"]
    for row in rows:
        assert 0.05 <= row["seconds"] < 0.5 and row["metrics_seconds"] > 0, row
    first = [row for row in rows if row["num_steps"] == 2]
    assert all(row["compile_seconds"] >= 0.4 for row in first)
    assert all("compile_seconds" not in row for row in rows if row["num_steps"] == 4)


def test_cli_run_writes_results_and_prints_the_floor_it_explains(tmp_path, capsys):
    import json

    out = tmp_path / "run"
    assert experiment.main(["--target", "ring", "--solvers", "euler", "--steps", "2,4",
                            "--num-samples", "100", "--reference-steps", "10",
                            "--floor-draws", "3", "--grid", "logsnr", "--out", str(out),
                            "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["time_grid"] == "logsnr" and len(res["results"]) == 2
    assert {"seconds", "metrics_seconds", "compile_seconds"} <= set(res["results"][0])
    text = capsys.readouterr().out
    assert "noise floor" in text and "exact sampler" in text and "+-" in text
    assert (out / "samples.png").exists() and (out / "convergence.png").exists()


def _images_npz(path, n=40):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 0, -0.5, 0.5) \
        + 0.1 * rng.standard_normal((n, 8, 8, 1))
    np.savez(path, images=images.astype(np.float32), labels=labels)
    return path


def test_data_run_on_an_npz_writes_every_figure_the_plots_and_the_grids(tmp_path, capsys):
    out = tmp_path / "run"
    data = _images_npz(tmp_path / "tiny.npz")
    assert cli.main(["diffusion", "--data", str(data), "--train-steps", "5", "--num-samples",
                     "20", "--solvers", "unipc_2", "--nfe", "5", "--model-channels", "8",
                     "--out", str(out),
                     "--checkpoint", str(tmp_path / "u.npz"), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (res["num_train"], res["num_held_out"], res["num_classes"]) == (33, 7, 2)
    metric = {"fd", "kid", "kid_stderr", "precision", "recall"}
    (row,) = res["results"]
    assert {"solver", "nfe_target", "num_steps", "nfe", "seconds", "out_of_range"} | metric \
        <= set(row)
    assert (row["solver"], row["num_steps"], row["nfe"]) == ("unipc_2", 5, 5)
    assert metric <= set(res["floor"]) and metric <= set(res["reference"])
    assert res["reference"]["nfe"] == 200 and res["best_solver_per_nfe"] == {"5": "unipc_2"}
    assert (out / "metrics.png").exists() and (out / "grids" / "unipc_2_nfe5.png").exists()
    assert (tmp_path / "u.npz").exists() and "real vs real" in capsys.readouterr().out


@pytest.mark.parametrize("bad, says", [
    (["--nfe", "0"], "--nfe"), (["--nfe", "1", "--solvers", "edm_heun"], "edm_heun"),
    (["--solvers", "ddpm"], "'ddpm'"), (["--model-channels", "8,8,8,8,8"], "model_channels"),
    (["--train-steps", "0"], "train_steps"), (["--guidance-scale", "nan"], "guidance_scale"),
    (["--target", "ring"], "--target"), (["--data", "no_such.npz"], "no_such.npz")])
def test_data_run_bad_values_are_one_line_usage_errors(bad, says, capsys, tmp_path):
    code, out = _exit(["--data", "digits", *bad, "--out", str(tmp_path / "r")], capsys)
    last = out.err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in out.err and last.startswith("samplers diffusion: error:")
    assert says in last, last
    assert not (tmp_path / "r").exists()
