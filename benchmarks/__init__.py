"""Side-by-side benchmarks of ``samplers`` against its peers; ``python -m benchmarks --quick``.

``BENCHMARKS`` maps each benchmark's name to its module; ``benchmarks.harness.main(BENCHMARKS)``
is the command line. Not part of the installed distribution: ``samplers bench`` loads it from
the current directory (a source checkout), and no library module imports it.
"""

BENCHMARKS = {
    "langevin": "benchmarks.bench_langevin",
    "vi": "benchmarks.bench_vi",
    "sliced": "benchmarks.bench_sliced",
    "federated": "benchmarks.bench_federated",
    "diffusion": "benchmarks.bench_diffusion",
    "stein": "benchmarks.bench_stein",
    "smc": "benchmarks.bench_smc",
    "posteriors": "benchmarks.bench_posteriors",
}
