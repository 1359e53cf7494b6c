"""Train a small MLP on scikit-learn's handwritten digits with graphc.

    graphc demo [--epochs 15] [--batch-size 64] [--backend auto]
    python -m graphc demo ...      or      python examples/train_mlp.py ...

The data set (1797 8x8 images, 10 classes) ships with scikit-learn, so
nothing is downloaded. The model is 64-128-10 with ReLU, trained with Adam on
softmax cross-entropy, fed in minibatches through a placeholder whose batch
dim is None (the last, smaller batch reuses the same graph). Each epoch
prints the mean training loss and the test accuracy.

At the end the trained model's loss-and-gradient function (inputs: a batch
of images and labels; outputs: the loss and its gradient w.r.t. every
weight, at the trained values) is exported as a shared library and C header
(docs/export.md) into ``--export-dir`` (default: a new temporary directory),
loaded back with ``gc.load_library`` and checked against the session.
``--no-export`` skips that.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

import graphc as gc
from graphc.errors import ExportError, GraphcError

SEED = 0


def load_data(seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized float32 features and int64 labels, split 80/20 (stratified)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise GraphcError("the demo needs scikit-learn for its data set: pip install 'graphc[demo]' "
                          "(or pip install scikit-learn)") from None
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=seed, stratify=digits.target)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0            # some corner pixels are always 0
    scale = lambda a: ((a - mean) / std).astype(np.float32)   # noqa: E731
    return scale(x_train), y_train.astype(np.int64), scale(x_test), y_test.astype(np.int64)


def dense(x: gc.Tensor, n_in: int, n_out: int, rng: np.random.Generator, name: str) -> gc.Tensor:
    """x @ w + b with He-initialized w (suits ReLU)."""
    with gc.name_scope(name):
        w = gc.Variable(rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out)).astype(np.float32), name="w")
        b = gc.Variable(np.zeros(n_out, np.float32), name="b")
    return x @ w + b


def build_model(n_features: int, hidden: int, n_classes: int, lr: float, seed: int) -> Dict[str, object]:
    rng = np.random.default_rng(seed)
    x = gc.placeholder(gc.float32, (None, n_features), name="x")
    labels = gc.placeholder(gc.int64, (None,), name="labels")
    h = gc.nn.relu(dense(x, n_features, hidden, rng, "hidden"))
    logits = dense(h, hidden, n_classes, rng, "logits")
    loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    train = gc.train.AdamOptimizer(lr).minimize(loss)
    correct = gc.equal(gc.argmax(logits, axis=1), labels)
    accuracy = gc.reduce_mean(gc.cast(correct, gc.float32))
    # what the export ships: the loss's gradient w.r.t. every weight (never run while training)
    params = gc.trainable_variables()
    grads = gc.gradients(loss, params)
    return {"x": x, "labels": labels, "loss": loss, "train": train, "accuracy": accuracy, "params": params,
            "grads": grads}


def progress(epoch: int, epochs: int, done: int, total: int, loss: float, width: int = 30) -> str:
    filled = width * done // total
    bar = "#" * filled + "." * (width - filled)
    return f"epoch {epoch:>{len(str(epochs))}}/{epochs} [{bar}] {done}/{total} loss {loss:.4f}"


def _count(minimum: int):
    """An argparse type: an int >= ``minimum`` (a bad value is a usage error, not a crash)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def parse_args(argv: Optional[Sequence[str]], prog: Optional[str] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=_count(0), default=15, help="passes over the training set (default 15)")
    p.add_argument("--batch-size", type=_count(1), default=64, help="minibatch size (default 64)")
    p.add_argument("--hidden", type=_count(1), default=128, help="hidden layer width (default 128)")
    p.add_argument("--lr", type=float, default=0.003, help="Adam learning rate (default 0.003)")
    p.add_argument("--seed", type=int, default=SEED,
                   help=f"seed of the data split, initial weights and shuffling (default {SEED})")
    p.add_argument("--backend", default="auto", help="auto, interpreter, cpu or ptx")
    p.add_argument("--quiet", action="store_true", help="print only the final accuracy (and where the export is)")
    p.add_argument("--export-dir", metavar="DIR", default=None,
                   help="where to export the trained loss-and-gradient function as mlp_grad.so / mlp_grad.h "
                        "(default: a new temporary directory)")
    p.add_argument("--no-export", action="store_true", help="skip the export at the end")
    return p.parse_args(argv)


