"""The NumPyro bridge: model log-densities, and our kernels inside numpyro.infer.MCMC."""
import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import samplers
from mc import assert_within

J = 8
Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(J, sigma, y=None):
    """Non-centred eight schools (Rubin 1981; Gelman et al., BDA3 §5.5)."""
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0, 1))
        numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def test_logdensity_is_the_unconstrained_joint_density():
    def model(y):
        loc = numpyro.sample("loc", dist.Normal(1.0, 2.0))
        scale = numpyro.sample("scale", dist.HalfNormal(1.5))
        numpyro.sample("y", dist.Normal(loc, scale), obs=y)

    y = np.array([0.3, -1.2, 2.0])
    logdensity_fn, z0, constrain = samplers.numpyro.logdensity(model, y)
    assert set(z0) == {"loc", "scale"}

    def by_hand(loc, log_scale):  # scipy densities, plus log|d scale / d log_scale|
        scale = np.exp(log_scale)
        return (stats.norm(1.0, 2.0).logpdf(loc) + stats.halfnorm(scale=1.5).logpdf(scale)
                + stats.norm(loc, scale).logpdf(y).sum() + log_scale)

    for loc, log_scale in [(0.0, 0.0), (1.5, -0.7)]:
        z = {"loc": jnp.asarray(loc), "scale": jnp.asarray(log_scale)}
        np.testing.assert_allclose(logdensity_fn(z), by_hand(loc, log_scale), rtol=1e-5)
        np.testing.assert_allclose(constrain(z)["scale"], np.exp(log_scale), rtol=1e-6)


@pytest.fixture(scope="module")
def nuts_reference():
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(eight_schools), num_warmup=500,
                              num_samples=1500, num_chains=4, chain_method="vectorized",
                              progress_bar=False)
    mcmc.run(jax.random.key(1), J, SIGMA, y=Y)
    return az.summary(az.from_numpyro(mcmc), var_names=["mu", "tau", "theta_tilde"])


def test_mala_kernel_matches_nuts_on_eight_schools(nuts_reference):
    # step size adapted alone: with the preconditioner adapted too, one chain's acceptance
    # after warm-up has sd 0.10 on this funnel (64 chains: mean 0.594 +- 0.013), so four
    # chains' mean strays 0.05 from 0.574 often; the preconditioner is checked elsewhere
    kernel = samplers.numpyro.kernel(samplers.mala, model=eight_schools, step_size=0.1,
                                     adapt_mass_matrix=False)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=2000, num_samples=30_000, num_chains=4,
                              thinning=10, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0), J, SIGMA, y=Y)
    assert mcmc.get_samples()["theta"].shape == (12_000, J)  # deterministic sites included
    idata = az.from_numpyro(mcmc)
    ours = az.summary(idata, var_names=["mu", "tau", "theta_tilde"])
    assert (ours["r_hat"] < 1.01).all(), ours["r_hat"]
    se = np.hypot(ours["mcse_mean"], nuts_reference["mcse_mean"])
    assert_within(ours["mean"], se, nuts_reference["mean"], what="posterior mean")
    stats_ = idata.sample_stats
    assert {"lp", "acceptance_rate", "step_size", "diverging"} <= set(stats_.data_vars)
    assert abs(float(stats_["acceptance_rate"].mean()) - 0.574) < 0.05
    # no draw is non-finite; proposals with an energy error above 1000 are rejected and
    # flagged diverging (about 1% of MALA's proposals here, wild ones from the funnel's neck)
    assert np.isfinite(stats_["lp"]).all()


