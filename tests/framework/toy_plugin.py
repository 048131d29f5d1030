"""Toy algorithms for framework tests: a ragged producer, an ONNX MLP with noise, a tuple writer,
and an algorithm that fails on chosen events.  Registered through the normal hook."""
from __future__ import annotations

import numpy as np

from framework import Algorithm, Collection, ConfigurationError, Filter, Input, InputList, Output, Property, hookimpl


class ToyProducer(Algorithm):
    """Poisson(Mean) particles per event with random momenta."""

    Mean = Property(float, 20.0, "mean multiplicity")
    Particles = Output("/Event/MC/Particles", "toy particles")

    def execute(self, ctx):
        lam = self.Mean
        u = ctx.random.uniform(ctx.event_numbers, 0, stream=0)
        # Poisson by inversion (vectorised over events)
        k = np.zeros(ctx.n_events, np.int64)
        p = np.exp(-lam) * np.ones(ctx.n_events)
        cdf = p.copy()
        while np.any(u > cdf) and k.max() < 10 * lam + 50:
            more = u > cdf
            k[more] += 1
            p = p * lam / np.maximum(k, 1)
            cdf[more] += p[more]
        coll = Collection.from_counts({}, k).bind(ctx.event_numbers)
        z = ctx.random.normal(coll.event_number, coll.local_index, stream=1, n=3)
        self.averaging_counter("multiplicity").add(k)
        return Collection.from_counts({"px": 1000 * z[:, 0], "py": 1000 * z[:, 1], "pz": 20000 + 5000 * np.abs(z[:, 2])}, k)


class ToyMLP(Algorithm):
    """Runs an ONNX model (x: px,py,pz + noise) on every particle."""

    ModelFile = Property(str, "", "ONNX model path")
    Particles = Input("/Event/MC/Particles", "toy particles")
    Smeared = Output("/Event/Rec/Smeared", "model output per particle")

    def initialize(self):
        self.model = self.load_model(self.ModelFile)

    def execute(self, ctx, Particles):
        x = np.stack([Particles["px"], Particles["py"], Particles["pz"]], axis=1) / 1000.0
        noise = ctx.random.normal(Particles.event_number, Particles.local_index, stream=0, n=self.model.noise_dim)
        y = self.model.run(x, noise)
        return Particles.with_columns(y0=y[:, 0], y1=y[:, 1])


class ToyTuple(Algorithm):
    """Writes one row per particle to the TTree ``Toy``."""

    Smeared = Input("/Event/Rec/Smeared", "model output")

    def initialize(self):
        self.tuple = self.ntuple("Toy")

    def execute(self, ctx, Smeared):
        self.tuple.extend({"eventNumber": Smeared.event_number, "index": Smeared.local_index,
                           "px": Smeared["px"], "y0": Smeared["y0"], "y1": Smeared["y1"]})


class LazyTuple(Algorithm):
    """Creates its ntuple handle inside execute (not in initialize)."""

    Particles = Input("/Event/MC/Particles", "toy particles")

    def execute(self, ctx, Particles):
        self.ntuple("Lazy").extend({"n": Particles.counts})


class FailOn(Algorithm):
    """Raises in events whose number is a multiple of ``Modulo`` (tests ErrorMax)."""

    Modulo = Property(int, 37, "fail when event number % Modulo == Remainder")
    Remainder = Property(int, 5, "see Modulo")
    Particles = Input("/Event/MC/Particles", "toy particles")

    def execute(self, ctx, Particles):
        self.counter("events seen").increment(ctx.n_events)
        bad = (ctx.event_numbers % self.Modulo) == self.Remainder
        if np.any(bad):
            raise RuntimeError(f"bad event(s) {ctx.event_numbers[bad].tolist()}")


class HighMultiplicity(Filter):
    """Keeps events with more than Threshold particles."""

    Threshold = Property(int, 20, "minimum multiplicity")
    Particles = Input("/Event/MC/Particles", "toy particles")

    def execute(self, ctx, Particles):
        return Particles.counts > self.Threshold


class NeedsMissing(Algorithm):
    """Reads a location nobody writes."""

    Tracks = Input("/Event/Rec/Trakcs", "misspelt on purpose")

    def execute(self, ctx, Tracks):
        return None


class CountAll(Algorithm):
    """Counts rows of a configurable list of collections and of an optional one."""

    Sources = InputList(["/Event/MC/Particles"], "collections to count")
    Extra = Input("/Event/Rec/Extra", "optional collection", optional=True)

    def execute(self, ctx, Sources, Extra):
        self.counter("rows").increment(sum(len(c) for c in Sources))
        self.counter("extra present").increment(int(Extra is not None))


class BadInit(Algorithm):
    """Fails at initialize."""

    def initialize(self):
        raise ConfigurationError("BadInit: refusing to start")

    def execute(self, ctx):
        return None


@hookimpl
def flashsim_register_components(registry):
    for cls in (ToyProducer, ToyMLP, ToyTuple, LazyTuple, FailOn, HighMultiplicity, NeedsMissing, CountAll, BadInit):
        registry.add_algorithm(cls)


def write_toy_mlp(directory, name="toy_mlp", noise_dim=2, seed=3, conditions="2016-MagUp-13TeV"):
    """A real 3(+noise)→32→32→2 tanh MLP written as ONNX with its model card."""
    import hashlib

    import onnx
    import yaml
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n_in = 3 + noise_dim
    w1 = rng.normal(0, 0.5, (n_in, 32)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 32).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 32)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 32).astype(np.float32)
    w3 = rng.normal(0, 0.3, (32, 2)).astype(np.float32)
    b3 = np.zeros(2, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"))]
    nodes = [
        helper.make_node("Concat", ["x", "noise"], ["xn"], axis=1),
        helper.make_node("MatMul", ["xn", "w1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Tanh", ["h1b"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"]), helper.make_node("Add", ["h2", "b2"], ["h2b"]),
        helper.make_node("Tanh", ["h2b"], ["a2"]),
        helper.make_node("MatMul", ["a2", "w3"], ["h3"]), helper.make_node("Add", ["h3", "b3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", noise_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / f"{name}.onnx"
    onnx.save(model, str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    card = {"name": name, "version": 1, "kind": "generative", "conditions": conditions, "file": path.name, "sha256": sha,
            "inputs": [{"name": n, "unit": "GeV"} for n in ("px", "py", "pz")],
            "noise": {"dim": noise_dim, "distribution": "N(0,1)"},
            "outputs": [{"name": "y0", "unit": ""}, {"name": "y1", "unit": ""}],
            "training": {"sample": "none: random weights for framework tests"}}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(card))
    return path
