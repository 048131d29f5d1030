"""ProbNN of the reference detector (teacher): a small MLP on the teacher's own features.

Trained at sample-making time (``python -m models.training.pid.make_teacher_samples --train-probnn``)
with scikit-learn on equal numbers of e, mu, pi, K, p (flat priors); the weights are stored as JSON
next to this module and evaluated here in numpy (no training library at run time).  ProbNNghost is
identically 0: flashsim generates no ghost tracks.  Reference detector (teacher), not LHCb data.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["PROBNN_FEATURES", "PROBNN_CLASSES", "WEIGHTS_FILE", "probnn_features", "ProbNN", "train_probnn"]

WEIGHTS_FILE = Path(__file__).with_name("probnn_weights.json")
PROBNN_CLASSES = ("e", "mu", "pi", "K", "p")
PROBNN_FEATURES = ("slog_RichDLLe", "slog_RichDLLmu", "slog_RichDLLK", "slog_RichDLLp", "hasRich",
                   "isMuon", "slog_muonDLL", "log_p_GeV", "eta", "nTracks_over_100")


def _slog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def probnn_features(resp, p, eta, ntracks) -> np.ndarray:
    """[N, 10] features in PROBNN_FEATURES order (DLLs of tracks without RICH set to 0)."""
    has = np.asarray(resp["hasRich"], dtype=bool)
    cols = [_slog(np.where(has, resp[c], 0.0)) for c in ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp")]
    n = has.shape[0]
    cols += [has.astype(np.float64), np.asarray(resp["isMuon"], dtype=np.float64), _slog(resp["muonDLL"]),
             np.log(np.asarray(p, dtype=np.float64) / 1000.0),
             np.broadcast_to(np.asarray(eta, dtype=np.float64), (n,)),
             np.broadcast_to(np.asarray(ntracks, dtype=np.float64), (n,)) / 100.0]
    return np.stack(cols, axis=1)


class ProbNN:
    """One-hidden-layer tanh MLP with softmax output, numpy forward pass."""

    _default = None

    def __init__(self, params: dict):
        self.params = params
        self.mean = np.asarray(params["mean"], float)
        self.scale = np.asarray(params["scale"], float)
        self.layers = [(np.asarray(W, float), np.asarray(b, float)) for W, b in params["layers"]]
        if tuple(params["features"]) != PROBNN_FEATURES or tuple(params["classes"]) != PROBNN_CLASSES:
            raise ValueError("ProbNN weights: features/classes do not match this code version")

    @classmethod
    def load(cls, path=WEIGHTS_FILE):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no ProbNN weights; run python -m models.training.pid.make_teacher_samples --train-probnn")
        return cls(json.loads(path.read_text()))

    @classmethod
    def default(cls):
        if cls._default is None:
            cls._default = cls.load()
        return cls._default

    def predict(self, x) -> np.ndarray:
        h = (np.asarray(x, float) - self.mean) / self.scale
        for i, (W, b) in enumerate(self.layers):
            h = h @ W + b
            if i < len(self.layers) - 1:
                h = np.tanh(h)
        h = h - h.max(axis=1, keepdims=True)
        e = np.exp(h)
        return e / e.sum(axis=1, keepdims=True)


def train_probnn(features, labels, hidden=(32,), seed=0, max_iter=200) -> dict:
    """Fit the MLP (scikit-learn, training only) and return the JSON-able parameter dict."""
    from sklearn.neural_network import MLPClassifier

    x = np.asarray(features, float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="tanh", random_state=seed, max_iter=max_iter,
                        early_stopping=True, validation_fraction=0.1, n_iter_no_change=10)
    clf.fit((x - mean) / scale, labels)
    if list(clf.classes_) != list(range(len(PROBNN_CLASSES))):
        raise ValueError("train_probnn: every class 0..4 must be present")
    return {"features": list(PROBNN_FEATURES), "classes": list(PROBNN_CLASSES), "mean": mean.tolist(),
            "scale": scale.tolist(), "layers": [[W.tolist(), b.tolist()] for W, b in zip(clf.coefs_, clf.intercepts_)],
            "activation": "tanh", "n_iter": int(clf.n_iter_), "validation_score": float(clf.best_validation_score_)}
