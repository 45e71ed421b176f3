"""Argument validation for the three packages (``samplers``, ``vi``, ``diffusion``).

One rule everywhere: a value of the wrong type is a ``TypeError``, a value of the right type
that is out of range is a ``ValueError``, and the message names the argument, the value it
got and what it needs. A run that turns NaN or infinite is a :class:`NonFiniteError`, under
one policy, ``on_nonfinite="raise" | "flag"`` (:func:`check_on_nonfinite`).

Arguments are checked where they enter, outside ``jit``. A check on *values* that cannot be
made there, because the values are traced (an ``init`` compiled inside ``samplers.run``), is
run on the host when the compiled program reaches it (:func:`check_traced`); it costs one
host callback, so it belongs in ``init``, never in a step.
"""
from __future__ import annotations

import math
import operator
from typing import Callable, Optional, Sequence, Union

import jax
import numpy as np

from .base import Array, PyTree

__all__ = [
    "NonFiniteError", "ScalarOrSchedule", "check_bool", "check_choice", "check_finite_position",
    "check_finite_rows", "check_int", "check_key", "check_mesh", "check_on_nonfinite",
    "check_one_array",
    "check_positive", "check_scalar_logdensity", "check_shape", "check_step_size",
    "check_traced", "describe_shapes", "is_concrete",
]

#: A step size: a number, or a schedule ``count -> step size`` (optax's ``ScalarOrSchedule``).
ScalarOrSchedule = Union[float, Array, Callable[[Array], Array]]

#: The values of ``on_nonfinite``: raise a :class:`NonFiniteError`, or flag and go on.
ON_NONFINITE = ("raise", "flag")


class NonFiniteError(FloatingPointError):
    """A run turned NaN or infinite (a chain of ``samplers.run``, the particle weights of a
    filter, a gradient estimate of ``samplers.smc.fit``). The message names where (chain,
    step, time step, iteration); ``result`` holds what was computed before it, or None."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result

    @property
    def trace(self):
        """``result`` under the name ``samplers.run`` gives it: the draws made so far."""
        return self.result


def check_on_nonfinite(value) -> str:
    """Return ``on_nonfinite`` if it is "raise" or "flag"; raise TypeError/ValueError if not."""
    return check_choice("on_nonfinite", value, ON_NONFINITE)


def check_int(name: str, value, *, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """Return ``value`` as an ``int``.

    Python and NumPy integer scalars are accepted; ``bool``, arrays (even 0-d: a count is a
    static size, hashed by ``jit``, and callers may keep the value as given) and every float,
    even an integral one such as ``10.0``, are a TypeError (a count is never computed in
    floating point by accident); a value below ``minimum`` or above ``maximum`` is a
    ValueError.
    """
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, (bool, np.bool_, np.ndarray, jax.Array)):
        index = None
    else:
        try:
            index = operator.index(value)
        except TypeError:
            index = None
    if index is None:
        raise TypeError(f"{name} must be an integer {bounds}, got {value!r} "
                        f"of type {type(value).__name__}")
    if index < minimum or (maximum is not None and index > maximum):
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return index


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is True or False (NumPy's too); raise TypeError otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value, choices: Sequence[str]):
    """Return ``value`` if it is one of ``choices`` (strings); TypeError for a value that is
    not a string, ValueError for a string that is not a choice."""
    expected = f"{name} must be one of {', '.join(choices)}; got {value!r}"
    if not isinstance(value, str):
        raise TypeError(expected)
    if value not in choices:
        raise ValueError(expected)
    return value


def check_positive(name: str, value) -> None:
    """Raise TypeError unless ``value`` is a real number, ValueError unless it is finite and
    > 0."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_step_size(name: str, value: ScalarOrSchedule) -> ScalarOrSchedule:
    """Return ``value`` if it is a schedule (a callable ``count -> step size``) or a finite
    number > 0; raise as :func:`check_positive` otherwise."""
    if not callable(value):
        check_positive(name, value)
    return value


def check_shape(name: str, x, shape: tuple) -> None:
    """Raise ValueError unless ``x`` has shape ``shape``, where None stands for any size of
    that axis (``(T, None)``: T rows of any length)."""
    got = tuple(np.shape(x))
    if len(got) != len(shape) or any(s is not None and g != s for g, s in zip(got, shape)):
        expected = "(" + ", ".join("any" if s is None else str(s) for s in shape) + \
            ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {expected}, got {got}")


def check_one_array(name: str, value, expected: str) -> None:
    """Raise TypeError naming ``name`` unless ``value`` is one array (or a nested list of
    numbers), not a pytree: for the samplers whose position is one array by construction
    (a particle cloud, a reference path). ``expected`` describes its shape, e.g. "(n, 2)"."""
    if isinstance(value, (dict, tuple)) or not (hasattr(value, "shape") or isinstance(value, list)):
        raise TypeError(f"{name} must be one array of shape {expected} (not a pytree), got "
                        f"{type(value).__name__}")


def is_concrete(tree: PyTree) -> bool:
    """True when no leaf of ``tree`` is a tracer (its values can be read on the host now)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def check_traced(check: Callable[..., None], *args, throw: bool = True) -> None:
    """Run ``check(*args)``, a host-side check that raises on bad values, also when ``args``
    are traced.

    Concrete ``args``: ``check`` runs now and its exception propagates as it is. Traced
    ``args`` (inside ``jit``, ``vmap``, ``samplers.run``): ``check`` runs on the host when the
    compiled program reaches this point (``jax.debug.callback``; under ``vmap`` once per
    element, on unbatched values), and its exception stops the program: JAX raises a
    ``jax.errors.JaxRuntimeError`` whose message ends with the check's exception and message,
    the role of diffrax's ``error_if``. ``throw=False`` leaves the check out (nothing is
    compiled for it). Each call is one host round trip: use it once per run (in ``init``),
    never inside a step's loop.
    """
    if not throw:
        return
    if is_concrete(args):
        check(*args)
    else:
        jax.debug.callback(check, *args)


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
      ValueError: naming ``position_name``, the shape given (or the text ``given``, e.g.
        "has dimension 4") and (when known) the shape ``expected_shape`` when ``fn`` fails on
        ``position`` with a shape or type error (a position of the wrong shape for it).
      TypeError: naming ``name`` when ``fn(position)`` is not a scalar.

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
    if not is_concrete(x):
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


def check_key(name: str, value, call: str, *, batched: bool = False) -> None:
    """Raise TypeError unless ``value`` (the argument ``name``) is a ``jax.random.key`` (or
    the raw uint32 data of one), or with ``batched`` an array of keys. ``call`` is the
    function's signature, e.g.
    ``"run(key, algorithm, initial_position, num_steps)"``: every function whose default
    draws takes its key first, so a misplaced argument is the usual cause."""
    dtype = getattr(value, "dtype", None)
    shape = tuple(getattr(value, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        ok = batched or shape == ()
    else:
        ok = dtype == np.uint32 and shape[-1:] == (2,) and (batched or len(shape) == 1)
    if not ok:
        what = f"an array of dtype {dtype} and shape {shape}" if dtype is not None else repr(value)
        if len(what) > 80:
            what = type(value).__name__
        raise TypeError(f"{name} must be a jax.random.key{' (or an array of keys)' if batched else ''}"
                        f", got {what}; the key is the first argument: {call}")
