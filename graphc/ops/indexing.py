"""Indexing: NumPy basic indexing (``Tensor.__getitem__``), gather,
gather_nd, unsorted_segment_sum, and the scatter-adds that are the adjoints
of the gathers.

Basic indexing is one ``strided_slice`` op whose ``spec`` attribute is a
normalized, hashable description of the key, one entry per item:

* ``("s", start, stop, step)``: a slice (start/stop None or int, step a
  non-zero int), applied with Python's rules to the run-time dim size;
* ``("i", index)``: an integer index (negative counts from the end), which
  drops the dim;
* ``("n",)``: ``None``/newaxis, a new dim of size 1;
* ``("e",)``: an Ellipsis, kept only when the input rank is unknown.

When the rank is known the spec is expanded to one slice/index entry per
input dim (an Ellipsis or the implicit trailing dims become full slices),
so equal keys give equal attributes.

Gathers take a ``mode`` for indices outside ``[0, dim)``: ``"error"`` (gc.gather,
an ExecutionError at run time), ``"wrap"`` (Python negative indices, for
``t[i]`` with a tensor ``i``) and ``"zero"`` (out-of-range rows read as zero and
their updates are dropped; the adjoint of unsorted_segment_sum's dropped
negative ids).
"""
from __future__ import annotations

import builtins
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import DTypeError, ExecutionError, InvalidArgumentError, ShapeError
from ..graph import Tensor
from .core import apply_op, convert_to_tensor, is_tensor_like
from .registry import LAYOUT, REDUCTION, define, gradient
from .rules import require_dtype

__all__ = ["getitem", "gather", "gather_nd", "unsorted_segment_sum"]

_brange = builtins.range
Spec = Tuple[tuple, ...]
_FULL = ("s", None, None, 1)
_GATHER_MODES = ("error", "wrap", "zero")


# ==========================================================================
# strided_slice: basic indexing
# ==========================================================================
def _check_entries(spec: Sequence[tuple]) -> None:
    if sum(1 for e in spec if e[0] == "e") > 1:
        raise InvalidArgumentError("an index can only have a single ellipsis ('...')")
    for e in spec:
        if e[0] == "s" and e[3] == 0:
            raise InvalidArgumentError("slice step cannot be zero")
        if e[0] not in ("s", "i", "n", "e"):
            raise InvalidArgumentError(f"unknown index entry {e!r}")


def expand_spec(spec: Sequence[tuple], rank: int, tensor_name: str = "the tensor") -> Spec:
    """The spec with one slice/index entry per input dim (Ellipsis and
    implicit trailing dims become full slices)."""
    _check_entries(spec)
    consumed = sum(1 for e in spec if e[0] in "si")
    if consumed > rank:
        raise ShapeError(f"too many indices for tensor {tensor_name}: it has rank {rank} but "
                         f"{consumed} were indexed")
    fill = (_FULL,) * (rank - consumed)
    out: List[tuple] = []
    for e in spec:
        if e[0] == "e":
            out.extend(fill)
            fill = ()
        else:
            out.append(tuple(e))
    out.extend(fill)
    return tuple(out)


def _infer_strided_slice(x, *, spec):
    if x.shape is None:
        _check_entries(spec)
        return None, x.dtype
    full = expand_spec(spec, len(x.shape), x.name)
    out: List[Optional[int]] = []
    axis = 0
    for e in full:
        if e[0] == "n":
            out.append(1)
            continue
        d = x.shape[axis]
        if e[0] == "i":
            if d is not None and not -d <= e[1] < d:
                raise ShapeError(f"index {e[1]} is out of bounds for axis {axis} with size {d} "
                                 f"of tensor {x.name}")
        else:
            out.append(None if d is None else len(_brange(*slice(e[1], e[2], e[3]).indices(d))))
        axis += 1
    return tuple(out), x.dtype


def _numpy_key(spec: Spec) -> tuple:
    parts = {"s": lambda e: slice(e[1], e[2], e[3]), "i": lambda e: e[1],
             "n": lambda e: None, "e": lambda e: Ellipsis}
    return tuple(parts[e[0]](e) for e in spec)


