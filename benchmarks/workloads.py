"""Workloads W1-W5 of issue 5: data, the float64 NumPy reference, the
hand-written NumPy float32 implementation and the graphc implementations.

Every workload is float32. ``scale`` shrinks the large dimensions (tests and
smoke runs use a small one); the fixed-size workloads (W2, W5) ignore it.
Peers (JAX, PyTorch, PyTensor) live in :mod:`benchmarks.peers`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .harness import GRAPHC, NUMPY, Prepared

Data = Dict[str, Any]
Builder = Callable[[Data, "Context"], Prepared]

LEARNING_RATE = 0.1          # W2's SGD step
MLP_SIZES = (784, 256, 10)   # W2
MLP_BATCH = 128
W5_SHAPE = (4,)


@dataclass
class Context:
    """What implementations need besides the data: graphc's backend name."""
    backend: str = "auto"


@dataclass
class Workload:
    key: str
    title: str
    description: str
    make_data: Callable[[float, np.random.Generator], Data]
    reference: Callable[[Data], Dict[str, np.ndarray]]
    sizes: Callable[[Data], str]
    rtol: float
    impls: List[Tuple[str, str, Builder]] = field(default_factory=list)
    roofline_bytes: Optional[Callable[[Data], int]] = None
    unit: str = "ms"


def _scaled(n: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(round(n * scale)))


def _f32(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _copy_outputs(values: Dict[str, Any]) -> Dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in values.items()}


# --------------------------------------------------------------------------
# W1: elementwise chain
# --------------------------------------------------------------------------
W1_SIZE = 10_000_000


def w1_data(scale: float, rng: np.random.Generator) -> Data:
    return {"x": rng.standard_normal(_scaled(W1_SIZE, scale, 16), dtype=np.float32)}


