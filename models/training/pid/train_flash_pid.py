"""Train the flash PID models (LHCb-Lamarr interface) on teacher or calibration samples.

    # teacher samples (reference detector, NOT LHCb data), from the repository root:
    python -m models.training.pid.make_teacher_samples --output /tmp/teacher.root --n 1000000
    python -m models.training.pid.train_flash_pid --input /tmp/teacher.root
    # PIDCalib-style sWeighted calibration sample of one species (negative weights allowed):
    python -m models.training.pid.train_flash_pid --input calib_K.root --tree DecayTree --species-name K \
        --weight-branch probe_sWeight --branches p=probe_P,eta=probe_ETA,charge=probe_Q,...
    # speed of the whole flash-PID stage (µs per long track, one core):
    python -m models.training.pid.train_flash_pid --bench
    # recalibrate the shipped RICH flows (no training), then validate and rewrite the cards:
    python -m models.training.pid.train_flash_pid --input /tmp/teacher.root --recalibrate-only

Per species (e, mu, pi, K, p) four models are written to ``models/pid2016_{kind}_{species}.onnx``
with their YAML cards (see algorithms/pid/features.py and docs/pid_flash.md):
``ismuon`` (6-class classifier of hasRich x muon state), ``rich`` (conditional normalising flow of
the 4 RICH DLLs, its quantile tables recalibrated after training per (momentum, eta) group so that the
generated marginals, point masses included, equal the training sample's),
``muon`` (MuonMuLL, MuonBkgLL: a curve drawn from a categorical and a position along
it, the curves found in the training rows; a 2D flow when the rows are not on curves) and
``globalpid`` (combined DLLs = exact sub-detector sums + per-muon-state log-p tables + gated Gaussian
corrections; ProbNN = softmax (or sigmoids) of logits + width*noise, trained as a regression distillation
of the log-probabilities).  After training, the held-out rows are
run through the *runtime* code (``algorithms.pid.flash.flash_pid_response`` on the exported ONNX
files) and compared with the reference: efficiencies and mis-ID rates in (p, eta, nTracks) bins,
the classifier two-sample AUC of the joint outputs, KS distances and classifier calibration.  The
figures are written into every card.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from algorithms.pid.features import (
    GLOBALPID_OUTPUTS, LAMARR_OUTPUTS, MODEL_KINDS, NOISE_DIMS, SPECIES, card_columns, with_ismuon,
)

REPO = Path(__file__).resolve().parents[3]
PREFIX = "pid2016"
CONDITIONS = "2016-MagUp-13TeV"
PROVENANCE = ("trained on the flashsim reference detector (teacher, algorithms/pid/teacher: a physics-based RICH "
              "and MUON response built from published LHCb performance figures), not on LHCb data")
#: (name, function of the output dict) of the cuts whose rates are compared in bins
CUTS = (
    ("PIDK>0", lambda o: o["PIDK"] > 0), ("PIDK>5", lambda o: o["PIDK"] > 5), ("PIDp>0", lambda o: o["PIDp"] > 0),
    ("PIDp-PIDK>0", lambda o: o["PIDp"] - o["PIDK"] > 0), ("PIDe>2", lambda o: o["PIDe"] > 2),
    ("PIDmu>0", lambda o: o["PIDmu"] > 0), ("isMuon", lambda o: o["isMuon"]),
    ("hasRich", lambda o: o["hasRich"]), ("InMuonAcc", lambda o: o["InMuonAcc"]),
    ("ProbNNk>0.5", lambda o: o["ProbNNk"] > 0.5), ("ProbNNp>0.5", lambda o: o["ProbNNp"] > 0.5),
    ("ProbNNpi>0.5", lambda o: o["ProbNNpi"] > 0.5), ("ProbNNe>0.5", lambda o: o["ProbNNe"] > 0.5),
    ("ProbNNmu>0.5", lambda o: o["ProbNNmu"] > 0.5),
)
P_EDGES_GEV = (2.0, 5.0, 10.0, 20.0, 50.0, 200.0)
ETA_EDGES = (1.9, 2.8, 3.6, 5.0)
BOOLS = ("isMuon", "hasRich", "InMuonAcc")


def log(msg):
    print(msg, flush=True)


def balance_weights(C, alpha, ref=None):
    """Per-row factor (frequency of the row's (hasRich, muon state) category in ``ref``)^-alpha,
    normalised to a weighted mean of 1 over ``ref`` (default: ``C`` itself)."""
    ref = C if ref is None else ref
    n_cat = 6
    cat = lambda X: (3 * X["hasRich"].astype(int) + np.where(X["isMuon"], 2, np.where(X["InMuonAcc"], 1, 0)))  # noqa: E731
    w = np.clip(ref["w"], 0, None) + 1e-12
    freq = np.bincount(cat(ref), weights=w, minlength=n_cat) / w.sum()
    fac = np.where(freq > 0, np.maximum(freq, 1e-4) ** -float(alpha), 0.0)
    fac /= float((freq * fac).sum())
    return fac[cat(C)]


MUON_EXTRA_SOURCE = ("muon-enriched training rows: the isMuon rows of fresh teacher tracks of this species "
                     "(same spectrum; rows disjoint from the sample), see flash_common.teacher_muon_rows")


def warm_start(model, a, kind, s, new=(), fresh=None):
    """--init-state DIR: start from the parameters of an earlier training ({kind}_{s}.pt; buffers such
    as quantile tables and standardisations are the new ones).  --init-onnx DIR: the same from the exported
    models {prefix}_{kind}_{s}.onnx there (:func:`onnx_parameters`), e.g. the shipped ones, when no state was
    kept.  ``new``: prefixes of parameters that the earlier model may lack (they keep their initial values;
    their names are appended to the list ``fresh`` when given).  Returns a note for the card."""
    import torch

    if a.init_state:
        path = Path(a.init_state) / f"{kind}_{s}.pt"
        if not path.is_file():
            return None
        old = torch.load(path, map_location="cpu")
    elif a.init_onnx:
        path = Path(a.init_onnx) / f"{a.prefix}_{kind}_{s}.onnx"
        if not path.is_file():
            return None
        old = onnx_parameters(path)
    else:
        return None
    own = dict(model.named_parameters())
    same = {k: v for k, v in old.items() if k in own and own[k].shape == v.shape}
    wider = {k: v for k, v in old.items() if k in own and k not in same and v.dim() == own[k].dim() <= 2
             and all(o <= n for o, n in zip(v.shape, own[k].shape))} if a.init_widen else {}
    if any(k not in same and k not in wider for k in own if k in old or not any(k.startswith(p) for p in new)):
        log(f"  [{kind}_{s}] warm start from {path}: parameters do not match, not used")
        return None
    with torch.no_grad():
        for k, v in same.items():
            own[k].copy_(v)
        for k, v in wider.items():
            widen_parameter(own[k], v)
    new_names = [k for k in own if k not in same and k not in wider]
    if fresh is not None:
        fresh.extend(new_names)
    log(f"  [{kind}_{s}] warm start from {path}" + (f" (new parameters: {', '.join(new_names)})" if new_names else "")
        + (f" (widened: {', '.join(wider)})" if wider else ""))
    return str(path) + (" (widened)" if wider else "")


def widen_parameter(p, old):
    """--init-widen: a wider layer's parameter ``p`` (bias [out] or weight [out, in]) from a narrower
    model's ``old``: the old block is copied into the leading rows and columns, and the weights from the new
    inputs into the old outputs are zeroed, so that the new units' outputs reach nothing at first and the
    widened network computes exactly the old one's function (the new units start from their random
    initialisation and learn from there; the gradients into the zeroed weights are not zero)."""
    if old.dim() == 1:
        p[:old.shape[0]] = old
        return
    p[:old.shape[0], :old.shape[1]] = old
    p[:old.shape[0], old.shape[1]:] = 0.0


def onnx_parameters(path) -> dict:
    """The parameters of a model exported by :func:`flash_common.export` as torch tensors, by name: the ONNX
    initializers keep the names of the torch module's parameters (``nets.0.0.weight``, ...).  Initializers that
    the export renamed or folded are not returned, so a model whose parameters are not all there is refused by
    :func:`warm_start` (it names the file)."""
    import onnx
    import torch
    from onnx import numpy_helper

    return {i.name: torch.as_tensor(numpy_helper.to_array(i).copy()) for i in onnx.load(str(path)).graph.initializer}


def replaced_card_training(card: Path):
    """The training figures of the card of a model about to be replaced (None without a card)."""
    if not card.is_file():
        return None
    import yaml

    tb = yaml.safe_load(card.read_text()).get("training", {})
    st = tb.get("settings", {})
    return {"command": tb.get("command"), **{k: st[k] for k in ("epochs", "seconds", "best_val_loss", "lbfgs_rounds",
                                                                "lbfgs_seconds", "warm_start") if st.get(k) is not None}}


#: the columns of the GlobalPID model's training rows (columns_for / teacher_global_rows)
GLOBAL_ROW_KEYS = ("kin", "gx", "gy", "w", "hasRich", "isMuon", "InMuonAcc")


def norich_rows(TG, V, a, s):
    """The GlobalPID no-RICH head's rows: those without RICH of the training rows ``TG`` plus, with
    --global-norich-tracks N, of N fresh teacher tracks (rows from 7e12 + species * 1e10), and of the
    held-out rows ``V``.  Returns (training rows, held-out rows, the extra rows or None)."""
    keys = GLOBAL_ROW_KEYS
    TH = {k: TG[k][~TG["hasRich"]] for k in keys}
    extra = None
    if a.global_norich_tracks > 0:
        require_teacher_sample(a, "--global-norich-tracks")
        from .flash_common import NORICH_EXTRA_ROWS_BASE, teacher_global_rows

        t1 = time.time()
        e = teacher_global_rows(s, a.global_norich_tracks, seed=a.teacher_seed, base=NORICH_EXTRA_ROWS_BASE)
        m = ~e["hasRich"]
        extra = {**{k: e[k][m] for k in keys}, "simulated": e["simulated"], "first_row": e["first_row"]}
        TH = {k: np.concatenate([TH[k], extra[k]]) for k in keys}
        log(f"  [globalpid_{s}] no-RICH head: {len(extra['w'])} extra rows without RICH from "
            f"{a.global_norich_tracks} teacher tracks ({time.time() - t1:.0f}s)")
    return TH, {k: V[k][~V["hasRich"]] for k in keys}, extra


def save_state(model, a, kind, s):
    if a.save_state:
        import torch

        Path(a.save_state).mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, Path(a.save_state) / f"{kind}_{s}.pt")


# ----------------------------------------------------------------------------------------------
# training of one species
# ----------------------------------------------------------------------------------------------
def training_and_held_out_rows(d, si: int, a):
    """Row numbers of species ``si`` in the sample ``d``: (training rows, held-out validation rows);
    fewer than 50 rows of the species is an error."""
    from .flash_common import split_indices

    rows = np.flatnonzero(d["species"] == si)
    if rows.size < 50:
        raise SystemExit(f"species {SPECIES[si]}: only {rows.size} rows in the input, cannot train")
    tr, va = split_indices(rows.size, seed=a.seed + si, validation_fraction=a.validation_fraction)
    return rows[tr][: a.max_train_rows], rows[va][: a.max_validation_rows]


def train_species(d, s, a, out_dir: Path):
    import torch

    from .flash_common import (BASIS_KEY, RICH_FLOW_VARIABLES, TieGaussianizer, build_pid_flow, columns_for, export,
                               GlobalPIDPrep, kin_transform_np, make_modules, onnx_n_inputs, onnx_rich_basis,
                               onnx_rich_model, rich_to_flow, set_noise_scale_onnx, set_onnx_metadata,
                               train_weighted)

    M = make_modules()
    si = SPECIES.index(s)
    tr, va = training_and_held_out_rows(d, si, a)
    T, V = columns_for(d, tr), columns_for(d, va)
    rng = np.random.default_rng(a.seed + 100 + si)
    info = {"rows_train": int(tr.size), "rows_validation": int(va.size),
            "sum_weights_train": float(T["w"].sum()), "negative_weight_fraction": float(np.mean(T["w"] < 0))}
    threads = a.threads
    tt = lambda arr: torch.as_tensor(np.asarray(arr, np.float32))  # noqa: E731
    paths = {k: out_dir / f"{a.prefix}_{k}_{s}.onnx" for k in MODEL_KINDS}
    settings = {}
    kinds = set() if (a.validate_only or a.recalibrate_only) else set(a.kinds.split(","))
    for k in MODEL_KINDS:   # kinds not retrained: the existing file and its card's training block are kept
        if k not in kinds:
            import yaml

            card = paths[k].with_suffix(".yaml")
            if not (paths[k].is_file() and card.is_file()):
                raise SystemExit(f"--kinds {a.kinds}: {paths[k]} (or its card) missing, cannot reuse it")
            settings[k] = {"reused_training_block": yaml.safe_load(card.read_text())["training"]}

    # -- 1. classifier ---------------------------------------------------------------------
    kt = kin_transform_np(T["kin"])
    loc, scale = kt.mean(0), np.maximum(kt.std(0), 1e-3)
    loc[3], scale[3] = 0.0, 1.0
    clf = M["ClassifierNet"](loc, scale, hidden=a.clf_hidden, p_steps_gev=a.clf_p_steps)
    if "ismuon" not in kinds:
        clf = None
    kC, cC, wC, extra_c = T["kin"], T["classes"], T["w"], None   # the classifier's training rows
    if clf is not None and a.ismuon_extra_tracks > 0:
        require_teacher_sample(a, "--ismuon-extra-tracks")
        from .flash_common import ISMUON_EXTRA_ROWS_BASE, teacher_global_rows

        t1 = time.time()
        extra_c = teacher_global_rows(s, a.ismuon_extra_tracks, seed=a.teacher_seed, base=ISMUON_EXTRA_ROWS_BASE)
        kC, cC, wC = (np.concatenate([T[k], extra_c[k]]) for k in ("kin", "classes", "w"))
        log(f"  [ismuon_{s}] {a.ismuon_extra_tracks} extra teacher tracks ({time.time() - t1:.0f}s)")
    xT, yT, xV, yV = tt(kC), torch.as_tensor(cC), tt(V["kin"]), torch.as_tensor(V["classes"])
    wV = tt(V["w"])
    ce = torch.nn.functional.cross_entropy
    if clf is not None:
        ws = warm_start(clf, a, "ismuon", s)
        fig = train_weighted(clf, lambda idx: ce(clf.logits(xT[idx]), yT[idx], reduction="none"), kC.shape[0], wC,
                             lambda: float((ce(clf.logits(xV), yV, reduction="none") * wV).sum() / wV.sum()),
                             seconds=a.seconds_clf, seed=a.seed, threads=threads, max_epochs=a.max_epochs, lr=3e-3,
                             name=f"ismuon_{s}", log=log)
        export(clf, paths["ismuon"], 4)
        save_state(clf, a, "ismuon", s)
        settings["ismuon"] = {"architecture": f"MLP {4 + len(a.clf_p_steps)}-{a.clf_hidden}-{a.clf_hidden}-6 SiLU, "
                                              f"softmax{p_steps_phrase(a.clf_p_steps, ' ', '')}", **fig}
        if ws:
            settings["ismuon"]["warm_start"] = ws
        if extra_c is not None:
            settings["ismuon"]["extra_rows"] = extra_rows_block(
                extra_c, ", their (hasRich, InMuonAcc, isMuon) class", "6e12",
                "the validation uses the held-out rows of the sample only")

    # -- 2./3. flows -------------------------------------------------------------------------
    rich_ismuon = a.rich_ismuon if "rich" in kinds else (a.recalibrate_only and onnx_n_inputs(paths["rich"]) == 5)

    def fit_flow(kind, target_key, mask_key, dim, layers, hidden, embed, seconds, extra=None, ismuon=False):
        x_of = lambda X, m: with_ismuon(X["kin"][m], X["isMuon"][m] if ismuon else None)  # noqa: E731
        if kind not in kinds:
            return
        mT, mV = T[mask_key], V[mask_key]
        if mT.sum() < 20 or mV.sum() < 5:
            raise SystemExit(f"species {s}: {int(mT.sum())}/{int(mV.sum())} training/validation rows with "
                             f"{mask_key} -- too few to train the {kind} model")
        pre = (lambda t: rich_to_flow(t, a.rich_basis)) if kind == "rich" else (lambda t: np.asarray(t, np.float64))
        tgt, kin_t, w_t = T[target_key][mT], x_of(T, mT), T["w"][mT]
        if extra is not None and extra["kin"].shape[0]:   # extra training rows (fresh teacher rows)
            tgt = np.concatenate([tgt, extra[target_key]])
            kin_t = np.concatenate([kin_t, x_of(extra, slice(None))])
            w_t = np.concatenate([w_t, extra["w"]])
        gauss = TieGaussianizer(tie_dequantisation=a.tie_dequantisation).fit(pre(tgt), w_t)
        uT = gauss.forward(pre(tgt), rng)
        uV = gauss.forward(pre(V[target_key][mV]), rng)
        model = build_pid_flow(loc, scale, gauss, dim, n_layers=layers, hidden=hidden, embed=embed, seed=a.seed + si,
                               post="rich" if kind == "rich" else None, basis=a.rich_basis, n_flags=int(ismuon))
        ws = warm_start(model, a, kind, s)
        x1, u1, x2, u2, w2 = tt(kin_t), tt(uT), tt(x_of(V, mV)), tt(uV), tt(V["w"][mV])
        n1 = int(kin_t.shape[0])
        batch = int(min(1024, max(64, n1 // 8)))
        f = train_weighted(model, lambda idx: -model.log_prob(u1[idx], x1[idx]), n1, w_t,
                           lambda: float((-model.log_prob(u2, x2) * w2).sum() / w2.sum()), seconds=seconds,
                           seed=a.seed, threads=threads, max_epochs=a.max_epochs, lr=a.flow_lr, batch=batch,
                           batch_max=a.flow_batch_max if (a.flow_batch_max and n1 >= 16 * a.flow_batch_max) else None,
                           name=f"{kind}_{s}", log=log)
        model.freeze()
        export(model, paths[kind], 4 + int(ismuon), noise_dim=dim)
        if kind == "rich":
            set_onnx_metadata(paths[kind], **{BASIS_KEY: a.rich_basis})
        save_state(model, a, kind, s)
        settings[kind] = {"architecture": f"conditional normalising flow: {layers} affine couplings (hidden {hidden}, "
                                          f"condition embedding {embed}) + marginal quantile transform "
                                          "(tie-preserving), trained by maximum likelihood"
                                          + (f"; flow variables ({', '.join(RICH_FLOW_VARIABLES[a.rich_basis])}), "
                                             f"basis '{a.rich_basis}': the 30 % of tracks with DLLp == DLLK exactly (K "
                                             "and p both below threshold) are a point mass of one variable"
                                             if kind == "rich" else "")
                                          + ("; conditioned on isMuon too" if ismuon else ""),
                          "rows": n1, **f}
        if ws:
            settings[kind]["warm_start"] = ("parameters of an earlier training (" + ws + "), then trained on this "
                                            "sample with its own quantile tables")
        if extra is not None:
            settings[kind]["extra_rows"] = {
                "rows": int(extra["kin"].shape[0]), "simulated_tracks": extra["simulated"],
                "source": extra.get("source", MUON_EXTRA_SOURCE)}

    extra_rich = None
    recal_kinds = set(a.recalibrate_kinds.split(",")) if a.recalibrate_only else set()
    if a.rich_extra_tracks > 0 and ("rich" in kinds or "rich" in recal_kinds):
        require_teacher_sample(a, "--rich-extra-tracks")
        from .flash_common import teacher_rich_rows

        t1 = time.time()
        extra_rich = teacher_rich_rows(s, a.rich_extra_tracks, seed=a.teacher_seed)
        extra_rich["source"] = (f"the hasRich rows of fresh teacher tracks of this species (same spectrum; row numbers "
                                f"from {extra_rich['first_row']:.3g} = 4e12 + species * 1e10, disjoint from the sample), "
                                "see flash_common.teacher_rich_rows; also used by the recalibration; the validation "
                                "uses the held-out rows of the sample only")
        log(f"  [rich_{s}] {extra_rich['kin'].shape[0]} extra hasRich rows from {a.rich_extra_tracks} teacher tracks "
            f"({time.time() - t1:.0f}s)")
    def fit_ar_rich(extra, ismuon):
        """RICH model as an autoregressive product of conditional histograms on per-group quantile scales
        (flash_common.build_ar_rich_model), then its tables recalibrated on the training rows."""
        from .flash_common import (AR_ORDERS, RICH_MODEL_KEY, ARScales, ar_value_feature, build_ar_rich_model,
                                   make_group_grid)

        x_of = lambda X, m: with_ismuon(X["kin"][m], X["isMuon"][m] if ismuon else None)  # noqa: E731
        mT, mV = T["hasRich"], V["hasRich"]
        if mT.sum() < 200 or mV.sum() < 5:
            raise SystemExit(f"species {s}: {int(mT.sum())}/{int(mV.sum())} training/validation rows with hasRich -- "
                             "too few to train the RICH model")
        tgt, kin_t, w_t = T["rich"][mT], x_of(T, mT), T["w"][mT]
        if extra is not None and extra["kin"].shape[0]:
            tgt = np.concatenate([tgt, extra["rich"]])
            kin_t = np.concatenate([kin_t, x_of(extra, slice(None))])
            w_t = np.concatenate([w_t, extra["w"]])
        basis, order = a.rich_basis, AR_ORDERS[a.rich_basis]
        t1 = time.time()
        ft = rich_to_flow(tgt, basis)
        grid, G, n_pg, eta_edges, lp_edges = make_group_grid(kin_t, ft, w_t, n_groups=a.recalibration_groups,
                                                             eta_groups=a.recalibration_eta_groups)
        sc = ARScales(n_bins=a.ar_bins).fit(kin_t, ft, w_t, grid, G, eta_groups=a.recalibration_eta_groups)

        def encode(kin_x, t_flow, w_x, seed, held_out=False):
            # training rows: their randomised PIT in their group; held-out rows: on the training rows' tables
            _, b, _, z = sc.cdf(kin_x, t_flow, seed=seed) if held_out else sc.pit(kin_x, t_flow, w_x, seed=seed)
            feats = np.concatenate([np.stack([z[:, c], ar_value_feature(t_flow[:, c])], 1) for c in order], 1)
            return tt(feats), torch.as_tensor(b[:, list(order)])

        fT, bT = encode(kin_t, ft, w_t, a.seed + 500 + si)
        kV, tV, wV2 = x_of(V, mV), rich_to_flow(V["rich"][mV], basis), V["w"][mV]
        fV, bV = encode(kV, tV, wV2, a.seed + 600 + si, held_out=True)
        log(f"  [rich_{s}] AR scales: {G} groups, {a.ar_bins} bins x {sc.sub} ({time.time() - t1:.0f}s)")
        model = build_ar_rich_model(loc, scale, sc, n_in=4 + int(ismuon), hidden=a.ar_hidden, seed=a.seed + si,
                                    basis=basis, order=order)
        ws = warm_start(model, a, "rich", s)
        x1, x2, w2 = tt(kin_t), tt(kV), tt(wV2)
        f = train_weighted(model, lambda idx: model.loss(x1[idx], fT[idx], bT[idx]), int(kin_t.shape[0]), w_t,
                           lambda: float((model.loss(x2, fV, bV) * w2).sum() / w2.sum()), seconds=a.seconds_rich,
                           seed=a.seed, threads=threads, max_epochs=a.max_epochs, lr=a.flow_lr, batch=2048,
                           name=f"rich_{s}", log=log)
        # recalibration of the tables (the flows' method, on the model's own u positions)
        t1 = time.time()
        rng_r = np.random.default_rng(a.seed + 300 + si)
        draws = a.recalibration_draws
        with torch.no_grad():
            pos = np.concatenate([
                np.concatenate([model.sample(x1[i:i + 65536], torch.as_tensor(rng_r.standard_normal(
                    (min(65536, x1.shape[0] - i), 4)).astype(np.float32)), positions=True)[1].numpy()
                    for i in range(0, x1.shape[0], 65536)]) for _ in range(draws)])
        u_gen = np.zeros_like(pos)
        u_gen[:, list(order)] = pos
        shift = sc.recalibrate(kin_t, ft, w_t, u_gen, eta_groups=a.recalibration_eta_groups)
        model.set_tables(sc)
        rc = {"method": "the model sampled on the training conditions; per (momentum, eta) group and variable the "
                        "table becomes q_k = Q_train,group(F_gen,group(level_k)), point masses exact (as the flows')",
              "draws": int(draws), "rows": int(kin_t.shape[0]),
              "max_cdf_shift_per_variable": [round(float(x), 5) for x in shift], "seconds": round(time.time() - t1, 1)}
        log(f"  [rich_{s}] AR tables recalibrated: max CDF shift {rc['max_cdf_shift_per_variable']} ({rc['seconds']}s)")
        export(model, paths["rich"], 4 + int(ismuon), noise_dim=4)
        set_onnx_metadata(paths["rich"], **{BASIS_KEY: basis, RICH_MODEL_KEY: "ar"})
        save_state(model, a, "rich", s)
        names = RICH_FLOW_VARIABLES[basis]
        settings["rich"] = {
            "architecture": f"autoregressive conditional histograms: the variables {', '.join(names[c] for c in order)} "
                            f"(basis '{basis}') in this order, each from {a.ar_bins} bins (edges Phi(-4.5), "
                            f"Phi(linspace(-3.5, 3.5, {a.ar_bins - 1})), Phi(4.5) of its (momentum, eta) group's "
                            f"marginal CDF; uniform inside a bin) with logits from an MLP {4 + int(ismuon)}+2j-"
                            f"{a.ar_hidden}-{a.ar_hidden}-{a.ar_bins} (SiLU) of the kinematics"
                            + (", isMuon" if ismuon else "") + " and the variables already generated; values from "
                            f"the group's quantile table ({sc.levels.size} knots, point masses exact); trained by "
                            "maximum likelihood (cross-entropy of the bins)",
            "groups": int(G), "momentum_groups": int(n_pg), "eta_group_edges": [round(float(e), 4) for e in eta_edges],
            "group_edges_p_GeV": [round(float(np.exp(e)) / 1000.0, 3) for e in lp_edges],
            "rows": int(kin_t.shape[0]), "recalibration": rc, **f}
        if ws:
            settings["rich"]["warm_start"] = ws
        if extra is not None:
            settings["rich"]["extra_rows"] = {"rows": int(extra["kin"].shape[0]), "simulated_tracks": extra["simulated"],
                                              "source": extra.get("source", MUON_EXTRA_SOURCE)}

    if a.rich_model == "ar" and "rich" in kinds:
        fit_ar_rich(extra_rich, rich_ismuon)
    else:
        fit_flow("rich", "rich", "hasRich", 4, a.rich_layers, a.rich_hidden, a.rich_embed, a.seconds_rich,
                 extra=extra_rich, ismuon=rich_ismuon)
    rich_is_ar = (a.rich_model == "ar") if "rich" in kinds else onnx_rich_model(paths["rich"]) == "ar"
    if rich_is_ar and "rich" in recal_kinds:
        log(f"  [rich_{s}] autoregressive RICH model: its tables were recalibrated at the end of its training; "
            "--recalibrate-only leaves it as it is")
    if a.recalibration_groups > 0 and not rich_is_ar and ("rich" in kinds or "rich" in recal_kinds):
        # post-training recalibration of the RICH flow's quantile tables per momentum group, on the
        # training rows (the exported graph is rewritten; a shipped model is recalibrated from its latent)
        from .flash_common import recalibrate_flow_onnx

        t1 = time.time()
        mT = T["hasRich"]
        kin_r = with_ismuon(T["kin"][mT], T["isMuon"][mT] if rich_ismuon else None)
        tgt_r, w_r = T["rich"][mT], T["w"][mT]
        if extra_rich is not None and extra_rich["kin"].shape[0]:   # the extra teacher rows too (less noise)
            kin_r = np.concatenate([kin_r, with_ismuon(extra_rich["kin"], extra_rich["isMuon"] if rich_ismuon else None)])
            tgt_r = np.concatenate([tgt_r, extra_rich["rich"]])
            w_r = np.concatenate([w_r, extra_rich["w"]])
        basis = a.rich_basis if "rich" in kinds else onnx_rich_basis(paths["rich"])
        rc = recalibrate_flow_onnx(paths["rich"], kin_r, rich_to_flow(tgt_r, basis), w_r, post="rich",
                                   n_groups=a.recalibration_groups, n_knots=a.recalibration_knots,
                                   n_draws=a.recalibration_draws, eta_groups=a.recalibration_eta_groups,
                                   seed=a.seed + 300 + si)
        rc["seconds"] = round(time.time() - t1, 1)
        log(f"  [rich_{s}] recalibrated: {rc['momentum_groups']} momentum x {rc['eta_groups']} eta groups, "
            f"{rc['knots']} knots ({rc['seconds']}s)")
        if "rich" in kinds:
            settings["rich"]["recalibration"] = rc
        else:   # --recalibrate-only: the shipped model's training block, plus the recalibration
            blk = settings["rich"]["reused_training_block"]
            blk.setdefault("settings", {})["recalibration"] = dict(rc, command=a.command_line)

    def fit_muon_curves(extra):
        """MUON model on curves (flash_common.find_muon_curves / build_curve_muon_model).  Returns False
        (nothing written) when the training rows do not lie on curves (on-curve fraction < 0.98)."""
        from .flash_common import CurveTables, build_curve_muon_model, find_muon_curves

        mT, mV = T["isMuon"], V["isMuon"]
        if mT.sum() < 20 or mV.sum() < 5:
            raise SystemExit(f"species {s}: {int(mT.sum())}/{int(mV.sum())} training/validation rows with "
                             "isMuon -- too few to train the muon model")
        tgt, kin_t, w_t = T["muon"][mT], T["kin"][mT], T["w"][mT]
        if extra is not None and extra["kin"].shape[0]:
            tgt, kin_t = np.concatenate([tgt, extra["muon"]]), np.concatenate([kin_t, extra["kin"]])
            w_t = np.concatenate([w_t, extra["w"]])
        t1 = time.time()
        # curves from the training rows; the validation rows are labelled by the nearest curve
        cur = find_muon_curves(tgt[:, 0], tgt[:, 1], w_t, max_curves=a.muon_max_curves)
        log(f"  [muon_{s}] curves: {cur['n_curves']} (weights {cur['weight_fractions']}), on-curve fraction "
            f"{cur['on_curve_fraction']}, fragments merged {cur['fragments_merged']} ({time.time() - t1:.1f}s)")
        if cur["on_curve_fraction"] < 0.98:
            return False
        C = cur["n_curves"]
        tab = CurveTables().fit(tgt[:, 0], tgt[:, 1], cur["labels"], C, w_t, n_knots=a.muon_curve_knots)
        n1 = int(kin_t.shape[0])
        n_bins = a.muon_curve_bins or int(min(32, max(8, 2 ** round(math.log2(max(n1 / (C * 200), 1))))))
        sV, bV = V["muon"][mV, 0].astype(np.float64) - V["muon"][mV, 1], V["muon"][mV, 1].astype(np.float64)
        labV = np.argmin(np.stack([np.abs(bV - tab.curve(c, sV)) for c in range(C)], 1), axis=1)
        model = build_curve_muon_model(loc, scale, tab, n_bins, hidden=a.muon_curve_hidden, seed=a.seed + si,
                                       p_steps_gev=a.muon_p_steps)
        ws = warm_start(model, a, "muon", s)
        cT = model.targets(tab.position(tgt[:, 0], tgt[:, 1], cur["labels"]), cur["labels"])
        cV = model.targets(tab.position(V["muon"][mV, 0], V["muon"][mV, 1], labV), labV)
        x1, x2, w2 = tt(kin_t), tt(V["kin"][mV]), tt(V["w"][mV])
        batch = int(min(1024, max(64, n1 // 8)))
        f = train_weighted(model, lambda idx: model.loss(x1[idx], cT[idx]), n1, w_t,
                           lambda: float((model.loss(x2, cV) * w2).sum() / w2.sum()), seconds=a.seconds_muon,
                           seed=a.seed, threads=threads, max_epochs=a.max_epochs, lr=3e-3, batch=batch,
                           name=f"muon_{s}", log=log)
        export(model, paths["muon"], 4, noise_dim=2)
        save_state(model, a, "muon", s)
        settings["muon"] = {
            "architecture": f"curves x conditional histogram: the (MuonMuLL, MuonBkgLL) pairs lie on {C} curves "
                            f"MuonBkgLL = g_c(MuonMuLL - MuonBkgLL) found in the training rows; an MLP "
                            f"{4 + len(a.muon_p_steps)}-{a.muon_curve_hidden}-{a.muon_curve_hidden} (SiLU) "
                            f"{p_steps_phrase(a.muon_p_steps, '', ' ')}with heads {C} (curve) and "
                            f"{C}x{n_bins} (per curve, bins of the curve's marginal CDF v); u1 = Phi(noise 1) picks "
                            f"the curve, "
                            f"u2 = Phi(noise 2) the bin and the position in it; per-curve tables of "
                            f"{a.muon_curve_knots} knots give s(v) and MuonBkgLL = g_c(s), MuonMuLL = s + MuonBkgLL; "
                            "exact likelihood (cross-entropy of curve and bin)",
            "curves": {k: v for k, v in cur.items() if k != "labels"}, "bins_per_curve": n_bins,
            "table_knots": a.muon_curve_knots, "rows": n1, **f}
        if ws:
            settings["muon"]["warm_start"] = ws
        if extra is not None:
            settings["muon"]["extra_rows"] = {
                "rows": int(extra["kin"].shape[0]), "simulated_tracks": extra["simulated"],
                "source": extra.get("source", MUON_EXTRA_SOURCE)}
        return True
    extra = None
    if a.muon_extra_tracks > 0 and s != "mu" and "muon" in kinds:
        require_teacher_sample(a, "--muon-extra-tracks")
        from .flash_common import teacher_muon_rows

        t1 = time.time()
        extra = teacher_muon_rows(s, a.muon_extra_tracks, seed=a.teacher_seed)
        log(f"  [muon_{s}] {extra['kin'].shape[0]} extra isMuon rows from {a.muon_extra_tracks} teacher tracks "
            f"({time.time() - t1:.0f}s)")
    if "muon" in kinds and a.muon_model == "curves" and not fit_muon_curves(extra):
        log(f"  [muon_{s}] the muon LLs do not lie on curves: conditional flow instead")
        a_flow = True
    else:
        a_flow = a.muon_model == "flow"
    if a_flow and "muon" in kinds and a.muon_p_steps:
        log(f"  [muon_{s}] --muon-p-steps: not used by the conditional flow")
    if a_flow:
        fit_flow("muon", "muon", "isMuon", 2, a.muon_layers, a.muon_hidden, a.muon_embed, a.seconds_muon, extra=extra)

    # -- 4. GlobalPID ----------------------------------------------------------------------------
    if "globalpid" not in kinds:
        if a.recalibrate_only and "globalpid" in recal_kinds:   # the shipped model's noise scale, chosen again
            ns = calibrate_globalpid_noise(paths["globalpid"], T, d, seed=a.seed + 400 + si)
            log(f"  [globalpid_{s}] noise scale {ns['noise_scale']} (chi2 {ns['chi2_of_the_cut_rates']})")
            blk = settings["globalpid"]["reused_training_block"]
            blk.setdefault("settings", {})["noise_scale"] = dict(ns, command=a.command_line)
        return paths, settings, info, va
    TG, extra_g = T, None   # the GlobalPID's training rows: the sample's, plus --global-extra-tracks
    if a.global_extra_tracks > 0:
        require_teacher_sample(a, "--global-extra-tracks")
        from .flash_common import teacher_global_rows

        t1 = time.time()
        extra_g = teacher_global_rows(s, a.global_extra_tracks, seed=a.teacher_seed)
        TG = {k: np.concatenate([T[k], extra_g[k]]) for k in GLOBAL_ROW_KEYS}
        log(f"  [globalpid_{s}] {a.global_extra_tracks} extra teacher tracks ({time.time() - t1:.0f}s)")
    prep = GlobalPIDPrep(n_knots=a.global_table_knots).fit(TG["gx"], TG["gy"], TG["w"])
    nt = np.asarray(TG["kin"][:, 2], np.float64)
    net = M["GlobalPIDNet"](loc, scale, float(nt.mean()), float(max(nt.std(), 1.0)), prep.r_mean, prep.r_std,
                            prep.gates, prep.tables, prep.lo, prep.step, prep.const_mask.astype(np.float64),
                            prep.const_value, softmax=prep.softmax, hidden=a.global_hidden,
                            logit_weight=a.logit_weight, norich_hidden=a.global_norich_hidden)
    fresh = []
    ws = warm_start(net, a, "globalpid", s, new=("norich.",), fresh=fresh)
    # a warm start from a model without the no-RICH head: that model is kept exactly (tracks with RICH
    # information get the same outputs) and only the new head is trained, on the rows without RICH
    head_only = bool(ws) and a.global_norich_hidden > 0 and bool(fresh)
    # rare (hasRich, muon state) categories (no RICH: ~1 %, isMuon hadrons: ~3 %, out of muon acceptance:
    # ~6 %) get a larger share of the loss: weights (category frequency)^-alpha.  The weights depend on
    # the inputs only, so the conditional model being fitted is unchanged; they only move capacity.
    TH, VH, extra_h, base_card = TG, V, None, None      # the rows trained on (head only: those without RICH)
    if not head_only:
        bT, bV = balance_weights(TG, a.global_balance), balance_weights(V, a.global_balance, ref=TG)
    else:   # head only: the rows without RICH, unit weights
        for k, prm in net.named_parameters():
            prm.requires_grad_(k.startswith("norich."))
        base_card = replaced_card_training(paths["globalpid"].with_suffix(".yaml"))
        TH, VH, extra_h = norich_rows(TG, V, a, s)
        bT, bV = np.ones(len(TH["w"])), np.ones(len(VH["w"]))
        log(f"  [globalpid_{s}] warm start without a no-RICH head: only the head is trained, on "
            f"{len(TH['w'])} rows without RICH (held out: {len(VH['w'])})")
    rT, pT, lT = prep.targets(TH["gx"], TH["gy"])
    rV, pV, lV = prep.targets(VH["gx"], VH["gy"])
    dev = lambda arr: tt(arr).to(a.device)  # noqa: E731  (training tensors on the --device)
    gxT, grT, gpT, glT = dev(TH["gx"]), dev(rT), dev(pT), dev(lT)
    gxV, grV, gpV, glV = dev(VH["gx"]), dev(rV), dev(pV), dev(lV)
    wbV = dev(VH["w"] * bV)
    f = train_weighted(net, lambda idx: net.loss(gxT[idx], grT[idx], gpT[idx], glT[idx]), len(TH["w"]), TH["w"] * bT,
                       lambda: float((net.loss(gxV, grV, gpV, glV) * wbV).sum() / wbV.sum()), seconds=a.seconds_global,
                       seed=a.seed, threads=threads, max_epochs=a.max_epochs, lr=a.global_lr, batch=a.global_batch,
                       batch_max=a.global_batch_max or None, lbfgs_seconds=a.global_lbfgs_seconds,
                       lbfgs_rows=a.global_lbfgs_rows, device=a.device, name=f"globalpid_{s}", log=log)
    export(net, paths["globalpid"], len(card_columns("globalpid")[0]), noise_dim=NOISE_DIMS["globalpid"])
    save_state(net, a, "globalpid", s)
    if a.global_noise_scale == "auto":
        ns = calibrate_globalpid_noise(paths["globalpid"], T, d, seed=a.seed + 400 + si)
    else:
        set_noise_scale_onnx(paths["globalpid"], float(a.global_noise_scale))
        ns = {"noise_scale": {"combined_dll": float(a.global_noise_scale), "probnn": float(a.global_noise_scale)},
              "criterion": "--global-noise-scale"}
    log(f"  [globalpid_{s}] noise scale {ns['noise_scale']}")
    fid = globalpid_distillation_figures(net, tt(V["gx"]), V["gy"], prep)
    log(f"  [globalpid_{s}] held-out: {fid}")
    settings["globalpid"] = {
        **prep.summary(), "logit_loss_weight": a.logit_weight,
        "constant_outputs": {c: float(v) for (c, _, _), v, k in zip(GLOBALPID_OUTPUTS, prep.const_value, prep.const_mask) if k},
        "architecture": f"combined DLLs = sub-detector sum + per-muon-state log-p tables + gated Gaussian correction; "
                        f"ProbNN = {'softmax' if prep.softmax else 'sigmoid'}(logits + width*noise), logits from one "
                        f"tanh layer 15-{a.global_hidden}; widths/corrections from a SiLU layer {a.global_hidden}-"
                        f"{a.global_hidden}-14; features sign*log1p|DLL|, muon LLs, flags, kinematics, nTracks"
                        + (f"; tracks without RICH: their ProbNN logits plus a no-RICH head (tanh layer 15-"
                           f"{a.global_norich_hidden}-6)" if a.global_norich_hidden else ""),
        "held_out_mean_model_vs_reference": fid, "category_balance_alpha": a.global_balance, "noise_scale": ns, **f}
    if ws:
        settings["globalpid"]["warm_start"] = ws
    if head_only:
        settings["globalpid"]["norich_head"] = {
            "trained": "only the no-RICH head, on the rows without RICH information; the warm-started model's own "
                       "parameters unchanged (tracks with RICH get the same outputs at the same noise scale); the "
                       "epochs, seconds and losses above are the head's",
            "rows": int(len(TH["w"])), "held_out_rows": int(len(VH["w"]))}
        if base_card is not None:
            settings["globalpid"]["norich_head"]["replaced_card_training"] = base_card
        if extra_h is not None:
            settings["globalpid"]["norich_head"]["extra_rows"] = extra_rows_block(
                extra_h, " (their rows without RICH)", "7e12", "only for the no-RICH head")
    if extra_g is not None:
        settings["globalpid"]["extra_rows"] = extra_rows_block(
            extra_g, " with the teacher's ProbNN", "5e12",
            "the noise scale is chosen and the validation done on the sample's own training and held-out rows")
    return paths, settings, info, va


#: noise scales tried by :func:`calibrate_globalpid_noise`
NOISE_SCALE_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def calibrate_globalpid_noise(path, C, d, seed, grid=NOISE_SCALE_GRID) -> dict:
    """Post-training choice of the GlobalPID noise scale (exported file ``path``, rewritten), on the
    *training* rows ``C`` (:func:`columns_for`): the model is run on the rows' own sub-detector inputs
    with one noise draw per row times s for s in ``grid``, and per output group -- the combined DLLs
    (PID*: the widths of their Gaussian corrections) and the ProbNN (the widths of the logit noise) --
    the s with the smallest chi2 of the cut rates in (p, eta, nTracks) bins (:data:`CUTS`,
    :func:`rate_table`, the validation's binning) is kept in the graph (set_noise_scale_onnx).

    Why: the widths are fitted by likelihood to the residual of the mean model, which also holds the
    mean's own error.  Where the reference is a deterministic function of the inputs (the teacher's
    combined DLLs and ProbNN), adding that width back at sampling counts the error twice: the kaon
    ProbNNe > 0.5 rate came out +10 % on the teacher's own inputs with the full widths and -0.3 % with
    none.  With genuinely noisy references (calibration samples) the chi2 picks a larger scale."""
    import onnxruntime as ort

    from .flash_common import set_noise_scale_onnx

    names = [c for c, _, _ in GLOBALPID_OUTPUTS]
    set_noise_scale_onnx(path, 1.0)          # evaluate from the trained widths
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.asarray(C["gx"], np.float32)
    noise = np.random.default_rng(seed).standard_normal((x.shape[0], len(names))).astype(np.float32)
    flags = {c: np.asarray(C[c], bool) for c in BOOLS}

    def as_outputs(y):
        o = {c: np.asarray(y[:, j], np.float64) for j, c in enumerate(names)}
        o["ProbNNmu"] = np.where(flags["isMuon"], o["ProbNNmu"], -1.0)
        return {**o, **flags}

    kin = np.asarray(C["kin"][:, :3], np.float64)
    nt_edges = ntracks_edges(d)
    ref = as_outputs(np.asarray(C["gy"], np.float64))
    group_of = {"combined_dll": lambda c: c.startswith("PID"), "probnn": lambda c: c.startswith("ProbNN")}
    chi2 = {g: [] for g in group_of}
    for s in grid:
        y = np.concatenate([sess.run(None, {"x": x[i:i + 65536], "noise": noise[i:i + 65536] * np.float32(s)})[0]
                            for i in range(0, x.shape[0], 65536)])
        tab = rate_table(ref, [as_outputs(y)], kin, np.asarray(C["w"], np.float64), nt_edges)
        for g, sel in group_of.items():
            chi2[g].append(round(sum(v["chi2"] for k, v in tab.items() if sel(k)), 1))
    best = {g: float(grid[int(np.argmin(v))]) for g, v in chi2.items()}
    scale = np.array([best["combined_dll"] if c.startswith("PID") else best["probnn"] for c in names])
    set_noise_scale_onnx(path, scale)
    return {"noise_scale": best, "grid": list(grid), "chi2_of_the_cut_rates": chi2, "rows": int(x.shape[0]),
            "cuts": {g: [k for k, _ in CUTS if sel(k)] for g, sel in group_of.items()},
            "criterion": "training rows, their own sub-detector inputs, one noise draw per row; smallest chi2 of "
                         "the cut rates in the validation's (p, eta, nTracks) bins, per output group"}


def globalpid_distillation_figures(net, gx, gy, prep) -> dict:
    """Noise-free GlobalPID model vs the reference on held-out rows given the *reference* inputs:
    RMS of the combined-DLL difference and median / 99 % quantile of |log ProbNN difference|."""
    import torch

    names = [c for c, _, _ in GLOBALPID_OUTPUTS]
    with torch.no_grad():
        y = net(gx, torch.zeros(gx.shape[0], len(names))).numpy().astype(np.float64)
    ref = np.asarray(gy, np.float64)
    out = {}
    for c in ("PIDe", "PIDK", "PIDp", "PIDmu"):
        j = names.index(c)
        out[f"{c}_rms"] = round(float(np.sqrt(np.mean((y[:, j] - ref[:, j]) ** 2))), 5)
    for c in ("ProbNNe", "ProbNNpi", "ProbNNk", "ProbNNp", "ProbNNmu"):
        j = names.index(c)
        dl = np.abs(np.log(np.clip(y[:, j], 1e-30, 1)) - np.log(np.clip(ref[:, j], 1e-30, 1)))
        out[f"{c}_abs_dlog_median"] = round(float(np.median(dl)), 5)
        out[f"{c}_abs_dlog_q99"] = round(float(np.quantile(dl, 0.99)), 5)
    return out


# ----------------------------------------------------------------------------------------------
# validation (runtime code path on the exported files)
# ----------------------------------------------------------------------------------------------
def load_models(paths: dict):
    from framework.models import ModelSvc

    svc = ModelSvc(threads=1, conditions_tag=CONDITIONS)
    return {k: svc.load(str(p)) for k, p in paths.items()}


def extra_rows_block(extra: dict, what: str, base: str, note: str) -> dict:
    """A card's ``settings.extra_rows`` for rows from ``flash_common.teacher_global_rows``."""
    return {"rows": int(extra["w"].shape[0]), "simulated_tracks": extra["simulated"],
            "source": f"fresh teacher tracks of this species{what} (same spectrum; row numbers from "
                      f"{extra['first_row']:.3g} = {base} + species * 1e10, disjoint from the sample), see "
                      f"flash_common.teacher_global_rows; {note}"}


