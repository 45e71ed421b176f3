"""Compare probability-flow ODE solvers on 8 Gaussians on a ring (exact score): error against
score evaluations, with fitted slopes, and sample scatter plots. Equivalent to

    samplers diffusion --target ring --solvers euler,heun,dpm_solver_2 --steps 5,10,20,40 --out OUT

    python examples/diffusion_solvers.py --out examples/out
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffusion import experiment

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "diffusion"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", default="5,10,20,40")
    parser.add_argument("--num-samples", default="1000")
    args = parser.parse_args(argv)
    return experiment.main(["--target", "ring", "--solvers", "euler,heun,dpm_solver_2",
                            "--steps", args.steps, "--num-samples", args.num_samples,
                            "--out", str(args.out)])


if __name__ == "__main__":
    sys.exit(main())
