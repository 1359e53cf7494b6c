"""Linear algebra: ``matmul`` (the one primitive, a BLAS call on native
backends) and composites built on it and on the layout/reduction ops:
``einsum``, ``tensordot``, ``norm``, ``trace``, ``matrix_transpose``.

``einsum`` contracts operands pairwise, left to right. A pair becomes one
batched ``matmul`` when its contracted, left-free and right-free labels can
each be flattened into one dimension (always when each group has at most one
label; otherwise when the static shapes allow a reshape); the remaining cases
(outer products, Hadamard products, dims only known at run time) use
broadcasting multiplication and ``reduce_sum``, which the fusion pass turns
into one loop nest.
"""
from __future__ import annotations

import string
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import dtypes as _dt
from .. import shapes as _shapes
from ..errors import InvalidArgumentError, ShapeError
from ..graph import Tensor
from .core import apply_op, constant, convert_operands, convert_to_tensor, op_scope
from .registry import LIBRARY, define, gradient
from .rules import require_dtype, same_dtype

__all__ = ["matmul", "einsum", "tensordot", "norm", "linalg_norm", "trace", "matrix_transpose"]


# ---- matmul --------------------------------------------------------------------------
def _flag_text(transpose_a: bool, transpose_b: bool) -> str:
    flags = [f for f, on in (("transpose_a", transpose_a), ("transpose_b", transpose_b)) if on]
    return f" (with {', '.join(flags)})" if flags else ""


def _infer_matmul(a, b, *, transpose_a, transpose_b):
    dtype = same_dtype(a, b)
    require_dtype(a, _dt.NUMERIC, "a")
    if a.shape is None or b.shape is None:
        return None, dtype
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ShapeError(f"matmul needs operands of rank >= 2, got shapes {_shapes.fmt(a.shape)} "
                         f"and {_shapes.fmt(b.shape)}")
    m, ka = a.shape[-2:] if not transpose_a else a.shape[-1:-3:-1]
    kb, n = b.shape[-2:] if not transpose_b else b.shape[-1:-3:-1]
    if ka is not None and kb is not None and ka != kb:
        raise ShapeError(f"cannot multiply {_shapes.fmt(a.shape)} by {_shapes.fmt(b.shape)}"
                         f"{_flag_text(transpose_a, transpose_b)}: inner dimensions {ka} and {kb} differ")
    try:
        batch = _shapes.broadcast(a.shape[:-2], b.shape[:-2])
    except ShapeError:
        raise ShapeError(f"batch dimensions of {_shapes.fmt(a.shape)} and {_shapes.fmt(b.shape)} "
                         "cannot be broadcast together") from None
    return batch + (m, n), dtype


@define("matmul", lowering=LIBRARY, inputs=("a", "b"), attrs=("transpose_a", "transpose_b"),
        dtypes="numeric", infer=_infer_matmul,
        doc="Batched matrix product op(a) @ op(b); leading (batch) dims broadcast like NumPy.")
def _matmul(a, b, *, transpose_a, transpose_b):
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def matmul(a: Any, b: Any, transpose_a: bool = False, transpose_b: bool = False,
           name: Optional[str] = None) -> Tensor:
    """Matrix product of the last two dims, batched over the leading dims
    (which broadcast like NumPy). Operands of rank >= 2 as in TF; as in NumPy's
    ``@``, a rank-1 operand is promoted to a matrix (a row on the left, a
    column on the right) and the added dim is removed from the result, which
    is only allowed without transpose flags."""
    a, b = convert_operands(a, b)
    ranks = (a.ndim, b.ndim)
    if 1 not in ranks:
        return apply_op("matmul", [a, b], {"transpose_a": bool(transpose_a), "transpose_b": bool(transpose_b)},
                        name=name or "MatMul")
    if transpose_a or transpose_b:
        raise ShapeError(f"matmul of shapes {_shapes.fmt(a.shape)} and {_shapes.fmt(b.shape)}: transpose flags "
                         "need operands of rank >= 2 (a rank-1 operand has nothing to transpose)")
    from .shape import expand_dims, squeeze
    with op_scope(name or "MatMul", [a, b]):
        a2 = expand_dims(a, 0) if a.ndim == 1 else a
        b2 = expand_dims(b, -1) if b.ndim == 1 else b
        out = apply_op("matmul", [a2, b2], {"transpose_a": False, "transpose_b": False})
        if b.ndim == 1:
            out = squeeze(out, axis=-1)
        if a.ndim == 1:
            out = squeeze(out, axis=-1 if b.ndim == 1 else -2)
        return out


