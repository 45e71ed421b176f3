"""Real posteriors: accuracy and ESS per gradient on Inference Gym targets, ours against NUTS,
MEADS and adjusted MCLMC.

Targets (:mod:`benchmarks.gym_targets`): Inference Gym posteriors that ship ground-truth
means and standard deviations: German credit logistic regression (d = 25), German credit
sparse logistic regression (d = 51), Brownian motion with unknown scales and missing middle
observations (d = 32), stochastic volatility on 100 days of the S&P 500 (d = 103), radon
contextual effects in Minnesota (d = 91), eight schools (d = 10). Every sampler works on the
unconstrained vector z (the target's ``default_event_space_bijector``, its log-Jacobian in the
log-density); draws are mapped back through the bijector (and the Gym's ``identity``
transformation) before they are compared with the ground truth.

Methods, all from the same starting points (z ~ N(0, I), one draw per chain, the same for
every method) and the same key:

* NumPyro NUTS (``MCMC(NUTS(potential_fn=...), chain_method="vectorized")``, Stan's windowed
  adaptation of step size and diagonal mass matrix, target acceptance 0.8);
* BlackJAX NUTS (``window_adaptation(blackjax.nuts, ...)`` per chain, diagonal metric);
* BlackJAX MEADS (``meads_adaptation`` over the ensemble, then ``ghmc``): needs folds of
  chains, so it runs in the many-chain setting only;
* BlackJAX adjusted MCLMC (``adjusted_mclmc_dynamic`` with
  ``adjusted_mclmc_find_L_and_step_size``, diagonal preconditioning, target acceptance 0.9);
* ours: ``samplers.malt`` (warm-up tunes step size, diagonal mass matrix, trajectory length
  and friction), ``samplers.mala`` (step size and diagonal mass matrix) and, for reference,
  the unadjusted ``samplers.underdamped`` run at MALT's adapted step size, mass matrix and
  friction (no adaptation of its own).

Budgets. BlackJAX NUTS runs ``num_warmup + num_draws`` iterations; its mean number of
gradient evaluations per chain (warm-up included, from ``num_integration_steps``) is the budget
B of that target. Methods with one gradient per step (MALA, the unadjusted sampler, GHMC) run
B steps per chain, the first ``warmup_fraction`` of them warm-up, keeping at most
``max_draws`` evenly thinned draws; adjusted MCLMC gets B / (1.3 x its average of 2 gradients
per step) steps (1.3: its tuning runs 30% extra steps). NUTS in NumPyro runs the same
``num_warmup + num_draws`` iterations as BlackJAX NUTS. MALT runs ``num_warmup`` warm-up
iterations too; when ``num_draws`` draws leave it under 80% of B, it is rerun (same key and
start) with as many more draws as B allows at its adapted L gradients per draw. Every row
reports the gradients it actually used.

Metrics per (target, method): err_mean = max over coordinates |mean - truth| / truth_sd,
err_sd = max |sd - truth_sd| / truth_sd, max split R-hat and min bulk ESS (ArviZ, over the kept
draws of all chains), ESS/grad = min bulk ESS / total gradient evaluations of all chains
(warm-up included), wall time with JAX's compilation time taken out (tracing, lowering and
XLA compilation, measured by ``jax.monitoring`` events during the run), mean acceptance.

``python -m benchmarks.bench_posteriors [--quick] [--out DIR]``; ``samplers bench posteriors``.
"""
from __future__ import annotations

import math
import sys
import time
import traceback
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import gym_targets
from .harness import Case, main

NAME = "posteriors"
TITLE = ("Real posteriors (Inference Gym): MALT and MALA vs NUTS, MEADS and adjusted MCLMC "
         "(error in ground-truth sds, ESS per gradient)")
