"""graphc: a static-graph compiler with source-transform automatic differentiation.

Build a graph (``placeholder``, ``Variable``, ops), differentiate it as a graph
transform (``gradients``), run it in a ``Session``.
"""
from . import dtypes as _dtypes
from . import errors
from .dtypes import float32, float64, int32, int64
from .dtypes import bool_ as bool  # noqa: A001  (gc.bool, as in TF)
from .graph import Graph, Operation, Tensor, get_default_graph, reset_default_graph
from .ops import *  # noqa: F401,F403
from .ops import nn
from .session import Config, Session, get_default_session
from .autodiff import custom_gradient, gradients, hessians, jacobian
from .function import TensorSpec, function, grad, value_and_grad
from .dump import dump
from . import test
from . import train
from .train.clip import clip_by_global_norm, clip_by_norm, global_norm
from .serialize import save_graph, load_graph
from .export import export
from .library import load_library

__version__ = "0.1.0"


def name_scope(name):
    """Context manager: prefix names of ops created inside with ``name/``."""
    return get_default_graph().name_scope(name)


def control_dependencies(control_inputs):
    """Context manager: ops created inside run after ``control_inputs``."""
    from .graph import graph_for_inputs
    items = [c._as_graph_element() if hasattr(c, "_as_graph_element") else c for c in (control_inputs or [])]
    graph = graph_for_inputs(items) if items else get_default_graph()
    return graph.control_dependencies(control_inputs)


def as_dtype(value):
    return _dtypes.as_dtype(value)
