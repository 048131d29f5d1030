"""Train the tracking efficiency classifier (softmax over not_recoed, long, upstream, downstream
for particles in the acceptance) and write ``models/trk2016_efficiency.{onnx,yaml}``.

    python -m models.training.tracking.train_efficiency --input ../shared/data/lhcb_trk2016_samples.root

Soft labels: the reference model's ``eff_*`` probabilities.  The runtime evaluates the model only
on *accepted* particles, i.e. on the feature distribution weighted by P(accepted); training and
validation therefore weight each row by its reference ``acceptance`` probability (plus a small
floor so that the model stays sane everywhere).  20 % of the rows (fixed seed) are held out.
"""
from __future__ import annotations

import os
import time

import numpy as np

from framework.validation import calibration_in_bins
from models.training.tracking import common as C

NAME = "trk2016_efficiency"
WEIGHT_FLOOR = 0.02
CLASS_NAMES = ["not_recoed", "long", "upstream", "downstream"]


def validate(prob, data, features) -> dict:
    """Calibration tables per class on the held-out rows (acceptance-weighted soft labels, and
    the reference's categorical draws among accepted rows)."""
    w = data["acceptance"].astype(np.float64)
    lp, eta = features[:, 3], features[:, 6]
    species = data["species"]
    b = C.log10p_eta_bins(features)
    accepted = data["track_type"] != -1
    res = {}
    worst_soft, worst_draw = 0.0, 0.0
    summary = {}
    for k, cname in enumerate(CLASS_NAMES):
        soft = data[C.EFF_CLASSES[k]]
        t = calibration_in_bins(prob[:, k], soft, b, weights=w, min_count=200)
        res[f"{cname}_soft_log10p_eta"] = t.to_dict()
        worst_k = t.max_abs_diff
        for sname, s in (("e", 0), ("mu", 1), ("h", 2)):
            m = species == s
            for vname, v in (("log10_p", lp), ("eta", eta)):
                ts = calibration_in_bins(prob[m, k], soft[m], {vname: (v[m], b[vname][1])},
                                         weights=w[m], min_count=50)
                res[f"{cname}_soft_{vname}_{sname}"] = ts.to_dict()
                worst_k = max(worst_k, ts.max_abs_diff)
        ts = calibration_in_bins(prob[:, k], soft, {"species": (species.astype(float), C.SPECIES_EDGES)},
                                 weights=w, min_count=200)
        res[f"{cname}_soft_species"] = ts.to_dict()
        worst_k = max(worst_k, ts.max_abs_diff)
        # reference categorical draws among accepted particles
        is_k = (data["track_type"][accepted] == C.TRACK_TYPE_OF_CLASS[k]).astype(float)
        td = calibration_in_bins(prob[accepted, k], is_k,
                                 {"log10_p": (lp[accepted], b["log10_p"][1]), "eta": (eta[accepted], b["eta"][1])},
                                 min_count=200)
        res[f"{cname}_draws_log10p_eta"] = td.to_dict()
        soft_tables = {kk: tt for kk, tt in res.items() if kk.startswith(f"{cname}_soft")}
        wname = max(soft_tables, key=lambda kk: soft_tables[kk]["max_abs_diff"])
        summary[cname] = {"max_abs_diff_soft_labels": float(worst_k),
                          "max_abs_diff_soft_labels_where": f"{wname} {soft_tables[wname]['max_abs_diff_bin']}",
                          "max_abs_diff_soft_labels_stat_error": soft_tables[wname]["max_abs_diff_error"],
                          "max_abs_diff_draws": float(td.max_abs_diff),
                          "draws_chi2_ndf": [float(td.chi2), int(td.ndf)],
                          "predicted_rate": float(np.average(prob[:, k], weights=w)),
                          "reference_rate": float(np.average(soft, weights=w)),
                          "draws_rate": float(is_k.mean())}
        worst_soft = max(worst_soft, worst_k)
        worst_draw = max(worst_draw, td.max_abs_diff)
    soft_all = np.stack([data[c] for c in C.EFF_CLASSES], axis=1)
    summary["max_abs_diff_soft_labels"] = float(worst_soft)
    summary["max_abs_diff_draws"] = float(worst_draw)
    summary["weighted_mean_abs_error_per_row"] = float(np.average(np.abs(prob - soft_all).sum(1) / 2, weights=w))
    res["summary"] = summary
    return res


