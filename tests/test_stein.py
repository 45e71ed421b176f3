"""Stein samplers: exact identities (blocked == dense, mirror-map closed forms against autodiff,
MSVGD/SVMD with psi = |x|^2/2 equal to SVGD, the constant-Hessian cases) and behaviour
(bad input, pytrees, samplers.run and ArviZ export, optax optimisers and schedules).

Shi, Liu & Mackey, "Sampling with Mirrored Stein Operators", ICLR 2022 (arXiv 2106.12506).
Every jitted function here is built once per module and reused (compiles dominate the time).
"""
from __future__ import annotations

import textwrap

import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp

import samplers
from devices import run_on_devices
from samplers import stein
from samplers.stein import kernels, mirror
from samplers.stein.kernels import stein_direction
from samplers.verify.stein import run_duals
from samplers.targets import dirichlet

EPS32 = float(np.finfo(np.float32).eps)


def gaussian_logdensity(x):
    return -0.5 * jnp.sum(jnp.square(x - 1.0) * jnp.array([1.0, 4.0]))


def dense_reference(x, scores, k, h, inv_hess=None):
    """phi(x_i) = (1/n) sum_j [k(x_j, x_i) s_j + M_j grad_{x_j} k(x_j, x_i)] with the gradient
    of the kernel from autodiff and an explicit (n, n, d) tensor: independent of the
    closed forms and blocking in samplers.stein.kernels."""
    n, d = x.shape
    kmat = jax.vmap(lambda xj: jax.vmap(lambda xi: k(xj, xi, h))(x))(x)          # [j, i]
    gk = jax.vmap(lambda xj: jax.vmap(lambda xi: jax.grad(k)(xj, xi, h))(x))(x)  # [j, i, :]
    if inv_hess is not None:
        gk = jnp.einsum("jab,jib->jia", inv_hess, gk)
    return (kmat.T @ scores + gk.sum(0)) / n


# ------------------------------------------------------------------ kernels and blocking

def test_bandwidth_heuristics_match_numpy():
    x = np.random.default_rng(0).normal(size=(21, 3)).astype(np.float32)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    lw = np.median(d[np.tril_indices(21, -1)]) ** 2 / np.log(21)
    ref = np.sort((d**2).ravel())[441 - 441 // 2]
    both = jax.jit(lambda x: (kernels.rbf().bandwidth_for(x), kernels.imq().bandwidth_for(x)))
    ours_lw, ours_ref = both(jnp.asarray(x))
    np.testing.assert_allclose(ours_lw, lw, rtol=1e-5)
    np.testing.assert_allclose(ours_ref, ref, rtol=1e-5)
    assert float(kernels.rbf(0.7).bandwidth_for(jnp.asarray(x))) == pytest.approx(0.7)


@pytest.mark.parametrize("kind", ["identity", "simplex", "dense"])
def test_blocked_equals_dense_and_autodiff(kind):
    """Blocked (block 7, n = 50: a ragged last block) equals the one-block computation to
    float32 round-off (bound: n eps32 times the largest summand), and both equal the
    autodiff (n, n, d) reference."""
    rng = np.random.default_rng(1)
    n, d = 50, 3
    if kind == "simplex":
        x = rng.dirichlet(np.ones(d + 1), n)[:, :d]
        mm = mirror.simplex_entropic()
    else:
        x = rng.normal(size=(n, d))
        mm = mirror.identity() if kind == "identity" else mirror.from_potential(
            lambda t: 0.5 * t @ jnp.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]]) @ t
            + 0.25 * jnp.sum(t**4))
    x = jnp.asarray(x, jnp.float32)
    s = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    k = kernels.imq()
    h = k.bandwidth_for(x)
    from samplers.stein.samplers import _preconditioner

    @jax.jit
    def all_three(x, s, h):
        pre = _preconditioner(mm, x, x - x.mean(0))
        inv_hess = None if kind == "identity" else jax.vmap(
            lambda t: jax.vmap(lambda e: mm.inv_hess_mul(t, e))(jnp.eye(d)).T)(x)
        return (stein_direction(x, s, k, h, pre, block_size=7),
                stein_direction(x, s, k, h, pre, block_size=n),
                dense_reference(x, s, k, h, inv_hess))

    blocked, dense, ref = all_three(x, s, h)
    bound = n * EPS32 * (float(jnp.max(jnp.abs(s))) + 2 * float(jnp.max(jnp.abs(x))) * 4)
    assert float(jnp.max(jnp.abs(blocked - dense))) <= bound
    assert float(jnp.max(jnp.abs(blocked - ref))) <= 10 * bound


