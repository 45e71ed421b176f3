"""Sliced Wasserstein estimators and flows (samplers.sliced; Nguyen & Ho, ICLR 2024).

Exact: POT's values on the same directions, closed forms (isotropic and proportional
Gaussians, translates, a Dirac target, full orthogonal blocks), scipy's 1-d W_1.
Behaviour: unbiasedness over keys within standard errors computed here, gradients against
finite differences, batching, reproducibility, bad input, the flow under samplers.run.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import samplers
from samplers import sliced
from mc import Z, se_mean


def whitened(rng, n, d):
    """n points in R^d with sample mean exactly 0 and (1/n) covariance exactly I."""
    z = rng.standard_normal((n, d))
    z -= z.mean(0)
    chol = np.linalg.cholesky(z.T @ z / n)
    return np.linalg.solve(chol, z.T).T


def over_keys(x, y, num_keys, seed=0, **kwargs):
    """The estimate for ``num_keys`` independent keys, one compiled vmap; numpy fields."""
    keys = jax.random.split(jax.random.key(seed), num_keys)
    fn = jax.jit(jax.vmap(lambda k: sliced.sliced_wasserstein_estimate(k, x, y, **kwargs)))
    return jax.tree.map(np.asarray, fn(keys))


def shapes_2d(rng, n):
    """Two different non-Gaussian 2-d shapes: a noisy ring and a uniform square."""
    angle = rng.uniform(0, 2 * np.pi, n)
    ring = np.stack([np.cos(angle), np.sin(angle)], 1) * (1.5 + 0.1 * rng.standard_normal((n, 1)))
    square = rng.uniform(-1.0, 1.0, (n, 2)) * np.array([2.0, 0.5])
    return ring.astype(np.float32), square.astype(np.float32)


# ------------------------------------------------------------------------------ exact

@pytest.mark.parametrize("p", [1, 2])
def test_matches_pot_on_the_same_directions(p):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x, y = rng.standard_normal((40, 3)), 2 * rng.standard_normal((55, 3)) + 1
        a, b = rng.uniform(size=40), rng.uniform(size=55)
        theta = sliced.directions(jax.random.key(1), 25, 3, dtype=jnp.float64)
        proj = np.asarray(theta).T
        cases = [((x, y[:40], None, None), (x, y[:40], None, None)),           # sorting path
                 ((x, y, None, None), (x, y, None, None)),                     # unequal sizes
                 ((x, y, a, b), (x, y, a / a.sum(), b / b.sum()))]             # weights
        for (xo, yo, ao, bo), (xp, yp, ap, bp) in cases:
            ours = sliced.sliced_wasserstein(None, xo, yo, directions=theta, p=p, weights_x=ao,
                                             weights_y=bo)
            peer = ot.sliced_wasserstein_distance(xp, yp, ap, bp, projections=proj, p=p)
            np.testing.assert_allclose(float(ours), peer, rtol=1e-12)


def test_wasserstein_1d_matches_scipy_with_weights():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        u, v = rng.standard_normal(30), rng.exponential(size=17)
        a, b = rng.uniform(size=30), rng.uniform(size=17)
        ours = sliced.wasserstein_1d(u, v, a, b, p=1)
        np.testing.assert_allclose(float(ours), scipy.stats.wasserstein_distance(u, v, a, b),
                                   rtol=1e-12)


def test_isotropic_gaussians_closed_form_all_estimators():
    """SW_2^2(N(m1, s1^2 I), N(m2, s2^2 I)) = |m1 - m2|^2/d + (s1 - s2)^2.

    Independent clouds differ from their populations by O(n^-1/2) (shared note: 3.1993 vs
    3.2208 at n = 20,000, far beyond the estimator's SE 0.0002), so the closed form is checked
    on clouds whose empirical measures *are* exact: y = m2 + s2 z, x = m1 + s1 z with z
    whitened (sample mean 0, covariance I), for which every projection is an affine image of
    the other and the closed form holds for the clouds themselves.
    """
    rng = np.random.default_rng(2)
    d, m1, m2, s1, s2 = 4, np.array([1.0, -1.0, 0.5, 2.0]), np.zeros(4), 1.0, 2.0
    exact = np.sum((m1 - m2) ** 2) / d + (s1 - s2) ** 2
    with jax.enable_x64(True):
        z = whitened(rng, 500, d)
        x, y = m1 + s1 * z, m2 + s2 * z
        plain = sliced.sliced_wasserstein_estimate(jax.random.key(3), x, y, num_projections=200)
        assert abs(float(plain.value) - exact) <= Z * float(plain.stderr)
        assert float(plain.stderr) > 0
        for cv in ("lower", "upper"):
            # here W(theta) = C_low(theta) + (s1 - s2)^2: affine in both variates, so the
            # least-squares coefficient makes the estimate exact (the shared note's B.3)
            est = sliced.sliced_wasserstein_estimate(jax.random.key(3), x, y,
                                                     num_projections=200, control_variate=cv)
            np.testing.assert_allclose(float(est.value), exact, rtol=1e-10)
            assert float(est.stderr) < 1e-8 * exact


def test_proportional_covariances_within_reported_standard_errors():
    """S2 = c^2 S1: SW_2^2 = |dm|^2/d + (1 - c)^2 tr S1 / d; W is not affine in either variate
    alone, so every estimator has a genuine standard error; all must cover the truth."""
    rng = np.random.default_rng(4)
    d, c = 3, 0.4
    A = np.array([[2.0, 0.0, 0.0], [0.7, 0.5, 0.0], [-0.3, 0.2, 1.2]])
    m1, m2 = np.array([0.5, 0.0, -1.0]), np.array([-0.5, 1.0, 0.0])
    with jax.enable_x64(True):
        z = whitened(rng, 400, d) @ A.T
        x, y = m1 + z, m2 + c * z
        exact = np.sum((m1 - m2) ** 2) / d + (1 - c) ** 2 * np.trace(A @ A.T) / d
        plain = sliced.sliced_wasserstein_estimate(jax.random.key(5), x, y, num_projections=400)
        for cv, coef in ((None, "ols"), ("lower", "crossfit"), ("upper", "ols"),
                         ("upper", "crossfit")):
            est = sliced.sliced_wasserstein_estimate(jax.random.key(5), x, y,
                                                     num_projections=400, control_variate=cv,
                                                     coefficient=coef)
            assert abs(float(est.value) - exact) <= Z * float(est.stderr), (cv, coef)
            if cv == "upper":
                assert float(est.stderr) < float(plain.stderr)


def test_translates_and_dirac_target_are_exact():
    """nu = mu + s: W_l = (theta^T s)^2 = C_low (p = 2), SW_2^2 = |s|^2/d;
    nu = delta_c: W_l = C_up, SW_2^2 = (|m - c|^2 + tr S)/d (shared note, B.3)."""
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        x = rng.exponential(size=(60, 6)) ** 2                # far from Gaussian
        s = np.array([1.0, -2.0, 0.5, 3.0, 0.0, 1.5])
        for coef in ("ols", "crossfit"):
            est = sliced.sliced_wasserstein_estimate(jax.random.key(7), x, x + s,
                                                     num_projections=8, control_variate="lower",
                                                     coefficient=coef)
            np.testing.assert_allclose(float(est.value), s @ s / 6, rtol=1e-10)
            assert float(est.variance_factor) > 1e10  # Var(residuals) = 0 up to round-off
        c = np.full((1, 6), 0.3)
        est = sliced.sliced_wasserstein_estimate(jax.random.key(8), x, c, num_projections=5,
                                                 control_variate="upper")
        expected = (np.sum((x.mean(0) - c[0]) ** 2) + np.sum(x.var(0))) / 6
        np.testing.assert_allclose(float(est.value), expected, rtol=1e-10)
        # the reference coefficient is not exact for translates (biased at small L)
        ref = sliced.sliced_wasserstein_estimate(jax.random.key(7), x, x + s, num_projections=8,
                                                 control_variate="lower", coefficient="reference")
        assert abs(float(ref.value) - s @ s / 6) > 1e-6


def test_orthogonal_blocks_integrate_quadratics_exactly():
    """A full block of orthonormal directions has sum theta theta^T = I, so the plain estimate
    of a translate is exact, and mean C = E C makes a control variate change nothing."""
    rng = np.random.default_rng(9)
    with jax.enable_x64(True):
        x = rng.standard_normal((50, 4))
        s = np.array([2.0, -1.0, 0.0, 1.0])
        est = sliced.sliced_wasserstein_estimate(jax.random.key(1), x, x + s,
                                                 num_projections=12, scheme="orthogonal")
        np.testing.assert_allclose(float(est.value), s @ s / 4, rtol=1e-10)
        y = rng.exponential(size=(50, 4))
        plain = sliced.sliced_wasserstein_estimate(jax.random.key(2), x, y, num_projections=12,
                                                   scheme="orthogonal")
        cv = sliced.sliced_wasserstein_estimate(jax.random.key(2), x, y, num_projections=12,
                                                scheme="orthogonal", control_variate="upper")
        np.testing.assert_allclose(float(cv.value), float(plain.value), rtol=1e-10)
        theta = np.asarray(sliced.directions(jax.random.key(3), 8, 4, "orthogonal", jnp.float64))
        np.testing.assert_allclose(theta[:4] @ theta[:4].T, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("scheme", ["mc", "qmc", "orthogonal"])
def test_p1_translate_unbiased_over_keys(scheme):
    """p = 1 translate: W_l = |theta^T s|, SW_1 = |s| E|theta_1|,
    E|theta_1| = Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))."""
    rng = np.random.default_rng(10)
    d = 5
    x = rng.standard_normal((32, d)).astype(np.float32)
    s = np.array([1.0, 2.0, -1.0, 0.0, 0.5], np.float32)
    exact = np.linalg.norm(s) * math.exp(scipy.special.gammaln(d / 2)
                                         - scipy.special.gammaln((d + 1) / 2)) / math.sqrt(math.pi)
    values = over_keys(x, x + s, 400, p=1, num_projections=10, scheme=scheme).value
    se = se_mean(values)
    assert abs(values.mean() - exact) <= Z * se + 1e-5 * exact, (values.mean(), exact, se)
    if scheme == "orthogonal":  # two full orthogonal blocks are less noisy than i.i.d. ones
        # (randomised Halton gains only x1.3 here, at L = 10 in d = 5: not asserted)
        mc = over_keys(x, x + s, 400, p=1, num_projections=10, scheme="mc").value
        assert mc.var() / values.var() > 1.6  # > 1 beyond a 5-SE sampling fluctuation


def test_control_variates_unbiased_and_variance_reducing_over_keys():
    """Cross-fitted CVs are exactly unbiased: paired with the plain estimate on the same
    directions their difference has mean 0 (within its SE). The spread over keys shrinks
    where W and C are correlated: the lower CV on shifted clouds, the upper CV on a ring
    against an elongated blob (on some pairs the upper CV does not help at L = 10 -- see
    tests/theory/test_sliced_guarantees.py)."""
    rng = np.random.default_rng(11)
    ring, square = shapes_2d(rng, 200)
    blob = (rng.standard_normal((200, 2)) * np.array([1.0, 0.3])).astype(np.float32)
    shifted = square + np.array([1.0, 0.5], np.float32)
    bound = math.exp(-Z * math.sqrt(4 / 299))  # log variance ratio from 300 draws: sd ~ sqrt(4/299)
    for cv, (x, y), coef in (("lower", (ring, shifted), "crossfit"), ("upper", (ring, blob), "ols")):
        fair = over_keys(x, y, 300, num_projections=10, control_variate=cv, coefficient="crossfit")
        diff = fair.value - fair.plain
        assert abs(diff.mean()) <= Z * se_mean(diff), cv
        est = fair if coef == "crossfit" else over_keys(x, y, 300, num_projections=10,
                                                         control_variate=cv, coefficient=coef)
        ratio = est.plain.var() / est.value.var()
        assert ratio * bound > 1.0, (cv, ratio)


# -------------------------------------------------------------------------- behaviour

def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(12)
    with jax.enable_x64(True):
        x, y = rng.standard_normal((20, 3)), rng.exponential(size=(25, 3))
        key = jax.random.key(13)
        for cv in ("upper",):  # the CV estimate contains the plain one (W_l) and the moments
            f = lambda x: sliced.sliced_wasserstein(key, x, y, num_projections=16,  # noqa: E731
                                                    control_variate=cv)
            grad = np.asarray(jax.grad(f)(x))
            direction = rng.standard_normal(x.shape)
            h = 1e-6
            fd = (float(f(x + h * direction)) - float(f(x - h * direction))) / (2 * h)
            np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-6)


def test_batched_pairs_equal_one_at_a_time():
    rng = np.random.default_rng(14)
    xs = rng.standard_normal((3, 30, 2)).astype(np.float32)
    ys = rng.standard_normal((3, 20, 2)).astype(np.float32) + 1
    w = rng.uniform(size=(3, 20)).astype(np.float32)
    key = jax.random.key(15)
    batch = sliced.sliced_wasserstein_estimate(key, xs, ys, num_projections=8, weights_y=w,
                                               control_variate="upper")
    assert batch.value.shape == (3,)
    for i in range(3):
        one = sliced.sliced_wasserstein_estimate(key, xs[i], ys[i], num_projections=8,
                                                 weights_y=w[i], control_variate="upper")
        np.testing.assert_allclose(float(batch.value[i]), float(one.value), rtol=1e-5)


def test_reproducible_and_key_dependent():
    x, y = shapes_2d(np.random.default_rng(16), 50)
    a = sliced.sliced_wasserstein(jax.random.key(0), x, y, num_projections=10)
    b = sliced.sliced_wasserstein(jax.random.key(0), x, y, num_projections=10)
    c = sliced.sliced_wasserstein(jax.random.key(1), x, y, num_projections=10)
    assert a.dtype == jnp.float32
    assert float(a) == float(b) and float(a) != float(c)


def test_fewer_than_four_directions_fall_back_to_plain():
    x, y = shapes_2d(np.random.default_rng(17), 50)
    est = sliced.sliced_wasserstein_estimate(jax.random.key(0), x, y, num_projections=3,
                                             control_variate="upper")
    assert float(est.value) == float(est.plain) and float(est.gamma) == 0.0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(y=np.zeros((5, 3))), ValueError, "dimension of x"),
    (dict(weights_x=-np.ones(10)), ValueError, "weights_x must be finite and >= 0"),
    (dict(weights_y=np.zeros(8)), ValueError, "weights_y must have a positive sum"),
    (dict(weights_x=np.ones(9)), ValueError, r"weights_x must have shape \(10,\)"),
    (dict(num_projections=0), ValueError, "num_projections must be an integer >= 1"),
    (dict(x=np.zeros((0, 2))), ValueError, "at least one point"),
    (dict(y=np.zeros((0, 2))), ValueError, "at least one point"),
    (dict(x=np.zeros(10)), ValueError, r"x must have shape \(n, d\)"),
    (dict(p=0.5), ValueError, "p must be a finite number >= 1"),
    (dict(control_variate="middle"), ValueError, "control_variate must be one of"),
    (dict(coefficient="best"), ValueError, "coefficient must be one of"),
    (dict(scheme="sobol"), ValueError, "scheme must be one of"),
    (dict(key=None), TypeError, "key must be a jax.random.key"),
    (dict(key=0), TypeError, "key must be a jax.random.key"),
    (dict(x=np.full((10, 2), np.nan)), ValueError, "x must be finite"),
    (dict(directions=np.ones((4, 3))), ValueError, r"directions must have shape \(L, 2\)"),
])
def test_bad_input_is_named(kwargs, error, match):
    args = dict(x=np.zeros((10, 2)), y=np.ones((8, 2)), key=jax.random.key(0))
    args.update(kwargs)
    x, y, key = args.pop("x"), args.pop("y"), args.pop("key")
    with pytest.raises(error, match=match):
        sliced.sliced_wasserstein(key, x, y, **args)


def test_bad_directions_key_names_its_call():
    with pytest.raises(TypeError, match=r"key must be .*directions\(key, num_projections, dim\)"):
        sliced.directions(np.zeros((3, 2)), 4, 2)


def test_flow_bad_input():
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        sliced.sliced_wasserstein_flow(np.zeros((5, 2)), step_size=-1.0)
    flow = sliced.sliced_wasserstein_flow(np.zeros((5, 2)), step_size=0.1)
    with pytest.raises(ValueError, match=r"position must have shape \(n, 2\)"):
        flow.init(np.zeros((5, 3)))


def test_flow_moves_the_source_cloud_onto_the_target():
    """Under samplers.run the SW_2^2 estimate falls from ~4 to below 1e-3 of its start, and
    the exact W_2 between final particles and target (an optimal assignment) is below 0.05."""
    rng = np.random.default_rng(18)
    ring, square = shapes_2d(rng, 64)
    target, source = ring + np.float32(2.0), square
    flow = sliced.sliced_wasserstein_flow(target, step_size=0.2, num_projections=20,
                                          control_variate="upper")
    trace = samplers.run(jax.random.key(19), flow, source, num_steps=400, progress=False)
    sw = np.asarray(trace.stats["sw"][0])
    assert sw[0] > 1.0 and sw[-1] < 1e-3 * sw[0]
    assert np.all(np.diff(sw[:5]) < 0)
    final = np.asarray(trace.positions[0, -1])
    assert samplers.diagnostics.empirical_w2(final, target) < 0.05


def test_control_variate_gradient_has_lower_variance():
    """The flow's direction field, the gradient of the estimate in x, varies less across keys
    with the upper CV than without, at the same L (Nguyen & Ho 2024, section 4)."""
    ring, square = shapes_2d(np.random.default_rng(18), 64)
    target = ring + np.float32(2.0)
    keys = jax.random.split(jax.random.key(21), 200)

    def grads(cv):
        g = jax.vmap(jax.grad(lambda k, x: sliced.sliced_wasserstein_estimate(
            k, x, target, num_projections=10, control_variate=cv).value, argnums=1),
            in_axes=(0, None))
        return np.asarray(jax.jit(g)(keys, square))

    plain = grads(None).var(0).sum()
    for cv in ("lower", "upper"):
        ratio = plain / grads(cv).var(0).sum()   # measured x12 (lower) and x4 (upper)
        assert ratio * math.exp(-Z * math.sqrt(4 / 199)) > 1.0, (cv, ratio)
