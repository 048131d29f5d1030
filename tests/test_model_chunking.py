"""Every shipped model gives a row the same outputs, bit for bit, however the rows of a call are
chunked and zero-padded (the basis of 'identical output whatever the batch size')."""
from pathlib import Path

import numpy as np
import pytest

from framework.models import ModelSvc

MODELS = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "models").glob("*.onnx"))


@pytest.mark.parametrize("name", MODELS)
def test_outputs_independent_of_chunking(name):
    rng = np.random.default_rng(11)
    outs = []
    for chunk in (4096, 112, 48):
        svc = ModelSvc(threads=1, chunk_size=chunk, allow_conditions_mismatch=True)
        m = svc.load(name, "test")
        n = 1003
        x = rng.normal(size=(n, len(m.input_names))).astype(np.float32) if not outs else x
        noise = (rng.normal(size=(n, m.noise_dim)).astype(np.float32) if m.noise_dim else None) if not outs else noise
        outs.append(m.run(x, noise))
        # a single row alone (padded to a full pad chunk) too
        outs.append(np.concatenate([m.run(x[i:i + 1], None if noise is None else noise[i:i + 1]) for i in (0, 500, 1002)]))
    full = outs[0]
    for o in outs[2::2]:
        np.testing.assert_array_equal(o, full)
    for o in outs[1::2]:
        np.testing.assert_array_equal(o, full[[0, 500, 1002]])
    assert np.isfinite(full).mean() > 0.5


def test_chunk_size_must_be_a_multiple_of_the_padding():
    from framework.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="OnnxChunkSize.*multiple of 16.*got 37"):
        ModelSvc(threads=1, chunk_size=37)
