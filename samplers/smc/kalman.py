"""Exact filtering and smoothing for :class:`LinearGaussian` models: the references that
the particle methods are tested against, and exact draws from the smoothing law.

Kalman filter, Rauch-Tung-Striebel smoother with gain G_t = P_{t|t} A^T P_{t+1|t}^{-1}:
m_{t|T} = m_{t|t} + G_t (m_{t+1|T} - A m_{t|t}), P_{t|T} = P_{t|t} + G_t (P_{t+1|T} - P_{t+1|t}) G_t^T,
Cov(x_t, x_{t+1} | y) = G_t P_{t+1|T} [Sarkka2013, Thm 8.2].
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..base import Array
from ..validation import check_key
from .models import LinearGaussian, _mvn_logpdf



class KalmanFilterResult(NamedTuple):
    """Filtering means/covariances m_{t|t}, P_{t|t} and the exact log-likelihood."""

    log_likelihood: Array
    means: Array
    covs: Array
    predicted_means: Array  # m_{t|t-1} (m0 at t = 0)
    predicted_covs: Array


class SmootherResult(NamedTuple):
    """Smoothing means m_{t|T}, covariances P_{t|T}, cross-covariances Cov(x_t, x_{t+1} | y),
    and the gains G_t."""

    means: Array
    covs: Array
    cross_covs: Array
    gains: Array


def _sym(P):
    return 0.5 * (P + P.T)


def kalman_filter(model: LinearGaussian, ys: Array) -> KalmanFilterResult:
    """The Kalman filter on ``ys`` (rows y_0..y_{T-1}); differentiable in the model."""
    A, Q, C, R, m0, P0 = model.matrices()
    ys = jnp.reshape(ys, (ys.shape[0], -1))

    def update(m_pred, P_pred, y):
        S = _sym(C @ P_pred @ C.T + R)
        chol = jnp.linalg.cholesky(S)
        log_lik = _mvn_logpdf(y, C @ m_pred, chol)
        K = jax.scipy.linalg.cho_solve((chol, True), C @ P_pred).T
        return m_pred + K @ (y - C @ m_pred), _sym(P_pred - K @ S @ K.T), log_lik

    def body(carry, y):
        m_pred, P_pred = carry
        m, P, log_lik = update(m_pred, P_pred, y)
        return (A @ m, _sym(A @ P @ A.T + Q)), (m, P, m_pred, P_pred, log_lik)

    _, (ms, Ps, m_preds, P_preds, log_liks) = jax.lax.scan(body, (m0, P0), ys)
    return KalmanFilterResult(jnp.sum(log_liks), ms, Ps, m_preds, P_preds)


def rts_smoother(model: LinearGaussian, ys: Array) -> SmootherResult:
    """Rauch-Tung-Striebel smoother: the exact smoothing marginals and lag-one covariances."""
    A = model.matrices()[0]
    kf = kalman_filter(model, ys)

    def gain(P, P_pred_next):
        return jnp.linalg.solve(P_pred_next, A @ P).T  # P A^T P_pred^{-1} (P_pred symmetric)

    gains = jax.vmap(gain)(kf.covs[:-1], kf.predicted_covs[1:])

    def body(carry, inp):
        m_next, P_next = carry
        m, P, P_pred_next, G = inp
        m_s = m + G @ (m_next - A @ m)
        P_s = _sym(P + G @ (P_next - P_pred_next) @ G.T)
        return (m_s, P_s), (m_s, P_s, G @ P_next)

    last = (kf.means[-1], kf.covs[-1])
    _, (ms, Ps, cross) = jax.lax.scan(
        body, last, (kf.means[:-1], kf.covs[:-1], kf.predicted_covs[1:], gains), reverse=True)
    means = jnp.concatenate([ms, kf.means[-1:]])
    covs = jnp.concatenate([Ps, kf.covs[-1:]])
    return SmootherResult(means, covs, cross, gains)


def smoothing_sample(key: Array, model: LinearGaussian, ys: Array) -> Array:
    """One exact draw of x_{0:T-1} from p(x | y): x_{T-1} ~ N(m_{T-1|T-1}, P_{T-1|T-1}), then
    x_t | x_{t+1} ~ N(m_{t|t} + G_t (x_{t+1} - A m_{t|t}), P_{t|t} - G_t A P_{t|t})."""
    check_key("key", key, "smoothing_sample(key, model, ys)")
    A = model.matrices()[0]
    kf = kalman_filter(model, ys)
    gains = rts_smoother(model, ys).gains
    keys = jax.random.split(key, ys.shape[0])

    def draw(k, mean, cov):
        chol = jnp.linalg.cholesky(_sym(cov))
        return mean + chol @ jax.random.normal(k, mean.shape, mean.dtype)

    def body(x_next, inp):
        k, m, P, G = inp
        x = draw(k, m + G @ (x_next - A @ m), P - G @ A @ P)
        return x, x

    x_last = draw(keys[-1], kf.means[-1], kf.covs[-1])
    _, xs = jax.lax.scan(body, x_last, (keys[:-1], kf.means[:-1], kf.covs[:-1], gains), reverse=True)
    return jnp.concatenate([xs, x_last[None]])
