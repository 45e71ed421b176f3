"""Score-based diffusion samplers and probability-flow ODE solvers.

Filled in by the diffusion work; builds on :mod:`samplers`."""