def export_gradient(sess: gc.Session, m: Dict[str, object], batch: Tuple[np.ndarray, np.ndarray],
                    directory: Optional[str], quiet: bool) -> Optional[str]:
    """Export ``(loss, grads)`` as a C function of a batch of ``len(batch[0])``
    images and labels, with the trained weights frozen in; call it through
    ``gc.load_library`` on ``batch`` and compare with the session. Returns
    the library's path, or None when no C compiler is there to link it."""
    x, labels = batch
    directory = directory or tempfile.mkdtemp(prefix="graphc-demo-")
    try:
        exported = gc.export([m["loss"]] + list(m["grads"]), [m["x"], m["labels"]], directory, "mlp_grad",
                             session=sess, shapes=[x.shape, labels.shape])
    except ExportError as exc:
        if "C compiler" not in str(exc):
            raise
        print(f"export skipped: {exc}")
        return None
    library = gc.load_library(exported.library)
    loss_c = float(library(x, labels)[0])
    loss_session = float(sess.run(m["loss"], {m["x"]: x, m["labels"]: labels}))
    if quiet:
        print(f"exported the loss gradient to {exported.library} and {exported.header}")
        return exported.library
    params = ", ".join(v.op.name for v in m["params"])
    print(f"exported the trained model's loss and its gradient w.r.t. {params}, for batches of {len(x)} images "
          "(C signature in the header; docs/export.md):")
    print(f"  library {exported.library}")
    print(f"  header  {exported.header}")
    print(f"  check: loss on {len(x)} test images {loss_c:.6f} through the library, {loss_session:.6f} in the session")
    return exported.library


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> float:
    """Train, print per-epoch loss and test accuracy; return the final test
    accuracy. ``argv``: the options above (default: ``sys.argv[1:]``);
    ``prog``: the command name shown in ``--help``."""
    args = parse_args(argv, prog)
    from graphc.backends import get_backend
    get_backend(args.backend)        # an unknown backend fails before the data set loads
    x_train, y_train, x_test, y_test = load_data(args.seed)
    graph = gc.Graph()
    with graph.as_default():
        m = build_model(x_train.shape[1], args.hidden, 10, args.lr, args.seed)
        init = gc.global_variables_initializer()
    out = sys.stdout
    interactive = out.isatty() and not args.quiet
    shuffle = np.random.default_rng(args.seed)
    n_batches = -(-len(x_train) // args.batch_size)
    if not args.quiet:
        print(f"digits: {len(x_train)} train / {len(x_test)} test, model {x_train.shape[1]}-{args.hidden}-10, "
              f"Adam lr={args.lr}, batch {args.batch_size}")
    start = time.perf_counter()
    accuracy = 0.0
    with gc.Session(graph=graph, config=gc.Config(backend=args.backend)) as sess:
        sess.run(init)
        for epoch in range(1, args.epochs + 1):
            order = shuffle.permutation(len(x_train))
            total_loss, seen = 0.0, 0
            for i in range(n_batches):
                idx = order[i * args.batch_size:(i + 1) * args.batch_size]
                loss, _ = sess.run([m["loss"], m["train"]], {m["x"]: x_train[idx], m["labels"]: y_train[idx]})
                total_loss += float(loss) * len(idx)
                seen += len(idx)
                if interactive:
                    out.write("\r" + progress(epoch, args.epochs, i + 1, n_batches, total_loss / seen))
                    out.flush()
            accuracy = float(sess.run(m["accuracy"], {m["x"]: x_test, m["labels"]: y_test}))
            if not args.quiet:
                line = progress(epoch, args.epochs, n_batches, n_batches, total_loss / seen)
                print(("\r" if interactive else "") + f"{line}  test accuracy {accuracy:.4f}")
        elapsed = time.perf_counter() - start
        print(f"final test accuracy {accuracy:.4f} ({args.epochs} epochs in {elapsed:.1f} s, backend "
              f"{sess.backend})")
        if not args.no_export:
            n = min(args.batch_size, len(x_test))
            export_gradient(sess, m, (x_test[:n], y_test[:n]), args.export_dir, args.quiet)
    return accuracy

