"""Shape ops: reshape, transpose, expand/squeeze, concat/stack/split,
broadcast_to, tile, pad, shape queries and filled tensors.

Static arguments (shapes, axes, permutations, paddings) are attributes,
normalized here (negative axes resolved when the rank is known) so equal ops
have equal attributes. A shape given as a Tensor whose value is known while
the graph is built (a constant, the shape of a fully defined tensor, a stack
of those) is turned into an attribute too; only truly run-time shapes use
the ``*_dynamic`` ops, whose static shape is inferred as far as the value of
the shape tensor is known (see :func:`partial_shape_value`).

Gradients read shapes from tensors, never from attributes, whenever a static
shape has unknown dims, so adjoints work with ``None`` (batch) dims.
"""
from __future__ import annotations

import builtins
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, ExecutionError, InvalidArgumentError, ShapeError
from ..graph import Tensor
from .core import apply_op, constant, convert_to_tensor, is_tensor_like, op_scope
from .indexing import strided_slice
from .registry import ELEMENTWISE, LAYOUT, REDUCTION, define, gradient
from .rules import require_dtype, same_dtype

__all__ = ["reshape", "transpose", "expand_dims", "squeeze", "concat", "stack", "unstack", "split",
           "broadcast_to", "tile", "pad", "shape_of", "size", "rank", "zeros_like", "ones_like",
           "zeros", "ones", "fill", "one_hot", "range", "reverse"]

# This module exports an op called `range`; the builtin stays reachable here.
_brange = builtins.range

ShapeLike = Union[Sequence[Any], Tensor, int]


# ==========================================================================
# Values known while the graph is built
# ==========================================================================
def partial_scalar_value(t: Tensor) -> Optional[int]:
    """The value of a scalar integer tensor when it is known at graph
    construction time, else None."""
    if t.shape != () or t.dtype.kind not in "iu":
        return None
    op = t.op
    if op.type == "const":
        return int(op.attrs["value"])
    if op.type == "cast":
        return partial_scalar_value(op.inputs[0])
    if op.type == "strided_slice":
        parent = partial_shape_value(op.inputs[0])
        spec = op.attrs["spec"]
        if parent is not None and len(spec) == 1 and spec[0][0] == "i" and -len(parent) <= spec[0][1] < len(parent):
            return parent[spec[0][1]]
    return None


def partial_shape_value(t: Tensor) -> Optional[Tuple[Optional[int], ...]]:
    """The elements of a 1-D integer tensor that are known at graph
    construction time (None for each unknown element), or None when even its
    length is unknown. Used to infer the static shape of ops that take a
    shape as a tensor, e.g. ``reshape(x, stack([shape_of(x)[0], -1]))``."""
    if t.shape is None or len(t.shape) != 1 or t.dtype.kind not in "iu":
        return None
    op = t.op
    if op.type == "const":
        return tuple(int(v) for v in op.attrs["value"])
    if op.type == "shape_of":
        return op.inputs[0].shape
    if op.type == "cast":
        return partial_shape_value(op.inputs[0])
    if op.type == "stack" and op.attrs["axis"] == 0:
        return tuple(partial_scalar_value(i) for i in op.inputs)
    if op.type == "concat" and op.attrs["axis"] == 0:
        parts = [partial_shape_value(i) for i in op.inputs]
        if all(p is not None for p in parts):
            return tuple(d for p in parts for d in p)
    if op.type == "strided_slice":
        parent = partial_shape_value(op.inputs[0])
        spec = op.attrs["spec"]
        if parent is not None and len(spec) == 1 and spec[0][0] == "s":
            _, start, stop, step = spec[0]
            return parent[start:stop:step]
    if t.shape[0] is not None:
        return (None,) * t.shape[0]
    return None


def known_value(t: Tensor) -> Optional[np.ndarray]:
    """The full value of ``t`` when it is known while building, else None."""
    if t.op.type == "const":
        return t.op.attrs["value"]
    if t.shape == ():
        v = partial_scalar_value(t)
        return None if v is None else np.asarray(v, dtype=t.dtype)
    v = partial_shape_value(t)
    if v is not None and all(d is not None for d in v):
        return np.asarray(v, dtype=t.dtype)
    return None


def _int_vector(values: Sequence[Any], what: str) -> Tensor:
    """A list mixing Python ints and scalar integer Tensors as one 1-D
    integer tensor (Python ints take the tensors' dtype)."""
    tensors = [v for v in values if is_tensor_like(v)]
    dtype = convert_to_tensor(tensors[0]).dtype if tensors else _dt.int32
    if dtype not in _dt.INTEGERS:
        raise DTypeError(f"{what} must contain integers, got a {dtype.name} tensor")
    parts = [convert_to_tensor(v) if is_tensor_like(v) else constant(int(v), dtype=dtype) for v in values]
    for p in parts:
        if p.dtype != dtype:
            raise DTypeError(f"{what} mixes {dtype.name} and {p.dtype.name} tensors")
    return stack(parts, axis=0)


def _static_ints(value: Any, what: str) -> Tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return (int(value),)
    arr = np.asarray(value)
    if arr.ndim != 1 and not (arr.ndim == 0 and arr.size == 1) and arr.size:
        raise ShapeError(f"{what} must be a list of ints, got {value!r}")
    if arr.size and arr.dtype.kind not in "iu":
        raise DTypeError(f"{what} must be a list of ints, got {value!r}")
    return tuple(int(v) for v in arr.reshape(-1))


def _shape_argument(shape: Any, what: str) -> Tuple[Optional[Tuple[int, ...]], Optional[Tensor]]:
    """Split a user shape into (static tuple, None) or (None, 1-D tensor)."""
    if is_tensor_like(shape):
        t = convert_to_tensor(shape)
    elif isinstance(shape, (list, tuple)) and any(is_tensor_like(s) for s in shape):
        t = _int_vector(shape, what)
    else:
        if isinstance(shape, (list, tuple)) and any(d is None for d in shape):
            raise ShapeError(f"{what} {tuple(shape)!r} contains None; use -1 or a shape tensor")
        return _static_ints(shape, what), None
    if t.dtype not in _dt.INTEGERS:
        raise DTypeError(f"{what} must be an int32/int64 tensor, got {t.dtype.name} ({t.name})")
    if t.shape is not None and len(t.shape) != 1:
        raise ShapeError(f"{what} must be a 1-D tensor, got shape {_shapes.fmt(t.shape)} ({t.name})")
    value = known_value(t)
    if value is not None:
        return tuple(int(v) for v in value), None
    return None, t