def require_teacher_sample(a, option: str) -> None:
    """Options that simulate extra teacher rows need a teacher sample (not a calibration file)."""
    if a.weight_branch or a.species_name:
        raise SystemExit(f"{option} simulates teacher rows: only for teacher samples (no "
                         "--weight-branch/--species-name calibration files)")


def flash_on_rows(models, si, d, rows, replica=0, lamarr_sentinels=True, given=None):
    """The flash chain of species ``si`` on ``rows`` of the sample ``d`` with the noise of ``replica``;
    ``given``: stage outputs used in place of the models' (``flash_pid_response``)."""
    from algorithms.pid.flash import flash_pid_response

    n = rows.size
    keys = {k: np.uint64(0x5EED0000 + 17 * i + 1000 * replica) for i, k in enumerate(MODEL_KINDS)}
    return flash_pid_response({si: models}, np.full(n, si), d["p"][rows], d["eta"][rows], d["nTracks"][rows],
                              d["charge"][rows], rows.astype(np.int64) + (replica << 32), np.zeros(n, np.int64),
                              keys, lamarr_muon_sentinels=lamarr_sentinels, given=given)


def teacher_on_rows(d, rows, lamarr_sentinels=True):
    out = {c: np.asarray(d[c][rows]) for c in LAMARR_OUTPUTS + BOOLS}
    if lamarr_sentinels:
        out["ProbNNmu"] = np.where(out["isMuon"], out["ProbNNmu"], -1.0)
    return out


