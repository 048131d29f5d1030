#!/usr/bin/env python
"""Full validation of the tracking chain part 1 (acceptance, efficiency, PV smearing, IP).

    python scripts/validate_tracking.py --input ../shared/data/lhcb_trk2016_samples.root [--verbose]

* acceptance / efficiency ONNX models (through the framework's model service, i.e. the runtime
  path) on the rows held out from training: calibration vs the reference soft labels in bins of
  (log10 p, eta), per species, per track type, and vs the reference's own categorical draws;
* onnxruntime cost per particle (1 thread, batch 10^4);
* PV smearing (conditions ``pv_smearing``): pulls and mixture fractions;
* IP kernel: IPchi2 of tracks from their true vertex ~ chi2(2) in a Gaussian toy.

Exit status 1 if a figure is outside its tolerance.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from framework.models import ModelSvc  # noqa: E402
from framework.validation import format_rows, pull_widths  # noqa: E402
from models.training.tracking import common as C  # noqa: E402
from models.training.tracking import train_acceptance, train_efficiency  # noqa: E402

TOL_CALIB = 0.01   # absolute; a bin passes if |diff| < TOL_CALIB + 2 x (its statistical error)


def check_models(path, verbose):
    rows, ok = [], True
    data = C.load_acceptance_sample(path)
    _, val = C.split_indices(len(data["features"]))
    x = data["features"][val]
    vdata = {k: v[val] for k, v in data.items() if k != "features"}
    svc = ModelSvc(threads=1)
    acc_model = svc.load("models/trk2016_acceptance.onnx")
    eff_model = svc.load("models/trk2016_efficiency.onnx")
    t0 = time.perf_counter()
    pa = acc_model.run(x)[:, 0]
    pe = eff_model.run(x)
    print(f"evaluated {len(x)} held-out rows in {time.perf_counter() - t0:.2f} s")
    va = train_acceptance.validate(pa, vdata, x)
    ve = train_efficiency.validate(pe, vdata, x)
    s = va["summary"]
    rows.append({"model": "acceptance", "quantity": "P(accepted)", "max|diff| soft": s["max_abs_diff_soft_labels"],
                 "+-stat": s["max_abs_diff_soft_labels_stat_error"],
                 "max|diff| draws": s["max_abs_diff_draws"],
                 "draws chi2/ndf": f"{s['draws_chi2_ndf'][0]:.1f}/{s['draws_chi2_ndf'][1]}",
                 "pred": s["overall_predicted"], "ref": s["overall_reference"], "draws": s["overall_draws"]})
    ok &= s["max_abs_diff_soft_labels"] < TOL_CALIB + 2 * s["max_abs_diff_soft_labels_stat_error"]
    for cname in train_efficiency.CLASS_NAMES:
        s = ve["summary"][cname]
        rows.append({"model": "efficiency", "quantity": f"P({cname}|acc)", "max|diff| soft": s["max_abs_diff_soft_labels"],
                     "+-stat": s["max_abs_diff_soft_labels_stat_error"],
                     "max|diff| draws": s["max_abs_diff_draws"],
                     "draws chi2/ndf": f"{s['draws_chi2_ndf'][0]:.1f}/{s['draws_chi2_ndf'][1]}",
                     "pred": s["predicted_rate"], "ref": s["reference_rate"], "draws": s["draws_rate"]})
        ok &= s["max_abs_diff_soft_labels"] < TOL_CALIB + 2 * s["max_abs_diff_soft_labels_stat_error"]
    print("\nCalibration on held-out rows (soft = vs reference probabilities, in (log10 p, eta), per species;"
          "\n draws = vs the reference's Bernoulli/categorical draws, binomial errors; efficiency acceptance-weighted)")
    print(format_rows(rows))
    print("(+-stat: standard error of the mean per-row difference in the worst bin; tolerance "
          f"{TOL_CALIB} + 2 x stat)")
    where = [("acceptance", va["summary"]["max_abs_diff_soft_labels_where"])]
    where += [(c, ve["summary"][c]["max_abs_diff_soft_labels_where"]) for c in train_efficiency.CLASS_NAMES]
    for m, w in where:
        print(f"  worst bin {m}: {w}")
    if verbose:
        for key, table in list(va.items()) + list(ve.items()):
            if key != "summary":
                print(f"  {key}: max|diff| {table['max_abs_diff']:.4f} at {table['max_abs_diff_bin']}, "
                      f"chi2/ndf {table['chi2']:.1f}/{table['ndf']}")
    lat_a = C.measure_latency(acc_model.path, 12, x=x)
    lat_e = C.measure_latency(eff_model.path, 12, x=x)
    f_acc = float((vdata["track_type"] != -1).mean())
    per_particle = lat_a + f_acc * lat_e
    print(f"\nonnxruntime, 1 thread, batch 1e4: acceptance {lat_a:.3f} us/row, efficiency {lat_e:.3f} us/row; "
          f"per candidate (efficiency on the {f_acc:.0%} accepted) {per_particle:.3f} us")
    return ok


def check_pv(verbose):
    from algorithms.tracking.pv import parse_pv_smearing, smear_vertices

    try:
        table = _conditions_table()
    except Exception as exc:  # conditions preset not available
        print(f"\nPV: skipped (no pv_smearing conditions available: {exc})")
        return True
    t = parse_pv_smearing(table)
    rng = np.random.default_rng(1)
    n = 200_000
    reco, sigma, comp = smear_vertices(np.zeros((n, 3)), rng.uniform(size=(n, 3)), rng.normal(size=(n, 3)), t)
    rows, ok = [], True
    for i, c in enumerate("xyz"):
        pull = (reco[:, i] - t.mu[i]) / sigma[:, i]
        w = pull_widths(pull)
        frac = np.bincount(comp[:, i], minlength=3) / n
        rows.append({"coord": c, "pull mean": w.mean, "pull rms": w.rms, "core width": w.core_width,
                     "f1 obs/exp": f"{frac[0]:.4f}/{t.f1[i]:.4f}", "f2 obs/exp": f"{frac[1]:.4f}/{t.f2[i]:.4f}",
                     "resolution rms [um]": 1e3 * np.std(reco[:, i] - t.mu[i])})
        ok &= abs(w.rms - 1) < 0.03 and abs(w.mean) < 0.01
    print("\nPV smearing (2016 MagUp table, 2e5 toy vertices): pulls use the drawn component's sigma")
    print(format_rows(rows))
    return ok


def _conditions_table():
    from framework.registry import Plugins

    return Plugins().conditions.get("2016-MagUp-13TeV")["pv_smearing"]


def check_ip():
    from scipy import stats

    from algorithms.tracking.ip import ip_ipchi2

    rng = np.random.default_rng(2)
    n = 20_000
    chi2 = np.empty(n)
    for i in range(n):
        tx, ty = rng.normal(0, 0.1, 2)
        vz = rng.normal(0, 45)
        zref = vz + rng.uniform(-5, 5)
        s = np.array([tx * (zref - vz), ty * (zref - vz), tx, ty])
        ctrk = np.diag([0.015 ** 2, 0.015 ** 2, 4e-4 ** 2, 4e-4 ** 2, 1e-12])
        m = s + rng.normal(size=4) * np.sqrt(np.diag(ctrk)[:4])
        cv = np.diag([0.01 ** 2, 0.01 ** 2, 0.05 ** 2])
        v = np.array([0, 0, vz]) + rng.normal(size=3) * np.sqrt(np.diag(cv))
        chi2[i] = ip_ipchi2(m[0], m[1], zref, m[2], m[3], ctrk, v[0], v[1], v[2], cv)[1]
    r = stats.kstest(chi2, stats.chi2(2).cdf)
    print(f"\nIPchi2 of toy tracks from their true vertex: mean {chi2.mean():.3f} (chi2(2): 2), KS p-value {r.pvalue:.3f}")
    return r.pvalue > 0.001


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=C.DEFAULT_INPUT)
    ap.add_argument("--verbose", action="store_true", help="print every calibration table's worst bin")
    args = ap.parse_args(argv)
    ok = True
    if Path(args.input).exists():
        ok &= check_models(args.input, args.verbose)
    else:
        print(f"input {args.input} not found: model calibration skipped")
    ok &= check_pv(args.verbose)
    ok &= check_ip()
    print("\nRESULT:", "all figures within tolerance" if ok else "SOME FIGURES OUT OF TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
