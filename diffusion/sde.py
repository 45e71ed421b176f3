"""Forward SDEs with Gaussian transitions (Song et al., ICLR 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations", Sec. 3.4 and App. B).

Every SDE here is linear, ``dx = f(t) x dt + g(t) dW`` on ``t in [0, t_max]``, with
transition ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``. Then (Song et al. eq. 29)

    f(t) = d log alpha_t / dt,        g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2,

and the half log-SNR is ``lambda_t = log(alpha_t / sigma_t)`` (Lu et al., DPM-Solver, NeurIPS
2022, Sec. 2), strictly decreasing in t. Each SDE gives ``t_of_log_snr``, the inverse of
``lambda``, in closed form; the exponential-integrator solvers and the log-SNR / Karras time
grids need it.

SDEs are frozen dataclasses of floats: hashable, so they can be static arguments of ``jit``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from samplers.base import check_positive

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE"]


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


class SDE:
    """Shared methods; subclasses define ``log_alpha``, ``sigma``, ``dlog_alpha``,
    ``g2`` and ``t_of_log_snr``; ``t_max`` and ``t_min`` are the default time interval."""

    t_max: float = 1.0
    t_min: float = 1e-3
    prior_std: float = 1.0

    def alpha(self, t):
        """Signal scale alpha_t of the marginal x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)."""
        return jnp.exp(self.log_alpha(t))

    def log_snr(self, t):
        """Half log signal-to-noise ratio lambda_t = log(alpha_t / sigma_t)."""
        return self.log_alpha(t) - jnp.log(self.sigma(t))

    def drift_coef(self, t):
        """f(t) = d log alpha_t / dt (the drift is f(t) x)."""
        return self.dlog_alpha(t)

    def marginal(self, x0, t):
        """Mean and standard deviation of x_t given x_0: ``(alpha_t x0, sigma_t)``."""
        return self.alpha(t) * x0, self.sigma(t)

    def sample_marginal(self, key, x0, t):
        """One draw of x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I) (same shape as ``x0``)."""
        mean, std = self.marginal(x0, t)
        return mean + std * jax.random.normal(key, jnp.shape(x0), jnp.result_type(x0, float))

    def prior_sample(self, key, shape, dtype=None):
        """Draws from the prior N(0, prior_std^2 I) that stands in for p_{t_max}."""
        dtype = dtype or jnp.zeros(()).dtype
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_logp(self, x):
        """log N(x; 0, prior_std^2 I) of one point ``x`` (shape (d,))."""
        d = x.shape[-1]
        return (-0.5 * jnp.sum(x ** 2, -1) / self.prior_std ** 2
                - d * (math.log(self.prior_std) + 0.5 * math.log(2 * math.pi)))

    def pf_ode_drift(self, x, t, score_value):
        """Probability-flow ODE velocity dx/dt = f(t) x - g(t)^2 / 2 * score (Song et al. eq. 13)."""
        return self.drift_coef(t) * x - 0.5 * self.g2(t) * score_value


def _check_interval(name_lo, lo, name_hi, hi):
    if not lo < hi:
        raise ValueError(f"{name_lo} must be < {name_hi}, got {name_lo}={lo!r}, {name_hi}={hi!r}")


def _check_positive_range(name_lo, lo, name_hi, hi):
    check_positive(name_lo, lo)
    check_positive(name_hi, hi)
    _check_interval(name_lo, lo, name_hi, hi)


def _linear_log_alpha(t, b0, b1):
    """log alpha_t = -int_0^t beta / 2 for beta(t) = b0 + t (b1 - b0)."""
    return -0.25 * t ** 2 * (b1 - b0) - 0.5 * t * b0


def _linear_t_of_log_alpha(log_alpha, b0, b1):
    """Inverse of :func:`_linear_log_alpha` (the positive root, in a cancellation-free form)."""
    big_l = -2.0 * log_alpha
    return 2.0 * big_l / (jnp.sqrt(b0 ** 2 + 2.0 * (b1 - b0) * big_l) + b0)


@dataclasses.dataclass(frozen=True)
class VPSDE(SDE):
    """Variance-preserving SDE (DDPM's continuous limit; Song et al. 2021 eq. 11 and App. B).

    ``schedule="linear"``: beta(t) = beta_min + t (beta_max - beta_min),
    log alpha_t = -t^2 (beta_max - beta_min)/4 - t beta_min/2, sigma_t = sqrt(1 - alpha_t^2),
    f = -beta/2, g^2 = beta.
    ``schedule="cosine"`` (Nichol & Dhariwal 2021, eq. 17): log alpha_t =
    log cos((t+s)/(1+s) pi/2) - log cos(s/(1+s) pi/2), s = 0.008; t_max defaults to 0.9946
    (as DPM-Solver does) to stay away from the singularity at t = 1.
    Prior N(0, I).
    """

    schedule: str = "linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_s: float = 0.008
    t_max: float = None
    t_min: float = 1e-3

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be one of 'linear', 'cosine', got {self.schedule!r}")
        _check_positive_range("beta_min", self.beta_min, "beta_max", self.beta_max)
        if self.t_max is None:
            object.__setattr__(self, "t_max", 1.0 if self.schedule == "linear" else 0.9946)
        check_positive("t_min", self.t_min)
        _check_interval("t_min", self.t_min, "t_max", self.t_max)
        if self.schedule == "cosine" and self.t_max >= 1.0:
            raise ValueError(f"t_max must be < 1 for the cosine schedule, got {self.t_max!r}")

    def _cos_arg(self, t):
        return (t + self.cosine_s) / (1 + self.cosine_s) * (math.pi / 2)

    def log_alpha(self, t):
        if self.schedule == "linear":
            return _linear_log_alpha(t, self.beta_min, self.beta_max)
        return jnp.log(jnp.cos(self._cos_arg(t))) - math.log(math.cos(self._cos_arg(0.0)))

    def dlog_alpha(self, t):
        if self.schedule == "linear":
            return -0.5 * (self.beta_min + t * (self.beta_max - self.beta_min))
        return -jnp.tan(self._cos_arg(t)) * (math.pi / 2) / (1 + self.cosine_s)

    def beta(self, t):
        """beta(t) = -2 d log alpha_t / dt."""
        return -2.0 * self.dlog_alpha(t)

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def log_snr(self, t):
        # lambda = log alpha - 0.5 log(1 - alpha^2), written to keep precision at small t
        la = self.log_alpha(t)
        return la - 0.5 * jnp.log(-jnp.expm1(2.0 * la))

    def g2(self, t):
        return self.beta(t)

    def t_of_log_snr(self, lam):
        """Inverse of lambda_t: alpha^2 = sigmoid(2 lambda), then solve log alpha_t for t
        (closed form for both schedules; the linear one as in DPM-Solver's code)."""
        log_alpha = -0.5 * _softplus(-2.0 * lam)
        if self.schedule == "linear":
            return _linear_t_of_log_alpha(log_alpha, self.beta_min, self.beta_max)
        c0 = math.log(math.cos(self._cos_arg(0.0)))
        return (jnp.arccos(jnp.exp(log_alpha + c0)) * 2.0 * (1 + self.cosine_s) / math.pi
                - self.cosine_s)


@dataclasses.dataclass(frozen=True)
class SubVPSDE(SDE):
    """Sub-VP SDE (Song et al. 2021 eq. 17): same alpha_t as the linear VP SDE,
    sigma_t = 1 - alpha_t^2 (a standard deviation), f = -beta/2,
    g^2 = beta (1 - alpha_t^4). Prior N(0, I)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_max: float = 1.0
    t_min: float = 1e-3

    def __post_init__(self):
        _check_positive_range("beta_min", self.beta_min, "beta_max", self.beta_max)
        _check_positive_range("t_min", self.t_min, "t_max", self.t_max)

    def log_alpha(self, t):
        return _linear_log_alpha(t, self.beta_min, self.beta_max)

    def dlog_alpha(self, t):
        return -0.5 * (self.beta_min + t * (self.beta_max - self.beta_min))

    def sigma(self, t):
        return -jnp.expm1(2.0 * self.log_alpha(t))

    def log_snr(self, t):
        la = self.log_alpha(t)
        return la - jnp.log(-jnp.expm1(2.0 * la))

    def g2(self, t):
        return -2.0 * self.dlog_alpha(t) * (-jnp.expm1(4.0 * self.log_alpha(t)))

    def t_of_log_snr(self, lam):
        """alpha solves e^lam alpha^2 + alpha - e^lam = 0; then t from log alpha_t."""
        e = jnp.exp(lam)
        # alpha = (sqrt(1 + 4 e^2) - 1) / (2 e) = 2 e / (sqrt(1 + 4 e^2) + 1)  (stable form)
        alpha = 2.0 * e / (jnp.sqrt(1.0 + 4.0 * e ** 2) + 1.0)
        return _linear_t_of_log_alpha(jnp.log(alpha), self.beta_min, self.beta_max)


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE (Song et al. 2021 eq. 9 / App. B; NCSN's continuous limit):
    alpha_t = 1, sigma_t = sigma_min (sigma_max / sigma_min)^t, f = 0,
    g^2 = d sigma_t^2 / dt = 2 log(sigma_max / sigma_min) sigma_t^2. Prior N(0, sigma_max^2 I).

    Convention: the marginal std is exactly sigma_t, so p_0 is the data convolved with
    N(0, sigma_min^2 I) (score_sde uses the same std but its SDE started at sigma_min would
    give sqrt(sigma_t^2 - sigma_min^2); we keep the transition and g^2 consistent instead).
    t_min may be 0 here (lambda_0 = -log sigma_min is finite)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_max: float = 1.0
    t_min: float = 1e-3

    def __post_init__(self):
        _check_positive_range("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)
        if not (self.t_min >= 0):
            raise ValueError(f"t_min must be >= 0 for VESDE, got {self.t_min!r}")
        _check_interval("t_min", self.t_min, "t_max", self.t_max)

    @property
    def prior_std(self):
        return float(self.sigma_min * (self.sigma_max / self.sigma_min) ** self.t_max)

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def dlog_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def log_snr(self, t):
        return -(math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min))

    def g2(self, t):
        return 2.0 * math.log(self.sigma_max / self.sigma_min) * self.sigma(t) ** 2

    def t_of_log_snr(self, lam):
        return (-lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)
