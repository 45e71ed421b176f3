"""Minibatches drawn under jit, one fresh batch per step and per chain."""
from __future__ import annotations

import dataclasses

import jax

from .base import PyTree, tree_first_axis
from .validation import check_bool, check_int

__all__ = ["Minibatches", "minibatches"]


@dataclasses.dataclass(frozen=True)
class Minibatches:
    """A data set (pytree of arrays sharing a leading datum axis) and how to draw from it.

    ``sample(key)`` returns ``batch_size`` data, drawn uniformly without replacement within
    a batch (``replace=False``, the default) or with replacement.
    """

    data: PyTree
    batch_size: int
    replace: bool = False

    @property
    def size(self) -> int:
        """Number of data points N."""
        return tree_first_axis(self.data)

    def sample(self, key) -> PyTree:
        if self.replace:
            idx = jax.random.randint(key, (self.batch_size,), 0, self.size)
        else:  # the indices of the k largest of N iid uniforms: a uniform k-subset
            idx = jax.lax.top_k(jax.random.uniform(key, (self.size,)), self.batch_size)[1]
        return jax.tree.map(lambda x: x[idx], self.data)


jax.tree_util.register_dataclass(
    Minibatches, data_fields=["data"], meta_fields=["batch_size", "replace"])


def minibatches(data: PyTree, batch_size: int, replace: bool = False) -> Minibatches:
    """Minibatches of ``batch_size`` from ``data`` (leaves share the leading datum axis N).

    Pass the result as ``samplers.run(..., batches=...)``: each step of each chain then gets
    its own batch, drawn inside the compiled loop from the step's key.
    """
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data must contain at least one array, got an empty pytree")
    n = tree_first_axis(data)
    if n is None:
        shapes = [getattr(x, "shape", ()) for x in leaves]
        raise ValueError(f"data leaves must share a leading datum axis, got shapes {shapes}")
    batch_size = check_int("batch_size", batch_size)
    check_bool("replace", replace)
    if not replace and batch_size > n:
        raise ValueError(f"batch_size must be <= the number of data points {n} when "
                         f"drawing without replacement, got {batch_size}")
    return Minibatches(data, batch_size, bool(replace))
