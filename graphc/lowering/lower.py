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
_INDEX_MAPS = {"reshape", "expand_dims", "squeeze", "broadcast_to"}
REDUCTIONS = {"reduce_sum": "add", "reduce_mean": "add", "reduce_prod": "mul", "reduce_max": "max",
              "reduce_min": "min", "reduce_any": "or", "reduce_all": "and"}


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
    rank = len(op.inputs[0].shape)
    axis = op.attrs["axis"]
    return tuple(range(rank)) if axis is None else tuple(sorted(a % rank for a in axis))


class _Lowerer:
    def __init__(self, name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 scalar_inputs: Optional[Dict[Tensor, np.ndarray]] = None) -> None:
        self.name = name
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
        if kind in _INDEX_MAPS:
            return self.value(op.inputs[0], self.map_point(point, tuple(t.shape), tuple(op.inputs[0].shape),
                                                           broadcast=kind == "broadcast_to"))
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
            if op.type in REDUCTIONS:
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
        acc_names: Dict[Operation, str] = {}
        for op in dict.fromkeys(ops):
            name = f"acc{len(acc_names)}"
            acc_names[op] = name
            kind = REDUCTIONS[op.type]
            dtype = op.outputs[0].dtype
            inits.append(ir.AccInit(name, dtype, _reduction_init(kind, dtype)))
            updates.append(ir.AccUpdate(name, kind, self.value(op.inputs[0], full_point)))
        src_size = int(np.prod(src_shape, dtype=np.int64))
        for k, t in enumerate(self.outputs):
            shape = tuple(t.shape)
            op = self._reduction_of(t)
            if op is not None:
                acc: ir.Expr = ir.AccRef(acc_names[op], t.dtype)
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
        return self._nest(kept, "i", inits + inner + finals)


def lower_tensors(name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                  scalar_inputs: Optional[Dict[Tensor, np.ndarray]] = None) -> ir.Kernel:
    """Loop IR computing ``outputs`` from ``inputs`` (the ops between them);
    ``scalar_inputs`` maps inputs with a known one-element value to it."""
    return _Lowerer(name, inputs, outputs, scalar_inputs).lower()


def _scalar_constants(inner: Sequence[Tensor], outer: Sequence[Tensor]) -> Dict[Tensor, np.ndarray]:
    return {i: np.asarray(o.op.attrs["value"]) for i, o in zip(inner, outer)
            if o.op.type == "const" and np.asarray(o.op.attrs["value"]).size == 1}


def lower_fused_kernel(op: Operation) -> ir.Kernel:
    """Loop IR of a ``fused_kernel`` op (its body's arguments are the inputs)."""
    body = op.attrs["body"]
    return lower_tensors(op.name, body.inputs, body.outputs, _scalar_constants(body.inputs, op.inputs))


def lower_op(op: Operation) -> ir.Kernel:
    """Loop IR of one op: a fused kernel, or a single elementwise/reduction op."""
    if op.type == "fused_kernel":
        return lower_fused_kernel(op)
    return lower_tensors(op.name, op.inputs, op.outputs, _scalar_constants(op.inputs, op.inputs))
