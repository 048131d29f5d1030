"""Noise scale of an exported generative model (GlobalPID, issue 6): the graph surgery, and the choice of
the scale on training rows -- about 0 when the reference is a deterministic function that the model's
mean misses by a small error (the widths then hold only that error), about 1 when the reference is
genuinely noisy and the widths are its noise."""
import numpy as np
import onnxruntime as ort
import pytest

from algorithms.pid.features import GLOBALPID_OUTPUTS
from models.training.pid.flash_common import onnx_noise_scale, set_noise_scale_onnx
from models.training.pid.train_flash_pid import calibrate_globalpid_noise

onnx = pytest.importorskip("onnx")
NAMES = [c for c, _, _ in GLOBALPID_OUTPUTS]
D = len(NAMES)


def linear_model(path, n_in, widths):
    """y = x[:, :D] + noise * widths (the GlobalPID interface: x, noise [N, D] -> y [N, D])."""
    from onnx import TensorProto, helper, numpy_helper

    a = np.zeros((n_in, D), np.float32)
    a[:D, :D] = np.eye(D)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["m"]), helper.make_node("Mul", ["noise", "W"], ["e"]),
         helper.make_node("Add", ["m", "e"], ["y"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", D])],
        [numpy_helper.from_array(a, "A"), numpy_helper.from_array(np.asarray(widths, np.float32).reshape(1, D), "W")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run(path, x, noise):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x.astype(np.float32), "noise": noise.astype(np.float32)})[0]


def test_noise_scale_is_applied_in_the_graph_replaced_not_stacked_and_recorded(tmp_path):
    path = tmp_path / "m.onnx"
    w = np.linspace(0.5, 2.0, D)
    linear_model(path, D + 2, w)
    rng = np.random.default_rng(1)
    x, z = rng.normal(size=(50, D + 2)), rng.normal(size=(50, D))
    assert onnx_noise_scale(path) is None
    set_noise_scale_onnx(path, 0.5)
    np.testing.assert_allclose(run(path, x, z), x[:, :D] + 0.5 * w * z, rtol=1e-5, atol=1e-5)
    s = np.linspace(0.0, 1.0, D)
    set_noise_scale_onnx(path, s)                      # replaces 0.5
    np.testing.assert_allclose(run(path, x, z), x[:, :D] + s * w * z, rtol=1e-5, atol=1e-5)
    assert onnx_noise_scale(path) == pytest.approx(list(s), abs=1e-6)
    assert sum(n.op_type == "Mul" for n in onnx.load(str(path)).graph.node) == 2   # its own + the model's


def rows(n, rng, centre, spread):
    """Training-row columns (flash_common.columns_for layout) with reference outputs around the cuts."""
    kin = np.stack([np.exp(rng.uniform(np.log(2.5e3), np.log(150e3), n)), rng.uniform(2.0, 4.9, n),
                    rng.integers(20, 400, n).astype(float), rng.choice([-1.0, 1.0], n)], 1)
    f = centre + spread * rng.normal(size=(n, D))
    flags = {"isMuon": rng.random(n) < 0.5, "hasRich": np.ones(n, bool), "InMuonAcc": np.ones(n, bool)}
    return kin, f, flags


@pytest.mark.parametrize("case", ["deterministic", "noisy"])
def test_noise_scale_choice_follows_the_reference(tmp_path, case):
    rng = np.random.default_rng(7)
    n = 120_000
    # one spread above the CUTS thresholds (PID* > 0, 2; ProbNN > 0.5), so that every rate moves with the width
    spread = np.array([3.0 if c.startswith("PID") else 0.3 for c in NAMES])
    centre = np.array([2.0 if c == "PIDe" else 0.0 if c.startswith("PID") else 0.5 for c in NAMES]) + spread
    kin, f, flags = rows(n, rng, centre, spread)
    err = 0.4 * spread
    if case == "deterministic":    # reference = f exactly; the model's mean misses it by err, its width = err
        gy, mean, widths = f, f + err * rng.normal(size=f.shape), err
    else:                          # reference = f + noise; the model's mean is f, its width the noise
        gy, mean, widths = f + err * rng.normal(size=f.shape), f, err
    path = tmp_path / "gp.onnx"
    linear_model(path, D + 3, widths)
    C = {"gx": np.hstack([mean, rng.normal(size=(n, 3))]), "gy": gy, "kin": kin, "w": np.ones(n), **flags}
    out = calibrate_globalpid_noise(path, C, {"nTracks": kin[:, 2]}, seed=3)
    best = out["noise_scale"]
    expect = 0.0 if case == "deterministic" else 1.0
    for group in ("combined_dll", "probnn"):
        assert abs(best[group] - expect) <= 0.31, (case, group, out["chi2_of_the_cut_rates"][group])
    # the file carries the choice
    assert onnx_noise_scale(path) == pytest.approx(
        [best["combined_dll"] if c.startswith("PID") else best["probnn"] for c in NAMES], abs=1e-6)
