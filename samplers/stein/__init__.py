"""Stein variational samplers: SVGD, mirrored SVGD, SVMD, SVNG; kernels; mirror maps.

[Shi2022], "Sampling with Mirrored Stein Operators"; [Liu2016], "Stein Variational Gradient
Descent". See ``docs/stein.md``.

    alg = samplers.stein.msvgd(target.logdensity_fn, samplers.stein.mirror.simplex_entropic(),
                               optimizer=samplers.stein.rmsprop(0.1))
    trace = samplers.run(key, alg, particles, num_steps=500, thin=500)
    idata = samplers.stein.to_arviz(trace)        # one chain, draw = particle
"""
from __future__ import annotations

from . import kernels, mirror
from .kernels import Kernel, imq, rbf
from .mirror import MirrorMap
from .samplers import (SteinInfo, SteinState, dirichlet_dual_logdensity, msvgd,
                       polynomial_decay, rmsprop, svgd, svmd, svmd_direction, svng, to_arviz)

__all__ = ["Kernel", "MirrorMap", "SteinInfo", "SteinState",
           "dirichlet_dual_logdensity", "imq", "kernels", "mirror", "msvgd", "polynomial_decay",
           "rbf", "rmsprop", "svgd", "svmd", "svmd_direction", "svng", "to_arviz"]
