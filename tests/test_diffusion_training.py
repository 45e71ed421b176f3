"""Training any network (issue 17, item 5): the five targets reach their known optimum, the
EMA is the closed-form average, condition dropout drops at its rate, checkpoints resume
bit-identically, and the U-Net has the Network signature, samples and trains.

The targets are checked on a model whose optimum is known: the exact denoiser of a diagonal
Gaussian N(mu, diag(v)) with learnable (mu, log v), written here per parameterisation from
the closed form E[x_0 | x_t] = mu + alpha v (x_t - alpha mu) / (alpha^2 v + sigma^2). For
every noise level it is the best predictor of x_0 affine in each coordinate of x_t, which
depends on the data only through each coordinate's mean and variance; so for every target and
weighting the expected loss over the training set is minimised by the training set's own
mean and (1/n) variance. The check is then on parameters (distance to that optimum) and on
the learned noise prediction against diffusion.scores' exact Gaussian score.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffusion
from diffusion import nets, training
from diffusion.networks import eps_function
from checkpointing import crash_on_save
from mc import Z4, assert_within, se_proportion

ROOT = Path(__file__).resolve().parents[1]
SDE = diffusion.VPSDE()
D = 3
MU = np.array([0.5, -1.0, 0.2])
VAR = np.array([0.3, 1.0, 2.0])
DATA = (MU + np.sqrt(VAR) * np.random.default_rng(5).standard_normal((2000, D))).astype(np.float32)
OPT = {"mu": DATA.mean(0), "log_var": np.log(DATA.var(0))}   # the training set's optimum
INIT = {"mu": jnp.zeros(D), "log_var": jnp.zeros(D)}


def vp_alpha_sigma(t):
    """Linear VP (beta 0.1 .. 20): log alpha_t = -t^2 19.9/4 - 0.05 t, sigma^2 = 1 - alpha^2."""
    log_a = -0.25 * t ** 2 * 19.9 - 0.05 * t
    return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2.0 * log_a))


def gaussian_net(kind, sd=0.5):
    """The diagonal-Gaussian network predicting ``kind`` from (x_t, t) (EDM: from
    (c_in x~, c_noise), with sigma = exp(4 c_noise) and x~ = x_in sqrt(sigma^2 + sd^2))."""
    def apply(params, x, t, cond):
        assert cond is None and t.shape == x.shape[:1]
        mu, v = params["mu"], jnp.exp(params["log_var"])
        if kind == "edm":
            sig = jnp.exp(4.0 * t)[:, None]
            root = jnp.sqrt(sig ** 2 + sd ** 2)
            xt = x * root
            den = mu + v * (xt - mu) / (v + sig ** 2)
            return (den - sd ** 2 / root ** 2 * xt) / (sig * sd / root)
        a, s = (u[:, None] for u in vp_alpha_sigma(t))
        den = mu + a * v * (x - a * mu) / (a ** 2 * v + s ** 2)
        eps = (x - a * den) / s
        return {"eps": eps, "x0": den, "v": a * eps - s * den, "score": -eps / s}[kind]

    return diffusion.Network(apply, prediction=kind, sigma_data=sd)


NETS = {kind: gaussian_net(kind) for kind in diffusion.PREDICTIONS}


def _dist(params):
    return math.sqrt(sum(float(jnp.sum((params[k] - OPT[k]) ** 2)) for k in OPT))


def _eps_error(net, params):
    """RMS of the network's noise prediction minus the exact one of N(OPT) at a few t, over
    fresh points x_t (the sampler's conversion, diffusion.networks.eps_function)."""
    score = diffusion.scores.gaussian(SDE, OPT["mu"], np.diag(np.exp(OPT["log_var"])))
    x0 = jnp.asarray(DATA[:500])
    errs = []
    for t in (0.05, 0.3, 0.8):
        t = jnp.float32(t)
        x = SDE.alpha(t) * x0 + SDE.sigma(t) * jax.random.normal(jax.random.key(9), x0.shape)
        exact = -SDE.sigma(t) * jax.vmap(score, (0, None))(x, t)
        errs.append(jnp.mean((eps_function(SDE, net, params)(x, t) - exact) ** 2))
    return math.sqrt(float(jnp.mean(jnp.asarray(errs))))


@pytest.mark.parametrize("kind", diffusion.PREDICTIONS)
def test_each_target_reaches_the_known_optimum(kind):
    """300 Adam steps (learning rate 0.05 decayed to 0 by a cosine, batch 256) from (0, 0):
    the loss falls, the parameters end within 10% of their initial distance to the optimum
    and the learned noise prediction within 10% of its initial error. The parameters are the
    only error source (the optimum is representable), and the decayed rate removes the
    stationary jitter of stochastic gradients. Measured: distances 0.026-0.036 of the
    initial, eps errors 0.025-0.037, excess loss at most 0.0022 of the initial (eps and score
    follow the same trajectory: the same loss written twice)."""
    net = NETS[kind]
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 300))
    result = diffusion.train(jax.random.key(0), DATA, SDE, net, INIT, steps=300,
                             batch_size=256, optimizer=opt, ema=None)
    assert result.ema_params is None and result.losses.shape == (300,)
    assert bool(jnp.all(jnp.isfinite(result.losses)))
    assert float(result.losses[-50:].mean()) < float(result.losses[:10].mean())
    assert _dist(result.params) < 0.1 * _dist(INIT), (_dist(result.params), _dist(INIT))
    err0, err = _eps_error(net, INIT), _eps_error(net, result.params)
    assert err < 0.1 * err0, (err, err0)
    # the loss (same batch, same noise) is lowest at the optimum, the trained one close to it
    loss = jax.jit(lambda p: training.denoising_loss(p, jax.random.key(3), jnp.asarray(DATA),
                                                    None, SDE, net, 1e-3, 1.0))
    l0, l_opt, l_tr = float(loss(INIT)), float(loss(OPT)), float(loss(result.params))
    assert l_tr - l_opt < 0.05 * (l0 - l_opt), (l0, l_opt, l_tr)


