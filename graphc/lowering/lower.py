"""Lowering: a fused kernel (or one elementwise/reduction op) → loop IR.

Every value is computed *at a point*: a multi-index into its own shape.
Elementwise ops evaluate their operands at the broadcast point (a size-1 dim
of an operand reads index 0), reshapes map the point through the row-major
flat index, reductions become accumulators over an inner loop nest.

A kernel's outputs are either all element-shaped like one iteration space (a
*loop* kernel) or reductions over the same axes of one input shape, plus
outputs shaped like that input (a *reduction* kernel, which stores the
full-shape outputs inside its inner loops). Anything else is a CompileError
naming the kernel, never a silent miscompile.

Layout ops are point maps too: transpose, strided slices, tile, split and
unstack read their input at a mapped point; pad, concat, stack,
strided_slice_grad, pad_adjoint, one_hot and gather choose between values
with ``Select`` over index tests (``InRange``), every load clamped into its
buffer (see loop_ir). argmax/argmin are two reductions over the same axes:
the best value, then the first index holding it. A single op (not a fused kernel) may have outputs of
different shapes (split, unstack): one loop nest per output; a single
concat or stack is one loop nest per piece (plain copies, no selects).
Gathers whose indices could be out of range at run time (modes "error" and
"wrap" with indices not known at compile time) are not lowered: the
reference raises there, and a kernel cannot report errors.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CompileError
from ..graph import Operation, Tensor
from . import loop_ir as ir

# Ops whose output at a point is the same op of their operands at the
# broadcast point (the registry's elementwise lowering class).
_SELECT_OPS = {"where"}
_PASS_THROUGH = {"identity", "stop_gradient"}
_INDEX_MAPS = {"reshape", "expand_dims", "squeeze", "broadcast_to", "reshape_like", "reshape_dynamic",
               "broadcast_like", "broadcast_to_dynamic"}
_BROADCASTS = {"broadcast_to", "broadcast_like", "broadcast_to_dynamic"}
REDUCTIONS = {"reduce_sum": "add", "reduce_mean": "add", "reduce_prod": "mul", "reduce_max": "max",
              "reduce_min": "min", "reduce_any": "or", "reduce_all": "and", "sum_to_shape_of": "add"}
ARG_REDUCTIONS = {"argmax": "greater", "argmin": "less"}


def _reduction_init(kind: str, dtype: np.dtype):
    if kind == "add":
        return dtype.type(0)
    if kind == "mul":
        return dtype.type(1)
    if kind == "or":
        return False
    if kind == "and":
        return True
    if dtype.kind == "f":
        return dtype.type(-np.inf if kind == "max" else np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.min if kind == "max" else info.max)


def _axes(op: Operation) -> Tuple[int, ...]:
    shape = tuple(op.inputs[0].shape)
    rank = len(shape)
    if op.type == "sum_to_shape_of":
        like = tuple(op.outputs[0].shape)
        lead = rank - len(like)
        return tuple(range(lead)) + tuple(lead + i for i, d in enumerate(like) if d == 1 and shape[lead + i] != 1)
    axis = op.attrs["axis"]
    if axis is None:
        return tuple(range(rank))
    if op.type in ARG_REDUCTIONS:
        return (axis % rank,)
    return tuple(sorted(a % rank for a in axis))


def _count(shape: Tuple[int, ...], axis) -> int:
    axes = range(len(shape)) if axis is None else axis
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def _and(conds: Sequence[ir.Expr]) -> Optional[ir.Expr]:
    out: Optional[ir.Expr] = None
    for c in conds:
        out = c if out is None else ir.Binary("logical_and", out, c, np.dtype(np.bool_))
    return out


def _slice_entries(op: Operation, rank: int):
    """The strided_slice spec of ``op`` with one entry per input dim (and newaxis entries)."""
    from ..ops.indexing import expand_spec
    return expand_spec(op.attrs["spec"], rank, op.inputs[0].name)


class _Lowerer:
    def __init__(self, name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 scalar_inputs: Optional[Dict[Tensor, np.ndarray]] = None,
                 known_inputs: Optional[Dict[Tensor, np.ndarray]] = None, single_op: bool = False) -> None:
        self.name = name
        # inputs whose value is a constant of the graph (any size): only used
        # to prove at compile time that gather indices are in range
        self.known_inputs = dict(known_inputs or {})
        # one op, not a fused kernel: the memory plan never writes its outputs
        # over its inputs, so outputs may be written by separate loop nests
        self.single_op = single_op
        # inputs whose value is a known scalar (a constant outside the kernel):
        # read as immediates so LLVM can fold them; the parameter stays
        self.scalar_inputs = dict(scalar_inputs or {})
        self.params: List[ir.Param] = []
        self.buffer_of: Dict[Tensor, str] = {}
        self.constants: Dict[str, np.ndarray] = {}
        for i, t in enumerate(inputs):
            self._check_static(t)
            self.buffer_of[t] = f"in{i}"
            self.params.append(ir.Param(f"in{i}", t.dtype, tuple(t.shape), "input"))
        for i, t in enumerate(outputs):
            self._check_static(t)
            self.params.append(ir.Param(f"out{i}", t.dtype, tuple(t.shape), "output"))
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.acc_of: Dict[Tensor, Tuple[str, ...]] = {}

    def _check_static(self, t: Tensor) -> None:
        if t.shape is None or any(d is None for d in t.shape):
            raise CompileError(f"kernel {self.name}: {t.name} has no static shape ({t.shape}); "
                               "lowering needs shapes specialized on the fed values")

    def fail(self, why: str) -> CompileError:
        return CompileError(f"kernel {self.name}: cannot lower: {why}")

    # ---- values at points ----------------------------------------------------------------------
    def value(self, t: Tensor, point: Tuple[ir.IExpr, ...]) -> ir.Expr:
        if t in self.scalar_inputs:
            return ir.Const(self.scalar_inputs[t].reshape(()).item(), t.dtype)
        if t in self.buffer_of:
            return ir.Load(self.buffer_of[t], ir.flat_index(point, tuple(t.shape)), t.dtype)
        if t in self.acc_of:
            raise self.fail(f"{t.name}, a reduction result, is used inside the kernel")
        op = t.op
        kind = op.type
        if kind == "const":
            arr = np.asarray(op.attrs["value"])
            if arr.size == 1:
                return ir.Const(arr.reshape(()).item(), arr.dtype)
            name = self.constants_name(arr)
            return ir.Load(name, ir.flat_index(point, arr.shape), arr.dtype)
        if kind == "fill_like":
            return ir.Const(np.asarray(op.attrs["value"], dtype=t.dtype).item(), t.dtype)
        if kind in _PASS_THROUGH:
            return self.value(op.inputs[0], point)
        if kind in _INDEX_MAPS or (kind == "sum_to_shape_of" and not _axes(op)):
            return self.value(op.inputs[0], self.map_point(point, tuple(t.shape), tuple(op.inputs[0].shape),
                                                           broadcast=kind in _BROADCASTS))
        if kind == "placeholder_with_default":
            return self.value(op.inputs[0], point)
        layout = self.layout_value(t, point)
        if layout is not None:
            return layout
        if kind == "cast":
            return ir.Cast(self.value(op.inputs[0], self.bcast(point, t, op.inputs[0])), t.dtype)
        if kind in _SELECT_OPS:
            c, x, y = (self.value(i, self.bcast(point, t, i)) for i in op.inputs)
            return ir.Select(c, x, y, t.dtype)
        if op.opdef.lowering == "elementwise" and len(op.inputs) == 1:
            return ir.Unary(kind, self.value(op.inputs[0], self.bcast(point, t, op.inputs[0])), t.dtype)
        if op.opdef.lowering == "elementwise" and len(op.inputs) == 2:
            x, y = (self.value(i, self.bcast(point, t, i)) for i in op.inputs)
            return ir.Binary(kind, x, y, t.dtype)
        raise self.fail(f"op {op.type!r} ({op.name}) has no loop lowering")

    def constants_name(self, arr: np.ndarray) -> str:
        for name, existing in self.constants.items():
            if existing is arr:
                return name
        name = f"const{len(self.constants)}"
        self.constants[name] = arr
        return name

    # ---- layout ops -----------------------------------------------------------------------------
    def layout_value(self, t: Tensor, point: Tuple[ir.IExpr, ...]) -> Optional[ir.Expr]:
        """``t`` at ``point`` when a layout op (or arg reduction's relative) makes it, else None."""
        op = t.op
        kind = op.type
        out_shape = tuple(t.shape)
        if kind == "transpose":
            x = op.inputs[0]
            perm = op.attrs["perm"]
            perm = tuple(reversed(range(len(point)))) if perm is None else tuple(perm)
            mapped: List[ir.IExpr] = [ir.IConst(0)] * len(perm)
            for i, p in enumerate(perm):
                mapped[p] = point[i]
            return self.value(x, tuple(mapped))
        if kind == "strided_slice":
            return self.value(op.inputs[0], self._slice_point(op, point))
        if kind == "strided_slice_grad":
            return self._slice_grad(op, t, point)
        if kind == "tile":
            x = op.inputs[0]
            mapped = tuple(ir.IConst(0) if d == 1 else p if m == 1 else ir.imod(p, d)
                           for p, d, m in zip(point, x.shape, op.attrs["multiples"]))
            return self.value(x, mapped)
        if kind == "pad":
            return self._pad(op, t, point)
        if kind == "pad_adjoint":
            return self._pad_adjoint(op, t, point)
        if kind in ("concat", "stack"):
            pieces = self._pieces(op)
            axis = self._join_axis(op)
            value: Optional[ir.Expr] = None
            for x, off, n in reversed(pieces):
                if n == 0:
                    continue
                inner = self.value(x, self._piece_point(op, point, axis, off, n, clamp=True))
                value = inner if value is None else ir.Select(ir.InRange(point[axis], off, off + n), inner, value,
                                                              t.dtype)
            return value if value is not None else ir.Const(t.dtype.type(0), t.dtype)
        if kind in ("split", "split_like", "unstack"):
            x = op.inputs[0]
            axis = op.attrs["axis"] % len(x.shape)
            k = t.value_index
            if kind == "unstack":
                return self.value(x, point[:axis] + (ir.IConst(k),) + point[axis:])
            sizes = [o.shape[axis] for o in op.outputs]
            off = sum(sizes[:k])
            mapped = list(point)
            mapped[axis] = ir.IConst(off) if x.shape[axis] == 1 else ir.iadd(point[axis], ir.IConst(off))
            return self.value(x, tuple(mapped))
        if kind == "broadcast_reduced":
            g, like = op.inputs
            rank = len(like.shape)
            axis = op.attrs["axis"]
            axes = set(range(rank)) if axis is None else {a % rank for a in axis}
            if op.attrs["keepdims"]:
                gp = tuple(ir.IConst(0) if d == 1 else point[i] for i, d in enumerate(g.shape))
            else:
                kept = [point[i] for i in range(rank) if i not in axes]
                if len(kept) != len(g.shape):
                    raise self.fail(f"{op.name}: reduced shape {g.shape} does not match axes {sorted(axes)}")
                gp = tuple(ir.IConst(0) if d == 1 else p for p, d in zip(kept, g.shape))
            return self.value(g, gp)
        if kind == "one_hot":
            idx = op.inputs[0]
            a = len(idx.shape) if op.attrs["axis"] == -1 else op.attrs["axis"]
            v = self.value(idx, point[:a] + point[a + 1:])
            hot = ir.Binary("equal", v, ir.IndexValue(point[a], idx.dtype), np.dtype(np.bool_))
            dt = t.dtype
            return ir.Select(hot, ir.Const(dt.type(op.attrs["on_value"]), dt),
                             ir.Const(dt.type(op.attrs["off_value"]), dt), dt)
        if kind == "gather":
            return self._gather(op, t, point)
        if kind == "gather_nd":
            return self._gather_nd(op, t, point)
        if kind == "reduction_count":
            return ir.Const(t.dtype.type(_count(tuple(op.inputs[0].shape), op.attrs["axis"])), t.dtype)
        if kind == "shape_of":
            arr = np.asarray(op.inputs[0].shape, dtype=t.dtype)
            if arr.size == 1:
                return ir.Const(arr.reshape(()).item(), t.dtype)
            return ir.Load(self.constants_name(arr), ir.flat_index(point, arr.shape), t.dtype)
        return None

    def _slice_point(self, op: Operation, point: Tuple[ir.IExpr, ...]) -> Tuple[ir.IExpr, ...]:
        x = op.inputs[0]
        shape = tuple(x.shape)
        mapped: List[ir.IExpr] = []
        o = 0
        for e in _slice_entries(op, len(shape)):
            if e[0] == "n":
                o += 1
                continue
            if e[0] == "e":
                raise self.fail(f"{op.name}: unexpanded ellipsis")
            d = shape[len(mapped)]
            if e[0] == "i":
                mapped.append(ir.IConst(e[1] % d))
                continue
            start, _, step = slice(e[1], e[2], e[3]).indices(d)
            mapped.append(ir.iadd(ir.IConst(start), ir.imul(point[o], step)))
            o += 1
        return tuple(mapped)

    def _slice_grad(self, op: Operation, t: Tensor, point: Tuple[ir.IExpr, ...]) -> ir.Expr:
        """Zeros with ``grad`` where the slice reads: each dim tests whether
        the point is one the slice reads and which element of ``grad`` that is."""
        dy, like = op.inputs
        shape = tuple(like.shape)
        dy_point: List[ir.IExpr] = []
        conds: List[ir.Expr] = []
        zero = ir.Const(t.dtype.type(0), t.dtype)
        axis = 0
        for e in _slice_entries(op, len(shape)):
            if e[0] == "n":
                dy_point.append(ir.IConst(0))
                continue
            d, p = shape[axis], point[axis]
            axis += 1
            if e[0] == "i":
                i = e[1] % d
                if d != 1:
                    conds.append(ir.InRange(p, i, i + 1))
                continue
            start, stop, step = slice(e[1], e[2], e[3]).indices(d)
            n = len(range(start, stop, step))
            if n == 0:
                return zero
            last = start + step * (n - 1)
            lo, hi = min(start, last), max(start, last)
            if (lo, hi) != (0, d - 1):
                conds.append(ir.InRange(p, lo, hi + 1))
            # offset from the first element read, in the slice's direction
            q = ir.iadd(p, ir.IConst(-start)) if step > 0 else ir.iadd(ir.imul(p, -1), ir.IConst(start))
            s = abs(step)
            if s != 1 and n > 1:
                conds.append(ir.InRange(ir.imod(q, s), 0, 1))
            dy_point.append(ir.IConst(0) if n == 1 else ir.iclamp(ir.idiv(q, s), 0, n - 1))
        v = self.value(dy, tuple(ir.IConst(0) if d == 1 else p for p, d in zip(dy_point, dy.shape)))
        cond = _and(conds)
        return v if cond is None else ir.Select(cond, v, zero, t.dtype)

    @staticmethod
    def _mirror(q: ir.IExpr, d: int, mode: str) -> ir.IExpr:
        """Input index of padded offset ``q`` (``-d < q < 2d``) in a mirror pad."""
        if mode == "REFLECT":       # -1 -> 1, d -> d-2
            a = ir.imax(q, ir.imul(q, -1))
            r = ir.imin(a, ir.iadd(ir.IConst(2 * (d - 1)), ir.imul(a, -1)))
        else:                       # SYMMETRIC: -1 -> 0, d -> d-1
            a = ir.imax(q, ir.iadd(ir.imul(q, -1), ir.IConst(-1)))
            r = ir.imin(a, ir.iadd(ir.IConst(2 * d - 1), ir.imul(a, -1)))
        # a no-op on valid paddings; lets a static bounds check see the range
        return ir.iclamp(r, 0, d - 1)

    def _pad(self, op: Operation, t: Tensor, point: Tuple[ir.IExpr, ...]) -> ir.Expr:
        x = op.inputs[0]
        mode = op.attrs["mode"]
        fill = ir.Const(t.dtype.type(op.attrs.get("constant_value", 0)), t.dtype)
        if any(d == 0 for d in x.shape):
            if mode != "CONSTANT":
                raise self.fail(f"{op.name}: {mode} padding of an empty tensor")
            return fill
        mapped: List[ir.IExpr] = []
        conds: List[ir.Expr] = []
        for p, d, (b, a) in zip(point, x.shape, op.attrs["paddings"]):
            if b == 0 and a == 0:
                mapped.append(p)
                continue
            q = ir.iadd(p, ir.IConst(-b))
            if mode == "CONSTANT":
                conds.append(ir.InRange(q, 0, d))
                mapped.append(ir.iclamp(q, 0, d - 1))
            else:
                if b > d - (mode == "REFLECT") or a > d - (mode == "REFLECT"):
                    raise self.fail(f"{op.name}: {mode} padding {(b, a)} is too wide for a dim of {d}")
                mapped.append(self._mirror(q, d, mode))
        v = self.value(x, tuple(mapped))
        cond = _and(conds)
        return v if cond is None else ir.Select(cond, v, fill, t.dtype)

    def _pad_adjoint(self, op: Operation, t: Tensor, point: Tuple[ir.IExpr, ...]) -> ir.Expr:
        """Sum of the padded elements that copy the element at ``point``:
        per axis the element itself, its mirror in the head and in the tail,
        folded axis 0 first like the reference (the sum over the last axis
        is outermost)."""
        g = op.inputs[0]
        mode = op.attrs["mode"]
        if mode not in ("REFLECT", "SYMMETRIC"):
            raise self.fail(f"{op.name}: pad_adjoint of mode {mode}")
        shift = 1 if mode == "REFLECT" else 0
        gshape = tuple(g.shape)
        dt = t.dtype

        def fold(axis: int, gp: List[ir.IExpr]) -> ir.Expr:
            if axis < 0:
                return self.value(g, tuple(ir.IConst(0) if d == 1 else p for p, d in zip(gp, gshape)))
            b, a = op.attrs["paddings"][axis]
            n = gshape[axis] - b - a
            x = point[axis]

            def at(index: ir.IExpr) -> ir.Expr:
                moved = list(gp)
                moved[axis] = index
                return fold(axis - 1, moved)

            total = at(ir.iadd(x, ir.IConst(b)))
            if b:
                # padded[b-1-k] copies x[k+shift]: x in [shift, b-1+shift] at padded b-1+shift-x
                head = ir.iclamp(ir.iadd(ir.IConst(b - 1 + shift), ir.imul(x, -1)), 0, gshape[axis] - 1)
                total = ir.Select(ir.InRange(x, shift, b + shift), ir.Binary("add", total, at(head), dt), total, dt)
            if a:
                # padded[b+n+j] copies x[n-1-shift-j]: x in [n-shift-a, n-1-shift] at padded b+2n-1-shift-x
                tail = ir.iclamp(ir.iadd(ir.IConst(b + 2 * n - 1 - shift), ir.imul(x, -1)), 0, gshape[axis] - 1)
                total = ir.Select(ir.InRange(x, n - shift - a, n - shift), ir.Binary("add", total, at(tail), dt),
                                  total, dt)
            return total

        return fold(len(gshape) - 1, list(point))

    def _join_axis(self, op: Operation) -> int:
        rank = len(op.outputs[0].shape)
        return op.attrs["axis"] % rank

    def _pieces(self, op: Operation) -> List[Tuple[Tensor, int, int]]:
        """(input, offset, length) of each piece of a concat/stack along its axis."""
        axis = self._join_axis(op)
        out, off = [], 0
        for x in op.inputs:
            n = 1 if op.type == "stack" else x.shape[axis]
            out.append((x, off, n))
            off += n
        return out

    @staticmethod
    def _piece_point(op: Operation, point: Tuple[ir.IExpr, ...], axis: int, off: int, n: int,
                     clamp: bool) -> Tuple[ir.IExpr, ...]:
        if op.type == "stack":
            return point[:axis] + point[axis + 1:]
        p = ir.iadd(point[axis], ir.IConst(-off))
        if n == 1:
            p = ir.IConst(0)
        elif clamp:
            p = ir.iclamp(p, 0, n - 1)
        return point[:axis] + (p,) + point[axis + 1:]

    def _checked_indices(self, op: Operation, idx: Tensor, dims: Sequence[int], mode: str) -> bool:
        """Whether every index is known (a graph constant) to be valid for ``mode``."""
        known = self.known_inputs.get(idx)
        if known is None and idx not in self.buffer_of and idx.op.type == "const":
            known = np.asarray(idx.op.attrs["value"])
        if known is None:
            return False
        known = np.asarray(known).astype(np.int64)
        if known.size == 0:
            return True
        if op.type == "gather_nd":
            return all(((known[..., j] >= 0) & (known[..., j] < d)).all() for j, d in enumerate(dims))
        low = -dims[0] if mode == "wrap" else 0
        return bool(((known >= low) & (known < dims[0])).all())

    def _gather(self, op: Operation, t: Tensor, point: Tuple[ir.IExpr, ...]) -> ir.Expr:
        params, indices = op.inputs
        p_shape = tuple(params.shape)
        axis = op.attrs["axis"] % len(p_shape)
        b = op.attrs["batch_dims"]
        mode = op.attrs["mode"]
        k = len(indices.shape) - b
        dim = p_shape[axis]
        zero = ir.Const(t.dtype.type(0), t.dtype)
        if mode != "zero" and not self._checked_indices(op, indices, (dim,), mode):
            raise self.fail(f"{op.name}: gather indices may be out of range at run time (mode {mode!r} must "
                            "raise there; a kernel cannot)")
        if dim == 0:
            return zero
        ip = point[:b] + point[axis:axis + k]
        raw = ir.IndexOf(self.value(indices, tuple(ir.IConst(0) if d == 1 else p
                                                   for p, d in zip(ip, indices.shape))))
        if mode == "wrap":
            ix = ir.iclamp(ir.imod(ir.iclamp(raw, -dim, dim - 1), dim), 0, dim - 1)
        else:
            ix = ir.iclamp(raw, 0, dim - 1)
        pp = point[:axis] + (ix,) + point[axis + k:]
        v = self.value(params, tuple(ir.IConst(0) if d == 1 else p for p, d in zip(pp, p_shape)))
        if mode == "zero":
            return ir.Select(ir.InRange(raw, 0, dim), v, zero, t.dtype)
        return v

    def _gather_nd(self, op: Operation, t: Tensor, point: Tuple[ir.IExpr, ...]) -> ir.Expr:
        params, indices = op.inputs
        p_shape = tuple(params.shape)
        k = indices.shape[-1]
        if not self._checked_indices(op, indices, p_shape[:k], "error"):
            raise self.fail(f"{op.name}: gather_nd indices may be out of range at run time")
        batch = point[:len(indices.shape) - 1]
        pp: List[ir.IExpr] = []
        for j in range(k):
            if p_shape[j] == 0:
                return ir.Const(t.dtype.type(0), t.dtype)
            ip = batch + (ir.IConst(j),)
            raw = ir.IndexOf(self.value(indices, tuple(ir.IConst(0) if d == 1 else p
                                                       for p, d in zip(ip, indices.shape))))
            pp.append(ir.iclamp(raw, 0, p_shape[j] - 1))
        pp.extend(point[len(batch):])
        return self.value(params, tuple(ir.IConst(0) if d == 1 else p for p, d in zip(pp, p_shape)))

    @staticmethod
    def bcast(point: Tuple[ir.IExpr, ...], out: Tensor, operand: Tensor) -> Tuple[ir.IExpr, ...]:
        """Point of ``operand`` read when computing ``out`` at ``point`` (NumPy broadcasting)."""
        shape = tuple(operand.shape)
        lead = len(point) - len(shape)
        return tuple(ir.IConst(0) if d == 1 else point[lead + j] for j, d in enumerate(shape))

    @staticmethod
    def map_point(point: Tuple[ir.IExpr, ...], out_shape: Tuple[int, ...], in_shape: Tuple[int, ...],
                  broadcast: bool) -> Tuple[ir.IExpr, ...]:
        if broadcast:
            lead = len(out_shape) - len(in_shape)
            return tuple(ir.IConst(0) if d == 1 else point[lead + j] for j, d in enumerate(in_shape))
        # Same elements in the same order: when only size-1 dims differ, the
        # non-1 dims correspond one to one (no division needed).
        out_dims = [i for i, d in enumerate(out_shape) if d != 1]
        in_dims = [i for i, d in enumerate(in_shape) if d != 1]
        if [out_shape[i] for i in out_dims] == [in_shape[i] for i in in_dims]:
            mapped = [ir.IConst(0)] * len(in_shape)
            for o, i in zip(out_dims, in_dims):
                mapped[i] = point[o]
            return tuple(mapped)
        return ir.unravel(ir.flat_index(point, out_shape), in_shape)

    # ---- kernel structure -----------------------------------------------------------------------------
    def lower(self) -> ir.Kernel:
        reductions = [t for t in self.outputs if self._reduction_of(t) is not None]
        if not reductions:
            body = self._loop_kernel()
        else:
            body = self._reduction_kernel(reductions)
        return ir.Kernel(self.name, tuple(self.params), tuple(body), dict(self.constants))

    def _reduction_of(self, t: Tensor) -> Optional[Operation]:
        """The reduction op producing ``t`` (through reshapes), if any."""
        while t not in self.buffer_of:
            op = t.op
            if op.type in ARG_REDUCTIONS or (op.type in REDUCTIONS and (op.type != "sum_to_shape_of" or _axes(op))):
                return op
            if op.type in ("reshape", "identity", "stop_gradient", "expand_dims", "squeeze"):
                t = op.inputs[0]
                continue
            return None
        return None

    @staticmethod
    def _nest(shape: Tuple[int, ...], prefix: str, body: List[ir.Stmt], parallel: bool = True) -> List[ir.Stmt]:
        stmts = body
        for i in reversed(range(len(shape))):
            if shape[i] != 1:
                stmts = [ir.Loop(f"{prefix}{i}", shape[i], tuple(stmts), parallel)]
        return stmts

    @staticmethod
    def _point(shape: Tuple[int, ...], prefix: str) -> Tuple[ir.IExpr, ...]:
        return tuple(ir.IConst(0) if d == 1 else ir.IVar(f"{prefix}{i}") for i, d in enumerate(shape))

    def _loop_kernel(self) -> List[ir.Stmt]:
        space = tuple(self.outputs[0].shape)
        size = int(np.prod(space, dtype=np.int64))
        if self.single_op:
            sizes = {int(np.prod(t.shape, dtype=np.int64)) for t in self.outputs}
            if len(sizes) > 1 or self.outputs[0].op.type in ("concat", "stack"):
                return self._nest_per_piece()
        point = self._point(space, "i")
        stores: List[ir.Stmt] = []
        for k, t in enumerate(self.outputs):
            shape = tuple(t.shape)
            if int(np.prod(shape, dtype=np.int64)) != size:
                raise self.fail(f"outputs {self.outputs[0].name}{list(space)} and {t.name}{list(shape)} have "
                                "different element counts")
            p = point if shape == space else self.map_point(point, space, shape, broadcast=False)
            stores.append(ir.Store(f"out{k}", ir.flat_index(p, shape), self.value(t, p)))
        return self._nest(space, "i", stores)

    def _nest_per_piece(self) -> List[ir.Stmt]:
        """One loop nest per output (outputs of different shapes), or per
        input of a concat/stack (each a plain copy into its part of the
        output: no selects, no clamps)."""
        body: List[ir.Stmt] = []
        for k, t in enumerate(self.outputs):
            shape = tuple(t.shape)
            op = t.op
            if op.type not in ("concat", "stack"):
                point = self._point(shape, "i")
                body += self._nest(shape, "i", [ir.Store(f"out{k}", ir.flat_index(point, shape), self.value(t, point))])
                continue
            axis = self._join_axis(op)
            for x, off, n in self._pieces(op):
                if n == 0:
                    continue
                box = shape[:axis] + (n,) + shape[axis + 1:]
                local = self._point(box, "i")
                point = local[:axis] + (ir.iadd(local[axis], ir.IConst(off)),) + local[axis + 1:]
                value = self.value(x, self._piece_point(op, point, axis, off, n, clamp=False))
                body += self._nest(box, "i", [ir.Store(f"out{k}", ir.flat_index(point, shape), value)])
        return body

    def _arg_reduction(self, op: Operation, name: str, src_shape: Tuple[int, ...], axes: Tuple[int, ...],
                       full_point: Tuple[ir.IExpr, ...], inits: List[ir.Stmt], updates: List[ir.Stmt],
                       inits2: List[ir.Stmt], updates2: List[ir.Stmt], point2: Tuple[ir.IExpr, ...]) -> None:
        """argmax/argmin in two passes, both plain (vectorizable) reductions:
        the best value ``name.v`` (max/min; NaN propagates), then accumulator
        ``name``, the smallest index holding it (NaN: the first NaN, as NumPy)."""
        x = op.inputs[0]
        vt, it = x.dtype, op.outputs[0].dtype
        bool_ = np.dtype(np.bool_)
        best = f"{name}.v"
        kind = "max" if op.type == "argmax" else "min"
        inits.append(ir.AccInit(best, vt, _reduction_init(kind, vt)))
        updates.append(ir.AccUpdate(best, kind, self.value(x, full_point)))
        v = self.value(x, point2)
        acc = ir.AccRef(best, vt)
        hit: ir.Expr = ir.Binary("equal", v, acc, bool_)
        if vt.kind == "f":
            nan = ir.Binary("logical_and", ir.Binary("not_equal", v, v, bool_),
                            ir.Binary("not_equal", acc, acc, bool_), bool_)
            hit = ir.Binary("logical_or", hit, nan, bool_)
        count = int(np.prod([src_shape[a] for a in axes], dtype=np.int64))
        index = ir.flat_index(tuple(point2[a] for a in axes), tuple(src_shape[a] for a in axes))
        # no hit is possible (the best value is one of the values): count is a sentinel
        inits2.append(ir.AccInit(name, it, it.type(count)))
        updates2.append(ir.AccUpdate(name, "min", ir.Select(hit, ir.IndexValue(index, it),
                                                            ir.Const(it.type(count), it), it)))

    def _reduction_kernel(self, reductions: List[Tensor]) -> List[ir.Stmt]:
        ops = [self._reduction_of(t) for t in reductions]
        src_shape = tuple(ops[0].inputs[0].shape)
        axes = _axes(ops[0])
        for op in ops[1:]:
            if tuple(op.inputs[0].shape) != src_shape or _axes(op) != axes:
                raise self.fail("its reductions differ in input shape or axes")
        kept = tuple(1 if i in axes else d for i, d in enumerate(src_shape))
        inner_shape = tuple(d if i in axes else 1 for i, d in enumerate(src_shape))
        outer_point = self._point(kept, "i")
        inner_point = self._point(inner_shape, "r")
        full_point = tuple(inner_point[i] if i in axes else outer_point[i] for i in range(len(src_shape)))
        count = int(np.prod([src_shape[a] for a in axes], dtype=np.int64))

        inits: List[ir.Stmt] = []
        updates: List[ir.Stmt] = []
        finals: List[ir.Stmt] = []
        # a second pass over the reduced axes (arg reductions), after the first
        inits2: List[ir.Stmt] = []
        updates2: List[ir.Stmt] = []
        point2 = self._point(inner_shape, "s")
        point2 = tuple(point2[i] if i in axes else outer_point[i] for i in range(len(src_shape)))
        acc_names: Dict[Operation, str] = {}
        for op in dict.fromkeys(ops):
            name = f"acc{len(acc_names)}"
            acc_names[op] = name
            if op.type in ARG_REDUCTIONS:
                self._arg_reduction(op, name, src_shape, axes, full_point, inits, updates, inits2, updates2, point2)
                continue
            kind = REDUCTIONS[op.type]
            dtype = op.outputs[0].dtype
            inits.append(ir.AccInit(name, dtype, _reduction_init(kind, dtype)))
            updates.append(ir.AccUpdate(name, kind, self.value(op.inputs[0], full_point)))
        src_size = int(np.prod(src_shape, dtype=np.int64))
        for k, t in enumerate(self.outputs):
            shape = tuple(t.shape)
            op = self._reduction_of(t)
            if op is not None:
                acc: ir.Expr = ir.AccRef(acc_names[op], op.outputs[0].dtype)
                if op.type == "reduce_mean":
                    acc = ir.Binary("divide", acc, ir.Const(t.dtype.type(count) if count else np.nan, t.dtype), t.dtype)
                # the reduced value, stored at its position in the kept shape
                p = self.map_point(outer_point, kept, shape, broadcast=False)
                finals.append(ir.Store(f"out{k}", ir.flat_index(p, shape), acc))
            elif int(np.prod(shape, dtype=np.int64)) == src_size:
                p = full_point if shape == src_shape else self.map_point(full_point, src_shape, shape, broadcast=False)
                updates.append(ir.Store(f"out{k}", ir.flat_index(p, shape), self.value(t, p)))
            else:
                raise self.fail(f"output {t.name}{list(shape)} is neither a reduction over axes {axes} of "
                                f"{list(src_shape)} nor shaped like that input")
        # the reduction loops carry accumulators: not parallel
        inner = self._nest(inner_shape, "r", updates, parallel=False)
        if updates2:
            inner = inner + inits2 + self._nest(inner_shape, "s", updates2, parallel=False)
        return self._nest(kept, "i", inits + inner + finals)


def lower_tensors(name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                  scalar_inputs: Optional[Dict[Tensor, np.ndarray]] = None,
                  known_inputs: Optional[Dict[Tensor, np.ndarray]] = None, single_op: bool = False) -> ir.Kernel:
    """Loop IR computing ``outputs`` from ``inputs`` (the ops between them);
    ``scalar_inputs`` maps inputs with a known one-element value to it,
    ``known_inputs`` inputs that are graph constants to their value (checked,
    not read: gather indices proven in range). ``single_op``: the outputs are
    one op's (never written over its inputs), so they may be written by
    separate loop nests."""
    return _Lowerer(name, inputs, outputs, scalar_inputs, known_inputs, single_op).lower()


def _known_constants(inner: Sequence[Tensor], outer: Sequence[Tensor]) -> Dict[Tensor, np.ndarray]:
    return {i: np.asarray(o.op.attrs["value"]) for i, o in zip(inner, outer) if o.op.type == "const"}


def _scalar_constants(inner: Sequence[Tensor], outer: Sequence[Tensor]) -> Dict[Tensor, np.ndarray]:
    return {i: np.asarray(o.op.attrs["value"]) for i, o in zip(inner, outer)
            if o.op.type == "const" and np.asarray(o.op.attrs["value"]).size == 1}


def lower_fused_kernel(op: Operation) -> ir.Kernel:
    """Loop IR of a ``fused_kernel`` op (its body's arguments are the inputs)."""
    body = op.attrs["body"]
    return lower_tensors(op.name, body.inputs, body.outputs, _scalar_constants(body.inputs, op.inputs),
                         _known_constants(body.inputs, op.inputs))


def lower_op(op: Operation) -> ir.Kernel:
    """Loop IR of one op: a fused kernel, or a single elementwise/reduction op."""
    if op.type == "fused_kernel":
        return lower_fused_kernel(op)
    return lower_tensors(op.name, op.inputs, op.outputs, _scalar_constants(op.inputs, op.inputs),
                         _known_constants(op.inputs, op.inputs), single_op=True)
