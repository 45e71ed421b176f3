"""A small MLP noise predictor with a Fourier time embedding, as pure functions of a params
pytree (no framework): ``model = mlp(hidden=(128, 128))``, ``params = model.init(key, dim)``,
``eps = model.apply(params, x, t)`` for one point x (dim,) and scalar t.

The time embedding is [sin(2 pi w_k t), cos(2 pi w_k t)] with fixed frequencies w_k = 2^k
(k = 0 .. num_frequencies - 1), concatenated to x (the "Fourier features" of [Tancik2020],
as used by [Song2021]'s NCSN++ in random form).

:func:`unet` builds a small U-Net for images ([Ronneberger2015], as DDPM uses it:
[Ho2020, App. B]) with the batched ``apply_fn(params, x, t, cond)`` of
:class:`diffusion.Network`: residual blocks of GroupNorm [Wu2018], SiLU and 3x3
convolutions (``jax.lax.conv_general_dilated``), a sinusoidal time embedding
[Vaswani2017, Sec. 3.5] through a two-layer MLP added to every block, an optional class
embedding added to it, average-pool downsampling and nearest-neighbour upsampling with skip
connections between the resolutions.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from samplers.validation import check_int, check_positive

__all__ = ["MLP", "mlp", "unet"]


class MLP(NamedTuple):
    """``init(key, dim) -> params``; ``apply(params, x, t) -> (dim,)``."""

    init: Callable
    apply: Callable
    hidden: tuple
    num_frequencies: int


def mlp(hidden: Sequence[int] = (128, 128), num_frequencies: int = 8,
        activation: Callable = jax.nn.silu) -> MLP:
    """A noise-prediction MLP eps(x, t); see the module docstring."""
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden!r}")
    num_frequencies = check_int("num_frequencies", num_frequencies)
    freqs = 2.0 ** jnp.arange(num_frequencies)

    def init(key, dim):
        sizes = (dim + 2 * num_frequencies,) + hidden + (dim,)
        keys = jax.random.split(key, len(sizes) - 1)
        params = []
        for k, (m, n) in zip(keys, zip(sizes[:-1], sizes[1:])):
            w = jax.random.normal(k, (m, n)) * math.sqrt(1.0 / m)
            params.append({"w": w, "b": jnp.zeros(n)})
        params[-1]["w"] = params[-1]["w"] * 0.1
        return params

    def apply(params, x, t):
        ang = 2 * math.pi * freqs.astype(x.dtype) * t
        h = jnp.concatenate([x, jnp.sin(ang), jnp.cos(ang)])
        for layer in params[:-1]:
            h = activation(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    return MLP(init, apply, hidden, int(num_frequencies))


# ------------------------------------------------------------------------------ U-Net

def _dense(key, m, n, scale=1.0):
    return {"w": jax.random.normal(key, (m, n)) * (scale / math.sqrt(m)), "b": jnp.zeros(n)}


def _conv(key, cin, cout, size=3, scale=1.0):
    w = jax.random.normal(key, (size, size, cin, cout)) * (scale / math.sqrt(size * size * cin))
    return {"w": w, "b": jnp.zeros(cout)}


def _norm(c):
    return {"scale": jnp.ones(c), "bias": jnp.zeros(c)}


def _apply_conv(p, h):
    out = jax.lax.conv_general_dilated(h, p["w"].astype(h.dtype), (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out + p["b"].astype(h.dtype)


def _group_norm(p, h, eps=1e-5):
    """GroupNorm [Wu2018, eq. 1-3] over gcd(C, 8) groups of channels."""
    n, height, width, c = h.shape
    g = math.gcd(c, 8)
    hg = h.reshape(n, height, width, g, c // g)
    mean = jnp.mean(hg, (1, 2, 4), keepdims=True)
    var = jnp.var(hg, (1, 2, 4), keepdims=True)
    h = ((hg - mean) * jax.lax.rsqrt(var + eps)).reshape(h.shape)
    return h * p["scale"].astype(h.dtype) + p["bias"].astype(h.dtype)


def _res_block_init(key, cin, cout, emb):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    p = {"norm1": _norm(cin), "conv1": _conv(k1, cin, cout), "emb": _dense(k2, emb, cout),
         "norm2": _norm(cout), "conv2": _conv(k3, cout, cout)}
    if cin != cout:
        p["skip"] = _conv(k4, cin, cout, size=1)
    return p


def _res_block(p, h, emb):
    """h + conv(silu(norm(conv(silu(norm(h))) + dense(silu(emb))))) ([Ho2020, App. B],
    without dropout or attention); a 1x1 convolution on the skip path when channels change."""
    out = _apply_conv(p["conv1"], jax.nn.silu(_group_norm(p["norm1"], h)))
    e = jax.nn.silu(emb) @ p["emb"]["w"].astype(h.dtype) + p["emb"]["b"].astype(h.dtype)
    out = out + e[:, None, None, :]
    out = _apply_conv(p["conv2"], jax.nn.silu(_group_norm(p["norm2"], out)))
    return out + (_apply_conv(p["skip"], h) if "skip" in p else h)


def _check_image_shape(shape, levels):
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                    for s in shape)):
        raise ValueError(f"shape must be an image shape (height, width, channels) of positive "
                         f"integers, got {shape!r}")
    factor = 2 ** (levels - 1)
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"shape's height and width must be divisible by 2^(len(channels) - 1) "
                         f"= {factor} (one halving per extra resolution), got shape {shape!r}")
    return tuple(int(s) for s in shape)


def unet(key, shape, channels: Sequence[int] = (32, 64), num_classes: Optional[int] = None, *,
         time_scale: float = 1000.0):
    """A small U-Net noise predictor for images of ``shape`` (height, width, channels),
    e.g. (8, 8, 1) or (32, 32, 3); see the module docstring for its layers.

    ``channels``: the width at each resolution (the image is halved ``len(channels) - 1``
    times; one residual block per resolution on the way down and one on the way up, one in
    the middle). ``num_classes``: K for a class-conditional network: ``cond`` is an integer
    array (n,) of labels 0 .. K-1, and the label K (and ``cond=None``) is the null
    condition of classifier-free guidance (``train(..., null_cond=K)``, ``sample(...,
    null_cond=K)`` or ``null_cond=None``); labels outside 0 .. K are clamped. ``time_scale``
    multiplies the network's time input before the sinusoidal embedding (1000: t in [0, 1],
    DDPM's timestep range; use 1 for :class:`diffusion.DiscreteVPSDE`'s timestep indices).

    Returns ``(params, apply_fn)``: float32 parameters from ``key`` (the output convolution
    starts at zero) and ``apply_fn(params, x, t, cond)`` for x (n, *shape), t (n,), returning
    (n, *shape), ready for ``diffusion.Network(apply_fn, prediction=...)``.
    """
    if isinstance(channels, (int, np.integer)) or not channels or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 0
            for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive widths, got "
                         f"{channels!r}")
    channels = tuple(int(c) for c in channels)
    shape = _check_image_shape(shape, len(channels))
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes)
    check_positive("time_scale", time_scale)
    half = max(channels[0] // 2, 1)
    emb = 4 * channels[0]

    keys = iter(jax.random.split(key, 6 + 2 * len(channels)))
    params = {"time": [_dense(next(keys), 2 * half, emb), _dense(next(keys), emb, emb)],
              "conv_in": _conv(next(keys), shape[2], channels[0]), "down": [], "up": []}
    if num_classes is not None:
        params["class"] = jax.random.normal(next(keys), (num_classes + 1, emb))
    cin = channels[0]
    for c in channels:
        params["down"].append(_res_block_init(next(keys), cin, c, emb))
        cin = c
    params["mid"] = _res_block_init(next(keys), cin, cin, emb)
    for c in reversed(channels):
        params["up"].append(_res_block_init(next(keys), cin + c, c, emb))
        cin = c
    params["norm_out"] = _norm(cin)
    params["conv_out"] = _conv(next(keys), cin, shape[2], scale=0.0)
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)

    def apply_fn(params, x, t, cond):
        if x.ndim != 4 or x.shape[1:] != shape or jnp.shape(t) != x.shape[:1]:
            raise ValueError(f"x must have shape (n, *{shape}) and t shape (n,), got x of shape "
                             f"{x.shape} and t of shape {jnp.shape(t)}")
        ang = time_scale * t.astype(x.dtype)[:, None] * freqs.astype(x.dtype)
        e = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], -1)
        (d1, d2) = params["time"]
        e = jax.nn.silu(e @ d1["w"].astype(x.dtype) + d1["b"].astype(x.dtype))
        e = e @ d2["w"].astype(x.dtype) + d2["b"].astype(x.dtype)
        if num_classes is None:
            if cond is not None:
                raise TypeError("this U-Net was built without num_classes: it takes cond=None; "
                                "build it with unet(..., num_classes=K) to condition on labels")
        else:
            labels = (jnp.full(x.shape[:1], num_classes) if cond is None
                      else jnp.clip(jnp.asarray(cond), 0, num_classes))
            if labels.shape != x.shape[:1]:
                raise ValueError(f"cond must be integer labels of shape {x.shape[:1]}, got shape "
                                 f"{labels.shape}")
            e = e + params["class"].astype(x.dtype)[labels.astype(jnp.int32)]
        h = _apply_conv(params["conv_in"], x)
        skips = []
        for level, block in enumerate(params["down"]):
            h = _res_block(block, h, e)
            skips.append(h)
            if level < len(channels) - 1:
                n, height, width, c = h.shape
                h = h.reshape(n, height // 2, 2, width // 2, 2, c).mean((2, 4))
        h = _res_block(params["mid"], h, e)
        for level, block in zip(reversed(range(len(channels))), params["up"]):
            h = _res_block(block, jnp.concatenate([h, skips[level]], -1), e)
            if level > 0:
                h = jnp.repeat(jnp.repeat(h, 2, 1), 2, 2)
        h = jax.nn.silu(_group_norm(params["norm_out"], h))
        return _apply_conv(params["conv_out"], h)

    return params, apply_fn
