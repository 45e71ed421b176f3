"""Gaussian variational inference in the Bures-Wasserstein space.

Forward-backward Gaussian VI (FB-GVI) and its stochastic version, from [Diao2023],
"Forward-backward Gaussian variational inference via JKO in the Bures-Wasserstein space";
the baselines it is compared with (Bures-Wasserstein gradient descent, reparameterised-gradient
VI with optax); the :class:`Gaussian` type. Builds on :mod:`samplers`.

    trace = samplers.run(key, vi.fbgvi(logdensity_fn), vi.Gaussian.standard(d), 500)
    q, trace = vi.fit(key, vi.fbgvi(logdensity_fn), vi.Gaussian.standard(d), 500)  # final q
"""
from .fbgvi import (
    ReparamInfo, VIInfo, VIState, bwgd, default_step_size, elbo, expected_grad_hess, fbgvi,
    fit, jko_entropy_step, minibatch_logdensity, ravel_logdensity, reparam_vi, sfbgvi,
)
from .gaussian import Gaussian

__all__ = [
    "Gaussian", "ReparamInfo", "VIInfo", "VIState", "bwgd", "default_step_size",
    "elbo", "expected_grad_hess", "fbgvi", "fit", "jko_entropy_step", "minibatch_logdensity",
    "ravel_logdensity", "reparam_vi", "sfbgvi",
]