@gradient("matmul")
def _matmul_grad(op, g):
    from .grad_support import sum_to_shape_of
    a, b = op.inputs
    ta, tb = op.attrs["transpose_a"], op.attrs["transpose_b"]
    # C = op(A) op(B); each case writes dA, dB without materializing a transpose.
    if not ta and not tb:
        ga, gb = matmul(g, b, transpose_b=True), matmul(a, g, transpose_a=True)
    elif not ta and tb:
        ga, gb = matmul(g, b), matmul(g, a, transpose_a=True)
    elif ta and not tb:
        ga, gb = matmul(b, g, transpose_b=True), matmul(a, g)
    else:
        ga, gb = (matmul(b, g, transpose_a=True, transpose_b=True),
                  matmul(g, a, transpose_a=True, transpose_b=True))
    # batch dims that broadcast in the forward pass are summed back
    return [sum_to_shape_of(ga, a), sum_to_shape_of(gb, b)]


# ---- einsum ----------------------------------------------------------------------------
Label = Union[str, Tuple[str, int]]   # a letter, or ("...", k) for the k-th broadcast dim


def _parse_operand(spec: str, rank: Optional[int], n_ellipsis: int, what: str) -> List[Label]:
    """Labels of one operand; ellipsis dims are numbered from the right so
    that they align like NumPy broadcasting."""
    if spec.count("...") > 1 or "." in spec.replace("...", ""):
        raise InvalidArgumentError(f"einsum {what} subscripts {spec!r}: '...' may appear once and '.' only in it")
    head, dots, tail = spec.partition("...")
    for ch in head + tail:
        if ch not in string.ascii_letters:
            raise InvalidArgumentError(f"einsum {what} subscripts {spec!r}: invalid character {ch!r}")
    if not dots:
        if rank is not None and rank != len(spec):
            raise ShapeError(f"einsum {what} subscripts {spec!r} name {len(spec)} dims, but the operand has rank {rank}")
        return list(spec)
    if rank is None:
        raise ShapeError(f"einsum {what} uses '...' but its rank is unknown")
    k = rank - len(head) - len(tail)
    if k < 0:
        raise ShapeError(f"einsum {what} subscripts {spec!r} name more dims than its rank {rank}")
    return list(head) + [("...", n_ellipsis - k + i) for i in range(k)] + list(tail)


def _parse_equation(equation: str, operands: Sequence[Tensor]) -> Tuple[List[List[Label]], List[Label]]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    specs = lhs.split(",")
    if len(specs) != len(operands):
        raise InvalidArgumentError(f"einsum equation {equation!r} has {len(specs)} operand(s), "
                                   f"but {len(operands)} were given")
    n_ell = 0
    for spec, t in zip(specs, operands):
        if "..." in spec:
            if t.ndim is None:
                raise ShapeError(f"einsum operand {t.name} uses '...' but its rank is unknown")
            n_ell = max(n_ell, t.ndim - len(spec.replace("...", "")))
    labels = [_parse_operand(spec, t.ndim, n_ell, f"operand {i}") for i, (spec, t) in enumerate(zip(specs, operands))]
    ellipsis: List[Label] = [("...", i) for i in range(n_ell)]
    if arrow:
        out = _parse_operand(rhs, len(rhs.replace("...", "")) + n_ell if "..." in rhs else None, n_ell, "output")
        if len(set(out)) != len(out):
            raise InvalidArgumentError(f"einsum output subscripts {rhs!r} repeat a label")
        known = {lab for ls in labels for lab in ls}
        for lab in out:
            if lab not in known:
                raise InvalidArgumentError(f"einsum output label {lab!r} does not appear in any operand")
        if "..." not in rhs and known.intersection(ellipsis):
            raise InvalidArgumentError(f"einsum equation {equation!r}: operands have '...' dims but the output "
                                       "does not say where they go")
    else:
        # implicit mode: broadcast dims, then labels used exactly once, sorted
        counts: Dict[Label, int] = {}
        for ls in labels:
            for lab in ls:
                counts[lab] = counts.get(lab, 0) + 1
        out = ellipsis + sorted(lab for lab, c in counts.items() if c == 1 and isinstance(lab, str))
    return labels, out


