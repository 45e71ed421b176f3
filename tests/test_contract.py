"""The contract every :class:`samplers.Algorithm` keeps, checked over all of them at once
(as BlackJAX runs one parametrised test over its samplers): Langevin (ULA, MALA, MALT, SGLD,
underdamped), FA-LD, the Stein samplers (SVGD, mirrored SVGD, SVMD, SVNG), the sliced
Wasserstein flow and PaRIS particle Gibbs.

For each: :func:`samplers.run` (key first) gives a :class:`samplers.Trace` with (chain, draw)
axes; the same key gives bit-identical draws and another key other draws (the Stein samplers
are deterministic given their particles: another key gives the same draws); ``step`` under
``jax.jit(jax.vmap(...))`` over states and keys gives each chain a transition of its own
state and key alone (bit-identical when the other chains change or the chains are
reordered: one compiled program, no chain reads another); a position that is
a pytree (a dict of two leaves) runs like an array, or, for the samplers whose position is
one array by construction (the SW flow's particle cloud matched to a target cloud, PPG's
reference path), is refused with an error naming the position; and ``trace.to_arviz()`` has
one posterior variable per leaf with dims (chain, draw, *event shape).

Sizes are tiny (2-d targets, 5 particles, 6 time steps, 4 steps, 2 chains): the contract,
not the statistics, is under test. A new algorithm is one entry of ``CASES``.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import vi
from samplers import smc, stein
from samplers.stein import mirror

NUM_STEPS, NUM_CHAINS = 4, 2


def logdensity(position):
    """Standard normal log-density over any pytree (a sum over its leaves)."""
    return -0.5 * sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(position))


def score_estimate(position, batch):
    """An exact 'stochastic' gradient for SGLD (the batch is unused)."""
    del batch
    return jax.grad(logdensity)(position)


class Built(NamedTuple):
    """An algorithm with a small initial position, and the same sampler over a pytree
    position (a dict of two leaves), or, where the sampler's position is one array by
    construction, ``pytree = None`` and ``refusal`` the text its error must contain."""

    algorithm: samplers.Algorithm
    position: object
    pytree: Optional[tuple[samplers.Algorithm, object]] = None
    refusal: Optional[str] = None
    stochastic: bool = True


POINT = jnp.array([0.3, -0.2], jnp.float32)
POINT_TREE = {"a": jnp.array([0.3, -0.2], jnp.float32), "b": jnp.array(0.5, jnp.float32)}
CLOUD = jnp.linspace(-1.0, 1.0, 10, dtype=jnp.float32).reshape(5, 2)
CLOUD_TREE = {"a": CLOUD, "b": jnp.linspace(-0.5, 0.5, 5, dtype=jnp.float32)}


def point_sampler(make: Callable[[Callable], samplers.Algorithm]) -> Callable[[], Built]:
    """A sampler of one point, built for the array and the pytree position (same code)."""
    return lambda: Built(make(logdensity), POINT, (make(logdensity), POINT_TREE))


def particle_sampler(make: Callable[[Callable], samplers.Algorithm]) -> Callable[[], Built]:
    """A deterministic sampler of a particle cloud (leading particle axis on every leaf)."""
    return lambda: Built(make(logdensity), CLOUD, (make(logdensity), CLOUD_TREE),
                         stochastic=False)


def sw_flow() -> Built:
    target = jnp.linspace(-2.0, 2.0, 14, dtype=jnp.float32).reshape(7, 2)
    return Built(samplers.sliced_wasserstein_flow(target, 0.1, num_projections=4), CLOUD,
                 refusal="position")


def ppg() -> Built:
    model = smc.LinearGaussian(0.9, 0.5, 1.0, 1.0, 0.0, 1.0)
    _, ys = smc.simulate(jax.random.key(0), model, 6)
    path = jnp.zeros((6, 1), jnp.float32)
    return Built(smc.ppg(model, ys, lambda t, x, x_next: x * x_next, 4), path,
                 refusal="reference path")


def gaussian_vi(make: Callable[[Callable], samplers.Algorithm]) -> Callable[[], Built]:
    """A Gaussian VI algorithm: its position is a vi.Gaussian (mean, scale); a pytree
    log-density goes through vi.ravel_logdensity, which the refusal names."""
    return lambda: Built(make(logdensity), vi.Gaussian.standard(2),
                         refusal="vi.ravel_logdensity")


# (name, builder): every samplers.Algorithm the library builds
CASES = [
    ("ula", point_sampler(lambda f: samplers.ula(f, 0.1))),
    ("mala", point_sampler(lambda f: samplers.mala(f, 0.1))),
    ("malt", point_sampler(lambda f: samplers.malt(f, 0.1, 2))),
    ("sgld", point_sampler(lambda f: samplers.sgld(score_estimate, 0.1))),
    ("underdamped", point_sampler(lambda f: samplers.underdamped(f, 0.1))),
    ("fald", point_sampler(lambda f: samplers.fald([f, f], 2, 0.1))),
    ("svgd", particle_sampler(lambda f: stein.svgd(f, step_size=0.1))),
    ("msvgd", particle_sampler(lambda f: stein.msvgd(f, mirror.box_entropic(-3.0, 3.0),
                                                     step_size=0.1))),
    ("svmd", particle_sampler(lambda f: stein.svmd(f, mirror.box_entropic(-3.0, 3.0),
                                                   step_size=0.1))),
    ("svng", particle_sampler(lambda f: stein.svng(f, lambda x: jnp.eye(x.shape[-1]),
                                                   step_size=0.1))),
    ("sw_flow", sw_flow),
    ("ppg", ppg),
    ("fbgvi", gaussian_vi(lambda f: vi.fbgvi(f, 0.1, num_samples=4))),
    ("sfbgvi", gaussian_vi(lambda f: vi.sfbgvi(f, 0.1))),
    ("bwgd", gaussian_vi(lambda f: vi.bwgd(f, 0.1, num_samples=4))),
    ("reparam_vi", gaussian_vi(lambda f: vi.reparam_vi(f, step_size=0.1))),
]
NAMES = [name for name, _ in CASES]
@functools.lru_cache(maxsize=None)
def built(name: str) -> Built:
    """Each case built once: the same algorithm value reuses run's compiled program."""
    return dict(CASES)[name]()


