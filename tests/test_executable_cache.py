"""The on-disk executable cache (graphc/backends/cpu/cache.py): a second
process rebuilds executables from it without passes or IR and computes the
same results; bad entries are ignored."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from graphc.backends import available_backends

pytestmark = pytest.mark.skipif("cpu" not in available_backends(), reason="cpu backend not available")

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import graphc as gc
    from graphc.backends.cpu.executable import CpuExecutable
    rng = np.random.default_rng(0)
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, [8, 5], name="x")
        labels = gc.placeholder(gc.int32, [8], name="labels")
        w = gc.Variable(rng.standard_normal((5, 3)).astype(np.float32), name="w")
        b = gc.Variable(np.zeros(3, np.float32), name="b")
        table = gc.constant(np.arange(15, dtype=np.float32).reshape(5, 3) / 10)
        logits = gc.matmul(x, w + table) + b
        loss = gc.reduce_mean(gc.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = gc.train.GradientDescentOptimizer(0.5).minimize(loss)
        init = gc.global_variables_initializer()
    xs = rng.standard_normal((8, 5)).astype(np.float32)
    ys = rng.integers(0, 3, 8).astype(np.int32)
    with gc.Session(g) as sess:
        sess.run(init)
        losses = [float(sess.run([loss, step], {x: xs, labels: ys})[0]) for _ in range(4)]
        passthrough = sess.run([x, logits], {x: xs, labels: ys})
        # executables with machine code (the initializer runs as host steps: nothing to cache)
        restored = [e.layout is None for e in sess._cache.values()
                    if isinstance(e, CpuExecutable) and e.module is not None]
        final_w = sess.run(w)
    print(json.dumps({"losses": losses, "restored": restored, "w": final_w.tolist(),
                      "passthrough_ok": bool(np.array_equal(passthrough[0], xs))}))
""")


def _run(cache_dir):
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache_dir))
    env.pop("GRAPHC_DUMP_DIR", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_rebuilds_executables_from_the_cache(tmp_path):
    first = _run(tmp_path)
    assert not any(first["restored"])
    assert list((tmp_path / "executables").glob("*.json"))
    second = _run(tmp_path)
    assert second["restored"] and all(second["restored"])
    assert second["losses"] == first["losses"]                 # bit-identical
    assert second["w"] == first["w"]
    assert second["passthrough_ok"] and first["passthrough_ok"]


def test_bad_entries_are_ignored(tmp_path):
    first = _run(tmp_path)
    for path in (tmp_path / "executables").glob("*.json"):
        doc = json.loads(path.read_text())
        doc["ir_key"] = "0" * 64                                  # machine code that is not there
        path.write_text(json.dumps(doc))
    for path in (tmp_path / "executables").glob("*.npz"):
        path.write_bytes(b"not an npz")
    second = _run(tmp_path)
    assert not any(second["restored"])
    assert second["losses"] == first["losses"]
