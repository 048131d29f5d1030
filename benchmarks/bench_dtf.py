"""Benchmark of the numba vertex fit and DecayTreeFitter kernels (single core).

    python benchmarks/bench_dtf.py [--n 100000] [--repeat 3]

Prints fits/s (best of ``--repeat``, CPU time of this process, after a warm-up call that also
compiles / loads the numba cache) for B+ -> (J/psi -> mu+ mu-) K+ toys:
vertex fits (2 and 3 tracks, composite J/psi + K), DecayTreeFitter without constraints, with the
PV constraint, with PV + m(J/psi), and with PV + m(J/psi) + K+ -> pi+ substitution.
Goal: >= 1e5 fits/s for DTF with PV + J/psi mass constraints.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "analysis"))

import numpy as np  # noqa: E402

import toys  # noqa: E402
from algorithms.analysis.dtf import DTFConfig, compile_tree, fit_batch  # noqa: E402
from algorithms.analysis.kinematics import composite_measurement  # noqa: E402
from algorithms.analysis.vertexfit import fit_vertex, fit_vertex_general, track_inputs  # noqa: E402


def best_rate(fn, n, repeat):
    fn()  # warm-up / compile
    best = np.inf
    for _ in range(repeat):
        t0 = time.process_time()
        res = fn()
        best = min(best, time.process_time() - t0)
    return n / best, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.n
    T = toys.generate(n, seed=7)
    S, C, Z, m = T["states"], T["covs"], T["z"], T["masses"]
    rows = []

    rate, r = best_rate(lambda: fit_vertex(S[:, :2], C[:, :2], Z[:, :2], m[:2]), n, args.repeat)
    rows.append(("vertex fit J/psi -> mu mu (2 tracks)", rate, r["status"]))
    rj = r
    rate, r = best_rate(lambda: fit_vertex(S, C, Z, m), n, args.repeat)
    rows.append(("vertex fit mu mu K (3 tracks)", rate, r["status"]))

    meas, cov, z, k = composite_measurement(rj["vertex"], rj["p4"], rj["cov7"], "resonance")
    km, kc = track_inputs(S[:, 2], C[:, 2])
    M = np.stack([meas, km], 1).reshape(-1, 7)
    CC = np.stack([cov, kc], 1).reshape(-1, 7, 7)
    ZZ = np.stack([z, Z[:, 2]], 1).reshape(-1)
    KK = np.stack([k, np.zeros(n, np.int8)], 1).reshape(-1)
    MM = np.stack([np.zeros(n), np.full(n, m[2])], 1).reshape(-1)
    off = np.arange(n + 1) * 2
    rate, r = best_rate(lambda: fit_vertex_general(M, CC, ZZ, KK, MM, off), n, args.repeat)
    rows.append(("vertex fit (J/psi composite) K", rate, r["status"]))

    spec = compile_tree("B+ -> (J/psi(1S) -> mu+ mu-) K+")
    for cfg in (DTFConfig("DTF"), DTFConfig("DTF_PV", pv_constraint=True),
                DTFConfig("DTF_PV_JpsiM", pv_constraint=True, mass_constraints=("J/psi(1S)",)),
                DTFConfig("DTF_PV_JpsiM_Kpi", pv_constraint=True, mass_constraints=("J/psi(1S)",),
                          substitutions=("K+ -> pi+",))):
        rate, r = best_rate(lambda: fit_batch(spec, cfg, S, C, Z, None, T["pv"], T["pv_cov"]), n, args.repeat)
        rows.append((f"DTF {cfg.name} (ndof {r['nDOF'][0]}, <niter> {r['niter'].mean():.2f})", rate, r["status"]))

    print(f"{'fit':<58} {'fits/s':>12} {'failed':>8}")
    print("-" * 80)
    for name, rate, st in rows:
        print(f"{name:<58} {rate:>12,.0f} {np.count_nonzero(st != 0):>8d}")
    print(f"\n{n} candidates, best of {args.repeat}, CPU time of one process (single-threaded numba).")


if __name__ == "__main__":
    main()
