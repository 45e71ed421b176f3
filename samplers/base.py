"""The algorithm type shared by every sampler, and small pytree helpers.

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
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

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


def tree_axpy(a, x: PyTree, y: PyTree) -> PyTree:
    """``a * x + y`` leaf by leaf."""
    return jax.tree.map(lambda u, v: a * u + v, x, y)


def tree_sqnorm(x: PyTree) -> Array:
    """Squared Euclidean norm of all leaves together."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(x))


def tree_all_finite(x: PyTree) -> Array:
    """True when every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(x)]))


def tree_first_axis(x: PyTree) -> Optional[int]:
    """The common leading dimension of the leaves of ``x`` (None if they differ)."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(x)}
    return sizes.pop() if len(sizes) == 1 else None


# ------------------------------------------------------------------------- validation

def check_positive(name: str, value, *, allow_callable: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0 (or a schedule, if allowed)."""
    if allow_callable and callable(value):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_mesh(mesh, count: int, what: str) -> int:
    """Raise TypeError unless ``mesh`` is a ``jax.sharding.Mesh``, and ValueError unless
    ``count`` (``what``: "num_chains", "the number of clients (12)", ...) splits evenly over
    its first axis; returns that axis's size."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    size = mesh.shape[mesh.axis_names[0]]
    if count % size:
        raise ValueError(f"{what} must be a multiple of the mesh axis {mesh.axis_names[0]!r} "
                         f"size ({size}), got {count}")
    return size


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


def describe_shapes(tree: PyTree) -> str:
    """The shape of an array, or the shapes of a pytree's leaves, for error messages."""
    def shape(leaf):
        return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf))

    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if len(leaves) == 1 and not leaves[0][0]:
        return str(shape(leaves[0][1]))
    return "{" + ", ".join(f"{jax.tree_util.keystr(path)}: {shape(leaf)}"
                           for path, leaf in leaves) + "}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_scalar_logdensity(name: str, fn: Callable, position: PyTree, *,
                            position_name: str = "position",
                            expected_shape: Optional[str] = None,
                            given: Optional[str] = None) -> None:
    """Check, on shapes only (``jax.eval_shape``, nothing is compiled or run), that
    ``fn(position)`` is defined and returns a scalar.

    Raises:
      ValueError naming ``position_name``, the shape given (or the text ``given``, e.g.
        "has dimension 4") and (when known) the shape ``expected_shape`` when ``fn`` fails on
        ``position`` with a shape or type error (a position of the wrong shape for it);
      TypeError naming ``name`` when ``fn(position)`` is not a scalar.

    Works on tracers (under ``jit``/``vmap`` the per-chain shape is checked).
    """
    try:
        out = jax.eval_shape(fn, position)
    except jax.errors.ConcretizationTypeError:
        raise  # Python control flow on traced values: JAX's own message says what to do
    except (TypeError, ValueError, IndexError) as err:
        expected = f", where {name} expects {expected_shape}" if expected_shape is not None else ""
        given = f"has shape {describe_shapes(position)}" if given is None else given
        raise ValueError(
            f"evaluating {name} at {position_name} failed: {position_name} {given}{expected}; "
            f"{name} raised {_first_line(err)}"
        ) from err
    shape = getattr(out, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must return a scalar log-density, got "
                        f"{type(out).__name__} {jax.tree.map(lambda a: a.shape, out)}")
    if shape != ():
        raise TypeError(
            f"{name} must return a scalar log-density, got an array of shape {shape}; "
            "sum over data points (and use jax.vmap over chains outside the log-density)"
        )


def check_finite_rows(name: str, x) -> None:
    """Raise ValueError naming the rows (first axis) of a concrete array ``x`` that hold a
    NaN or infinite entry; tracers are skipped (checked where the array enters)."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if arr.ndim == 0:
        if not np.isfinite(arr):
            raise ValueError(f"{name} must be finite, got {arr!r}")
        return
    bad = np.flatnonzero(~np.all(np.isfinite(arr.reshape(arr.shape[0], -1)), axis=1))
    if bad.size:
        rows = ", ".join(map(str, bad[:10].tolist())) + (", ..." if bad.size > 10 else "")
        raise ValueError(f"{name} must be finite, got NaN or infinite entries in "
                         f"{bad.size} of its {arr.shape[0]} rows (rows {rows})")


def check_finite_position(name: str, position: PyTree) -> None:
    """Raise ValueError when a concrete position has a NaN or infinite entry."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(position):
        arr = np.asarray(leaf)
        if not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "array"
            raise ValueError(f"{name} must be finite, got non-finite values in {where}: {arr!r}")


def check_key(name: str, key, call: str, *, batched: bool = False) -> None:
    """Raise TypeError unless ``key`` is a ``jax.random.key`` (or the raw uint32 data of
    one), or with ``batched`` an array of keys. ``call`` is the function's signature, e.g.
    ``"run(key, algorithm, initial_position, num_steps)"``: every function whose default
    draws takes its key first, so a misplaced argument is the usual cause."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        ok = batched or shape == ()
    else:
        ok = dtype == np.uint32 and shape[-1:] == (2,) and (batched or len(shape) == 1)
    if not ok:
        what = f"an array of dtype {dtype} and shape {shape}" if dtype is not None else repr(key)
        if len(what) > 80:
            what = type(key).__name__
        raise TypeError(f"{name} must be a jax.random.key{' (or an array of keys)' if batched else ''}"
                        f", got {what}; the key is the first argument: {call}")