@define("strided_slice", lowering=LAYOUT, inputs=("input",), attrs=("spec",), dtypes="all",
        infer=_infer_strided_slice,
        doc="NumPy basic indexing: slices (any step), integer indices, newaxis, ellipsis.")
def _strided_slice(x, *, spec):
    return np.array(x[_numpy_key(spec)])


def _infer_strided_slice_grad(dy, like, *, spec):
    return like.shape, dy.dtype


@define("strided_slice_grad", lowering=LAYOUT, inputs=("grad", "like"), attrs=("spec",), dtypes="numeric",
        infer=_infer_strided_slice_grad,
        doc="Zeros of `like`'s shape with `grad` written where strided_slice(like, spec) reads "
            "(the adjoint of strided_slice).")
def _strided_slice_grad(dy, like, *, spec):
    out = np.zeros(like.shape, dtype=dy.dtype)
    out[_numpy_key(spec)] = dy
    return out


def _spec_attr(entries: Sequence[tuple], x: Tensor) -> Spec:
    """Expanded spec when the key is valid; otherwise the raw entries, so
    that the op's shape rule reports the problem with the op's name."""
    if x.shape is None:
        return tuple(entries)
    try:
        return expand_spec(entries, len(x.shape), x.name)
    except (ShapeError, InvalidArgumentError):
        return tuple(entries)


def _bound(v: Any, what: str) -> Optional[int]:
    if v is None:
        return None
    if is_tensor_like(v):
        from .shape import known_value
        known = known_value(convert_to_tensor(v))
        if known is None or known.shape != () or known.dtype.kind not in "iu":
            raise InvalidArgumentError(f"slice {what} must be a Python int or a scalar integer known while "
                                       f"building the graph; use gc.gather for run-time indices")
        return int(known)
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    raise InvalidArgumentError(f"slice {what} must be an int or None, got {v!r}")


def _slice_entry(s: slice) -> tuple:
    step = _bound(s.step, "step")
    return ("s", _bound(s.start, "start"), _bound(s.stop, "stop"), 1 if step is None else step)


def strided_slice(tensor: Any, key: Any, name: Optional[str] = None) -> Tensor:
    """``tensor[key]`` for a basic NumPy key (ints, slices, None, Ellipsis)."""
    x = convert_to_tensor(tensor)
    entries, tensors = _parse_key(key)
    if tensors:
        raise InvalidArgumentError("strided_slice takes only ints, slices, None and Ellipsis; use getitem")
    return apply_op("strided_slice", [x], {"spec": _spec_attr(entries, x)}, name=name or "strided_slice")


def _parse_key(key: Any) -> Tuple[List[tuple], List[Tuple[int, Tensor]]]:
    """Spec entries for a key, with each tensor index replaced by a full
    slice and listed as (entry position, tensor)."""
    items = key if isinstance(key, tuple) else (key,)
    entries: List[tuple] = []
    tensors: List[Tuple[int, Tensor]] = []
    for k in items:
        if k is None:
            entries.append(("n",))
        elif k is Ellipsis:
            entries.append(("e",))
        elif isinstance(k, (bool, np.bool_)):
            raise InvalidArgumentError("boolean indices are not supported (the result shape would depend "
                                       "on the data); use gc.where")
        elif isinstance(k, (int, np.integer)):
            entries.append(("i", int(k)))
        elif isinstance(k, slice):
            entries.append(_slice_entry(k))
        elif is_tensor_like(k) or isinstance(k, (list, np.ndarray)):
            t = convert_to_tensor(k)
            if t.dtype not in _dt.INTEGERS:
                raise DTypeError(f"tensor indices must be int32/int64, got {t.dtype.name} ({t.name}); "
                                 "boolean masks are not supported")
            tensors.append((len(entries), t))
            entries.append(_FULL)
        else:
            raise TypeError(f"cannot index a graphc Tensor with {type(k).__name__} {k!r}")
    return entries, tensors


def _output_axis(entries: Sequence[tuple], position: int, rank: Optional[int]) -> int:
    """The result dim that entry ``position`` of the key produces."""
    axis = 0
    consumed = sum(1 for e in entries if e[0] in "si")
    for e in entries[:position]:
        if e[0] in "sn":
            axis += 1
        elif e[0] == "e":
            if rank is None:
                raise ShapeError("a tensor index after '...' needs a tensor of known rank")
            axis += rank - consumed
    return axis