def _wmean_err(x, w):
    sw = w.sum()
    if sw <= 0:
        return float("nan"), float("nan"), 0.0
    m = float((w * x).sum() / sw)
    neff = sw ** 2 / float((w * w).sum())
    return m, float(np.sqrt(max(m * (1 - m), 1.0 / max(neff, 1.0)) / neff)), neff


def ntracks_edges(d):
    """nTracks bin edges of the rate tables: the sample's minimum, median and maximum (+1)."""
    nt_edges = np.unique(np.round(np.quantile(d["nTracks"], [0.0, 0.5, 1.0])))
    nt_edges[-1] += 1
    return nt_edges


def rate_table(ref, gens, kin, w, nt_edges):
    """Per cut and (p, eta, nTracks) bin: reference and flash rates, errors, pass flags."""
    pb = np.searchsorted(np.asarray(P_EDGES_GEV) * 1000.0, kin[:, 0], side="right") - 1
    eb = np.searchsorted(ETA_EDGES, kin[:, 1], side="right") - 1
    nb = np.searchsorted(nt_edges, kin[:, 2], side="right") - 1
    ok = (pb >= 0) & (pb < len(P_EDGES_GEV) - 1) & (eb >= 0) & (eb < len(ETA_EDGES) - 1) & (nb >= 0) & (nb < len(nt_edges) - 1)
    results = {}
    for name, fn in CUTS:
        r = np.asarray(fn(ref), dtype=np.float64)
        g = [np.asarray(fn(o), dtype=np.float64) for o in gens]
        rows = []
        for i in range(len(P_EDGES_GEV) - 1):
            for j in range(len(ETA_EDGES) - 1):
                for k in range(len(nt_edges) - 1):
                    m = ok & (pb == i) & (eb == j) & (nb == k)
                    if m.sum() < 50:
                        continue
                    er, sr, neff = _wmean_err(r[m], w[m])
                    gg = [_wmean_err(x[m], w[m]) for x in g]
                    ef = float(np.mean([x[0] for x in gg]))
                    sf = float(np.sqrt(np.mean([x[1] ** 2 for x in gg]) / len(gg)))
                    sig = float(np.hypot(sr, sf))
                    diff = ef - er
                    if er > 0.2:
                        tol, kind = max(0.01, 2 * sig), "eff"
                    else:
                        tol, kind = max(0.1 * er, 2 * sig), "misid"
                    rows.append({"p_GeV": [P_EDGES_GEV[i], P_EDGES_GEV[i + 1]], "eta": [ETA_EDGES[j], ETA_EDGES[j + 1]],
                                 "nTracks": [float(nt_edges[k]), float(nt_edges[k + 1])], "n_eff": round(neff, 1),
                                 "reference": round(er, 5), "flash": round(ef, 5), "diff": round(diff, 5),
                                 "sigma": round(sig, 5), "kind": kind, "pass": bool(abs(diff) <= tol)})
        n_pass = sum(x["pass"] for x in rows)
        rtot, _, _ = _wmean_err(r[ok], w[ok])
        ftot = float(np.mean([_wmean_err(x[ok], w[ok])[0] for x in g]))
        worst = max(rows, key=lambda x: abs(x["diff"]) / max(x["sigma"], 1e-9)) if rows else None
        results[name] = {"reference": round(rtot, 5), "flash": round(ftot, 5), "bins": len(rows),
                         "bins_pass": int(n_pass), "max_abs_diff": round(max((abs(x["diff"]) for x in rows), default=0.0), 5),
                         "worst_bin": worst, "chi2": round(sum((x["diff"] / max(x["sigma"], 1e-9)) ** 2 for x in rows), 1),
                         "rows": rows}
    return results