def test_discrete_schedule_trains_on_timestep_indices():
    """Under DDPM's discrete schedule the network gets the timestep index N t - 1: an eps
    network that reads alpha from the index (log sqrt(cumprod(1 - beta)) interpolated in the
    index, written here) reaches the optimum as on the continuous SDE (distance ratio
    measured 0.036)."""
    betas = np.linspace(1e-4, 0.02, 1000)
    log_alpha_n = jnp.asarray(0.5 * np.log(np.cumprod(1.0 - betas)), jnp.float32)

    def apply(params, x, index, cond):
        log_a = jnp.interp(index, jnp.arange(1000.0), log_alpha_n)[:, None]
        a, s = jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2.0 * log_a))
        mu, v = params["mu"], jnp.exp(params["log_var"])
        return s * (x - a * mu) / (a ** 2 * v + s ** 2)

    sde = diffusion.DiscreteVPSDE.from_betas(betas)
    result = diffusion.train(jax.random.key(0), DATA, sde, diffusion.Network(apply), INIT,
                             steps=300, batch_size=256, ema=None,
                             optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 300)))
    assert _dist(result.params) < 0.1 * _dist(INIT), (_dist(result.params), _dist(INIT))


def test_ema_is_the_closed_form_average():
    """With an optimizer whose update is a constant c (params_k = params_0 + k c), the EMA
    of decay d after K steps is d^K p_0 + (1 - d) sum_k d^(K-k) (p_0 + k c)."""
    c, d, steps = 0.01, 0.9, 25

    def update(grads, state, params=None):
        return jax.tree.map(lambda g: jnp.full_like(g, c), grads), state

    shift = optax.GradientTransformation(lambda p: optax.EmptyState(), update)
    result = diffusion.train(jax.random.key(1), DATA, SDE, NETS["eps"], INIT, steps=steps,
                             batch_size=8, optimizer=shift, ema=d)
    k = np.arange(1, steps + 1)
    for name, p0 in INIT.items():
        p0 = np.asarray(p0, np.float64)
        expected = d ** steps * p0 + (1 - d) * np.sum(
            d ** (steps - k)[:, None] * (p0 + k[:, None] * c), 0)
        np.testing.assert_allclose(result.params[name], p0 + steps * c, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result.ema_params[name], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_condition_dropout_rate(p):
    """draw_batch replaces a row's condition (every leaf of it) by null_cond with
    probability p: the null fraction over 20 batches of 500 is p within 4 binomial standard
    errors, and kept rows carry their own datum's condition."""
    n, batch, draws = 1000, 500, 20
    labels = np.arange(n) % 5
    data = np.stack([labels, np.zeros(n)], 1).astype(np.float32)   # column 0 is the label
    cond = {"label": jnp.asarray(labels), "emb": jnp.asarray(np.eye(5)[labels], jnp.float32)}
    null = {"label": 5, "emb": jnp.full(5, -1.0)}
    keys = jax.random.split(jax.random.key(2), draws)
    x0, c = jax.jit(jax.vmap(lambda k: training.draw_batch(
        k, jnp.asarray(data), cond, null, batch_size=batch, cond_drop=p)))(keys)
    dropped = np.asarray(c["label"]) == 5
    assert_within(dropped.mean(), se_proportion(p, dropped.size), p, z=Z4, what="dropped")
    assert np.all(np.asarray(c["emb"])[dropped] == -1.0)
    kept = ~dropped
    assert np.all(np.asarray(c["label"])[kept] == np.asarray(x0)[..., 0][kept])
    assert np.all(np.argmax(np.asarray(c["emb"])[kept], -1) == np.asarray(c["label"])[kept])


def _equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_checkpoint_resume_is_bit_identical(tmp_path, monkeypatch):
    """40 steps straight == crash after the 20-step checkpoint, resume with the same
    arguments; == 20 steps, then the same call with steps=40 (an extension); == the run cut
    into 20 chunks for a progress bar. The file is replaced atomically: a crash mid-write
    leaves the last good checkpoint."""
    kwargs = dict(steps=40, batch_size=64, ema=0.9)
    args = (jax.random.key(4), DATA, SDE, NETS["v"], INIT)
    reference = diffusion.train(*args, **kwargs)
    path = str(tmp_path / "train.npz")
    saves = crash_on_save(monkeypatch, training, path, 3)   # a partial file, no rename
    with pytest.raises(KeyboardInterrupt):
        diffusion.train(*args, checkpoint=path, checkpoint_every=10, **kwargs)
    monkeypatch.undo()
    assert saves == [10, 20, 30]
    with np.load(path) as f:
        assert int(f["draws_done"]) == 20
    resumed = diffusion.train(*args, checkpoint=path, checkpoint_every=10, **kwargs)
    assert not os.path.exists(f"{path}.tmp")
    assert _equal(resumed, reference)
    assert _equal(diffusion.train(*args, progress=True, **kwargs), reference)  # chunks of 2

    extended = str(tmp_path / "extended.npz")
    diffusion.train(*args, checkpoint=extended, checkpoint_every=10, **{**kwargs, "steps": 20})
    assert _equal(diffusion.train(*args, checkpoint=extended, checkpoint_every=10, **kwargs),
                  reference)
    with pytest.raises(ValueError, match="holds 40 steps"):
        diffusion.train(*args, checkpoint=extended, **{**kwargs, "steps": 30})
    with pytest.raises(ValueError, match="written by a different run"):
        diffusion.train(jax.random.key(5), *args[1:], checkpoint=path, **kwargs)


def test_train_score_wraps_train():
    """The MLP API gives train's result on the MLP's batched Network (no EMA)."""
    model = nets.mlp((16,))
    data = DATA[:, :2]
    params, losses = training.train_score(jax.random.key(6), data, SDE, model=model, steps=20,
                                          batch_size=32, return_losses=True)
    k_init, k_train = jax.random.split(jax.random.key(6))
    direct = diffusion.train(k_train, data, SDE, training._mlp_network(model),
                             model.init(k_init, 2), steps=20, batch_size=32, ema=None)
    assert _equal((params, losses), (direct.params, direct.losses))


def test_bad_arguments_are_named():
    net = NETS["eps"]
    with pytest.raises(TypeError, match="network must be a diffusion.Network"):
        diffusion.train(jax.random.key(0), DATA, SDE, net.apply_fn, INIT, steps=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        diffusion.train(jax.random.key(0), DATA, SDE, net, INIT, steps=0)
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\)"):
        diffusion.train(jax.random.key(0), DATA, SDE, net, INIT, steps=1, ema=1.0)
    with pytest.raises(ValueError, match="pass null_cond"):
        diffusion.train(jax.random.key(0), DATA, SDE, net, INIT, steps=1,
                        cond=np.zeros(len(DATA), int))
    with pytest.raises(ValueError, match="cond must be a batch with one row per point"):
        diffusion.train(jax.random.key(0), DATA, SDE, net, INIT, steps=1, cond=np.zeros(3, int),
                        null_cond=1)
    with pytest.raises(ValueError, match="do not apply to prediction='edm'"):
        diffusion.train(jax.random.key(0), DATA, SDE, NETS["edm"], INIT, steps=1, t_min=0.1)
    with pytest.raises(ValueError, match="data must be a batch"):
        diffusion.train(jax.random.key(0), DATA[0], SDE, net, INIT, steps=1)
    with pytest.raises(TypeError, match="optimizer must be an optax"):
        diffusion.train(jax.random.key(0), DATA, SDE, net, INIT, steps=1, optimizer="adam")


# ---------------------------------------------------------------------------------- U-Net

@pytest.mark.parametrize("shape,num_classes", [((8, 8, 1), None), ((8, 8, 1), 3),
                                               ((16, 16, 3), None), ((16, 16, 3), 10)])
def test_unet_has_the_network_signature(shape, num_classes):
    params, apply_fn = nets.unet(jax.random.key(0), shape, (8, 16), num_classes)
    # a nonzero output layer (it starts at zero) so outputs depend on the inputs
    params["conv_out"]["w"] = 0.1 * jax.random.normal(jax.random.key(1),
                                                      params["conv_out"]["w"].shape)
    x = jax.random.normal(jax.random.key(2), (4,) + shape)
    t = jnp.linspace(0.1, 0.9, 4)
    labels = None if num_classes is None else jnp.array([0, 1, 2, 1])
    out = apply_fn(params, x, t, labels)
    assert out.shape == (4,) + shape and bool(jnp.all(jnp.isfinite(out)))
    if num_classes is not None:   # conditioning changes the output; None is the null label
        assert not jnp.allclose(out, apply_fn(params, x, t, jnp.array([2, 0, 1, 0])))
        np.testing.assert_array_equal(apply_fn(params, x, t, None),
                                      apply_fn(params, x, t, jnp.full(4, num_classes)))
    if shape == (16, 16, 3) and num_classes is None:  # sampling compiles: once here, once
        net = diffusion.Network(apply_fn, prediction="eps")   # guided after training below
        xs = diffusion.sample(jax.random.key(3), SDE, net, 4, shape=shape, params=params,
                              solver="dpm_solver_pp_2m", num_steps=3)
        assert xs.shape == (4,) + shape and bool(jnp.all(jnp.isfinite(xs)))


def test_unet_bad_arguments():
    with pytest.raises(ValueError, match="divisible by"):
        nets.unet(jax.random.key(0), (6, 6, 1), (8, 16, 32))
    with pytest.raises(ValueError, match="channels must be"):
        nets.unet(jax.random.key(0), (8, 8, 1), ())
    params, apply_fn = nets.unet(jax.random.key(0), (8, 8, 1), (8,))
    with pytest.raises(TypeError, match="built without num_classes"):
        apply_fn(params, jnp.zeros((2, 8, 8, 1)), jnp.zeros(2), jnp.zeros(2, int))


def test_conditional_unet_trains_with_dropout():
    """A class-conditional U-Net (one resolution, width 8) on two classes of 8x8 images (a
    constant +-1 image plus noise 0.3): 30 steps with condition dropout lower the loss by
    more than 30% (measured: 51 to 17 over the first and last 10 steps; the output layer
    starts at zero, so the first loss is about d = 64); guided sampling with its EMA
    parameters gives finite images."""
    labels = np.arange(256) % 2
    images = (2.0 * labels - 1.0)[:, None, None, None] + 0.3 * np.random.default_rng(0) \
        .standard_normal((256, 8, 8, 1))
    params, apply_fn = nets.unet(jax.random.key(0), (8, 8, 1), (8,), num_classes=2)
    net = diffusion.Network(apply_fn, prediction="eps")
    result = diffusion.train(jax.random.key(1), images.astype(np.float32), SDE, net, params,
                             steps=30, batch_size=16, optimizer=optax.adam(3e-3), cond=labels,
                             null_cond=2, cond_drop=0.2)
    first, last = float(result.losses[:10].mean()), float(result.losses[-10:].mean())
    assert last < 0.7 * first, (first, last)
    assert jax.tree.structure(result.ema_params) == jax.tree.structure(params)
    xs = diffusion.sample(jax.random.key(3), SDE, net, 4, shape=(8, 8, 1),
                          params=result.ema_params, cond=jnp.array([0, 1, 0, 1]), null_cond=2,
                          guidance_scale=2.0, solver="dpm_solver_pp_2m", num_steps=3)
    assert xs.shape == (4, 8, 8, 1) and bool(jnp.all(jnp.isfinite(xs)))


def test_unet_on_digits_reduces_the_loss():
    """100 steps on scikit-learn's 8x8 digits (scaled to [-1, 1]) halve the loss (measured:
    57.8 to 13.2 over the first and last 10 steps). Channels (8, 16) and batches of 32 train in
    about 7 s on 2 CPU cores; channels (16, 32) with batches of 64 took 290 s for 200 steps
    (XLA's CPU convolution gradients), too slow for the default run."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    images = (digits.images[..., None] / 8.0 - 1.0).astype(np.float32)
    params, apply_fn = nets.unet(jax.random.key(0), (8, 8, 1), (8, 16), num_classes=10)
    result = diffusion.train(jax.random.key(1), images, SDE,
                             diffusion.Network(apply_fn, prediction="eps"), params, steps=100,
                             batch_size=32, optimizer=optax.adam(2e-3), cond=digits.target,
                             null_cond=10)
    first, last = float(result.losses[:10].mean()), float(result.losses[-10:].mean())
    assert last < 0.5 * first, (first, last)


def test_docs_equinox_example_runs():
    """The Equinox block of docs/diffusion.md runs as written."""
    pytest.importorskip("equinox")
    text = (ROOT / "docs" / "diffusion.md").read_text()
    block = re.search(r"<!-- equinox example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "docs/diffusion.md has no Equinox example"
    namespace: dict = {}
    exec(compile(block.group(1), "docs/diffusion.md", "exec"), namespace)
    assert bool(jnp.all(jnp.isfinite(namespace["xs"])))
