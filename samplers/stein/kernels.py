"""Radial kernels for Stein samplers, their bandwidth heuristics, and the blocked interaction.

A radial kernel is k(x, y) = f(|x - y|^2; h) with a bandwidth h > 0:

* :func:`rbf`: f(r2) = exp(-r2 / h) ([Liu2016]; BlackJAX's ``rbf_kernel``);
* :func:`imq`: f(r2) = (1 + r2 / h)^beta, beta in (-1, 0) (beta = -1/2 in the mirrored-Stein
  reference experiments of [Shi2022]).

Bandwidth heuristics (recomputed from the particles at every step, never differentiated):

* ``"median/log"`` ([Liu2016]; BlackJAX): h = median_{i<j} |x_i - x_j|^2 / log n, with
  the median taken over distances and then squared, as BlackJAX does;
* ``"median"`` (the mirrored-Stein reference code): h = the (N//2)-th largest of all N = n^2
  squared distances, diagonal zeros included (about the median squared distance; no / log n).

Either becomes 1 when it is 0 (all particles equal). For n above ``median_points`` the
median is taken over a strided subset of ``median_points`` particles (the median of the
pairwise distances needs O(m^2) memory); below it the heuristic is exact.

:func:`stein_direction` computes, for particles x_1..x_n, scores s_j and optional
preconditioners M_j (the inverse Hessian of a mirror map at particle j),

    phi(x_i) = (1/n) sum_j [ k(x_j, x_i) s_j + M_j grad_{x_j} k(x_j, x_i) ]

(SVGD: [Liu2016, eq. 8]; MSVGD: [Shi2022, eq. 9] with K = k I) in row blocks
with ``jax.lax.map``, so memory is O(n * block_size) (plus O(n d) for the particles).
For a radial kernel grad_{x_j} k(x_j, x_i) = 2 f'(r2_ij) (x_j - x_i), so the sum over j is
a product of the (block, n) matrix F'_ij with (n, d) arrays: no (block, n, d) tensor is formed.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from ..validation import check_choice, check_int, check_positive

__all__ = ["Kernel", "rbf", "imq", "HEURISTICS", "stein_direction", "pairwise_sqdist"]

HEURISTICS = ("median/log", "median")


class Kernel(NamedTuple):
    """A radial kernel k(x, y) = f(|x - y|^2; h).

    Attributes:
      name: "rbf" or "imq".
      profile: ``f(r2, h)``, elementwise.
      dprofile: ``df/dr2 (r2, h)``, elementwise.
      bandwidth: a fixed h > 0, or None for the heuristic.
      heuristic: "median/log" or "median" (used when ``bandwidth`` is None).
      median_points: at most this many particles enter the median (a strided subset).
    """

    name: str
    profile: Callable
    dprofile: Callable
    bandwidth: Optional[float]
    heuristic: str
    median_points: int = 1000

    def __call__(self, x, y, h):
        """k(x, y) for two points of shape (d,) and bandwidth ``h``."""
        return self.profile(jnp.sum(jnp.square(x - y)), h)

    def bandwidth_for(self, x) -> jax.Array:
        """The bandwidth h for particles ``x`` (n, d): fixed, or by the heuristic."""
        if self.bandwidth is not None:
            return jnp.asarray(self.bandwidth, x.dtype)
        return median_bandwidth(x, self.heuristic, self.median_points)


def _check_kernel_args(bandwidth, heuristic, median_points) -> int:
    """Check a kernel's arguments; return ``median_points`` as an int."""
    if bandwidth is not None:
        check_positive("bandwidth", bandwidth)
    check_choice("heuristic", heuristic, HEURISTICS)
    return check_int("median_points", median_points, minimum=2)


def rbf(bandwidth: Optional[float] = None, *, heuristic: str = "median/log",
        median_points: int = 1000) -> Kernel:
    """Gaussian RBF kernel k(x, y) = exp(-|x - y|^2 / h).

    Args:
      bandwidth: fixed h > 0, or None to set h from the particles at every step.
      heuristic: "median/log" (default; [Liu2016] and BlackJAX: median distance
        squared over log n) or "median" (median squared distance, the mirrored-Stein
        reference code's choice).
      median_points: largest number of particles the median is computed from.
    """
    median_points = _check_kernel_args(bandwidth, heuristic, median_points)
    return Kernel("rbf", lambda r2, h: jnp.exp(-r2 / h),
                  lambda r2, h: -jnp.exp(-r2 / h) / h, bandwidth, heuristic, median_points)


def imq(bandwidth: Optional[float] = None, *, beta: float = -0.5, heuristic: str = "median",
        median_points: int = 1000) -> Kernel:
    """Inverse multiquadric kernel k(x, y) = (1 + |x - y|^2 / h)^beta.

    With beta = -1/2 and h the median squared distance this is the kernel of the
    mirrored-Stein reference experiments [Shi2022]; it equals
    c (c^2 + |x - y|^2)^(-1/2) with c^2 = h, i.e. c times the other common form.

    Args:
      bandwidth: fixed h > 0, or None for the heuristic.
      beta: exponent in (-1, 0).
      heuristic: "median" (default) or "median/log".
      median_points: largest number of particles the median is computed from.
    """
    median_points = _check_kernel_args(bandwidth, heuristic, median_points)
    beta = float(beta)
    if not -1.0 < beta < 0.0:
        raise ValueError(f"beta must lie in (-1, 0), got {beta!r}")
    return Kernel("imq", lambda r2, h: (1.0 + r2 / h) ** beta,
                  lambda r2, h: beta / h * (1.0 + r2 / h) ** (beta - 1.0),
                  bandwidth, heuristic, median_points)


