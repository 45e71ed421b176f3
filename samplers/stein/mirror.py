"""Mirror maps for mirrored Stein samplers [Shi2022].

A mirror map is a strictly convex psi: Theta -> R of Legendre type on an open convex set
Theta in R^d: its gradient eta = grad psi(theta) is a bijection onto R^d, with inverse
theta = grad psi*(eta) (section 2 of the paper). Particles move in eta and map back through
grad psi*, so they lie in Theta by construction. Mirrored samplers need, at a point theta:

* ``inv_hess_mul(theta, v)`` = hess psi(theta)^{-1} v and ``hess_mul(theta, v)``;
* ``div_inv_hess(theta)``: the row-wise divergence of theta -> hess psi(theta)^{-1}, which
  enters the dual score s_H = hess psi^{-1} grad log p + div(hess psi^{-1}) (paper, eq. 6);
* ``factors(theta)``: the structure of hess psi^{-1} used by the blocked interaction.

Closed forms (each checked against automatic differentiation in ``tests/test_stein.py``):

=========================  =======================================  ===========================
map                        psi                                      grad psi*(eta)
=========================  =======================================  ===========================
:func:`simplex_entropic`   sum_{i<=d+1} t_i log t_i, t_{d+1}=1-sum  softmax([eta, 0])[:d]
:func:`box_entropic`       sum (t-a)log(t-a) + (b-t)log(b-t)        a + (b - a) sigmoid(eta)
:func:`box_log_barrier`    -sum log(t-a) + log(b-t)                 root of a quadratic per coord.
:func:`orthant_entropic`   sum t log t - t                          exp(eta)
:func:`identity`           |t|^2 / 2                                eta
:func:`from_potential`     any psi (JAX derives the rest)           damped Newton
=========================  =======================================  ===========================
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..validation import check_int

__all__ = ["MirrorMap", "identity", "simplex_entropic", "orthant_entropic", "box_entropic",
           "box_log_barrier", "from_potential"]


class MirrorMap(NamedTuple):
    """A mirror map psi and what mirrored Stein samplers need of it (single points, (d,)).

    Attributes:
      name: short identifier.
      grad_psi: theta -> eta.
      grad_psi_star: eta -> theta (always inside the domain).
      inv_hess_mul: (theta, v) -> hess psi(theta)^{-1} v.
      hess_mul: (theta, v) -> hess psi(theta) v.
      div_inv_hess: theta -> div(hess psi^{-1})(theta), (d,).
      contains: theta -> bool, True inside the open domain.
      structure: "identity", "diagonal" (hess psi^{-1} = diag(a)), "diag_minus_rank1"
        (diag(a) - u u^T) or "dense".
      factors: theta -> a (diagonal), (a, u) (diag_minus_rank1), the (d, d) matrix
        (dense), or None (identity).
      hess_mul_dual: optional (eta, v) -> hess psi(grad psi*(eta)) v computed from eta
        (numerically safer near the boundary); None composes the two.
      domain: a sentence describing the domain, used in error messages.
    """

    name: str
    grad_psi: Callable
    grad_psi_star: Callable
    inv_hess_mul: Callable
    hess_mul: Callable
    div_inv_hess: Callable
    contains: Callable
    structure: str
    factors: Callable
    hess_mul_dual: Optional[Callable] = None
    domain: str = "R^d"


def identity() -> MirrorMap:
    """psi(theta) = |theta|^2 / 2 on R^d: eta = theta, and MSVGD/SVMD reduce to SVGD."""
    return MirrorMap(
        "identity", lambda t: t, lambda e: e, lambda t, v: v, lambda t, v: v,
        jnp.zeros_like, lambda t: jnp.all(jnp.isfinite(t)), "identity", lambda t: None,
        domain="R^d")


def simplex_entropic() -> MirrorMap:
    """Negative entropy on the open simplex, in the d = K - 1 free coordinates.

    theta in R^d with theta_i > 0 and theta_K = 1 - sum(theta) > 0;
    psi(theta) = sum_{i<=K} theta_i log theta_i; grad psi(theta)_i = log(theta_i / theta_K);
    grad psi*(eta) = softmax([eta, 0])_{1:d}; hess psi^{-1} = diag(theta) - theta theta^T;
    div(hess psi^{-1}) = 1 - K theta (differentiate the line above; [Shi2022],
    section 5). ``hess_mul_dual`` takes theta_K = softmax([eta, 0])_K from eta, not
    1 - sum(theta) (which cancels catastrophically near the last face).
    """

    def grad_psi(t):
        return jnp.log(t) - jnp.log1p(-jnp.sum(t))

    def grad_psi_star(e):
        return jax.nn.softmax(jnp.append(e, 0.0))[:-1]

    def hess_mul(t, v):
        return v / t + jnp.sum(v) / (1.0 - jnp.sum(t))

    def hess_mul_dual(e, v):
        full = jax.nn.softmax(jnp.append(e, 0.0))
        return v / full[:-1] + jnp.sum(v) / full[-1]

    return MirrorMap(
        "simplex_entropic", grad_psi, grad_psi_star,
        lambda t, v: t * v - t * jnp.dot(t, v), hess_mul,
        lambda t: 1.0 - (t.shape[0] + 1) * t,
        lambda t: jnp.all(t > 0) & (jnp.sum(t) < 1),
        "diag_minus_rank1", lambda t: (t, t), hess_mul_dual,
        domain="the open simplex {theta_i > 0, sum(theta) < 1} (K - 1 free coordinates)")


def orthant_entropic() -> MirrorMap:
    """psi(theta) = sum theta log theta - theta on theta > 0: eta = log theta,
    theta = exp(eta), hess psi^{-1} = diag(theta), div = 1."""
    return MirrorMap(
        "orthant_entropic", jnp.log, jnp.exp, lambda t, v: t * v, lambda t, v: v / t,
        jnp.ones_like, lambda t: jnp.all(t > 0), "diagonal", lambda t: t,
        domain="the open orthant theta > 0")


def _box_bounds(lower, upper):
    a, b = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if a.ndim > 1 or b.ndim > 1 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"lower and upper must be finite scalars or (d,) vectors, got "
                         f"{lower!r} and {upper!r}")
    if np.any(a >= b):
        raise ValueError(f"lower must be < upper in every coordinate, got {lower!r} and {upper!r}")
    return a, b


def box_entropic(lower=-1.0, upper=1.0) -> MirrorMap:
    """Entropic map on the box (lower, upper)^d (scalars or (d,) vectors).

    psi(t) = sum (t - a) log(t - a) + (b - t) log(b - t); eta = log(t - a) - log(b - t);
    t = a + (b - a) sigmoid(eta); hess psi^{-1} = diag((t - a)(b - t) / (b - a));
    div = (a + b - 2 t) / (b - a). On (-1, 1) this is the reference code's box map
    (eta = log(1 + t) - log(1 - t), t = tanh(eta / 2)).
    """
    a_np, b_np = _box_bounds(lower, upper)

    def ab(t):
        return jnp.asarray(a_np, t.dtype), jnp.asarray(b_np, t.dtype)

    def inv_diag(t):
        a, b = ab(t)
        return (t - a) * (b - t) / (b - a)

    def grad_psi_star(e):
        a, b = ab(e)
        return a + (b - a) * jax.nn.sigmoid(e)

    def contains(t):
        a, b = ab(t)
        return jnp.all((t > a) & (t < b))

    def div(t):
        a, b = ab(t)
        return (a + b - 2.0 * t) / (b - a)

    def grad_psi(t):
        a, b = ab(t)
        return jnp.log(t - a) - jnp.log(b - t)

    return MirrorMap("box_entropic", grad_psi, grad_psi_star,
                     lambda t, v: inv_diag(t) * v, lambda t, v: v / inv_diag(t), div,
                     contains, "diagonal", inv_diag,
                     domain=f"the open box ({lower}, {upper})^d")


def box_log_barrier(lower=-1.0, upper=1.0) -> MirrorMap:
    """Log-barrier map on the box (lower, upper)^d.

    psi(t) = -sum log(t - a) + log(b - t); eta = 1/(b - t) - 1/(t - a);
    hess psi = 1/(t - a)^2 + 1/(b - t)^2 (diagonal). The inverse is the root in the box of
    a quadratic per coordinate: with c = (a + b)/2, w = (b - a)/2 and t = c + u,
    eta (w^2 - u^2) = 2 u, so u = eta w^2 / (1 + sqrt(1 + eta^2 w^2)) (|u| < w always).
    """
    a_np, b_np = _box_bounds(lower, upper)

    def ab(t):
        return jnp.asarray(a_np, t.dtype), jnp.asarray(b_np, t.dtype)

    def hess_diag(t):
        a, b = ab(t)
        return 1.0 / jnp.square(t - a) + 1.0 / jnp.square(b - t)

    def grad_psi(t):
        a, b = ab(t)
        return 1.0 / (b - t) - 1.0 / (t - a)

    def grad_psi_star(e):
        a, b = ab(e)
        c, w = (a + b) / 2.0, (b - a) / 2.0
        return c + e * w * w / (1.0 + jnp.sqrt(1.0 + jnp.square(e * w)))

    def div(t):
        a, b = ab(t)
        p, q = t - a, b - t
        return 2.0 * (p**-3 - q**-3) / jnp.square(hess_diag(t))

    def contains(t):
        a, b = ab(t)
        return jnp.all((t > a) & (t < b))

    return MirrorMap("box_log_barrier", grad_psi, grad_psi_star,
                     lambda t, v: v / hess_diag(t), lambda t, v: hess_diag(t) * v, div,
                     contains, "diagonal", lambda t: 1.0 / hess_diag(t),
                     domain=f"the open box ({lower}, {upper})^d")


def from_potential(psi: Callable, *, grad_psi: Optional[Callable] = None,
                   grad_psi_star: Optional[Callable] = None, contains: Optional[Callable] = None,
                   center=None, newton_steps: int = 50, name: str = "custom") -> MirrorMap:
    """A mirror map from psi alone; what is not given is derived with JAX.

    grad psi = ``jax.grad(psi)``; hess psi = ``jax.hessian(psi)`` (a dense (d, d) matrix,
    O(d^3) per particle to invert: for small d); div(hess psi^{-1}) by ``jax.jacfwd`` of the
    inverse Hessian (row-wise divergence). grad psi*(eta), when not given, solves
    max_theta <eta, theta> - psi(theta) by damped Newton from ``center`` (Nesterov's step
    1/(1 + lambda) while the Newton decrement lambda >= 1/4, full steps after it), halving a
    step that leaves ``contains``; ``newton_steps`` iterations at most.

    Args:
      psi: theta (d,) -> scalar, strictly convex on the domain.
      grad_psi, grad_psi_star: optional closed forms.
      contains: theta -> bool, the open domain (default: all finite points).
      center: a point of the domain where Newton starts (default: zeros).
      newton_steps: iterations of the Newton solve.
      name: a short identifier.
    """
    if not callable(psi):
        raise TypeError(f"psi must be a callable theta -> scalar, got {type(psi).__name__}")
    newton_steps = check_int("newton_steps", newton_steps)
    gpsi = grad_psi or jax.grad(psi)
    hess = jax.hessian(psi)
    inside = contains or (lambda t: jnp.all(jnp.isfinite(t)))

    def inv_hess(t):
        return jnp.linalg.inv(hess(t))

    def div_inv_hess(t):
        jac = jax.jacfwd(inv_hess)(t)  # jac[i, j, k] = d M_ij / d t_k
        return jnp.einsum("ijj->i", jac)

    def newton(e):
        t0 = jnp.zeros_like(e) if center is None else jnp.asarray(center, e.dtype)

        def body(_, t):
            g = gpsi(t) - e
            H = hess(t)
            delta = jnp.linalg.solve(H, g)
            lam = jnp.sqrt(jnp.maximum(jnp.dot(g, delta), 0.0))
            step = jnp.where(lam >= 0.25, 1.0 / (1.0 + lam), 1.0)

            step = jax.lax.while_loop(  # halve until the step stays inside the domain
                lambda s: (~inside(t - s * delta)) & (s > 1e-12), lambda s: 0.5 * s, step)
            new = t - step * delta
            return jnp.where(jnp.all(jnp.isfinite(new)) & inside(new), new, t)

        return jax.lax.fori_loop(0, newton_steps, body, t0)

    return MirrorMap(
        name, gpsi, grad_psi_star or newton,
        lambda t, v: jnp.linalg.solve(hess(t), v), lambda t, v: hess(t) @ v,
        div_inv_hess, inside, "dense", inv_hess, domain=f"the domain of {name}")