def main(argv=None):
    args = C.classifier_arg_parser(__doc__.split("\n")[0]).parse_args(argv)

    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    data = C.load_acceptance_sample(args.input, args.max_rows)
    x = data["features"]
    targets = np.stack([data[c] for c in C.EFF_CLASSES], axis=1).astype(np.float32)
    targets /= targets.sum(1, keepdims=True)
    sw = np.array([float(v) for v in args.species_weights.split(",")], dtype=np.float32)
    weights = ((WEIGHT_FLOOR + data["acceptance"]) * sw[data["species"]]).astype(np.float32)
    train, val = C.split_indices(len(x))
    if args.validate_only:
        onnx_path = C.Path(os.path.abspath(args.output_dir)) / f"{NAME}.onnx"
        prob = C.onnx_predict(onnx_path, x[val])
        vdata = {k: v[val] for k, v in data.items() if k != "features"}
        validation = validate(prob, vdata, x[val])
        validation["summary"]["onnxruntime_us_per_row_1thread_batch1e4"] = round(
            C.measure_latency(onnx_path, 12, x=x[val]), 3)
        C.update_card_validation(onnx_path, validation)
        print(f"{NAME}: revalidated: {validation['summary']}")
        return
    center, scale = C.robust_scaling(x[train])
    hidden = [int(h) for h in args.hidden.split(",") if h]
    _, MLP = C.make_modules()
    model = MLP(center, scale, 12, hidden, 4, "softmax")
    print(f"{NAME}: {len(train)} training rows, {len(val)} validation rows, hidden {hidden}", flush=True)
    fit = C.train_soft(model, x[train], targets[train], weights[train], epochs=args.epochs, batch=args.batch,
                       lr=args.lr, seed=args.seed, x_val=x[val][:50_000], t_val=targets[val][:50_000],
                       w_val=weights[val][:50_000], time_limit_s=args.time_limit)

    out_dir = os.path.abspath(args.output_dir)
    onnx_path = C.Path(out_dir) / f"{NAME}.onnx"
    C.export_onnx(model, onnx_path, 12)
    prob = C.onnx_predict(onnx_path, x[val])
    vdata = {k: v[val] for k, v in data.items() if k != "features"}
    validation = validate(prob, vdata, x[val])
    latency = C.measure_latency(onnx_path, 12, x=x[val])
    validation["summary"]["onnxruntime_us_per_row_1thread_batch1e4"] = round(latency, 3)
    s = validation["summary"]
    print(f"{NAME}: max|diff| soft labels {s['max_abs_diff_soft_labels']:.4f}, draws {s['max_abs_diff_draws']:.4f}, "
          f"{latency:.3f} us/row, trained in {fit['train_seconds']} s", flush=True)
    for cname in CLASS_NAMES:
        print(f"   {cname:11s} soft {s[cname]['max_abs_diff_soft_labels']:.4f}  draws {s[cname]['max_abs_diff_draws']:.4f}"
              f"  chi2/ndf {s[cname]['draws_chi2_ndf']}")

    card = {
        "name": NAME,
        "version": 1,
        "kind": "classifier",
        "conditions": "2016-MagUp-13TeV",
        "file": onnx_path.name,
        "sha256": C.sha256_file(onnx_path),
        "description": "Reconstruction outcome of a charged e/mu/pi/K/p inside the tracking acceptance "
                       "(2016 MagUp): softmax over not reconstructed, long, upstream, downstream.",
        "inputs": C.card_inputs(),
        "outputs": [
            {"name": "not_recoed", "unit": "", "description": "P(not reconstructed | accepted)"},
            {"name": "long", "unit": "", "description": "P(long track | accepted)"},
            {"name": "upstream", "unit": "", "description": "P(upstream track | accepted)"},
            {"name": "downstream", "unit": "", "description": "P(downstream track | accepted)"},
        ],
        "preprocessing": "inside the graph: u = asinh((x - center) / scale), center/scale = mean/std of the "
                         "0.5-99.5 % quantile core of the training features",
        "training": {
            "sample": f"{os.path.basename(args.input)}:Acceptance",
            "provenance": C.PROVENANCE,
            "license": "GPL-3.0-or-later",
            "targets": "soft labels: the reference model's eff_* probabilities (categorical cross-entropy), rows "
                       f"weighted by {WEIGHT_FLOOR} + reference acceptance probability, times a species weight (e, mu, h) "
                       f"{args.species_weights}",
            "rows_train": int(len(train)),
            "rows_validation": int(len(val)),
            "settings": {"hidden": hidden, "activation": "SiLU", "epochs": args.epochs, "batch": args.batch,
                         "lr_max": args.lr, "schedule": "one-cycle", "optimizer": "Adam", "seed": args.seed,
                         "split_seed": 20160, "validation_fraction": 0.2, "weight_floor": WEIGHT_FLOOR,
                         "species_weights": args.species_weights, **fit},
            "environment": C.environment(),
            "command": C.classifier_command("models.training.tracking.train_efficiency", args),
            "total_seconds": round(time.perf_counter() - t_start, 1),
        },
        "validation": validation,
        "limitations": [
            "Re-learns LHCb's 2016 MagUp Lamarr efficiency parametrisation, itself trained on detailed simulation: "
            "no data-driven corrections; other years/polarities are not covered.",
            "Only meaningful for particles in the acceptance (validation is acceptance-weighted).",
            "Does not depend on the detector occupancy (the reference model has no occupancy input).",
        ],
    }
    C.write_card(onnx_path.with_suffix(".yaml"), card)
    print(f"wrote {onnx_path} and {onnx_path.with_suffix('.yaml')}")


if __name__ == "__main__":
    main()
