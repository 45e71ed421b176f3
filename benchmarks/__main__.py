"""``python -m benchmarks [NAME ...] [--quick] [--out DIR] [--repeats N]``: run the benchmarks.

Each writes ``DIR/<name>.json`` and ``DIR/<name>.md`` (default DIR: ``benchmarks/results``).
"""
import sys

from . import BENCHMARKS
from .harness import main

if __name__ == "__main__":
    sys.exit(main(BENCHMARKS))