class TeacherReplicas:
    """The teacher again on the tracks of held-out rows ``va`` of a teacher sample ``path``: the tracks
    are regenerated from the file's provenance (seed, species fractions; row r of the file is row r of
    the writer).  ``run(j)``: the outputs (:func:`teacher_on_rows`) with the teacher's j-th independent
    random stream (j = 0, 1, ...; the file's own stream is not among them); ``hidden_stream`` > 0: on the
    same rows with their hidden track variables redrawn (``sample_tracks(hidden_stream=)``).
    ``why`` is None when the teacher with the file's key reproduces ``ref`` exactly, else the reason
    (no provenance, e.g. a calibration file; or a teacher changed since the sample was written)."""

    def __init__(self, path, va, ref):
        import uproot

        from algorithms.pid.teacher.probnn import ProbNN
        from algorithms.pid.teacher.sampling import sample_tracks

        from .make_teacher_samples import species_for_rows

        self.why = None
        try:
            with uproot.open(path) as f:
                prov = json.loads(str(f["provenance"]))
            self.seed, fractions = int(prov["seed"]), np.asarray(prov["fractions"], np.float64)
        except (OSError, KeyError, ValueError, TypeError) as e:   # e.g. calibration files: no teacher provenance
            self.why = f"no teacher provenance in {path}: {type(e).__name__}: {e}"
            return
        self.rows = np.asarray(va, np.int64)
        self.species = species_for_rows(self.rows, fractions, self.seed)
        self.tracks = sample_tracks(0, self.species, seed=self.seed, rows=self.rows)
        self.probnn = ProbNN.default()
        again = self._respond(self._key(None), self.tracks)
        bad = [c for c in ref if not np.array_equal(np.asarray(again[c], np.float32), np.asarray(ref[c], np.float32))]
        if bad:
            self.why = f"the teacher does not reproduce the sample's {bad[:3]} (teacher changed since the sample was written?)"

    def _key(self, j):
        from framework.random import RandomStreams

        return RandomStreams(self.seed + (0 if j is None else 7919 * (j + 1)), 0, "PIDTeacher").key_for(0)

    def _respond(self, key, tracks):
        from .make_teacher_samples import respond, to_branches

        return teacher_on_rows(to_branches(tracks, respond(tracks, key, self.probnn)), slice(None))

    def run(self, j: int, hidden_stream: int = 0) -> dict:
        from algorithms.pid.teacher.sampling import sample_tracks

        tracks = (sample_tracks(0, self.species, seed=self.seed, rows=self.rows, hidden_stream=hidden_stream)
                  if hidden_stream else self.tracks)
        return self._respond(self._key(j), tracks)


