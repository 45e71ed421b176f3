"""samplers: JAX samplers checked against the convergence guarantees their papers prove.

The functional API: an :class:`Algorithm` is ``init`` + ``step`` (pure functions, explicit
keys); :func:`run` drives one for many steps and chains and returns a :class:`Trace`
(``trace.to_arviz()``). NumPyro models plug in through :mod:`samplers.numpyro`.
"""
from ._xla import disable_ynn_fusion

disable_ynn_fusion()  # before any JAX computation: see samplers/_xla.py

from . import adaptation, data, diagnostics, federated, langevin, numpyro, sliced, smc, stein, targets
from .base import Algorithm, EmptyInfo
from .federated import fald
from .langevin import mala, malt, minibatch_gradient, sgld, ula, underdamped
from .run import NonFiniteError, run
from .sliced import sliced_wasserstein, sliced_wasserstein_estimate, sliced_wasserstein_flow
from .trace import Trace

__version__ = "0.1.0"

__all__ = [
    "Algorithm", "EmptyInfo", "NonFiniteError", "Trace", "adaptation", "data", "diagnostics",
    "fald", "federated",
    "langevin", "mala", "malt", "minibatch_gradient", "numpyro", "run", "sgld", "sliced",
    "sliced_wasserstein", "sliced_wasserstein_estimate", "sliced_wasserstein_flow", "smc", "stein",
    "targets",
    "ula", "underdamped",
]
