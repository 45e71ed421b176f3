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
    kernel = samplers.numpyro.kernel(samplers.mala, model=eight_schools, step_size=0.1)
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=2000, num_samples=30_000, num_chains=4,
                              thinning=10, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(0), J, SIGMA, y=Y)
    assert mcmc.get_samples()["theta"].shape == (12_000, J)  # deterministic sites included
    idata = az.from_numpyro(mcmc)
    ours = az.summary(idata, var_names=["mu", "tau", "theta_tilde"])
    assert (ours["r_hat"] < 1.01).all(), ours["r_hat"]
    se = np.hypot(ours["mcse_mean"], nuts_reference["mcse_mean"])
    z = np.abs(ours["mean"] - nuts_reference["mean"]) / se
    assert (z < 5).all(), z
    stats_ = idata.sample_stats
    assert {"lp", "acceptance_rate", "step_size", "diverging"} <= set(stats_.data_vars)
    assert abs(float(stats_["acceptance_rate"].mean()) - 0.574) < 0.05
    assert not bool(stats_["diverging"].any())


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
