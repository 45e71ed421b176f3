"""`samplers verify`: the table, its JSON, and checks that fail when a kernel is wrong.

The forced failure is a copy of ULA whose noise is sqrt(h) xi instead of sqrt(2 h) xi: its
stationary variance on N(0, s^2) is s^2 / (2 - h / s^2) (half the right one, up to O(h)), so
the ULA check, which compares with s^2 / (1 - h / (2 s^2)) within 5 standard errors, must
fail, and `samplers verify` must exit non-zero. Broken copies of SVGD (the repulsion term
doubled, halved or of the wrong sign) must fail the svgd check.

Every quick check of `samplers verify` runs in the default suite, one test each (about 30 s
in all on one core), and must pass; the whole quick table at seeds 0-9 runs in the slow suite
(every check's claim holds at every seed when the method is right).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import diffusion.verify
import vi.verify
from samplers import cli, langevin, stein, verify
from samplers.verify import federated as verify_federated
from samplers.verify import langevin as verify_langevin
from samplers.verify import sliced as verify_sliced
from samplers.verify import smc as verify_smc
from samplers.verify import stein as verify_stein
from samplers.base import EmptyInfo
from samplers.verify.langevin import ula_variance
from samplers.verify.stein import svgd_fixed_point


def half_noise_ula(logdensity_fn, step_size):
    """ULA with a deliberately wrong step: x' = x + h grad log p(x) + sqrt(h) xi."""
    alg = langevin.ula(logdensity_fn, step_size)
    grad = jax.grad(logdensity_fn)

    def step(key, state, batch=None):
        x = state.position
        noise = jax.random.normal(key, jnp.shape(x), jnp.result_type(x))
        return alg.init(x + step_size * grad(x) + jnp.sqrt(step_size) * noise), EmptyInfo()

    return alg._replace(step=step, kernel=None, params=None)  # run uses step, not the kernel


def test_verify_ula_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "verify.json"
    assert cli.main(["verify", "--method", "ula", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    (row,) = table["results"]
    assert row["method"] == "ula" and row["passed"] and row["error"] is None
    assert abs(row["measured"] - row["theory"]) > 0  # a measurement, not the closed form
    assert "1 of 1 passed" in capsys.readouterr().out


def test_a_wrong_kernel_fails_its_check_and_verify_exits_nonzero(tmp_path, capsys):
    def boom(key, full):
        raise RuntimeError("a check that cannot run")

    checks = [ula_variance(make=half_noise_ula),
              verify.Check("broken", "nobody", "none", boom, group="test")]
    md = tmp_path / "table.md"
    assert verify.main(["--markdown", str(md)], checks=checks) == 1
    text = capsys.readouterr().out
    assert "0 of 2 passed; failed: ula, broken" in text
    table = md.read_text()
    assert table.count("**fail**") == 2 and "RuntimeError: a check that cannot run" in table


def test_unknown_method_names_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["verify", "--method", "nuts"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no check named nuts" in err and "ula" in err


def test_no_registered_checks_is_a_failure(capsys):
    assert verify.main([], checks=[]) == 1
    assert "no guarantee checks are registered" in capsys.readouterr().err


def wrong_repulsion_svgd(factor):
    """SVGD whose repulsion term grad_{x_j} k(x_j, x_i) is multiplied by ``factor`` (the
    kernel's derivative scaled; its value, the driving term, is unchanged)."""
    def make(logdensity_fn, kernel, step_size):
        broken = kernel._replace(dprofile=lambda r2, h, f=kernel.dprofile: factor * f(r2, h))
        return stein.svgd(logdensity_fn, kernel=broken, step_size=step_size)

    return make


@pytest.mark.parametrize("factor", [2.0, 0.5, -1.0])
def test_svgd_with_a_wrong_repulsion_fails_its_check(factor):
    # x2 and x1/2: the run stops where the true field is O(1), and Newton on the check's
    # field moves the end point by O(1) (measured ~1 and ~0.8 against bounds ~1e-11 and
    # ~1e-7). x(-1): the particles collapse onto the mode, which is a zero of the true field
    # but a repelling one (spectral radius of I + eps J = 1 + eps 2 / h = 1.5).
    out = svgd_fixed_point(make=wrong_repulsion_svgd(factor)).run(jax.random.key(0), False)
    assert not out.passed, out
    if factor != -1.0:
        assert out.measured > 1e3 * out.theory, out


# every group's checks, called directly (the samplers.checks entry points name these functions)
GROUPS = {"langevin": verify_langevin.checks, "federated": verify_federated.checks,
          "stein": verify_stein.checks, "vi": vi.verify.checks, "smc": verify_smc.checks,
          "sliced": verify_sliced.checks, "diffusion": diffusion.verify.checks}
QUICK = [pytest.param(check, id=f"{group}-{check.method}")
         for group, checks in GROUPS.items() for check in checks()]


def test_every_registered_check_runs_in_the_suite():
    assert sorted(c.method for c in verify.all_checks()) == sorted(p.values[0].method
                                                                   for p in QUICK)


def test_every_check_cites_its_paper_by_bibliography_key():
    """The table's paper column starts with a key of docs/references.md ("Song2021", ...)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "references.md").read_text()
    keys = set(re.findall(r'<a id="([^"]+)"></a>', page))
    unknown = {c.method: c.paper for c in verify.all_checks()
               if re.split(r"[ ,;]", c.paper)[0] not in keys}
    assert not unknown, unknown


@pytest.mark.parametrize("check", QUICK)
def test_quick_check_passes(check):
    """Each check at its quick size, with the key ``samplers verify`` gives it (the whole
    quick table: about 30 s on one core)."""
    (result,) = verify.run_checks([check], seed=0, full=False)
    assert result.passed and result.error is None, result


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_the_whole_quick_verify_passes_at_every_seed(seed, tmp_path, capsys):
    out = tmp_path / "verify.json"
    status = cli.main(["verify", "--seed", str(seed), "--json", str(out)])
    failed = [r["method"] for r in json.loads(out.read_text())["results"] if not r["passed"]]
    assert status == 0 and not failed, (seed, failed, capsys.readouterr().out)