@functools.lru_cache(maxsize=None)
def traced(name: str, seed: int, pytree: bool = False) -> samplers.Trace:
    case = built(name)
    algorithm, position = case.pytree if pytree else (case.algorithm, case.position)
    return samplers.run(jax.random.key(seed), algorithm, position, NUM_STEPS,
                        num_chains=NUM_CHAINS, progress=False)


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# functions that return an Algorithm without building a sampler of their own
TRANSFORMS = {"sharded"}  # FA-LD on a device mesh: tests/test_federated.py, equal to fald's run
ALIASES = {"sliced_wasserstein_flow": "sw_flow"}


def test_every_algorithm_is_a_case():
    """Every public function of samplers and vi that returns an Algorithm is a case here."""
    builders = set()
    for package in (samplers, vi):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] in ("cli", "demos", "verify") or ".verify" in info.name:
                continue  # commands, demos and checks build no sampler of their own
            module = importlib.import_module(info.name)
            for name in getattr(module, "__all__", ()):
                fn = getattr(module, name)
                if inspect.isfunction(fn) and inspect.signature(fn).return_annotation in (
                        samplers.Algorithm, "Algorithm"):
                    builders.add(name)
    assert {ALIASES.get(n, n) for n in builders - TRANSFORMS} <= set(NAMES), builders


@pytest.mark.parametrize("name", NAMES)
def test_run_gives_a_trace_and_arviz_dims(name):
    trace = traced(name, 0)
    position = built(name).position
    for leaf, start in zip(jax.tree.leaves(trace.positions), jax.tree.leaves(position)):
        assert leaf.shape == (NUM_CHAINS, NUM_STEPS) + jnp.shape(start), (name, leaf.shape)
        assert np.all(np.isfinite(leaf)), name
    posterior = trace.to_arviz()["posterior"]
    variables = list(posterior.data_vars)
    assert len(variables) == len(jax.tree.leaves(position)), variables
    for var in variables:
        sizes = dict(posterior[var].sizes)
        assert list(sizes)[:2] == ["chain", "draw"], (name, sizes)
        assert (sizes["chain"], sizes["draw"]) == (NUM_CHAINS, NUM_STEPS), (name, sizes)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_draws_other_key_other_draws(name):
    first = traced(name, 0).positions
    again = samplers.run(jax.random.key(0), built(name).algorithm, built(name).position,
                         NUM_STEPS, num_chains=NUM_CHAINS, progress=False).positions
    assert _equal(first, again), name
    assert _equal(first, traced(name, 1).positions) != built(name).stochastic, name


@pytest.mark.parametrize("name", NAMES)
def test_step_under_jit_and_vmap_is_each_chains_own_step(name):
    """jit(vmap(step)) over three chains (states and keys); then chain 0 kept, chain 2 moved
    to slot 1 and a new chain in slot 2: chain 0's and chain 2's transitions are unchanged,
    bit for bit (one compiled program)."""
    case = built(name)
    alg = case.algorithm
    scales = jnp.array([1.0, 0.9, 1.1, 0.8], jnp.float32)
    states = jax.vmap(lambda c: alg.init(jax.tree.map(lambda x: c * x, case.position)))(scales)
    keys = jax.random.split(jax.random.key(2), 4)
    step = jax.jit(jax.vmap(alg.step))
    first, _ = step(keys[:3], jax.tree.map(lambda s: s[:3], states))
    order = jnp.array([0, 2, 3])
    second, _ = step(keys[order], jax.tree.map(lambda s: s[order], states))
    for a, b in zip(jax.tree.leaves(first.position), jax.tree.leaves(second.position)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[1]), name
        assert np.all(np.isfinite(a)) and a.shape[0] == 3, name


@pytest.mark.parametrize("name", NAMES)
def test_pytree_positions(name):
    """A pytree position runs with the same code as an array (its draws keep its tree), or,
    for the samplers whose position is one array by construction, is refused clearly."""
    case = built(name)
    if case.pytree is None:
        tree = jax.tree.map(lambda x: {"a": x, "b": x}, case.position)
        with pytest.raises((TypeError, ValueError), match=case.refusal):
            samplers.run(jax.random.key(0), case.algorithm, tree, NUM_STEPS, progress=False)
        return
    trace = traced(name, 0, pytree=True)
    _, position = case.pytree
    assert jax.tree.structure(trace.positions) == jax.tree.structure(position), name
    for leaf, start in zip(jax.tree.leaves(trace.positions), jax.tree.leaves(position)):
        assert leaf.shape == (NUM_CHAINS, NUM_STEPS) + jnp.shape(start), name
        assert np.all(np.isfinite(leaf)), name
    assert len(trace.to_arviz()["posterior"].data_vars) == len(jax.tree.leaves(position))
