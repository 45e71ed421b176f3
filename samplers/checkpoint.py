"""Checkpoints of long loops (:func:`samplers.run`, :func:`diffusion.train`): the loop's state
and what it has kept, in one .npz file replaced atomically, restored bit for bit (PRNG keys
included) under a fingerprint of the run that wrote it."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from .base import PyTree

__all__ = ["save", "load"]


def _to_numpy(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def _from_numpy(array, like):
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(array), impl=jax.random.key_impl(like))
    return jnp.asarray(array, dtype=like.dtype)


def save(path: str, fingerprint: str, done: int, carry: PyTree, records: PyTree) -> None:
    """Write ``carry`` (the loop's state) and ``records`` (what it kept so far) after ``done``
    draws or steps, atomically: a temporary file, fsync, then a rename over the last
    checkpoint, so a crash mid-write leaves the previous one intact."""
    arrays = {"fingerprint": np.asarray(fingerprint), "draws_done": np.asarray(done)}
    for name, tree in (("carry", carry), ("records", records)):
        for i, leaf in enumerate(jax.tree.leaves(tree)):
            arrays[f"{name}_{i}"] = _to_numpy(leaf)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str, fingerprint: str, carry_like: PyTree, records_like: PyTree):
    """``(done, carry, records)`` from a checkpoint written by :func:`save` with the same
    ``fingerprint`` (a ValueError otherwise), restored to the structures, dtypes and key
    types of ``carry_like`` and ``records_like`` (arrays or shapes); records None when
    ``done`` is 0."""
    with np.load(path) as f:
        if str(f["fingerprint"]) != fingerprint:
            raise ValueError(
                f"checkpoint {path!r} was written by a different run (other arguments, key, "
                "initial values, data or length); delete it or pass another checkpoint path")

        def restore(name, like):
            leaves, treedef = jax.tree.flatten(like)
            return jax.tree.unflatten(
                treedef, [_from_numpy(f[f"{name}_{i}"], x) for i, x in enumerate(leaves)])

        draws_done = int(f["draws_done"])
        records = restore("records", records_like) if draws_done else None
        return draws_done, restore("carry", carry_like), records
