"""Comparison of the reference detector (teacher) with the public integrated LHCb figures.

Selection: single tracks from the b-decay-like spectrum of :mod:`sampling` (p in 2-200 GeV,
eta in 1.9-5.0), nTracks from the Lamarr parametrisation.  RICH figures use tracks with hasRich;
isMuon fractions use all tracks (like integrated MC marginals).  Binomial errors are reported.
"""
from __future__ import annotations

import numpy as np

from framework.random import RandomStreams

from .sampling import sample_tracks
from .teacher import combine_dlls, rich_muon_response

__all__ = ["PUBLIC_FIGURES", "measure_public_figures", "format_table"]

# (name, species, quantity, public value, source)
PUBLIC_FIGURES = [
    ("P(PIDK>0) K", "K", ("PIDK", 0.0, "rich"), 0.958, "Run-2 MC marginal (lhcb-rex); data: ~0.95 (EPJC 73 2431)"),
    ("P(PIDK>0) pi", "pi", ("PIDK", 0.0, "rich"), 0.127, "Run-2 MC marginal; data: ~0.10"),
    ("P(PIDK>5) K", "K", ("PIDK", 5.0, "rich"), 0.886, "Run-2 MC marginal; data: ~0.85"),
    ("P(PIDK>5) pi", "pi", ("PIDK", 5.0, "rich"), 0.028, "Run-2 MC marginal; data: ~0.03"),
    ("P(PIDp>0) p", "p", ("PIDp", 0.0, "rich"), 0.972, "Run-2 MC marginal"),
    ("P(PIDp>0) K", "K", ("PIDp", 0.0, "rich"), 0.79, "Run-2 MC marginal"),
    ("P(PIDp>0) pi", "pi", ("PIDp", 0.0, "rich"), 0.135, "Run-2 MC marginal"),
    ("isMuon mu", "mu", ("isMuon", None, "all"), 0.90, "Run-2 MC marginal; data 0.95-0.98 in acceptance"),
    ("isMuon pi", "pi", ("isMuon", None, "all"), 0.034, "Run-2 MC marginal; data: hadrons ~0.01"),
    ("isMuon K", "K", ("isMuon", None, "all"), 0.030, "Run-2 MC marginal"),
    ("isMuon p", "p", ("isMuon", None, "all"), 0.007, "Run-2 MC marginal"),
    ("isMuon e", "e", ("isMuon", None, "all"), 0.023, "Run-2 MC marginal"),
    ("data: eps(DLLK>0) K", "K", ("PIDK", 0.0, "rich"), 0.95, "EPJC 73 (2013) 2431, 2-100 GeV average (C)"),
    ("data: eps(DLLK>0) pi", "pi", ("PIDK", 0.0, "rich"), 0.10, "EPJC 73 (2013) 2431 (C)"),
    ("data: eps(DLLK>5) K", "K", ("PIDK", 5.0, "rich"), 0.85, "EPJC 73 (2013) 2431 (C)"),
    ("data: eps(DLLK>5) pi", "pi", ("PIDK", 5.0, "rich"), 0.03, "EPJC 73 (2013) 2431 (C)"),
    ("data: isMuon mu (acc, p>3 GeV)", "mu", ("isMuon", None, "muacc"), 0.965, "JINST 8 P10020: 95-98 % (E)"),
    ("data: isMuon pi (acc, p>3 GeV)", "pi", ("isMuon", None, "muacc"), 0.01, "JINST 8 P10020: hadrons ~1 % (E)"),
]


def measure_public_figures(n_per_species=50000, seed=2024, key_seed=1):
    """Measure every PUBLIC_FIGURES entry: returns list of dicts (name, public, value, error, n, source)."""
    key = RandomStreams(key_seed, 0, "PIDTeacher").key_for(0)
    cache = {}
    for k, sp in enumerate(("e", "mu", "pi", "K", "p")):
        s = sample_tracks(n_per_species, sp, seed=seed, first_row=k * 100_000_000)
        r = rich_muon_response(s["pid"], s["p"], s["x"], s["y"], s["z"], s["tx"], s["ty"], s["charge"],
                               s["nTracks"], s["prod_z"], s["event"], s["index"], key)
        r.update(combine_dlls(r))
        r["muacc"] = r["InMuonAcc"] & (s["p"] > 3000.0)
        cache[sp] = r
    rows = []
    for name, sp, (col, cut, sel), public, src in PUBLIC_FIGURES:
        r = cache[sp]
        mask = {"rich": r["hasRich"], "muacc": r["muacc"]}.get(sel, np.ones(len(r["isMuon"]), bool))
        vals = r[col][mask]
        passed = vals > cut if cut is not None else vals.astype(bool)
        n = int(mask.sum())
        eff = float(passed.mean())
        rows.append(dict(name=name, public=public, value=eff, error=float(np.sqrt(eff * (1 - eff) / n)), n=n,
                         rel=(eff - public) / public, source=src))
    return rows


def format_table(rows) -> str:
    out = ["| figure | public | teacher | rel. diff | source |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['name']} | {r['public']:.3f} | {r['value']:.4f} ± {r['error']:.4f} | {100 * r['rel']:+.0f} % | {r['source']} |")
    return "\n".join(out)


if __name__ == "__main__":  # python -m algorithms.pid.teacher.validation
    print(format_table(measure_public_figures()))
