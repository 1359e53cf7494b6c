"""The peers graphc is measured against: JAX, PyTorch (eager and
``torch.compile``) and PyTensor, each written the way its users would write
the workload. A peer whose package does not import is reported as
unavailable, with the reason; the suite runs without any of them.

PyTensor runs with its C backend (``linker="cvm"``, ``fast_run``
rewrites): its default Numba backend needs a numba whose llvmlite pin
conflicts with graphc's llvmlite.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from .harness import Prepared
from .workloads import PARAM_NAMES, W5_SHAPE, Context, Data, training_outputs

Builder = Callable[[Data, Context], Prepared]


@dataclass
class Peer:
    name: str
    module: str                 # what must import for the peer to run
    key: str                    # --peers selector
    builders: Dict[str, Builder] = field(default_factory=dict)

    def availability(self) -> Tuple[bool, str]:
        """(available, version or the reason it is not)."""
        try:
            mod = importlib.import_module(self.module)
        except Exception as exc:   # an ImportError, or a broken install raising anything
            return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
        if self.key == "torch.compile" and not hasattr(mod, "compile"):
            return False, "this torch has no torch.compile"
        return True, str(getattr(mod, "__version__", "unknown version"))


# --------------------------------------------------------------------------
# JAX: jax.jit(jax.value_and_grad(f)), results blocked on
# --------------------------------------------------------------------------
def _jax_w1(data: Data, ctx: Context) -> Prepared:
    import jax
    import jax.numpy as jnp

    def f(x):
        return jnp.sum(jnp.tanh(x) * jnp.exp(-x * x) + 0.5 * x * jax.nn.sigmoid(x))
    step = jax.jit(jax.value_and_grad(f))
    x = jax.device_put(data["x"])
    out: Dict[str, Any] = {}

    def call() -> None:
        out["value"], out["grad"] = jax.block_until_ready(step(x))
    return Prepared(call, lambda: {k: np.asarray(v) for k, v in out.items()})


def _jax_mlp_loss(params, x, labels):
    import jax
    import jax.numpy as jnp
    hidden = jax.nn.relu(x @ params["W1"] + params["b1"])
    logits = hidden @ params["W2"] + params["b2"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def _jax_w2(data: Data, ctx: Context) -> Prepared:
    import jax
    lr = data["lr"]

    @jax.jit
    def step(params, x, labels):
        loss, grads = jax.value_and_grad(_jax_mlp_loss)(params, x, labels)
        return loss, jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
    state = {"params": {k: jax.device_put(v.copy()) for k, v in data["params"].items()}}
    x, labels = jax.device_put(data["x"]), jax.device_put(data["labels"])
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], state["params"] = jax.block_until_ready(step(state["params"], x, labels))
    return Prepared(call, lambda: training_outputs(
        out["loss"], data["params"], {k: np.asarray(v) for k, v in state["params"].items()}, lr))


def _jax_w3(data: Data, ctx: Context) -> Prepared:
    import jax
    import jax.numpy as jnp

    def loss(X, y, w, b):
        z = X @ w + b
        return jnp.mean(jax.nn.softplus(z) - y * z)
    step = jax.jit(jax.value_and_grad(loss, argnums=(2, 3)))
    args = [jax.device_put(np.asarray(data[k], np.float32)) for k in ("X", "y", "w", "b")]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], (out["grad_w"], out["grad_b"]) = jax.block_until_ready(step(*args))
    return Prepared(call, lambda: {k: np.asarray(v) for k, v in out.items()})


def _jax_w4(data: Data, ctx: Context) -> Prepared:
    import jax
    import jax.numpy as jnp

    def loss(logits, labels):
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
    step = jax.jit(jax.value_and_grad(loss))
    logits, labels = jax.device_put(data["logits"]), jax.device_put(data["labels"])
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], out["grad"] = jax.block_until_ready(step(logits, labels))
    return Prepared(call, lambda: {k: np.asarray(v) for k, v in out.items()})


def _jax_w5(data: Data, ctx: Context) -> Prepared:
    import jax
    f = jax.jit(lambda a, b: a * b + a)
    a, b = jax.device_put(data["a"]), jax.device_put(data["b"])
    out: Dict[str, Any] = {}

    def call() -> None:
        out["y"] = f(a, b).block_until_ready()

    def loop(n: int) -> None:
        for _ in range(n):
            f(a, b).block_until_ready()
    return Prepared(call, lambda: {"y": np.asarray(out["y"])}, loop=loop)


# --------------------------------------------------------------------------
# PyTorch: eager autograd, and the same code through torch.compile
# --------------------------------------------------------------------------
def _maybe_compile(fn: Callable, compiled: bool) -> Callable:
    if not compiled:
        return fn
    import torch
    return torch.compile(fn)


def _torch_w1(compiled: bool) -> Builder:
    def build(data: Data, ctx: Context) -> Prepared:
        import torch

        def f(x):
            return (torch.tanh(x) * torch.exp(-x * x) + 0.5 * x * torch.sigmoid(x)).sum()
        f = _maybe_compile(f, compiled)
        x = torch.from_numpy(data["x"]).requires_grad_(True)
        out: Dict[str, Any] = {}

        def call() -> None:
            value = f(x)
            (grad,) = torch.autograd.grad(value, x)
            out["value"], out["grad"] = value.detach(), grad
        return Prepared(call, lambda: {k: v.numpy().copy() for k, v in out.items()})
    return build


def _torch_w2(compiled: bool) -> Builder:
    def build(data: Data, ctx: Context) -> Prepared:
        import torch
        import torch.nn.functional as F

        def loss_fn(W1, b1, W2, b2, x, labels):
            hidden = torch.relu(x @ W1 + b1)
            return F.cross_entropy(hidden @ W2 + b2, labels)
        loss_fn = _maybe_compile(loss_fn, compiled)
        params = [torch.tensor(data["params"][k]).requires_grad_(True) for k in PARAM_NAMES]
        x = torch.from_numpy(data["x"])
        labels = torch.from_numpy(data["labels"].astype(np.int64))
        lr = data["lr"]
        out: Dict[str, Any] = {}

        def call() -> None:
            loss = loss_fn(*params, x, labels)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                torch._foreach_add_(params, grads, alpha=-lr)
            out["loss"] = loss.detach()
        return Prepared(call, lambda: training_outputs(
            out["loss"].numpy(), data["params"],
            {k: p.detach().numpy() for k, p in zip(PARAM_NAMES, params)}, lr))
    return build


def _torch_w3(compiled: bool) -> Builder:
    def build(data: Data, ctx: Context) -> Prepared:
        import torch
        import torch.nn.functional as F

        def loss_fn(X, y, w, b):
            return F.binary_cross_entropy_with_logits(X @ w + b, y)
        loss_fn = _maybe_compile(loss_fn, compiled)
        X, y = torch.from_numpy(data["X"]), torch.from_numpy(data["y"])
        w = torch.tensor(data["w"]).requires_grad_(True)
        b = torch.tensor(np.float32(data["b"])).requires_grad_(True)
        out: Dict[str, Any] = {}

        def call() -> None:
            loss = loss_fn(X, y, w, b)
            out["grad_w"], out["grad_b"] = torch.autograd.grad(loss, (w, b))
            out["loss"] = loss.detach()
        return Prepared(call, lambda: {k: v.numpy().copy() for k, v in out.items()})
    return build


def _torch_w4(compiled: bool) -> Builder:
    def build(data: Data, ctx: Context) -> Prepared:
        import torch
        import torch.nn.functional as F
        loss_fn = _maybe_compile(F.cross_entropy, compiled)
        logits = torch.from_numpy(data["logits"]).requires_grad_(True)
        labels = torch.from_numpy(data["labels"].astype(np.int64))
        out: Dict[str, Any] = {}

        def call() -> None:
            loss = loss_fn(logits, labels)
            (out["grad"],) = torch.autograd.grad(loss, logits)
            out["loss"] = loss.detach()
        return Prepared(call, lambda: {k: v.numpy().copy() for k, v in out.items()})
    return build


def _torch_w5(data: Data, ctx: Context) -> Prepared:
    import torch
    a, b = torch.from_numpy(data["a"].copy()), torch.from_numpy(data["b"].copy())
    out: Dict[str, Any] = {}

    def call() -> None:
        out["y"] = a * b + a

    def loop(n: int) -> None:
        for _ in range(n):
            a * b + a
    return Prepared(call, lambda: {"y": out["y"].numpy().copy()}, loop=loop)


# --------------------------------------------------------------------------
# PyTensor: pytensor.function of the value and its gradient (C backend)
# --------------------------------------------------------------------------
def pytensor_mode() -> str:
    """Select PyTensor's C backend for the functions built here and for the
    inner functions some ops compile at run time with the default mode
    (which would otherwise be Numba)."""
    import warnings
    with warnings.catch_warnings():
        # "Using NumPy C-API based implementation for BLAS functions": said once
        # per process by a pip-installed PyTensor; the report notes it instead
        warnings.simplefilter("ignore")
        import pytensor
        pytensor.config.blas__ldflags  # computed (and warned about) on first access
    pytensor.config.mode = "CVM"
    return "CVM"


def _pt_w1(data: Data, ctx: Context) -> Prepared:
    import pytensor
    import pytensor.tensor as pt
    x = pt.vector("x", dtype="float32")
    value = pt.sum(pt.tanh(x) * pt.exp(-x * x) + np.float32(0.5) * x * pt.sigmoid(x))
    f = pytensor.function([x], [value, pytensor.grad(value, x)], mode=pytensor_mode())
    xv = data["x"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["value"], out["grad"] = f(xv)
    return Prepared(call, lambda: {k: np.array(v) for k, v in out.items()})


def _pt_w2(data: Data, ctx: Context) -> Prepared:
    import pytensor
    import pytensor.tensor as pt
    from pytensor.tensor.special import log_softmax
    shared = {k: pytensor.shared(v.copy(), name=k) for k, v in data["params"].items()}
    x = pt.matrix("x", dtype="float32")
    labels = pt.vector("labels", dtype="int32")
    hidden = pt.maximum(x @ shared["W1"] + shared["b1"], 0)
    logp = log_softmax(hidden @ shared["W2"] + shared["b2"], axis=1)
    loss = -pt.mean(logp[pt.arange(labels.shape[0]), labels])
    grads = pytensor.grad(loss, [shared[k] for k in PARAM_NAMES])
    lr = np.float32(data["lr"])
    updates = [(shared[k], shared[k] - lr * g) for k, g in zip(PARAM_NAMES, grads)]
    f = pytensor.function([x, labels], loss, updates=updates, mode=pytensor_mode())
    xv, lv = data["x"], data["labels"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"] = f(xv, lv)
    return Prepared(call, lambda: training_outputs(
        out["loss"], data["params"], {k: s.get_value() for k, s in shared.items()}, data["lr"]))


def _pt_w3(data: Data, ctx: Context) -> Prepared:
    import pytensor
    import pytensor.tensor as pt
    X = pt.matrix("X", dtype="float32")
    y = pt.vector("y", dtype="float32")
    w = pt.vector("w", dtype="float32")
    b = pt.scalar("b", dtype="float32")
    z = X @ w + b
    loss = pt.mean(pt.softplus(z) - y * z)
    f = pytensor.function([X, y, w, b], [loss, *pytensor.grad(loss, [w, b])], mode=pytensor_mode())
    args = [np.asarray(data[k], np.float32) for k in ("X", "y", "w", "b")]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], out["grad_w"], out["grad_b"] = f(*args)
    return Prepared(call, lambda: {k: np.array(v) for k, v in out.items()})


def _pt_w4(data: Data, ctx: Context) -> Prepared:
    import pytensor
    import pytensor.tensor as pt
    from pytensor.tensor.special import log_softmax
    logits = pt.matrix("logits", dtype="float32")
    labels = pt.vector("labels", dtype="int32")
    loss = -pt.mean(log_softmax(logits, axis=1)[pt.arange(labels.shape[0]), labels])
    f = pytensor.function([logits, labels], [loss, pytensor.grad(loss, logits)], mode=pytensor_mode())
    lv, yv = data["logits"], data["labels"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["loss"], out["grad"] = f(lv, yv)
    return Prepared(call, lambda: {k: np.array(v) for k, v in out.items()})


def _pt_w5(data: Data, ctx: Context) -> Prepared:
    import pytensor
    import pytensor.tensor as pt
    a = pt.vector("a", dtype="float32", shape=W5_SHAPE)
    b = pt.vector("b", dtype="float32", shape=W5_SHAPE)
    f = pytensor.function([a, b], a * b + a, mode=pytensor_mode())
    note = ""
    if hasattr(f, "trust_input"):
        # skips input validation: the fastest way PyTensor offers to call a function
        f.trust_input = True
        note = "trust_input=True"
    av, bv = data["a"], data["b"]
    out: Dict[str, Any] = {}

    def call() -> None:
        out["y"] = f(av, bv)

    def loop(n: int) -> None:
        for _ in range(n):
            f(av, bv)
    return Prepared(call, lambda: {"y": np.array(out["y"])}, loop=loop, note=note)


PEERS: List[Peer] = [
    Peer("JAX", "jax", "jax", {"W1": _jax_w1, "W2": _jax_w2, "W3": _jax_w3, "W4": _jax_w4, "W5": _jax_w5}),
    Peer("PyTorch eager", "torch", "torch",
         {"W1": _torch_w1(False), "W2": _torch_w2(False), "W3": _torch_w3(False), "W4": _torch_w4(False),
          "W5": _torch_w5}),
    Peer("torch.compile", "torch", "torch.compile",
         {"W1": _torch_w1(True), "W2": _torch_w2(True), "W3": _torch_w3(True), "W4": _torch_w4(True)}),
    Peer("PyTensor", "pytensor", "pytensor",
         {"W1": _pt_w1, "W2": _pt_w2, "W3": _pt_w3, "W4": _pt_w4, "W5": _pt_w5}),
]
PEER_KEYS = tuple(p.key for p in PEERS)


def select_peers(spec: str) -> List[Peer]:
    """``all`` (default), ``none``, or a comma list of peer keys."""
    spec = spec.strip().lower()
    if spec in ("", "all"):
        return list(PEERS)
    if spec == "none":
        return []
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in PEER_KEYS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEER_KEYS)}, all, none")
    return [p for p in PEERS if p.key in wanted]


def peer_versions() -> Dict[str, str]:
    """Installed version (or why not) of every peer package, for the report."""
    versions = {}
    for module in dict.fromkeys(p.module for p in PEERS):
        peer = next(p for p in PEERS if p.module == module)
        ok, text = peer.availability()
        versions[module] = text if ok else f"not available ({text})"
    if not versions["torch"].startswith("not available"):
        import torch
        versions["torch"] += f" ({torch.get_num_threads()} intra-op threads)"
    if not versions["jax"].startswith("not available"):
        try:
            import jaxlib
            versions["jaxlib"] = jaxlib.__version__
        except Exception:
            pass
    return versions

