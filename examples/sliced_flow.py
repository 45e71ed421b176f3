"""A sliced Wasserstein flow moves a Gaussian cloud onto a ring, with and without the upper
control variate (Nguyen & Ho, ICLR 2024); plots frames of the flow and SW against steps.

    python examples/sliced_flow.py --out examples/out
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import samplers  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def ring(rng, n):
    """n points on a noisy ring of radius 2 centred at (1, -1)."""
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 2.0 + 0.2 * rng.standard_normal(n)
    return np.stack([radius * np.cos(angle) + 1.0, radius * np.sin(angle) - 1.0], 1)


def flow_frames(target, source, control_variate, num_steps):
    """Particles after every step, and the flow's per-step SW estimate."""
    flow = samplers.sliced_wasserstein_flow(jnp.asarray(target, jnp.float32), step_size=0.2,
                                            num_projections=20, control_variate=control_variate)
    trace = samplers.run(jax.random.key(0), flow, jnp.asarray(source, jnp.float32), num_steps,
                         progress=False)
    return np.asarray(trace.positions[0]), np.asarray(trace.stats["sw"][0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the plot")
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    target, source = ring(rng, args.points), rng.standard_normal((args.points, 2))
    shown = [0] + [args.steps * k // 3 for k in (1, 2, 3)]
    fig, axes = plt.subplots(1, 5, figsize=(18, 3.6))
    for control_variate, style in ((None, "--"), ("upper", "-")):
        frames, sw = flow_frames(target, source, control_variate, args.steps)
        w2 = samplers.diagnostics.empirical_w2(frames[-1], target)
        print(f"control variate {control_variate!s:>5}: exact W2 to the target after "
              f"{args.steps} steps {w2:.4f}")
        axes[-1].semilogy(np.arange(1, len(sw) + 1), sw, style, label=f"control variate: {control_variate}")
        if control_variate == "upper":
            for ax, step in zip(axes, shown):
                frame = source if step == 0 else frames[step - 1]
                ax.scatter(target[:, 0], target[:, 1], s=2, alpha=0.3, label="target")
                ax.scatter(frame[:, 0], frame[:, 1], s=2, alpha=0.5, label="particles")
                ax.set_title(f"step {step}")
    axes[-1].set_xlabel("step")
    axes[-1].set_title("SW estimate along the flow")
    axes[-1].legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "sliced_flow.png"
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
