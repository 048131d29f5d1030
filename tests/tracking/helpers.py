"""Shared fixtures of the tracking tests: synthetic MC events, algorithms on a stand-in application,
and the held-out classifier two-sample test of a generative model (same rows and noise as its card)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from framework import Collection
from framework.models import ModelSvc

TAG = "2016-MagUp-13TeV"


def fake_app():
    return SimpleNamespace(model_svc=ModelSvc(threads=1, conditions_tag=TAG), msg_svc=None, conditions={})


def make_alg(cls, **props):
    """An initialized algorithm on a stand-in application (model service with the 2016 conditions)."""
    alg = cls(cls.__name__, **props)
    alg._app = fake_app()
    alg.initialize()
    return alg


def synthetic_mc(rng, n_events, n_per_event, species, eta_range, pt_scale, pt_min):
    """MC particles (prompt, final state, flat in eta and phi, exponential pT) with one primary vertex
    per event; returns the ``/Event/MC/Particles`` and ``/Event/MC/Vertices`` collections."""
    n = n_events * n_per_event
    pids = rng.choice(species, size=n)
    eta = rng.uniform(*eta_range, n)
    pt = rng.exponential(pt_scale, n) + pt_min
    phi = rng.uniform(-np.pi, np.pi, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    parts = {"pid": pids.astype(np.int32), "px": px, "py": py, "pz": pz, "E": np.hypot(pt, pz),
             "mass": np.zeros(n), "origin_vertex": np.zeros(n, np.int32), "end_vertex": np.full(n, -1, np.int32),
             "mother": np.full(n, -1, np.int32), "collision": np.zeros(n, np.int32),
             "is_signal": np.zeros(n, bool), "status": np.ones(n, np.int32)}
    verts = {"x": rng.normal(0.83, 0.03, n_events), "y": rng.normal(-0.17, 0.03, n_events),
             "z": rng.normal(0, 45, n_events), "t": np.zeros(n_events), "type": np.ones(n_events, np.int8),
             "collision": np.zeros(n_events, np.int32)}
    return (Collection.from_counts(parts, np.full(n_events, n_per_event)),
            Collection.from_counts(verts, np.ones(n_events, np.int64)))


class HeldoutC2ST:
    """Classifier two-sample AUC per log10 p bin of a generative tracking model on the held-out rows of
    the shared sample, with the rows and noise of its card (computed once per test module); with
    ``draws`` > 1 also for the further noise draws of the card's ``c2st_auc_by_log10p_draws`` (noise seed
    + k, random halves seed k)."""

    def __init__(self, model_path, training_module: str, outputs, noise_seed: int, measured: dict, draws: int = 1):
        self.model_path, self.training_module, self.outputs = model_path, training_module, outputs
        self.noise_seed, self.measured, self.draws, self._per = noise_seed, measured, draws, None

    def xfail_where_card_misses(self, request, key):
        """Bins where the shipped model misses the target are xfail (not strict) with the card's figure."""
        if self.measured.get(key, 0.0) > 0.55:
            request.applymarker(pytest.mark.xfail(strict=False, reason=f"target AUC <= 0.55 not met in {key}: "
                                                  f"measured {self.measured[key]} (card)"))

    def _compute(self, shared):
        if self._per is None:  # all bins in one call per draw: the same random halves as the card
            import importlib

            from models.training.tracking.generative import auc_in_p_bins_draws, load_tree, split_indices

            features_of = importlib.import_module(self.training_module).features_of
            d = load_tree(shared("data", "lhcb_trk2016_samples.root"), "Resolution")
            _, va = split_indices(len(d["pid"]))
            dv = {k: v[va] for k, v in d.items()}
            x = features_of(dv)
            model = ModelSvc(threads=1).load(str(self.model_path))
            ref = np.stack([dv[n] for n in self.outputs], axis=1).astype(np.float64)
            _, self._per = auc_in_p_bins_draws(lambda z: model.run({"x": x, "noise": z}), ref, x,
                                               x[:, 5].astype(np.float64), self.noise_seed, model.noise_dim,
                                               draws=self.draws)
        return self._per

    def auc(self, shared, key):
        """The card's draw (draw 0)."""
        return self._compute(shared)[0][key]

    def mean_auc(self, shared, key):
        """Mean AUC of the ``draws`` draws."""
        return float(np.mean([r[key]["auc"] for r in self._compute(shared)]))
