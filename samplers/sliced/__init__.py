"""Sliced Wasserstein distances with control variates, and sliced Wasserstein flows.

Implements "Sliced Wasserstein Estimation with Control Variates" [Nguyen2024]:
SW_p^p(mu, nu) = E_{theta ~ U(S^{d-1})} W_p^p(theta#mu, theta#nu)
[Nguyen2024, eq. 1], estimated from L directions with the lower- and upper-bound control variates
[Nguyen2024, Sec. 3]. One module per concern:

* :mod:`samplers.sliced.projections` -- the directions theta_l (:func:`directions`: Monte
  Carlo, random orthogonal, randomised quasi-Monte Carlo);
* :mod:`samplers.sliced.one_dim` -- 1-d W_p^p from quantile functions
  (:func:`wasserstein_1d`; the differentiable sort);
* :mod:`samplers.sliced.estimators` -- the estimators with control variates
  (:func:`sliced_wasserstein`, SW_p; :func:`sliced_wasserstein_estimate`, SW_p^p with its
  standard error and measured variance reduction, a :class:`SlicedEstimate`);
* :mod:`samplers.sliced.flows` -- :func:`sliced_wasserstein_flow`, an
  :class:`~samplers.base.Algorithm` for :func:`samplers.run`.

The diagnostic comparing any sampler's draws with reference draws is
:func:`samplers.diagnostics.sliced_wasserstein_to_reference`.
"""
from .estimators import SlicedEstimate, sliced_wasserstein, sliced_wasserstein_estimate
from .flows import SWFlowInfo, SWFlowState, sliced_wasserstein_flow
from .one_dim import wasserstein_1d
from .projections import directions

__all__ = [
    "SlicedEstimate", "SWFlowState", "SWFlowInfo", "directions", "wasserstein_1d",
    "sliced_wasserstein", "sliced_wasserstein_estimate", "sliced_wasserstein_flow",
]