def teacher_baseline(path, d, va, ref, kin, w, nt_edges, replicas, stream_sets=1) -> dict:
    """What a perfect model scores on the same criterion: the teacher itself, run again on the held-out
    rows' own tracks with ``replicas`` independent random streams, in place of the flash replicas
    (:func:`rate_table` against the same reference rows).  The reference's own fluctuations fail some
    bins for any model; this is the figure to compare ``rates_all_bins_pass`` with.  ``stream_sets`` > 1:
    the score again with further sets of ``replicas`` independent streams (the spread of the score
    between draws; the flash's is in ``rates_all_bins_pass_streams``).  Teacher samples
    only (:class:`TeacherReplicas`): the teacher with the file's key must reproduce the reference
    exactly, otherwise the baseline is reported as not available.

    ``given_inputs``: the same score with each replica's tracks regenerated with their hidden variables
    (azimuth, origin; ``sample_tracks(hidden_stream=)``) redrawn.  The teacher's acceptance flags and
    part of its response depend on them, so on the rows' own tracks the teacher shares them with the
    reference (hasRich and InMuonAcc come out identical) and fails fewer bins than any model of
    (p, eta, nTracks, charge) can; given the inputs alone it is the perfect flash model."""
    teacher = TeacherReplicas(path, va, ref)
    if teacher.why:
        return {"available": False, "why": teacher.why}
    sets = range(max(1, stream_sets))
    tables = [rate_table(ref, [teacher.run(k * replicas + r) for r in range(replicas)], kin, w, nt_edges)
              for k in sets]
    out = {"available": True,
           "method": f"the teacher on the held-out rows' own tracks, {replicas} independent random streams, "
                     "against the same reference rows and criteria", **_baseline_scores(tables)}
    # the same with the tracks' hidden variables (phi, z0) redrawn for each replica: what a model of the
    # teacher given the flash's inputs (p, eta, nTracks, charge) scores
    given = [rate_table(ref, [teacher.run(k * replicas + r, hidden_stream=k * replicas + r + 1)
                              for r in range(replicas)], kin, w, nt_edges) for k in sets]
    out["given_inputs"] = {"method": "as above, on tracks with the rows' p, eta, nTracks and charge and their other "
                                     "variables (azimuth phi, origin z0) redrawn for each replica: the teacher's "
                                     "response given the flash's inputs, what a perfect flash model scores",
                           **_baseline_scores(given)}
    return out


def _baseline_scores(tables) -> dict:
    """The figures of a teacher baseline (a list of :func:`rate_table` results, one per stream set)."""
    rt = tables[0]
    out = {"rates_all_bins_pass": bins_passed(rt),
           "rates_all_bins": int(sum(v["bins"] for v in rt.values())),
           "bins_fail": {k: v["bins"] - v["bins_pass"] for k, v in rt.items() if v["bins_pass"] < v["bins"]},
           "chi2": round(sum(v["chi2"] for v in rt.values()), 1)}
    if len(tables) > 1:
        out["rates_all_bins_pass_streams"] = pass_over_streams(tables)
    return out


def bins_passed(table) -> int:
    """The (bin, cut) pairs that pass in a :func:`rate_table` result, all cuts together."""
    return int(sum(v["bins_pass"] for v in table.values()))


def pass_over_streams(tables) -> dict:
    """The bins passed with each set of independent random streams (a list of :func:`rate_table` results,
    the first the card's own): the score's spread between draws, so that two scores are compared with
    their noise (the reference rows are the same in every set)."""
    n = [bins_passed(t) for t in tables]
    return {"stream_sets": len(n), "bins_pass": n, "mean": round(float(np.mean(n)), 2),
            "std": round(float(np.std(n, ddof=1)), 2)}


#: point masses of the RICH DLLs checked in validation: (name, function of the output dict) on hasRich rows
RICH_POINT_MASSES = (("RichDLLp==RichDLLK", lambda o: np.asarray(o["RichDLLp"]) == np.asarray(o["RichDLLK"])),
                     ("RichDLLK==0", lambda o: np.asarray(o["RichDLLK"]) == 0))


def point_mass_table(ref, gens, kin, w) -> dict:
    """Fractions of the hasRich rows exactly at each RICH point mass (RICH_POINT_MASSES), integrated and in
    the momentum bins P_EDGES_GEV, reference vs flash (mean of the replicas), with the rate criteria of
    :func:`rate_table` (> 0.2: 1 % absolute or 2 sigma; otherwise 10 % relative or 2 sigma)."""
    pb = np.searchsorted(np.asarray(P_EDGES_GEV) * 1000.0, kin[:, 0], side="right") - 1
    out = {}
    for name, fn in RICH_POINT_MASSES:
        def frac(o, m):
            has = np.asarray(o["hasRich"], bool) & m
            return _wmean_err(np.asarray(fn(o), np.float64)[has], w[has])

        bins = []
        for i in range(len(P_EDGES_GEV) - 1):
            m = pb == i
            er, sr, neff = frac(ref, m)
            gg = [frac(o, m) for o in gens]
            ef = float(np.mean([x[0] for x in gg]))
            sf = float(np.sqrt(np.mean([x[1] ** 2 for x in gg]) / len(gg)))
            sig = float(np.hypot(sr, sf))
            tol = max(0.01, 2 * sig) if er > 0.2 else max(0.1 * er, 2 * sig)
            bins.append({"p_GeV": [P_EDGES_GEV[i], P_EDGES_GEV[i + 1]], "reference": round(er, 5),
                         "flash": round(ef, 5), "sigma": round(sig, 5), "pass": bool(abs(ef - er) <= tol)})
        allm = np.ones(kin.shape[0], bool)
        out[name] = {"reference": round(frac(ref, allm)[0], 5),
                     "flash": round(float(np.mean([frac(o, allm)[0] for o in gens])), 5),
                     "bins_pass": int(sum(b["pass"] for b in bins)), "bins": len(bins), "p_bins": bins}
    return out


def joint_matrix(o):
    return np.stack([np.asarray(o[c], dtype=np.float64) for c in LAMARR_OUTPUTS + BOOLS], axis=1)


