"""Numeric gradient checks (central differences in float64) for users and tests."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..graph import Graph, Tensor


def _session(graph: Graph):
    from ..session import Config, Session
    return Session(graph=graph, config=Config(backend="interpreter"))


def check_gradients(fn: Callable[..., Any], args: Sequence[Any], eps: float = 1e-6, rtol: float = 1e-5,
                    atol: float = 1e-8, seed: int = 0, backend: str = "interpreter") -> float:
    """Compare the symbolic gradient of ``fn`` with central differences.

    ``fn`` takes one Tensor per array in ``args`` (floating arrays become
    float64 placeholders; others are passed as constants) and returns a
    Tensor. Non-scalar outputs are contracted with fixed random weights, so
    one reverse pass checks the whole vector-Jacobian product. Raises
    AssertionError naming the worst element; returns the max abs error.
    """
    from .. import ops
    from ..session import Config, Session
    from .gradients import gradients
    arrays = [np.asarray(a) for a in args]
    float_idx = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    arrays = [a.astype(np.float64) if i in float_idx else a for i, a in enumerate(arrays)]
    g = Graph()
    with g.as_default():
        inputs = [ops.placeholder(np.float64, a.shape, name=f"arg{i}") if i in float_idx else ops.constant(a)
                  for i, a in enumerate(arrays)]
        out = ops.convert_to_tensor(fn(*inputs))
        rng = np.random.default_rng(seed)
        if out.shape is None or out.shape != ():
            w = rng.uniform(0.5, 1.5, size=tuple(d for d in out.shape)) if out.shape else 1.0
            scalar = ops.reduce_sum(ops.multiply(out, ops.constant(np.asarray(w, dtype=out.dtype))))
        else:
            scalar = out
        grads = gradients(scalar, [inputs[i] for i in float_idx])
    with Session(graph=g, config=Config(backend=backend)) as sess:
        feed = {inputs[i]: arrays[i] for i in float_idx}
        analytic = sess.run([gr if gr is not None else scalar for gr in grads], feed)
        analytic = [a if gr is not None else np.zeros_like(arrays[i])
                    for a, gr, i in zip(analytic, grads, float_idx)]
        worst: Tuple[float, str] = (0.0, "")
        max_err = 0.0
        for k, i in enumerate(float_idx):
            base = arrays[i]
            numeric = np.zeros_like(base)
            for idx in np.ndindex(*base.shape):
                plus, minus = base.copy(), base.copy()
                plus[idx] += eps
                minus[idx] -= eps
                f_plus = sess.run(scalar, {**feed, inputs[i]: plus})
                f_minus = sess.run(scalar, {**feed, inputs[i]: minus})
                numeric[idx] = (f_plus - f_minus) / (2 * eps)
            err = np.abs(analytic[k] - numeric)
            max_err = max(max_err, float(err.max(initial=0.0)))
            bad = err > atol + rtol * np.abs(numeric)
            if bad.any():
                excess = np.where(bad, err - rtol * np.abs(numeric), -np.inf)
                idx = np.unravel_index(np.argmax(excess), base.shape)
                if err[idx] > worst[0]:
                    worst = (float(err[idx]), f"argument {i}, element {tuple(int(j) for j in idx)}: symbolic "
                             f"{analytic[k][idx]!r}, numeric {numeric[idx]!r}")
    if worst[1]:
        raise AssertionError(f"gradient check failed (max error {max_err:.3g}); worst at {worst[1]}")
    return max_err


def compute_gradient_error(y: Tensor, x: Union[Tensor, Sequence[Tensor]], feed_dict: Optional[Dict[Any, Any]] = None,
                           delta: float = 1e-6, session: Any = None) -> float:
    """Max abs difference between the symbolic and the numeric Jacobian of
    ``y`` w.r.t. ``x`` (TF's tf.test.compute_gradient_error). ``x`` is fed
    (any tensor can be); its value comes from ``feed_dict`` or from running
    the graph."""
    from .. import ops
    from .gradients import gradients
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    feed = dict(feed_dict or {})
    graph = y.graph
    own = session is None
    sess = session or _session(graph)
    try:
        if own and ops.global_variables(graph):
            sess.run(ops.variables_initializer(ops.global_variables(graph)))
        x_vals = [np.array(feed[t] if t in feed else sess.run(t, feed), dtype=t.dtype) for t in xs]
        for t, v in zip(xs, x_vals):
            feed[t] = v
        y_val = np.asarray(sess.run(y, feed))
        with graph.as_default():
            gy = ops.placeholder(y.dtype, y.shape, name="compute_gradient_error_dy")
            grads = gradients(y, xs, grad_ys=gy)
        max_err = 0.0
        for t, xv, gr in zip(xs, x_vals, grads):
            analytic = np.zeros((y_val.size, xv.size))
            for r in range(y_val.size):
                onehot = np.zeros(y_val.size, y.dtype)
                onehot[r] = 1
                if gr is not None:
                    analytic[r] = np.asarray(sess.run(gr, {**feed, gy: onehot.reshape(y_val.shape)})).ravel()
            numeric = np.zeros_like(analytic)
            for c in range(xv.size):
                plus, minus = xv.copy().ravel(), xv.copy().ravel()
                plus[c] += delta
                minus[c] -= delta
                fp = np.asarray(sess.run(y, {**feed, t: plus.reshape(xv.shape)}), dtype=np.float64)
                fm = np.asarray(sess.run(y, {**feed, t: minus.reshape(xv.shape)}), dtype=np.float64)
                numeric[:, c] = ((fp - fm) / (2 * delta)).ravel()
            max_err = max(max_err, float(np.abs(analytic - numeric).max(initial=0.0)))
        return max_err
    finally:
        if own:
            sess.close()
