"""Benchmark scenario sets (one YAML per set; loaded by ``hmrflow.jobs.synth.bench_sets``).

:data:`BENCH_SETS` lives here, free of heavy imports, so command-line parsers can offer
the names without loading the synthetic world.
"""

#: the named sets of this folder (``<name>.yaml``), in the order they are listed to users
BENCH_SETS: tuple[str, ...] = ("easy", "crowded", "occlusion", "far", "crossings", "twins", "moving", "gait")