def validate_species(models, d, va, s, a, probs_fn=None) -> dict:
    from framework.validation import calibration_in_bins, classifier_two_sample_auc, ks_distance

    si = SPECIES.index(s)
    w = d["weight"][va]
    kin = np.stack([d["p"][va], d["eta"][va], d["nTracks"][va]], 1).astype(np.float64)
    t0 = time.time()
    ref = teacher_on_rows(d, va)
    gens = [flash_on_rows(models, si, d, va, replica=r) for r in range(a.replicas)]
    t_flash = time.time() - t0
    nt_edges = ntracks_edges(d)
    rates = rate_table(ref, gens, kin, w, nt_edges)
    weighted = not np.allclose(w, 1.0)
    out = {"sample": "held-out rows of the training file (runtime code on the exported ONNX files)",
           "rows": int(va.size), "flash_replicas": int(a.replicas),
           "criteria": "per (p, eta, nTracks) bin: rate > 0.2: |flash - reference| <= max(0.01, 2 sigma); "
                       "rate <= 0.2 (mis-ID): <= max(10 % relative, 2 sigma); sigma = combined statistical error",
           "binning": {"p_GeV": list(P_EDGES_GEV), "eta": list(ETA_EDGES), "nTracks": [float(x) for x in nt_edges]}}
    out["rates"] = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in rates.items()}
    out["rates_all_bins_pass"] = bins_passed(rates)
    out["rates_all_bins"] = int(sum(v["bins"] for v in rates.values()))
    if a.validation_streams > 1:   # the flash replicas again with further sets of noise streams
        more = [rate_table(ref, [flash_on_rows(models, si, d, va, replica=k * a.replicas + r) for r in range(a.replicas)],
                           kin, w, nt_edges) for k in range(1, a.validation_streams)]
        out["rates_all_bins_pass_streams"] = pass_over_streams([rates] + more)
    if not weighted and not a.species_name:
        out["teacher_baseline"] = teacher_baseline(a.input, d, va, ref, kin, w, nt_edges, a.replicas,
                                                   stream_sets=a.validation_streams)
    out["rich_point_masses"] = point_mass_table(ref, gens, kin, w)
    # classifier two-sample AUC of the joint outputs, with the kinematics as extra features
    if weighted:
        out["c2st"] = "skipped: weighted reference sample (the test takes unweighted rows)"
    else:
        # reference and flash on *disjoint* halves of the held-out rows: with the same condition
        # rows in both samples the cross-validated classifier memorises twins (AUC biased < 0.5)
        ha, hb = np.arange(0, va.size, 2), np.arange(1, va.size, 2)
        cond = np.stack([np.log(d["p"][va]), d["eta"][va], d["nTracks"][va], d["charge"][va]], 1)
        J, G = joint_matrix(ref)[ha], joint_matrix(gens[0])[hb]
        r = classifier_two_sample_auc(J, G, conditions=(cond[ha], cond[hb]), seed=1, max_rows=a.c2st_rows)
        out["c2st"] = {"auc": round(r.auc, 4), "auc_error": round(r.auc_error, 4), "rows": r.n_real,
                       "columns": list(LAMARR_OUTPUTS + BOOLS), "conditions": ["log p", "eta", "nTracks", "charge"],
                       "note": "reference and flash on disjoint halves of the held-out rows"}
        blocks = {"rich": (["RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp"], "hasRich"),
                  "muon": (["MuonMuLL", "MuonBkgLL"], "isMuon"),
                  "globalpid": (["PIDe", "PIDK", "PIDp", "PIDmu", "ProbNNe", "ProbNNpi", "ProbNNk", "ProbNNp"], None)}
        for bname, (cols, flag) in blocks.items():
            ma = np.ones(ha.size, bool) if flag is None else np.asarray(ref[flag], bool)[ha]
            mb = np.ones(hb.size, bool) if flag is None else np.asarray(gens[0][flag], bool)[hb]
            if ma.sum() < 200 or mb.sum() < 200:
                continue
            xa = np.stack([np.asarray(ref[c])[ha][ma] for c in cols], 1)
            xb = np.stack([np.asarray(gens[0][c])[hb][mb] for c in cols], 1)
            cc = (cond[ha][ma], cond[hb][mb])
            rb = classifier_two_sample_auc(xa, xb, conditions=cc, seed=2, max_rows=a.c2st_rows)
            out[f"c2st_{bname}"] = {"auc": round(rb.auc, 4), "auc_error": round(rb.auc_error, 4), "rows": rb.n_real}
            if bname == "rich":
                out["c2st_rich_with_differences"] = c2st_with_differences(xa, xb, cols, conditions=cc, seed=2,
                                                                          max_rows=a.c2st_rows)
        # GlobalPID alone: the flash GlobalPID model on the *reference* sub-detector outputs and flags,
        # (inputs, outputs) against the reference (inputs, outputs)
        from algorithms.pid.flash import draw_normal

        from .flash_common import columns_for

        gx = columns_for(d, va)["gx"]
        gg = models["globalpid"].run(gx, draw_normal(np.uint64(0x5EED0077), np.zeros(va.size, np.int64),
                                                     va.astype(np.int64), len(GLOBALPID_OUTPUTS)))
        gcols = [c for c, _, _ in GLOBALPID_OUTPUTS if c != "ProbNNghost"]
        fin = dict(ref)
        fin.update({c: gg[:, j] for j, (c, _, _) in enumerate(GLOBALPID_OUTPUTS)})
        fin["ProbNNmu"] = np.where(ref["isMuon"], fin["ProbNNmu"], -1.0)
        icols = ["RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "MuonMuLL", "MuonBkgLL"] + list(BOOLS)
        rb = classifier_two_sample_auc(np.stack([np.asarray(ref[c], np.float64)[ha] for c in icols + gcols], 1),
                                       np.stack([np.asarray(fin[c], np.float64)[hb] for c in icols + gcols], 1),
                                       conditions=(cond[ha], cond[hb]), seed=2, max_rows=a.c2st_rows)
        out["c2st_globalpid_given_reference_inputs"] = {"auc": round(rb.auc, 4), "auc_error": round(rb.auc_error, 4),
                                                        "rows": rb.n_real}
    ks = {}
    for c in LAMARR_OUTPUTS:
        mr = ref[c] > -999
        mg = gens[0][c] > -999
        if mr.sum() > 10 and mg.sum() > 10:
            ks[c] = round(float(ks_distance(ref[c][mr], gens[0][c][mg], w[mr], w[mg])), 4)
    out["ks"] = ks
    # calibration of the classifier (probabilities vs the reference outcomes)
    from algorithms.pid.features import kinematic_features
    probs = models["ismuon"].run(kinematic_features(d["p"][va], d["eta"][va], d["nTracks"][va], d["charge"][va]))
    cal = {}
    bins = {"p_GeV": (d["p"][va] / 1000.0, np.asarray(P_EDGES_GEV)), "eta": (d["eta"][va], np.asarray(ETA_EDGES))}
    for name, pr in (("hasRich", probs[:, 3:].sum(1)), ("InMuonAcc", 1 - probs[:, 0] - probs[:, 3]),
                     ("isMuon", probs[:, 2] + probs[:, 5])):
        c = calibration_in_bins(pr, ref[name], bins, weights=w, min_count=200)
        cal[name] = {"max_abs_diff": round(c.max_abs_diff, 5), "max_abs_pull": round(c.max_abs_pull, 2),
                     "chi2": round(c.chi2, 1), "ndf": c.ndf, "overall": {k: round(v, 5) for k, v in c.overall.items()}}
    out["classifier_calibration"] = cal
    if a.muon_check_tracks > 0 and not weighted and not a.species_name:
        out["c2st_muon_fresh_teacher_rows"] = muon_fresh_check(models["muon"], s, a.muon_check_tracks, a.teacher_seed)
    out["flash_seconds_per_row_incl_python"] = round(t_flash / (va.size * a.replicas), 8)
    return out, rates


def c2st_with_differences(real, generated, names, conditions=None, seed=2, max_rows=30_000) -> dict:
    """Classifier two-sample AUC of ``real`` vs ``generated`` [N, k] with the k(k-1)/2 pairwise column
    differences appended.  The boosted trees cut along axes: a ridge of the reference along a difference
    (the teacher's no-ring ridges, e.g. DLLe - DLLp = const. for a track with no photon in the e and p
    windows) that a model spreads is nearly invisible in the columns themselves and sharp in their
    difference, so this test also sees errors of the joint structure."""
    from framework.validation import classifier_two_sample_auc

    k = real.shape[1]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    aug = [np.hstack([x, np.stack([x[:, i] - x[:, j] for i, j in pairs], 1)]) for x in (real, generated)]
    r = classifier_two_sample_auc(aug[0], aug[1], conditions=conditions, seed=seed, max_rows=max_rows)
    return {"auc": round(r.auc, 4), "auc_error": round(r.auc_error, 4), "rows": r.n_real,
            "columns": list(names) + [f"{names[i]} - {names[j]}" for i, j in pairs]}


def muon_fresh_check(model, s, n_tracks, seed) -> dict:
    """MUON block two-sample AUC on the isMuon rows of ``n_tracks`` fresh teacher tracks of species ``s``
    (teacher samples only): the held-out rows hold only 350-850 isMuon rows of e, pi, K, p (error
    0.02-0.03).  Row numbers from 3e12 + species * 1e10 on: disjoint from the sample (0 on), the ProbNN fit
    (1e12), the muon-enriched training rows (2e12), the RICH extra training rows (4e12) and the tests (< 1e10).  Flash and teacher on disjoint
    halves of the rows, as the joint test."""
    from algorithms.pid.features import kinematic_features
    from algorithms.pid.flash import draw_normal
    from framework.random import RandomStreams
    from framework.validation import classifier_two_sample_auc

    from .make_teacher_samples import SPECIES as WRITER_SPECIES, make_chunk

    key = RandomStreams(seed, 0, "PIDTeacher").key_for(0)
    fr = np.array([1.0 if x == s else 0.0 for x in WRITER_SPECIES])
    smp, o = make_chunk(3 * 10**12 + WRITER_SPECIES.index(s) * 10**10, int(n_tracks), fr, seed, key, probnn=False)
    m = np.asarray(o["isMuon"], bool)
    kin = kinematic_features(smp["p"][m], smp["eta"][m], smp["nTracks"][m], smp["charge"][m])
    ref = np.stack([np.asarray(o[c])[m] for c in ("MuonMuLL", "MuonBkgLL")], 1).astype(np.float64)
    n = kin.shape[0]
    g = model.run(kin, draw_normal(np.uint64(0x5EED0099), np.zeros(n, np.int64), np.arange(n, dtype=np.int64), 2))
    ha, hb = np.arange(0, n, 2), np.arange(1, n, 2)
    cond = np.stack([np.log(kin[:, 0]), kin[:, 1], kin[:, 2], kin[:, 3]], 1).astype(np.float64)
    r = classifier_two_sample_auc(ref[ha], np.asarray(g, np.float64)[hb], conditions=(cond[ha], cond[hb]), seed=2,
                                  max_rows=30_000)
    return {"auc": round(r.auc, 4), "auc_error": round(r.auc_error, 4), "rows": r.n_real, "teacher_tracks": int(n_tracks),
            "note": "isMuon rows of fresh teacher tracks (rows from 3e12 + species * 1e10)"}


# ----------------------------------------------------------------------------------------------
# cards
# ----------------------------------------------------------------------------------------------
def card_for(kind, s, path: Path, settings, info, validation, a, command):
    from .flash_common import onnx_n_inputs, sha256_of

    inputs, outputs = card_columns(kind, rich_ismuon=kind == "rich" and onnx_n_inputs(path) == 5)
    col = lambda cols: [{"name": n, "unit": u, "description": dsc} for n, u, dsc in cols]  # noqa: E731
    desc = {
        "ismuon": f"Joint probabilities of (hasRich, InMuonAcc, isMuon) of a long track of true species {s}; "
                  "isMuon is drawn from them (Lamarr's isMuon classifier, extended to the acceptances).",
        "rich": f"RICH delta log-likelihoods of a long {s} track with RICH information (hasRich).",
        "muon": f"Muon-system log-likelihoods of a long {s} track with isMuon.",
        "globalpid": f"Combined DLLs and ProbNN of a long {s} track (Lamarr's GlobalPID + GlobalMuonID in one model).",
    }[kind]
    card = {"name": path.stem, "version": 1, "kind": "classifier" if kind == "ismuon" else "generative",
            "conditions": CONDITIONS, "file": path.name, "sha256": sha256_of(path), "species": s, "model": kind,
            "description": desc, "inputs": col(inputs)}
    if NOISE_DIMS[kind]:
        card["noise"] = {"dim": NOISE_DIMS[kind], "distribution": "N(0,1)"}
    card["outputs"] = col(outputs)
    if "reused_training_block" in settings[kind]:   # a model not retrained (--kinds): its own training block
        card["training"] = settings[kind]["reused_training_block"]
    else:
        card["training"] = {"sample": sample_description(a.input), "provenance": PROVENANCE,
                            "license": "GPL-3.0-or-later",
                            "rows_train": info["rows_train"], "rows_validation": info["rows_validation"],
                            "weights": a.weight_branch or "none (unit weights)",
                            "negative_weight_fraction": info["negative_weight_fraction"],
                            "settings": settings[kind], "technique_choice": TECHNIQUE, "command": command}
    card["validation"] = validation
    card["limitations"] = [
        "Trained on the flashsim reference detector (teacher), not on LHCb data: it reproduces the teacher, whose "
        "known disagreements with public LHCb figures are listed in docs/pid_teacher.md.",
        "Per true species; tracks of other species get no PID. Long tracks only.",
        "Conditioned on (p, eta, nTracks, charge) only, as Lamarr: no dependence on phi or on the track's "
        "origin (the teacher's acceptances and decays in flight are averaged over them).",
        "nTracks outside the training range is extrapolated.",
    ]
    from .flash_common import write_card
    write_card(path.with_suffix(".yaml"), card)


def sample_description(path) -> str:
    """The input file and, for teacher samples, the command/seed stored in its ``provenance`` object."""
    try:
        import uproot

        with uproot.open(str(path)) as f:
            if "provenance" in f:
                prov = json.loads(str(f["provenance"]))
                return f"{Path(path).name}: {prov.get('command')} (seed {prov.get('seed')}; {prov.get('label')})"
    except Exception:  # noqa: BLE001 -- a description only
        pass
    return str(path)


TECHNIQUE = ("RICH (--rich-model ar; K and p since issue 6's eighth round, e and mu since the ninth, pi since the twelfth): autoregressive conditional histograms -- "
             "DLLK, DLLp - DLLK, DLLe, DLLmu in turn, each from 64 bins of its (momentum, eta) group's marginal CDF "
             "(0.11-sigma bins in the tails) with logits from an MLP of the kinematics and the values already "
             "generated, values from the group's quantile tables with the point masses exact, tables recalibrated "
             "after training -- because the flows' joint tails (the rows behind the K and p mis-ID rates) came out "
             "too wide while their marginals were exact. "
             "RICH (--rich-model flow, the default): a conditional normalising flow (affine couplings + a tie-preserving marginal quantile "
             "transform, which reproduces the point masses of the DLLs exactly and bounds the outputs to the training "
             "range; after training its tables are recalibrated per (momentum, eta) group on the flow's own latent "
             "marginals, so that the point-mass fractions, e.g. DLLp == DLLK below the Cherenkov thresholds, follow "
             "the sample's momentum dependence) -- exact likelihood training, stable on 2 CPU cores, and a few tens of kFLOP per row, against a "
             "GAN's adversarial tuning or a mixture density model's poor handling of the sharp Cherenkov-threshold "
             "structures. MUON: the (MuonMuLL, MuonBkgLL) pairs lie on a few 1D curves (both LLs are functions of one "
             "hit distance per number of stations with hits), where a 2D flow cannot put its mass; the curves are "
             "found in the training rows, and the model draws the curve (categorical) and the position along it "
             "(conditional histogram of the curve's marginal CDF), both from an MLP of the kinematics (the 2D flow "
             "is the fallback when the rows are not on curves); the MLP also sees p > 3, 6 and 10 GeV, where IsMuon's "
             "station requirements, hence the curves' weights, step (--muon-p-steps; issue 6, thirteenth round). GlobalPID: in the teacher the combined DLLs and ProbNN are deterministic functions of the "
             "sub-detector responses, so a flow is ill-posed; the model keeps the exact sub-detector sums, adds "
             "per-muon-state tables in log p and Gaussian corrections only where the training residual is not "
             "identically 0, and distils the ProbNN log-probabilities (softmax head when they sum to 1) with a "
             "width that can shrink to ~0 -- and keeps room for the genuine spread of real calibration data; the widths are "
             "scaled after training by the factor that best reproduces the training rows' cut rates (0 for the "
             "teacher's deterministic outputs would be exact; a fitted width also holds the mean's own error); the "
             "tracks without RICH information (~2 %, whose ProbNN are a different, simple function of the kinematics "
             "and the muon information) get their own small tanh head on top (--global-norich-hidden; issue 6, twelfth "
             "round). isMuon/hasRich/InMuonAcc: one 6-class classifier keeps their correlations; its MLP also sees "
             "p > 3, 6 and 10 GeV (--clf-p-steps; thirteenth round), so that isMuon can step there as IsMuon's "
             "requirements do, which a smooth function of log p spreads over the neighbouring momenta.")


# ----------------------------------------------------------------------------------------------
# benchmark
# ----------------------------------------------------------------------------------------------
def benchmark(n_tracks=100_000, pattern=None, repeats=3, species_mix=(0.02, 0.05, 0.75, 0.12, 0.06)) -> dict:
    """µs per long track of the whole FlashPID algorithm (``execute``: species lookup, all models,
    random draws, output collection) on one core, on a synthetic batch of ~``n_tracks`` long tracks
    with the teacher spectrum and a minimum-bias-like species mix.  Best of ``repeats``."""
    from types import SimpleNamespace

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from algorithms.pid.flash import DEFAULT_PATTERN, FlashPID
    from algorithms.pid.teacher.sampling import sample_ntracks_flashsim, sample_tracks
    from framework import Collection
    from framework.context import BatchContext
    from framework.models import ModelSvc

    n_ev = max(n_tracks // 50, 1)
    n = n_ev * 50
    rng = np.random.default_rng(7)
    abspdg = np.array([11, 13, 211, 321, 2212])[rng.choice(5, size=n, p=np.asarray(species_mix) / sum(species_mix))]
    s = sample_tracks(n, abspdg, seed=3)
    counts = np.full(n_ev, 50)
    parts = Collection.from_counts({"pid": s["pid"].astype(np.int32)}, counts)
    tracks = Collection.from_counts({"mc_index": np.tile(np.arange(50, dtype=np.int32), n_ev),
                                     "type": np.full(n, 3, np.int8), "tx": s["tx"], "ty": s["ty"], "p": s["p"],
                                     "charge": s["charge"].astype(np.int8)}, counts)
    # flashsim nTracks (median 22, the occupancy file), as the teacher samples
    nt = sample_ntracks_flashsim(rng.random(n_ev))[0]
    summary = Collection.from_counts({"nTracks": nt.astype(np.int32)}, np.ones(n_ev, np.int64))
    alg = FlashPID("FlashPID", ModelPattern=pattern or DEFAULT_PATTERN)
    alg._app = SimpleNamespace(model_svc=ModelSvc(threads=1, conditions_tag=CONDITIONS), msg_svc=None, conditions={})
    alg.initialize()
    ctx = BatchContext(np.arange(n_ev), run_number=1, seed=1).for_algorithm(alg.name)
    alg.execute(ctx, Tracks=tracks, Particles=parts, Summary=summary)   # warm-up (numba, sessions)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        alg.execute(ctx, Tracks=tracks, Particles=parts, Summary=summary)
        times.append(time.perf_counter() - t0)
    per = np.asarray(times) / n * 1e6
    per_model = {m.name: round(m.seconds / max(m.rows, 1) * 1e6, 3) for sp in alg.models.values() for m in sp.values()}
    return {"us_per_long_track_best": round(float(per.min()), 3), "us_per_long_track_median": round(float(np.median(per)), 3),
            "tracks": n, "onnx_threads": 1, "species_mix_e_mu_pi_K_p": list(species_mix),
            "onnx_us_per_row_by_model": per_model}


# ----------------------------------------------------------------------------------------------
def p_steps_phrase(steps, before, after):
    """The cards' words for an MLP's inputs with momentum steps (--clf-p-steps, --muon-p-steps); '' without."""
    if not steps:
        return ""
    return f"{before}of (log p, eta, log(1 + nTracks), charge) and p > {', '.join(f'{x:g}' for x in steps)} GeV{after}"


def gev_list(v):
    """'3,6,10' -> (3.0, 6.0, 10.0): momenta in GeV, increasing."""
    try:
        x = tuple(float(t) for t in v.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r}: expected comma-separated momenta in GeV, e.g. 3,6,10") from None
    if any(b <= a for a, b in zip(x, x[1:])) or any(t <= 0 for t in x):
        raise argparse.ArgumentTypeError(f"{v!r}: expected positive momenta in GeV in increasing order")
    return x


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", help="ROOT file of teacher samples or calibration samples")
    ap.add_argument("--tree", default="TeacherPID")
    ap.add_argument("--branches", default="", help="logical=branch,... (PIDCalib names), e.g. p=probe_P,eta=probe_ETA")
    ap.add_argument("--weight-branch", default=None, help="per-row weights (sWeights; negative allowed)")
    ap.add_argument("--species-name", default=None, help="single-species file: its species (e, mu, pi, K, p)")
    ap.add_argument("--species", default=",".join(SPECIES), help="species to train (comma separated)")
    ap.add_argument("--output-dir", default=str(REPO / "models"))
    ap.add_argument("--prefix", default=PREFIX)
    ap.add_argument("--max-train-rows", type=int, default=150_000)
    ap.add_argument("--max-validation-rows", type=int, default=50_000)
    ap.add_argument("--validation-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=2016)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds-clf", type=float, default=20)
    ap.add_argument("--seconds-rich", type=float, default=200)
    ap.add_argument("--seconds-muon", type=float, default=30)
    ap.add_argument("--seconds-global", type=float, default=90)
    ap.add_argument("--max-epochs", type=int, default=200,
                    help="epoch cap of every model (the budgets are wall time; the e and mu RICH flows of the shipped "
                         "models reached this cap before their 1700 s)")
    ap.add_argument("--clf-hidden", type=int, default=32)
    ap.add_argument("--clf-p-steps", type=gev_list, default=(),
                    help="classifier: momenta in GeV (comma-separated, e.g. 3,6,10: IsMuon's station requirements) "
                         "at which its classes may step; each adds the input feature p > step")
    ap.add_argument("--muon-p-steps", type=gev_list, default=(),
                    help="MUON model on curves: as --clf-p-steps, for its MLP (the curves' weights step with "
                         "IsMuon's station requirements; the 2D-flow fallback does not use them)")
    ap.add_argument("--rich-layers", type=int, default=6)
    ap.add_argument("--rich-hidden", type=int, default=32)
    ap.add_argument("--rich-embed", type=int, default=16)
    ap.add_argument("--rich-ismuon", action=argparse.BooleanOptionalAction, default=False,
                    help="condition the RICH flow on isMuon too (inputs RICH_INPUTS_WITH_ISMUON: hadrons that decayed "
                         "to a muon in flight have muon-like rings and are often isMuon); default: Lamarr's four "
                         "kinematic inputs")
    ap.add_argument("--rich-basis", choices=("dll", "pdiff"), default="dll",
                    help="RICH flow variables: 'dll' (DLLe, DLLmu, DLLK, DLLp - DLLK; all shipped models) or 'pdiff' "
                         "(DLLe - DLLp, DLLmu - DLLp, DLLp - DLLK, DLLK: the no-ring ridges become marginal features, "
                         "but DLLe and DLLmu become small differences of large variables; measured worse on the kaon "
                         "teacher sample, see flash_common.RICH_BASES).  Recorded in the ONNX metadata; "
                         "--recalibrate-only uses the model's own")
    ap.add_argument("--rich-model", choices=("flow", "ar"), default="flow",
                    help="RICH model: 'flow' (conditional normalising flow + per-group recalibrated quantile tables) or "
                         "'ar' (autoregressive conditional histograms on per-group quantile scales, "
                         "flash_common.build_ar_rich_model; issue 6, eighth round)")
    ap.add_argument("--ar-bins", type=int, default=64, help="RICH 'ar': bins per variable")
    ap.add_argument("--ar-hidden", type=int, default=64, help="RICH 'ar': hidden width of each variable's MLP")
    ap.add_argument("--muon-layers", type=int, default=4)
    ap.add_argument("--muon-hidden", type=int, default=24)
    ap.add_argument("--muon-embed", type=int, default=12)
    ap.add_argument("--muon-model", choices=("curves", "flow"), default="curves",
                    help="MUON model: 'curves' (the LL pairs on curves found in the data, a categorical curve x bin "
                         "and a position along the curve; falls back to the flow when the rows are not on curves) "
                         "or 'flow' (2D conditional flow, the previous model)")
    ap.add_argument("--muon-max-curves", type=int, default=12, help="curves: at most this many (fragments included)")
    ap.add_argument("--muon-curve-bins", type=int, default=0,
                    help="curves: bins of v per curve (0: rows/(curves*200) as a power of 2 in [8, 32])")
    ap.add_argument("--muon-curve-knots", type=int, default=1025, help="curves: table knots per curve")
    ap.add_argument("--muon-curve-hidden", type=int, default=32, help="curves: hidden width of the cell MLP")
    ap.add_argument("--global-hidden", type=int, default=48)
    ap.add_argument("--global-norich-hidden", type=int, default=0,
                    help="GlobalPID: width of the no-RICH head (its own tanh layer for the ProbNN of tracks without "
                         "RICH information; 0: none). With --init-state of a model without the head, only the head is "
                         "trained, on the rows without RICH, and the rest of the model is kept exactly")
    ap.add_argument("--global-norich-tracks", type=int, default=0,
                    help="GlobalPID no-RICH head trained alone: also the rows without RICH of this many fresh teacher "
                         "tracks (row numbers from 7e12 + species * 1e10)")
    ap.add_argument("--global-lr", type=float, default=3e-3)
    ap.add_argument("--global-batch", type=int, default=1024)
    ap.add_argument("--global-batch-max", type=int, default=0, help="GlobalPID: batch grows to this (0: fixed)")
    ap.add_argument("--global-balance", type=float, default=0.5,
                    help="GlobalPID: loss weight (frequency of the (hasRich, muon state) category)^-alpha (0: off)")
    ap.add_argument("--global-lbfgs-seconds", type=float, default=0.0,
                    help="GlobalPID: full-batch L-BFGS polish after AdamW (seconds)")
    ap.add_argument("--global-lbfgs-rows", type=int, default=60_000,
                    help="GlobalPID: training rows of the L-BFGS polish (a fixed random subset)")
    ap.add_argument("--device", default="cpu",
                    help="torch device of the GlobalPID training (e.g. cuda; the other models train on the CPU)")
    ap.add_argument("--tie-dequantisation", choices=("uniform", "gaussian"), default="uniform",
                    help="flows: training values inside a point mass (tie) are spread over the tie's Gaussian interval "
                         "uniformly in z ('uniform') or uniformly in its CDF interval, z = Phi^-1(u) ('gaussian': the "
                         "marginal stays exactly N(0,1), no flat block with sharp edges)")
    ap.add_argument("--flow-lr", type=float, default=2e-3)
    ap.add_argument("--flow-batch-max", type=int, default=0,
                    help="RICH/MUON flows: the batch grows from 1024 to this over the budget (0: fixed; growth to 4096 "
                         "gave a worse validation NLL at equal wall time on pi: 0.69 vs 0.63 after 240 s)")
    ap.add_argument("--global-table-knots", type=int, default=512,
                    help="GlobalPID: knots in log p of the per-muon-state tables of the combined DLLs")
    ap.add_argument("--kinds", default=",".join(MODEL_KINDS),
                    help="models to (re)train; the others are read from --output-dir and kept (validation and "
                         "cards are redone for all)")
    ap.add_argument("--logit-weight", type=float, default=2.0,
                    help="GlobalPID: weight of the ProbNN logit likelihood (x20 for the cross-entropy)")
    ap.add_argument("--muon-extra-tracks", type=int, default=0,
                    help="teacher samples only: simulate this many extra tracks per species (not mu) and add "
                         "their isMuon rows to the MUON flow's training rows")
    ap.add_argument("--ismuon-extra-tracks", type=int, default=0,
                    help="classifier: simulate this many fresh teacher tracks of the species (row numbers from "
                         "6e12 + species * 1e10) and add their (hasRich, InMuonAcc, isMuon) classes to its training "
                         "rows (teacher samples only)")
    ap.add_argument("--global-extra-tracks", type=int, default=0,
                    help="GlobalPID: simulate this many fresh teacher tracks of the species (row numbers from 5e12 + "
                         "species * 1e10) and add them to its training rows (teacher samples only)")
    ap.add_argument("--rich-extra-tracks", type=int, default=0,
                    help="teacher samples only: simulate this many extra tracks of each species trained (row numbers "
                         "from 4e12 + species * 1e10) and add their hasRich rows to the RICH flow's training and "
                         "recalibration rows (the validation keeps the held-out rows of the sample)")
    ap.add_argument("--teacher-seed", type=int, default=20240607,
                    help="seed of the teacher for --muon-extra-tracks / --rich-extra-tracks")
    ap.add_argument("--recalibration-groups", type=int, default=24,
                    help="RICH flow: post-training recalibration of its quantile tables in about this many momentum "
                         "groups (flash_common.recalibrate_flow_onnx; 0: off)")
    ap.add_argument("--recalibration-eta-groups", type=int, default=3,
                    help="RICH recalibration: the momentum groups crossed with this many equal-weight eta groups")
    ap.add_argument("--recalibration-knots", type=int, default=241, help="RICH recalibration: knots per table")
    ap.add_argument("--recalibration-draws", type=int, default=8,
                    help="RICH recalibration: flow noise draws per training row")
    ap.add_argument("--recalibrate-only", action="store_true",
                    help="train nothing: recalibrate the RICH flows in --output-dir (from their latent, so a "
                         "recalibrated model can be recalibrated again) and choose the GlobalPID noise scale again "
                         "(--recalibrate-kinds), then validate and rewrite the cards")
    ap.add_argument("--recalibrate-kinds", default="rich,globalpid",
                    help="--recalibrate-only: what to redo: 'rich' (the RICH flows' quantile tables), 'globalpid' "
                         "(the GlobalPID noise scale, calibrate_globalpid_noise), or both")
    ap.add_argument("--global-noise-scale", default="auto",
                    help="GlobalPID: factor on its noise widths in the exported graph: 'auto' (chosen on the training "
                         "rows per output group by the chi2 of the cut rates, calibrate_globalpid_noise) or a number "
                         "(1: the widths as trained)")
    ap.add_argument("--validate-only", action="store_true",
                    help="train nothing: validate the models in --output-dir and rewrite the validation blocks of "
                         "their cards (training blocks kept)")
    ap.add_argument("--muon-check-tracks", type=int, default=0,
                    help="teacher samples: also measure the MUON block AUC on the isMuon rows of this many fresh "
                         "teacher tracks of the species (card: c2st_muon_fresh_teacher_rows)")
    ap.add_argument("--skip-validation", action="store_true",
                    help="train and write the models with cards marked 'validation pending' (warm-start pre-training only)")
    ap.add_argument("--save-state", default=None, help="write the torch parameters of every trained model here")
    ap.add_argument("--init-state", default=None,
                    help="warm start: initialise each model from {kind}_{species}.pt in this folder when present "
                         "(e.g. the --save-state of a training on an earlier teacher sample)")
    ap.add_argument("--init-onnx", default=None,
                    help="warm start from exported models: initialise each model from the parameters stored in "
                         "{prefix}_{kind}_{species}.onnx in this folder when present (e.g. models/, to train the "
                         "shipped models on without their --save-state); ignored with --init-state")
    ap.add_argument("--init-widen", action="store_true",
                    help="with --init-state/--init-onnx: a model with wider hidden layers than the earlier one (e.g. a "
                         "larger --ar-hidden) starts from the earlier one's function: its parameters in the leading "
                         "block, the new units' outgoing weights zero")
    ap.add_argument("--replicas", type=int, default=3, help="flash replicas per validation row")
    ap.add_argument("--validation-streams", type=int, default=5,
                    help="score the (bin, cut) criteria again with this many sets of independent noise streams "
                         "(flash replicas and the teacher baseline; the first set is the card's own): the mean "
                         "and spread of the bins passed (1: the first set only)")
    ap.add_argument("--c2st-rows", type=int, default=30_000)
    ap.add_argument("--bench", action="store_true", help="measure µs per long track of FlashPID and exit")
    ap.add_argument("--bench-tracks", type=int, default=100_000)
    ap.add_argument("--report", default=None, help="also write the validation tables as JSON here")
    return ap.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.bench:
        print(json.dumps(benchmark(a.bench_tracks), indent=1))
        return 0
    if not a.input:
        raise SystemExit("--input FILE.root is required (make one with python -m models.training.pid.make_teacher_samples)")
    from .flash_common import load_sample

    branches = dict(kv.split("=", 1) for kv in a.branches.split(",") if kv) if a.branches else None
    species = [x for x in a.species.split(",") if x]
    for s in species + ([a.species_name] if a.species_name else []):
        if s not in SPECIES:
            raise SystemExit(f"unknown species {s!r}; expected one of {SPECIES}")
    if a.species_name:
        species = [a.species_name]
    bad = [k for k in a.kinds.split(",") if k not in MODEL_KINDS]
    if bad or not a.kinds:
        raise SystemExit(f"--kinds: unknown model kind(s) {bad}; expected a comma-separated subset of {MODEL_KINDS}")
    bad = [k for k in a.recalibrate_kinds.split(",") if k not in ("rich", "globalpid")]
    if bad or not a.recalibrate_kinds:
        raise SystemExit(f"--recalibrate-kinds: unknown kind(s) {bad}; expected a comma-separated subset of rich,globalpid")
    if a.global_noise_scale != "auto":
        try:
            if float(a.global_noise_scale) < 0:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--global-noise-scale: expected 'auto' or a number >= 0, got {a.global_noise_scale!r}")
    d = load_sample(a.input, a.tree, branches, a.weight_branch, a.species_name)
    out_dir = Path(a.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m models.training.pid.train_flash_pid " + " ".join(argv)
    a.command_line = command
    report = {}
    for s in species:
        t0 = time.time()
        log(f"== species {s}")
        paths, settings, info, va = train_species(d, s, a, out_dir)
        for kind in MODEL_KINDS:   # preliminary cards (the model service needs them to load the files)
            card_for(kind, s, paths[kind], settings, info, {"pending": True}, a, command)
        if a.skip_validation:   # e.g. a warm-start pre-training (--save-state): cards say so
            log(f"   {s}: trained, validation skipped ({time.time() - t0:.0f}s)")
            continue
        models = load_models(paths)
        validation, rates = validate_species(models, d, va, s, a)
        validation["training_seconds_species"] = round(time.time() - t0, 1)
        for kind in MODEL_KINDS:
            card_for(kind, s, paths[kind], settings, info, validation, a, command)
        report[s] = {"validation": validation, "rates": rates}
        v = validation
        tb = v.get("teacher_baseline", {})
        ms = lambda x: (f", mean {x['mean']} +- {x['std']} over {x['stream_sets']} stream sets"  # noqa: E731
                        if x else "")
        log(f"   {s}: c2st {v.get('c2st')}  bins pass {v['rates_all_bins_pass']}/{v['rates_all_bins']}"
            + ms(v.get("rates_all_bins_pass_streams"))
            + (f" (the teacher itself: {tb['rates_all_bins_pass']}{ms(tb.get('rates_all_bins_pass_streams'))}; "
               f"given the flash's inputs: {tb['given_inputs']['rates_all_bins_pass']}"
               f"{ms(tb['given_inputs'].get('rates_all_bins_pass_streams'))})" if tb.get("available") else "")
            + f"  ({time.time() - t0:.0f}s)")
        log("     c2st blocks: " + "  ".join(f"{k[5:]} {v[k]['auc']}" for k in v if k.startswith("c2st_")
                                               and isinstance(v[k], dict) and "auc" in v[k]))
        for name, r in v["rich_point_masses"].items():
            log(f"     {name:20s} ref {r['reference']:.4f} flash {r['flash']:.4f}  p bins {r['bins_pass']}/{r['bins']}")
        for name, r in v["rates"].items():
            log(f"     {name:14s} ref {r['reference']:.4f} flash {r['flash']:.4f}  bins {r['bins_pass']}/{r['bins']}  "
                f"max|diff| {r['max_abs_diff']:.4f} chi2 {r['chi2']}")
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
