"""Guarantee checks for the Stein samplers (Shi, Liu & Mackey, ICLR 2022, arXiv 2106.12506).

Default (fast) checks:
* Dirichlet on the simplex (dense alpha): MSVGD and SVMD particle means and variances are at
  least as accurate as n i.i.d. exact draws are 99 % of the time (the tolerance is that
  quantile, computed here from exact numpy draws); every particle stays strictly inside the
  simplex at every step; the energy distance to exact draws decreases.
* SVGD on a Gaussian: the KSD of the particles decreases, and from this test's start the
  fixed point matches a long run of the exact SVGD ODE dx/dt = phi(x), integrated by scipy
  on an independent dense implementation of phi (``samplers.verify.stein``). That the two
  reach the same zero is a property of this start, not of every start (the target's
  reflections map zeros of phi to zeros; ``samplers verify``'s seed 0 is a start where they
  differ): the claim that holds for every start, that the run ends at a stable zero of
  the independent field, is ``samplers verify``'s svgd check, run by tests/test_verify.py.

Slow studies (``pytest -m slow``): the paper's sparse Dirichlet (D = 20), SVNG against SVGD
on an ill-conditioned Bayesian logistic regression (iterations to a test log-likelihood),
and peak memory of a blocked step at n = 20,000 particles in d = 10.
"""
from __future__ import annotations

import resource
import time

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from samplers import diagnostics, stein
from samplers.stein import kernels, mirror
from samplers.targets import dirichlet
from samplers.verify.stein import (iid_moment_quantiles, matched, run_duals, simplex_log_theta,
                                     svgd_field, svgd_ode_end, svng_svgd_iterations)

ALPHA = np.array([4.0, 2.0, 3.0, 1.5])
N = 50


