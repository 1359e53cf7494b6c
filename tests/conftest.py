import os

# Reference implementations must agree exactly with their shape/dtype rules.
os.environ.setdefault("GRAPHC_STRICT", "1")

import numpy as np
import pytest

import graphc as gc
from graphc.backends import interpreter as _interp

_interp.STRICT = True


@pytest.fixture(autouse=True)
def fresh_default_graph():
    """Every test starts with an empty default graph."""
    gc.reset_default_graph()
    yield


def run(fetches, feed_dict=None, graph=None):
    """Run ``fetches`` in a fresh interpreter session (variables initialized)."""
    g = graph or gc.get_default_graph()
    with gc.Session(graph=g, config=gc.Config(backend="interpreter")) as sess:
        if gc.global_variables(g):
            sess.run(gc.global_variables_initializer() if graph is None else gc.variables_initializer(gc.global_variables(g)))
        return sess.run(fetches, feed_dict)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