# ------------------------------------------------------------------------- bandwidth

def pairwise_sqdist(x, y):
    """|x_i - y_j|^2 (n, m) from differences (exact zeros on ties; O(n m d) memory)."""
    return jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)


def median_bandwidth(x, heuristic: str, median_points: int = 1000) -> jax.Array:
    """Bandwidth h of particles ``x`` (n, d) by ``heuristic`` ("median/log" or "median")."""
    n = x.shape[0]
    sub = x if n <= median_points else x[:: n // median_points][:median_points]
    m = sub.shape[0]
    sq = pairwise_sqdist(sub, sub)
    if heuristic == "median/log":
        lower = jnp.tril_indices(m, k=-1)
        h = jnp.square(jnp.median(jnp.sqrt(sq[lower]))) / math.log(n)
    else:
        flat = jnp.sort(sq.reshape(-1))
        total = m * m
        h = flat[total - total // 2]
    return jax.lax.stop_gradient(jnp.where(h > 0, h, jnp.ones_like(h)))


# ------------------------------------------------------------------- blocked interaction

class Preconditioner(NamedTuple):
    """The matrices M_j (inverse Hessians of a mirror map at the particles), by structure.

    M_j = diag(diag_j) - u_j u_j^T when ``rank1`` is given, diag(diag_j) when only ``diag``
    is given, ``dense[j]`` (d, d) when ``dense`` is given, the identity when all are None.
    ``mx`` (n, d) holds M_j x_j for the (centred) particles x_j.
    """

    diag: Optional[jax.Array] = None
    rank1: Optional[jax.Array] = None
    dense: Optional[jax.Array] = None
    mx: Optional[jax.Array] = None


def _apply_sum(F, xb, pre: Preconditioner):
    """sum_j F_bj M_j x_b for a block x_b (B, d) and weights F (B, n)."""
    if pre.dense is not None:
        n, d, _ = pre.dense.shape
        mats = (F @ pre.dense.reshape(n, d * d)).reshape(-1, d, d)
        return jnp.einsum("bde,be->bd", mats, xb)
    if pre.diag is None:
        return jnp.sum(F, axis=1, keepdims=True) * xb
    out = (F @ pre.diag) * xb
    if pre.rank1 is not None:
        out = out - (F * (xb @ pre.rank1.T)) @ pre.rank1
    return out


def stein_direction(x, scores, kernel: Kernel, h, pre: Optional[Preconditioner] = None,
                    block_size: int = 256, rows=None):
    """phi(x_i) = (1/n) sum_j [k(x_j, x_i) s_j + M_j grad_{x_j} k(x_j, x_i)], all i.

    Args:
      x: (n, d) particles (the kernel's argument).
      scores: (n, d) s_j (grad log p for SVGD; the dual score for MSVGD), or None for the
        repulsion (1/n) sum_j M_j grad_{x_j} k(x_j, x_i) alone (what SVMD needs). Pass None
        rather than zeros: a product with a compile-time zero (n, d) array can come out all NaN
        for a few hundred particles under jit on XLA CPU's YNNPACK dot fusions (see
        :mod:`samplers._xla`; gone with ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``).
      kernel: a :class:`Kernel`; h: its bandwidth (a scalar).
      pre: the M_j (None: identity, i.e. SVGD).
      block_size: rows per block; memory O(n * block_size); >= n computes densely.
      rows: (m, d) the points x_i at which phi is wanted (default: all of ``x``); a device
        holding a shard of the particles passes its own here and all of them as ``x``.
        ``pre.mx`` must then be M_j (x_j - mean(x)).

    Returns (n, d) (or (m, d)). SVGD: [Liu2016, eq. 8]; MSVGD: [Shi2022, eq. 9].
    """
    n = x.shape[0]
    centre = jnp.mean(x, axis=0)  # the kernel sees differences only; centring helps round-off
    x = x - centre
    rows = x if rows is None else rows - centre
    pre = pre or Preconditioner()
    mx = x if pre.mx is None else pre.mx
    sqn = jnp.sum(x * x, axis=1)

    def block(xb):
        r2 = jnp.maximum(jnp.sum(xb * xb, 1)[:, None] + sqn[None, :] - 2.0 * xb @ x.T, 0.0)
        F = kernel.dprofile(r2, h)
        out = 2.0 * (F @ mx - _apply_sum(F, xb, pre))
        if scores is not None:
            out = out + kernel.profile(r2, h) @ scores
        return out / n

    # one code path for every block size (block_size >= n is a single block)
    return jax.lax.map(lambda xi: block(xi[None])[0], rows,
                       batch_size=min(block_size, rows.shape[0]))