def _norm_axis(axis: Any, rank: Optional[int], what: str = "axis") -> int:
    """A valid axis made non-negative; an invalid one is returned unchanged
    so the op's shape rule reports it with the op's name."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, (bool, np.bool_)):
        raise InvalidArgumentError(f"{what} must be an int, got {axis!r}")
    axis = int(axis)
    if rank is not None and -rank <= axis < rank:
        return axis % rank
    return axis


def _rank(t: Tensor) -> Optional[int]:
    return None if t.shape is None else len(t.shape)


def _prod(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _back_to_shape_of(g: Tensor, x: Tensor) -> Tensor:
    """``g`` reshaped to ``x``'s shape (read at run time when not static)."""
    if _shapes.is_fully_defined(x.shape):
        if g.shape == x.shape:
            return g
        return reshape(g, x.shape)
    return apply_op("reshape_like", [g, x], name="reshape_like")


# ==========================================================================
# reshape
# ==========================================================================
def reshaped_shape(in_shape: _shapes.Shape, target: Sequence[Optional[int]]) -> _shapes.Shape:
    """Static result of reshaping ``in_shape`` to ``target`` (ints, at most
    one -1; None marks an element only known at run time)."""
    target = tuple(target)
    if sum(1 for d in target if d == -1) > 1:
        raise ShapeError(f"at most one dimension of the new shape {target} can be -1")
    if any(d is not None and d < -1 for d in target):
        raise ShapeError(f"invalid dimension in the new shape {target}")
    out = [None if d is None or d == -1 else d for d in target]
    holes = [i for i, d in enumerate(target) if d is None or d == -1]
    known = _prod(d for d in out if d is not None)
    n_in = _shapes.num_elements(in_shape)
    if not holes:
        if n_in is not None and n_in != known:
            raise ShapeError(f"cannot reshape a tensor of {n_in} elements into shape {target}")
        in_known = _prod(d for d in (in_shape or ()) if d is not None)
        if n_in is None and in_shape is not None and in_known and known % in_known:
            raise ShapeError(f"cannot reshape a tensor of shape {_shapes.fmt(in_shape)} into shape {target}: "
                             f"{known} elements is not a multiple of {in_known}")
    elif len(holes) == 1 and n_in is not None:
        if known == 0:
            if n_in != 0:
                raise ShapeError(f"cannot reshape a tensor of {n_in} elements into shape {target}")
        elif n_in % known:
            raise ShapeError(f"cannot reshape a tensor of {n_in} elements into shape {target}")
        else:
            out[holes[0]] = n_in // known
    return tuple(out)


def _infer_reshape(x, *, shape):
    return reshaped_shape(x.shape, shape), x.dtype


@define("reshape", lowering=LAYOUT, inputs=("tensor",), attrs=("shape",), dtypes="all", infer=_infer_reshape,
        doc="Same elements in row-major order, new shape (one dim may be -1).")
def _reshape(x, *, shape):
    return np.reshape(x, shape)


def _dynamic_shape_rule(resolve):
    """Shape rule of an op whose target shape is a run-time 1-D int tensor:
    as much of the result shape as the tensor's known entries give."""
    def infer(x, shape):
        require_dtype(shape, _dt.INTEGERS, "shape")
        if shape.shape is not None and len(shape.shape) != 1:
            raise ShapeError(f"shape must be a 1-D tensor, got shape {_shapes.fmt(shape.shape)}")
        target = partial_shape_value(shape)
        if target is None:
            return None, x.dtype
        return resolve(x.shape, target), x.dtype
    return infer


_infer_reshape_dynamic = _dynamic_shape_rule(lambda src, target: reshaped_shape(src, target))


@define("reshape_dynamic", lowering=LAYOUT, inputs=("tensor", "shape"), dtypes="all",
        infer=_infer_reshape_dynamic, doc="reshape with the new shape given as a run-time 1-D tensor.")
def _reshape_dynamic(x, shape):
    return np.reshape(x, tuple(int(d) for d in shape))


def _infer_reshape_like(x, like):
    n_in, n_out = _shapes.num_elements(x.shape), _shapes.num_elements(like.shape)
    if n_in is not None and n_out is not None and n_in != n_out:
        raise ShapeError(f"cannot reshape {n_in} elements into shape {_shapes.fmt(like.shape)}")
    return like.shape, x.dtype


@define("reshape_like", lowering=LAYOUT, inputs=("tensor", "like"), dtypes="all", infer=_infer_reshape_like,
        doc="Reshapes `tensor` to the run-time shape of `like` (adjoint of reshapes with unknown dims).")
def _reshape_like(x, like):
    return np.reshape(x, like.shape)


def reshape(tensor: Any, shape: ShapeLike, name: Optional[str] = None) -> Tensor:
    """``tensor`` with a new shape: a list of ints with at most one -1, or
    a 1-D int32/int64 tensor (or a list mixing ints and scalar tensors,
    e.g. ``[gc.shape_of(x)[0], -1]``) for a shape known only at run time."""
    x = convert_to_tensor(tensor)
    static, dynamic = _shape_argument(shape, "reshape shape")
    if dynamic is not None:
        return apply_op("reshape_dynamic", [x, dynamic], name=name or "Reshape")
    return apply_op("reshape", [x], {"shape": static}, name=name or "Reshape")


@gradient("reshape")
def _reshape_grad(op, g):
    return [_back_to_shape_of(g, op.inputs[0])]


@gradient("reshape_dynamic")
def _reshape_dynamic_grad(op, g):
    return [_back_to_shape_of(g, op.inputs[0]), None]


@gradient("reshape_like")
def _reshape_like_grad(op, g):
    return [_back_to_shape_of(g, op.inputs[0]), None]


