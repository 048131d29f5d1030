"""Run every benchmark and print their tables: python benchmarks/run.py [--quick]."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("framework overhead", ["bench_framework.py"], ["bench_framework.py", "--events", "200000"]),
    ("generators", ["bench_generators.py"], ["bench_generators.py"]),
    ("DecayTreeFitter", ["bench_dtf.py"], ["bench_dtf.py"]),
    ("full chains", ["bench_chain.py"], ["bench_chain.py", "--events", "5000"]),
    ("Pythia8 minimum bias", ["bench_pythia8.py"], ["bench_pythia8.py"]),
    ("Pythia8 signal B+ -> J/psi K+", ["bench_pythia8.py", "Bu2JpsiK"], ["bench_pythia8.py", "Bu2JpsiK"]),
    ("Pythia8 signal Lb -> Lc mu nu", ["bench_pythia8.py", "Lb2Lcmunu"], ["bench_pythia8.py", "Lb2Lcmunu"]),
]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller samples")
    p.add_argument("--skip", action="append", default=[], help="skip a benchmark by title word")
    args = p.parse_args()
    for title, full, quick in BENCHES:
        if any(s.lower() in title.lower() for s in args.skip):
            continue
        cmd = quick if args.quick else full
        print(f"\n# {title}: python benchmarks/{' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], cwd=HERE.parent)
        print(f"({time.perf_counter() - t0:.0f} s, exit {r.returncode})", flush=True)


if __name__ == "__main__":
    main()
