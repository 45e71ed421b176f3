"""The algorithm type shared by every sampler, the type aliases ``Array`` and ``PyTree``
used across the three packages, and small pytree helpers.

An algorithm is an immutable pair of pure functions (Blackjax-style, [Cabezas2024]):

* ``init(position, key=None) -> state``: the state is a NamedTuple with a ``position``
  field (any pytree) and, when the sampler evaluates the target, a ``logdensity`` field;
* ``step(key, state, batch=None) -> (state, info)``: one transition; ``info`` is a
  NamedTuple of per-step statistics (acceptance rate, ...). ``batch`` carries per-step
  data (a minibatch) for the samplers that use it; the others ignore it.

Samplers with tunable parameters (step size, inverse mass matrix, trajectory length, ...)
also expose ``kernel(key, state, batch, params) -> (state, info)``, the same transition with
the parameters (a NamedTuple of arrays, ``algorithm.params``) as a traced argument: ``step``
is ``kernel`` with ``params`` fixed. Warm-up adaptation (:mod:`samplers.adaptation`) changes
``params`` inside one compiled loop, and since ``init`` and ``kernel`` compare equal for
algorithms rebuilt from the same log-density (:class:`Bound`), ``samplers.run`` of
``mala(f, h2)`` after ``mala(f, h1)`` reuses the compiled program.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

PyTree = Any
Array = jax.Array


class Algorithm(NamedTuple):
    """A sampler: ``init`` and ``step`` (and, for tunable samplers, ``kernel`` and ``params``).

    Attributes:
      init: ``init(position, key=None) -> state``.
      step: ``step(key, state, batch=None) -> (state, info)``.
      kernel: ``kernel(key, state, batch, params) -> (state, info)``, or None when the
        sampler has no parameters to adapt.
      params: the parameters ``step`` uses: a NamedTuple of arrays (``step_size``, and for
        the Langevin family ``inverse_mass_matrix``, ...), what ``kernel`` takes; or None.
      name: a short name used in reports ("mala", "ula", ...).
    """

    init: Callable[..., Any]
    step: Callable[..., tuple]
    kernel: Optional[Callable[..., tuple]] = None
    params: Any = None
    name: str = "algorithm"

    @property
    def step_size(self) -> Optional[float]:
        """The constant step size of ``step`` (None for a schedule or no step size)."""
        h = getattr(self.params, "step_size", None)
        return None if h is None else float(h)


class StepSize(NamedTuple):
    """``params`` of an algorithm whose only parameter is its (reported) step size."""

    step_size: Any


@dataclasses.dataclass(frozen=True)
class Bound:
    """``fn`` with its leading arguments fixed, like ``functools.partial``, but equal (and of
    equal hash) to another ``Bound`` of the same function and arguments: the ``init`` and
    ``kernel`` of an algorithm rebuilt from the same log-density are then the same static
    argument to ``jax.jit``, and nothing is compiled again. ``args`` must be hashable (the
    log-density function, strings, floats); arrays belong in ``params``."""

    fn: Callable
    args: tuple = ()

    def __call__(self, *args, **kwargs):
        return self.fn(*self.args, *args, **kwargs)


def with_params(kernel: Callable, params) -> Callable:
    """``step(key, state, batch=None)``: ``kernel`` with ``params`` fixed."""
    def step(key, state, batch=None):
        return kernel(key, state, batch, params)

    return step


class EmptyInfo(NamedTuple):
    """Info of a transition that reports nothing beyond its state."""


# ---------------------------------------------------------------------------- pytrees

def tree_normal(key: Array, tree: PyTree) -> PyTree:
    """Standard normal noise with the structure, shapes and dtypes of ``tree``."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = [key] if len(leaves) == 1 else jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noise)


def tree_all_finite(x: PyTree) -> Array:
    """True when every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(x)]))


def tree_first_axis(x: PyTree) -> Optional[int]:
    """The common leading dimension of the leaves of ``x`` (None if they differ)."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(x)}
    return sizes.pop() if len(sizes) == 1 else None


# ------------------------------------------------------------------------ conversion

def as_float(tree: PyTree) -> PyTree:
    """``tree`` with its integer and boolean leaves converted to the default float dtype.

    The library's rule for integer input (positions, particles, a Gaussian's mean and scale,
    diffusion batches): it is converted where it enters (``init``), as a user who writes
    ``jnp.zeros(3, int)`` or ``np.arange(6).reshape(2, 3)`` expects, never refused and never
    differentiated as an integer. Float and complex leaves are kept as they are; tracers are
    converted too (the dtype is static), so this works under ``jit``/``vmap``.
    """
    default = jnp.result_type(float)

    def convert(leaf):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.inexact):
            return leaf
        return jnp.asarray(leaf, default)

    return jax.tree.map(convert, tree)