# ==========================================================================
# transpose
# ==========================================================================
def _infer_transpose(x, *, perm):
    if perm is None:
        return (None if x.shape is None else tuple(reversed(x.shape))), x.dtype
    if sorted(perm) != list(_brange(len(perm))):
        raise InvalidArgumentError(f"perm {tuple(perm)} is not a permutation of 0..{len(perm) - 1}")
    if x.shape is None:
        return (None,) * len(perm), x.dtype
    if len(perm) != len(x.shape):
        raise ShapeError(f"perm {tuple(perm)} has {len(perm)} entries for a tensor of rank {len(x.shape)}")
    return tuple(x.shape[p] for p in perm), x.dtype


@define("transpose", lowering=LAYOUT, inputs=("a",), attrs=("perm",), dtypes="all", infer=_infer_transpose,
        doc="Permutes dimensions: output dim i is input dim perm[i] (perm=None reverses them).")
def _transpose(x, *, perm):
    return np.transpose(x, perm)


def transpose(a: Any, perm: Optional[Sequence[int]] = None, name: Optional[str] = None) -> Tensor:
    """Permute the dims of ``a``; ``perm=None`` reverses them (a matrix
    transpose for rank 2). Negative entries in ``perm`` count from the end."""
    x = convert_to_tensor(a)
    r = _rank(x)
    if perm is not None:
        if is_tensor_like(perm):
            value = known_value(convert_to_tensor(perm))
            if value is None:
                raise InvalidArgumentError("transpose perm must be known while building the graph")
            perm = value
        entries = _static_ints(perm, "transpose perm")
        full_rank = r if r is not None else len(entries)
        perm = tuple(_norm_axis(p, full_rank, "perm entry") for p in entries)
    elif r is not None:
        perm = tuple(_brange(r - 1, -1, -1))
    return apply_op("transpose", [x], {"perm": perm}, name=name or "transpose")


@gradient("transpose")
def _transpose_grad(op, g):
    perm = op.attrs["perm"]
    return [transpose(g, None if perm is None else tuple(int(i) for i in np.argsort(perm)))]


# ==========================================================================
# expand_dims / squeeze
# ==========================================================================
def _infer_expand_dims(x, *, axis):
    if x.shape is None:
        return None, x.dtype
    a = _shapes.normalize_axis(axis, len(x.shape) + 1)
    return x.shape[:a] + (1,) + x.shape[a:], x.dtype


@define("expand_dims", lowering=LAYOUT, inputs=("input",), attrs=("axis",), dtypes="all",
        infer=_infer_expand_dims, doc="Inserts a dimension of size 1 at `axis` of the result.")
def _expand_dims(x, *, axis):
    return np.expand_dims(x, axis)


def expand_dims(input: Any, axis: int, name: Optional[str] = None) -> Tensor:
    """Insert a size-1 dim so that it becomes dim ``axis`` of the result
    (``-1`` appends one)."""
    x = convert_to_tensor(input)
    r = _rank(x)
    axis = _norm_axis(axis, None if r is None else r + 1)
    return apply_op("expand_dims", [x], {"axis": axis}, name=name or "ExpandDims")


@gradient("expand_dims")
def _expand_dims_grad(op, g):
    return [squeeze(g, axis=op.attrs["axis"])]


def _infer_squeeze(x, *, axis):
    if x.shape is None:
        return None, x.dtype
    if axis is None:
        if any(d is None for d in x.shape):
            # which dims are 1 is only known at run time
            return None, x.dtype
        return tuple(d for d in x.shape if d != 1), x.dtype
    axes = _shapes.normalize_axes(axis, len(x.shape))
    for a in axes:
        if x.shape[a] not in (None, 1):
            raise ShapeError(f"cannot squeeze axis {a}: its size is {x.shape[a]}, not 1")
    return tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype


@define("squeeze", lowering=LAYOUT, inputs=("input",), attrs=("axis",), dtypes="all", infer=_infer_squeeze,
        doc="Removes size-1 dims: those in `axis`, or all of them when `axis` is None.")
def _squeeze(x, *, axis):
    return np.squeeze(x, axis=axis)


def squeeze(input: Any, axis: Union[None, int, Sequence[int]] = None, name: Optional[str] = None) -> Tensor:
    """Remove size-1 dims: the listed ones (an int or tuple; squeezing a dim
    that is not 1 is a ShapeError), or every size-1 dim when ``axis`` is
    None. ``axis=()`` removes nothing, as in NumPy."""
    x = convert_to_tensor(input)
    r = _rank(x)
    if axis is None:
        if _shapes.is_fully_defined(x.shape):
            axis = tuple(i for i, d in enumerate(x.shape) if d == 1)
    else:
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        axes = tuple(_norm_axis(a, r) for a in axes)
        axis = tuple(sorted(axes)) if r is not None and all(0 <= a < r for a in axes) else axes
    return apply_op("squeeze", [x], {"axis": axis}, name=name or "Squeeze")


@gradient("squeeze")
def _squeeze_grad(op, g):
    return [_back_to_shape_of(g, op.inputs[0])]


# ==========================================================================
# concat / stack / unstack / split
# ==========================================================================
def _convert_same_dtype(values: Sequence[Any], what: str) -> List[Tensor]:
    """Tensors must share one dtype (the op checks it); Python/NumPy data
    take the tensors' dtype, or their common default dtype when there are
    no tensors."""
    if is_tensor_like(values) or not isinstance(values, (list, tuple)):
        raise InvalidArgumentError(f"{what} takes a list of tensors, got {type(values).__name__}")
    if not values:
        raise InvalidArgumentError(f"{what} needs at least one tensor")
    tensors = [convert_to_tensor(v) for v in values if is_tensor_like(v)]
    if tensors:
        dtype = tensors[0].dtype
    else:
        dtype = _dt.promote(*(_dt.default_dtype_for(v) for v in values))
    return [convert_to_tensor(v) if is_tensor_like(v) else constant(v, dtype=dtype) for v in values]


def _infer_concat(*xs, axis):
    dtype = same_dtype(*xs)
    shapes = [x.shape for x in xs if x.shape is not None]
    if not shapes:
        return None, dtype
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ShapeError("all inputs must have the same rank, got " + ", ".join(_shapes.fmt(x.shape) for x in xs))
    if rank == 0:
        raise ShapeError("cannot concatenate scalars; use gc.stack")
    a = _shapes.normalize_axis(axis, rank)
    out = []
    for i in _brange(rank):
        if i == a:
            dims = [x.shape[a] if x.shape is not None else None for x in xs]
            out.append(None if any(d is None for d in dims) else sum(dims))
            continue
        dims = {s[i] for s in shapes if s[i] is not None}
        if len(dims) > 1:
            raise ShapeError(f"dimension {i} differs between inputs: " + ", ".join(_shapes.fmt(x.shape) for x in xs))
        out.append(dims.pop() if dims else None)
    return tuple(out), dtype


