"""A first graphc program: build a graph, run it, differentiate it.

    python examples/basic.py
"""
import numpy as np

import graphc as gc


def main() -> None:
    # 1. Build: nothing is computed yet, these are symbolic tensors.
    x = gc.placeholder(gc.float32, (None, 3), name="x")          # None: any batch size
    w = gc.Variable(np.array([[1.0], [2.0], [3.0]], np.float32), name="w")
    b = gc.Variable(0.5, name="b")
    y = gc.tanh(x @ w + b)                                          # shape (None, 1)
    total = gc.reduce_sum(y, name="total")
    print("graph tensors:", x, y, total, sep="\n  ")

    # 2. Differentiate: the adjoint is appended to the same graph as ops.
    grad_w, grad_b = gc.gradients(total, [w, b])

    # 3. Run: a Session owns the variables' values and computes fetches.
    data = np.array([[0.1, 0.2, 0.3], [-1.0, 0.0, 1.0]], np.float32)
    with gc.Session() as sess:
        sess.run(gc.global_variables_initializer())
        out = sess.run({"y": y, "total": total, "dw": grad_w, "db": grad_b}, feed_dict={x: data})
        for key, value in out.items():
            text = np.array2string(np.asarray(value), precision=4)
            print(f"{key} = " + text.replace("\n", "\n" + " " * (len(key) + 3)))

        # The same graph with another batch size: the None dim is fixed per run.
        print("batch of 4:", sess.run(total, {x: np.ones((4, 3), np.float32)}))

        # Variables persist across runs and change only through assign ops.
        step = w.assign_sub(0.1 * grad_w)
        sess.run(step, {x: data})
        print("w after one gradient step:", sess.run(w).ravel())

    # Check against NumPy.
    w0 = np.array([[1.0], [2.0], [3.0]], np.float32)
    ref = np.tanh(data @ w0 + 0.5)
    assert np.allclose(out["y"], ref, atol=1e-6)
    assert np.allclose(out["dw"], data.T @ (1 - ref ** 2), atol=1e-5)
    print("matches NumPy")


if __name__ == "__main__":
    main()
