"""Behaviour of the run driver: reproducibility, chains, pytrees, bad input, non-finite
chains, checkpoint/resume, progress, minibatches and the ArviZ export."""
import importlib
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from checkpointing import crash_on_save
from mc import assert_within

run_module = importlib.import_module("samplers.run")  # the module, not samplers.run()


def logdensity(x):
    return -0.5 * jnp.sum(x ** 2)


ULA = samplers.ula(logdensity, 0.1)
MALA = samplers.mala(logdensity, 0.5)


def _run(alg=MALA, key=0, **kw):
    kw = {"num_chains": 3, **kw}
    return samplers.run(jax.random.key(key), alg, jnp.zeros(2), kw.pop("num_steps", 40), **kw)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_same_key_same_draws_and_chains_differ():
    a, b = _run(), _run()
    assert _leaves_equal(a, b)
    x = np.asarray(a.positions)
    assert x.shape == (3, 40, 2)
    assert not np.array_equal(x[0], x[1])
    assert not np.array_equal(x, np.asarray(_run(key=1).positions))


def test_thinning_and_warmup_give_the_draws_of_the_long_run():
    full = _run(alg=ULA, num_steps=40)
    thinned = _run(alg=ULA, num_steps=40, thin=4)
    np.testing.assert_array_equal(np.asarray(thinned.positions),
                                  np.asarray(full.positions)[:, 3::4])
    burned = _run(alg=ULA, num_steps=30, num_warmup=10)
    np.testing.assert_array_equal(np.asarray(burned.positions), np.asarray(full.positions)[:, 10:])
    kept = _run(alg=ULA, num_steps=30, num_warmup=10, keep_warmup=True)
    np.testing.assert_array_equal(np.asarray(kept.warmup_positions),
                                  np.asarray(full.positions)[:, :10])
    for name in ("lp", "step_size", "diverging"):
        np.testing.assert_array_equal(kept.warmup_stats[name], full.stats[name][:, :10])
    assert _leaves_equal(kept.positions, burned.positions) and burned.warmup_positions is None


def test_kept_warmup_shows_the_adaptation_and_goes_to_arviz():
    trace = _run(num_steps=20, num_warmup=150, keep_warmup=True)
    steps = np.asarray(trace.warmup_stats["step_size"])
    assert steps.shape == (3, 150) and np.all(steps[:, 0] == 0.5)  # the step it was given
    assert not np.all(steps == 0.5)  # then dual averaging moved it
    idata = trace.to_arviz()
    assert idata.warmup_posterior["x"].shape == (3, 150, 2)
    assert "acceptance_rate" in idata.warmup_sample_stats


def test_kernels_jit_and_vmap():
    state = MALA.init(jnp.zeros(2))
    step = jax.jit(MALA.step)
    s1, info = step(jax.random.key(0), state)
    assert s1.position.shape == (2,) and info.acceptance_rate.shape == ()
    states = jax.vmap(MALA.init)(jnp.zeros((5, 2)))
    s5, infos = jax.vmap(step)(jax.random.split(jax.random.key(0), 5), states)
    assert s5.position.shape == (5, 2) and infos.is_accepted.shape == (5,)
    grad = jax.grad(lambda x: MALA.step(jax.random.key(0), MALA.init(x))[0].logdensity)(jnp.ones(2))
    assert np.all(np.isfinite(grad))


