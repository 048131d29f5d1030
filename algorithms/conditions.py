"""Conditions presets: consistent defaults per data-taking period.

``2016-MagUp-13TeV`` matches the only public LHCb tracking parametrisation (Lamarr
``lhcb.trk.2016MU.20230128``); other tags are extrapolations and are labelled as such.
Beam spot: LHCb 2016 luminous region as used to produce the shared tracking samples.
PV smearing: LHCb's triple-Gaussian table (LHCBGAUSS-1287, via SQLamarr's
``PrimaryVertexSmearing.sql``), 2016 pp MagUp rows.
"""

PV_SMEARING_2016_MAGUP = {
    "x": {"mu": 0.000015, "f1": 0.39575, "f2": 0.13945, "s1": 0.02246, "s2": 0.04501, "s3": 0.01176},
    "y": {"mu": -0.000054, "f1": 0.39621, "f2": 0.13293, "s1": 0.02129, "s2": 0.04236, "s3": 0.01130},
    "z": {"mu": 0.000230, "f1": 0.03295, "f2": 0.73535, "s1": 0.42375, "s2": 0.07201, "s3": 0.17024},
}

TRACKING_MODELS_2016 = {
    "acceptance": "models/trk2016_acceptance.onnx",
    "efficiency": "models/trk2016_efficiency.onnx",
    "resolution": "models/trk2016_resolution.onnx",
    "covariance": "models/trk2016_covariance.onnx",
}

PRESETS = {
    "2016-MagUp-13TeV": dict(
        description="LHCb 2016 pp, magnet up, √s = 13 TeV (the public Lamarr tracking model's conditions)",
        extrapolation=False,
        values={
            "sqrt_s_GeV": 13000.0,
            "magnet_polarity": "up",
            "beam_spot_mean_mm": [0.83, -0.17, 0.0],
            "beam_spot_sigma_mm": [0.03, 0.025, 45.0],
            # mean number of visible pp collisions per bunch crossing in 2016 (LHCb's mu ~ 1.1)
            "mean_collisions": 1.1,
            "pv_smearing": PV_SMEARING_2016_MAGUP,
            "models": dict(TRACKING_MODELS_2016),
            "occupancy_file": "models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml",
        },
    ),
    "Run3-MagDown-13.6TeV": dict(
        description="EXTRAPOLATION: Run 3 √s = 13.6 TeV and pile-up with the 2016 detector models and PV smearing",
        extrapolation=True,
        values={
            "sqrt_s_GeV": 13600.0,
            "magnet_polarity": "down",
            "beam_spot_mean_mm": [0.0, 0.0, 0.0],
            "beam_spot_sigma_mm": [0.03, 0.03, 45.0],
            "mean_collisions": 5.3,
            "pv_smearing": PV_SMEARING_2016_MAGUP,
            "models": dict(TRACKING_MODELS_2016),
            "occupancy_file": "models/occupancy/minbias_ntracks_2016-MagUp-13TeV.yaml",
        },
    ),
}
