"""Features and column conventions of the flash PID models (shared by runtime and training).

The flash PID stack has the interface of LHCb Lamarr's charged-PID parametrisation: per track
``p`` [MeV, linear], ``eta``, ``nTracks`` (event occupancy from ``/Event/Rec/Summary``) and
``track_charge`` go in; per *true* species (e, mu, pi, K, p) four ONNX models are evaluated in turn:

==============  ==========  ==================================  =====================================
model           kind        inputs (``x``)                       outputs (``y``)
==============  ==========  ==================================  =====================================
``ismuon``      classifier  KIN_INPUTS (4)                       CLASSIFIER_OUTPUTS: 6 joint classes of
                                                                 (hasRich) x (out of muon acceptance,
                                                                 in acceptance and not isMuon, isMuon)
``rich``        generative  KIN_INPUTS (4) [+ isMuon], noise 4   RICH_OUTPUTS (rows with hasRich)
``muon``        generative  KIN_INPUTS (4), noise 2              MUON_OUTPUTS (rows with isMuon)
``globalpid``   generative  GLOBALPID_INPUTS (13), noise 10      GLOBALPID_OUTPUTS (every long track)
==============  ==========  ==================================  =====================================

A RICH model takes either Lamarr's four kinematic inputs or those and ``isMuon``
(RICH_INPUTS_WITH_ISMUON; the stack's interface has isMuon, which is drawn before the RICH model runs):
hadrons that decayed to a muon in flight give muon-like rings and are often isMuon, a correlation a
model on the kinematics alone loses.  The runtime reads which from the model's card.

Exactly ONE feature function per model (``FEATURE_FUNCTIONS``) builds the model's ``x`` from raw
physical columns; the training scripts call the same functions (no train/serve skew).  All
preprocessing (logarithms, scaling, masking of sentinels) is inside the ONNX graphs.

Conventions (documented in docs/pid_flash.md):
* no RICH information (``hasRich`` false): RichDLLe/mu/K/p = -1000 (LHCb ntuple convention);
* ``isMuon`` false: MuonMuLL = MuonBkgLL = -1000 and (Lamarr) ProbNNmu = -1;
* tracks that get no PID (not long, or a true species without a model): NO_PID_VALUES.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "SPECIES", "SPECIES_ABSPDG", "KIN_INPUTS", "CLASSIFIER_OUTPUTS", "RICH_OUTPUTS", "MUON_OUTPUTS",
    "GLOBALPID_INPUTS", "GLOBALPID_OUTPUTS", "LAMARR_OUTPUTS", "PROTO_FLOAT_COLUMNS", "PROTO_BOOL_COLUMNS",
    "PROTO_COLUMNS", "NO_RICH", "NO_MUON", "NO_PROBNNMU", "NO_PID_VALUES", "MODEL_KINDS", "NOISE_DIMS",
    "FEATURE_FUNCTIONS", "species_index", "pseudorapidity", "kinematic_features", "globalpid_features",
    "classifier_features", "rich_features", "muon_features", "decode_classes", "encode_classes",
    "card_columns", "RICH_INPUTS_WITH_ISMUON", "rich_inputs_of", "with_ismuon",
]

SPECIES = ("e", "mu", "pi", "K", "p")
SPECIES_ABSPDG = (11, 13, 211, 321, 2212)

NO_RICH = -1000.0       # RichDLL* of tracks without RICH information (LHCb ntuple convention)
NO_MUON = -1000.0       # MuonMuLL / MuonBkgLL when isMuon is false (Lamarr / LHCb)
NO_PROBNNMU = -1.0      # ProbNNmu when isMuon is false (Lamarr convention)

# (name, unit, description) of the columns of x / y
KIN_INPUTS = (
    ("p", "MeV", "reconstructed track momentum (linear, as Lamarr)"),
    ("eta", "", "track pseudorapidity -ln tan(theta/2) at the closest-to-beam state"),
    ("nTracks", "", "event occupancy nTracks of /Event/Rec/Summary"),
    ("track_charge", "e", "track charge (+1 / -1)"),
)
RICH_INPUTS_WITH_ISMUON = KIN_INPUTS + (
    ("isMuon", "", "isMuon of the track (0/1), drawn before the RICH model: conditions the RICH response on it "
                   "(hadrons that decayed to a muon in flight have muon-like rings and are often isMuon)"),
)
CLASSIFIER_OUTPUTS = (
    ("prob_norich_outacc", "", "P(not hasRich, not InMuonAcc)"),
    ("prob_norich_notmuon", "", "P(not hasRich, InMuonAcc, not isMuon)"),
    ("prob_norich_ismuon", "", "P(not hasRich, isMuon) (isMuon implies InMuonAcc)"),
    ("prob_rich_outacc", "", "P(hasRich, not InMuonAcc)"),
    ("prob_rich_notmuon", "", "P(hasRich, InMuonAcc, not isMuon)"),
    ("prob_rich_ismuon", "", "P(hasRich, isMuon)"),
)
RICH_OUTPUTS = (
    ("RichDLLe", "", "RICH delta log-likelihood e - pi"),
    ("RichDLLmu", "", "RICH delta log-likelihood mu - pi"),
    ("RichDLLK", "", "RICH delta log-likelihood K - pi"),
    ("RichDLLp", "", "RICH delta log-likelihood p - pi"),
)
MUON_OUTPUTS = (
    ("MuonMuLL", "", "muon-system log-likelihood of the muon hypothesis"),
    ("MuonBkgLL", "", "muon-system log-likelihood of the background hypothesis"),
)
GLOBALPID_INPUTS = KIN_INPUTS + (
    ("RichDLLe", "", "RICH DLL e - pi (-1000 without RICH)"),
    ("RichDLLmu", "", "RICH DLL mu - pi (-1000 without RICH)"),
    ("RichDLLK", "", "RICH DLL K - pi (-1000 without RICH)"),
    ("RichDLLp", "", "RICH DLL p - pi (-1000 without RICH)"),
    ("isMuon", "", "isMuon (0/1)"),
    ("MuonMuLL", "", "muon log-likelihood (-1000 if not isMuon)"),
    ("MuonBkgLL", "", "background log-likelihood (-1000 if not isMuon)"),
    ("hasRich", "", "track in the RICH acceptance (0/1)"),
    ("InMuonAcc", "", "track in the muon-system acceptance (0/1)"),
)
# Lamarr's GlobalPID + GlobalMuonID outputs in Lamarr's order, + ProbNNghost
GLOBALPID_OUTPUTS = (
    ("PIDe", "", "combined DLL e - pi"),
    ("PIDK", "", "combined DLL K - pi"),
    ("PIDp", "", "combined DLL p - pi"),
    ("ProbNNe", "", "ProbNN electron"),
    ("ProbNNpi", "", "ProbNN pion"),
    ("ProbNNk", "", "ProbNN kaon"),
    ("ProbNNp", "", "ProbNN proton"),
    ("PIDmu", "", "combined DLL mu - pi"),
    ("ProbNNmu", "", "ProbNN muon (before the Lamarr isMuon sentinel)"),
    ("ProbNNghost", "", "ProbNN ghost"),
)
#: LHCb Lamarr's output order (+ ProbNNghost)
LAMARR_OUTPUTS = ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "MuonMuLL", "MuonBkgLL", "PIDe", "PIDK",
                  "PIDp", "ProbNNe", "ProbNNpi", "ProbNNk", "ProbNNp", "PIDmu", "ProbNNmu", "ProbNNghost")
#: columns of /Event/Rec/ProtoParticles
PROTO_FLOAT_COLUMNS = ("RichDLLe", "RichDLLmu", "RichDLLK", "RichDLLp", "MuonMuLL", "MuonBkgLL", "PIDe", "PIDmu",
                       "PIDK", "PIDp", "ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp", "ProbNNghost")
PROTO_BOOL_COLUMNS = ("isMuon", "hasRich", "InMuonAcc")
PROTO_COLUMNS = PROTO_FLOAT_COLUMNS + PROTO_BOOL_COLUMNS

#: values of tracks that get no PID at all (not long, or a species without a model)
NO_PID_VALUES = {
    "RichDLLe": NO_RICH, "RichDLLmu": NO_RICH, "RichDLLK": NO_RICH, "RichDLLp": NO_RICH,
    "MuonMuLL": NO_MUON, "MuonBkgLL": NO_MUON,
    "PIDe": 0.0, "PIDmu": 0.0, "PIDK": 0.0, "PIDp": 0.0,
    "ProbNNe": -1.0, "ProbNNmu": -1.0, "ProbNNpi": -1.0, "ProbNNk": -1.0, "ProbNNp": -1.0, "ProbNNghost": -1.0,
    "isMuon": False, "hasRich": False, "InMuonAcc": False,
}

MODEL_KINDS = ("ismuon", "rich", "muon", "globalpid")
NOISE_DIMS = {"ismuon": 0, "rich": len(RICH_OUTPUTS), "muon": len(MUON_OUTPUTS), "globalpid": len(GLOBALPID_OUTPUTS)}


def card_columns(kind: str, rich_ismuon: bool = False):
    """(inputs, outputs) of a model kind as lists of (name, unit, description); ``rich_ismuon``: a RICH
    model conditioned on isMuon too (RICH_INPUTS_WITH_ISMUON)."""
    return {
        "ismuon": (KIN_INPUTS, CLASSIFIER_OUTPUTS),
        "rich": (RICH_INPUTS_WITH_ISMUON if rich_ismuon else KIN_INPUTS, RICH_OUTPUTS),
        "muon": (KIN_INPUTS, MUON_OUTPUTS),
        "globalpid": (GLOBALPID_INPUTS, GLOBALPID_OUTPUTS),
    }[kind]


_ABS = np.full(2213, -1, dtype=np.int8)
for _i, _a in enumerate(SPECIES_ABSPDG):
    _ABS[_a] = _i


def species_index(pid) -> np.ndarray:
    """0..4 for e, mu, pi, K, p (either charge); -1 for anything else."""
    a = np.abs(np.asarray(pid, dtype=np.int64))
    out = np.full(a.shape, -1, dtype=np.int8)
    ok = a < _ABS.size
    out[ok] = _ABS[a[ok]]
    return out


def pseudorapidity(tx, ty) -> np.ndarray:
    """eta = -ln tan(theta/2) with tan(theta) = hypot(tx, ty) (closest-to-beam slopes)."""
    t = np.hypot(np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64))
    with np.errstate(divide="ignore"):
        return np.arcsinh(1.0 / t)   # = -ln tan(theta/2) for theta = atan(t)


def kinematic_features(p, eta, ntracks, charge) -> np.ndarray:
    """x [N, 4] = (p [MeV], eta, nTracks, track_charge) as float32 (KIN_INPUTS)."""
    p = np.asarray(p, dtype=np.float64)
    n = p.shape[0]
    cols = [p, np.broadcast_to(np.asarray(eta, np.float64), (n,)),
            np.broadcast_to(np.asarray(ntracks, np.float64), (n,)),
            np.where(np.broadcast_to(np.asarray(charge, np.float64), (n,)) >= 0, 1.0, -1.0)]
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)


classifier_features = kinematic_features


def rich_features(p, eta, ntracks, charge, is_muon=None) -> np.ndarray:
    """x of the RICH model: KIN_INPUTS [N, 4], or with ``is_muon`` RICH_INPUTS_WITH_ISMUON [N, 5]."""
    return with_ismuon(kinematic_features(p, eta, ntracks, charge), is_muon)


def with_ismuon(kin, is_muon=None) -> np.ndarray:
    """The kinematic features [N, 4] (KIN_INPUTS), then isMuon as a 0/1 column when ``is_muon`` is given
    (RICH_INPUTS_WITH_ISMUON): the one place that builds a RICH model's x from kinematic features."""
    kin = np.asarray(kin, np.float32)
    if is_muon is None:
        return kin
    return np.ascontiguousarray(np.hstack([kin, np.asarray(is_muon, np.float32).reshape(-1, 1)]), dtype=np.float32)


