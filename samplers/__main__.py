"""``python -m samplers ...``: the ``samplers`` command (:func:`samplers.cli.main`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
