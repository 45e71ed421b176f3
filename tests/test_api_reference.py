"""The API reference (docs/api.md) covers every public name of samplers, vi and diffusion.

docs/api.md is a list of mkdocstrings entries (``::: module`` or ``::: module.object``, with
an optional indented ``options:`` block). These tests parse it, resolve what each entry
renders, and compare that with the public names: ``__all__`` of the three packages, of the
submodules their ``__all__`` lists, and of every other module of theirs that defines one
(a module reached through a package's ``__all__`` without one exports its public names
defined there). A re-export (``samplers.stein.svgd``) is covered by the entry of the module
that defines it (``samplers.stein.samplers``): names are compared by the object they are.

mkdocstrings renders a module's members filtered by ``filters`` (mkdocs.yml sets "public",
i.e. ``__all__``) and ``members``, and hides an object without a docstring unless
``show_if_no_docstring`` is true; the checks follow those rules. Parsing only: the site
build itself is tests/test_examples_docs.py::test_docs_build_strict; the build-and-read
check of every rendered name here is marked slow.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"
STEIN = ROOT / "docs" / "stein.md"
PACKAGES = ("samplers", "vi", "diffusion")


# ---------------------------------------------------------------------------- parsing


class Entry(NamedTuple):
    identifier: str
    members: Optional[list]   # None: no restriction; [] (members: false): the root only
    show_if_no_docstring: bool
    line: int


def _options(lines: list[str]) -> dict:
    """The options of one entry: a YAML subset enough for ``members`` (a flow list, a block
    list, or false) and boolean options."""
    opts: dict = {}
    key = None
    for raw in lines:
        text = raw.split("#", 1)[0].rstrip()
        if not text.strip() or text.strip() == "options:":
            continue
        item = re.match(r"\s*-\s*(\S+)\s*$", text)
        if item and key is not None:
            opts.setdefault(key, []).append(item.group(1).strip("'\""))
            continue
        pair = re.match(r"\s*([A-Za-z_]+):\s*(.*)$", text)
        if not pair:
            raise ValueError(f"docs/api.md: cannot read the option line {raw!r}")
        key, value = pair.group(1), pair.group(2).strip()
        if value.startswith("["):
            opts[key] = [v.strip().strip("'\"") for v in value.strip("[]").split(",") if v.strip()]
        elif value in ("true", "false"):
            opts[key] = value == "true"
        elif value:
            opts[key] = value.strip("'\"")
    return opts


def parse_entries(text: str) -> list[Entry]:
    """The ``:::`` entries of a markdown page (outside fenced code), with their options."""
    lines = text.splitlines()
    entries, fenced, i = [], False, 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else re.match(r"^:::\s+(\S+)\s*$", line)
        i += 1
        if not match:
            continue
        start, block = i, []
        while i < len(lines) and lines[i].strip() and lines[i][:1] in (" ", "\t"):
            block.append(lines[i])
            i += 1
        opts = _options(block)
        members = opts.get("members")
        if members is False:
            members = []
        elif members is True:
            members = None
        entries.append(Entry(match.group(1), members, bool(opts.get("show_if_no_docstring")),
                             start))
    return entries


def _global_show_if_no_docstring() -> bool:
    text = (ROOT / "mkdocs.yml").read_text()
    return re.search(r"^\s*show_if_no_docstring:\s*true\s*$", text, re.M) is not None


# ---------------------------------------------------------------------------- resolving


def resolve(identifier: str):
    """The object an mkdocstrings identifier names: the longest importable module prefix,
    then attributes (``samplers.run.run`` is the function in module ``samplers.run``)."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                raise  # a dependency of the module is missing, not the module
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(identifier)


def _is_public_module(module: types.ModuleType) -> bool:
    return not any(p.startswith("_") for p in module.__name__.split("."))