def _check_sizes(labels: List[List[Label]], operands: Sequence[Tensor]) -> None:
    """A label must have one size in every operand; '...' dims broadcast."""
    sizes: Dict[Label, int] = {}
    for ls, t in zip(labels, operands):
        for lab, d in zip(ls, t.shape):
            if d is None:
                continue
            old = sizes.setdefault(lab, d)
            if old == d:
                continue
            if isinstance(lab, tuple) and 1 in (old, d):
                sizes[lab] = max(old, d)
                continue
            raise ShapeError(f"einsum label {lab if isinstance(lab, str) else '...'!r} has size {old} in one "
                             f"operand and {d} in another")


class _Operand:
    """A tensor whose dims are named by labels, transformed with graph ops."""

    def __init__(self, t: Tensor, labels: List[Label]) -> None:
        self.t, self.labels = t, list(labels)

    def sum_out(self, drop: Sequence[Label]) -> "_Operand":
        from .reduce import reduce_sum
        axes = tuple(i for i, lab in enumerate(self.labels) if lab in drop)
        if not axes:
            return self
        return _Operand(reduce_sum(self.t, axis=axes), [lab for lab in self.labels if lab not in drop])

    def take_diagonals(self) -> "_Operand":
        """A label repeated within one operand selects its diagonal."""
        from . import elementwise as ew
        from .reduce import reduce_sum
        op = self
        while len(set(op.labels)) != len(op.labels):
            lab = next(lab for lab in op.labels if op.labels.count(lab) > 1)
            p = op.labels.index(lab)
            q = op.labels.index(lab, p + 1)
            n_p, n_q = op.t.shape[p], op.t.shape[q]
            if n_p is None or n_q is None:
                raise ShapeError(f"einsum: the diagonal of label {lab!r} needs its size known when the graph "
                                 "is built")
            if n_p != n_q:
                raise ShapeError(f"einsum label {lab!r} repeats in one operand with sizes {n_p} and {n_q}")
            shape = [1] * len(op.labels)
            shape[p], shape[q] = n_p, n_q
            mask = constant(np.eye(n_p, dtype=op.t.dtype).reshape(shape))
            t = reduce_sum(ew.multiply(op.t, mask), axis=q)
            op = _Operand(t, op.labels[:q] + op.labels[q + 1:])
        return op

    def arrange(self, order: Sequence[Label]) -> Tensor:
        from .shape import transpose
        perm = [self.labels.index(lab) for lab in order]
        return self.t if perm == list(range(len(perm))) else transpose(self.t, perm)


def _group_dim(shape: Sequence[Optional[int]]) -> Optional[int]:
    n = 1
    for d in shape:
        if d is None:
            return None
        n *= d
    return n


def _matrix_target(shape: Sequence[Optional[int]], n_batch: int, groups: Sequence[int]) -> List[Optional[int]]:
    """The shape after flattening consecutive dim groups (following
    ``n_batch`` batch dims) into one dim each; None marks unknown sizes."""
    target = list(shape[:n_batch])
    pos = n_batch
    for g in groups:
        target.append(_group_dim(shape[pos:pos + g]))
        pos += g
    return target


def _can_flatten(shape: Sequence[Optional[int]], n_batch: int, groups: Sequence[int]) -> bool:
    # without a reshape (groups of <= 1 dim) anything goes; a static reshape
    # may leave one dim to be inferred (-1)
    return all(g <= 1 for g in groups) or sum(d is None for d in _matrix_target(shape, n_batch, groups)) <= 1


def _to_matrix_form(t: Tensor, n_batch: int, groups: Sequence[int]) -> Tensor:
    """Flatten consecutive dim groups (after ``n_batch`` batch dims) into one
    dim each; an empty group becomes a size-1 dim."""
    from .shape import expand_dims, reshape
    if all(g == 1 for g in groups):
        return t
    if all(g <= 1 for g in groups):
        for i, g in enumerate(groups):
            if g == 0:
                t = expand_dims(t, n_batch + i)
        return t
    return reshape(t, [-1 if d is None else d for d in _matrix_target(t.shape, n_batch, groups)])