@pytest.mark.parametrize("method", ["msvgd", "svmd"])
def test_dirichlet_moments_interior_and_energy_distance(method):
    target = dirichlet(jnp.asarray(ALPHA))
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.dirichlet(np.ones(4), N)[:, :-1], jnp.float32)
    mm = mirror.simplex_entropic()
    if method == "msvgd":   # the theory's eps (SGD on eta)
        alg, steps = stein.msvgd(target.logdensity_fn, mm, step_size=0.1), 600
    else:                   # the reference's adaptive scheme (RMSprop 0.1), threshold 0.998
        alg, steps = stein.svmd(target.logdensity_fn, mm, optimizer=stein.rmsprop(0.1),
                                threshold=0.998), 300
    final, duals = run_duals(alg, x0, steps)
    duals = np.asarray(duals, np.float64)

    # strictly inside at every step: finite eta, and every one of the K coordinates
    # (from log_softmax, float64) finite, and the float32 theta the sampler reports > 0
    assert np.all(np.isfinite(duals))
    log_theta = simplex_log_theta(duals)
    assert np.all(np.isfinite(log_theta))
    theta = np.asarray(final.position)
    assert theta.min() > 0 and (1.0 - theta.sum(1)).min() > 0

    # moments: at least as good as the 99 % quantile of n i.i.d. exact draws
    tol_mean, tol_var, mean, var = iid_moment_quantiles(np.random.default_rng(0), ALPHA, N)
    x = theta.astype(np.float64)
    assert np.abs(x.mean(0) - mean).max() <= tol_mean, (x.mean(0), mean, tol_mean)
    assert np.abs(x.var(0) / var - 1).max() <= tol_var, (x.var(0), var, tol_var)

    # energy distance to 1,000 exact draws decreases along the run
    exact = np.asarray(target.sample(jax.random.key(1), 1000), np.float64)
    checkpoints = [0, steps // 10, steps - 1]
    eds = [float(diagnostics.energy_distance(np.exp(log_theta[t, :, :-1]), exact))
           for t in checkpoints]
    ed0 = float(diagnostics.energy_distance(np.asarray(x0, np.float64), exact))
    assert ed0 > eds[0] > eds[1] > eds[2], (ed0, eds)


def test_svgd_ksd_decreases_and_fixed_point_matches_the_ode():
    prec = np.array([1.0, 4.0])

    def logp(x):
        return -0.5 * jnp.sum(jnp.square(x - 1.0) * prec)

    def score(x):
        return -(x - 1.0) * prec

    h, eps, steps = 1.0, 0.25, 10_000
    with jax.enable_x64(True):
        x0 = np.random.default_rng(7).normal(size=(10, 2)) * 2.0 - 1.0
        alg = stein.svgd(logp, kernel=kernels.rbf(h), step_size=eps)
        final, path = run_duals(alg, jnp.asarray(x0), steps)
        path = np.asarray(path)
        ksds = [float(diagnostics.ksd(p, lambda v: -(v - 1.0) * jnp.asarray(prec)))
                for p in (x0, path[9], path[99], path[-1])]
    assert ksds[0] > ksds[1] > ksds[2] > ksds[3], ksds

    # the exact flow, run to t = 3000 (its slowest mode decays like exp(-0.008 t) here)
    with jax.enable_x64(True):
        fixed = svgd_ode_end(x0, h, score, 3000.0)
        ours = np.asarray(final.position)
        # both runs have reached a fixed point (phi = 0 to 1e-10) ...
        for point in (fixed, ours):
            assert np.abs(np.asarray(svgd_field(jnp.asarray(point), h, score))).max() < 1e-10
    # ... and, from this start, it is the same set of points (particles are exchangeable:
    # with eps = 0.25 the discrete run ends at a relabelling of the ODE's end point; with
    # eps = 0.05 and 40,000 steps it ends at the same labelled point, 5e-9 away -- measured,
    # not asserted here).
    assert np.linalg.norm(ours - matched(ours, fixed), axis=1).max() < 1e-8


# --------------------------------------------------------------------------- slow studies

SPARSE = np.array([90.1, 5.1, 5.1] + [0.1] * 17)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["msvgd", "svmd"])
def test_sparse_dirichlet_d20(method):
    """The paper's sparse Dirichlet (D = 20), reference settings: n = 50 particles started
    from Dirichlet(5, ..., 5) (the reference's q0), IMQ/median, RMSprop 0.1, 500 steps,
    float64. Measured: ED to 1,000 exact draws at steps 20/100/200/500 (the note's 3-seed
    means: MSVGD 0.281/0.0031/0.0024/0.0024, SVMD 1.219/0.063/0.010/0.0004; ours, seeds
    0/1/2, SVMD at step 500: 0.00031/0.00032/0.00058, equal to 5 digits to a direct port of
    the reference's einsum ``svmd_update``).

    The start matters for SVMD: from uniform Dirichlet(1, ..., 1) draws (seed 0), ~11 of the
    50 particles, those whose heavy coordinates start near 0, stay at theta_1 ~ 0.6-0.7
    (8 sd from the mean) for 2,000 steps (ED 0.053 at step 500, 0.036 at 2,000, the
    reference port identical). Their SVMD direction is ~1e5 where their dual score is ~20:
    it is carried by hess psi = diag(1/theta) + 11^T/theta_D at other particles whose sparse
    coordinates are 1e-8..1e-5, through the non-local square-root kernel; its sign flips
    from step to step, and RMSprop turns that into +-lr steps with no drift."""
    with jax.enable_x64(True):
        target = dirichlet(jnp.asarray(SPARSE))
        x0 = jnp.asarray(np.random.default_rng(0).dirichlet(np.full(20, 5.0), 50)[:, :-1])
        mm = mirror.simplex_entropic()
        dual = stein.dirichlet_dual_logdensity(SPARSE)
        make = stein.msvgd if method == "msvgd" else stein.svmd
        extra = {} if method == "msvgd" else {"threshold": 0.998}
        alg = make(target.logdensity_fn, mm, optimizer=stein.rmsprop(0.1),
                   dual_logdensity_fn=dual, **extra)
        _, duals = run_duals(alg, x0, 500)
        duals = np.asarray(duals)
        exact = np.asarray(target.sample(jax.random.key(1), 1000))
    log_theta = simplex_log_theta(duals)
    assert np.all(np.isfinite(log_theta))
    eds = {t: float(diagnostics.energy_distance(np.exp(log_theta[t - 1, :, :-1]), exact))
           for t in (20, 100, 200, 500)}
    # the floor: ED of 50 i.i.d. exact draws to the same 1,000 (note A.9-2: 0.0012 +- 0.0005)
    iid = np.random.default_rng(3).dirichlet(SPARSE, (200, 50))[..., :-1]
    with jax.enable_x64(True):
        floor = np.asarray(jax.vmap(lambda y: diagnostics.energy_distance(y, exact))(iid))
    x = np.exp(log_theta[-1, :, :-1])
    a0 = SPARSE.sum()
    mean = SPARSE[:-1] / a0
    var = SPARSE[:-1] * (a0 - SPARSE[:-1]) / (a0**2 * (a0 + 1))
    print(f"\n{method}: ED {eds}; max|mean err| {np.abs(x.mean(0) - mean).max():.4g}; "
          f"var ratio-1 (first 3) {np.round(x.var(0)[:3] / var[:3] - 1, 3)}; "
          f"min log theta {log_theta.min():.1f}")
    print(f"i.i.d. floor: mean {floor.mean():.4g}, median {np.median(floor):.4g}")
    # both samplers come within 5x of the i.i.d. floor and the ED falls by two orders of
    # magnitude from step 20's; SVMD beats the median set of 50 i.i.d. draws (note A.9-2)
    assert eds[500] < 5 * floor.mean() and eds[500] < eds[20] / 50
    if method == "svmd":
        assert eds[500] < np.median(floor)