# ------------------------------------------------------------------------- mirror maps

MAPS = {
    "simplex": (mirror.simplex_entropic,
                lambda t: jnp.sum(t * jnp.log(t)) + (1 - t.sum()) * jnp.log(1 - t.sum()),
                np.array([0.2, 0.1, 0.3])),
    "orthant": (mirror.orthant_entropic, lambda t: jnp.sum(t * jnp.log(t) - t),
                np.array([0.5, 2.0, 0.01])),
    "box_entropic": (lambda: mirror.box_entropic(-1.0, 2.0),
                     lambda t: jnp.sum((t + 1) * jnp.log(t + 1) + (2 - t) * jnp.log(2 - t)),
                     np.array([-0.9, 0.5, 1.95])),
    "box_log_barrier": (lambda: mirror.box_log_barrier(-1.0, 2.0),
                        lambda t: -jnp.sum(jnp.log(t + 1) + jnp.log(2 - t)),
                        np.array([-0.9, 0.5, 1.95])),
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_mirror_map_closed_forms_against_autodiff(name):
    """grad psi, hess psi^{-1}, hess psi, div(hess psi^{-1}) of each closed-form map against
    jax.grad/jax.hessian/jax.jacfwd of psi itself (float64), and grad psi* inverts grad psi."""
    make, psi, theta = MAPS[name]
    with jax.enable_x64(True):
        mm = make()
        t = jnp.asarray(theta, jnp.float64)
        v = jnp.array([0.3, -1.2, 0.7])

        @jax.jit
        def ours_and_autodiff(t, v):
            H = jax.hessian(psi)(t)
            div = jnp.einsum("ijj->i", jax.jacfwd(lambda u: jnp.linalg.inv(jax.hessian(psi)(u)))(t))
            ours = (mm.grad_psi(t), mm.grad_psi_star(mm.grad_psi(t)), mm.inv_hess_mul(t, v),
                    mm.hess_mul(t, v), mm.div_inv_hess(t))
            return ours, (jax.grad(psi)(t), t, jnp.linalg.solve(H, v), H @ v, div)

        ours, auto = ours_and_autodiff(t, v)
        for name_, a, b in zip(("grad psi", "grad psi*", "inv hess", "hess", "div"), ours, auto):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=name_)
        assert bool(mm.contains(t))


def test_from_potential_derives_the_inverse_by_newton():
    """from_potential(psi) with only psi given reproduces the closed-form box log-barrier map
    (the Newton solve of grad psi* included) at points near the faces."""
    with jax.enable_x64(True):
        psi = lambda t: -jnp.sum(jnp.log(t + 1) + jnp.log(2 - t))  # noqa: E731
        custom = mirror.from_potential(psi, contains=lambda t: jnp.all((t > -1) & (t < 2)),
                                       center=jnp.full(3, 0.5))
        closed = mirror.box_log_barrier(-1.0, 2.0)
        eta = jnp.array([-50.0, 0.3, 20.0])
        both = jax.jit(lambda e: (custom.grad_psi_star(e), closed.grad_psi_star(e),
                                  custom.div_inv_hess(closed.grad_psi_star(e)),
                                  closed.div_inv_hess(closed.grad_psi_star(e))))
        t_custom, t_closed, div_custom, div_closed = both(eta)
        np.testing.assert_allclose(t_custom, t_closed, rtol=1e-10)
        np.testing.assert_allclose(div_custom, div_closed, rtol=1e-8)


# --------------------------------------------------------- exact reductions to SVGD

