"""The house rules every public function follows (docs/index.md, "Conventions")."""
import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ("samplers", "vi", "diffusion")
# a loss takes the parameters first, the argument jax.grad differentiates (optax, flax)
PARAMETERS_FIRST = {"diffusion.training.denoising_loss"}
# the model's own arguments come first and pass through, so the key is NumPyro's keyword
# rng_key, whose default (jax.random.key(0)) draws the initial point
KEYWORD_KEY_THAT_DRAWS = {"samplers.numpyro.logdensity"}


def public_functions():
    """(qualified name, function) for every function in the ``__all__`` of the three
    packages and their modules."""
    seen, found = set(), []
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules = [root] + [importlib.import_module(info.name) for info in
                            pkgutil.walk_packages(root.__path__, package + ".")
                            if not info.name.rsplit(".", 1)[-1].startswith("_")]
        for module in modules:
            for name in getattr(module, "__all__", ()):
                obj = getattr(module, name, None)
                if inspect.isfunction(obj) and id(obj) not in seen:
                    seen.add(id(obj))
                    found.append((f"{obj.__module__}.{obj.__qualname__}", obj))
    return found


def test_the_key_comes_first_where_the_default_draws():
    """A parameter named ``key`` or ``rng_key`` is the first positional parameter, or a
    keyword whose default is None (the default computation draws nothing), except for the
    named exceptions."""
    functions = public_functions()
    assert len(functions) > 50
    wrong = []
    for name, fn in functions:
        params = list(inspect.signature(fn).parameters.values())
        for i, param in enumerate(params):
            if param.name not in ("key", "rng_key") or name in PARAMETERS_FIRST:
                continue
            if name in KEYWORD_KEY_THAT_DRAWS and param.kind == param.KEYWORD_ONLY:
                continue
            first = i == 0 and param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
            optional = param.kind == param.KEYWORD_ONLY and param.default is None
            if not (first or optional):
                wrong.append(f"{name}{inspect.signature(fn)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(PARAMETERS_FIRST | KEYWORD_KEY_THAT_DRAWS))
def test_the_exceptions_exist(name):
    module, attr = name.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), attr))


def test_a_key_in_the_wrong_place_is_named_with_the_signature():
    import jax
    import jax.numpy as jnp

    import samplers
    from samplers import smc

    model = smc.LinearGaussian(0.9, 1.0, 1.0, 1.0, 0.0, 1.0)
    ys = jnp.zeros((5, 1))
    with pytest.raises(TypeError, match=r"the key is the first argument: "
                                        r"particle_filter\(key, model, ys, num_particles\)"):
        smc.particle_filter(model, ys, jax.random.key(0), 10)  # the order before 0.1
    alg = samplers.ula(lambda x: -0.5 * jnp.sum(x ** 2), 0.1)
    with pytest.raises(TypeError, match=r"got Algorithm; the key is the first argument: run\(key"):
        samplers.run(alg, jax.random.key(0), jnp.zeros(2), 10)
    with pytest.raises(TypeError, match=r"sliced_wasserstein\(key, x, y\)"):
        samplers.sliced_wasserstein(jnp.zeros((4, 2)), jnp.ones((4, 2)), jax.random.key(0))
