"""Inference Gym posteriors as flat, unconstrained log-densities with their ground truth.

:func:`load` builds one target of ``inference_gym.using_jax`` and returns a :class:`GymTarget`:

* ``logdensity_fn(z)``: the log-density of the unconstrained vector ``z`` (d,), that is the
  model's unnormalised log posterior at ``x = b(z)`` plus ``log |det J_b(z)|``, where ``b`` is
  the target's ``default_event_space_bijector`` (applied part by part; each part's Jacobian
  term is summed over that part's event dimensions);
* ``constrain(z)``: the target's ``sample_transformations['identity']`` of ``b(z)`` (the model's
  parameters; for the vectorised stochastic volatility model the log-volatilities rather than
  their whitened innovations), flattened to (d,) in the order of the ground truth;
* ``truth_mean`` / ``truth_sd``: that transformation's ground-truth means and standard
  deviations, flattened the same way.

Data. No machine here can download: the German credit and radon targets read their data
through ``tensorflow_datasets``, which is not installed. :func:`_local_tfds` stands in for the
two ``tfds.load`` calls with the files of ``/work/shared/data`` (see its README) and leaves the
Inference Gym's own processing (label flip, normalisation, filtering, size checks) unchanged:

* ``german_credit_numeric``: features = the first 24 columns, TFDS label = 2 - last column
  (the Gym flips it back to ``last - 1``);
* ``radon``: ``srrs2.dat`` joined with ``cty.dat`` on FIPS = 1000 stfips + county fips,
  duplicates of ``idnum`` dropped, activity and Uppm as float32, the strings unstripped
  (what the TFDS ``radon`` builder does).

The S&P 500, Brownian motion and eight-schools data ship inside the Inference Gym.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GymTarget", "TARGETS", "load", "DATA_DIR"]

DATA_DIR = Path(os.environ.get("SAMPLERS_BENCH_DATA", "/work/shared/data"))

# name -> (Inference Gym class, constructor kwargs, short description)
TARGETS = {
    "german_credit": ("GermanCreditNumericLogisticRegression", {},
                      "German credit, logistic regression"),
    "sparse_logistic": ("GermanCreditNumericSparseLogisticRegression", {},
                        "German credit, sparse (horseshoe) logistic regression"),
    "brownian": ("BrownianMotionUnknownScalesMissingMiddleObservations", {},
                 "Brownian motion, unknown scales, missing middle observations"),
    "stochastic_volatility": ("VectorizedStochasticVolatilitySP500Small", {},
                              "stochastic volatility, S&P 500 (100 days)"),
    "radon": ("RadonContextualEffectsMinnesota", {"dtype": jnp.float32},
              "radon contextual effects, Minnesota"),
    "eight_schools": ("EightSchools", {}, "eight schools (centred: a funnel)"),
    "item_response": ("SyntheticItemResponseTheory", {},
                      "synthetic item response theory"),
}


@dataclasses.dataclass(frozen=True)
class GymTarget:
    name: str
    gym_name: str
    description: str
    dim: int
    logdensity_fn: Callable
    constrain: Callable
    truth_mean: np.ndarray
    truth_sd: np.ndarray


# ------------------------------------------------------------------------------ data

def _german_credit_rows():
    # The UCI original is whitespace-separated fixed-width text; this copy is comma-separated
    # with a header, and where two fixed-width fields touched (a 3-digit credit amount) they
    # stayed in one cell ("2 126"): split on commas and blanks alike (TFDS uses line.split()).
    with open(DATA_DIR / "german.data-numeric") as f:
        rows = [line.replace(",", " ").split() for line in f if line.strip()]
    if not rows[0][0].lstrip("-").isdigit():  # header
        rows = rows[1:]
    table = np.array([[int(v) for v in r] for r in rows], dtype=np.int64)
    if table.shape != (1000, 25):
        raise ValueError(f"german.data-numeric: expected 1000 x 25 values, got {table.shape}")
    return [{"features": row[:24].astype(np.int32), "label": np.int64(2 - row[24])}
            for row in table]


def _radon_table():
    """The TFDS ``radon`` split as one batch (``batch_size=-1``), from the two local files."""
    def read(path):
        with open(path) as f:
            rows = list(csv.reader(f))
        header = [h.strip() for h in rows[0]]
        return [dict(zip(header, r)) for r in rows[1:] if r]

    uppm = {}
    for r in read(DATA_DIR / "cty.dat"):
        fips = 1000 * int(r["stfips"]) + int(r["ctfips"])
        uppm.setdefault(fips, []).append(r["Uppm"])
    seen, state, county, floor, activity, u = set(), [], [], [], [], []
    for r in read(DATA_DIR / "srrs2.dat"):  # an inner join: one row per matching cty row
        fips = 1000 * int(r["stfips"]) + int(r["cntyfips"])
        for value in uppm.get(fips, []):
            if r["idnum"] in seen:  # drop_duplicates(subset='idnum'): keep the first
                continue
            seen.add(r["idnum"])
            state.append(r["state"])
            county.append(r["county"])
            floor.append(int(r["floor"]))
            activity.append(np.float32(r["activity"]))
            u.append(np.float32(value))
    return {"activity": np.array(activity, np.float32),
            "features": {"state": np.array(state, dtype=object).astype("U13"),
                         "county": np.array(county, dtype=object).astype("U13"),
                         "floor": np.array(floor, np.int32),
                         "Uppm": np.array(u, np.float32)}}


class _LocalTFDS:
    """The two ``tensorflow_datasets`` calls the Inference Gym makes, served from local files."""

    @staticmethod
    def load(name, split=None, batch_size=None, **kwargs):
        if name.startswith("german_credit_numeric"):
            return {"train": _german_credit_rows()}
        if name.startswith("radon"):
            return _radon_table()
        raise RuntimeError(f"no local copy of the TFDS data set {name!r} (no network here)")

    @staticmethod
    def as_numpy(dataset):
        return dataset


@contextlib.contextmanager
def _local_tfds():
    from inference_gym.dynamic.backend_jax.internal import data

    original = data._tfds
    data._tfds = lambda: _LocalTFDS
    try:
        yield
    finally:
        data._tfds = original


# --------------------------------------------------------------------------- flatten

def _is_shape(s) -> bool:
    return type(s).__name__ == "TensorShape"


def _flat_like(tree, like) -> list:
    """The arrays of ``tree`` in the order of the ground-truth structure ``like`` (by key where
    ``like`` is a mapping: the transformation may return a dict, an OrderedDict or a
    StructTuple with the same names)."""
    if isinstance(like, Mapping):
        get = (lambda k: tree[k]) if isinstance(tree, Mapping) else (lambda k: getattr(tree, k))
        return [get(k) for k in like]
    return [tree]


def load(name: str) -> GymTarget:
    """Build the Inference Gym target ``name`` (a key of :data:`TARGETS`)."""
    import inference_gym.using_jax as gym
    from tensorflow_probability.substrates.jax import bijectors as tfb

    gym_name, kwargs, description = TARGETS[name]
    with _local_tfds():
        model = getattr(gym.targets, gym_name)(**kwargs)
        # the data are deferred: materialise them while the local loader is in place
        model.unnormalized_log_prob(jax.tree.map(
            lambda s: jnp.zeros(s, jnp.float32), model.event_shape, is_leaf=_is_shape))

    event = model.event_shape
    is_bij = lambda b: isinstance(b, tfb.Bijector)  # noqa: E731
    bijectors = jax.tree.leaves(model.default_event_space_bijector, is_leaf=is_bij)
    shapes = [tuple(s) for s in jax.tree.leaves(event, is_leaf=_is_shape)]
    treedef = jax.tree.structure(event, is_leaf=_is_shape)
    if len(bijectors) != len(shapes):
        raise ValueError(f"{gym_name}: {len(bijectors)} bijectors for {len(shapes)} event parts")
    unc_shapes = [tuple(b.inverse_event_shape(s)) for b, s in zip(bijectors, shapes)]
    sizes = [int(np.prod(s)) for s in unc_shapes]
    splits = np.cumsum(sizes)[:-1].tolist()

    def parts(z):
        return [p.reshape(s) for p, s in zip(jnp.split(z, splits), unc_shapes)]

    def logdensity_fn(z):
        xs, ldj = [], 0.0
        for b, p, s in zip(bijectors, parts(z), unc_shapes):
            xs.append(b.forward(p))
            ldj = ldj + jnp.sum(b.forward_log_det_jacobian(p, event_ndims=len(s)))
        return model.unnormalized_log_prob(jax.tree.unflatten(treedef, xs)) + ldj

    identity = model.sample_transformations["identity"]
    truth = identity.ground_truth_mean

    def constrain(z):
        x = jax.tree.unflatten(treedef, [b.forward(p) for b, p in zip(bijectors, parts(z))])
        return jnp.concatenate([jnp.ravel(v) for v in _flat_like(identity(x), truth)])

    mean = np.concatenate([np.ravel(v) for v in _flat_like(truth, truth)])
    sd = np.concatenate([np.ravel(v) for v in
                         _flat_like(identity.ground_truth_standard_deviation, truth)])
    dim = sum(sizes)
    if mean.shape != (dim,) or sd.shape != (dim,) or constrain(jnp.zeros(dim)).shape != (dim,):
        raise ValueError(f"{gym_name}: ground truth of shape {mean.shape}, {sd.shape}; d = {dim}")
    return GymTarget(name, gym_name, description, dim, logdensity_fn, constrain,
                     mean.astype(np.float64), sd.astype(np.float64))