def getitem(tensor: Any, key: Any, name: Optional[str] = None) -> Tensor:
    """NumPy indexing, ``tensor[key]``: basic indexing (ints, slices with any
    step, None, Ellipsis; negative values count from the end) as one
    strided_slice op. Integer tensors (or lists/arrays) as indices gather:
    any number of scalar index tensors, or a single non-scalar one with no
    other integer indices (NumPy's rule for one index array)."""
    x = convert_to_tensor(tensor)
    entries, tensors = _parse_key(key)
    spec = _spec_attr(entries, x)
    if not tensors:
        return apply_op("strided_slice", [x], {"spec": spec}, name=name or "strided_slice")
    array_like = [t for _, t in tensors if t.shape != ()]
    if array_like and (len(tensors) > 1 or any(e[0] == "i" for e in entries)):
        raise InvalidArgumentError("indexing with an index array is supported only when it is the sole "
                                   "integer index; combine gc.gather calls instead")
    rank = None if x.shape is None else len(x.shape)
    axes = [(_output_axis(entries, pos, rank), t) for pos, t in tensors]
    y = x
    if any(e != _FULL for e in spec):
        y = apply_op("strided_slice", [x], {"spec": spec}, name="strided_slice")
    # right to left, so removing a dim never shifts the dims still to gather
    for axis, t in sorted(axes, key=lambda at: -at[0]):
        y = _gather(y, t, axis, 0, "wrap", name=name)
    return y


@gradient("strided_slice")
def _strided_slice_grad_rule(op, g):
    return [apply_op("strided_slice_grad", [g, op.inputs[0]], {"spec": op.attrs["spec"]},
                     name="strided_slice_grad")]


@gradient("strided_slice_grad")
def _strided_slice_grad_grad(op, g):
    return [apply_op("strided_slice", [g], {"spec": op.attrs["spec"]}, name="strided_slice"), None]