PEERS = ("blackjax", "numpyro", "inference_gym", "tfp-nightly", "arviz")
BASE_NOTES = """
Inference Gym targets with ground truth, sampled in unconstrained space (the Gym's default
event-space bijector, log-Jacobian included), draws mapped back before comparing. All methods
start from the same z ~ N(0, I) per chain, same key. err_mean = max_i |mean_i - truth_i| /
sd_i, err_sd = max_i |sd_hat_i - sd_i| / sd_i (ground-truth sd_i); R-hat max and ESS min over
coordinates (ArviZ rank-normalised split R-hat, bulk ESS, over the kept draws); ESS/grad =
min bulk ESS / all gradient evaluations of all chains, warm-up included; wall = seconds of the
whole run (warm-up + sampling) minus JAX tracing/compilation time. Budget: BlackJAX NUTS sets
the gradients per chain B; one-gradient-per-step methods (MALA, unadjusted underdamped, GHMC)
run B steps, adjusted MCLMC about B gradients; NumPyro NUTS runs the same iterations as
BlackJAX NUTS; MALT the same warm-up, then draws up to B (rerun when under 80% of B).
`underdamped` is the unadjusted sampler at MALT's adapted step, mass matrix and friction
(biased by construction: a reference, not a competitor).
"""
NOTES = BASE_NOTES

FULL_TARGETS = ["german_credit", "sparse_logistic", "brownian", "stochastic_volatility",
                "radon", "eight_schools"]
QUICK_TARGETS = ["german_credit", "eight_schools"]
FEW_METHODS = ["numpyro_nuts", "blackjax_nuts", "adjusted_mclmc", "malt", "mala", "underdamped"]
MANY_METHODS = ["meads", "malt", "mala"]


def config(quick: bool) -> dict:
    """Sizes. ``quick`` (about 5 minutes on two CPU cores): two targets, 4 chains,
    300 + 300 NUTS iterations, no many-chain setting. Full: six targets, 4 chains with
    1000 + 1000 iterations, and 128 chains (MEADS, MALT, MALA) at a quarter of the per-chain
    budget."""
    return {
        "targets": QUICK_TARGETS if quick else FULL_TARGETS,
        "num_chains": 4,
        "num_warmup": 300 if quick else 1000,
        "num_draws": 300 if quick else 1000,
        "warmup_fraction": 0.5,
        "max_draws": 2000 if quick else 5000,
        "methods": FEW_METHODS,
        "many_chains": None if quick else 128,
        "many_methods": MANY_METHODS,
        "many_budget_fraction": 0.25,
        "seed": 0,
        "repeats": 1, "min_time": 0.0,
    }


# ------------------------------------------------------------------------------ timing

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]
_listening = [False]


def _listen():
    if not _listening[0]:
        def listener(event, duration, **kwargs):
            if event in _COMPILE_EVENTS:
                _compile_seconds[0] += duration
        jax.monitoring.register_event_duration_secs_listener(listener)
        _listening[0] = True


def _timed(fn: Callable):
    """``(result, wall seconds minus compilation, compilation seconds)`` of ``fn()``."""
    _listen()
    before = _compile_seconds[0]
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    wall = time.perf_counter() - start
    compile_s = _compile_seconds[0] - before
    return out, max(wall - compile_s, 0.0), compile_s


