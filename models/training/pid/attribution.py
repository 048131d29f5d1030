"""Which flash PID model a species' failing (bin, cut) pairs come from.

    # repository root; a teacher sample (make_teacher_samples) and the models to judge:
    python -m models.training.pid.attribution --input /tmp/teacher.root --species K,p [--model-dir models]

The validation's score (``train_flash_pid.rate_table``: efficiencies and mis-ID rates in (p, eta,
nTracks) bins of the held-out rows against the reference) is computed for a chain of stages, each
replacing one more of the teacher's outputs by a flash model's, on the same held-out rows and with
the same noise streams:

    teacher             the teacher on the rows' own tracks, fresh random streams (validation's
                        ``teacher_baseline``)
    teacher|inputs      the same with the tracks' hidden variables redrawn: a perfect flash model
    globalpid           the flash GlobalPID model on a teacher replica's flags, RICH and MUON outputs
    +rich               and the flash RICH model's DLLs (on the teacher replica's flags)
    +muon               and the flash MUON model's likelihoods
    flash               and the flash isMuon classifier's flags: the validation's own flash figure

Each step's increase of the failing pairs and of the chi2 is what that model adds.  The flags step
is to be read net of ``teacher|inputs`` minus ``teacher``: the teacher replicas share the reference's
flags, which no model of (p, eta, nTracks, charge) can.  The failing pairs are also split by the
bin's kind (efficiency, mis-ID) and by the direction of the model's difference (high, low).  Means
over ``--sets`` sets of ``--replicas`` noise streams (one set cannot resolve a few pairs).  Teacher
samples only.

The held-out rows are the validation's (50k per species), unless ``--validation-fraction`` and
``--max-validation-rows`` ask for others.  On a second teacher sample that no model was trained on
(``make_teacher_samples --seed`` another seed), e.g. ``--validation-fraction 0.99 --max-validation-rows
200000`` gives 4x the rows: the tolerances halve, and model errors that the validation's rows cannot
resolve show (issue 6, twelfth round: the GlobalPID models' ProbNN of tracks without RICH).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from algorithms.pid.features import MODEL_KINDS, SPECIES

from .train_flash_pid import (TeacherReplicas, flash_on_rows, load_models, ntracks_edges, parse_args as train_args,
                              rate_table, teacher_on_rows, training_and_held_out_rows)

STAGES = ("teacher", "teacher|inputs", "globalpid", "+rich", "+muon", "flash")
#: teacher outputs kept by each flash stage (the rest comes from the flash models)
KEPT = {"globalpid": ("flags", "rich", "muon"), "+rich": ("flags", "muon"), "+muon": ("flags",), "flash": ()}


def teacher_stage_outputs(t: dict) -> dict:
    """A teacher replica's outputs (:func:`teacher_on_rows`) as ``flash_pid_response(given=)`` stages."""
    return {"flags": (t["hasRich"], t["InMuonAcc"], t["isMuon"]),
            "rich": np.stack([t[c] for c in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")], 1),
            "muon": np.stack([t["MuonMuLL"], t["MuonBkgLL"]], 1)}


def attribution(models, d, va, s, path, replicas=3, sets=5) -> dict:
    """Per stage (:data:`STAGES`): failing (bin, cut) pairs and chi2, per cut and in all, means over
    ``sets``; stage k's replica r of set j uses the teacher stream and flash noise j * replicas + r."""
    si = SPECIES.index(s)
    ref = teacher_on_rows(d, va)
    kin = np.stack([d["p"][va], d["eta"][va], d["nTracks"][va]], 1).astype(np.float64)
    w = d["weight"][va]
    nt = ntracks_edges(d)
    teacher = TeacherReplicas(path, va, ref)
    if teacher.why:
        raise SystemExit(f"attribution: {teacher.why}")
    tables = {k: [] for k in STAGES}
    for j in range(sets):
        ids = [j * replicas + r for r in range(replicas)]
        reps = [teacher.run(i) for i in ids]
        tables["teacher"].append(rate_table(ref, reps, kin, w, nt))
        tables["teacher|inputs"].append(rate_table(ref, [teacher.run(i, hidden_stream=i + 1) for i in ids], kin, w, nt))
        staged = [teacher_stage_outputs(t) for t in reps]
        for stage, kept in KEPT.items():
            gens = [flash_on_rows(models, si, d, va, replica=i, given={k: g[k] for k in kept} or None)
                    for i, g in zip(ids, staged)]
            tables[stage].append(rate_table(ref, gens, kin, w, nt))
    out = {"species": s, "rows": int(va.size), "sets": sets, "replicas": replicas, "stages": {}}
    for stage, tl in tables.items():
        per_cut = {c: {"fails": round(float(np.mean([t[c]["bins"] - t[c]["bins_pass"] for t in tl])), 2),
                       "chi2": round(float(np.mean([t[c]["chi2"] for t in tl])), 1)} for c in tl[0]}
        out["stages"][stage] = {"fails": round(sum(v["fails"] for v in per_cut.values()), 2),
                                "chi2": round(sum(v["chi2"] for v in per_cut.values()), 1),
                                "bins": int(sum(v["bins"] for v in tl[0].values())),
                                "fails_by_direction": fails_by_direction(tl), "per_cut": per_cut}
    return out


def fails_by_direction(tables) -> dict:
    """Failing pairs by the bin's kind (efficiency, mis-ID) and the sign of model minus reference, means
    over the sets.  A perfect model's mis-ID failures lean high too: a reference rate that fluctuates low
    has the smaller tolerance (10 % of it, and its own binomial error)."""
    n = {f"{k}_{d}": 0.0 for k in ("eff", "misid") for d in ("high", "low")}
    for t in tables:
        for v in t.values():
            for b in v["rows"]:
                if not b["pass"]:
                    n[f"{b['kind']}_{'high' if b['diff'] > 0 else 'low'}"] += 1.0 / len(tables)
    return {k: round(v, 2) for k, v in n.items()}


def format_table(res: dict) -> str:
    st = res["stages"]
    lines = [f"{res['species']}: {res['rows']} held-out rows, means over {res['sets']} sets of {res['replicas']} "
             "replicas; chi2 (failing pairs) per cut",
             f"{'cut':14s}" + "".join(f"{k:>17s}" for k in st)]
    for c in st["teacher"]["per_cut"]:
        lines.append(f"{c:14s}" + "".join(f"{v['per_cut'][c]['chi2']:10.1f} ({v['per_cut'][c]['fails']:4.1f})"
                                            for v in st.values()))
    lines.append(f"{'all':14s}" + "".join(f"{v['chi2']:10.1f} ({v['fails']:4.1f})" for v in st.values()))
    lines.append(f"{'mis-ID hi/lo':14s}" + "".join(f"{v['fails_by_direction']['misid_high']:10.1f} / "
                                                  f"{v['fails_by_direction']['misid_low']:4.1f}" for v in st.values()))
    lines.append(f"{'eff hi/lo':14s}" + "".join(f"{v['fails_by_direction']['eff_high']:10.1f} / "
                                               f"{v['fails_by_direction']['eff_low']:4.1f}" for v in st.values()))
    f = {k: v["fails"] for k, v in st.items()}
    lines.append(f"  added failing pairs: GlobalPID {f['globalpid'] - f['teacher']:+.1f}, RICH "
                 f"{f['+rich'] - f['globalpid']:+.1f}, MUON {f['+muon'] - f['+rich']:+.1f}, isMuon/flags "
                 f"{f['flash'] - f['+muon']:+.1f} (of which a perfect model's: "
                 f"{f['teacher|inputs'] - f['teacher']:+.1f}); flash {f['flash']:.1f} vs perfect "
                 f"{f['teacher|inputs']:.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="teacher sample (make_teacher_samples)")
    ap.add_argument("--species", default=",".join(SPECIES))
    ap.add_argument("--model-dir", default=str(Path(__file__).resolve().parents[3] / "models"))
    ap.add_argument("--prefix", default="pid2016")
    ap.add_argument("--sets", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--report", default=None, help="write the figures as JSON")
    ap.add_argument("--validation-fraction", type=float, default=None,
                    help="held-out fraction of the sample (default: the validation's). With a second teacher sample "
                         "that no model was trained on, e.g. 0.99 and --max-validation-rows 200000: 4x the "
                         "validation's rows, so that model errors below its resolution show")
    ap.add_argument("--max-validation-rows", type=int, default=None, help="held-out rows per species (default: the "
                                                                          "validation's)")
    a = ap.parse_args(argv)
    from .flash_common import load_sample

    bad = [s for s in a.species.split(",") if s not in SPECIES]
    if bad:
        raise SystemExit(f"--species: unknown {bad}; expected a comma-separated subset of {list(SPECIES)}")
    # the validation's held-out rows (its defaults), or as many as asked for
    rows_a = train_args(["--input", a.input]
                        + (["--validation-fraction", str(a.validation_fraction)]
                           if a.validation_fraction is not None else [])
                        + (["--max-validation-rows", str(a.max_validation_rows)]
                           if a.max_validation_rows is not None else []))
    d = load_sample(a.input)
    report = {}
    for s in a.species.split(","):
        paths = {k: Path(a.model_dir) / f"{a.prefix}_{k}_{s}.onnx" for k in MODEL_KINDS}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise SystemExit(f"attribution: model files missing: {missing}")
        _, va = training_and_held_out_rows(d, SPECIES.index(s), rows_a)
        report[s] = attribution(load_models(paths), d, va, s, a.input, a.replicas, a.sets)
        print(format_table(report[s]), flush=True)
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
