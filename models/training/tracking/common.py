"""Shared helpers of the tracking-model training scripts (PyTorch, CPU; training only).

* :func:`load_acceptance_sample` reads the ``Acceptance`` tree of the shared LHCb 2016 MagUp
  sample and computes the model inputs with the *runtime* feature function
  (:func:`algorithms.tracking.features.acceptance_features`).
* :func:`split_indices` -- fixed-seed held-out split.
* :class:`Preprocess` -- robust standard scaling followed by asinh compression, as a torch module
  that is exported *inside* the ONNX graph (raw physical features go in).
* :func:`make_mlp`, :func:`train_soft` -- small MLP trained on soft labels (probabilities).
* :func:`export_onnx`, :func:`measure_latency`, :func:`write_card`.

torch is imported lazily by the functions that need it, so validation helpers can be used
without it.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from algorithms.tracking.features import (
    FEATURE_DESCRIPTIONS,
    FEATURE_NAMES,
    FEATURE_UNITS,
    acceptance_features,
    in_domain,
)

REPO = Path(__file__).resolve().parents[3]
MODELS_DIR = REPO / "models"
DEFAULT_INPUT = os.environ.get("FLASHSIM_SHARED", str(REPO / ".." / "shared")) + "/data/lhcb_trk2016_samples.root"

PROVENANCE = (
    "samples of LHCb's public 2016 MagUp Lamarr tracking parametrisation (lhcb.trk.2016MU.20230128, "
    "GPL-3, (c) CERN for the LHCb collaboration) evaluated on Pythia8 inputs (pp, 13 TeV, 70 % "
    "SoftQCD:nonDiffractive + 30 % HardQCD:hardbbbar); not LHCb data and not LHCb detailed simulation "
    "itself, but a re-learning of LHCb's own parametrisation of it")

EFF_CLASSES = ["eff_not_recoed", "eff_long", "eff_upstream", "eff_downstream"]
TRACK_TYPE_OF_CLASS = [0, 3, 4, 5]


def card_inputs():
    return [{"name": n, "unit": u, "description": d}
            for n, u, d in zip(FEATURE_NAMES, FEATURE_UNITS, FEATURE_DESCRIPTIONS)]


def load_acceptance_sample(path: str, max_rows: int | None = None) -> dict:
    """Columns of the ``Acceptance`` tree + ``features`` [N, 12] (runtime feature code) and
    ``species`` (0 e, 1 mu, 2 hadron).  Rows outside the model domain are dropped."""
    import uproot

    with uproot.open(path) as f:
        tree = f["Acceptance"]
        a = tree.arrays(library="np", entry_stop=max_rows)
    feats = acceptance_features(a["pid"], a["mc_x"], a["mc_y"], a["mc_z"], a["mc_px"], a["mc_py"], a["mc_pz"])
    ok = in_domain(feats, a["mc_pz"])
    out = {k: v[ok] for k, v in a.items()}
    out["features"] = feats[ok]
    f = out["features"]
    out["species"] = np.where(f[:, 8] > 0, 0, np.where(f[:, 9] > 0, 1, 2)).astype(np.int8)
    return out


def split_indices(n: int, validation_fraction: float = 0.2, seed: int = 20160):
    """(train, validation) row indices: a fixed-seed random permutation."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def robust_scaling(features: np.ndarray, lo: float = 0.005, hi: float = 0.995):
    """(center, scale) per column: mean and std of the values inside the [lo, hi] quantiles
    (heavy tails -- far decay vertices, tiny pz -- do not inflate the scale); scale >= 1e-6."""
    center = np.empty(features.shape[1])
    scale = np.empty(features.shape[1])
    for j in range(features.shape[1]):
        v = features[:, j].astype(np.float64)
        a, b = np.quantile(v, [lo, hi])
        core = v[(v >= a) & (v <= b)]
        if core.size < 10:
            core = v
        center[j] = core.mean()
        scale[j] = max(core.std(), 1e-6)
    return center.astype(np.float32), scale.astype(np.float32)


def make_modules():
    """Torch module classes (defined lazily to keep torch optional at import time)."""
    import torch
    from torch import nn

    class Preprocess(nn.Module):
        """u = asinh((x - center) / scale): linear for |u| << 1, logarithmic in the far tails."""

        def __init__(self, center, scale):
            super().__init__()
            self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32))
            self.register_buffer("inv_scale", torch.as_tensor(1.0 / np.asarray(scale), dtype=torch.float32))

        def forward(self, x):
            u = (x - self.center) * self.inv_scale
            a = torch.abs(u)
            # asinh written with exportable ops: sign(u) * log(|u| + sqrt(u^2 + 1))
            return torch.sign(u) * torch.log(a + torch.sqrt(a * a + 1.0))

    class MLP(nn.Module):
        def __init__(self, center, scale, n_in, hidden, n_out, head):
            super().__init__()
            self.pre = Preprocess(center, scale)
            layers = []
            prev = n_in
            for h in hidden:
                layers += [nn.Linear(prev, h), nn.SiLU()]
                prev = h
            layers.append(nn.Linear(prev, n_out))
            self.net = nn.Sequential(*layers)
            self.head = head

        def logits(self, x):
            return self.net(self.pre(x))

        def forward(self, x):
            z = self.logits(x)
            if self.head == "sigmoid":
                return torch.sigmoid(z)
            return torch.softmax(z, dim=1)

    return Preprocess, MLP


