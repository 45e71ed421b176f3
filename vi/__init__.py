"""Gaussian variational inference in the Bures-Wasserstein space.

Forward-backward Gaussian VI (FB-GVI) and its stochastic version, from [Diao2023],
"Forward-backward Gaussian variational inference via JKO in the Bures-Wasserstein space";
the baselines it is compared with (Bures-Wasserstein gradient descent, reparameterised-gradient
VI with optax); the :class:`Gaussian` type. Builds on :mod:`samplers`.

    q, trace = vi.fbgvi(logdensity_fn).run(key, vi.Gaussian.standard(d), 500)  # h: curvature
"""
from .fbgvi import (
    VIAlgorithm, VIInfo, VIState, VITrace, bwgd, default_step_size, expected_grad_hess, fbgvi,
    jko_entropy_step, minibatch_logdensity, ravel_logdensity, reparam_vi, sfbgvi,
)
from .gaussian import Gaussian

__all__ = [
    "Gaussian", "VIAlgorithm", "VIInfo", "VIState", "VITrace", "bwgd", "default_step_size",
    "expected_grad_hess", "fbgvi", "jko_entropy_step", "minibatch_logdensity",
    "ravel_logdensity", "reparam_vi", "sfbgvi",
]