def _thin_plan(total_steps: int, warmup_fraction: float, max_draws: int):
    """(num_warmup, num_steps, thin) with num_steps a multiple of thin, draws <= max_draws."""
    num_warmup = int(round(total_steps * warmup_fraction))
    sampling = max(total_steps - num_warmup, 1)
    thin = max(1, math.ceil(sampling / max_draws))
    return num_warmup, (sampling // thin) * thin, thin


# ---------------------------------------------------------------------------- methods
# Each returns a dict: draws (chain, draw, d) unconstrained, grads (chain,) all gradient
# evaluations, acceptance (mean), and a few adapted parameters.

def numpyro_nuts(target, x0, key, cfg, budget=None):
    from numpyro.infer import MCMC, NUTS

    num_chains = x0.shape[0]

    def go():
        mcmc = MCMC(NUTS(potential_fn=lambda z: -target.logdensity_fn(z)),
                    num_warmup=cfg["num_warmup"], num_samples=cfg["num_draws"],
                    num_chains=num_chains, chain_method="vectorized", progress_bar=False)
        mcmc.warmup(key, init_params=x0, extra_fields=("num_steps",), collect_warmup=True)
        warm = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
        mcmc.run(key, extra_fields=("num_steps", "accept_prob", "diverging"))
        extra = mcmc.get_extra_fields(group_by_chain=True)
        draws = mcmc.get_samples(group_by_chain=True)
        return draws, warm, extra, mcmc.last_state.adapt_state.step_size

    (draws, warm, extra, step), wall, comp = _timed(go)
    grads = warm.sum(1) + np.asarray(extra["num_steps"]).sum(1)
    return dict(draws=np.asarray(draws), grads=grads, wall=wall, compile=comp,
                acceptance=float(np.mean(extra["accept_prob"])),
                divergences=int(np.sum(extra["diverging"])),
                step_size=float(np.mean(step)))


def blackjax_nuts(target, x0, key, cfg, budget=None):
    import blackjax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    logdensity = target.logdensity_fn

    def one(key, x):
        k_warm, k_run = jax.random.split(key)
        warmup = blackjax.window_adaptation(
            blackjax.nuts, logdensity,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}))
        (state, params), info = warmup.run(k_warm, x, num_steps=cfg["num_warmup"])
        alg = blackjax.nuts(logdensity, **params)

        def body(s, k):
            s, i = alg.step(k, s)
            return s, (s.position, i.num_integration_steps, i.acceptance_rate, i.is_divergent)

        _, (pos, n, acc, div) = jax.lax.scan(body, state,
                                             jax.random.split(k_run, cfg["num_draws"]))
        grads = jnp.sum(info.info.num_integration_steps) + jnp.sum(n)
        return pos, grads, jnp.mean(acc), jnp.sum(div), params["step_size"]

    run = jax.jit(jax.vmap(one))
    keys = jax.random.split(key, x0.shape[0])
    (pos, grads, acc, div, step), wall, comp = _timed(lambda: run(keys, x0))
    return dict(draws=np.asarray(pos), grads=np.asarray(grads), wall=wall, compile=comp,
                acceptance=float(np.mean(acc)), divergences=int(np.sum(div)),
                step_size=float(np.mean(step)))


