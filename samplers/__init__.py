"""samplers: JAX samplers checked against the convergence guarantees their papers prove.

The functional API: an :class:`Algorithm` is ``init`` + ``step`` (pure functions, explicit
keys); :func:`run` drives one for many steps and chains and returns a :class:`Trace`
(``trace.to_arviz()``). NumPyro models plug in through :mod:`samplers.numpyro`.

``import samplers`` loads the driver and the Langevin and FA-LD samplers (JAX and NumPy
only). The submodules that bring NumPyro, SciPy or optax (``numpyro``, ``diagnostics``,
``targets``, ``smc``, ``stein``) and ``sliced`` are imported when first used, as attributes
(``samplers.numpyro.kernel(...)``) or by ``from samplers import ...`` (PEP 562).
"""
from . import adaptation, data, federated, langevin, validation
from ._lazy import attach as _attach
from ._xla import configure_xla
from .base import Algorithm, EmptyInfo
from .federated import fald
from .langevin import mala, malt, minibatch_gradient, sgld, ula, underdamped
from .run import run
from .trace import Trace
from .validation import NonFiniteError

__version__ = "0.1.0"

# name -> (submodule, attribute in it; None for the submodule itself), imported on first use
_LAZY = {
    "diagnostics": ("diagnostics", None),
    "numpyro": ("numpyro", None),
    "sliced": ("sliced", None),
    "smc": ("smc", None),
    "stein": ("stein", None),
    "targets": ("targets", None),
    "sliced_wasserstein": ("sliced", "sliced_wasserstein"),
    "sliced_wasserstein_estimate": ("sliced", "sliced_wasserstein_estimate"),
    "sliced_wasserstein_flow": ("sliced", "sliced_wasserstein_flow"),
}

__all__ = [
    "Algorithm", "EmptyInfo", "NonFiniteError", "Trace", "adaptation", "configure_xla", "data",
    "diagnostics", "fald", "federated",
    "langevin", "mala", "malt", "minibatch_gradient", "numpyro", "run", "sgld", "sliced",
    "sliced_wasserstein", "sliced_wasserstein_estimate", "sliced_wasserstein_flow", "smc", "stein",
    "targets",
    "ula", "underdamped", "validation",
]


__getattr__, __dir__ = _attach(__name__, _LAZY)