def test_pytree_positions_and_arviz_export():
    def lp(p):
        return -0.5 * (jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2) / 4)

    x0 = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    trace = samplers.run(jax.random.key(0), samplers.mala(lp, 0.3), x0, 20, num_chains=2,
                         num_warmup=10)
    assert trace.positions["a"].shape == (2, 20, 3) and trace.positions["b"].shape == (2, 20, 2, 2)
    idata = trace.to_arviz()
    assert set(idata.posterior.data_vars) == {"a", "b"}
    assert {"lp", "acceptance_rate", "diverging", "step_size", "is_accepted"} <= set(
        idata.sample_stats.data_vars)
    assert idata.posterior["b"].shape == (2, 20, 2, 2)
    np.testing.assert_allclose(idata.sample_stats["lp"].values,
                               jax.vmap(jax.vmap(lp))(trace.positions), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", [samplers.ula, samplers.mala, samplers.underdamped])
@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), "big"])
def test_bad_step_size_is_named(factory, bad):
    with pytest.raises((ValueError, TypeError), match="step_size"):
        factory(logdensity, bad)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(TypeError, match="scalar log-density"):
        samplers.run(jax.random.key(0), samplers.ula(lambda x: -0.5 * x ** 2, 0.1), jnp.zeros(2), 10)
    with pytest.raises(ValueError, match="initial_position must be finite"):
        samplers.run(jax.random.key(0), ULA, jnp.array([0.0, jnp.nan]), 10)
    with pytest.raises(ValueError, match="leading axis of size num_chains=3"):
        samplers.run(jax.random.key(0), ULA, jnp.zeros((2, 2)), 10, num_chains=3, chain_axis=True)
    with pytest.raises(ValueError, match="num_steps must be a multiple of thin"):
        _run(num_steps=10, thin=3)
    with pytest.raises(ValueError, match="num_chains must be an integer >= 1"):
        _run(num_chains=0)
    with pytest.raises(ValueError, match="log-density -inf"):
        samplers.run(jax.random.key(0),
                     samplers.ula(lambda x: jnp.where(x[0] > 0, -jnp.sum(x), -jnp.inf), 0.1), jnp.array([-1.0, 1.0]), 10)
    with pytest.raises(TypeError, match="algorithm must be a samplers.Algorithm"):
        samplers.run(jax.random.key(0), logdensity, jnp.zeros(2), 10)
    with pytest.raises(ValueError, match="on_nonfinite"):
        _run(on_nonfinite="ignore")


def test_chain_that_turns_nonfinite_is_named_or_flagged():
    # ULA diverges for h > 2 / beta (no hidden clipping); chain 1 starts farther out
    alg = samplers.ula(lambda x: -0.5 * jnp.sum(x ** 2), 2.5)
    x0 = jnp.array([[1e-30, 0.0], [1.0, 1.0]])
    with pytest.raises(samplers.NonFiniteError, match=r"chain 1 turned non-finite .* at step \d+") as err:
        samplers.run(jax.random.key(0), alg, x0, 2000, num_chains=2, chain_axis=True,
                     checkpoint=None)
    flagged = samplers.run(jax.random.key(0), alg, x0, 2000, num_chains=2, chain_axis=True,
                           on_nonfinite="flag")
    step = int(flagged.nonfinite_step[1])
    assert step > 0 and f"step {step}" in str(err.value)
    # thinned-out steps are guarded step by step, kept ones from their records: same steps
    thinned = samplers.run(jax.random.key(0), alg, x0, 2000, num_chains=2, chain_axis=True,
                           thin=4, on_nonfinite="flag")
    np.testing.assert_array_equal(thinned.nonfinite_step, flagged.nonfinite_step)
    diverging = np.asarray(flagged.stats["diverging"])
    assert diverging[1, step:].all() and not diverging[1, :step].any()
    first = np.asarray(flagged.nonfinite_step)  # chain 0 follows later (h > 2 / beta)
    with pytest.warns(RuntimeWarning, match=rf"chains \[0, 1\] turned non-finite .* at steps "
                                            rf"\[{first[0]}, {first[1]}\]"):
        flagged.to_arviz()


