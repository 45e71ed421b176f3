"""Multi-device tests on one CPU: a script run in a fresh interpreter that sees ``n`` fake
CPU devices (XLA's host-platform device count; the suite's own XLA_FLAGS are kept)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_devices_env(n: int) -> dict:
    """The environment of an interpreter with ``n`` CPU devices that can import the test
    modules (as ``tests.x`` or, as pytest does, ``x``)."""
    flags = os.environ.get("XLA_FLAGS", "")  # keep the suite's (tests/conftest.py)
    path = os.pathsep.join(p for p in (ROOT, os.path.join(ROOT, "tests"),
                                       os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={n}",
                JAX_PLATFORMS="cpu", PYTHONPATH=path)


def run_on_devices(script: str, n: int, expect: str = "OK") -> None:
    """Run ``script`` on ``n`` fake devices; it must exit cleanly and print ``expect``."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=fake_devices_env(n), timeout=300, cwd=ROOT)
    assert result.returncode == 0 and expect in result.stdout, \
        result.stdout + result.stderr[-3000:]
