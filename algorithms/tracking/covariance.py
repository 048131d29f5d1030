"""Track covariance: 5x5 covariance of the closest-to-beam state (x, y, tx, ty, q/p) of every
reconstructed track, from a generative ONNX model conditioned on the true CTB state, the species
and type flags and the track's *reconstructed* ``chi2PerDoF, nDoF_f, ghostProb`` (as LHCb's Lamarr).

The model outputs log-variances and correlations whose correlation matrix is positive definite by
construction (canonical partial correlations in the graph); :func:`ctb.covariance_from_outputs`
assembles ``cov_ij = corr_ij sqrt(cov_ii cov_jj)`` in float64 with a Cholesky guard (counter
``PD guard used``; expected 0).  Noise: ``ctx.random.normal(event number, MC index, stream=1)``.
"""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Input, Output, Property

from .ctb import COVARIANCE_INPUTS, COVARIANCE_OUTPUTS, covariance_features_of_states, covariance_from_outputs
from .kernels import normal_noise
from .resolution import NOISE_STREAM, check_generative_card

__all__ = ["TrackCovariance", "covariance_features_from_states"]


def covariance_features_from_states(states) -> np.ndarray:
    """The 15 covariance-model inputs from ``/Event/Rec/TrackStates`` columns (mapping or Collection):
    :func:`ctb.covariance_features` of :func:`ctb.resolution_features` of the true state, with
    ``log10 p_true = log10(1 / |true_qop|)``, in one numba pass."""
    with np.errstate(divide="ignore"):
        true_p = 1.0 / np.abs(np.asarray(states["true_qop"], dtype=np.float64))
        lp = np.log10(true_p)
    return covariance_features_of_states(states["true_x"], states["true_y"], states["true_z"], states["true_tx"],
                                         states["true_ty"], lp, states["pid"], states["type"],
                                         states["chi2PerDoF"], states["nDoF_f"], states["ghostProb"])


class TrackCovariance(Algorithm):
    """Closest-to-beam track covariance matrices (generative ONNX model, PD by construction).

    Output ``/Event/Rec/Tracks``: the TrackStates columns plus ``cov`` (float64 [N, 5, 5], state
    x, y, tx, ty, q/p).
    """

    Model = Property(str, "models/trk2016_covariance.onnx", "generative ONNX covariance model (with its YAML card)")
    TrackStates = Input("/Event/Rec/TrackStates", "reconstructed closest-to-beam states (TrackResolution)")
    Tracks = Output("/Event/Rec/Tracks", "tracks: states + covariance")

    def initialize(self):
        self.model = self.load_model(self.Model)
        check_generative_card(self.model, self.name, COVARIANCE_INPUTS, COVARIANCE_OUTPUTS)

    def execute(self, ctx, TrackStates):
        n = len(TrackStates)
        if n:
            feats = covariance_features_from_states(TrackStates)
            # noise = ctx.random.normal(event number, mc_index, stream=NOISE_STREAM, n=noise_dim), as float32
            noise = normal_noise(ctx.random.key_for(NOISE_STREAM), ctx.event_numbers, TrackStates.event_index,
                                 TrackStates["mc_index"], np.arange(n), self.model.noise_dim)
            out = self.model.run({"x": feats, "noise": noise})
            cov, fixed = covariance_from_outputs(out)
            self.binomial_counter("PD guard used").add(fixed)
        else:
            cov = np.zeros((0, 5, 5), dtype=np.float64)
        self.counter("tracks").increment(n)
        return TrackStates.with_columns(cov=cov)