def w1_numpy(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """sum(tanh(x)*exp(-x*x) + 0.5*x*sigmoid(x)) and its gradient, in x's
    dtype (float64 for the reference)."""
    t = np.tanh(x)
    e = np.exp(-(x * x))
    s = _sigmoid(x)
    value = np.sum(t * e + 0.5 * x * s)
    te = t * e
    grad = e - t * te - 2 * x * te + 0.5 * s * (1 + x * (1 - s))
    return np.asarray(value, dtype=x.dtype), grad


def w1_reference(data: Data) -> Dict[str, np.ndarray]:
    value, grad = w1_numpy(data["x"].astype(np.float64))
    return {"value": value, "grad": grad}


def w1_graphc_fn(x: Any) -> Any:
    import graphc as gc
    return gc.reduce_sum(gc.tanh(x) * gc.exp(-x * x) + 0.5 * x * gc.sigmoid(x))


def w1_build_numpy(data: Data, ctx: Context) -> Prepared:
    x = data["x"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["value"], out["grad"] = w1_numpy(x)
    return Prepared(call, lambda: _copy_outputs(out))


def w1_build_graphc(data: Data, ctx: Context) -> Prepared:
    import graphc as gc
    x = data["x"]
    f = gc.value_and_grad(w1_graphc_fn, input_signature=[gc.TensorSpec(x.shape, gc.float32)], backend=ctx.backend)
    out: Dict[str, Any] = {}

    def call() -> None:
        out["value"], out["grad"] = f(x)
    return Prepared(call, lambda: _copy_outputs(out))


W1 = Workload(
    key="W1", title="W1 elementwise chain",
    description="`sum(tanh(x)*exp(-x*x) + 0.5*x*sigmoid(x))` and its gradient with respect to x.",
    make_data=w1_data, reference=w1_reference,
    sizes=lambda d: f"x: {d['x'].shape[0]:,} float32 elements",
    rtol=2e-4,
    impls=[("graphc", GRAPHC, w1_build_graphc), ("NumPy", NUMPY, w1_build_numpy)],
    # x is read once and the gradient written once; the value is a scalar
    roofline_bytes=lambda d: 2 * d["x"].nbytes,
)


# --------------------------------------------------------------------------
# W2: MLP training step
# --------------------------------------------------------------------------
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def w2_data(scale: float, rng: np.random.Generator) -> Data:
    n_in, n_hidden, n_out = MLP_SIZES
    params = {
        "W1": rng.standard_normal((n_in, n_hidden), dtype=np.float32) * np.float32(np.sqrt(2.0 / n_in)),
        "b1": rng.standard_normal(n_hidden, dtype=np.float32) * np.float32(0.01),
        "W2": rng.standard_normal((n_hidden, n_out), dtype=np.float32) * np.float32(np.sqrt(1.0 / n_hidden)),
        "b2": rng.standard_normal(n_out, dtype=np.float32) * np.float32(0.01),
    }
    return {"x": rng.standard_normal((MLP_BATCH, n_in), dtype=np.float32),
            "labels": rng.integers(0, n_out, MLP_BATCH).astype(np.int32),
            "params": params, "lr": LEARNING_RATE}


def w2_loss_and_grads(params: Dict[str, np.ndarray], x: np.ndarray,
                      labels: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Forward and hand-written backward of the 784-256-10 ReLU MLP with a
    mean softmax cross-entropy loss, in the parameters' dtype."""
    batch = x.shape[0]
    rows = np.arange(batch)
    pre = x @ params["W1"] + params["b1"]
    h = np.maximum(pre, 0)
    logits = h @ params["W2"] + params["b2"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    dlogits = e / total
    dlogits[rows, labels] -= 1
    dlogits /= batch
    dh = dlogits @ params["W2"].T
    dh[pre <= 0] = 0
    grads = {"W1": x.T @ dh, "b1": dh.sum(axis=0), "W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}
    return np.asarray(loss, dtype=x.dtype), grads


def w2_reference(data: Data) -> Dict[str, np.ndarray]:
    params = {k: v.astype(np.float64) for k, v in data["params"].items()}
    loss, grads = w2_loss_and_grads(params, data["x"].astype(np.float64), data["labels"])
    return {"loss": loss, **{f"grad_{k}": g for k, g in grads.items()}}


def training_outputs(loss: Any, before: Dict[str, np.ndarray], after: Dict[str, np.ndarray],
                     lr: float) -> Dict[str, np.ndarray]:
    """What one SGD step implies: its loss and each parameter's gradient,
    ``(before - after) / lr`` (so an implementation that skips or botches the
    update fails verification too)."""
    out = {"loss": np.asarray(loss, dtype=np.float32)}
    for k in PARAM_NAMES:
        out[f"grad_{k}"] = ((before[k].astype(np.float64) - np.asarray(after[k], np.float64)) / lr).astype(np.float32)
    return out


def w2_build_numpy(data: Data, ctx: Context) -> Prepared:
    params = {k: v.copy() for k, v in data["params"].items()}
    before = {k: v.copy() for k, v in params.items()}
    x, labels, lr = data["x"], data["labels"], np.float32(data["lr"])
    out: Dict[str, Any] = {}

    def call() -> None:
        loss, grads = w2_loss_and_grads(params, x, labels)
        for k in PARAM_NAMES:
            params[k] -= lr * grads[k]
        out["loss"] = loss
    return Prepared(call, lambda: training_outputs(out["loss"], before, params, data["lr"]))


def w2_build_graphc(data: Data, ctx: Context) -> Prepared:
    import graphc as gc
    graph = gc.Graph()
    with graph.as_default():
        x = gc.placeholder(gc.float32, (None, MLP_SIZES[0]), name="x")
        labels = gc.placeholder(gc.int32, (None,), name="labels")
        v = {k: gc.Variable(val.copy(), name=k) for k, val in data["params"].items()}
        hidden = gc.nn.relu(gc.matmul(x, v["W1"]) + v["b1"])
        logits = gc.matmul(hidden, v["W2"]) + v["b2"]
        loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train = gc.train.GradientDescentOptimizer(data["lr"]).minimize(loss)
        init = gc.global_variables_initializer()
    sess = gc.Session(graph=graph, config=gc.Config(backend=ctx.backend))
    sess.run(init)
    before = {k: val.copy() for k, val in data["params"].items()}
    feed = {x: data["x"], labels: data["labels"]}
    fetches = [loss, train]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"] = sess.run(fetches, feed)[0]

    def outputs() -> Dict[str, np.ndarray]:
        after = sess.run({k: var for k, var in v.items()})
        return training_outputs(out["loss"], before, after, data["lr"])
    return Prepared(call, outputs)


W2 = Workload(
    key="W2", title="W2 MLP training step",
    description="784-256-10 MLP, ReLU, mean softmax cross-entropy (integer labels), batch 128: loss, "
                "gradients and the SGD update (learning rate 0.1) of the 4 parameters, per step. "
                "Verification checks the loss and the gradients implied by the first update.",
    make_data=w2_data, reference=w2_reference,
    sizes=lambda d: f"x: {d['x'].shape[0]} x {d['x'].shape[1]}, parameters "
                    + ", ".join(f"{k} {'x'.join(map(str, p.shape))}" for k, p in d["params"].items()),
    rtol=1e-3,
    impls=[("graphc", GRAPHC, w2_build_graphc), ("NumPy", NUMPY, w2_build_numpy)],
)


# --------------------------------------------------------------------------
# W3: logistic regression
# --------------------------------------------------------------------------
W3_ROWS, W3_FEATURES = 100_000, 256


def w3_data(scale: float, rng: np.random.Generator) -> Data:
    n = _scaled(W3_ROWS, scale, 8)
    X = rng.standard_normal((n, W3_FEATURES), dtype=np.float32)
    w_true = rng.standard_normal(W3_FEATURES).astype(np.float32) * np.float32(0.1)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float32)
    w = rng.standard_normal(W3_FEATURES).astype(np.float32) * np.float32(0.05)
    return {"X": X, "y": y, "w": w, "b": np.float32(0.1)}


def w3_numpy(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: Any) -> Tuple[np.ndarray, ...]:
    """Mean sigmoid cross-entropy of ``X @ w + b`` against y, and its
    gradients with respect to w and b."""
    n = X.shape[0]
    z = X @ w + b
    loss = np.mean(np.logaddexp(0, z) - y * z)
    r = (_sigmoid(z) - y) / n
    return np.asarray(loss, dtype=X.dtype), r @ X, np.asarray(r.sum(), dtype=X.dtype)


def w3_reference(data: Data) -> Dict[str, np.ndarray]:
    loss, gw, gb = w3_numpy(*(np.asarray(data[k], dtype=np.float64) for k in ("X", "y", "w", "b")))
    return {"loss": loss, "grad_w": gw, "grad_b": gb}


def w3_graphc_fn(X: Any, y: Any, w: Any, b: Any) -> Any:
    import graphc as gc
    z = gc.reshape(gc.matmul(X, gc.expand_dims(w, 1)), [-1]) + b
    return gc.reduce_mean(gc.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))


def w3_build_numpy(data: Data, ctx: Context) -> Prepared:
    args = [data[k] for k in ("X", "y", "w", "b")]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], out["grad_w"], out["grad_b"] = w3_numpy(*args)
    return Prepared(call, lambda: _copy_outputs(out))


def w3_build_graphc(data: Data, ctx: Context) -> Prepared:
    import graphc as gc
    args = [data["X"], data["y"], data["w"], np.asarray(data["b"], np.float32)]
    specs = [gc.TensorSpec(np.shape(a), gc.float32) for a in args]
    f = gc.value_and_grad(w3_graphc_fn, argnums=(2, 3), input_signature=specs, backend=ctx.backend)
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], (out["grad_w"], out["grad_b"]) = f(*args)
    return Prepared(call, lambda: _copy_outputs(out))


W3 = Workload(
    key="W3", title="W3 logistic regression",
    description="Mean sigmoid cross-entropy of `X @ w + b` against 0/1 labels, and its gradients with "
                "respect to w and b.",
    make_data=w3_data, reference=w3_reference,
    sizes=lambda d: f"X: {d['X'].shape[0]:,} x {d['X'].shape[1]} float32",
    rtol=1e-3,
    impls=[("graphc", GRAPHC, w3_build_graphc), ("NumPy", NUMPY, w3_build_numpy)],
    # X read once (forward and gradient fused into one pass); vectors are noise
    roofline_bytes=lambda d: d["X"].nbytes + 2 * d["y"].nbytes,
)


# --------------------------------------------------------------------------
# W4: softmax cross-entropy
# --------------------------------------------------------------------------
W4_ROWS, W4_CLASSES = 4096, 1000


def w4_data(scale: float, rng: np.random.Generator) -> Data:
    n = _scaled(W4_ROWS, scale, 4)
    return {"logits": rng.standard_normal((n, W4_CLASSES), dtype=np.float32) * np.float32(3.0),
            "labels": rng.integers(0, W4_CLASSES, n).astype(np.int32)}


def w4_numpy(logits: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean sparse softmax cross-entropy and its gradient w.r.t. the logits."""
    n = logits.shape[0]
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    grad = e
    grad /= total
    grad[rows, labels] -= 1
    grad /= n
    return np.asarray(loss, dtype=logits.dtype), grad


def w4_reference(data: Data) -> Dict[str, np.ndarray]:
    loss, grad = w4_numpy(data["logits"].astype(np.float64), data["labels"])
    return {"loss": loss, "grad": grad}


def w4_graphc_fn(logits: Any, labels: Any) -> Any:
    import graphc as gc
    return gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def w4_build_numpy(data: Data, ctx: Context) -> Prepared:
    logits, labels = data["logits"], data["labels"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], out["grad"] = w4_numpy(logits, labels)
    return Prepared(call, lambda: _copy_outputs(out))


def w4_build_graphc(data: Data, ctx: Context) -> Prepared:
    import graphc as gc
    logits, labels = data["logits"], data["labels"]
    specs = [gc.TensorSpec(logits.shape, gc.float32), gc.TensorSpec(labels.shape, gc.int32)]
    f = gc.value_and_grad(w4_graphc_fn, argnums=0, input_signature=specs, backend=ctx.backend)
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], out["grad"] = f(logits, labels)
    return Prepared(call, lambda: _copy_outputs(out))


W4 = Workload(
    key="W4", title="W4 softmax cross-entropy",
    description="Mean sparse softmax cross-entropy of the logits against integer labels, and its gradient "
                "with respect to the logits.",
    make_data=w4_data, reference=w4_reference,
    sizes=lambda d: f"logits: {d['logits'].shape[0]:,} x {d['logits'].shape[1]} float32",
    rtol=1e-3,
    impls=[("graphc", GRAPHC, w4_build_graphc), ("NumPy", NUMPY, w4_build_numpy)],
    # logits read once, gradient written once
    roofline_bytes=lambda d: 2 * d["logits"].nbytes + d["labels"].nbytes,
)


# --------------------------------------------------------------------------
# W5: dispatch overhead
# --------------------------------------------------------------------------
def w5_data(scale: float, rng: np.random.Generator) -> Data:
    return {"a": rng.standard_normal(W5_SHAPE, dtype=np.float32),
            "b": rng.standard_normal(W5_SHAPE, dtype=np.float32)}


def w5_reference(data: Data) -> Dict[str, np.ndarray]:
    a, b = data["a"].astype(np.float64), data["b"].astype(np.float64)
    return {"y": a * b + a}


def w5_build_numpy(data: Data, ctx: Context) -> Prepared:
    a, b = data["a"], data["b"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["y"] = a * b + a

    def loop(n: int) -> None:
        for _ in range(n):
            a * b + a
    return Prepared(call, lambda: _copy_outputs(out), loop=loop)


def w5_build_graphc_function(data: Data, ctx: Context) -> Prepared:
    import graphc as gc
    a, b = data["a"], data["b"]
    spec = gc.TensorSpec(W5_SHAPE, gc.float32)
    f = gc.function(lambda a, b: a * b + a, input_signature=[spec, spec], backend=ctx.backend)
    out: Dict[str, Any] = {}

    def call() -> None:
        out["y"] = f(a, b)

    def loop(n: int) -> None:
        for _ in range(n):
            f(a, b)
    return Prepared(call, lambda: _copy_outputs(out), loop=loop)


def w5_build_graphc_session(data: Data, ctx: Context) -> Prepared:
    import graphc as gc
    a, b = data["a"], data["b"]
    graph = gc.Graph()
    with graph.as_default():
        pa = gc.placeholder(gc.float32, W5_SHAPE, name="a")
        pb = gc.placeholder(gc.float32, W5_SHAPE, name="b")
        y = pa * pb + pa
    sess = gc.Session(graph=graph, config=gc.Config(backend=ctx.backend))
    run = sess.run
    out: Dict[str, Any] = {}

    def call() -> None:
        out["y"] = run(y, {pa: a, pb: b})

    def loop(n: int) -> None:
        for _ in range(n):
            run(y, {pa: a, pb: b})
    return Prepared(call, lambda: _copy_outputs(out), loop=loop)


W5 = Workload(
    key="W5", title="W5 dispatch overhead",
    description="`a*b + a` on two float32 arrays of shape (4,), time per call: what a framework adds "
                "around a trivial computation.",
    make_data=w5_data, reference=w5_reference,
    sizes=lambda d: "a, b: shape (4,) float32",
    rtol=1e-6,
    impls=[("graphc gc.function", GRAPHC, w5_build_graphc_function),
           ("graphc Session.run (feed dict)", GRAPHC, w5_build_graphc_session),
           ("NumPy expression", NUMPY, w5_build_numpy)],
    unit="us",
)

WORKLOADS: Dict[str, Workload] = {w.key: w for w in (W1, W2, W3, W4, W5)}