def rich_inputs_of(input_names) -> bool:
    """True if a RICH model's inputs (card names) are RICH_INPUTS_WITH_ISMUON, False if KIN_INPUTS;
    ValueError otherwise."""
    names = list(input_names)
    if names == [c[0] for c in RICH_INPUTS_WITH_ISMUON]:
        return True
    if names == [c[0] for c in KIN_INPUTS]:
        return False
    raise ValueError(f"RICH model inputs {names}: expected {[c[0] for c in KIN_INPUTS]} (Lamarr) or "
                     f"{[c[0] for c in RICH_INPUTS_WITH_ISMUON]}")


muon_features = kinematic_features


def globalpid_features(kin, rich, is_muon, muon, has_rich, in_muon_acc) -> np.ndarray:
    """x [N, 13] of the GlobalPID model (GLOBALPID_INPUTS): kinematics [N, 4], RichDLLs [N, 4]
    (sentinel -1000 without RICH), isMuon, MuonMuLL/MuonBkgLL [N, 2] (-1000 if not isMuon),
    hasRich, InMuonAcc.  Sentinels are masked inside the graph (multiplied by the flags)."""
    kin = np.asarray(kin, dtype=np.float32)
    n = kin.shape[0]
    f = lambda a: np.broadcast_to(np.asarray(a, dtype=np.float32), (n,))[:, None]  # noqa: E731
    return np.ascontiguousarray(np.hstack([kin, np.asarray(rich, np.float32).reshape(n, 4), f(is_muon),
                                           np.asarray(muon, np.float32).reshape(n, 2), f(has_rich),
                                           f(in_muon_acc)]), dtype=np.float32)


FEATURE_FUNCTIONS = {"ismuon": classifier_features, "rich": rich_features, "muon": muon_features,
                     "globalpid": globalpid_features}


def encode_classes(has_rich, in_muon_acc, is_muon) -> np.ndarray:
    """Class label 0..5 = 3 * hasRich + (0 out of acceptance, 1 in acceptance not isMuon, 2 isMuon)."""
    has_rich = np.asarray(has_rich, bool)
    mu = np.where(np.asarray(is_muon, bool), 2, np.where(np.asarray(in_muon_acc, bool), 1, 0))
    return (3 * has_rich + mu).astype(np.int64)


def decode_classes(probs, u):
    """Categorical draw of the 6 joint classes from probabilities [N, 6] and uniforms u [N]:
    returns (hasRich, InMuonAcc, isMuon) boolean arrays."""
    probs = np.asarray(probs, dtype=np.float64)
    cum = np.cumsum(np.clip(probs, 0.0, None), axis=1)
    cum /= np.maximum(cum[:, -1:], 1e-30)
    cls = np.minimum((np.asarray(u, np.float64)[:, None] > cum).sum(axis=1), 5)
    mu = cls % 3
    return cls >= 3, mu >= 1, mu == 2
