"""Train the tracking acceptance classifier (P(in geometrical acceptance)) and write
``models/trk2016_acceptance.{onnx,yaml}``.

    python -m models.training.tracking.train_acceptance --input ../shared/data/lhcb_trk2016_samples.root

Soft labels: the ``acceptance`` probability of LHCb's Lamarr 2016 MagUp model for each row of
the ``Acceptance`` tree.  20 % of the rows (fixed seed) are held out for validation; the
validation figures written into the card are computed on them with the exported ONNX file.
"""
from __future__ import annotations

import os
import time

import numpy as np

from framework.validation import calibration_in_bins
from models.training.tracking import common as C

NAME = "trk2016_acceptance"


def validate(prob, data, features) -> dict:
    """Calibration tables of the predicted acceptance on the held-out rows."""
    soft = data["acceptance"]
    species = data["species"].astype(float)
    lp, eta = features[:, 3], features[:, 6]
    b = C.log10p_eta_bins(features)
    res = {}
    t = calibration_in_bins(prob, soft, b, min_count=200)
    res["soft_label_log10p_eta"] = t.to_dict()
    worst = t.max_abs_diff
    for sname, s in (("e", 0), ("mu", 1), ("h", 2)):
        m = data["species"] == s
        for vname, v in (("log10_p", lp), ("eta", eta)):
            ts = calibration_in_bins(prob[m], soft[m], {vname: (v[m], b[vname][1])}, min_count=50)
            res[f"soft_label_{vname}_{sname}"] = ts.to_dict()
            worst = max(worst, ts.max_abs_diff)
    ts = calibration_in_bins(prob, soft, {"species": (species, C.SPECIES_EDGES)}, min_count=200)
    res["soft_label_species"] = ts.to_dict()
    worst = max(worst, ts.max_abs_diff)
    # the Lamarr categorical draws (track_type != -1 means accepted) vs the predicted rate
    accepted = (data["track_type"] != -1).astype(float)
    td = calibration_in_bins(prob, accepted, b, min_count=200)
    res["draws_log10p_eta"] = td.to_dict()
    soft_tables = {k: t for k, t in res.items() if k.startswith("soft_label")}
    wname = max(soft_tables, key=lambda k: soft_tables[k]["max_abs_diff"])
    res["summary"] = {
        "max_abs_diff_soft_labels": float(worst),
        "max_abs_diff_soft_labels_where": f"{wname} {soft_tables[wname]['max_abs_diff_bin']}",
        "max_abs_diff_soft_labels_stat_error": soft_tables[wname]["max_abs_diff_error"],
        "max_abs_diff_draws": float(td.max_abs_diff),
        "draws_chi2_ndf": [float(td.chi2), int(td.ndf)],
        "mean_abs_error_per_row": float(np.mean(np.abs(prob - soft))),
        "rms_error_per_row": float(np.sqrt(np.mean((prob - soft) ** 2))),
        "overall_predicted": float(prob.mean()),
        "overall_reference": float(soft.mean()),
        "overall_draws": float(accepted.mean()),
    }
    return res


def main(argv=None):
    args = C.classifier_arg_parser(__doc__.split("\n")[0]).parse_args(argv)

    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    data = C.load_acceptance_sample(args.input, args.max_rows)
    x = data["features"]
    sw = np.array([float(v) for v in args.species_weights.split(",")], dtype=np.float32)
    weights = sw[data["species"]]
    train, val = C.split_indices(len(x))
    if args.validate_only:
        onnx_path = C.Path(os.path.abspath(args.output_dir)) / f"{NAME}.onnx"
        prob = C.onnx_predict(onnx_path, x[val])[:, 0]
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
    model = MLP(center, scale, 12, hidden, 1, "sigmoid")
    print(f"{NAME}: {len(train)} training rows, {len(val)} validation rows, hidden {hidden}", flush=True)
    fit = C.train_soft(model, x[train], data["acceptance"][train], weights[train], epochs=args.epochs, batch=args.batch,
                       lr=args.lr, seed=args.seed, x_val=x[val][:50_000], t_val=data["acceptance"][val][:50_000], w_val=weights[val][:50_000],
                       time_limit_s=args.time_limit)

    out_dir = os.path.abspath(args.output_dir)
    onnx_path = C.Path(out_dir) / f"{NAME}.onnx"
    C.export_onnx(model, onnx_path, 12)
    prob = C.onnx_predict(onnx_path, x[val])[:, 0]
    vdata = {k: v[val] for k, v in data.items() if k != "features"}
    validation = validate(prob, vdata, x[val])
    latency = C.measure_latency(onnx_path, 12, x=x[val])
    validation["summary"]["onnxruntime_us_per_row_1thread_batch1e4"] = round(latency, 3)
    s = validation["summary"]
    print(f"{NAME}: max|diff| soft labels {s['max_abs_diff_soft_labels']:.4f}, draws {s['max_abs_diff_draws']:.4f}, "
          f"{latency:.3f} us/row, trained in {fit['train_seconds']} s", flush=True)

    card = {
        "name": NAME,
        "version": 1,
        "kind": "classifier",
        "conditions": "2016-MagUp-13TeV",
        "file": onnx_path.name,
        "sha256": C.sha256_file(onnx_path),
        "description": "Probability that a charged e/mu/pi/K/p with pz > 1 MeV is inside the geometrical "
                       "acceptance of the LHCb tracking system (2016 MagUp).",
        "inputs": C.card_inputs(),
        "outputs": [{"name": "acceptance", "unit": "", "description": "P(in geometrical acceptance)"}],
        "preprocessing": "inside the graph: u = asinh((x - center) / scale), center/scale = mean/std of the "
                         "0.5-99.5 % quantile core of the training features",
        "training": {
            "sample": f"{os.path.basename(args.input)}:Acceptance",
            "provenance": C.PROVENANCE,
            "license": "GPL-3.0-or-later",
            "targets": "soft labels: the reference model's acceptance probability (binary cross-entropy), rows "
                       f"weighted per species (e, mu, h) by {args.species_weights}",
            "rows_train": int(len(train)),
            "rows_validation": int(len(val)),
            "settings": {"hidden": hidden, "activation": "SiLU", "epochs": args.epochs, "batch": args.batch,
                         "lr_max": args.lr, "schedule": "one-cycle", "optimizer": "Adam", "seed": args.seed,
                         "split_seed": 20160, "validation_fraction": 0.2,
                         "species_weights": args.species_weights, **fit},
            "environment": C.environment(),
            "command": C.classifier_command("models.training.tracking.train_acceptance", args),
            "total_seconds": round(time.perf_counter() - t_start, 1),
        },
        "validation": validation,
        "limitations": [
            "Re-learns LHCb's 2016 MagUp Lamarr acceptance parametrisation, itself trained on detailed simulation: "
            "no data-driven corrections; other years/polarities are not covered.",
            "Domain: e, mu, pi, K, p with pz > 1 MeV; the runtime treats everything else as not accepted.",
            "Trained on Pythia8 pp inputs (prompt + b-hadron decays); particles from far displaced vertices "
            "(z beyond a few metres) are rare in the sample and extrapolated.",
        ],
    }
    C.write_card(onnx_path.with_suffix(".yaml"), card)
    print(f"wrote {onnx_path} and {onnx_path.with_suffix('.yaml')}")


if __name__ == "__main__":
    main()