@define("concat", lowering=LAYOUT, inputs=("values",), attrs=("axis",), dtypes="all", infer=_infer_concat,
        doc="Joins its inputs (any number, same dtype) along an existing axis.")
def _concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


def concat(values: Sequence[Any], axis: int, name: Optional[str] = None) -> Tensor:
    """Join tensors of one dtype along the existing dim ``axis``."""
    xs = _convert_same_dtype(values, "concat")
    ranks = {_rank(x) for x in xs} - {None}
    axis = _norm_axis(axis, ranks.pop() if len(ranks) == 1 else None)
    return apply_op("concat", xs, {"axis": axis}, name=name or "concat")


def _infer_split_like(g, *likes, axis):
    if g.shape is None:
        return [(None if l.shape is None else l.shape, g.dtype) for l in likes]
    a = _shapes.normalize_axis(axis, len(g.shape))
    out = []
    for l in likes:
        d = l.shape[a] if l.shape is not None and len(l.shape) == len(g.shape) else None
        out.append((g.shape[:a] + (d,) + g.shape[a + 1:], g.dtype))
    return out


@define("split_like", lowering=LAYOUT, inputs=("value", "likes"), attrs=("axis",), dtypes="all",
        infer=_infer_split_like, num_outputs=None,
        doc="Splits `value` along `axis` into pieces as long as each of `likes` there (adjoint of concat).")
def _split_like(g, *likes, axis):
    sizes = [l.shape[axis] for l in likes]
    if sum(sizes) != g.shape[axis]:
        raise ValueError(f"pieces of sizes {sizes} do not add up to {g.shape[axis]}")
    return np.split(g, np.cumsum(sizes)[:-1], axis=axis)


@gradient("concat")
def _concat_grad(op, g):
    axis = op.attrs["axis"]
    xs = op.inputs
    sizes = [x.shape[axis] if x.shape is not None else None for x in xs]
    if g.shape is None or any(s is None for s in sizes):
        return list(apply_op("split_like", [g, *xs], {"axis": axis}, name="split_like"))
    out, start = [], 0
    for s in sizes:
        key = (slice(None),) * axis + (slice(start, start + s),)
        out.append(g[key])
        start += s
    return out


@gradient("split_like")
def _split_like_grad(op, *grads):
    return [concat(list(grads), axis=op.attrs["axis"])] + [None] * (len(op.inputs) - 1)


def _infer_stack(*xs, axis):
    dtype = same_dtype(*xs)
    shape = xs[0].shape
    try:
        for x in xs[1:]:
            shape = _shapes.merge(shape, x.shape)
    except ShapeError:
        raise ShapeError("all inputs must have the same shape, got "
                         + ", ".join(_shapes.fmt(x.shape) for x in xs)) from None
    if shape is None:
        return None, dtype
    a = _shapes.normalize_axis(axis, len(shape) + 1)
    return shape[:a] + (len(xs),) + shape[a:], dtype


@define("stack", lowering=LAYOUT, inputs=("values",), attrs=("axis",), dtypes="all", infer=_infer_stack,
        doc="Joins its inputs (same shape and dtype) along a new axis.")
def _stack(*xs, axis):
    return np.stack(xs, axis=axis)


def stack(values: Sequence[Any], axis: int = 0, name: Optional[str] = None) -> Tensor:
    """Join tensors of one shape and dtype along a new dim ``axis``."""
    xs = _convert_same_dtype(values, "stack")
    ranks = {_rank(x) for x in xs} - {None}
    axis = _norm_axis(axis, ranks.pop() + 1 if len(ranks) == 1 else None)
    return apply_op("stack", xs, {"axis": axis}, name=name or "stack")


@gradient("stack")
def _stack_grad(op, g):
    return unstack(g, num=len(op.inputs), axis=op.attrs["axis"])


def _infer_unstack(x, *, num, axis):
    if x.shape is None:
        return [(None, x.dtype)] * num
    a = _shapes.normalize_axis(axis, len(x.shape))
    if x.shape[a] is not None and x.shape[a] != num:
        raise ShapeError(f"cannot unstack dimension {a} of size {x.shape[a]} into {num} tensors")
    return [(x.shape[:a] + x.shape[a + 1:], x.dtype)] * num


@define("unstack", lowering=LAYOUT, inputs=("value",), attrs=("num", "axis"), dtypes="all",
        infer=_infer_unstack, num_outputs=None, doc="Splits `value` along `axis` into `num` tensors without that axis.")
def _unstack(x, *, num, axis):
    if x.shape[axis] != num:
        raise ValueError(f"dimension {axis} has size {x.shape[axis]}, not {num}")
    return [np.take(x, i, axis=axis) for i in _brange(num)]


def unstack(value: Any, num: Optional[int] = None, axis: int = 0, name: Optional[str] = None) -> List[Tensor]:
    """The slices of ``value`` along ``axis``, as a list of ``num`` tensors
    (``num`` defaults to the static size of that dim)."""
    x = convert_to_tensor(value)
    r = _rank(x)
    axis = _norm_axis(axis, r)
    if num is None:
        if r is not None and not -r <= axis < r:
            num = 1     # any count: the shape rule reports the bad axis with the op's name
        elif r is None or x.shape[axis] is None:
            raise ShapeError(f"unstack: cannot infer num from the shape {_shapes.fmt(x.shape)} of {x.name} "
                             f"along axis {axis}; pass num=")
        else:
            num = x.shape[axis]
    num = int(num)
    if num < 0:
        raise InvalidArgumentError(f"unstack: num must be >= 0, got {num}")
    if num == 0:
        return []
    return list(apply_op("unstack", [x], {"num": num, "axis": axis}, name=name or "unstack"))


@gradient("unstack")
def _unstack_grad(op, *grads):
    return [stack(list(grads), axis=op.attrs["axis"])]