def _contract_pair(x: _Operand, y: _Operand, keep: set) -> _Operand:
    from . import elementwise as ew
    from .shape import reshape, squeeze
    batch = [lab for lab in x.labels if lab in y.labels and lab in keep]
    contracted = [lab for lab in x.labels if lab in y.labels and lab not in keep]
    free_x = [lab for lab in x.labels if lab not in y.labels]
    free_y = [lab for lab in y.labels if lab not in x.labels]
    if contracted:
        # an operand already laid out as the transposed matrix uses matmul's flag instead of a transpose
        ta = x.labels == batch + contracted + free_x and x.labels != batch + free_x + contracted
        tb = y.labels == batch + free_y + contracted and y.labels != batch + contracted + free_y
        order_x = batch + (contracted + free_x if ta else free_x + contracted)
        order_y = batch + (free_y + contracted if tb else contracted + free_y)
        groups_x = [len(contracted), len(free_x)] if ta else [len(free_x), len(contracted)]
        groups_y = [len(free_y), len(contracted)] if tb else [len(contracted), len(free_y)]
        shape_x = [x.t.shape[x.labels.index(lab)] for lab in order_x]
        shape_y = [y.t.shape[y.labels.index(lab)] for lab in order_y]
        batch_shape = list(_shapes.broadcast(tuple(shape_x[:len(batch)]), tuple(shape_y[:len(batch)])))
        result_shape = batch_shape + [x.t.shape[x.labels.index(lab)] for lab in free_x] \
            + [y.t.shape[y.labels.index(lab)] for lab in free_y]
        split_result = len(free_x) > 1 or len(free_y) > 1
        if _can_flatten(shape_x, len(batch), groups_x) and _can_flatten(shape_y, len(batch), groups_y) and \
                (not split_result or sum(d is None for d in result_shape) <= 1):
            a = _to_matrix_form(x.arrange(order_x), len(batch), groups_x)
            b = _to_matrix_form(y.arrange(order_y), len(batch), groups_y)
            out = matmul(a, b, transpose_a=ta, transpose_b=tb)
            if split_result:
                out = reshape(out, [-1 if d is None else d for d in result_shape])
            else:
                nb = len(batch)
                drop = tuple(ax for ax, grp in ((nb, free_x), (nb + 1, free_y)) if not grp)
                out = squeeze(out, axis=drop) if drop else out
            return _Operand(out, batch + free_x + free_y)
    # broadcasting product over the union of labels, then sum the contraction
    order = batch + free_x + free_y + contracted
    a = _expand_to(x, order)
    b = _expand_to(y, order)
    prod = _Operand(ew.multiply(a, b), order)
    return prod.sum_out(contracted)


def _expand_to(x: _Operand, order: Sequence[Label]) -> Tensor:
    from .shape import expand_dims
    mine = [lab for lab in order if lab in x.labels]
    t = x.arrange(mine)
    for i, lab in enumerate(order):
        if lab not in x.labels:
            t = expand_dims(t, i)
    return t


def _einsum_graph(labels: List[List[Label]], out: List[Label], operands: Sequence[Tensor]) -> Tensor:
    ops = [_Operand(t, ls).take_diagonals() for t, ls in zip(operands, labels)]
    # labels no other operand and not the output needs are summed out first
    for i, op in enumerate(ops):
        elsewhere = set(out).union(*(o.labels for j, o in enumerate(ops) if j != i))
        ops[i] = op.sum_out([lab for lab in op.labels if lab not in elsewhere])
    acc = ops[0]
    for i in range(1, len(ops)):
        keep = set(out).union(*(o.labels for o in ops[i + 1:]))
        acc = _contract_pair(acc, ops[i], keep)
    acc = acc.sum_out([lab for lab in acc.labels if lab not in out])
    return acc.arrange(out)