def test_kernel_single_chain_and_bad_arguments():
    kernel = samplers.numpyro.kernel(samplers.ula, model=eight_schools, step_size=0.01)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=10, num_samples=20, progress_bar=False)
    mcmc.run(jax.random.key(0), J, SIGMA, y=Y)
    assert mcmc.get_samples()["mu"].shape == (20,)
    with pytest.raises(ValueError, match="exactly one of model="):
        samplers.numpyro.kernel(samplers.mala, step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        mcmc = numpyro.infer.MCMC(samplers.numpyro.kernel(samplers.mala, model=eight_schools,
                                                          step_size=-1.0),
                                  num_warmup=1, num_samples=1, progress_bar=False)
        mcmc.run(jax.random.key(0), J, SIGMA, y=Y)


# --------------------------------------------------------------------- every Langevin kernel

def test_kernel_starts_each_chain_at_its_own_init_strategy_point():
    """With a zero-length run the first draw is the start (a step of 1e-12 moves by 1e-6)."""
    starts = {}
    for strategy in (numpyro.infer.init_to_uniform, numpyro.infer.init_to_median):
        kernel = samplers.numpyro.kernel(samplers.ula, model=eight_schools, step_size=1e-12,
                                         init_strategy=strategy)
        mcmc = numpyro.infer.MCMC(kernel, num_warmup=0, num_samples=1, num_chains=4,
                                  chain_method="vectorized", progress_bar=False)
        mcmc.run(jax.random.key(0), J, SIGMA, y=Y)
        starts[strategy] = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"][:, 0])
    uniform, median = starts.values()
    assert len(np.unique(uniform.round(4))) == 4  # four chains, four starts
    assert np.all(np.abs(uniform) < 2.0 + 1e-4)  # init_to_uniform: U(-2, 2) unconstrained
    # init_to_median draws 15 prior samples per chain and takes their median: distinct too,
    # and different from the uniform starts
    assert len(np.unique(median.round(4))) == 4 and not np.allclose(median, uniform)
    with pytest.raises(TypeError, match="init_strategy"):
        samplers.numpyro.kernel(samplers.ula, model=eight_schools, step_size=0.1,
                                init_strategy="median")


def stiff(y=None):
    """x ~ N(0, 0.01^2): ULA with h = 1 multiplies x by 1 - h / s^2 = -9999 per step and
    overflows to inf (then NaN) within ten steps."""
    numpyro.sample("x", dist.Normal(0.0, 0.01))


def test_a_nonfinite_step_is_not_taken_and_counts_as_a_divergence(capsys):
    kernel = samplers.numpyro.kernel(samplers.ula, model=stiff, step_size=1.0)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=0, num_samples=50, num_chains=2,
                              chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    extra = mcmc.get_extra_fields(group_by_chain=True)
    diverging = np.asarray(extra["diverging"])
    assert np.all(np.isfinite(x))  # the chains keep their last finite state
    # from the last finite state every step overflows: the divergences are the draws at
    # which the chain stopped moving
    assert np.array_equal(diverging[:, 1:], x[:, 1:] == x[:, :-1])
    assert diverging.sum() > 40
    assert "accept_prob" not in extra  # ULA has no acceptance probability to report
    mcmc.print_summary()
    assert f"Number of divergences: {int(diverging.sum())}" in capsys.readouterr().out
    stats_ = az.from_numpyro(mcmc).sample_stats
    assert int(stats_["diverging"].sum()) == diverging.sum()
    assert "acceptance_rate" not in stats_.data_vars


def test_underdamped_kernel_flags_divergences_instead_of_nan_draws():
    kernel = samplers.numpyro.kernel(samplers.underdamped, model=stiff, step_size=1.0)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=0, num_samples=30, progress_bar=False)
    mcmc.run(jax.random.key(0))
    assert np.all(np.isfinite(np.asarray(mcmc.get_samples()["x"])))
    assert bool(mcmc.get_extra_fields()["diverging"].any())


