"""The graphc exception hierarchy.

Every error graphc raises on bad user input derives from :class:`GraphcError`.
Several also derive from the matching builtin (``ShapeError`` is a
``ValueError``) so code written against NumPy/TF conventions keeps working.
"""
from __future__ import annotations


class GraphcError(Exception):
    """Base class of every graphc error."""


class ShapeError(GraphcError, ValueError):
    """Incompatible or invalid shapes (raised while the graph is built)."""


class DTypeError(GraphcError, TypeError):
    """Unsupported dtype or an invalid dtype combination."""


class FeedError(GraphcError, ValueError):
    """A missing, unknown or mismatched feed in ``Session.run``."""


class GraphMismatchError(GraphcError, ValueError):
    """Tensors or operations from two different graphs were mixed."""


class InvalidArgumentError(GraphcError, ValueError):
    """An op attribute or argument is invalid (bad axis, bad permutation...)."""


class GradientError(GraphcError):
    """Gradients cannot be built as asked."""


class CompileError(GraphcError):
    """A backend could not compile the graph."""


class ExportError(GraphcError):
    """A compiled function could not be exported."""


class GraphFormatError(GraphcError, ValueError):
    """A saved graph file is malformed or of an unknown version."""


class ExecutionError(GraphcError, RuntimeError):
    """An op failed while the graph was running (names the op and its source line)."""


class UninitializedVariableError(ExecutionError):
    """A variable was read before it was initialized."""


__all__ = [
    "GraphcError", "ShapeError", "DTypeError", "FeedError", "GraphMismatchError",
    "InvalidArgumentError", "GradientError", "CompileError", "ExportError",
    "GraphFormatError", "ExecutionError", "UninitializedVariableError",
]