def einsum(equation: str, *inputs: Any, name: Optional[str] = None) -> Tensor:
    """Einstein summation as in ``numpy.einsum``: explicit (``'ij,jk->ik'``)
    or implicit (``'ij,jk'``) output, ``...`` for broadcast dims, a repeated
    label in one operand for its diagonal (``'ii->i'``; the size must be
    known when the graph is built). Built from matmul, transpose, reshape,
    multiply and reduce_sum."""
    if not isinstance(equation, str):
        raise InvalidArgumentError(f"einsum equation must be a str, got {equation!r}")
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) and inputs[0] and \
            all(isinstance(v, Tensor) for v in inputs[0]):
        inputs = tuple(inputs[0])
    if not inputs:
        raise InvalidArgumentError("einsum needs at least one operand")
    tensors = list(convert_operands(*inputs)) if len(inputs) > 1 else [convert_to_tensor(inputs[0])]
    for t in tensors:
        require_dtype(t, _dt.NUMERIC, "einsum operand")
        if t.shape is None:
            raise ShapeError(f"einsum operand {t.name} has unknown rank")
    labels, out = _parse_equation(equation, tensors)
    _check_sizes(labels, tensors)
    with op_scope(name or "einsum", tensors):
        return _einsum_graph(labels, out, tensors)


def _tensordot_axes(a: Tensor, b: Tensor, axes: Any) -> Tuple[List[int], List[int]]:
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        if n < 0 or n > a.ndim or n > b.ndim:
            raise ShapeError(f"tensordot axes={n} is out of range for shapes {_shapes.fmt(a.shape)} "
                             f"and {_shapes.fmt(b.shape)}")
        return list(range(a.ndim - n, a.ndim)), list(range(n))
    if not isinstance(axes, (list, tuple)) or len(axes) != 2:
        raise InvalidArgumentError(f"tensordot axes must be an int or a pair of axis lists, got {axes!r}")
    ax_a, ax_b = ([x] if isinstance(x, (int, np.integer)) else list(x) for x in axes)
    if len(ax_a) != len(ax_b):
        raise ShapeError(f"tensordot contracts {len(ax_a)} axes of a but {len(ax_b)} of b")
    ax_a = [_shapes.normalize_axis(x, a.ndim) for x in ax_a]
    ax_b = [_shapes.normalize_axis(x, b.ndim) for x in ax_b]
    if len(set(ax_a)) != len(ax_a) or len(set(ax_b)) != len(ax_b):
        raise InvalidArgumentError(f"tensordot axes {axes!r} repeat an axis")
    return ax_a, ax_b


def tensordot(a: Any, b: Any, axes: Any, name: Optional[str] = None) -> Tensor:
    """Sum of products over ``axes`` (an int N: the last N axes of ``a`` with
    the first N of ``b``; or a pair of axis lists), as ``numpy.tensordot``."""
    a, b = convert_operands(a, b)
    if a.shape is None or b.shape is None:
        raise ShapeError("tensordot needs operands of known rank")
    ax_a, ax_b = _tensordot_axes(a, b, axes)
    for i, j in zip(ax_a, ax_b):
        if a.shape[i] is not None and b.shape[j] is not None and a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot of {_shapes.fmt(a.shape)} and {_shapes.fmt(b.shape)}: axis {i} of a "
                             f"(size {a.shape[i]}) and axis {j} of b (size {b.shape[j]}) differ")
    if a.ndim + b.ndim > len(string.ascii_letters):
        raise ShapeError("tensordot operands have too many dims")
    letters = iter(string.ascii_letters)
    la = [next(letters) for _ in range(a.ndim)]
    lb = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = [lab for i, lab in enumerate(la) if i not in ax_a] + [lab for j, lab in enumerate(lb) if j not in ax_b]
    with op_scope(name or "Tensordot", [a, b]):
        return _einsum_graph([la, lb], out, [a, b])


# ---- norms and friends -----------------------------------------------------------------
def _norm_axes(x: Tensor, axis: Any) -> Optional[Tuple[int, ...]]:
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(axes) not in (1, 2):
        raise InvalidArgumentError(f"norm axis must be an int or a pair of ints, got {axis!r}")
    if x.shape is None:
        raise ShapeError("norm over given axes needs an input of known rank")
    norm_axes = tuple(_shapes.normalize_axis(a, len(x.shape)) for a in axes)
    if len(set(norm_axes)) != len(norm_axes):
        raise InvalidArgumentError(f"norm axis {axis!r} repeats an axis")
    return norm_axes