# ==========================================================================
# gather and its adjoint
# ==========================================================================
def _checked_indices(indices: np.ndarray, dim: int, mode: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Indices made non-negative and in range, plus (mode "zero") the mask
    of those that were valid. Raises ExecutionError for a bad index."""
    idx = indices.astype(np.int64)
    if mode == "zero":
        valid = (idx >= 0) & (idx < dim)
        return np.where(valid, idx, 0), valid
    low = -dim if mode == "wrap" else 0
    bad = (idx < low) | (idx >= dim)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ExecutionError(f"indices{list(pos)} = {int(idx[pos])} is out of range [{low}, {dim})")
    return (np.where(idx < 0, idx + dim, idx) if mode == "wrap" else idx), None


def _gather_layout(p_shape: tuple, idx_shape: tuple, axis: int, batch_dims: int) -> Tuple[int, tuple]:
    """Normalized axis and result shape of a gather, checking run-time shapes."""
    if not p_shape:
        raise ValueError("params must have rank >= 1")
    axis = axis % len(p_shape)
    if p_shape[:batch_dims] != idx_shape[:batch_dims]:
        raise ValueError(f"batch dims of params {p_shape} and indices {idx_shape} differ")
    return axis, p_shape[:axis] + idx_shape[batch_dims:] + p_shape[axis + 1:]


def _valid_mask(valid: np.ndarray, batch_dims: int, axis: int, p_rank: int) -> np.ndarray:
    """The index mask shaped to broadcast against the gather result."""
    b = batch_dims
    shape = valid.shape[:b] + (1,) * (axis - b) + valid.shape[b:] + (1,) * (p_rank - axis - 1)
    return valid.reshape(shape)


def _batched(params: np.ndarray, idx: np.ndarray, b: int):
    nb = int(np.prod(params.shape[:b], dtype=np.int64))
    return nb, params.reshape((nb,) + params.shape[b:]), idx.reshape((nb,) + idx.shape[b:])


def _infer_gather(params, indices, *, axis, batch_dims, mode):
    require_dtype(indices, _dt.INTEGERS, "indices")
    if mode not in _GATHER_MODES:
        raise InvalidArgumentError(f"mode must be one of {_GATHER_MODES}, got {mode!r}")
    if params.shape is None or indices.shape is None:
        return None, params.dtype
    b = batch_dims
    if not 0 <= b <= len(indices.shape):
        raise ShapeError(f"batch_dims {b} is out of range for indices of rank {len(indices.shape)}")
    a = _shapes.normalize_axis(axis, len(params.shape))
    if b > a:
        raise ShapeError(f"batch_dims ({b}) must be <= axis ({a})")
    try:
        batch = _shapes.merge(params.shape[:b], indices.shape[:b])
    except ShapeError:
        raise ShapeError(f"the first {b} (batch) dims of params and indices differ") from None
    return batch + params.shape[b:a] + indices.shape[b:] + params.shape[a + 1:], params.dtype


@define("gather", lowering=LAYOUT, inputs=("params", "indices"), attrs=("axis", "batch_dims", "mode"),
        dtypes="all", infer=_infer_gather,
        doc="Slices of `params` along `axis` at `indices` (any shape), per batch of the first `batch_dims` dims.")
def _gather_compute(params, indices, *, axis, batch_dims, mode):
    axis, out_shape = _gather_layout(params.shape, indices.shape, axis, batch_dims)
    idx, valid = _checked_indices(indices, params.shape[axis], mode)
    if params.shape[axis] == 0 or int(np.prod(out_shape, dtype=np.int64)) == 0:
        return np.zeros(out_shape, dtype=params.dtype)
    if batch_dims == 0:
        out = np.take(params, idx, axis=axis)
    else:
        nb, p, i = _batched(params, idx, batch_dims)
        out = np.stack([np.take(p[n], i[n], axis=axis - batch_dims) for n in _brange(nb)]).reshape(out_shape)
    if valid is not None:
        out = np.where(_valid_mask(valid, batch_dims, axis, params.ndim), out, np.zeros((), params.dtype))
    return out


def _infer_gather_grad(updates, indices, like, *, axis, batch_dims, mode):
    require_dtype(indices, _dt.INTEGERS, "indices")
    return like.shape, updates.dtype


@define("gather_grad", lowering=REDUCTION, inputs=("updates", "indices", "like"),
        attrs=("axis", "batch_dims", "mode"), dtypes="numeric", infer=_infer_gather_grad,
        doc="Zeros of `like`'s shape with `updates` added where gather(like, indices) reads "
            "(a scatter-add; the adjoint of gather).")
def _gather_grad_compute(updates, indices, like, *, axis, batch_dims, mode):
    axis, _ = _gather_layout(like.shape, indices.shape, axis, batch_dims)
    out = np.zeros(like.shape, dtype=updates.dtype)
    idx, valid = _checked_indices(indices, like.shape[axis], mode)
    if valid is not None:
        updates = np.where(_valid_mask(valid, batch_dims, axis, like.ndim), updates, np.zeros((), updates.dtype))
    if out.size == 0 or updates.size == 0:
        return out
    b = batch_dims
    nb, o, i = _batched(out, idx, b)
    u = updates.reshape((nb,) + updates.shape[b:])
    a, k = axis - b, idx.ndim - b
    for n in _brange(nb):
        # o[n] is a view of out: moving the gathered axis first lets add.at
        # scatter whole slices at once
        np.add.at(np.moveaxis(o[n], a, 0), i[n], np.moveaxis(u[n], tuple(_brange(a, a + k)), tuple(_brange(k))))
    return out


def _gather(params: Tensor, indices: Tensor, axis: int, batch_dims: int, mode: str,
            name: Optional[str] = None) -> Tensor:
    return apply_op("gather", [params, indices], {"axis": axis, "batch_dims": batch_dims, "mode": mode},
                    name=name or "GatherV2")


def _static_int(value: Any, what: str) -> int:
    if is_tensor_like(value):
        from .shape import known_value
        known = known_value(convert_to_tensor(value))
        if known is None or known.shape != ():
            raise InvalidArgumentError(f"{what} must be an int known while building the graph")
        value = known
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, np.ndarray)):
        raise InvalidArgumentError(f"{what} must be an int, got {value!r}")
    return int(value)


def gather(params: Any, indices: Any, axis: Optional[int] = None, batch_dims: int = 0,
           name: Optional[str] = None) -> Tensor:
    """Slices of ``params`` along ``axis`` (default: ``batch_dims``, i.e. 0)
    at ``indices`` (int32/int64, any shape): the result has shape
    ``params.shape[:axis] + indices.shape[batch_dims:] + params.shape[axis+1:]``.
    An index outside ``[0, dim)`` is an ExecutionError at run time."""
    p = convert_to_tensor(params)
    idx = convert_to_tensor(indices)
    b = _static_int(batch_dims, "gather batch_dims")
    if b < 0 and idx.shape is not None:
        b += len(idx.shape)
    a = b if axis is None else _static_int(axis, "gather axis")
    if p.shape is not None and -len(p.shape) <= a < len(p.shape):
        a %= len(p.shape)
    return _gather(p, idx, a, b, "error", name=name)


@gradient("gather")
def _gather_grad_rule(op, g):
    params, indices = op.inputs
    return [apply_op("gather_grad", [g, indices, params], dict(op.attrs), name="gather_grad"), None]


@gradient("gather_grad")
def _gather_grad_grad(op, g):
    return [apply_op("gather", [g, op.inputs[1]], dict(op.attrs), name="GatherV2"), None, None]


# ==========================================================================
# gather_nd and its adjoint
# ==========================================================================
def _infer_gather_nd(params, indices):
    require_dtype(indices, _dt.INTEGERS, "indices")
    if indices.shape is not None and len(indices.shape) == 0:
        raise ShapeError("indices must have rank >= 1 (its last dim indexes params)")
    if params.shape is None or indices.shape is None or indices.shape[-1] is None:
        return None, params.dtype
    k = indices.shape[-1]
    if k > len(params.shape):
        raise ShapeError(f"indices.shape[-1] = {k} is larger than the rank {len(params.shape)} of params")
    return indices.shape[:-1] + params.shape[k:], params.dtype


def _nd_key(indices: np.ndarray, p_shape: tuple) -> tuple:
    """The advanced-indexing key of gather_nd indices, range-checked."""
    k = indices.shape[-1]
    if k > len(p_shape):
        raise ValueError(f"indices.shape[-1] = {k} is larger than the rank of params {p_shape}")
    idx = indices.astype(np.int64)
    for j in _brange(k):
        bad = (idx[..., j] < 0) | (idx[..., j] >= p_shape[j])
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0]) + (j,)
            raise ExecutionError(f"indices{list(pos)} = {int(idx[pos])} is out of range [0, {p_shape[j]})")
    return tuple(np.moveaxis(idx, -1, 0))


@define("gather_nd", lowering=LAYOUT, inputs=("params", "indices"), dtypes="all", infer=_infer_gather_nd,
        doc="params[indices[..., 0], ..., indices[..., k-1]] for each index vector in the last dim of `indices`.")
def _gather_nd_compute(params, indices):
    key = _nd_key(indices, params.shape)
    out_shape = indices.shape[:-1] + params.shape[indices.shape[-1]:]
    if not key:
        return np.array(np.broadcast_to(params, out_shape))
    return np.array(params[key]).reshape(out_shape)


def _infer_gather_nd_grad(updates, indices, like):
    require_dtype(indices, _dt.INTEGERS, "indices")
    return like.shape, updates.dtype


@define("gather_nd_grad", lowering=REDUCTION, inputs=("updates", "indices", "like"), dtypes="numeric",
        infer=_infer_gather_nd_grad,
        doc="Zeros of `like`'s shape with `updates` added where gather_nd(like, indices) reads (adjoint of gather_nd).")
def _gather_nd_grad_compute(updates, indices, like):
    key = _nd_key(indices, like.shape)
    out = np.zeros(like.shape, dtype=updates.dtype)
    if not key:
        n = int(np.prod(indices.shape[:-1], dtype=np.int64))
        return updates.reshape((n,) + like.shape).sum(axis=0, dtype=updates.dtype)
    np.add.at(out, key, updates)
    return out


def gather_nd(params: Any, indices: Any, batch_dims: int = 0, name: Optional[str] = None) -> Tensor:
    """Gather with index vectors: each ``indices[..., :]`` (length k) picks
    ``params[i0, ..., ik-1]``; the result has shape
    ``indices.shape[:-1] + params.shape[k:]``."""
    if batch_dims != 0:
        raise InvalidArgumentError("gather_nd supports only batch_dims=0; fold batch dims into the indices")
    return apply_op("gather_nd", [convert_to_tensor(params), convert_to_tensor(indices)], name=name or "GatherNd")


@gradient("gather_nd")
def _gather_nd_grad_rule(op, g):
    params, indices = op.inputs
    return [apply_op("gather_nd_grad", [g, indices, params], name="gather_nd_grad"), None]


@gradient("gather_nd_grad")
def _gather_nd_grad_grad(op, g):
    return [apply_op("gather_nd", [g, op.inputs[1]], name="GatherNd"), None, None]


# ==========================================================================
# unsorted_segment_sum
# ==========================================================================
def _infer_segment_sum(data, segment_ids, num_segments):
    require_dtype(data, _dt.NUMERIC, "data")
    require_dtype(segment_ids, _dt.INTEGERS, "segment_ids")
    require_dtype(num_segments, _dt.INTEGERS, "num_segments")
    if num_segments.shape is not None and num_segments.shape != ():
        raise ShapeError(f"num_segments must be a scalar, got shape {_shapes.fmt(num_segments.shape)}")
    from .shape import partial_scalar_value
    n = partial_scalar_value(num_segments)
    if n is not None and n < 0:
        raise InvalidArgumentError(f"num_segments must be >= 0, got {n}")
    if data.shape is None or segment_ids.shape is None:
        return None, data.dtype
    k = len(segment_ids.shape)
    if k > len(data.shape):
        raise ShapeError(f"segment_ids of rank {k} cannot index data of rank {len(data.shape)}")
    try:
        _shapes.merge(data.shape[:k], segment_ids.shape)
    except ShapeError:
        raise ShapeError(f"the shape of segment_ids {_shapes.fmt(segment_ids.shape)} must be a prefix of "
                         f"the shape of data {_shapes.fmt(data.shape)}") from None
    return (n,) + data.shape[k:], data.dtype


@define("unsorted_segment_sum", lowering=REDUCTION, inputs=("data", "segment_ids", "num_segments"),
        dtypes="numeric", infer=_infer_segment_sum,
        doc="out[j] = sum of data[i] over all i with segment_ids[i] == j (negative ids are dropped).")
def _segment_sum(data, segment_ids, num_segments):
    n = int(num_segments)
    if n < 0:
        raise ValueError(f"num_segments must be >= 0, got {n}")
    ids = segment_ids.astype(np.int64)
    if data.shape[:ids.ndim] != ids.shape:
        raise ValueError(f"the shape of segment_ids {ids.shape} is not a prefix of the data shape {data.shape}")
    too_big = ids >= n
    if too_big.any():
        pos = tuple(int(i) for i in np.argwhere(too_big)[0])
        raise ExecutionError(f"segment_ids{list(pos)} = {int(ids[pos])} is out of range [0, {n})")
    out = np.zeros((n,) + data.shape[ids.ndim:], dtype=data.dtype)
    keep = ids >= 0
    np.add.at(out, ids[keep], data[keep])
    return out


def unsorted_segment_sum(data: Any, segment_ids: Any, num_segments: Any, name: Optional[str] = None) -> Tensor:
    """Sums of the slices of ``data`` that share a segment id:
    ``out[j] = sum(data[i] for i with segment_ids[i] == j)``, of shape
    ``(num_segments,) + data.shape[segment_ids.ndim:]``. Negative ids are
    dropped; an id >= num_segments is an ExecutionError."""
    d = convert_to_tensor(data)
    ids = convert_to_tensor(segment_ids)
    n = convert_to_tensor(num_segments)
    return apply_op("unsorted_segment_sum", [d, ids, n], name=name or "UnsortedSegmentSum")


@gradient("unsorted_segment_sum")
def _segment_sum_grad(op, g):
    return [_gather(g, op.inputs[1], 0, 0, "zero"), None, None]
