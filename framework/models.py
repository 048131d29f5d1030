"""ONNX model service: model cards, signature checks, lazy shared sessions, chunked batched runs.

A model is a ``NAME.onnx`` file with a YAML model card ``NAME.yaml`` next to it.  The card lists the
columns of the ONNX input ``x`` (``inputs``), the dimension of the optional noise input ``noise``
(``noise.dim``) and the columns of the output ``y`` (``outputs``), with units, training provenance
and validation figures.  :meth:`ModelSvc.load` checks the file against its card and the conditions
tag before the first event; a mismatch is a :class:`ConfigurationError` naming the file and the
expected signature.

Rows are evaluated in fixed-size chunks, and the last, partial chunk is padded to a fixed size, so
that ONNX Runtime always sees the same shapes and a row's result never depends on which other rows
share its batch (reproducibility for any batch size).
"""
from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
import yaml

from .errors import ConfigurationError

DEFAULT_CHUNK = 4096
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: cards with validation tables are large
# the last chunk of a call is zero-padded to a multiple of this many rows: few distinct input shapes
# for onnxruntime, little wasted work (a row's outputs do not depend on the chunk's size, tested)
PAD_CHUNK = 16


def model_search_path() -> list[Path]:
    paths = [Path.cwd()]
    env = os.environ.get("FLASHSIM_MODEL_PATH")
    if env:
        paths += [Path(p) for p in env.split(os.pathsep) if p]
    paths.append(Path(sysconfig.get_path("data")) / "share" / "flashsim")
    paths.append(Path(sys.prefix) / "share" / "flashsim")
    paths.append(Path(__file__).resolve().parent.parent)  # source checkout / editable install
    unique = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def resolve_model_path(path: str) -> Path:
    p = Path(path)
    if p.suffix != ".onnx":
        p = p.with_suffix(".onnx") if p.suffix == "" else p
    if p.is_absolute():
        return p
    candidates = []
    for base in model_search_path():
        for rel in (p, Path("models") / p):
            cand = base / rel
            candidates.append(cand)
            if cand.is_file():
                return cand
    raise ConfigurationError(
        f"model file '{path}' not found; looked in: " + ", ".join(str(c) for c in candidates[:6]) +
        (" …" if len(candidates) > 6 else "") + " (set FLASHSIM_MODEL_PATH to add directories)")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_card(onnx_path: Path) -> dict:
    card_path = onnx_path.with_suffix(".yaml")
    if not card_path.is_file():
        raise ConfigurationError(f"model card {card_path} missing for {onnx_path} (every model ships a YAML card)")
    try:
        card = yaml.load(card_path.read_text(), Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"model card {card_path} is not valid YAML: {exc}") from None
    for key in ("name", "inputs", "outputs"):
        if key not in (card or {}):
            raise ConfigurationError(f"model card {card_path}: missing key '{key}'")
    card["_path"] = str(card_path)
    return card


