"""Any diffrax solver [Kidger2021, ch. 5] as a
back-end for the probability-flow ODE, fixed-step or adaptive. Optional: needs ``diffrax``.

diffrax counts attempted steps (rejected ones included) in ``num_steps`` and has no NFE
counter; ``nfe`` here is stages x attempted steps (an upper bound when the method's last
stage is reused, as in Tsit5's FSAL)."""
from __future__ import annotations

import functools
from typing import Optional

import jax

from .solvers import _check_num_steps, _check_positions, _check_sde, _check_times, check_score

__all__ = ["solve_ode_diffrax"]


def solve_ode_diffrax(x_T, sde, score, *, solver=None, num_steps: Optional[int] = None,
                      rtol: float = 1e-5, atol: float = 1e-5, t_min=None, t_max=None,
                      max_steps: int = 100_000):
    """Integrate the PF-ODE dx/dt = f x - g^2/2 score from ``t_max`` to ``t_min`` for a batch
    ``x_T`` (n, d) with a diffrax solver (default ``diffrax.Tsit5()``): ``num_steps`` fixed
    uniform steps, or, when ``num_steps`` is None, adaptive steps with a PID controller at
    ``rtol``/``atol``. Returns ``(x, info)`` with ``info`` = {"num_steps" (attempted),
    "num_accepted", "num_rejected", "nfe"}."""
    import diffrax

    _check_sde(sde)
    solver = diffrax.Tsit5() if solver is None else solver
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"solver must be a diffrax solver instance (e.g. diffrax.Tsit5()), got {solver!r}")
    if num_steps is not None:
        _check_num_steps(num_steps)
    t_min, t_max = _check_times(sde, t_min, t_max)
    x_T = _check_positions("x_T", x_T)
    check_score(score, x_T.shape[1], x_T.dtype)
    x, stats = _solve(x_T, t_min, t_max, float(rtol), float(atol), sde=sde, score=score,
                      solver=solver, num_steps=num_steps, max_steps=int(max_steps))
    stages = {"Euler": 1, "Heun": 2, "Midpoint": 2, "Ralston": 2, "Bosh3": 3, "Tsit5": 6,
              "Dopri5": 6, "Dopri8": 12}.get(type(solver).__name__)
    n = int(stats["num_steps"])
    info = {"num_steps": n, "num_accepted": int(stats["num_accepted_steps"]),
            "num_rejected": int(stats["num_rejected_steps"]),
            "nfe": None if stages is None else stages * n + (1 if stages == 6 else 0)}
    return x, info


@functools.partial(jax.jit, static_argnames=("sde", "score", "solver", "num_steps", "max_steps"))
def _solve(x_T, t_min, t_max, rtol, atol, *, sde, score, solver, num_steps, max_steps):
    import diffrax

    batched = jax.vmap(score, (0, None))

    def field(t, y, args):
        return sde.pf_ode_drift(y, t, batched(y, t))

    if num_steps is None:
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = None
    else:
        controller = diffrax.ConstantStepSize()
        dt0 = (t_min - t_max) / num_steps
    sol = diffrax.diffeqsolve(diffrax.ODETerm(field), solver, t0=t_max, t1=t_min, dt0=dt0,
                              y0=x_T, stepsize_controller=controller, max_steps=max_steps)
    return sol.ys[-1], sol.stats
