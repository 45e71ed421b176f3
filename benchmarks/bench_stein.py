"""SVGD step time: ``samplers.stein.svgd`` against BlackJAX's ``svgd`` (and MSVGD/SVMD cost).

Both sides run the same work: one jitted ``lax.scan`` of ``steps`` SVGD steps of n particles
on the same target (a correlated Gaussian in d = 10, from the AR(1) target of
``bench_langevin``), the same initial particles, RBF kernel exp(-|x - y|^2 / h), plain SGD
(``optax.sgd`` on BlackJAX's side: it negates the direction; ours: ``step_size``).

Two bandwidth settings:

* ``h fixed``: h = 1 on both sides (pure interaction cost);
* ``median``: BlackJAX's ``update_median_heuristic`` (median of all n(n-1)/2 distances,
  squared, over log n, applied after each step) against ours (the same formula, exact for
  n <= 1000 and from a strided subset of 1000 particles above that: not the same work for
  n > 1000, and said so in the table).

Ours computes the O(n^2) interaction in row blocks (memory O(n * block)); BlackJAX's is a
dense double ``vmap`` that also re-evaluates the gradient of the log-density inside the
pairwise loop. The check column is the mean over particles of |x|^2 after the run.

Rows ``msvgd``/``svmd`` time our mirrored samplers on a Dirichlet (no peer implements them):
their ratio is against our own SVGD on the same particle count (< 1: the mirror costs that much).

``python -m benchmarks.bench_stein [--quick] [--out DIR]``.
"""
from __future__ import annotations

import sys
from typing import Iterator

import blackjax
import jax
import jax.numpy as jnp
import optax

from samplers import stein
from samplers.stein import mirror
from samplers.targets import dirichlet

from .bench_langevin import ar1_logdensity, ar1_sample
from .harness import Case, main

NAME = "stein"
TITLE = "Stein variational samplers: samplers vs BlackJAX SVGD (step time)"
PEERS = ("blackjax", "optax")
NOTES = """
One jitted `lax.scan` of SVGD steps on both sides; AR(1) Gaussian target (rho = 0.5), d = 10,
RBF kernel, SGD step 0.05. `h fixed`: bandwidth 1 on both sides. `median`: the median/log n
heuristic on both sides, exact for ours up to n = 1000 particles and from a strided subset of
1000 particles above it (BlackJAX always uses all n(n-1)/2 pairs). msvgd / svmd rows: our
mirrored samplers on Dirichlet(2,...,2) (d = 10 free coordinates) against our own SVGD on the
same n (no peer has them; < 1 is the mirror's extra cost). Check: mean |x|^2 after the run.
"""

DIM = 10
STEP = 0.05


def config(quick: bool) -> dict:
    """``quick``: n = 1000 only, 2 steps per timing (under two minutes on two cores; BlackJAX's
    dense step at n = 5000 alone takes ~50 s to compile there). Full: n = 1000 and 5000."""
    return {
        "particles": [1000] if quick else [1000, 5000],
        "steps": 2 if quick else 3,
        "repeats": 2 if quick else 3,
        "min_time": 0.0,
        "mirrored": [500] if quick else [1000],
    }


def _scan(step, steps):
    def drive(state):
        return jax.lax.scan(lambda s, _: (step(s), None), state, None, length=steps)[0]
    return jax.jit(drive)


def _mean_sq(x):
    return jnp.mean(jnp.sum(jnp.square(x), -1))


def svgd_case(n: int, steps: int, bandwidth: str, key) -> Case:
    logp = ar1_logdensity()
    x0 = ar1_sample(jax.random.fold_in(key, n), n, DIM) * 2.0
    h = 1.0 if bandwidth == "h fixed" else None
    ours_alg = stein.svgd(logp, kernel=stein.rbf(h), step_size=STEP, block_size=256)
    ours = _scan(lambda s: ours_alg.step(None, s)[0], steps)
    ours_state = ours_alg.init(x0)

    update = (blackjax.vi.svgd.update_median_heuristic if h is None else (lambda s: s))
    bj = blackjax.svgd(jax.grad(logp), optax.sgd(STEP), update_kernel_parameters=update)
    peer = _scan(bj.step, steps)
    # BlackJAX uses its length scale from the previous step: start both from ours at x0
    h0 = float(ours_alg.step(None, ours_state)[1].bandwidth) if h is None else 1.0
    peer_state = bj.init(x0, {"length_scale": h0})

    def check(o, p):
        return {"mean |x|²": (_mean_sq(o.position), _mean_sq(p.particles))}

    params = {"n": n, "d": DIM, "steps": steps, "bandwidth": bandwidth}
    return Case("svgd", params, lambda: ours(ours_state), lambda: peer(peer_state), "blackjax",
                check)


def mirrored_case(method: str, n: int, steps: int, key) -> Case:
    target = dirichlet(jnp.full(DIM + 1, 2.0))
    x0 = target.sample(jax.random.fold_in(key, n), n)
    mm = mirror.simplex_entropic()
    if method == "msvgd":
        alg = stein.msvgd(target.logdensity_fn, mm, step_size=0.01)
    else:
        alg = stein.svmd(target.logdensity_fn, mm, optimizer=stein.rmsprop(0.01))
    base = stein.svgd(target.logdensity_fn, kernel=stein.imq(), step_size=0.01)
    ours = _scan(lambda s: alg.step(None, s)[0], steps)
    peer = _scan(lambda s: base.step(None, s)[0], steps)
    s_ours, s_peer = alg.init(x0), base.init(x0)

    def check(o, p):
        return {"mean |x|²": (_mean_sq(o.position), _mean_sq(p.position))}

    params = {"n": n, "d": DIM, "steps": steps, "bandwidth": "median"}
    return Case(method, params, lambda: ours(s_ours), lambda: peer(s_peer), "our svgd (imq)",
                check)


def cases(cfg: dict) -> Iterator[Case]:
    key = jax.random.key(0)
    for n in cfg["particles"]:
        for bandwidth in ("h fixed", "median"):
            yield svgd_case(n, cfg["steps"], bandwidth, key)
    for n in cfg["mirrored"]:
        yield mirrored_case("msvgd", n, cfg["steps"], key)
        yield mirrored_case("svmd", n, cfg["steps"], key)


if __name__ == "__main__":
    sys.exit(main({NAME: __name__}))