def test_reductions_to_svgd_and_constant_hessian_cases():
    """Exact special cases (float64; A.4 of the project notes, from eqs. 9 and 11 of the paper):

    * psi = |x|^2/2 given as a potential (Hessian and divergence by autodiff; the Newton inverse
      is checked above): MSVGD, and SVMD without truncation or jitter, follow SVGD's particles
      step for step; SVNG with G = I takes SVGD's step;
    * psi = theta^T A theta / 2: the MSVGD dual direction is A^{-1} phi_SVGD, the SVMD one phi_SVGD.
    """
    eps, steps = 0.05, 12
    kernel = kernels.rbf(1.3)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(2).normal(size=(12, 2)))
        svgd = stein.svgd(gaussian_logdensity, kernel=kernel, step_size=eps)
        _, path = run_duals(svgd, x0, steps)
        assert float(jnp.max(jnp.abs(path[-1] - x0))) > 1e-2  # the particles do move
        quad = mirror.from_potential(lambda t: 0.5 * jnp.sum(t * t), grad_psi_star=lambda e: e)
        for alg in (stein.msvgd(gaussian_logdensity, quad, kernel=kernel, step_size=eps),
                    stein.svmd(gaussian_logdensity, quad, kernel=kernel, step_size=eps,
                               threshold=None, jitter=0.0)):
            _, other = run_duals(alg, x0, steps)
            np.testing.assert_allclose(other, path, rtol=0, atol=1e-9, err_msg=alg.name)
        svng = stein.svng(gaussian_logdensity, lambda t: jnp.eye(2), kernel=kernel,
                          step_size=eps, threshold=None, jitter=0.0)
        np.testing.assert_allclose(jax.jit(svng.step)(None, svng.init(x0))[0].dual, path[0],
                                   atol=1e-9)

        phi = (path[0] - x0) / eps
        A = jnp.array([[3.0, 0.5], [0.5, 0.8]])
        quad_a = mirror.from_potential(lambda t: 0.5 * t @ A @ t,
                                       grad_psi_star=lambda e: jnp.linalg.solve(A, e))
        for alg, expect in (
            (stein.msvgd(gaussian_logdensity, quad_a, kernel=kernel, step_size=eps),
             jnp.linalg.solve(A, phi.T).T),
            (stein.svmd(gaussian_logdensity, quad_a, kernel=kernel, step_size=eps,
                        threshold=None, jitter=0.0), phi)):
            s0 = alg.init(x0)
            got = (jax.jit(alg.step)(None, s0)[0].dual - s0.dual) / eps
            np.testing.assert_allclose(got, expect, rtol=1e-7, atol=1e-9, err_msg=alg.name)


# --------------------------------------------------------------------------- behaviour