def _split_sizes(dim: Optional[int], num: Optional[int], sizes: Optional[Tuple[int, ...]],
                 error: type = ShapeError) -> List[Optional[int]]:
    """Sizes of the pieces of a dim of size ``dim`` (static, or at run time
    with ``error=ExecutionError``)."""
    if sizes is None:
        if num is None or num <= 0:
            raise InvalidArgumentError(f"the number of splits must be positive, got {num}")
        if dim is not None and dim % num:
            raise error(f"a dimension of size {dim} cannot be split into {num} equal parts")
        return [None if dim is None else dim // num] * num
    if not sizes:
        raise InvalidArgumentError("size_splits must not be empty")
    if sum(1 for s in sizes if s == -1) > 1 or any(s < -1 for s in sizes):
        raise InvalidArgumentError(f"size_splits {sizes} may contain one -1 and otherwise sizes >= 0")
    rest = sum(s for s in sizes if s != -1)
    if dim is None:
        return [None if s == -1 else s for s in sizes]
    if -1 in sizes:
        if rest > dim:
            raise error(f"size_splits {sizes} add up to more than the dimension size {dim}")
        return [dim - rest if s == -1 else s for s in sizes]
    if rest != dim:
        raise error(f"size_splits {sizes} add up to {rest}, not to the dimension size {dim}")
    return list(sizes)


def _infer_split(x, *, axis, num, sizes):
    count = num if sizes is None else len(sizes)
    if x.shape is None:
        _split_sizes(None, num, sizes)
        return [(None, x.dtype)] * count
    a = _shapes.normalize_axis(axis, len(x.shape))
    return [(x.shape[:a] + (s,) + x.shape[a + 1:], x.dtype) for s in _split_sizes(x.shape[a], num, sizes)]


@define("split", lowering=LAYOUT, inputs=("value",), attrs=("axis", "num", "sizes"), dtypes="all",
        infer=_infer_split, num_outputs=None,
        doc="Splits `value` along `axis` into `num` equal pieces or pieces of the given `sizes` (one may be -1).")
def _split(x, *, axis, num, sizes):
    pieces = _split_sizes(x.shape[axis], num, sizes, ExecutionError)
    return np.split(x, np.cumsum(pieces)[:-1], axis=axis)


def split(value: Any, num_or_size_splits: Union[int, Sequence[int]], axis: int = 0, num: Optional[int] = None,
          name: Optional[str] = None) -> List[Tensor]:
    """Split ``value`` along ``axis``: into ``num_or_size_splits`` equal parts
    (an int), or parts of the listed sizes (one may be -1). ``num``, when
    given, must equal the number of pieces (TF's signature)."""
    x = convert_to_tensor(value)
    axis = _norm_axis(axis, _rank(x))
    if is_tensor_like(num_or_size_splits):
        known = known_value(convert_to_tensor(num_or_size_splits))
        if known is None:
            raise InvalidArgumentError("split: num_or_size_splits must be known while building the graph")
        num_or_size_splits = known.tolist()
    if isinstance(num_or_size_splits, (int, np.integer)) and not isinstance(num_or_size_splits, bool):
        attrs = {"axis": axis, "num": int(num_or_size_splits), "sizes": None}
    else:
        attrs = {"axis": axis, "num": None, "sizes": _static_ints(num_or_size_splits, "size_splits")}
    count = attrs["num"] if attrs["sizes"] is None else len(attrs["sizes"])
    if num is not None and num != count:
        raise InvalidArgumentError(f"split: num={num} but num_or_size_splits gives {count} pieces")
    return list(apply_op("split", [x], attrs, name=name or "split"))


@gradient("split")
def _split_grad(op, *grads):
    return [concat(list(grads), axis=op.attrs["axis"])]


# ==========================================================================
# broadcast_to / tile
# ==========================================================================
def broadcast_shape_to(in_shape: _shapes.Shape, target: Sequence[Optional[int]]) -> Tuple[Optional[int], ...]:
    """Static result of broadcasting ``in_shape`` to ``target`` (None marks a
    target dim only known at run time)."""
    target = tuple(target)
    if any(d is not None and d < 0 for d in target):
        raise ShapeError(f"invalid dimension in the target shape {target}")
    if in_shape is None:
        return target
    if len(in_shape) > len(target):
        raise ShapeError(f"cannot broadcast a tensor of rank {len(in_shape)} to the lower rank shape {target}")
    out = list(target)
    lead = len(target) - len(in_shape)
    for i, d in enumerate(in_shape):
        t = target[lead + i]
        if d is not None and d != 1 and t is not None and d != t:
            raise ShapeError(f"cannot broadcast shape {_shapes.fmt(in_shape)} to {target}")
        if t is None and d is not None and d != 1:
            out[lead + i] = d
    return tuple(out)


def _infer_broadcast_to(x, *, shape):
    return broadcast_shape_to(x.shape, shape), x.dtype


@define("broadcast_to", lowering=LAYOUT, inputs=("input",), attrs=("shape",), dtypes="all",
        infer=_infer_broadcast_to, doc="Broadcasts `input` to `shape` (NumPy rules).")
def _broadcast_to(x, *, shape):
    return np.array(np.broadcast_to(x, shape))


_infer_broadcast_to_dynamic = _dynamic_shape_rule(lambda src, target: broadcast_shape_to(src, target))


@define("broadcast_to_dynamic", lowering=LAYOUT, inputs=("input", "shape"), dtypes="all",
        infer=_infer_broadcast_to_dynamic, doc="broadcast_to with the shape given as a run-time 1-D tensor.")
def _broadcast_to_dynamic(x, shape):
    return np.array(np.broadcast_to(x, tuple(int(d) for d in shape)))


def broadcast_to(input: Any, shape: ShapeLike, name: Optional[str] = None) -> Tensor:
    """``input`` broadcast (NumPy rules) to ``shape``: a list of ints or a
    1-D integer tensor."""
    x = convert_to_tensor(input)
    static, dynamic = _shape_argument(shape, "broadcast_to shape")
    if dynamic is not None:
        return apply_op("broadcast_to_dynamic", [x, dynamic], name=name or "BroadcastTo")
    return apply_op("broadcast_to", [x], {"shape": static}, name=name or "BroadcastTo")


def _unbroadcast(g: Tensor, x: Tensor) -> Tensor:
    from .grad_support import sum_to_shape_of
    return sum_to_shape_of(g, x)


@gradient("broadcast_to")
def _broadcast_to_grad(op, g):
    return [_unbroadcast(g, op.inputs[0])]


@gradient("broadcast_to_dynamic")
def _broadcast_to_dynamic_grad(op, g):
    return [_unbroadcast(g, op.inputs[0]), None]


def _infer_tile(x, *, multiples):
    if any(m < 0 for m in multiples):
        raise InvalidArgumentError(f"multiples {multiples} must be >= 0")
    if x.shape is None:
        return tuple(0 if m == 0 else None for m in multiples), x.dtype
    if len(multiples) != len(x.shape):
        raise ShapeError(f"multiples {multiples} has {len(multiples)} entries for a tensor of rank {len(x.shape)}")
    return tuple(0 if m == 0 else None if d is None else d * m for d, m in zip(x.shape, multiples)), x.dtype


@define("tile", lowering=LAYOUT, inputs=("input",), attrs=("multiples",), dtypes="all", infer=_infer_tile,
        doc="Repeats `input` multiples[i] times along dim i.")
def _tile(x, *, multiples):
    return np.array(np.tile(x, multiples), dtype=x.dtype).reshape(tuple(d * m for d, m in zip(x.shape, multiples)))


def tile(input: Any, multiples: Union[Sequence[int], Tensor], name: Optional[str] = None) -> Tensor:
    """Repeat ``input`` ``multiples[i]`` times along dim i (one entry per dim)."""
    x = convert_to_tensor(input)
    if is_tensor_like(multiples):
        known = known_value(convert_to_tensor(multiples))
        if known is None:
            raise InvalidArgumentError("tile: multiples must be known while building the graph")
        multiples = known
    return apply_op("tile", [x], {"multiples": _static_ints(multiples, "tile multiples")}, name=name or "Tile")


@gradient("tile")
def _tile_grad(op, g):
    # View g as (m0, d0, m1, d1, ...) and sum over the repeat axes.
    x = op.inputs[0]
    multiples = op.attrs["multiples"]
    if not multiples:
        return [g]
    if _shapes.is_fully_defined(x.shape):
        split_shape = [v for m, d in zip(multiples, x.shape) for v in (m, d)]
    else:
        dims = shape_of(x)
        split_shape = [v for i, m in enumerate(multiples) for v in (m, dims[i])]
    from .reduce import reduce_sum
    parts = reshape(g, split_shape)
    return [_back_to_shape_of(reduce_sum(parts, axis=tuple(_brange(0, 2 * len(multiples), 2))), x)]


# ==========================================================================
# pad
# ==========================================================================
_PAD_MODES = ("CONSTANT", "REFLECT", "SYMMETRIC")


def _infer_pad(x, *, paddings, mode, constant_value=0):
    if mode not in _PAD_MODES:
        raise InvalidArgumentError(f"mode must be one of {', '.join(_PAD_MODES)}, got {mode!r}")
    if any(len(p) != 2 or p[0] < 0 or p[1] < 0 for p in paddings):
        raise InvalidArgumentError(f"paddings {paddings} must be pairs of non-negative ints")
    if x.shape is None:
        return (None,) * len(paddings), x.dtype
    if len(paddings) != len(x.shape):
        raise ShapeError(f"paddings has {len(paddings)} rows for a tensor of rank {len(x.shape)}")
    for i, ((b, a), d) in enumerate(zip(paddings, x.shape)):
        _check_mirror(mode, i, b, a, d)
    return tuple(None if d is None else d + b + a for (b, a), d in zip(paddings, x.shape)), x.dtype


def _check_mirror(mode: str, axis: int, before: int, after: int, dim: Optional[int],
                  error: type = ShapeError) -> None:
    if dim is None or mode == "CONSTANT":
        return
    limit = dim - 1 if mode == "REFLECT" else dim
    if before > limit or after > limit:
        raise error(f"{mode} padding ({before}, {after}) of axis {axis} must be at most {limit} "
                         f"for a dimension of size {dim}")


@define("pad", lowering=LAYOUT, inputs=("tensor",), attrs=("paddings", "mode", "constant_value"), dtypes="all",
        infer=_infer_pad,
        doc="Pads dim i with paddings[i] = (before, after) values: a constant, or a mirror image of the edge "
            "without (REFLECT) or with (SYMMETRIC) the edge element.")
def _pad(x, *, paddings, mode, constant_value=0):
    for i, (b, a) in enumerate(paddings):
        _check_mirror(mode, i, b, a, x.shape[i], ExecutionError)
    if not paddings:
        return x.copy()
    if mode == "CONSTANT":
        return np.pad(x, paddings, mode="constant", constant_values=np.asarray(constant_value, x.dtype))
    return np.pad(x, paddings, mode=mode.lower())


def _infer_pad_adjoint(g, *, paddings, mode):
    if g.shape is None:
        return (None,) * len(paddings), g.dtype
    if len(paddings) != len(g.shape):
        raise ShapeError(f"paddings has {len(paddings)} rows for a tensor of rank {len(g.shape)}")
    return tuple(None if d is None else d - b - a for (b, a), d in zip(paddings, g.shape)), g.dtype


@define("pad_adjoint", lowering=REDUCTION, inputs=("grad",), attrs=("paddings", "mode"), dtypes="numeric",
        infer=_infer_pad_adjoint,
        doc="Adjoint of a REFLECT/SYMMETRIC pad: folds the padded borders back onto the elements they copy.")
def _pad_adjoint(g, *, paddings, mode):
    for axis, (b, a) in enumerate(paddings):
        g = _fold_axis(g, axis, b, a, mode)
    return g


def _fold_axis(g: np.ndarray, axis: int, before: int, after: int, mode: str) -> np.ndarray:
    moved = np.moveaxis(g, axis, 0)
    n = moved.shape[0] - before - after
    x = moved[before:before + n].copy()
    head = moved[:before][::-1]
    tail = moved[before + n:][::-1]
    if mode == "REFLECT":      # padded[b-1-k] = x[k+1], padded[b+n+j] = x[n-2-j]
        x[1:before + 1] += head
        x[n - 1 - after:n - 1] += tail
    else:                      # padded[b-1-k] = x[k],   padded[b+n+j] = x[n-1-j]
        x[:before] += head
        x[n - after:n] += tail
    return np.moveaxis(x, 0, axis)


def pad(tensor: Any, paddings: Any, mode: str = "CONSTANT", constant_values: Any = 0,
        name: Optional[str] = None) -> Tensor:
    """Pad dim i with ``paddings[i] = [before, after]`` elements: the value
    ``constant_values`` (mode CONSTANT), a mirror image without the edge
    element (REFLECT) or with it (SYMMETRIC)."""
    x = convert_to_tensor(tensor)
    if is_tensor_like(paddings):
        known = known_value(convert_to_tensor(paddings))
        if known is None:
            raise InvalidArgumentError("pad: paddings must be known while building the graph")
        paddings = known
    arr = np.asarray(paddings)
    if arr.size and arr.dtype.kind not in "iu":
        raise DTypeError(f"pad: paddings must be integers, got {paddings!r}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        if not (arr.size == 0 and x.shape == ()):
            raise ShapeError(f"pad: paddings must have shape [rank, 2], got {arr.shape} ({paddings!r})")
    pads = tuple((int(b), int(a)) for b, a in arr.reshape(-1, 2))
    mode = str(mode).upper()
    if is_tensor_like(constant_values):
        known = known_value(convert_to_tensor(constant_values))
        if known is None:
            raise InvalidArgumentError("pad: constant_values must be known while building the graph")
        constant_values = known
    cv = np.asarray(constant_values)
    if cv.shape != ():
        raise ShapeError(f"pad: constant_values must be a scalar, got shape {cv.shape}")
    if x.dtype.kind in "iub" and cv.dtype.kind == "f" and cv != np.round(cv):
        raise DTypeError(f"pad: constant_values {constant_values!r} is not representable as {x.dtype.name}")
    return apply_op("pad", [x], {"paddings": pads, "mode": mode, "constant_value": cv.astype(x.dtype).item()},
                    name=name or "Pad")


@gradient("pad")
def _pad_grad(op, g):
    paddings, mode = op.attrs["paddings"], op.attrs["mode"]
    if mode == "CONSTANT":
        key = tuple(slice(b, -a if a else None) for b, a in paddings)
        return [strided_slice(g, key)]
    return [apply_op("pad_adjoint", [g], {"paddings": paddings, "mode": mode}, name="pad_adjoint")]


@gradient("pad_adjoint")
def _pad_adjoint_grad(op, g):
    return [apply_op("pad", [g], {"paddings": op.attrs["paddings"], "mode": op.attrs["mode"],
                                  "constant_value": 0}, name="Pad")]


# ==========================================================================
# shape queries
# ==========================================================================
def _infer_shape_of(x, *, out_type):
    return (None if x.shape is None else len(x.shape),), out_type


@define("shape_of", lowering=LAYOUT, inputs=("input",), attrs=("out_type",), dtypes="all",
        infer=_infer_shape_of, differentiable=False, doc="The run-time shape of `input` as a 1-D integer tensor.")
def _shape_of(x, *, out_type):
    return np.array(x.shape, dtype=out_type)


def _int_out_type(out_type: Any, what: str):
    dt = _dt.as_dtype(out_type)
    if dt not in _dt.INTEGERS:
        raise DTypeError(f"{what}: out_type must be int32 or int64, got {dt.name}")
    return dt


def shape_of(input: Any, out_type: Any = _dt.int32, name: Optional[str] = None) -> Tensor:
    """The shape of ``input`` at run time, a 1-D ``out_type`` tensor (for
    the static shape use ``input.shape``)."""
    x = convert_to_tensor(input)
    return apply_op("shape_of", [x], {"out_type": _int_out_type(out_type, "shape_of")}, name=name or "Shape")


def size(input: Any, out_type: Any = _dt.int32, name: Optional[str] = None) -> Tensor:
    """Number of elements of ``input`` (a scalar; constant when known)."""
    x = convert_to_tensor(input)
    dt = _int_out_type(out_type, "size")
    n = _shapes.num_elements(x.shape)
    if n is not None:
        return constant(n, dtype=dt, name=name or "Size")
    from .reduce import reduce_prod
    return reduce_prod(shape_of(x, dt), name=name or "Size")


def rank(input: Any, name: Optional[str] = None) -> Tensor:
    """Number of dims of ``input`` (an int32 scalar; constant when known)."""
    x = convert_to_tensor(input)
    if x.shape is not None:
        return constant(len(x.shape), dtype=_dt.int32, name=name or "Rank")
    with op_scope(name or "Rank", [x]):
        return strided_slice(shape_of(shape_of(x)), (0,))


# ==========================================================================
# filled tensors
# ==========================================================================
def _infer_fill_like(like, *, value, dtype):
    return like.shape, dtype


@define("fill_like", lowering=ELEMENTWISE, inputs=("like",), attrs=("value", "dtype"), dtypes="all",
        infer=_infer_fill_like, differentiable=False,
        doc="A tensor of `like`'s run-time shape filled with `value` (zeros_like, ones_like).")
def _fill_like(like, *, value, dtype):
    return np.full(like.shape, value, dtype=dtype)


def _fill_like_fn(value: int, default_name: str):
    def fn(tensor: Any, dtype: Any = None, name: Optional[str] = None) -> Tensor:
        x = convert_to_tensor(tensor)
        dt = x.dtype if dtype is None else _dt.as_dtype(dtype)
        return apply_op("fill_like", [x], {"value": value, "dtype": dt}, name=name or default_name)
    fn.__name__ = default_name
    fn.__doc__ = (f"A tensor of {value}s with the shape of ``tensor`` (read at run time, so None dims "
                  f"work) and its dtype unless ``dtype`` is given.")
    return fn


zeros_like = _fill_like_fn(0, "zeros_like")
ones_like = _fill_like_fn(1, "ones_like")


def fill(dims: ShapeLike, value: Any, name: Optional[str] = None) -> Tensor:
    """A tensor of shape ``dims`` (list of ints or 1-D integer tensor)
    filled with the scalar ``value`` (a Python number or scalar tensor)."""
    v = convert_to_tensor(value)
    if v.shape is not None and v.shape != ():
        raise ShapeError(f"fill: value must be a scalar, got shape {_shapes.fmt(v.shape)} ({v.name})")
    return broadcast_to(v, dims, name=name or "Fill")


def zeros(shape: ShapeLike, dtype: Any = _dt.float32, name: Optional[str] = None) -> Tensor:
    """A tensor of zeros of ``shape`` (list of ints or 1-D integer tensor)."""
    return fill(shape, constant(0, dtype=_dt.as_dtype(dtype)), name=name or "zeros")


def ones(shape: ShapeLike, dtype: Any = _dt.float32, name: Optional[str] = None) -> Tensor:
    """A tensor of ones of ``shape`` (list of ints or 1-D integer tensor)."""
    return fill(shape, constant(1, dtype=_dt.as_dtype(dtype)), name=name or "ones")


# ==========================================================================
# one_hot
# ==========================================================================
def _infer_one_hot(indices, *, depth, on_value, off_value, axis, dtype):
    require_dtype(indices, _dt.INTEGERS, "indices")
    if depth < 0:
        raise InvalidArgumentError(f"depth must be >= 0, got {depth}")
    if indices.shape is None:
        return None, dtype
    r = len(indices.shape)
    if not -1 <= axis <= r:
        raise ShapeError(f"axis {axis} is out of range for one_hot of indices of rank {r} "
                         f"(must be -1 or in [0, {r}])")
    a = r if axis == -1 else axis
    return indices.shape[:a] + (depth,) + indices.shape[a:], dtype


@define("one_hot", lowering=LAYOUT, inputs=("indices",), attrs=("depth", "on_value", "off_value", "axis", "dtype"),
        dtypes="all", infer=_infer_one_hot, differentiable=False,
        doc="on_value where the new `axis` index equals `indices`, off_value elsewhere (out-of-range "
            "indices give an all-off row).")
def _one_hot(indices, *, depth, on_value, off_value, axis, dtype):
    hot = indices[..., None] == np.arange(depth, dtype=indices.dtype)
    out = np.where(hot, np.asarray(on_value, dtype), np.asarray(off_value, dtype)).astype(dtype)
    return np.moveaxis(out, -1, indices.ndim if axis == -1 else axis)


def one_hot(indices: Any, depth: int, on_value: Any = 1, off_value: Any = 0, axis: int = -1,
            dtype: Any = _dt.float32, name: Optional[str] = None) -> Tensor:
    """One-hot encoding: a new dim of size ``depth`` at ``axis`` (-1: last)
    holding ``on_value`` at each index and ``off_value`` elsewhere."""
    idx = convert_to_tensor(indices)
    dt = _dt.as_dtype(dtype)
    if is_tensor_like(depth):
        known = known_value(convert_to_tensor(depth))
        if known is None:
            raise InvalidArgumentError("one_hot: depth must be known while building the graph")
        depth = known
    values = []
    for v, what in ((on_value, "on_value"), (off_value, "off_value")):
        if is_tensor_like(v):
            known = known_value(convert_to_tensor(v))
            if known is None:
                raise InvalidArgumentError(f"one_hot: {what} must be known while building the graph")
            v = known
        values.append(np.asarray(v).astype(dt).item())
    return apply_op("one_hot", [idx], {"depth": int(depth), "on_value": values[0], "off_value": values[1],
                                       "axis": int(axis), "dtype": dt}, name=name or "one_hot")


# ==========================================================================
# range / reverse
# ==========================================================================
def _infer_range(start, limit, delta):
    dtype = same_dtype(start, limit, delta)
    if dtype not in _dt.NUMERIC:
        raise DTypeError(f"range needs numeric bounds, got {dtype.name}")
    for t, what in ((start, "start"), (limit, "limit"), (delta, "delta")):
        if t.shape is not None and t.shape != ():
            raise ShapeError(f"{what} must be a scalar, got shape {_shapes.fmt(t.shape)}")
    return (None,), dtype


@define("range", lowering=ELEMENTWISE, inputs=("start", "limit", "delta"), dtypes="numeric",
        infer=_infer_range, differentiable=False,
        doc="start, start+delta, ... up to (excluding) limit, with bounds known only at run time.")
def _range_op(start, limit, delta):
    if delta == 0:
        raise ValueError("delta must not be zero")
    return np.arange(start, limit, delta, dtype=start.dtype)


def range(start: Any, limit: Any = None, delta: Any = 1, dtype: Any = None,  # noqa: A001 (TF's name)
          name: Optional[str] = None) -> Tensor:
    """``start, start+delta, ...`` below ``limit`` (``range(n)`` counts from
    0). Python numbers give a constant (int32, or float32 when any bound is
    a float); tensor bounds give a run-time op."""
    if limit is None:
        start, limit = 0, start
    bounds = (start, limit, delta)
    if not any(is_tensor_like(b) for b in bounds):
        if dtype is None:
            dt = _dt.float32 if any(np.asarray(b).dtype.kind == "f" for b in bounds) else _dt.int32
        else:
            dt = _dt.as_dtype(dtype)
        if delta == 0:
            raise InvalidArgumentError("range: delta must not be zero")
        return constant(np.arange(start, limit, delta).astype(dt), name=name or "range")
    tensors = [convert_to_tensor(b) for b in bounds if is_tensor_like(b)]
    dt = _dt.as_dtype(dtype) if dtype is not None else _dt.promote(*(t.dtype for t in tensors))
    from .elementwise import cast
    parts = [cast(convert_to_tensor(b), dt) if is_tensor_like(b) else constant(b, dtype=dt) for b in bounds]
    return apply_op("range", parts, name=name or "range")


def reverse(tensor: Any, axis: Union[int, Sequence[int]], name: Optional[str] = None) -> Tensor:
    """``tensor`` with the order of elements along each of ``axis`` reversed."""
    x = convert_to_tensor(tensor)
    r = _rank(x)
    if r is None:
        raise ShapeError(f"reverse: the rank of {x.name} must be known")
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = _shapes.normalize_axes(axes, r)
    key = tuple(slice(None, None, -1) if i in axes else slice(None) for i in _brange(r))
    return strided_slice(x, key, name=name or "ReverseV2")
