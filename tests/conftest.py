import os

# Reference implementations must agree exactly with their shape/dtype rules.
os.environ.setdefault("GRAPHC_STRICT", "1")

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.runtime import cuda
from graphc.backends import interpreter as _interp

_interp.STRICT = True


@pytest.fixture(autouse=True)
def fresh_default_graph():
    """Every test starts with an empty default graph."""
    gc.reset_default_graph()
    yield


def _real_gpu() -> bool:
    previous = cuda.use_emulator(False)
    try:
        return cuda.available()
    finally:
        cuda.use_emulator(previous)


# Without a GPU the ptx backend runs on the CUDA emulator (graphc.runtime.cuda_emulator:
# the same entries built for the host), so every suite exercises it; GRAPHC_TEST_REAL_GPU=1
# leaves the emulator off (ptx tests then skip without a GPU).
REAL_GPU = _real_gpu()
if not REAL_GPU and not os.environ.get("GRAPHC_TEST_REAL_GPU"):
    cuda.use_emulator(True)

# Native backends every graph of the op suites also runs on, compared with
# the interpreter (GRAPHC_TEST_BACKENDS=interpreter skips them).
NATIVE_BACKENDS = [b for b in os.environ.get("GRAPHC_TEST_BACKENDS", "cpu,ptx").split(",")
                   if b and b != "interpreter" and b in available_backends()]


def _run_once(g, fetches, feed_dict, optimize, backend="interpreter", disabled=()):
    config = gc.Config(backend=backend, optimize=optimize, debug=True, disabled_passes=tuple(disabled))
    with gc.Session(graph=g, config=config) as sess:
        if gc.global_variables(g):
            sess.run(gc.variables_initializer(gc.global_variables(g)))
        return sess.run(fetches, feed_dict)


def _flatten(value, out):
    if isinstance(value, dict):
        for k in value:
            _flatten(value[k], out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _flatten(v, out)
    else:
        out.append(value)
    return out


def assert_same_results(reference, optimized):
    """Optimized == unoptimized: exact for integers and bools, within a few
    ulps for floats (passes may reassociate; see docs/passes.md)."""
    for ref, opt in zip(_flatten(reference, []), _flatten(optimized, [])):
        if ref is None:
            assert opt is None
            continue
        ref, opt = np.asarray(ref), np.asarray(opt)
        assert ref.dtype == opt.dtype and ref.shape == opt.shape
        if ref.dtype.kind == "f":
            rtol = 1e-5 if ref.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(opt, ref, rtol=rtol, atol=rtol * 1e-3, equal_nan=True)
        else:
            np.testing.assert_array_equal(opt, ref)


def run(fetches, feed_dict=None, graph=None):
    """Run ``fetches`` in fresh interpreter sessions (variables initialized),
    once unoptimized and once through the pass pipeline (verified after every
    pass), then optimized on every native backend with constant folding off
    (so the ops run as native code, not folded at compile time); check all agree, and
    return the unoptimized interpreter result. Graphs with random ops are
    run once (two sessions draw different numbers)."""
    g = graph or gc.get_default_graph()
    reference = _run_once(g, fetches, feed_dict, optimize=False)
    if not any(op.opdef.lowering == "random" for op in g.get_operations()):
        assert_same_results(reference, _run_once(g, fetches, feed_dict, optimize=True))
        for backend in NATIVE_BACKENDS:
            assert_same_results(reference, _run_once(g, fetches, feed_dict, optimize=True, backend=backend,
                                                         disabled=("fold",)))
    return reference


@pytest.fixture
def rng():
    return np.random.default_rng(0)