def train_soft(model, x_train, t_train, w_train=None, *, epochs=20, batch=2048, lr=3e-3, seed=0,
               log_every=1, x_val=None, t_val=None, w_val=None, time_limit_s=480.0):
    """Minimise the soft-label cross-entropy (sigmoid head: binary, softmax head: categorical).

    Adam with a cosine learning-rate decay; optional per-row weights.  Stops early when the
    wall time exceeds ``time_limit_s``.  Returns a dict of training figures.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    x = torch.as_tensor(x_train, dtype=torch.float32)
    t = torch.as_tensor(t_train, dtype=torch.float32)
    if t.ndim == 1:
        t = t[:, None]
    w = None if w_train is None else torch.as_tensor(w_train, dtype=torch.float32)
    n = x.shape[0]
    steps_per_epoch = (n + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(xb, tb, wb):
        z = model.logits(xb)
        if model.head == "sigmoid":
            per_row = F.binary_cross_entropy_with_logits(z, tb, reduction="none").sum(1)
        else:
            per_row = -(tb * F.log_softmax(z, dim=1)).sum(1)
        if wb is None:
            return per_row.mean()
        return (per_row * wb).sum() / wb.sum()

    history = []
    t0 = time.perf_counter()
    done_epochs = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            loss = loss_fn(x[idx], t[idx], None if w is None else w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        done_epochs += 1
        entry = {"epoch": epoch, "train_loss": total / n, "elapsed_s": time.perf_counter() - t0}
        if x_val is not None:
            model.eval()
            with torch.no_grad():
                xv = torch.as_tensor(x_val, dtype=torch.float32)
                tv = torch.as_tensor(t_val, dtype=torch.float32)
                tv = tv[:, None] if tv.ndim == 1 else tv
                wv = None if w_val is None else torch.as_tensor(w_val, dtype=torch.float32)
                entry["val_loss"] = float(loss_fn(xv, tv, wv))
        history.append(entry)
        if log_every and epoch % log_every == 0:
            print(f"  epoch {epoch:3d}  " + "  ".join(f"{k}={v:.5f}" for k, v in entry.items() if k != "epoch"),
                  flush=True)
        if time.perf_counter() - t0 > time_limit_s:
            print(f"  time limit {time_limit_s:.0f} s reached after {epoch + 1} epochs", flush=True)
            break
    model.eval()
    return {"epochs_run": done_epochs, "train_seconds": round(time.perf_counter() - t0, 1),
            "final_train_loss": history[-1]["train_loss"], "final_val_loss": history[-1].get("val_loss")}


def export_onnx(model, path: Path, n_in: int, opset: int = 17):
    """Export with input ``x`` [N, n_in] and output ``y`` (dynamic N)."""
    import warnings

    import torch

    model.eval()
    dummy = torch.zeros(16, n_in, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=opset, dynamo=False)
    return path


def onnx_predict(path: Path, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([sess.run(["y"], {"x": x[i:i + chunk]})[0] for i in range(0, len(x), chunk)])


def measure_latency(path: Path, n_in: int, batch: int = 10_000, repeats: int = 20, x=None) -> float:
    """Best-of-``repeats`` onnxruntime time per row [µs], 1 thread, batch ``batch``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    if x is None:
        x = np.random.default_rng(0).normal(size=(batch, n_in)).astype(np.float32)
    x = np.ascontiguousarray(x[:batch], dtype=np.float32)
    sess.run(["y"], {"x": x})
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(["y"], {"x": x})
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0] * 1e6


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def environment() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": str(torch.__version__), "numpy": np.__version__,
            "platform": platform.platform()}


def write_card(path: Path, card: dict):
    """Write a YAML model card (keys in insertion order)."""
    path.write_text(yaml.safe_dump(card, sort_keys=False, width=110, allow_unicode=True))


def update_card_validation(onnx_path: Path, validation: dict):
    """Replace the ``validation`` section of an existing card (model file unchanged)."""
    card_path = Path(onnx_path).with_suffix(".yaml")
    card = yaml.safe_load(card_path.read_text())
    if card.get("sha256") != sha256_file(onnx_path):
        raise RuntimeError(f"{card_path}: sha256 does not match {onnx_path}; retrain instead of revalidating")
    card["validation"] = validation
    write_card(card_path, card)


def log10p_eta_bins(features: np.ndarray) -> dict:
    """Standard (log10 p, eta) binning used in the calibration tables of the cards."""
    return {
        "log10_p": (features[:, 3], np.array([0.0, 3.0, 3.3, 3.6, 4.0, 4.4, 4.8, 5.3, 7.0])),
        "eta": (features[:, 6], np.array([0.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 15.0])),
    }


SPECIES_EDGES = np.array([-0.5, 0.5, 1.5, 2.5])


def classifier_arg_parser(description: str):
    """Command-line options shared by the acceptance and efficiency training scripts."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--input", default=DEFAULT_INPUT)
    ap.add_argument("--output-dir", default=str(MODELS_DIR))
    ap.add_argument("--max-rows", type=int, default=None, help="read only the first N rows")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--hidden", default="64,64,64")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--species-weights", default="4,10,1",
                    help="training weights of e, mu, hadrons (rare species up-weighted for per-species calibration)")
    ap.add_argument("--validate-only", action="store_true",
                    help="do not train: recompute the validation section of the existing model's card")
    ap.add_argument("--time-limit", type=float, default=480.0, help="training wall-time limit [s]")
    return ap


def classifier_command(module: str, args) -> str:
    """The command line that retrains a classifier with these settings (for its model card)."""
    return (f"python -m {module} --input ../shared/data/lhcb_trk2016_samples.root --hidden {args.hidden} "
            f"--epochs {args.epochs} --batch {args.batch} --lr {args.lr} --seed {args.seed} "
            f"--species-weights {args.species_weights}")
