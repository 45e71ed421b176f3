"""Score-based diffusion samplers and probability-flow ODE solvers.

Forward SDEs (:mod:`diffusion.sde`, with discrete-time checkpoints' schedules), exact and
learned scores (:mod:`diffusion.scores`), trained networks with any event shape,
parameterisation, condition and guidance (:mod:`diffusion.networks`),
PF-ODE and reverse-SDE solvers with time grids, the exact Gaussian flow and analytical
teleportation (:mod:`diffusion.solvers`), and PF-ODE log-likelihoods
(:mod:`diffusion.likelihood`), metrics for samples of real images (:mod:`diffusion.metrics`:
Frechet and kernel distances, precision and recall, bits per dimension), training any
network in any parameterisation, with EMA, condition dropout and checkpoints
(:mod:`diffusion.training`), a small MLP and U-Net (:mod:`diffusion.nets`) and the
experiment runner (:mod:`diffusion.experiment`, imported on
demand). Builds on :mod:`samplers`; ``samplers`` never imports this.

``metrics`` and ``training`` (with the names it defines) bring optax and SciPy: they are
imported when first used (PEP 562), not by ``import diffusion``."""
from samplers._lazy import attach as _attach

from . import nets, networks, scores
from .sde import SCHEDULES, SDE, VPSDE, DiscreteVPSDE, SubVPSDE, VESDE
from .networks import PREDICTIONS, Network
from .solvers import (ODE_SOLVERS, SDE_SOLVERS, SOLVERS, TIME_GRIDS, check_score,
                      gaussian_flow, nfe, sample, solve_ode, solve_sde, teleport, time_grid)
from .likelihood import log_likelihood

__all__ = ["scores", "networks", "metrics", "SDE", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE",
           "SCHEDULES", "Network", "PREDICTIONS", "ODE_SOLVERS", "SDE_SOLVERS",
           "SOLVERS", "TIME_GRIDS", "check_score", "gaussian_flow", "nfe", "sample",
           "solve_ode", "solve_sde", "teleport", "time_grid", "log_likelihood",
           "nets", "train", "TrainResult", "train_score", "learned_score"]

_LAZY = {"metrics": ("metrics", None), "training": ("training", None),
         **{name: ("training", name) for name in ("TrainResult", "learned_score", "train",
                                                  "train_score")}}
__getattr__, __dir__ = _attach(__name__, _LAZY)
