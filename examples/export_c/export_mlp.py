"""Export the gradient of a 2-layer MLP's loss for the C program main.c.

    python examples/export_c/export_mlp.py [-o DIR] [--steps 20] [--lr 0.1]

Writes into DIR (default: examples/export_c/build):

* ``mlp_grad.so`` / ``mlp_grad.h``: ``gc.value_and_grad`` of the mean softmax
  cross-entropy of a 2-layer ReLU MLP w.r.t. its four parameters. C signature
  (see the header): ``int mlp_grad(w1, b1, w2, b2, x, labels, loss, g_w1,
  g_b1, g_w2, g_b2)``;
* ``mlp_data.bin``: the six inputs (initial parameters, data, int32 labels),
  each as raw native-endian row-major values, one after the other in the
  order of the C function's inputs; main.c reads them with the sizes in the
  header.

It then prints the losses of the same SGD run in this process (the compiled
function, no export involved) so they can be compared with main.c's output;
README.md says how to build and run main.c.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

import numpy as np

import graphc as gc
from graphc.function import CompiledFunction

NAME = "mlp_grad"
N, D, H, C = 64, 8, 16, 3          # samples, features, hidden units, classes
STEPS, LR = 20, 0.1
HERE = os.path.dirname(os.path.abspath(__file__))


def mlp_loss(w1: gc.Tensor, b1: gc.Tensor, w2: gc.Tensor, b2: gc.Tensor, x: gc.Tensor,
             labels: gc.Tensor) -> gc.Tensor:
    hidden = gc.nn.relu(x @ w1 + b1)
    logits = hidden @ w2 + b2
    return gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def compiled() -> CompiledFunction:
    """(loss, (g_w1, g_b1, g_w2, g_b2)) of mlp_loss, traced for the shapes above."""
    # the names label the inputs in the header's comments
    signature = [gc.TensorSpec((D, H), name="w1"), gc.TensorSpec((H,), name="b1"),
                 gc.TensorSpec((H, C), name="w2"), gc.TensorSpec((C,), name="b2"),
                 gc.TensorSpec((N, D), name="x"), gc.TensorSpec((N,), gc.int32, name="labels")]
    return gc.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3), input_signature=signature)


def make_data(seed: int = 0) -> List[np.ndarray]:
    """[w1, b1, w2, b2, x, labels]: He-initialized parameters, and N points
    in C Gaussian blobs (the label is the blob)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 0.7, size=(C, D))   # overlapping: the loss falls slowly
    labels = rng.integers(0, C, size=N).astype(np.int32)
    x = (centers[labels] + rng.normal(0.0, 1.0, size=(N, D))).astype(np.float32)
    w1 = rng.normal(0.0, np.sqrt(2.0 / D), size=(D, H)).astype(np.float32)
    w2 = rng.normal(0.0, np.sqrt(2.0 / H), size=(H, C)).astype(np.float32)
    return [w1, np.zeros(H, np.float32), w2, np.zeros(C, np.float32), x, labels]


def sgd(fn, arrays: Sequence[np.ndarray], steps: int = STEPS, lr: float = LR) -> List[float]:
    """The loss before each of ``steps`` SGD updates, done as main.c does
    them (float32: p -= lr * g)."""
    params = [np.array(a) for a in arrays[:4]]
    x, labels = arrays[4], arrays[5]
    lr32 = np.float32(lr)
    losses = []
    for _ in range(steps):
        loss, grads = fn(*params, x, labels)
        losses.append(float(loss))
        params = [p - lr32 * g for p, g in zip(params, grads)]
    return losses


def write_data(path: str, arrays: Sequence[np.ndarray]) -> None:
    with open(path, "wb") as f:
        for a in arrays:
            f.write(np.ascontiguousarray(a).tobytes())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output-dir", default=os.path.join(HERE, "build"),
                   help="where to write mlp_grad.so, mlp_grad.h and mlp_data.bin (default: examples/export_c/build)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"SGD steps of the in-process run (default {STEPS})")
    p.add_argument("--lr", type=float, default=LR, help=f"SGD learning rate (default {LR})")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and initial parameters")
    args = p.parse_args(argv)
    fn = compiled()
    exported = fn.export(args.output_dir, NAME)
    data = make_data(args.seed)
    data_path = os.path.join(os.path.abspath(args.output_dir), "mlp_data.bin")
    write_data(data_path, data)
    print(f"library {exported.library}\nheader  {exported.header}\ndata    {data_path}")
    print(f"in-process SGD ({args.steps} steps, lr {args.lr}), to compare with main.c:")
    for step, loss in enumerate(sgd(fn, data, args.steps, args.lr)):
        print(f"step {step} loss {loss:.9g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
