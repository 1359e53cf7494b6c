"""Static shapes: a tuple of ints with ``None`` for dims known only at run
time, or ``None`` for a tensor whose rank is unknown.

Shape rules raise :class:`ShapeError` with a short reason; the graph adds the
op name, input shapes and the user's source line (see ``Graph.create_op``).
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidArgumentError, ShapeError

Dim = Optional[int]
Shape = Optional[Tuple[Dim, ...]]


def as_shape(shape) -> Shape:
    """Normalize a user shape (None, int, list/tuple with None or -1 dims)."""
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    out = []
    for d in shape:
        if d is None or (isinstance(d, (int, np.integer)) and int(d) == -1):
            out.append(None)
        elif isinstance(d, (int, np.integer)) and d >= 0:
            out.append(int(d))
        else:
            raise ShapeError(f"invalid dimension {d!r} in shape {tuple(shape)!r}")
    return tuple(out)


def fmt(shape: Shape) -> str:
    """Human form used in error messages: (None, 3) or <unknown rank>."""
    if shape is None:
        return "<unknown rank>"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def is_fully_defined(shape: Shape) -> bool:
    return shape is not None and all(d is not None for d in shape)


def num_elements(shape: Shape) -> Optional[int]:
    if not is_fully_defined(shape):
        return None
    n = 1
    for d in shape:
        n *= d
    return n


def broadcast(*shapes: Shape) -> Shape:
    """NumPy broadcasting of static shapes; unknown dims stay unknown unless
    the other side pins them (a None against 3 gives 3: the run checks it)."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError("shapes " + " and ".join(fmt(s) for s in shapes)
                             + " cannot be broadcast together")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def compatible(static: Shape, actual: Sequence[int]) -> bool:
    """Whether a concrete shape fits a static shape."""
    if static is None:
        return True
    if len(static) != len(actual):
        return False
    return all(s is None or s == a for s, a in zip(static, actual))


def merge(a: Shape, b: Shape) -> Shape:
    """The most specific shape compatible with both; ShapeError if none."""
    if a is None:
        return b
    if b is None:
        return a
    if len(a) != len(b):
        raise ShapeError(f"shapes {fmt(a)} and {fmt(b)} have different ranks")
    out = []
    for x, y in zip(a, b):
        if x is not None and y is not None and x != y:
            raise ShapeError(f"shapes {fmt(a)} and {fmt(b)} are incompatible")
        out.append(x if x is not None else y)
    return tuple(out)


def relax(a: Shape, b: Shape) -> Shape:
    """The most specific shape that both fit (dims that differ become None)."""
    if a is None or b is None or len(a) != len(b):
        return None
    return tuple(x if x == y else None for x, y in zip(a, b))


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise InvalidArgumentError(f"{what} must be an int, got {axis!r}")
    if not -rank <= axis < rank:
        raise ShapeError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return int(axis) % rank if rank else 0


def normalize_axes(axis: Union[None, int, Iterable[int]], rank: int) -> Tuple[int, ...]:
    """Sorted, de-duplicated, non-negative axes; None means all axes."""
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    axes = tuple(normalize_axis(a, rank) for a in axis)
    if len(set(axes)) != len(axes):
        raise InvalidArgumentError(f"duplicate axes in {tuple(axis)}")
    return tuple(sorted(axes))