class Model:
    """One ONNX model and its card.  ``run(x)`` / ``run({"x": ..., "noise": ...})``."""

    def __init__(self, path: Path, card: dict, svc: "ModelSvc"):
        self.path = path
        self.card = card
        self._svc = svc
        self._session = None
        self.input_names = [c["name"] if isinstance(c, dict) else str(c) for c in card["inputs"]]
        self.output_names = [c["name"] if isinstance(c, dict) else str(c) for c in card["outputs"]]
        noise = card.get("noise") or {}
        self.noise_dim = int(noise.get("dim", 0)) if noise else 0
        self.sha256 = sha256_of(path)
        self.calls = 0
        self.rows = 0
        self.seconds = 0.0

    @property
    def name(self):
        return self.card["name"]

    def signature(self) -> str:
        s = f"x: float32[N, {len(self.input_names)}]"
        if self.noise_dim:
            s += f", noise: float32[N, {self.noise_dim}]"
        return s + f" -> y: float32[N, {len(self.output_names)}]"

    @property
    def session(self):
        if self._session is None:
            self._session = self._svc.make_session(self.path)
        return self._session

    def check(self):
        """Compare the ONNX graph's inputs and outputs with the card."""
        sess = self.session
        ins = {i.name: i.shape for i in sess.get_inputs()}
        outs = {o.name: o.shape for o in sess.get_outputs()}
        problems = []
        expected_in = {"x": len(self.input_names)}
        if self.noise_dim:
            expected_in["noise"] = self.noise_dim
        if set(ins) != set(expected_in):
            problems.append(f"inputs {sorted(ins)} instead of {sorted(expected_in)}")
        for key, dim in expected_in.items():
            shape = ins.get(key)
            if shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] != dim:
                problems.append(f"input '{key}' has {shape[1]} columns, card says {dim}")
        if "y" not in outs:
            problems.append(f"outputs {sorted(outs)} have no 'y'")
        else:
            shape = outs["y"]
            if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != len(self.output_names):
                problems.append(f"output 'y' has {shape[1]} columns, card says {len(self.output_names)}")
        if problems:
            raise ConfigurationError(
                f"model {self.path} does not match its card {self.card['_path']}: " + "; ".join(problems) +
                f"; expected signature {self.signature()}")
        expected_sha = self.card.get("sha256")
        if expected_sha and expected_sha != self.sha256:
            raise ConfigurationError(
                f"model {self.path}: sha256 {self.sha256[:12]}… differs from its card's {str(expected_sha)[:12]}… "
                "(retrained file without an updated card?)")

    def run(self, x, noise=None) -> np.ndarray:
        """Evaluate on all rows (chunked, fixed shapes); returns ``y`` as float32 [N, n_outputs]."""
        import time

        if isinstance(x, dict):
            noise = x.get("noise")
            x = x["x"]
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        if x.ndim != 2 or x.shape[1] != len(self.input_names):
            raise ValueError(f"model {self.name}: x must be [N, {len(self.input_names)}], got {x.shape}")
        if self.noise_dim:
            if noise is None:
                raise ValueError(f"model {self.name} needs a noise input [N, {self.noise_dim}]")
            noise = np.ascontiguousarray(noise, dtype=np.float32)
            if noise.shape != (n, self.noise_dim):
                raise ValueError(f"model {self.name}: noise must be [{n}, {self.noise_dim}], got {noise.shape}")
        out = np.empty((n, len(self.output_names)), dtype=np.float32)
        if n == 0:
            return out
        chunk = self._svc.chunk_size
        t0 = time.perf_counter()
        sess = self.session
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            m = stop - start
            size = chunk if m == chunk else int(-(-m // PAD_CHUNK) * PAD_CHUNK)
            xb = x[start:stop]
            nb = noise[start:stop] if self.noise_dim else None
            if size != m:
                xb = np.concatenate([xb, np.zeros((size - m, xb.shape[1]), np.float32)])
                if nb is not None:
                    nb = np.concatenate([nb, np.zeros((size - m, nb.shape[1]), np.float32)])
            feeds = {"x": xb}
            if nb is not None:
                feeds["noise"] = nb
            out[start:stop] = sess.run(["y"], feeds)[0][:m]
            self.calls += 1
        self.rows += n
        self.seconds += time.perf_counter() - t0
        return out


class ModelSvc:
    """Creates and shares ONNX Runtime sessions (lazily), checks cards and conditions."""

    def __init__(self, threads: int = 1, provider: str = "cpu", chunk_size: int = DEFAULT_CHUNK,
                 conditions_tag: str | None = None, allow_conditions_mismatch: bool = False):
        self.threads = threads
        self.provider = provider
        self.chunk_size = int(chunk_size)
        if self.chunk_size <= 0 or self.chunk_size % PAD_CHUNK:
            # onnxruntime's vectorised kernels give a row bit-identical outputs only when every call
            # has a multiple of 16 rows (tests/test_model_chunking.py): a 37-row chunk does not
            raise ConfigurationError(f"ApplicationMgr.OnnxChunkSize: expected a positive multiple of {PAD_CHUNK} "
                                     f"(results independent of batching), got {chunk_size}")
        self.conditions_tag = conditions_tag
        self.allow_conditions_mismatch = allow_conditions_mismatch
        self.models: dict[Path, Model] = {}

    def providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider in ("cuda", "auto"):
            if "CUDAExecutionProvider" in available:
                return ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if self.provider == "cuda":
                raise ConfigurationError(
                    f"ApplicationMgr.OnnxProvider: 'cuda' requested but onnxruntime offers only {available} "
                    "(install onnxruntime-gpu, or use 'cpu'/'auto')")
            return ["CPUExecutionProvider"]
        raise ConfigurationError(f"ApplicationMgr.OnnxProvider: unknown provider {self.provider!r} (cpu, cuda, auto)")

    def make_session(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self.threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=self.providers())
        except ConfigurationError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigurationError(f"cannot load ONNX model {path}: {exc}") from None

    def load(self, path: str, requester: str = "?") -> Model:
        resolved = resolve_model_path(path)
        if not resolved.is_file():
            raise ConfigurationError(f"{requester}: model file {resolved} not found")
        model = self.models.get(resolved)
        if model is None:
            card = load_card(resolved)
            model = Model(resolved, card, self)
            model.check()
            tag = card.get("conditions")
            if self.conditions_tag and tag and tag != self.conditions_tag and not self.allow_conditions_mismatch:
                raise ConfigurationError(
                    f"{requester}: model {resolved.name} was trained for conditions '{tag}', the job runs "
                    f"'{self.conditions_tag}' (set ApplicationMgr.AllowConditionsMismatch: true to override)")
            self.models[resolved] = model
        return model

    def provenance(self) -> list[dict]:
        return [{"name": m.name, "file": str(m.path), "sha256": m.sha256, "version": m.card.get("version"),
                 "conditions": m.card.get("conditions")} for m in self.models.values()]
