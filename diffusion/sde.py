"""Forward SDEs with Gaussian transitions ([Song2021], "Score-Based Generative
Modeling through Stochastic Differential Equations", Sec. 3.4 and App. B).

Every SDE here is linear, ``dx = f(t) x dt + g(t) dW`` on ``t in [0, t_max]``, with
transition ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``. Then [Song2021, eq. 29]

    f(t) = d log alpha_t / dt,        g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2,

and the half log-SNR is ``lambda_t = log(alpha_t / sigma_t)`` [Lu2022a,
Sec. 2], strictly decreasing in t. Each SDE gives ``t_of_log_snr``, the inverse of
``lambda``, in closed form; the exponential-integrator solvers and the log-SNR / Karras time
grids need it.

SDEs are frozen dataclasses of floats (a discrete schedule holds a tuple of floats): hashable,
so they can be static arguments of ``jit``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from samplers.validation import check_choice, check_int, check_positive

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE", "SCHEDULES"]


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


def _as_float(t):
    """``t`` as an array, in its own floating dtype (the default one for ints)."""
    t = jnp.asarray(t)
    return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(float)


class SDE:
    """Shared methods; subclasses define ``log_alpha``, ``sigma``, ``dlog_alpha``,
    ``g2`` and ``t_of_log_snr``; ``t_max`` and ``t_min`` are the default time interval;
    ``variance_preserving`` says alpha_t^2 + sigma_t^2 = 1."""

    t_max: float = 1.0
    t_min: float = 1e-3
    prior_std: float = 1.0
    variance_preserving: bool = False

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

    def model_time(self, t):
        """The time a trained network is called with at SDE time ``t``: ``t`` itself for the
        continuous SDEs (a :class:`DiscreteVPSDE` gives its timestep index)."""
        return t

    def pf_ode_drift(self, x, t, score_value):
        """Probability-flow ODE velocity dx/dt = f(t) x - g(t)^2 / 2 * score [Song2021, eq. 13]."""
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


class _VariancePreserving(SDE):
    """sigma_t = sqrt(1 - alpha_t^2), g^2 = beta = -2 d log alpha_t / dt ([Song2021],
    eq. 11); subclasses define ``log_alpha``, ``dlog_alpha`` and ``_t_of_log_alpha``."""

    variance_preserving = True

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
        """Inverse of lambda_t: alpha^2 = sigmoid(2 lambda), then t from log alpha_t."""
        return self._t_of_log_alpha(-0.5 * _softplus(-2.0 * lam))


@dataclasses.dataclass(frozen=True)
class VPSDE(_VariancePreserving):
    """Variance-preserving SDE (DDPM's continuous limit; [Song2021, eq. 11 and App. B]).

    ``schedule="linear"``: beta(t) = beta_min + t (beta_max - beta_min),
    log alpha_t = -t^2 (beta_max - beta_min)/4 - t beta_min/2, sigma_t = sqrt(1 - alpha_t^2),
    f = -beta/2, g^2 = beta.
    ``schedule="cosine"`` [Nichol2021, eq. 17]: log alpha_t =
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
        check_choice("schedule", self.schedule, ("linear", "cosine"))
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

    def _t_of_log_alpha(self, log_alpha):
        """t from log alpha_t in closed form for both schedules (the linear one as in
        DPM-Solver's code)."""
        if self.schedule == "linear":
            return _linear_t_of_log_alpha(log_alpha, self.beta_min, self.beta_max)
        c0 = math.log(math.cos(self._cos_arg(0.0)))
        return (jnp.arccos(jnp.exp(log_alpha + c0)) * 2.0 * (1 + self.cosine_s) / math.pi
                - self.cosine_s)


@dataclasses.dataclass(frozen=True)
class SubVPSDE(SDE):
    """Sub-VP SDE [Song2021, eq. 17]: same alpha_t as the linear VP SDE,
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
    """Variance-exploding SDE ([Song2021, eq. 9] / App. B; NCSN's continuous limit):
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


SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# (beta_start, beta_end) of the named schedules: DDPM's [Ho2020, Sec. 4] and Stable
# Diffusion's [Rombach2022] for "scaled_linear"
_BETA_RANGE = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}


@dataclasses.dataclass(frozen=True, repr=False)
class DiscreteVPSDE(_VariancePreserving):
    """The variance-preserving SDE of a discrete-time checkpoint (DDPM, [Ho2020, eq. 4]:
    x_n | x_0 ~ N(sqrt(abar_n) x_0, (1 - abar_n) I), n = 0 .. N-1), made continuous as in
    DPM-Solver [Lu2022a, appendix on discrete-time DPMs]: step n at
    t_n = (n + 1) / N, and log alpha_t is piecewise linear in t through the points
    (t_n, log sqrt(abar_n)). So alpha_{t_n}^2 = abar_n exactly, f = d log alpha_t / dt is
    constant between the points and g^2 = -2 f. A :class:`diffusion.Network` is called with
    the timestep index ``model_time(t) = N t - 1`` (n at t_n, continuous in between).

    ``alphas_cumprod``: the checkpoint's abar_0 > ... > abar_{N-1} in (0, 1) (stored as a
    tuple of floats). Times run over [1/N, 1]: ``t_min`` defaults to 1/N (timestep 0),
    ``t_max`` to 1 (timestep N-1). Build one from betas with :meth:`from_betas` or from a
    named schedule with :meth:`from_schedule`. Prior N(0, I).
    """

    alphas_cumprod: tuple
    t_min: float = None
    t_max: float = 1.0

    def __post_init__(self):
        try:
            abar = np.asarray(self.alphas_cumprod, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"alphas_cumprod must be a 1-d array of floats, got "
                            f"{type(self.alphas_cumprod).__name__}") from err
        if abar.ndim != 1 or abar.shape[0] < 2:
            raise ValueError(f"alphas_cumprod must be a 1-d array of length >= 2, got shape "
                             f"{abar.shape}")
        if not np.all((abar > 0) & (abar < 1)) or not np.all(np.diff(abar) < 0):
            raise ValueError("alphas_cumprod must be strictly decreasing with values in (0, 1), "
                             f"got values from {abar.min()!r} to {abar.max()!r}")
        object.__setattr__(self, "alphas_cumprod", tuple(abar.tolist()))
        n = abar.shape[0]
        if self.t_min is None:
            object.__setattr__(self, "t_min", 1.0 / n)
        if not 1.0 / n <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"t_min and t_max must satisfy 1/N = {1.0 / n!r} <= t_min < t_max "
                             f"<= 1, got t_min={self.t_min!r}, t_max={self.t_max!r}")

    def __repr__(self):
        return (f"DiscreteVPSDE(N={self.num_timesteps}, alphas_cumprod[0]="
                f"{self.alphas_cumprod[0]:.6g}, alphas_cumprod[-1]={self.alphas_cumprod[-1]:.6g}, "
                f"t_min={self.t_min!r}, t_max={self.t_max!r})")

    @classmethod
    def from_betas(cls, betas, **kwargs) -> "DiscreteVPSDE":
        """abar_n = prod_{m <= n} (1 - beta_m) [Ho2020, Sec. 2] for betas in (0, 1);
        ``kwargs`` (``t_min``, ``t_max``) go to the constructor."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not np.all((betas > 0) & (betas < 1)):
            raise ValueError(f"betas must be a 1-d array of values in (0, 1), got shape "
                             f"{betas.shape} with values from {betas.min()!r} to {betas.max()!r}")
        return cls(np.cumprod(1.0 - betas), **kwargs)

    @classmethod
    def from_schedule(cls, name: str, num_timesteps: int = 1000, *, beta_start=None,
                      beta_end=None, **kwargs) -> "DiscreteVPSDE":
        """A named training schedule over ``num_timesteps`` steps, as diffusers names them:

        * ``"linear"``: betas evenly spaced from ``beta_start`` to ``beta_end`` (default
          1e-4 to 0.02, DDPM; [Ho2020, Sec. 4]);
        * ``"scaled_linear"``: betas = (evenly spaced from sqrt(beta_start) to
          sqrt(beta_end))^2 (default 0.00085 to 0.012, Stable Diffusion's; pass a config's
          own values explicitly);
        * ``"squaredcos_cap_v2"``: beta_n = min(1 - abar(t_{n+1}) / abar(t_n), 0.999) with
          abar(t) = cos^2((t + 0.008) / 1.008 pi/2) and t_n = n / N ([Nichol2021],
          eq. 17 and the clipping below it); takes no beta range.
        """
        check_choice("name", name, SCHEDULES)
        check_int("num_timesteps", num_timesteps, minimum=2)
        if name == "squaredcos_cap_v2":
            if beta_start is not None or beta_end is not None:
                raise ValueError("beta_start and beta_end do not apply to the "
                                 f"'squaredcos_cap_v2' schedule, got beta_start={beta_start!r}, "
                                 f"beta_end={beta_end!r}")
            abar = np.cos((np.arange(num_timesteps + 1) / num_timesteps + 0.008) / 1.008
                          * math.pi / 2) ** 2
            return cls.from_betas(np.minimum(1.0 - abar[1:] / abar[:-1], 0.999), **kwargs)
        lo, hi = _BETA_RANGE[name]
        lo = lo if beta_start is None else float(beta_start)
        hi = hi if beta_end is None else float(beta_end)
        if name == "linear":
            return cls.from_betas(np.linspace(lo, hi, num_timesteps), **kwargs)
        return cls.from_betas(np.linspace(math.sqrt(lo), math.sqrt(hi), num_timesteps) ** 2,
                              **kwargs)

    @property
    def num_timesteps(self) -> int:
        """N, the number of training timesteps."""
        return len(self.alphas_cumprod)

    def _knots(self):
        """Times t_n = (n + 1)/N and log alpha_{t_n} = log(abar_n)/2 (float64 numpy)."""
        n = self.num_timesteps
        return np.arange(1, n + 1) / n, 0.5 * np.log(np.asarray(self.alphas_cumprod))

    def log_alpha(self, t):
        ts, la = self._knots()
        t = _as_float(t)
        return jnp.interp(t, ts.astype(t.dtype), la.astype(t.dtype))

    def dlog_alpha(self, t):
        ts, la = self._knots()
        t = _as_float(t)
        slopes = jnp.asarray(np.diff(la) / np.diff(ts), t.dtype)
        i = jnp.clip(jnp.searchsorted(jnp.asarray(ts, t.dtype), t, side="right") - 1,
                     0, slopes.shape[0] - 1)
        return slopes[i]

    def _t_of_log_alpha(self, log_alpha):
        ts, la = self._knots()
        log_alpha = _as_float(log_alpha)
        return jnp.interp(log_alpha, la[::-1].astype(log_alpha.dtype),
                          ts[::-1].astype(log_alpha.dtype))

    def model_time(self, t):
        """The timestep index N t - 1 (n at t_n = (n + 1)/N; DPM-Solver's discrete input)."""
        return self.num_timesteps * t - 1.0