def _vector_norm(x: Tensor, p: Any, axis: Optional[Tuple[int, ...]], keepdims: bool) -> Tensor:
    from . import elementwise as ew
    from .reduce import reduce_max, reduce_sum
    if p in ("euclidean", "fro", 2, 2.0):
        return ew.sqrt(reduce_sum(ew.square(x), axis=axis, keepdims=keepdims))
    if p in (1, 1.0):
        return reduce_sum(ew.abs(x), axis=axis, keepdims=keepdims)
    if p == np.inf:
        return reduce_max(ew.abs(x), axis=axis, keepdims=keepdims)
    if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0:
        total = reduce_sum(ew.pow(ew.abs(x), float(p)), axis=axis, keepdims=keepdims)
        return ew.pow(total, 1.0 / float(p))
    raise InvalidArgumentError(f"norm ord={p!r} is not supported for vectors; use 'euclidean', 1, 2, np.inf "
                               "or a positive number")


def _matrix_norm(x: Tensor, p: Any, axes: Tuple[int, int], keepdims: bool) -> Tensor:
    from . import elementwise as ew
    from .reduce import reduce_max, reduce_sum
    if p in ("euclidean", "fro"):
        return ew.sqrt(reduce_sum(ew.square(x), axis=axes, keepdims=keepdims))
    rows, cols = axes
    if p in (1, 1.0):
        inner, outer = rows, cols           # max over columns of column sums
    elif p == np.inf:
        inner, outer = cols, rows           # max over rows of row sums
    else:
        raise InvalidArgumentError(f"norm ord={p!r} is not supported for matrices; use 'fro', 'euclidean', "
                                   "1 or np.inf")
    s = reduce_sum(ew.abs(x), axis=inner, keepdims=keepdims)
    if not keepdims and outer > inner:
        outer -= 1
    return reduce_max(s, axis=outer, keepdims=keepdims)


def norm(tensor: Any, ord: Any = "euclidean", axis: Any = None, keepdims: bool = False,
         name: Optional[str] = None) -> Tensor:
    """Vector or matrix norm (TF's ``tf.norm``). ``axis=None`` flattens the
    tensor into one vector; an int gives vector norms along it, a pair of
    ints matrix norms over those two axes. ord: 'euclidean' (2-norm /
    Frobenius), 'fro', 1, 2 (vectors), np.inf, or any p > 0 (vectors)."""
    x = convert_to_tensor(tensor)
    require_dtype(x, _dt.FLOATS, "tensor", "cast it first, e.g. gc.cast(x, gc.float32)")
    axes = _norm_axes(x, axis)
    with op_scope(name or "norm", [x]):
        if axes is not None and len(axes) == 2:
            return _matrix_norm(x, ord, axes, bool(keepdims))
        return _vector_norm(x, ord, axes, bool(keepdims))


linalg_norm = norm


def trace(x: Any, name: Optional[str] = None) -> Tensor:
    """Sum of the main diagonal of the last two dims (batched over the
    leading dims). The last two dims must be known when the graph is built."""
    x = convert_to_tensor(x)
    if x.shape is None or len(x.shape) < 2:
        raise ShapeError(f"trace needs a tensor of rank >= 2, got shape {_shapes.fmt(x.shape)}")
    n, m = x.shape[-2:]
    if n is None or m is None:
        raise ShapeError(f"trace needs the last two dims known when the graph is built, got {_shapes.fmt(x.shape)}")
    from . import elementwise as ew
    from .reduce import reduce_sum
    with op_scope(name or "trace", [x]):
        mask = constant(np.eye(n, m, dtype=x.dtype))
        return reduce_sum(ew.multiply(x, mask), axis=(-2, -1))


def matrix_transpose(a: Any, name: Optional[str] = None) -> Tensor:
    """Swap the last two dims (batched over the leading dims)."""
    from .shape import transpose
    a = convert_to_tensor(a)
    if a.shape is None or len(a.shape) < 2:
        raise ShapeError(f"matrix_transpose needs a tensor of rank >= 2, got shape {_shapes.fmt(a.shape)}")
    r = len(a.shape)
    return transpose(a, list(range(r - 2)) + [r - 1, r - 2], name=name or "matrix_transpose")
