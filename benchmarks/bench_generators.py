"""Throughput of the particle-gun generators (generation only, one core).

    python benchmarks/bench_generators.py [--events N] [--repeat R]

Prints events/s measured with wall-clock time and with process CPU time (the CPU figure is
the meaningful one on a shared machine).  Goal: >= 200 000 B+ -> J/psi(mu mu) K+ events/s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from algorithms.generators.particle_gun import ParticleGun, SignalGenerator, SpeciesGenerator  # noqa: E402
from framework.context import BatchContext  # noqa: E402

BU = "[B+ -> (J/psi(1S) -> mu+ mu-) K+]cc"
LB = "[Lambda_b0 -> (Lambda_c+ -> p+ K- pi+) mu- anti-nu_mu]cc"
KST = "[B0 -> (K*(892)0 -> K+ pi-) gamma]cc"
KEYS = np.array([1, 2, 3], dtype=np.uint64)
PV = dict(pv_mean=(0.83, -0.17, 0.0, 0.0), pv_sigma=(0.03, 0.025, 45.0, 0.15))


def timed(fn, repeat):
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.events
    ev = np.arange(n, dtype=np.int64)

    def gun(**props):
        g = ParticleGun("Generation", Occupancy="fixed:100", **props)
        g._app = SimpleNamespace(conditions=MappingProxyType({"beam_spot_mean_mm": [0.83, -0.17, 0.0],
                                                              "beam_spot_sigma_mm": [0.03, 0.025, 45.0]}),
                                 msg_svc=None)
        g.OutputLevel = "WARNING"
        g.initialize()
        return lambda: g.execute(BatchContext(ev, 1, 42).for_algorithm("Generation"))

    def kernel(gen):
        return lambda: gen.generate(KEYS, ev, **PV)

    def kernel_and_columns(gen):
        return lambda: gen.columns(gen.generate(KEYS, ev, **PV))

    bu = SignalGenerator(BU)
    cases = [
        ("B+ -> J/psi(mumu) K+, BHadron, kernel only", kernel(bu)),
        ("B+ -> J/psi(mumu) K+, BHadron, kernel + MC-truth columns", kernel_and_columns(bu)),
        ("B+ -> J/psi(mumu) K+, ParticleGun.execute (Collections)", gun(Descriptor=BU)),
        ("B+ -> J/psi(mumu) K+, ParticleGun.execute, DaughtersInLHCb", gun(Descriptor=BU, GeneratorCut="DaughtersInLHCb")),
        ("Lb -> Lc(pKpi) mu nu, ParticleGun.execute", gun(Descriptor=LB)),
        ("Lb -> Lc(pKpi) mu nu, ParticleGun.execute, DaughtersInLHCb", gun(Descriptor=LB, GeneratorCut="DaughtersInLHCb")),
        ("B0 -> K*0(K pi) gamma (Breit-Wigner), ParticleGun.execute", gun(Descriptor=KST)),
        ("species gun: 3 x {pi,K,p}+cc FlatPt, kernel + columns",
         kernel_and_columns(SpeciesGenerator(["pi+", "K+", "p+"], multiplicity=3))),
    ]
    # warm-up (numba compilation / cache load)
    w = time.perf_counter()
    for _, fn in cases:
        fn()
    compile_s = time.perf_counter() - w
    print(f"events per measurement: {n}, best of {args.repeat}; warm-up (incl. numba compile/cache load) "
          f"{compile_s:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':<62} {'ev/s (wall)':>12} {'ev/s (CPU)':>12}")
    for name, fn in cases:
        wall, cpu = timed(fn, args.repeat)
        print(f"{name:<62} {n / wall:>12,.0f} {n / cpu:>12,.0f}")


if __name__ == "__main__":
    main()