def test_checkpoint_resume_is_bit_identical(tmp_path, monkeypatch):
    path = str(tmp_path / "run.npz")
    reference = _run(num_steps=60, num_warmup=20, thin=2)
    kwargs = dict(num_steps=60, num_warmup=20, thin=2, checkpoint=path, checkpoint_every=10)

    saves = crash_on_save(monkeypatch, run_module, path, 4)  # a partial file, no rename
    with pytest.raises(KeyboardInterrupt):
        _run(**kwargs)
    monkeypatch.undo()
    assert saves == [0, 5, 10, 15] and os.path.exists(path)
    resumed = _run(**kwargs)  # resumes from the last good checkpoint (10 draws)
    assert _leaves_equal(resumed.positions, reference.positions)
    assert _leaves_equal(resumed.stats, reference.stats)
    kept = dict(kwargs, checkpoint=str(tmp_path / "kept.npz"), keep_warmup=True)
    _run(**kept)
    again = _run(**kept)  # read back whole from its checkpoint, warm-up draws included
    assert _leaves_equal(again.positions, reference.positions)
    assert _leaves_equal(again.warmup_positions, _run(num_steps=60, num_warmup=20, thin=2,
                                                      keep_warmup=True).warmup_positions)
    with pytest.raises(ValueError, match="written by a different run"):
        _run(key=7, **kwargs)


def test_progress_bar_inside_jit(monkeypatch):
    import tqdm.auto

    out = io.StringIO()
    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, file=out, **k)
            bars.append(self)

    updates = []
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    monkeypatch.setattr(run_module, "_report", lambda *a: updates.append(a))
    _run(num_steps=1500, num_warmup=500, progress=True)
    jax.effects_barrier()
    # one host callback per chunk of 2000 // 20 = 100 steps: 5 in warm-up, 15 in sampling
    assert sorted(int(s) for _, s in updates) == [100 * k for k in range(1, 21)]
    updates.clear()
    _run(num_steps=150, num_warmup=50, progress=True)
    jax.effects_barrier()  # a short run: chunks of 100 steps, not 200 // 20
    assert sorted(int(s) for _, s in updates) == [50, 150, 200]
    monkeypatch.undo()
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    _run(num_steps=100, num_warmup=50, progress=True)
    jax.effects_barrier()
    assert bars[-1].total == 150 and bars[-1].n == 150
    assert "150/150" in out.getvalue()


def test_a_run_without_progress_bar_compiles_no_host_callback():
    options = run_module._Options(1, False, 10, None, None, False, "window", None, None, 0)
    args = (run_module._static(MALA), jax.random.key(0), jnp.zeros(2), MALA.params, None,
            np.int32(0))
    hlo = run_module._whole.lower(*args, options=options, num_draws=5, thin=1).as_text()
    assert "callback" not in hlo
    with_bar = options._replace(every=5)
    hlo = run_module._whole.lower(*args, options=with_bar, num_draws=5, thin=1).as_text()
    assert "callback" in hlo


def test_minibatches_are_fresh_per_step_and_chain():
    data = jnp.arange(50.0)
    seen = []

    def grad(x, batch):
        seen.append(batch.shape)
        return -x + 0.0 * jnp.sum(batch)

    trace = samplers.run(jax.random.key(0), samplers.sgld(grad, 0.01), jnp.zeros(1), 20,
                         num_chains=2, batches=samplers.data.minibatches(data, 5))
    assert seen[0] == (5,) and trace.stats["step_size"].shape == (2, 20)
    batches = samplers.data.minibatches(data, 5)
    draws = jax.vmap(batches.sample)(jax.random.split(jax.random.key(0), 2000))
    assert all(len(set(np.asarray(b).tolist())) == 5 for b in draws[:50])  # no repeats
    counts = np.bincount(np.asarray(draws).ravel().astype(int), minlength=50)
    expected = 2000 * 5 / 50  # each index equally likely; binomial sd sqrt(n p (1 - p))
    assert_within(counts, np.sqrt(expected * (1 - 5 / 50)), expected, what="index counts")
    with pytest.raises(ValueError, match="batch_size must be <= the number of data points 50"):
        samplers.data.minibatches(data, 51)
    with pytest.raises(ValueError, match="leading datum axis"):
        samplers.data.minibatches((jnp.zeros(3), jnp.zeros(4)), 2)
