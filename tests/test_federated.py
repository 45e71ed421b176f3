"""FA-LD: data clients, a non-iid logistic regression, sharding over devices, bad input."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
from mc import Z, assert_within, mc_mean, se_mean
from devices import fake_devices_env, run_on_devices
from samplers import federated


def _logistic_clients(num_clients=10, n=200, d=3, seed=0):
    """A logistic regression whose data are split non-iid: sorted by the first feature."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ np.array([1.0, -0.5, 0.25])))).astype(float)
    order = np.argsort(X[:, 0])
    target = samplers.targets.bayesian_logistic_regression(X, y, prior_scale=2.0)
    clients = (X[order].reshape(num_clients, -1, d), y[order].reshape(num_clients, -1))
    return target, clients


def test_non_iid_logistic_regression_matches_the_reference_posterior_mean():
    """Clients with different local optima bias FA-LD's mean by O(K eta) (Theorem 4.7's
    heterogeneity term; first order in eta for smooth targets, note §2.3 item 3). Measured at
    eta and eta/2: the bias halves, and the Richardson extrapolation 2 m(eta/2) - m(eta)
    matches the importance-sampling reference posterior mean within Monte Carlo error."""
    target, clients = _logistic_clients()
    L = float(np.linalg.eigvalsh(np.linalg.inv(target.reference["laplace_cov"])).max())
    x0 = jnp.asarray(target.reference["mode"], jnp.float32)
    means, ses = [], []
    for eta in (0.1 / L, 0.05 / L):
        fed = samplers.fald(clients, local_steps=5, step_size=eta, loglik_fn=target.loglik_fn,
                            logprior_fn=target.logprior_fn)
        trace = samplers.run(jax.random.key(0), fed, x0, 1000, num_chains=64)
        x = np.asarray(trace.positions, np.float64)[:, 200:]
        m, se = zip(*(mc_mean(x[..., i]) for i in range(target.dim)))
        means.append(np.array(m))
        ses.append(np.array(se))
    ref, ref_se = np.asarray(target.mean, np.float64), target.reference["mean_se"]
    bias_eta, bias_half = means[0] - ref, means[1] - ref
    big = np.abs(bias_eta) > Z * np.hypot(ses[0], ref_se)
    assert big.any()  # the heterogeneity bias is real at this step size...
    ratio_se = np.hypot(ses[0], 2 * ses[1])  # ... and halves with eta: b(eta) - 2 b(eta/2) = 0
    assert np.all(np.abs(bias_eta - 2 * bias_half) < Z * np.hypot(ratio_se, ref_se))
    extrapolated = 2 * means[1] - means[0]
    for i in range(target.dim):
        assert_within(extrapolated[i], np.hypot(ratio_se[i], ref_se[i]), ref[i],
                      what=f"extrapolated posterior mean {i}")
    assert np.all(trace.stats["reports"] == 10)
    assert np.all(trace.stats["bytes_exchanged"] == 2 * 10 * target.dim * 4)  # float32 up and down


def test_minibatch_client_gradient_is_unbiased():
    target, clients = _logistic_clients(num_clients=4)
    spec = samplers.fald(clients, 1, 0.01, batch_size=5, loglik_fn=target.loglik_fn,
                         logprior_fn=target.logprior_fn).step.spec
    full = samplers.fald(clients, 1, 0.01, loglik_fn=target.loglik_fn,
                         logprior_fn=target.logprior_fn).step.spec
    x = jnp.array([0.5, -0.2, 0.1])
    data_0 = jax.tree.map(lambda d: d[0], spec.data)
    keys = jax.random.split(jax.random.key(1), 4000)
    g = np.asarray(jax.vmap(lambda k: spec.client_grad(x, data_0, spec.sizes[0], spec.weights[0], k))(keys))
    exact = np.asarray(full.client_grad(x, data_0, full.sizes[0], full.weights[0], None))
    for i in range(3):
        assert_within(g[:, i].mean(), se_mean(g[:, i], ddof=0), exact[i], what=f"grad {i}")
    # the scaled client potential: its gradient is grad log prior + grad loglik_c / p_c
    assert np.allclose(exact, jax.grad(target.logprior_fn)(x) + 4 * jax.grad(
        lambda w: jnp.sum(jax.vmap(target.loglik_fn, (None, 0))(w, data_0)))(x), rtol=1e-5)


def test_decaying_step_size_is_reported():
    lps = [lambda x: -0.5 * jnp.sum(x ** 2), lambda x: -0.5 * jnp.sum((x - 1) ** 2)]
    fed = samplers.fald(lps, 2, lambda r: 0.1 / (1.0 + r))
    trace = samplers.run(jax.random.key(0), fed, jnp.zeros(2), 5)
    np.testing.assert_allclose(trace.stats["step_size"][0], 0.1 / (1.0 + np.arange(5)), rtol=1e-6)


SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, samplers
    from samplers import federated
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 6, 2)); y = (rng.uniform(size=(16, 6)) < 0.5).astype(float)
    loglik = lambda w, d: d[1] * jnp.dot(d[0], w) - jnp.logaddexp(0.0, jnp.dot(d[0], w))
    prior = lambda w: -0.5 * jnp.sum(w ** 2)
    mesh = jax.make_mesh((8,), ("clients",))
    # partial participation with minibatches: the widest path (full participation is w = p)
    for participation in (federated.scheme_i(5),):
        fed = samplers.fald((X, y), 3, 0.01, loglik_fn=loglik, logprior_fn=prior,
                            participation=participation, batch_size=4)
        a = samplers.run(jax.random.key(0), fed, jnp.zeros(2), 30, num_chains=2)
        b = samplers.run(jax.random.key(0), federated.sharded(fed, mesh), jnp.zeros(2), 30, num_chains=2)
        diff = np.max(np.abs(np.asarray(a.positions) - np.asarray(b.positions)))
        scale = np.max(np.abs(np.asarray(a.positions)))
        print("max abs diff", diff, "scale", scale)
        assert diff <= 1e-5 * scale, diff
    print("OK")
""")


def test_sharded_run_equals_the_single_device_run():
    run_on_devices(SHARDED_SCRIPT, 8)


MULTIHOST_WORKER = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[2], num_processes=2,
                               process_id=int(sys.argv[1]))
    import jax.numpy as jnp, numpy as np, samplers
    from samplers import federated
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 6, 2)); y = (rng.uniform(size=(8, 6)) < 0.5).astype(float)
    loglik = lambda w, d: d[1] * jnp.dot(d[0], w) - jnp.logaddexp(0.0, jnp.dot(d[0], w))
    prior = lambda w: -0.5 * jnp.sum(w ** 2)
    fed = samplers.fald((X, y), 3, 0.01, loglik_fn=loglik, logprior_fn=prior)
    mesh = jax.make_mesh((4,), ("clients",))  # spans both processes
    b = samplers.run(jax.random.key(0), federated.sharded(fed, mesh), jnp.zeros(2), 10, num_chains=2)
    a = samplers.run(jax.random.key(0), fed, jnp.zeros(2), 10, num_chains=2)
    diff = np.max(np.abs(np.asarray(a.positions) - np.asarray(b.positions)))
    assert diff <= 1e-5 * np.max(np.abs(np.asarray(a.positions))), diff
    print("OK", diff)
""")


@pytest.mark.slow
def test_multi_host_run_equals_the_single_device_run():
    """Two processes on 127.0.0.1 (jax.distributed, gloo CPU collectives), two devices each:
    the same user code shards the clients over the four global devices."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = fake_devices_env(2)
    workers = [subprocess.Popen([sys.executable, "-c", MULTIHOST_WORKER, str(i), port], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0 and "OK" in out, out + err[-3000:]


def test_bad_input_is_named():
    lps = [lambda x: -jnp.sum(x ** 2)] * 3
    with pytest.raises(ValueError, match=r"weights must be positive and sum to 1, got \[0.5, 0.2, 0.2\]"):
        samplers.fald(lps, 1, 0.1, weights=[0.5, 0.2, 0.2])
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
        samplers.fald(lps, 1, 0.1, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="local_steps must be an integer >= 1, got 0"):
        samplers.fald(lps, 0, 0.1)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        samplers.fald(lps, 1, -0.1)
    with pytest.raises(ValueError, match="noise must be 'independent', 'correlated' or a correlation"):
        samplers.fald(lps, 1, 0.1, noise="shared")
    with pytest.raises(ValueError, match="scheme_ii needs balanced weights"):
        samplers.fald(lps, 1, 0.1, weights=[0.2, 0.3, 0.5], participation=federated.scheme_ii(2))
    with pytest.raises(ValueError, match="num_reporting must be an integer >= 1"):
        federated.scheme_i(0)
    loglik = lambda w, d: -jnp.sum((d - w) ** 2)  # noqa: E731
    prior = lambda w: -jnp.sum(w ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"share leading axes \(num_clients, n_max\)"):
        samplers.fald((jnp.zeros((3, 5, 2)), jnp.zeros((4, 5))), 1, 0.1, loglik_fn=loglik,
                      logprior_fn=prior)
    with pytest.raises(ValueError, match="data clients need loglik_fn"):
        samplers.fald(jnp.zeros((3, 5, 2)), 1, 0.1)
    with pytest.raises(ValueError, match="batch_size must be <= the smallest client's size 2"):
        samplers.fald(jnp.zeros((3, 5, 2)), 1, 0.1, loglik_fn=loglik, logprior_fn=prior,
                      client_sizes=[5, 2, 3], batch_size=3)
    mesh = jax.make_mesh((1,), ("clients",))
    with pytest.raises(TypeError, match="made by samplers.fald"):
        federated.sharded(samplers.ula(prior, 0.1), mesh)