def meads(target, x0, key, cfg, budget):
    import blackjax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    num_chains = x0.shape[0]
    num_warmup, num_steps, thin = _thin_plan(budget, cfg["warmup_fraction"], cfg["max_draws"])
    logdensity = target.logdensity_fn

    @jax.jit
    def run(key, x0):
        k_warm, k_run = jax.random.split(key)
        warmup = blackjax.meads_adaptation(logdensity, num_chains=num_chains,
                                           adaptation_info_fn=get_filter_adapt_info_fn())
        (states, params), _ = warmup.run(k_warm, x0, num_warmup)
        alg = blackjax.ghmc(logdensity, **params)
        step = jax.vmap(alg.step)

        def draw(states, k):
            def one(carry, kk):
                s, acc = carry
                s, i = step(jax.random.split(kk, num_chains), s)
                return (s, acc + i.acceptance_rate), None
            (states, acc), _ = jax.lax.scan(one, (states, jnp.zeros(num_chains)),
                                            jax.random.split(k, thin))
            return states, (states.position, acc / thin)

        _, (pos, acc) = jax.lax.scan(draw, states, jax.random.split(k_run, num_steps // thin))
        return jnp.swapaxes(pos, 0, 1), jnp.mean(acc), params["step_size"], params["alpha"]

    (pos, acc, step, alpha), wall, comp = _timed(lambda: run(key, x0))
    grads = np.full(num_chains, float(num_warmup + num_steps))
    return dict(draws=np.asarray(pos), grads=grads, wall=wall, compile=comp,
                acceptance=float(acc), step_size=float(step), alpha=float(alpha), thin=thin)


def adjusted_mclmc(target, x0, key, cfg, budget):
    import blackjax
    from blackjax.mcmc import adjusted_mclmc_dynamic as amd

    logdensity = target.logdensity_fn
    avg_steps = 2.0  # BlackJAX's default target_num_integration_steps
    num_steps = max(100, int(budget / (avg_steps * 1.3)))
    thin = max(1, math.ceil(num_steps / cfg["max_draws"]))
    num_steps = (num_steps // thin) * thin
    steps_fn = amd.make_random_trajectory_length_fn(True)
    build = amd.build_kernel(integration_steps_fn=steps_fn)

    def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix,
               integration_steps_params):
        return build(rng_key, state, logdensity_fn, step_size,
                     inverse_mass_matrix=inverse_mass_matrix,
                     integration_steps_params=integration_steps_params)

    def one(key, x):
        k_init, k_tune, k_run = jax.random.split(key, 3)
        state = amd.init(x, logdensity, k_init)
        state, params, n_tune = blackjax.adjusted_mclmc_find_L_and_step_size(
            mclmc_kernel=kernel, logdensity_fn=logdensity, num_steps=num_steps, state=state,
            rng_key=k_tune, target=0.9, frac_tune1=0.1, frac_tune2=0.1, frac_tune3=0.1,
            diagonal_preconditioning=True, target_num_integration_steps=avg_steps)
        avg = params.L / params.step_size

        def draw(s, k):
            def inner(carry, kk):
                s, acc, n = carry
                s, i = kernel(kk, s, logdensity, params.step_size, params.inverse_mass_matrix,
                              (avg,))
                return (s, acc + i.acceptance_rate, n + i.num_integration_steps), None
            (s, acc, n), _ = jax.lax.scan(inner, (s, 0.0, 0), jax.random.split(k, thin))
            return s, (s.position, acc / thin, n)

        _, (pos, acc, n) = jax.lax.scan(draw, state, jax.random.split(k_run, num_steps // thin))
        return pos, jnp.asarray(n_tune) + jnp.sum(n), jnp.mean(acc), params.step_size, params.L

    run = jax.jit(jax.vmap(one))
    keys = jax.random.split(key, x0.shape[0])
    (pos, grads, acc, step, L), wall, comp = _timed(lambda: run(keys, x0))
    return dict(draws=np.asarray(pos), grads=np.asarray(grads, float), wall=wall, compile=comp,
                acceptance=float(np.mean(acc)), step_size=float(np.mean(step)),
                L=float(np.mean(L)), thin=thin)


def _param(params, name):
    value = getattr(params, name, None)
    if value is None and isinstance(params, dict):
        value = params.get(name)
    return value


def _our_row(trace, wall, comp, **extra):
    stats = trace.stats
    acc = stats.get("acceptance_rate")
    row = dict(draws=np.asarray(trace.positions), grads=np.asarray(trace.num_grads, float),
               wall=wall, compile=comp,
               acceptance=float(np.mean(acc)) if acc is not None else float("nan"), **extra)
    if "diverging" in stats:
        row["divergences"] = int(np.sum(stats["diverging"]))
    params = getattr(trace, "params", None)
    for name in ("step_size", "friction", "num_integration_steps"):
        value = _param(params, name) if params is not None else None
        if value is not None:
            row[name] = float(np.mean(np.asarray(value)))
    return row


def malt(target, x0, key, cfg, budget=None, record=None):
    """MALT for ``num_warmup + num_draws`` iterations; if that used under 80% of the budget,
    run again (same key and start) with enough more draws, at its adapted trajectory's L
    gradients each, to fill it (thinned to at most ``max_draws``); the rerun is reported."""
    import samplers

    alg = samplers.malt(target.logdensity_fn, step_size=0.1)

    def go(num_steps, thin):
        return samplers.run(key, alg, x0, num_steps, num_chains=x0.shape[0],
                            num_warmup=cfg["num_warmup"], thin=thin, adapt_mass_matrix=True,
                            dense_mass=False, chain_axis=True, progress=False,
                            on_nonfinite="flag")

    trace, wall, comp = _timed(lambda: go(cfg["num_draws"], 1))
    used = float(np.mean(np.asarray(trace.num_grads)))
    thin, num_steps = 1, cfg["num_draws"]
    steps_per_draw = _param(trace.params, "num_integration_steps")
    if budget and used < 0.8 * budget and steps_per_draw is not None:
        per_step = max(float(np.mean(np.asarray(steps_per_draw))), 1.0)
        num_steps = cfg["num_draws"] + int((budget - used) / per_step)
        thin = max(1, math.ceil(num_steps / cfg["max_draws"]))
        num_steps = (num_steps // thin) * thin
        trace, wall, comp = _timed(lambda: go(num_steps, thin))
    if record is not None:
        record["malt_params"] = trace.params
    return _our_row(trace, wall, comp, thin=thin, iterations=cfg["num_warmup"] + num_steps)


def mala(target, x0, key, cfg, budget):
    import samplers

    num_warmup, num_steps, thin = _thin_plan(budget, cfg["warmup_fraction"], cfg["max_draws"])
    alg = samplers.mala(target.logdensity_fn, step_size=0.1)

    def go():
        return samplers.run(key, alg, x0, num_steps, num_chains=x0.shape[0],
                            num_warmup=num_warmup, thin=thin, adapt_mass_matrix=True,
                            dense_mass=False, chain_axis=True, progress=False,
                            on_nonfinite="flag")

    trace, wall, comp = _timed(go)
    return _our_row(trace, wall, comp, thin=thin)


def underdamped(target, x0, key, cfg, budget, record=None):
    """The unadjusted sampler at MALT's adapted step size, friction and mass matrix."""
    import samplers

    params = (record or {}).get("malt_params")
    if params is None:
        raise RuntimeError("needs MALT's adapted parameters (run malt first)")
    step = float(np.median(np.asarray(_param(params, "step_size"))))
    friction = float(np.median(np.asarray(_param(params, "friction"))))
    imm = np.median(np.asarray(_param(params, "inverse_mass_matrix")), axis=0)
    num_warmup, num_steps, thin = _thin_plan(budget, cfg["warmup_fraction"], cfg["max_draws"])
    alg = samplers.underdamped(target.logdensity_fn, step_size=step, friction=friction,
                               inverse_mass_matrix=jnp.asarray(imm))

    def go():
        return samplers.run(key, alg, x0, num_steps, num_chains=x0.shape[0],
                            num_warmup=num_warmup, thin=thin, adapt_step_size=False,
                            chain_axis=True, progress=False, on_nonfinite="flag")

    trace, wall, comp = _timed(go)
    row = _our_row(trace, wall, comp, thin=thin, step_size=step, friction=friction)
    row["grads"] = np.full(x0.shape[0], float(num_warmup + num_steps))
    return row


METHODS = {"numpyro_nuts": numpyro_nuts, "blackjax_nuts": blackjax_nuts, "meads": meads,
           "adjusted_mclmc": adjusted_mclmc, "malt": malt, "mala": mala,
           "underdamped": underdamped}
OURS = ("malt", "mala", "underdamped")


# ---------------------------------------------------------------------------- metrics

def _arviz(name, x):
    import arviz as az

    return np.asarray(getattr(az, name)(az.convert_to_dataset(np.asarray(x)))["x"].values)


def metrics(target, out: dict) -> dict:
    z = jnp.asarray(out["draws"])
    x = np.asarray(jax.jit(jax.vmap(jax.vmap(target.constrain)))(z), np.float64)
    finite = bool(np.all(np.isfinite(x)))
    row = {"chains": int(x.shape[0]), "draws": int(x.shape[1]),
           "grads": float(np.sum(out["grads"])),
           "grads_per_chain": float(np.mean(out["grads"]))}
    if finite:
        flat = x.reshape(-1, x.shape[-1])
        row["err_mean"] = float(np.max(np.abs(flat.mean(0) - target.truth_mean) / target.truth_sd))
        row["err_sd"] = float(np.max(np.abs(flat.std(0) - target.truth_sd) / target.truth_sd))
        row["rhat_max"] = float(np.max(_arviz("rhat", x)))
        ess = _arviz("ess", x)
        row["ess_min"] = float(np.min(ess))
        row["ess_per_grad"] = row["ess_min"] / row["grads"]
    else:
        row["nonfinite_fraction"] = float(np.mean(~np.isfinite(x)))
    for key in ("wall", "compile", "acceptance", "divergences", "step_size", "friction",
                "num_integration_steps", "L", "alpha", "thin", "iterations"):
        if key in out:
            row[key if key not in ("wall", "compile") else key + "_s"] = out[key]
    return row


# ------------------------------------------------------------------------------ study

def run_setting(target, methods, x0, key, cfg, budget: Optional[float], log) -> list[dict]:
    rows, record = [], {}
    for name in methods:
        fn = METHODS[name]
        kwargs = {"record": record} if name in ("malt", "underdamped") else {}
        try:
            b = None if budget is None else int(round(budget))
            if name not in ("numpyro_nuts", "blackjax_nuts", "malt") and b is None:
                raise RuntimeError("no gradient budget (BlackJAX NUTS did not run)")
            out = fn(target, x0, key, cfg, b, **kwargs)
            row = metrics(target, out)
        except Exception as exc:  # report and go on with the other methods
            tb = traceback.format_exc()
            log(f"    {name}: FAILED {type(exc).__name__}: {exc}")
            row = {"chains": int(x0.shape[0]), "error": f"{type(exc).__name__}: {exc}",
                   "traceback": tb[-4000:]}
        row = {"target": target.name, "d": target.dim, "method": name,
               "side": "ours" if name in OURS else "peer", **row}
        if name == "blackjax_nuts" and "grads_per_chain" in row and budget is None:
            budget = row["grads_per_chain"]
        if "error" not in row:
            nan = float("nan")
            log(f"    {name:<15} chains {row['chains']:>3} "
                f"grads/chain {row['grads_per_chain']:>9.0f} "
                f"err {row.get('err_mean', nan):8.3g} / {row.get('err_sd', nan):8.3g} "
                f"rhat {row.get('rhat_max', nan):6.3f} ess {row.get('ess_min', nan):8.1f} "
                f"ess/grad {row.get('ess_per_grad', nan):9.2e} wall {row['wall_s']:7.1f}s "
                f"(compile {row['compile_s']:.1f}s)")
        rows.append(row)
    return rows, budget


def _fmt(v, spec=".3g"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def results_markdown(rows: list[dict]) -> str:
    header = ["target", "d", "method", "chains", "grads/chain", "err mean", "err sd",
              "R-hat max", "ESS min", "ESS/grad", "ESS/grad vs BJ NUTS", "wall (s)",
              "compile (s)", "acc", "step", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ref = {(r["target"], r["chains"]): r.get("ess_per_grad") for r in rows
           if r["method"] == "blackjax_nuts"}
    four = {r["target"]: r.get("ess_per_grad") for r in rows
            if r["method"] == "blackjax_nuts"}
    for r in rows:
        if "error" in r:
            cells = [r["target"], str(r["d"]), r["method"], str(r["chains"])] + ["–"] * 11 + [
                "failed: " + r["error"].replace("|", "\\|")[:160]]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        base = ref.get((r["target"], r["chains"])) or four.get(r["target"])
        rel = (r["ess_per_grad"] / base) if (base and "ess_per_grad" in r) else None
        notes = []
        if "nonfinite_fraction" in r:
            notes.append(f"non-finite draws ({r['nonfinite_fraction']:.0%})")
        if r.get("divergences"):
            notes.append(f"{r['divergences']} divergent")
        if r.get("thin", 1) > 1:
            notes.append(f"thin {r['thin']}")
        if "num_integration_steps" in r:
            notes.append(f"L {r['num_integration_steps']:.0f}")
        if "L" in r:
            notes.append(f"traj. length {r['L']:.3g}")
        if "friction" in r:
            notes.append(f"gamma {r['friction']:.3g}")
        if "alpha" in r:
            notes.append(f"alpha {r['alpha']:.3g}")
        method = f"**{r['method']}**" if r["side"] == "ours" else r["method"]
        cells = [r["target"], str(r["d"]), method, str(r["chains"]),
                 _fmt(r["grads_per_chain"], ".0f"), _fmt(r.get("err_mean")),
                 _fmt(r.get("err_sd")), _fmt(r.get("rhat_max"), ".3f"),
                 _fmt(r.get("ess_min"), ".0f"), _fmt(r.get("ess_per_grad"), ".2e"),
                 _fmt(rel, ".2f"), _fmt(r["wall_s"], ".1f"), _fmt(r["compile_s"], ".1f"),
                 _fmt(r.get("acceptance"), ".2f"), _fmt(r.get("step_size"), ".3g"),
                 "; ".join(notes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cases(cfg: dict) -> Iterator[Case]:
    """Runs the whole study (no side-by-side timed cases: the harness's table stays empty);
    the results go to ``cfg["results"]`` (JSON) and ``NOTES`` (the markdown table)."""
    global NOTES
    log = lambda line: print(line, flush=True)  # noqa: E731
    key = jax.random.key(cfg["seed"])
    rows, skipped = [], {}
    start = time.perf_counter()
    for index, name in enumerate(cfg["targets"]):
        try:
            target = gym_targets.load(name)
        except Exception as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            log(f"  {name}: could not load ({skipped[name]})")
            continue
        log(f"  {name} ({target.gym_name}, d = {target.dim})")
        k_target = jax.random.fold_in(key, index)
        x0 = jax.random.normal(jax.random.fold_in(k_target, 0), (cfg["num_chains"], target.dim))
        new, budget = run_setting(target, cfg["methods"], x0, jax.random.fold_in(k_target, 1),
                                  cfg, None, log)
        rows += new
        if cfg["many_chains"] and budget:
            many = jax.random.normal(jax.random.fold_in(k_target, 2),
                                     (cfg["many_chains"], target.dim))
            fraction = cfg["many_budget_fraction"]
            many_cfg = dict(cfg, num_warmup=max(50, int(cfg["num_warmup"] * fraction)),
                            num_draws=max(50, int(cfg["num_draws"] * fraction)))
            new, _ = run_setting(target, cfg["many_methods"], many,
                                 jax.random.fold_in(k_target, 3), many_cfg,
                                 budget * cfg["many_budget_fraction"], log)
            rows += new
    cfg["results"] = rows
    cfg["skipped_targets"] = skipped
    cfg["study_s"] = round(time.perf_counter() - start, 1)
    lines = [BASE_NOTES.strip(), "",
             f"Settings: {cfg['num_chains']} chains, NUTS {cfg['num_warmup']} + "
             f"{cfg['num_draws']} iterations"
             + (f"; {cfg['many_chains']} chains at {cfg['many_budget_fraction']} of the "
                f"per-chain budget (MEADS, MALT, MALA; ESS/grad vs BJ NUTS is against the "
                f"4-chain BlackJAX NUTS row)" if cfg["many_chains"] else "")
             + f"; study time {cfg['study_s']} s.", "",
             "**bold**: ours. ESS/grad vs BJ NUTS > 1: more effective samples per gradient "
             "than BlackJAX NUTS on that target.", "", results_markdown(rows), ""]
    if skipped:
        lines += ["Targets not run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()), ""]
    lines += ["(No side-by-side timings in the harness table below: this benchmark compares "
              "accuracy and ESS per gradient; wall times are in the table above.)"]
    NOTES = "\n".join(lines)
    return
    yield  # a generator that yields no Case


if __name__ == "__main__":
    sys.exit(main({NAME: __name__}))
