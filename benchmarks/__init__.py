"""Side-by-side benchmarks of ``samplers`` against its peers; ``python -m benchmarks --quick``.

``BENCHMARKS`` maps each benchmark's name to its module; ``benchmarks.harness.main(BENCHMARKS)``
is the command line (also what ``samplers bench`` should call from a source checkout).
Not part of the installed distribution, and nothing in ``samplers`` imports from here.
"""

BENCHMARKS = {
    "langevin": "benchmarks.bench_langevin",
    "vi": "benchmarks.bench_vi",
    "sliced": "benchmarks.bench_sliced",
    "federated": "benchmarks.bench_federated",
    "diffusion": "benchmarks.bench_diffusion",
    "stein": "benchmarks.bench_stein",
    "smc": "benchmarks.bench_smc",
}