@pytest.mark.slow
def test_svng_reaches_test_loglik_in_fewer_iterations_than_svgd():
    """Paper's claim (section 5.3): SVNG reaches a given test log-likelihood in fewer
    iterations than SVGD on a Bayesian logistic regression. Proxy of note A.9-5 (see
    samplers.verify.stein.svng_svgd_iterations): d = 6 ill-conditioned features, 20
    particles, exact Fisher + I metric, SVNG lr 1; SVGD at each lr of {1e-4, 3e-5, 1e-5}
    (larger ones oscillate). Goal: the MAP plug-in test log-likelihood less 0.01 (our
    synthetic data differ from the note's, so its -0.48 does not transfer)."""
    svng_hit, svgd_hits, goal, finals = svng_svgd_iterations(np.random.default_rng(0))
    print(f"\nSVNG steps to test loglik {goal}: {svng_hit}; SVGD: {svgd_hits} (finals {finals})")
    best = min([h for h in svgd_hits.values() if h is not None], default=None)
    assert svng_hit is not None
    assert best is None or svng_hit < best


@pytest.mark.slow
def test_blocked_memory_at_20000_particles():
    """n = 20,000 particles in d = 10: one jitted blocked SVGD/MSVGD step. A dense n x n
    float32 kernel matrix alone is 1.6 GB (and the dense (n, n, d) gradient tensor 16 GB);
    the blocked step's peak resident memory must stay far below one such matrix."""
    n, d = 20_000, 10
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (KiB units)
    x0 = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(d + 1), n)[:, :d], jnp.float32)
    target = dirichlet(jnp.full(d + 1, 2.0))
    for alg in (stein.svgd(lambda x: -0.5 * jnp.sum(x * x), step_size=0.1, block_size=256),
                stein.msvgd(target.logdensity_fn, mirror.simplex_entropic(), step_size=0.1,
                            block_size=256)):
        step = jax.jit(alg.step)
        state = alg.init(x0)
        jax.block_until_ready(step(None, state))
        t0 = time.perf_counter()
        new, _ = jax.block_until_ready(step(None, state))
        seconds = time.perf_counter() - t0
        assert np.all(np.isfinite(np.asarray(new.dual)))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"\n{alg.name} n={n} d={d}: step {seconds:.2f} s; peak RSS {peak:.2f} GiB "
              f"(process start of test {before:.2f} GiB)")
    assert peak - before < 1.0
