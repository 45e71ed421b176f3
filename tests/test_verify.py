"""`samplers verify`: the table, its JSON, and a check that fails when the kernel is wrong.

The forced failure is a copy of ULA whose noise is sqrt(h) xi instead of sqrt(2 h) xi: its
stationary variance on N(0, s^2) is s^2 / (2 - h / s^2) (half the right one, up to O(h)), so
the ULA check, which compares with s^2 / (1 - h / (2 s^2)) within 5 standard errors, must
fail, and `samplers verify` must exit non-zero.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from samplers import cli, langevin, verify
from samplers.base import EmptyInfo
from samplers.verify.langevin import ula_variance


def half_noise_ula(logdensity_fn, step_size):
    """ULA with a deliberately wrong step: x' = x + h grad log p(x) + sqrt(h) xi."""
    alg = langevin.ula(logdensity_fn, step_size)
    grad = jax.grad(logdensity_fn)

    def step(key, state, batch=None):
        x = state.position
        noise = jax.random.normal(key, jnp.shape(x), jnp.result_type(x))
        return alg.init(x + step_size * grad(x) + jnp.sqrt(step_size) * noise), EmptyInfo()

    return alg._replace(step=step)


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