def test_bad_input_is_reported():
    t = dirichlet(jnp.array([2.0, 3.0, 4.0]))
    alg = stein.msvgd(t.logdensity_fn, mirror.simplex_entropic(), step_size=0.1)
    with pytest.raises(ValueError, match=r"particle 1 .* outside the open simplex"):
        alg.init(jnp.array([[0.2, 0.3], [0.7, 0.4], [0.1, 0.1]]))
    with pytest.raises(ValueError, match="n >= 2"):
        alg.init(jnp.array([[0.2, 0.3]]))
    nan_grad = stein.svgd(lambda x: jnp.sum(jnp.sqrt(x)), step_size=0.1)
    with pytest.raises(ValueError, match=r"non-finite gradient at particle 0"):
        nan_grad.init(jnp.array([[-1.0, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="step_size"):
        stein.svgd(gaussian_logdensity, step_size=-1.0)
    with pytest.raises(ValueError, match="exactly one"):
        stein.svgd(gaussian_logdensity, step_size=0.1, optimizer=optax.sgd(0.1))
    with pytest.raises(TypeError, match="kernel"):
        stein.svgd(gaussian_logdensity, kernel=lambda x, y: 1.0, step_size=0.1)
    with pytest.raises(TypeError, match="mirror_map"):
        stein.msvgd(gaussian_logdensity, "simplex", step_size=0.1)
    with pytest.raises(ValueError, match="threshold"):
        stein.svmd(gaussian_logdensity, mirror.identity(), step_size=0.1, threshold=1.5)
    with pytest.raises(ValueError, match="lower must be < upper"):
        mirror.box_entropic(1.0, 0.0)


def test_run_pytrees_schedules_optax_and_arviz():
    """samplers.run drives SVGD; a pytree of particles moves like the flat array; a constant
    schedule equals the float step size; ArviZ gets one chain with
    draw = particle."""
    rng = np.random.default_rng(5)
    x0 = jnp.asarray(rng.normal(size=(20, 2)), jnp.float32)
    alg = stein.svgd(gaussian_logdensity, step_size=0.1)
    trace = samplers.run(jax.random.key(0), alg, x0, 20, thin=10, progress=False)
    assert trace.positions.shape == (1, 2, 20, 2)

    tree_alg = stein.svgd(lambda p: gaussian_logdensity(jnp.append(p["a"], p["b"])),
                          step_size=lambda c: 0.1)
    tree_trace = samplers.run(jax.random.key(0), tree_alg, {"a": x0[:, :1], "b": x0[:, 1]},
                              20, thin=10, progress=False)
    flat = jnp.concatenate([tree_trace.positions["a"], tree_trace.positions["b"][..., None]], -1)
    np.testing.assert_allclose(flat, trace.positions, rtol=1e-5, atol=1e-6)

    idata = stein.to_arviz(trace)
    post = idata["posterior"] if not hasattr(idata, "posterior") else idata.posterior
    assert post["x"].shape == (1, 20, 2)


def test_svmd_matches_brute_force_nystrom_form_on_the_simplex():
    """SVMD's factored direction against a brute-force evaluation of paper eq. 11: the
    square-root kernel k^{1/2}(x, y) = sum_j sqrt(mu_j) u_j(x) u_j(y) built from Nystrom
    eigenfunctions u_j(x) = sqrt(n)/lambda_j sum_p k(x, theta_p) E_pj, its gradient by autodiff,
    and g_k = (1/n) sum_m S_km H_m (1/n) sum_l [S_ml s_H(theta_l) + H_l^{-1} grad_l k^{1/2}(theta_m, theta_l)]
    with explicit Hessian matrices (non-constant Hessian: the entropic simplex map)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        n, d = 9, 2
        theta = jnp.asarray(rng.dirichlet(np.ones(d + 1) * 2, n)[:, :d])
        t = dirichlet(jnp.array([3.0, 2.0, 1.5]))
        mm = mirror.simplex_entropic()
        k = kernels.imq()
        alg = stein.svmd(t.logdensity_fn, mm, kernel=k, step_size=1.0, threshold=None,
                         jitter=0.0)

        @jax.jit
        def both(theta):
            s0 = alg.init(theta)
            ours = alg.step(None, s0)[0].dual - s0.dual
            h = k.bandwidth_for(theta)
            G = jax.vmap(lambda a: jax.vmap(lambda b: k(a, b, h))(theta))(theta)
            lam, E = jnp.linalg.eigh(G)

            def u(x):  # (n,) Nystrom eigenfunctions at x
                kx = jax.vmap(lambda b: k(x, b, h))(theta)
                return jnp.sqrt(n) / lam * (kx @ E)

            def khalf(x, y):
                return jnp.sum(jnp.sqrt(lam / n) * u(x) * u(y))

            grads = jax.vmap(jax.grad(lambda x: t.logdensity_fn(x)))(theta)
            Hinv = jax.vmap(lambda a: jnp.diag(a) - jnp.outer(a, a))(theta)
            H = jnp.linalg.inv(Hinv)
            sH = jnp.einsum("lab,lb->la", Hinv, grads) + (1.0 - (d + 1) * theta)
            S = jax.vmap(lambda a: jax.vmap(lambda b: khalf(a, b))(theta))(theta)
            DS = jax.vmap(lambda a: jax.vmap(lambda b: jax.grad(khalf, 1)(a, b))(theta))(theta)
            phi = (S.T @ sH + jnp.einsum("lab,mlb->ma", Hinv, DS)) / n
            brute = S @ jnp.einsum("mab,mb->ma", H, phi) / n
            return ours, brute

        ours, brute = both(theta)
        np.testing.assert_allclose(ours, brute, rtol=1e-7, atol=1e-10)


def test_repulsion_in_one_block_at_500_particles_and_svmd_size_limit():
    """SVMD's repulsion (scores=None) is computed without a zero score array: a product with
    a compile-time zero (n, d) array came out all NaN for n >= ~450 under jit on XLA CPU
    (jaxlib 0.10.2's YNNPACK dot fusions), which had forced a 256-row block. One block of
    n = 500 now equals the 256-row blocks to float32 round-off (the bound of
    test_blocked_equals_dense_and_autodiff). Above ``max_particles`` SVMD's init names n and
    msvgd before allocating anything."""
    n = 500
    target = dirichlet(jnp.full(11, 2.0))
    x = target.sample(jax.random.key(0), n)
    mm, k = mirror.simplex_entropic(), kernels.imq()
    from samplers.stein.samplers import _preconditioner

    @jax.jit
    def both(x):
        h = k.bandwidth_for(x)
        pre = _preconditioner(mm, x, x - x.mean(0))
        return (stein_direction(x, None, k, h, pre, block_size=n),
                stein_direction(x, None, k, h, pre, block_size=256))

    one, blocked = both(x)
    assert np.all(np.isfinite(np.asarray(one)))
    bound = n * EPS32 * 2 * float(jnp.max(jnp.abs(x))) * 4
    assert float(jnp.max(jnp.abs(one - blocked))) <= bound
    small = stein.svmd(target.logdensity_fn, mm, step_size=0.01, max_particles=100)
    with pytest.raises(ValueError, match=r"n = 500 particles .* Use msvgd"):
        small.init(x)


def test_simplex_dirichlet_example_writes_its_plot(tmp_path):
    """examples/simplex_dirichlet.py at a tiny size writes its figure."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "simplex_dirichlet.py"
    spec = importlib.util.spec_from_file_location("simplex_dirichlet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "plot.png"
    assert module.main(["--particles", "8", "--steps", "4", "--out", str(out)]) == str(out)
    assert out.stat().st_size > 1000


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, samplers
    from jax.sharding import NamedSharding, PartitionSpec
    from samplers import stein
    from samplers.targets import dirichlet
    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("particles",))  # Explicit axis types, jax's default
    rng = np.random.default_rng(0)
    t = dirichlet(jnp.array([0.5, 1.0, 2.0, 3.0]))
    x0 = jnp.asarray(rng.dirichlet(np.full(4, 5.0), size=64)[:, :3], jnp.float32)
    y0 = {"a": x0[:, :2] - 0.3, "b": x0[:, 2]}
    tree_lp = lambda p: -0.5 * jnp.sum(jnp.append(p["a"], p["b"]) ** 2 * jnp.array([1., 4., 9.]))
    cases = [
        ("msvgd", lambda m: stein.msvgd(t.logdensity_fn, stein.mirror.simplex_entropic(),
                                        step_size=0.05, block_size=16, mesh=m), x0),
        ("svgd", lambda m: stein.svgd(tree_lp, step_size=0.05, block_size=16, mesh=m), y0),
    ]
    for name, make, start in cases:
        a = samplers.run(jax.random.key(0), make(None), start, 20, num_chains=2, progress=False)
        b = samplers.run(jax.random.key(0), make(mesh), start, 20, num_chains=2, progress=False)
        for la, lb, l0 in zip(jax.tree.leaves(a.positions), jax.tree.leaves(b.positions),
                              jax.tree.leaves(start)):
            moved = np.max(np.abs(np.asarray(la)[:, -1] - np.asarray(l0)))
            diff = np.max(np.abs(np.asarray(la) - np.asarray(lb)))
            print(name, "moved", moved, "sharded vs single-device", diff)
            assert moved > 0.01 and diff <= 1e-5 * max(1.0, np.max(np.abs(np.asarray(la)))), diff
    # particles already placed on the user's (Explicit) mesh; the step keeps them split
    alg = cases[0][1](mesh)
    placed = jax.device_put(x0, NamedSharding(mesh, PartitionSpec("particles")))
    state, _ = jax.jit(alg.step)(jax.random.key(0), alg.init(placed))
    assert state.dual.sharding.spec == PartitionSpec("particles"), state.dual.sharding
    assert "all-gather" in jax.jit(alg.step).lower(jax.random.key(0), alg.init(placed)).compile().as_text()
    try:
        alg.init(x0[:60])
    except ValueError as e:
        assert "multiple of the mesh axis 'particles' size (8)" in str(e), e
    else:
        raise AssertionError("60 particles on 8 devices were accepted")
    print("OK")
""")


def test_particles_sharded_over_eight_devices_equal_the_single_device_run():
    """With ``mesh=``, each of 8 (CPU) devices scores its own particles and sums the
    interaction for its own rows after an all-gather: the run equals the single-device one
    to float32 round-off, for MSVGD on the simplex and SVGD on a pytree."""
    run_on_devices(SHARDED_SCRIPT, 8)


def test_direction_at_a_subset_of_rows_and_mesh_type():
    """``rows=`` (what each device computes) gives the same rows as the whole direction."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
    s = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
    k = kernels.imq()
    full = stein_direction(x, s, k, 1.3, None, 16)
    part = stein_direction(x, s, k, 1.3, None, 16, rows=x[8:24])
    # the same sums over j, blocked differently: equal up to a few float32 roundings of the
    # result (bitwise equal on XLA CPU today)
    np.testing.assert_allclose(part, full[8:24], rtol=0,
                               atol=4 * EPS32 * float(jnp.max(jnp.abs(full))))
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        stein.svgd(gaussian_logdensity, step_size=0.1, mesh=8)