def exported(module: types.ModuleType) -> list[str]:
    """What a module entry renders under ``filters: public``: ``__all__``, or else the public
    names defined in the module (not imported into it), as griffe decides without ``__all__``."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        home = getattr(obj, "__module__", None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and home == module.__name__:
            out.append(name)
    return out


def _key(obj, path: str):
    """Compare functions, classes and containers by identity (a re-export is the same object);
    scalars and strings by where they are."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return ("path", path)
    return ("id", id(obj))


def _has_docstring(obj) -> bool:
    """Whether mkdocstrings has a docstring to show (it reads the source, so a class's
    docstring must be its own, not namedtuple's generated ``Name(field, ...)``)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if doc and hasattr(obj, "_fields") and doc == f"{obj.__name__}({', '.join(obj._fields)})":
            return False
        return bool(doc and doc.strip())
    if callable(obj) and not inspect.ismodule(obj):
        return bool((getattr(obj, "__doc__", None) or "").strip())
    return False  # a module-level value: only an attribute docstring, which runtime cannot see


class Rendered(NamedTuple):
    path: str      # the id of its heading in the built page
    entry: Entry
    shown: bool    # False: hidden, no docstring


def rendered(entries: list[Entry]) -> dict:
    """{key: Rendered} for everything the entries render (first entry wins)."""
    show_all = _global_show_if_no_docstring()
    out: dict = {}

    def add(obj, path, entry):
        shown = entry.show_if_no_docstring or show_all or _has_docstring(obj)
        k = _key(obj, path)
        if k not in out or (shown and not out[k].shown):
            out[k] = Rendered(path, entry, shown)

    for entry in entries:
        obj = resolve(entry.identifier)
        if inspect.ismodule(obj):
            names = exported(obj) if entry.members is None else entry.members
            for name in names:
                member = getattr(obj, name)
                if not inspect.ismodule(member):  # show_submodules is off: not rendered
                    add(member, f"{obj.__name__}.{name}", entry)
        else:
            add(obj, entry.identifier, entry)
    return out


# ------------------------------------------------------------------------- public names


def _modules_defining_all(package: str) -> list[str]:
    """Public modules of ``package`` whose source assigns ``__all__`` (read, not imported)."""
    base = ROOT / package
    names = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                isinstance(t, ast.Name) and t.id == "__all__"
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
               for node in tree.body):
            names.append(".".join(parts))
    return names


def public_names() -> dict:
    """{"module.name": object} for every public name: ``__all__`` of the packages, of the
    submodules listed there (recursively) and of every other public module defining one."""
    out: dict = {}
    seen: set = set()

    def walk(module: types.ModuleType):
        if module.__name__ in seen:
            return
        seen.add(module.__name__)
        for name in exported(module):
            if not hasattr(module, name):
                raise AssertionError(f"{module.__name__}.__all__ names {name!r}, which it "
                                     "does not define")
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                if obj.__name__.split(".")[0] in PACKAGES and _is_public_module(obj):
                    walk(obj)
                continue
            out[f"{module.__name__}.{name}"] = obj

    for package in PACKAGES:
        walk(importlib.import_module(package))
        for name in _modules_defining_all(package):
            walk(importlib.import_module(name))
    return out


# ------------------------------------------------------------------------------- tests


def test_every_entry_resolves():
    """No entry names a module or object that does not exist (mkdocs --strict would fail)."""
    bad = []
    for entry in parse_entries(API.read_text()):
        try:
            obj = resolve(entry.identifier)
        except (ImportError, AttributeError) as exc:
            bad.append(f"line {entry.line}: ::: {entry.identifier} ({type(exc).__name__}: {exc})")
            continue
        if entry.members and inspect.ismodule(obj):
            bad += [f"line {entry.line}: ::: {entry.identifier} members: {m} does not exist"
                    for m in entry.members if not hasattr(obj, m)]
    assert not bad, "docs/api.md:\n" + "\n".join(bad)


def test_every_public_name_is_in_the_api_reference():
    covered = rendered(parse_entries(API.read_text()))
    missing: dict = {}   # one line per object, with every public name it has
    hidden = []
    for path, obj in sorted(public_names().items()):
        got = covered.get(_key(obj, path))
        if got is None:
            home = getattr(obj, "__module__", None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                home = None
            missing.setdefault(_key(obj, path), [home]).append(path)
        elif not got.shown:
            hidden.append(f"{path}: `::: {got.entry.identifier}` (docs/api.md line "
                          f"{got.entry.line}) hides it: no docstring and no "
                          "show_if_no_docstring: true")
    lines = [", ".join(paths[1:]) + (f" (defined in {paths[0]})" if paths[0] else "")
             for paths in missing.values()]
    assert not lines and not hidden, (
        f"docs/api.md renders nothing for {len(lines)} public objects: add an entry for the "
        "module that defines each (or for the object)\n  " + "\n  ".join(lines + hidden))


def test_the_checker_sees_a_missing_entry():
    """The parser and resolver find what is missing (guards the test above against passing
    vacuously): an entry restricted by members covers those members only."""
    entries = parse_entries("::: samplers.sliced\n    options:\n      members:\n"
                            "        - sliced_wasserstein\n\n::: samplers.stein.svgd\n")
    assert [e.identifier for e in entries] == ["samplers.sliced", "samplers.stein.svgd"]
    assert entries[0].members == ["sliced_wasserstein"]
    covered = rendered(entries)
    import samplers
    assert _key(samplers.sliced_wasserstein, "") in covered           # re-export, same object
    assert _key(samplers.stein.svgd, "") in covered
    assert covered[_key(samplers.stein.svgd, "")].path == "samplers.stein.svgd"
    assert _key(samplers.sliced.sliced_wasserstein_flow, "") not in covered
    assert _key(samplers.stein.msvgd, "") not in covered
    flow = parse_entries("::: samplers.sliced\n    options:\n      members: [directions]\n")
    assert flow[0].members == ["directions"]


# ------------------------------------------------------------- docs/stein.md's NumPyro block


def _numpyro_block() -> str:
    """The first python block after docs/stein.md's NumPyro heading."""
    text = STEIN.read_text()
    heading = re.search(r"^##+ .*NumPyro.*$", text, re.M)
    assert heading, "docs/stein.md has no NumPyro section"
    block = re.search(r"```python\n(.*?)```", text[heading.end():], re.S)
    assert block, "docs/stein.md's NumPyro section has no python block"
    return block.group(1)


