"""State-space models: bootstrap particle filter, PaRIS smoothing, PaRIS particle Gibbs (PPG)
and parameter learning (score ascent, Markov score climbing), with exact Kalman references.

>>> ssm = samplers.smc.LinearGaussian(A=0.9, Q=0.5, C=1.0, R=1.0, m0=0.0, P0=1.0)
>>> pf = samplers.smc.particle_filter(key, ssm, ys, num_particles=1000)
>>> est = samplers.smc.paris(key, ssm, ys, lambda t, x, x1: x * x1, num_particles=100)
"""
from .kalman import KalmanFilterResult, SmootherResult, kalman_filter, rts_smoother, smoothing_sample
from .learning import FitResult, VariationalMarkov, fisher_score_fns, fit
from .models import LinearGaussian, StateSpaceModel, StochasticVolatility, check_inputs, simulate
from .filtering import (FilterResult, ParisResult, PPGInfo, PPGState, WeightError, backward_exact,
                    backward_rejection, conditional_sweep, initial_path, paris, particle_filter,
                    ppg, resample)

__all__ = [
    "FilterResult", "FitResult", "KalmanFilterResult", "LinearGaussian", "PPGInfo", "PPGState",
    "ParisResult", "SmootherResult", "StateSpaceModel", "StochasticVolatility",
    "VariationalMarkov", "WeightError", "backward_exact", "backward_rejection", "check_inputs",
    "conditional_sweep", "fisher_score_fns", "fit", "initial_path", "kalman_filter", "paris",
    "particle_filter", "ppg", "resample", "rts_smoother", "simulate", "smoothing_sample",
]
