"""The import graph of samplers, vi and diffusion: no cycle, plotting and demos kept out of
the library modules, and a light ``import samplers`` that leaves ``XLA_FLAGS`` alone.

The graph is read from the source with ``ast`` (nothing is imported): an edge A -> B for
every ``import B`` / ``from B import ...`` in module A (``from B import c`` also reaches
``B.c`` when that is a module), with the packages above B that A is not inside. Module-level
imports run when A is imported; imports inside functions run when those are called, and
count as dependencies all the same: a cycle through one is a cycle in the layering, merely
deferred.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("samplers", "vi", "diffusion")
# the modules that may import matplotlib at module level: the demos and the commands
PLOTTING = {"samplers.demos", "vi.demos", "diffusion.demos", "samplers.cli",
            "diffusion.experiment"}
DEMOS = {"samplers.demos", "vi.demos", "diffusion.demos"}
# what ``import PACKAGE`` must not import: each is loaded when the code that needs it is used
HEAVY = ("numpyro", "scipy", "optax", "arviz", "matplotlib")


def modules() -> dict[str, Path]:
    """{dotted name: source file} of every module of the three packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict, module_level: bool):
    """(imported module, line) for each import of module ``name`` (only its module-level
    statements when ``module_level``; a module-level ``if``/``try`` counts as module level)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    nodes = []
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            nodes.append(node)
        elif module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.ClassDef, ast.Lambda)):
            continue
        else:
            stack.extend(ast.iter_child_nodes(node))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
            continue
        if node.level:  # relative: from the package of this module, up level - 1 packages
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        yield target, node.lineno
        for alias in node.names:
            if f"{target}.{alias.name}" in known:
                yield f"{target}.{alias.name}", node.lineno


def graph(module_level: bool = False) -> dict[str, dict[str, int]]:
    """{module: {imported module of the three packages: line}}."""
    known = modules()
    out = {}
    for name, path in known.items():
        edges = {}
        for target, line in _imports(name, path, known, module_level):
            parts = target.split(".")
            for cut in range(1, len(parts) + 1):  # the target and the packages above it
                dep = ".".join(parts[:cut])
                if dep in known and dep != name and not name.startswith(dep + "."):
                    edges.setdefault(dep, line)
        out[name] = edges
    return out


def find_cycle(edges: dict[str, dict[str, int]]):
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _describe(cycle, edges) -> str:
    return " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) \
        + f" -> {cycle[-1]}"


def test_the_checker_finds_a_cycle():
    edges = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None
    assert "a (line 3) -> b (line 5) -> c (line 7) -> a" == _describe(["a", "b", "c", "a"], edges)


def test_the_graph_reads_relative_and_submodule_imports():
    edges = graph()
    assert "samplers.run" in edges["samplers"]                 # from .run import run
    assert "samplers.stein.kernels" in edges["samplers.stein"]  # from . import kernels
    assert "samplers.base" in edges["samplers.smc.filtering"]  # from ..base import ...
    assert "samplers" in edges["vi.fbgvi"]                       # the package above samplers.base
    assert "samplers" not in edges["samplers.run"]               # its own package: not an edge
    assert "samplers.verify" in edges["samplers.cli"]            # inside a function


@pytest.mark.parametrize("module_level", [True, False], ids=["module-level", "all"])
def test_no_import_cycle(module_level):
    edges = graph(module_level)
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + _describe(cycle, edges)


def test_the_foundation_never_imports_vi_or_diffusion():
    edges = graph()
    wrong = [f"{a} imports {b} (line {line})" for a, deps in edges.items()
             if a.split(".")[0] == "samplers"
             for b, line in deps.items() if b.split(".")[0] in ("vi", "diffusion")]
    assert not wrong, "\n".join(wrong)


def test_no_library_module_imports_plotting_or_the_demos():
    known = modules()
    wrong = []
    for name, path in known.items():
        for target, line in _imports(name, path, known, module_level=True):
            if target.split(".")[0] == "matplotlib" and name not in PLOTTING:
                wrong.append(f"{name} imports {target} at module level (line {line})")
    for name, deps in graph().items():
        wrong += [f"{name} imports {dep} (line {line})" for dep, line in deps.items()
                  if dep in DEMOS and name != "samplers.cli"]
    assert not wrong, "\n".join(wrong)


_FRESH = """
import json, os, sys
import {package}
heavy = [m for m in {heavy!r} if m in sys.modules]
flags = os.environ.get("XLA_FLAGS", "")
print(json.dumps({{"heavy": heavy, "flags": flags}}))
"""


def _fresh(code: str, **env) -> str:
    """stdout of ``code`` in a fresh interpreter, without the suite's YNN flag."""
    base = dict(os.environ)
    base["XLA_FLAGS"] = " ".join(f for f in base.get("XLA_FLAGS", "").split()
                                 if not f.startswith("--xla_cpu_experimental_ynn_fusion_type"))
    base.pop("SAMPLERS_KEEP_XLA_FLAGS", None)
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env},
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_import_is_light_and_leaves_xla_flags_alone(package):
    mine = "--xla_force_host_platform_device_count=1"
    out = json.loads(_fresh(_FRESH.format(package=package, heavy=HEAVY), XLA_FLAGS=mine)
                     .splitlines()[-1])
    assert out["heavy"] == [], f"import {package} imports {out['heavy']}"
    assert out["flags"] == mine, out["flags"]


def test_lazy_names_are_attributes_and_importable():
    import samplers

    for name in samplers.__all__:  # from samplers import X, for every X
        assert getattr(samplers, name) is not None, name
    assert set(samplers.__all__) <= set(dir(samplers))
    assert samplers.sliced_wasserstein is samplers.sliced.sliced_wasserstein
    assert callable(samplers.numpyro.kernel)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        samplers.nope  # noqa: B018


_CONFIGURE = """
import json, os, warnings
import jax, jax.numpy as jnp, numpy as np, samplers
added = samplers.configure_xla()
flags = os.environ["XLA_FLAGS"]
n = 500  # the product that comes out all NaN with jaxlib 0.10.2's YNN fusions (samplers/_xla.py)
def f(x):
    r2 = jnp.maximum(jnp.sum(x * x, 1)[:, None] + jnp.sum(x * x, 1) - 2 * x @ x.T, 0.0)
    F = -0.5 * (1.0 + r2) ** -1.5
    return 2 * (F @ x - F.sum(1, keepdims=True) * x) + (1.0 + r2) ** -0.5 @ jnp.zeros_like(x)
nans = int(np.isnan(np.asarray(jax.jit(f)(jax.random.normal(jax.random.key(0), (n, 10))))).sum())
os.environ["XLA_FLAGS"] = ""
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    late = samplers.configure_xla()
print(json.dumps({"added": added, "flags": flags, "nans": nans, "late": late,
                  "warnings": [str(w.message) for w in caught]}))
"""


def test_configure_xla_before_and_after_the_first_computation():
    """Before the first computation it adds the flag and the NaN product comes out finite;
    after it, it changes nothing and says why."""
    import jaxlib

    out = json.loads(_fresh(_CONFIGURE).splitlines()[-1])
    assert out["nans"] == 0
    if not jaxlib.__version__.startswith("0.10."):
        assert out["added"] is False and out["late"] is False  # the flag exists only there
        return
    assert out["added"] is True and out["flags"].endswith("--xla_cpu_experimental_ynn_fusion_type=")
    assert out["late"] is False
    assert len(out["warnings"]) == 1 and "after the first JAX computation" in out["warnings"][0]