def test_stein_numpyro_example_runs():
    """The SVGD-on-a-NumPyro-model block of docs/stein.md runs as written (about 10 s on a
    CPU) and prints the constrained sites it promises (tau > 0 after constrain_fn)."""
    code = _numpyro_block() + (
        "\nassert set(draws) >= {'mu', 'tau', 'theta'}, sorted(draws)"
        "\nassert draws['theta'].shape == (n, 8), draws['theta'].shape"
        "\nassert bool((draws['tau'] > 0).all()) and bool(np.isfinite(draws['mu']).all())\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for site in ("mu: mean", "tau: mean"):
        assert site in result.stdout, result.stdout


# ---------------------------------------------------------------- the built page (slow)


@pytest.mark.slow
def test_built_api_page_renders_every_public_name(tmp_path):
    """Build the site and find a heading, with its docstring, for every public name."""
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    html = (site / "api" / "index.html").read_text()
    ids = set(re.findall(r'<h\d id="([^"]+)" class="doc doc-heading"', html))
    covered = rendered(parse_entries(API.read_text()))
    absent = []
    for path, obj in sorted(public_names().items()):
        got = covered.get(_key(obj, path))
        if got is None or got.path not in ids:
            absent.append(f"{path} (expected heading id {got.path if got else 'none: no entry'})")
    assert not absent, "not rendered in api/index.html:\n  " + "\n  ".join(absent)
