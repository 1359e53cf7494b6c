"""Test programs shared by the lowering and codegen tests: random
elementwise/reduction programs for hypothesis, and a small MLP step."""
from typing import Callable, List, Sequence, Tuple


def build_program(inputs: Sequence, program: Sequence[Tuple[int, int, int]], unary: Sequence[Callable],
                  binary: Sequence[Callable], reduce: Sequence[Callable]) -> List:
    """Apply ``program`` steps (kind, a, b) to ``inputs``; returns the new values.
    kind 0: a unary op, 1: a binary op, 2: a keepdims reduction over one axis."""
    values = list(inputs)
    for kind, a, b in program:
        u = values[a % len(values)]
        if kind == 0:
            values.append(unary[b % len(unary)](u))
        elif kind == 1:
            values.append(binary[b % len(binary)](u, values[b % len(values)]))
        else:
            rank = len(u.shape)
            values.append(reduce[b % len(reduce)](u, axis=(a % rank) if rank else None, keepdims=True))
    return values[len(inputs):]


def mlp_step_graph(gc, np, seed: int = 4):
    """A small MLP loss and its weight gradients (the kernels a training step
    compiles): returns (fetches, feed_dict) in the default graph."""
    r = np.random.default_rng(seed)
    x = gc.placeholder(gc.float32, (16, 12), name="x")
    labels = gc.placeholder(gc.int32, (16,), name="labels")
    w1 = gc.constant(r.normal(size=(12, 8)).astype(np.float32))
    w2 = gc.constant(r.normal(size=(8, 3)).astype(np.float32))
    h = gc.nn.relu(x @ w1)
    logits = h @ w2
    loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    g1, g2 = gc.gradients(loss, [w1, w2])
    return [loss, g1, g2], {x: r.normal(size=(16, 12)), labels: r.integers(0, 3, 16)}
