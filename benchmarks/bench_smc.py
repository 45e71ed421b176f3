"""State-space models: ``samplers.smc`` PaRIS and PPG against ``particles`` (N. Chopin).

Model (both sides): the scalar linear Gaussian model x_0 ~ N(0, 1), x_{t+1} = 0.9 x_t + N(0, 0.5),
y_t = x_t + N(0, 1); in ``particles`` that is ``kalman.LinearGauss(rho=0.9, sigmaX=sqrt(0.5),
sigmaY=1, sigma0=1)`` (sigmaX, sigmaY, sigma0 are standard deviations). One data set, simulated
once by ``samplers.smc.simulate``; a run of length T uses its first T rows. Additive functional
h = sum_{t<T-1} x_t x_{t+1}; the exact E[h | y] is sum_t (Cov(x_t, x_{t+1} | y) + m_{t|T}
m_{t+1|T}) from our ``rts_smoother`` in float64 (its smoothed means are checked against
``particles.kalman.Kalman``, an independent implementation).

Both PaRIS runs use Ñ = 2 backward draws per particle drawn by accept-reject with a fallback
to exact draws (``particles``: at most N proposals per draw, its default; ours: a few
vectorised rounds, then exact draws), bootstrap proposals, systematic resampling at every step
(``ESSrmin=1`` on the peer's side). ``particles`` 0.3/0.4's ``collectors.Paris`` does not run on
numpy 2 (it stores the length-1 array returned by ``MultinomialQueue.dequeue(1)`` into an int
slot; 0.3 also looped over a missing ``self.N`` and called ``fk.upper_bound_log_pt``): this
module ships :func:`_peer_classes`' ``PatchedParis``, a subclass written here (not copied)
whose ``update`` loops over ``smc.N``, calls ``smc.fk.ssm.upper_bound_log_pt`` and takes
``int(...)`` of the dequeued index, and counts the proposals.

Particle Gibbs: one sweep of our ``ppg`` (conditional PaRIS with the reference in the last
slot, multinomial resampling, a new reference drawn through the PaRIS indices, and the sweep's
PaRIS estimate) against one ``particles.mcmc.ParticleGibbs(backward_step=True)`` state update
with fixed parameters (its ``CSMC``, adaptive multinomial resampling at ESS < N/2, then an
O(N T) backward-sampling pass for one path); both chains start from the same path.

Studies besides the harness's timed rows (in ``NOTES`` and the JSON ``config``): accuracy at
equal time (ours rerun with fresh keys for as long as one peer run lasts; PPG sweeps for as
long), the peer's proposal counts, our PaRIS over N in {100, 1000} x T in {100, 1000} with the
compile time apart, one larger timed peer point, and our PaRIS at N = 1000, T = 10,000.

``python -m benchmarks.bench_smc [--quick] [--out DIR]``.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from samplers import smc

from .harness import Case, main

NAME = "smc"
TITLE = "State-space models: samplers.smc PaRIS and PPG vs particles (Chopin)"
PEERS = ("particles", "scipy")
BASE_NOTES = """
Scalar linear Gaussian model a = 0.9, q = 0.5, c = r = 1, x_0 ~ N(0, 1) (particles:
`kalman.LinearGauss(rho=0.9, sigmaX=sqrt(0.5), sigmaY=1, sigma0=1)`), h = sum_t x_t x_{t+1},
exact value from our RTS smoother (float64). PaRIS: Ñ = 2, accept-reject backward draws with an
exact fallback on both sides, systematic resampling at every step. `particles`' PaRIS collector
does not run on numpy 2 (`As[m] = mq.dequeue(1)` stores a length-1 array in an int slot): the
benchmark ships a patched subclass (`PatchedParis`, written for this benchmark: loops over
`smc.N`, calls `smc.fk.ssm.upper_bound_log_pt`, `int(...)` of the dequeued index) and counts its
proposals. It is a pure-Python double loop building one distribution object per proposal, so
the peer is run only at small sizes. Ours: float32 (JAX's default), times after compilation
(compile time reported apart). PG rows: one sweep each; ours is a PPG sweep (conditional PaRIS:
it also computes the PaRIS estimate), the peer's is `ParticleGibbs(backward_step=True)`'s state
update (CSMC with adaptive resampling + O(N T) backward sampling of one path). Other jobs may
share the 2 CPU cores: timings are noisy.
"""
NOTES = BASE_NOTES

A, Q, C, R, M0, P0 = 0.9, 0.5, 1.0, 1.0, 0.0, 1.0
NUM_BACKWARD = 2
PPG_BURN_IN = 5


def config(quick: bool) -> dict:
    """Sizes (N particles, T observations). ``quick`` (about 2 minutes on two busy cores):
    PaRIS and PG against the peer at N = 100, T = 50 only. Full: the peer at N = 100, T = 100
    (5 runs) plus one run at N = 1000, T = 100; ours at N in {100, 1000} x T in {100, 1000} and
    at N = 1000, T = 10,000."""
    if quick:
        return {"peer_size": [100, 50], "pg_size": [100, 50], "grid": [[100, 50]],
                "peer_large": None, "long": None, "ppg_chains": 1, "repeats": 1, "min_time": 0.05,
                "grid_runs": 2, "pg_check_sweeps": 60}
    return {"peer_size": [100, 100], "pg_size": [100, 100],
            "grid": [[100, 100], [1000, 100], [100, 1000], [1000, 1000]],
            "peer_large": [1000, 100], "long": [1000, 10_000], "ppg_chains": 3,
            "repeats": 3, "min_time": 0.2, "grid_runs": 3, "pg_check_sweeps": 200}


# ------------------------------------------------------------------------------ model

def our_model(dtype=jnp.float32) -> smc.LinearGaussian:
    c = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return smc.LinearGaussian(A=c(A), Q=c(Q), C=c(C), R=c(R), m0=c(M0), P0=c(P0))


def additive(t, x, x_next):
    """h~_t(x_t, x_{t+1}) = x_t x_{t+1} (scalar state)."""
    del t
    return jnp.sum(x * x_next)


def data(T_max: int) -> np.ndarray:
    """One simulated data set of T_max observations (float32 values, shape (T_max, 1))."""
    _, ys = smc.simulate(jax.random.key(0), our_model(), T_max)
    return np.asarray(ys, np.float32)


def exact_value(ys: np.ndarray) -> float:
    """E[sum_t x_t x_{t+1} | y] from our RTS smoother, in float64."""
    with jax.enable_x64(True):
        sm = smc.rts_smoother(our_model(jnp.float64), jnp.asarray(ys, jnp.float64))
        return float(jnp.sum(sm.cross_covs[:, 0, 0] + sm.means[:-1, 0] * sm.means[1:, 0]))


def path_functional(x) -> float:
    x = np.asarray(x, np.float64).reshape(-1)
    return float(np.sum(x[:-1] * x[1:]))


# ------------------------------------------------------------------------- the peer

_PEER = {}


def _peer_classes():
    """The peer's model (LinearGauss plus the transition bound and h) and the patched PaRIS
    collector, built once after importing ``particles``."""
    if _PEER:
        return _PEER
    from particles import collectors, kalman
    from particles import resampling as rs

    class PeerLinearGauss(kalman.LinearGauss):
        """LinearGauss with sup log p(x_t | x_{t-1}) and h~_t = x_{t-1} x_t (0 at t = 0)."""

        def upper_bound_log_pt(self, t):
            return -0.5 * math.log(2.0 * math.pi * self.sigmaX ** 2)

        def add_func(self, t, xp, x):
            return np.zeros_like(x) if xp is None else xp * x

    class PatchedParis(collectors.Paris):
        """``particles.collectors.Paris`` made to run on numpy 2 (written for this benchmark).

        Same algorithm as the shipped collector (hybrid PaRIS: at most ``max_trials``
        accept-reject proposals per backward draw, default N, then one exact draw), with the
        index taken as ``int(queue.dequeue(1)[0])`` (numpy 2 refuses to store the length-1
        array in an int slot), the loop over ``smc.N`` and the bound read from
        ``smc.fk.ssm.upper_bound_log_pt`` (particles 0.3 used ``self.N`` and
        ``smc.fk.upper_bound_log_pt``, which do not exist). Proposals per step go to ``nprop``.
        """

        summary_name = "paris"
        # declared here, with the state kept below, so that particles 0.3 (what pip picks
        # next to numpy 2: particles 0.4 asks for numpy < 2) runs it as 0.4 does
        signature = {"Nparis": 2, "max_trials": None}

        def save_for_later(self, smc_):
            self.prev_X, self.prev_W, self.prev_logw = smc_.X, smc_.W, smc_.wgts.lw

        def update(self, smc_):
            tries_max = smc_.N if self.max_trials is None else self.max_trials
            log_bound = smc_.fk.ssm.upper_bound_log_pt(smc_.t)
            phi_prev = self.Phi.copy()
            queue = rs.MultinomialQueue(self.prev_W)
            proposals = 0
            for n in range(smc_.N):
                x_n = smc_.X[n]
                picked = np.empty(self.Nparis, dtype=np.int64)
                for m in range(self.Nparis):
                    for _ in range(tries_max):
                        j = int(queue.dequeue(1)[0])
                        proposals += 1
                        log_ratio = smc_.fk.logpt(smc_.t, self.prev_X[j], x_n) - log_bound
                        if math.log(np.random.rand()) < log_ratio:
                            picked[m] = j
                            break
                    else:  # every proposal rejected: one exact draw from the backward kernel
                        lw = self.prev_logw + smc_.fk.logpt(smc_.t, self.prev_X, x_n)
                        picked[m] = rs.multinomial_once(rs.exp_and_normalise(lw))
                terms = phi_prev[picked] + smc_.fk.add_func(smc_.t, self.prev_X[picked], x_n)
                self.Phi[n] = np.mean(terms, axis=0)
            self.nprop.append(proposals)

    _PEER.update(model=PeerLinearGauss, paris=PatchedParis)
    return _PEER


def peer_model():
    return _peer_classes()["model"](rho=A, sigmaX=math.sqrt(Q), sigmaY=math.sqrt(R),
                                    sigma0=math.sqrt(P0))


def peer_paris(y: np.ndarray, N: int, seed: int) -> dict:
    """One run of the patched peer PaRIS: estimate, proposal counts, seconds."""
    import particles
    from particles import state_space_models as ssms

    np.random.seed(seed)
    fk = ssms.Bootstrap(ssm=peer_model(), data=y)
    pf = particles.SMC(fk=fk, N=N, ESSrmin=1.0, resampling="systematic",
                       collect=[_peer_classes()["paris"](Nparis=NUM_BACKWARD)])
    start = time.perf_counter()
    pf.run()
    seconds = time.perf_counter() - start
    nprop = np.asarray(pf.summaries._collectors[-1].nprop[1:], np.float64)
    return {"estimate": float(pf.summaries.paris[-1]), "seconds": seconds,
            "proposals": float(nprop.sum()),
            "proposals_per_draw": float(nprop.sum() / (N * NUM_BACKWARD * max(len(y) - 1, 1))),
            "step_proposals_min": float(nprop.min()), "step_proposals_max": float(nprop.max())}


def kalman_check(ys: np.ndarray) -> float:
    """max |m_{t|T}| difference between our RTS smoother (float64) and particles' Kalman."""
    from particles import kalman

    kf = kalman.Kalman(ssm=peer_model(), data=ys[:, 0].astype(np.float64))
    kf.filter()
    kf.smoother()
    theirs = np.array([np.asarray(s.mean).reshape(-1)[0] for s in kf.smth])
    with jax.enable_x64(True):
        ours = np.asarray(smc.rts_smoother(our_model(jnp.float64),
                                           jnp.asarray(ys, jnp.float64)).means[:, 0])
    return float(np.max(np.abs(ours - theirs)))


# --------------------------------------------------------------------------- ours

def our_paris(key, ys_j, N: int):
    return smc.paris(key, our_model(), ys_j, additive, N, NUM_BACKWARD)


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def _error_stats(estimates, exact: float) -> dict:
    err = np.asarray(estimates, np.float64) - exact
    return {"n": int(err.size), "bias": float(err.mean()),
            "sd": float(err.std(ddof=1)) if err.size > 1 else float("nan"),
            "rmse": float(np.sqrt(np.mean(err ** 2)))}


# ------------------------------------------------------------------------- cases

def paris_case(cfg: dict, y_np: np.ndarray, exact: float, record: dict) -> Case:
    """PaRIS, one run each, fresh seeds on every call; every estimate is kept in ``record``."""
    N, T = cfg["peer_size"]
    ys_j = jnp.asarray(y_np[:T])
    y = y_np[:T, 0].astype(np.float64)
    record.update(ours=[], peer=[], ours_proposals=[])
    counter = {"ours": 0, "peer": 0}

    def ours():
        counter["ours"] += 1
        res = our_paris(jax.random.key(10_000 + counter["ours"]), ys_j, N)
        record["ours"].append(res.estimate)
        record["ours_proposals"].append(res.proposals_per_draw)
        return res.estimate

    def peer():
        counter["peer"] += 1
        run = peer_paris(y, N, seed=counter["peer"])
        record["peer"].append(run)
        return run["estimate"]

    def check(_o, _p):
        o = _error_stats([float(e) for e in record["ours"]], exact)
        p = _error_stats([r["estimate"] for r in record["peer"]], exact)
        return {f"RMSE vs RTS (ours n={o['n']}, peer n={p['n']})": (o["rmse"], p["rmse"]),
                "proposals/draw": (float(np.mean(record["ours_proposals"])),
                                   float(np.mean([r["proposals_per_draw"] for r in record["peer"]])))}

    return Case("paris", {"N": N, "T": T}, ours, peer, "particles (patched)", check)


def pg_case(cfg: dict, y_np: np.ndarray, exact: float, record: dict) -> Case:
    """One particle Gibbs sweep each, chains carried across calls from the same start path."""
    from particles import distributions as dists
    from particles import mcmc

    N, T = cfg["pg_size"]
    ys_j = jnp.asarray(y_np[:T])
    y = y_np[:T, 0].astype(np.float64)
    start_path = smc.initial_path(jax.random.key(7), our_model(), ys_j, N)

    alg = smc.ppg(our_model(), ys_j, additive, N, NUM_BACKWARD, burn_in=PPG_BURN_IN)
    step = alg.step  # not jitted again: its sweep is jitted, and shares its cache with equal_time
    ours_state = {"state": alg.init(start_path), "k": 0, "sweeps": []}

    class FixedThetaPG(mcmc.ParticleGibbs):
        def update_theta(self, theta, x):
            return theta  # parameters fixed: only the state update is timed

    theta_prior = dists.StructDist({"rho": dists.Dirac(A), "sigmaX": dists.Dirac(math.sqrt(Q)),
                                    "sigmaY": dists.Dirac(math.sqrt(R)),
                                    "sigma0": dists.Dirac(math.sqrt(P0))})
    pg = FixedThetaPG(ssm_cls=_peer_classes()["model"], prior=theta_prior, data=y, Nx=N,
                      backward_step=True, niter=1)
    theta = theta_prior.rvs(size=1)[0]
    peer_state = {"x": [float(v) for v in np.asarray(start_path)[:, 0]], "h": []}
    np.random.seed(123)

    def ours():
        ours_state["k"] += 1
        state, info = step(jax.random.key(20_000 + ours_state["k"]), ours_state["state"])
        ours_state["state"] = state
        ours_state["sweeps"].append(info.sweep_estimate)
        return info.sweep_estimate

    def peer():
        peer_state["x"] = pg.update_states(theta, peer_state["x"])
        peer_state["h"].append(path_functional(peer_state["x"]))
        return peer_state["h"][-1]

    def check(_o, _p):
        # untimed: run both chains on to ``pg_check_sweeps`` sweeps, then compare the averages
        while len(ours_state["sweeps"]) < cfg["pg_check_sweeps"]:
            ours()
        while len(peer_state["h"]) < cfg["pg_check_sweeps"]:
            peer()
        o = [float(v) for v in ours_state["sweeps"][PPG_BURN_IN:]]
        p = peer_state["h"][PPG_BURN_IN:]
        record.update(ours_sweeps=len(ours_state["sweeps"]), peer_sweeps=len(peer_state["h"]))
        return {f"average of h after {PPG_BURN_IN} sweeps - RTS ({len(o)} vs {len(p)} sweeps)":
                (np.mean(o) - exact, np.mean(p) - exact)}

    return Case("particle Gibbs sweep", {"N": N, "T": T}, ours, peer,
                "particles ParticleGibbs (backward)", check)


# ------------------------------------------------------------------------- studies

def equal_time(cfg: dict, y_np: np.ndarray, exact: float, budget_s: float) -> dict:
    """What ours does in one peer PaRIS run's time: PaRIS reruns with fresh keys, and PPG
    chains (fresh ``ppg`` sweeps from an initial path) whose roll-out is the estimate."""
    N, T = cfg["peer_size"]
    ys_j = jnp.asarray(y_np[:T])
    estimates, start, i = [], time.perf_counter(), 0
    while time.perf_counter() - start < budget_s:
        i += 1
        estimates.append(float(our_paris(jax.random.key(30_000 + i), ys_j, N).estimate))
    out = {"budget_s": budget_s, "paris_runs": len(estimates),
           "paris_single": _error_stats(estimates, exact),
           "paris_mean_error": float(np.mean(estimates) - exact)}
    alg = smc.ppg(our_model(), ys_j, additive, N, NUM_BACKWARD, burn_in=PPG_BURN_IN)
    step = alg.step
    jax.block_until_ready(step(jax.random.key(0), alg.init(smc.initial_path(
        jax.random.key(1), our_model(), ys_j, N))))  # any compilation outside the budget
    chains = []
    for c in range(cfg["ppg_chains"]):
        start = time.perf_counter()
        state = alg.init(smc.initial_path(jax.random.key(40_000 + c), our_model(), ys_j, N))
        sweeps = 0
        while time.perf_counter() - start < budget_s:
            sweeps += 1
            state, _ = step(jax.random.key(50_000 + 1000 * c + sweeps), state)
            jax.block_until_ready(state.estimate)
        chains.append({"sweeps": sweeps, "error": float(state.estimate) - exact})
    out["ppg_chains"] = chains
    return out


def our_grid(cfg: dict, y_np: np.ndarray) -> list[dict]:
    """Our PaRIS over the (N, T) grid: first-call (compile + run) and run times, errors."""
    rows = []
    for N, T in cfg["grid"]:
        ys_j = jnp.asarray(y_np[:T])
        exact = exact_value(y_np[:T])
        first, res = _timed(lambda: our_paris(jax.random.key(60_000), ys_j, N).estimate)
        times, ests = [], [float(res)]
        for r in range(cfg["grid_runs"]):
            s, res = _timed(lambda r=r: our_paris(jax.random.key(60_001 + r), ys_j, N).estimate)
            times.append(s)
            ests.append(float(res))
        run_s = statistics.median(times)
        rows.append({"N": N, "T": T, "first_call_s": first, "compile_s": max(first - run_s, 0.0),
                     "run_s": run_s, "times": times, "exact": exact,
                     "errors": [e - exact for e in ests]})
        print(f"  ours paris N={N} T={T}: compile ~{first - run_s:.1f} s, run {run_s:.3f} s",
              flush=True)
    return rows


def long_run(cfg: dict, y_np: np.ndarray) -> dict:
    N, T = cfg["long"]
    ys_j = jnp.asarray(y_np[:T])
    exact = exact_value(y_np[:T])
    first, _ = _timed(lambda: our_paris(jax.random.key(70_000), ys_j, N).estimate)
    run_s, res = _timed(lambda: our_paris(jax.random.key(70_001), ys_j, N))
    out = {"N": N, "T": T, "first_call_s": first, "run_s": run_s, "exact": exact,
           "error": float(res.estimate) - exact, "proposals_per_draw": float(res.proposals_per_draw)}
    print(f"  ours paris N={N} T={T}: first call {first:.1f} s, run {run_s:.1f} s", flush=True)
    return out


# ------------------------------------------------------------------------- report

def _f(v, fmt=".3g"):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def notes_markdown(cfg: dict) -> str:
    rec, eq = cfg["paris_record"], cfg["equal_time"]
    N, T = cfg["peer_size"]
    peer_runs = rec["peer"]
    peer_s = [r["seconds"] for r in peer_runs]
    p_err = _error_stats([r["estimate"] for r in peer_runs], cfg["exact_peer_size"])
    s = eq["paris_single"]
    lines = [BASE_NOTES.strip(), "",
             f"Parameterisation check: max |m_t|T| difference, our RTS vs `particles.kalman` over "
             f"T = {cfg['kalman_check_T']}: {cfg['kalman_check']:.2e}.", "",
             f"### PaRIS at N = {N}, T = {T}: accuracy at equal time (exact E[h | y] = "
             f"{cfg['exact_peer_size']:.3f})", "",
             "| side | runs | time per run (s) | bias | sd | RMSE | proposals per backward draw |",
             "|---|---|---|---|---|---|---|",
             f"| particles (patched) | {p_err['n']} | {_f(statistics.median(peer_s))} "
             f"({_f(min(peer_s))}–{_f(max(peer_s))}) | {p_err['bias']:+.2f} | {_f(p_err['sd'])} | "
             f"{p_err['rmse']:.2f} | {np.mean([r['proposals_per_draw'] for r in peer_runs]):.2f} "
             f"(per step {min(r['step_proposals_min'] for r in peer_runs):.0f}–"
             f"{max(r['step_proposals_max'] for r in peer_runs):.0f} for {N * NUM_BACKWARD} draws) |",
             f"| samplers PaRIS, fresh keys within one peer run's time | {s['n']} | "
             f"{eq['budget_s'] / max(s['n'], 1):.3g} | {s['bias']:+.2f} | {_f(s['sd'])} | "
             f"{s['rmse']:.2f} | {np.mean([float(v) for v in rec['ours_proposals']]):.2f} |",
             f"| samplers PaRIS, mean of those {s['n']} runs | 1 | {eq['budget_s']:.3g} | "
             f"{eq['paris_mean_error']:+.2f} | – | {abs(eq['paris_mean_error']):.2f} | |"]
    for i, ch in enumerate(eq["ppg_chains"]):
        lines.append(f"| samplers PPG chain {i + 1}, roll-out after {PPG_BURN_IN} sweeps, "
                     f"{ch['sweeps']} sweeps in that time | 1 | {eq['budget_s']:.3g} | "
                     f"{ch['error']:+.2f} | – | {abs(ch['error']):.2f} | |")
    lines += ["", "Averaging PaRIS reruns removes variance, not PaRIS's O(T/N) bias; PPG's "
              "roll-out removes the bias. One PPG estimate has a larger spread than one PaRIS "
              "run of the same cost: its value is in learning loops, where variance averages "
              "out and bias does not.", ""]
    large = cfg.get("peer_large_run")
    grid = cfg.get("grid_rows") or []
    if grid:
        per_step = statistics.median(peer_s) / (N * max(T - 1, 1))
        lines += ["### Our PaRIS over N x T (one run; compile time apart)", "",
                  f"Peer column: measured where run, else `est.` = its median time per "
                  f"particle-step at N = {N}, T = {T} ({per_step * 1e3:.2f} ms) x N (T - 1).", "",
                  "| N | T | ours: compile (s) | ours: run (s) | peer (s) | peer / ours | "
                  "our errors vs RTS |", "|---|---|---|---|---|---|---|"]
        for g in grid:
            measured = None
            if [g["N"], g["T"]] == [N, T]:
                measured = statistics.median(peer_s)
            elif large and [g["N"], g["T"]] == large["size"]:
                measured = large["seconds"]
            peer_t = measured if measured is not None else per_step * g["N"] * (g["T"] - 1)
            label = f"{peer_t:.3g}" if measured is not None else f"est. {peer_t:.3g}"
            errs = ", ".join(f"{e:+.1f}" for e in g["errors"])
            lines.append(f"| {g['N']} | {g['T']} | {g['compile_s']:.1f} | {g['run_s']:.3g} | "
                         f"{label} | {'**' if measured else ''}{peer_t / g['run_s']:.0f}"
                         f"{'**' if measured else ''} | {errs} |")
        lines.append("")
    if large:
        e = large["estimate"] - large["exact"]
        lines += [f"Larger peer point, one run: N = {large['size'][0]}, T = {large['size'][1]}: "
                  f"{large['seconds']:.1f} s, error {e:+.2f}, {large['proposals_per_draw']:.2f} "
                  f"proposals per draw (per step {large['step_proposals_min']:.0f}–"
                  f"{large['step_proposals_max']:.0f} for {large['size'][0] * NUM_BACKWARD} draws).", ""]
    lg = cfg.get("long_run")
    if lg:
        lines += [f"Ours at N = {lg['N']}, T = {lg['T']:,}: {lg['run_s']:.1f} s per run after "
                  f"compilation (first call, compile + run: {lg['first_call_s']:.1f} s); error "
                  f"{lg['error']:+.1f} on E[h | y] = {lg['exact']:.1f}; "
                  f"{lg['proposals_per_draw']:.2f} proposals per backward draw.", ""]
    lines.append("### Timed side by side (harness)")
    return "\n".join(lines)


def cases(cfg: dict) -> Iterator[Case]:
    """The timed PaRIS and PG cases (the harness times them), then the studies, whose
    results go to ``cfg`` and ``NOTES`` (read by the harness after the cases have run)."""
    global NOTES
    import particles  # noqa: F401  (fail early if the peer is missing)

    T_max = max([cfg["peer_size"][1], cfg["pg_size"][1]] + [t for _, t in cfg["grid"]]
                + ([cfg["long"][1]] if cfg["long"] else []))
    y_np = data(T_max)
    N, T = cfg["peer_size"]
    cfg["exact_peer_size"] = exact = exact_value(y_np[:T])
    cfg["kalman_check_T"] = T
    cfg["kalman_check"] = kalman_check(y_np[:T])
    if cfg["grid"]:  # first: its first calls include the compilation
        cfg["grid_rows"] = our_grid(cfg, y_np)
    record: dict = {}
    yield paris_case(cfg, y_np, exact, record)
    cfg["paris_record"] = {
        "ours": [float(v) for v in record["ours"]],
        "ours_proposals": [float(v) for v in record["ours_proposals"]], "peer": record["peer"]}
    pg_record: dict = {}
    yield pg_case(cfg, y_np, exact_value(y_np[:cfg["pg_size"][1]]), pg_record)
    cfg["pg_record"] = pg_record
    budget = statistics.median([r["seconds"] for r in record["peer"]])
    cfg["equal_time"] = equal_time(cfg, y_np, exact, budget)
    print(f"  equal time ({budget:.1f} s): {cfg['equal_time']['paris_runs']} PaRIS runs, "
          f"PPG sweeps {[c['sweeps'] for c in cfg['equal_time']['ppg_chains']]}", flush=True)
    if cfg["peer_large"]:
        Nl, Tl = cfg["peer_large"]
        run = peer_paris(y_np[:Tl, 0].astype(np.float64), Nl, seed=999)
        cfg["peer_large_run"] = dict(run, size=[Nl, Tl], exact=exact_value(y_np[:Tl]))
        print(f"  peer paris N={Nl} T={Tl}: {run['seconds']:.1f} s", flush=True)
    if cfg["long"]:
        cfg["long_run"] = long_run(cfg, y_np)
    NOTES = notes_markdown(cfg)


if __name__ == "__main__":
    sys.exit(main({NAME: __name__}))
