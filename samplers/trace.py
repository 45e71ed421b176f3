"""The result of :func:`samplers.run` and its export to ArviZ."""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from .base import PyTree

__all__ = ["Trace", "from_dict"]


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return ".".join(parts)


def named_leaves(tree: PyTree, default: str) -> dict[str, Any]:
    """Flatten a pytree to ``{dotted path: leaf}``; a bare array is named ``default``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {(_path_name(path) or default): leaf for path, leaf in leaves}


def from_dict(groups: dict[str, dict[str, Any]]):
    """ArviZ data from ``{group: {name: array (chain, draw, ...)}}``, for ArviZ 0.x and 1.x.

    ArviZ 0.x takes the groups as keyword arguments and returns InferenceData; 1.x takes
    one nested dict and returns an ``xarray.DataTree``.
    """
    import arviz as az

    groups = {g: {k: np.asarray(v) for k, v in d.items()} for g, d in groups.items() if d}
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict(groups)
    warmup = any(g.startswith("warmup_") for g in groups)
    return az.from_dict(**groups, **({"save_warmup": True} if warmup else {}))


class Trace(NamedTuple):
    """Draws of a run.

    Attributes:
      positions: the position pytree with leading (chain, draw) axes.
      stats: ``{name: array (chain, draw)}``: ``lp`` (log-density, where the sampler keeps
        it), ``diverging`` (position non-finite), ``step_size``, and each field of the
        sampler's info (``acceptance_rate``, ...).
      final_state: the sampler state after the last step, leading chain axis.
      nonfinite_step: (chain,) the first step at which each chain turned non-finite, -1 if none.
      params: the sampler's parameters the draws were made with (after warm-up adaptation),
        leading chain axis; None for samplers without tunable parameters.
      num_grads: (chain,) gradient evaluations of the whole run, warm-up included (a MALT
        trajectory counts its steps, every other transition one), for ESS per gradient.
      warmup_positions, warmup_stats: the warm-up's draws and statistics, (chain, step)
        leading axes, with ``samplers.run(..., keep_warmup=True)``; else None.
    """

    positions: PyTree
    stats: dict
    final_state: Any
    nonfinite_step: Any
    params: Any = None
    num_grads: Any = None
    warmup_positions: PyTree = None
    warmup_stats: Optional[dict] = None

    @property
    def num_chains(self) -> int:
        return int(jax.tree.leaves(self.positions)[0].shape[0])

    @property
    def num_draws(self) -> int:
        return int(jax.tree.leaves(self.positions)[0].shape[1])

    def to_arviz(self, default_name: str = "x", constrain_fn=None):
        """ArviZ data with a ``posterior`` group (one variable per pytree leaf, a bare array
        is named ``default_name``) and ``sample_stats`` (ArviZ's names: ``lp``,
        ``acceptance_rate``, ``diverging``, ``step_size``, ...); with the warm-up kept, also
        ``warmup_posterior`` and ``warmup_sample_stats``.

        ``constrain_fn`` maps one position to the variables to export, e.g. the third value
        of :func:`samplers.numpyro.logdensity`, which returns a NumPyro model's constrained
        sample sites and deterministic sites under their own names; it is applied to every
        draw (``jax.vmap`` over chains and draws).

        A run with ``on_nonfinite="flag"`` whose chains turned NaN or infinite is exported
        with a RuntimeWarning naming those chains (their draws are marked in
        ``sample_stats["diverging"]``), never silently.
        """
        first_bad = np.asarray(self.nonfinite_step)
        if np.any(first_bad >= 0):
            bad = np.flatnonzero(first_bad >= 0)
            warnings.warn(f"chains {bad.tolist()} turned non-finite (NaN or inf) at steps "
                          f"{first_bad[bad].tolist()}; their draws are marked in "
                          "sample_stats['diverging']", RuntimeWarning, stacklevel=2)
        positions = self.positions
        if constrain_fn is not None:
            positions = jax.vmap(jax.vmap(constrain_fn))(positions)
        groups = {"posterior": named_leaves(positions, default_name),
                  "sample_stats": dict(self.stats)}
        if self.warmup_positions is not None:
            warmup = self.warmup_positions
            if constrain_fn is not None:
                warmup = jax.vmap(jax.vmap(constrain_fn))(warmup)
            groups["warmup_posterior"] = named_leaves(warmup, default_name)
            groups["warmup_sample_stats"] = dict(self.warmup_stats)
        return from_dict(groups)
