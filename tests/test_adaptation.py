"""Dual averaging drives the acceptance rate to its target (Hoffman & Gelman 2014, §3.2)."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from samplers.adaptation import adapted_step_size, dual_averaging_init, dual_averaging_update


@jax.jit
def _adapt(step_size, target):
    """2000 updates against the acceptance curve a(h) = exp(-h): its root is h* = -log(target)."""

    def body(state, _):
        return dual_averaging_update(state, jnp.exp(-jnp.exp(state.log_step)), target), None

    state, _ = jax.lax.scan(body, dual_averaging_init(step_size), None, length=2000)
    return adapted_step_size(state)


@settings(max_examples=25, deadline=None)
@given(step_size=st.floats(1e-3, 10.0), target=st.floats(0.2, 0.9))
def test_dual_averaging_finds_the_step_with_the_target_acceptance(step_size, target):
    h = float(_adapt(jnp.float32(step_size), jnp.float32(target)))
    # the average forgets the start as t^{-kappa} (2000^-0.75 = 0.003 per unit of log-step
    # error): the acceptance ends well inside the 0.05 the samplers are held to
    assert abs(np.exp(-h) - target) < 0.01, (h, -np.log(target))