def gaussian_mean(y, subsample_size=None):
    """mu ~ N(0, 1), y_i ~ N(mu, 1): posterior N(sum y / (N + 1), 1 / (N + 1))."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0], subsample_size=subsample_size) as idx:
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=y[idx])


@pytest.mark.parametrize("subsample_size", [None, 20])
def test_sgld_kernel_has_the_closed_form_stationary_law(subsample_size):
    """SGLD on a Gaussian posterior N(m, s^2) with gradient g(x) = -(x - m) / s^2 + e:

        x' = (1 - h / s^2) x + h m / s^2 + h e + sqrt(2 h) xi,

    an AR(1) chain with stationary mean m and variance (2 h + h^2 Var e) / (1 - (1 - h/s^2)^2).
    Full data: e = 0 (ULA's variance). A plate subsampling n of N points without replacement:
    e = (N / n) sum_batch y_i - sum_i y_i, Var e = (N / n)^2 n S^2 (N - n) / N with S^2 the
    sample variance of y (finite-population sampling)."""
    y = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.0, 200))
    N, h = y.shape[0], 1e-3
    s2, m = 1.0 / (N + 1), float(y.sum()) / (N + 1)
    noise = 0.0
    if subsample_size is not None:
        n = subsample_size
        noise = (N / n) ** 2 * n * float(jnp.var(y, ddof=1)) * (N - n) / N
    a = 1.0 - h / s2
    variance = (2 * h + h ** 2 * noise) / (1 - a ** 2)
    kernel = samplers.numpyro.kernel(samplers.sgld, model=gaussian_mean, step_size=h)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=200, num_samples=20_000, num_chains=4,
                              chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(2), y, subsample_size=subsample_size)
    assert set(mcmc.get_extra_fields()) == {"diverging", "step_size"}  # no lp, no accept_prob
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"], np.float64)
    # AR(1): the mean of n draws has variance ~ variance (1 + a) / ((1 - a) n); the sample
    # variance's standard error ~ variance sqrt(2 (1 + a^2) / ((1 - a^2) n))
    size = draws.size
    se_mean = np.sqrt(variance * (1 + a) / ((1 - a) * size))
    se_var = variance * np.sqrt(2 * (1 + a ** 2) / ((1 - a ** 2) * size))
    assert_within(draws.mean(), se_mean, m, what="mean")
    assert_within(draws.var(), se_var, variance, what="variance")


def test_run_exports_the_models_constrained_and_deterministic_sites():
    logdensity_fn, z0, constrain_fn = samplers.numpyro.logdensity(
        eight_schools, J, SIGMA, y=Y, num_chains=4, init_strategy=numpyro.infer.init_to_median)
    assert z0["mu"].shape == (4,) and len(np.unique(np.asarray(z0["mu"]))) == 4
    trace = samplers.run(jax.random.key(0), samplers.mala(logdensity_fn, step_size=0.1), z0,
                         num_steps=200, num_chains=4, chain_axis=True)
    idata = trace.to_arviz(constrain_fn=constrain_fn)
    post = idata.posterior
    assert {"mu", "tau", "theta_tilde", "theta"} <= set(post.data_vars)
    assert post["theta"].shape == (4, 200, J)
    tau_unconstrained = np.asarray(trace.positions["tau"])
    np.testing.assert_allclose(post["tau"].values, np.exp(tau_unconstrained), rtol=1e-5)
    assert float(post["tau"].min()) > 0
    theta = post["mu"].values[..., None] + post["tau"].values[..., None] * post["theta_tilde"].values
    np.testing.assert_allclose(post["theta"].values, theta, rtol=1e-5, atol=1e-5)


def signed_mixture(y):
    """mu ~ N(0, 3); z_i ~ Bernoulli(0.8), enumerated; y_i ~ N(mu, 1) if z_i else N(-mu, 1)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("data", y.shape[0]):
        z = numpyro.sample("z", dist.Bernoulli(0.8), infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(jnp.where(z == 1, mu, -mu), 1.0), obs=y)


def test_enumerated_model_samples_its_marginal_and_exports():
    """The marginal posterior of mu, by quadrature on a grid, against our MALA kernel on the
    model with z summed out by NumPyro's enumeration (funsor)."""
    rng = np.random.default_rng(3)
    y = np.where(rng.uniform(size=40) < 0.8, 1.0, -1.0) * 1.5 + rng.normal(size=40)
    grid = np.linspace(-6, 6, 24_001)
    log_post = stats.norm(0, 3).logpdf(grid) + np.sum(np.logaddexp(
        np.log(0.8) + stats.norm.logpdf(y[:, None], grid), np.log(0.2) + stats.norm.logpdf(y[:, None], -grid)), 0)
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = np.sum(weights * grid)
    kernel = samplers.numpyro.kernel(samplers.mala, model=signed_mixture, step_size=0.1,
                                     init_strategy=numpyro.infer.init_to_value(values={"mu": 1.0}))
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=500, num_samples=4000, num_chains=4,
                              chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0), jnp.asarray(y))
    with pytest.raises(ValueError, match=r"log_likelihood=False"):
        az.from_numpyro(mcmc)  # NumPyro's log_likelihood cannot marginalise z
    idata = az.from_numpyro(mcmc, log_likelihood=False)
    summary = az.summary(idata, var_names=["mu"])
    assert float(summary["r_hat"].iloc[0]) < 1.01
    assert_within(float(summary["mean"].iloc[0]), float(summary["mcse_mean"].iloc[0]), mean,
                  what="mu")


def test_sgld_kernel_with_a_schedule_reports_the_step_it_used():
    schedule = lambda count: 1e-3 / (1.0 + count)  # noqa: E731
    kernel = samplers.numpyro.kernel(samplers.sgld, model=gaussian_mean, step_size=schedule)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=0, num_samples=5, progress_bar=False)
    mcmc.run(jax.random.key(0), jnp.zeros(10))
    used = np.asarray(mcmc.get_extra_fields()["step_size"])
    np.testing.assert_allclose(used, [1e-3 / (1.0 + k) for k in range(5)], rtol=1e-6)


def test_malt_kernel_with_numpyro_defaults_matches_nuts_on_eight_schools(nuts_reference):
    """NumPyro's defaults (4 chains, 1000 warm-up + 1000 draws), MALT adapted by default:
    r_hat <= 1.01 on every site and means within 5 combined MCSE of NUTS's."""
    kernel = samplers.numpyro.kernel(samplers.malt, model=eight_schools, step_size=0.1)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=1000, num_samples=1000, num_chains=4,
                              chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(2), J, SIGMA, y=Y)
    ours = az.summary(az.from_numpyro(mcmc), var_names=["mu", "tau", "theta_tilde"])
    assert (ours["r_hat"] <= 1.01).all(), ours["r_hat"]
    se = np.hypot(ours["mcse_mean"], nuts_reference["mcse_mean"])
    assert_within(ours["mean"], se, nuts_reference["mean"], what="posterior mean")
