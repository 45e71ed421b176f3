"""diffusion.sample at scale: chunks (batch_size), a device mesh and a progress bar give the
samples of one unchunked, single-device call (issue: "chunked equals unchunked; sharded
equals the single-device result on 4 fake CPU devices")."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffusion
from devices import run_on_devices

SDE = diffusion.VPSDE()


def apply_fn(params, x, t, cond):
    """A conditional eps-network, batched: linear in x, shifted by the label."""
    shift = 0.0 if cond is None else 0.1 * cond[:, None]
    return params["scale"] * x / (1.0 + t[:, None]) + shift


NET = diffusion.Network(apply_fn, prediction="eps")
PARAMS = {"scale": jnp.asarray(0.5)}
LABELS = jnp.arange(20) % 3


def _sample(**kw):
    return np.asarray(diffusion.sample(jax.random.key(0), SDE, NET, 20, dim=3, params=PARAMS,
                                       cond=LABELS, num_steps=8, **kw))


def test_chunks_give_the_unchunked_samples():
    whole = _sample()
    # the same per-row arithmetic on batches of another size: equal up to float32 round-off
    np.testing.assert_allclose(_sample(batch_size=7), whole, rtol=1e-6, atol=1e-6)
    sde_whole = _sample(solver="ddpm")
    np.testing.assert_array_equal(_sample(solver="ddpm", batch_size=64), sde_whole)
    chunked = _sample(solver="ddpm", batch_size=7)  # each chunk draws its own noise
    np.testing.assert_array_equal(_sample(solver="ddpm", batch_size=7), chunked)
    assert chunked.shape == (20, 3) and not np.allclose(chunked, sde_whole)


def test_progress_bar_counts_the_samples(monkeypatch):
    import tqdm.auto

    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, file=io.StringIO(), **k)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    _sample(batch_size=7, progress=True)
    assert bars[0].total == 20 and bars[0].n == 20


def test_bad_batching_is_named():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        _sample(batch_size=0)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        _sample(mesh="cpu")


SHARDED = """
import jax, jax.numpy as jnp, numpy as np, diffusion
from tests.test_diffusion_scale import NET, PARAMS, LABELS, SDE
mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("samples",))
for solver in ("unipc_2", "ddpm"):
    kw = dict(dim=3, params=PARAMS, cond=LABELS, num_steps=8, solver=solver)
    one = diffusion.sample(jax.random.key(0), SDE, NET, 20, **kw)
    many = diffusion.sample(jax.random.key(0), SDE, NET, 20, mesh=mesh, **kw)
    assert len(many.sharding.device_set) == 4, many.sharding
    # the same keys and per-row arithmetic: float32 round-off at most
    np.testing.assert_allclose(np.asarray(many), np.asarray(one), rtol=1e-5, atol=1e-6)
    chunked = diffusion.sample(jax.random.key(0), SDE, NET, 20, mesh=mesh, batch_size=8, **kw)
    assert chunked.shape == (20, 3)
try:
    diffusion.sample(jax.random.key(0), SDE, NET, 20, dim=3, params=PARAMS, cond=LABELS,
                     mesh=mesh, batch_size=6)
except ValueError as err:
    assert "multiple of the mesh axis" in str(err), err
else:
    raise AssertionError("batch_size 6 on 4 devices was accepted")
print("ok")
"""


def test_sharded_sampling_equals_the_single_device_run():
    run_on_devices(SHARDED, 4, expect="ok")
