"""LLVM code of one segment: ``i32 <symbol>(ptr ctx, ptr args)``, ``args``
a Python list of the segment's arrays (graphc.backends.cpu.abi).

The entry point first checks the list's length (-1 if wrong) and every
argument, returning ``i + 1`` for the first bad one, before anything is
written; then
it runs the segment's ops in schedule order: loop-IR kernels (each its own
``noalias`` function, split over the thread pool when it is one big
parallel loop), BLAS matmuls, variable updates. It returns 0.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import llvmlite.ir as ir
import numpy as np

from ...codegen import blas
from ...codegen.llvm_cpu import emit_kernel, memory_type, split_loop
from ...codegen.parallel import body_function_type, emit_parallel_for, entry_alloca
from ...errors import CompileError
from ...graph import Tensor
from ...lowering import loop_ir as L
from ...lowering.split_reduction import split_reduction
from . import abi
from .segments import Layout, NativeOp, Segment

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()

# Elements a thread must get before a kernel's outer loop is split across
# threads (a parallel region costs a few microseconds; docs/cpu_runtime.md).
MIN_ELEMENTS_PER_THREAD = 32768
# Stack bytes a split reduction may use for its partial results.
MAX_SCRATCH_BYTES = 256 << 10


class _SegmentEmitter:
    """Emits a segment's ops as ``void <symbol>.core(ptr ctx, ptr data)``,
    ``data`` an array of the arguments' data pointers: the code every entry
    point calls (the Python one below, an exported library's C function)."""

    def __init__(self, module: ir.Module, seg: Segment, layout: Layout, symbol: str) -> None:
        self.module = module
        self.seg = seg
        self.layout = layout
        self.fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR, _PTR]), name=f"{symbol}.core")
        self.fn.attributes.add("nounwind")
        self.ctx, table = self.fn.args
        self.ctx.name = "ctx"
        table.name = "data"
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        b = self.b
        self.data: List[ir.Value] = [
            b.load(b.gep(table, [ir.Constant(_I64, i)], inbounds=True, source_etype=_PTR), typ=_PTR, name=f"arg{i}")
            for i in range(len(seg.args))]
        self.arena = abi.ctx_slot(b, self.ctx, abi.CTX_ARENA)
        # subgraph arguments bound while a cond branch / loop body is emitted
        self.bound: Dict[Tensor, ir.Value] = {}
        # whether the code may open parallel regions (the executable then
        # chooses its thread count per call: codegen.parallel.ThreadChooser)
        self.parallel = False

    def pointer(self, t: Tensor) -> ir.Value:
        # Made at the point of use (not cached): a use inside a loop body or a
        # branch must not hand a value to code its block does not dominate.
        # LLVM merges the repeated address computations.
        kind, value = self.seg.where[t]
        if kind == "view":
            return self.pointer(value)
        if kind == "bound":
            return self.bound[t]
        if kind == "arg":
            return self.data[value]
        if kind == "arena":
            return self.arena_pointer(value)
        if kind == "const":
            return abi.ctx_slot(self.b, self.ctx, abi.CTX_CONST_BASE + value)
        raise CompileError(f"no storage for {t.name} ({kind})")

    def arena_pointer(self, offset: int) -> ir.Value:
        return self.b.gep(self.arena, [ir.Constant(_I64, offset)], inbounds=True, source_etype=_I8)

    def current(self, var: str) -> ir.Value:
        kind, value = self.seg.where[("current", var)]
        return self.data[value]

    # ---- ops -----------------------------------------------------------------
    def emit(self) -> None:
        self.ops(self.seg.ops)
        self.b.ret_void()

    def ops(self, natives: List[NativeOp]) -> None:
        last_assign: Dict[str, Tensor] = {}
        for n in natives:
            if n.kind == "kernel":
                self.kernel(n)
            elif n.kind == "matmul":
                self.matmul(n)
            elif n.kind == "assign":
                self.assign(n, last_assign)
                last_assign[n.op.attrs["var"]] = n.op.outputs[0]
            elif n.kind == "cond":
                self.cond(n)
            elif n.kind == "while_loop":
                self.while_loop(n)

    # ---- control flow ------------------------------------------------------------
    def copy(self, dst: ir.Value, src: ir.Value, t: Tensor) -> None:
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize
        if nbytes:
            memcpy = self.module.declare_intrinsic("llvm.memcpy", [_PTR, _PTR, _I64])
            self.b.call(memcpy, [dst, src, ir.Constant(_I64, nbytes), ir.Constant(_I1, 0)])

    def run_subprogram(self, sp, args: List[ir.Value]) -> List[ir.Value]:
        """Emit a subgraph's ops here with its arguments bound to ``args``;
        returns pointers to its outputs."""
        for t, p in zip(sp.graph.inputs, args):
            self.bound[t] = p
        self.ops(sp.ops)
        return [self.pointer(t) for t in sp.graph.outputs]

    def truth(self, ptr: ir.Value) -> ir.Value:
        return self.b.icmp_unsigned("!=", self.b.load(ptr, typ=_I8), ir.Constant(_I8, 0))

    def cond(self, n: NativeOp) -> None:
        op = n.op
        b = self.b
        pred = self.truth(self.pointer(op.inputs[0]))
        branches = [self.fn.append_basic_block(f"{op.name}.true"), self.fn.append_basic_block(f"{op.name}.false")]
        merge = self.fn.append_basic_block(f"{op.name}.merge")
        b.cbranch(pred, *branches)
        for sp, block in zip(n.subprograms, branches):
            b.position_at_end(block)
            results = self.run_subprogram(sp, [self.pointer(t) for t in op.inputs[1:]])
            for out, src in zip(op.outputs, results):
                self.copy(self.pointer(out), src, out)
            b.branch(merge)
        b.position_at_end(merge)

    def while_loop(self, n: NativeOp) -> None:
        """Loop variables live in two buffer sets used in turns: the body
        reads one set and its results are copied into the other, so a body
        that permutes its variables never reads a value it overwrote."""
        op = n.op
        b = self.b
        nvars = op.attrs["num_loop_vars"]
        limit_input = op.inputs[-1] if op.attrs["has_maximum_iterations"] else None
        captured = list(op.inputs[nvars:len(op.inputs) - (1 if limit_input is not None else 0)])
        cond_sp, body_sp = n.subprograms
        loop_vars = body_sp.graph.inputs[:nvars]
        sets = [[self.arena_pointer(off) for off in offsets] for offsets in n.state]
        for dst, init, t in zip(sets[0], op.inputs[:nvars], loop_vars):
            self.copy(dst, self.pointer(init), t)
        limit = None
        if limit_input is not None:
            limit = b.load(self.pointer(limit_input), typ=ir.IntType(8 * limit_input.dtype.itemsize))
            if limit.type != _I64:
                limit = b.sext(limit, _I64)
        pre = b.block
        header = self.fn.append_basic_block(f"{op.name}.header")
        check = self.fn.append_basic_block(f"{op.name}.cond")
        body = self.fn.append_basic_block(f"{op.name}.body")
        done = self.fn.append_basic_block(f"{op.name}.done")
        b.branch(header)
        b.position_at_end(header)
        count = b.phi(_I64, name=f"{op.name}.count")
        second = b.phi(_I1, name=f"{op.name}.second")      # the current values are in set 1
        count.add_incoming(ir.Constant(_I64, 0), pre)
        second.add_incoming(ir.Constant(_I1, 0), pre)
        current = [b.select(second, s1, s0) for s0, s1 in zip(*sets)]
        following = [b.select(second, s0, s1) for s0, s1 in zip(*sets)]
        if limit is not None:
            b.cbranch(b.icmp_signed("<", count, limit), check, done)
        else:
            b.branch(check)
        b.position_at_end(check)
        (keep_going,) = self.run_subprogram(cond_sp, current + [self.pointer(t) for t in captured])
        b.cbranch(self.truth(keep_going), body, done)
        b.position_at_end(body)
        results = self.run_subprogram(body_sp, current + [self.pointer(t) for t in captured])
        for dst, src, t in zip(following, results, loop_vars):
            self.copy(dst, src, t)
        count.add_incoming(b.add(count, ir.Constant(_I64, 1)), b.block)
        second.add_incoming(b.not_(second), b.block)
        b.branch(header)
        b.position_at_end(done)
        for out, src, t in zip(op.outputs[:nvars], current, loop_vars):
            self.copy(self.pointer(out), src, t)
        b.store(b.trunc(count, _I32), self.pointer(op.outputs[nvars]))

    def kernel(self, n: NativeOp) -> None:
        kernel = n.kernel
        op = n.op
        ins = [self.pointer(t) for t in op.inputs]
        outs = [self.pointer(t) for t in op.outputs]
        # the memory plan may write an output over a dead input (in place)
        in_place = any(self.seg.where[o] == self.seg.where[i] for o in op.outputs for i in op.inputs
                       if self.seg.where[o][0] == "arena")
        split = split_reduction(kernel) if split_loop(kernel) is None else None
        if split is not None and sum(p.size * p.dtype.itemsize for p in split.scratch) <= MAX_SCRATCH_BYTES:
            scratch = [entry_alloca(self.b, ir.ArrayType(memory_type(p.dtype), p.size), name=p.name)
                       for p in split.scratch]
            self.call_kernel(split.partial, ins + outs + scratch, in_place)
            if split.tail is not None:
                self.call_kernel(split.tail, ins + outs + scratch, in_place)
            self.call_kernel(split.final, scratch + outs, False)
            return
        self.call_kernel(kernel, ins + outs, in_place)

    def call_kernel(self, kernel: L.Kernel, ptrs: List[ir.Value], in_place: bool) -> None:
        """Call ``kernel`` on ``ptrs`` (its parameters' order), split over the
        thread pool when it is one parallel loop with enough work."""
        outer = split_loop(kernel)
        total = _work(kernel)
        if outer is not None and total >= 2 * MIN_ELEMENTS_PER_THREAD:
            self.parallel = True
            fn = emit_kernel(self.module, kernel, noalias=not in_place, split=True)
            body = self._range_body(fn, len(ptrs))
            b = self.b
            table = entry_alloca(b, ir.ArrayType(_PTR, len(ptrs)), name=f"{fn.name}.args")
            for i, p in enumerate(ptrs):
                b.store(p, b.gep(table, [ir.Constant(_I32, 0), ir.Constant(_I32, i)], inbounds=True,
                                 source_etype=table.allocated_type))
            per_iteration = max(1, total // outer.extent)
            min_chunk = max(1, -(-MIN_ELEMENTS_PER_THREAD // per_iteration))
            emit_parallel_for(b, body, table, outer.extent, min_chunk=min_chunk)
        else:
            fn = emit_kernel(self.module, kernel, noalias=not in_place)
            self.b.call(fn, ptrs)

    def _range_body(self, kernel_fn: ir.Function, nptrs: int) -> ir.Function:
        body = ir.Function(self.module, body_function_type(), name=f"{kernel_fn.name}.range")
        body.linkage = "internal"
        table, begin, end = body.args
        b = ir.IRBuilder(body.append_basic_block("entry"))
        arr = ir.ArrayType(_PTR, nptrs)
        ptrs = [b.load(b.gep(table, [ir.Constant(_I32, 0), ir.Constant(_I32, i)], inbounds=True,
                             source_etype=arr), typ=_PTR) for i in range(nptrs)]
        run = body.append_basic_block("run")
        done = body.append_basic_block("done")
        b.cbranch(b.icmp_signed("<", begin, end), run, done)
        b.position_at_end(run)
        b.call(kernel_fn, ptrs + [begin, end])
        b.branch(done)
        b.position_at_end(done)
        b.ret_void()
        return body

    def matmul(self, n: NativeOp) -> None:
        op = n.op
        a, bt = op.inputs
        out = op.outputs[0]
        ta, tb = bool(op.attrs["transpose_a"]), bool(op.attrs["transpose_b"])
        a_shape, b_shape, c_shape = tuple(a.shape), tuple(bt.shape), tuple(out.shape)
        m, nn = c_shape[-2], c_shape[-1]
        k = a_shape[-2] if ta else a_shape[-1]
        batch = c_shape[:-2]
        kwargs = {}
        if batch:
            kwargs["batch_shape"] = list(batch)
            kwargs["a_batch_strides"] = _batch_strides(a_shape, batch)
            kwargs["b_batch_strides"] = _batch_strides(b_shape, batch)
        if m * nn * k * max(1, int(np.prod(batch, dtype=np.int64))) >= 2 * blas.GEMM_MIN_WORK_PER_THREAD:
            self.parallel = True
        blas.emit_matmul(self.b, out.dtype, self.pointer(a), self.pointer(bt), self.pointer(out), m, nn, k,
                         transpose_a=ta, transpose_b=tb, **kwargs)

    def assign(self, n: NativeOp, last_assign: Dict[str, Tensor]) -> None:
        op = n.op
        var = op.attrs["var"]
        out = op.outputs[0]
        value = self.pointer(op.inputs[0])
        dst = self.pointer(out)
        nbytes = int(np.prod(out.shape, dtype=np.int64)) * out.dtype.itemsize
        if op.type == "assign":
            memcpy = self.module.declare_intrinsic("llvm.memcpy", [_PTR, _PTR, _I64])
            self.b.call(memcpy, [dst, value, ir.Constant(_I64, nbytes), ir.Constant(_I1, 0)])
            return
        cur = self.pointer(last_assign[var]) if var in last_assign else self.current(var)
        size = int(np.prod(out.shape, dtype=np.int64))
        dt = out.dtype
        i = L.IVar("i")
        value_expr = L.Binary("add" if op.type == "assign_add" else "subtract",
                              L.Load("in0", i, dt), L.Load("in1", i, dt), dt)
        kernel = L.Kernel(op.name, (L.Param("in0", dt, (size,), "input"), L.Param("in1", dt, (size,), "input"),
                                    L.Param("out0", dt, (size,), "output")),
                          (L.Loop("i", size, (L.Store("out0", i, value_expr),)),) if size else ())
        fn = emit_kernel(self.module, kernel)
        self.b.call(fn, [cur, value, dst])


def _work(kernel: L.Kernel) -> int:
    """Innermost iterations of the kernel (its largest loop nest)."""
    def count(stmts) -> int:
        most = 1
        for st in stmts:
            if isinstance(st, L.Loop):
                most = max(most, st.extent * count(st.body))
        return most
    return count(kernel.body)


def _batch_strides(shape: Tuple[int, ...], batch: Tuple[int, ...]) -> List[int]:
    """Element strides of an operand's matrices along the output's batch
    dims (0 where the operand broadcasts)."""
    own = shape[:-2]
    matrix = shape[-2] * shape[-1]
    strides: List[int] = []
    acc = matrix
    for d in reversed(own):
        strides.append(acc if d != 1 else 0)
        acc *= d
    strides.reverse()
    lead = len(batch) - len(own)
    return [0] * lead + strides


def emit_core(module: ir.Module, seg: Segment, layout: Layout, symbol: str) -> ir.Function:
    """The segment's ops as ``void <symbol>.core(ptr ctx, ptr data)``."""
    em = _SegmentEmitter(module, seg, layout, symbol)
    em.emit()
    seg.parallel = em.parallel
    return em.fn


def emit_segment(module: ir.Module, seg: Segment, layout: Layout, symbol: str) -> ir.Function:
    """``i32 <symbol>(ptr ctx, ptr args)`` for Python: check every array of
    the list ``args`` (-1: wrong length, i + 1: argument i is wrong, before
    anything runs), then run the core on their data pointers; 0 on success."""
    core = emit_core(module, seg, layout, symbol)
    fn = ir.Function(module, ir.FunctionType(_I32, [_PTR, _PTR]), name=symbol)
    fn.attributes.add("nounwind")
    ctx, arg_list = fn.args
    ctx.name, arg_list.name = "ctx", "args"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n = len(seg.args)
    size_ok = fn.append_basic_block("args.ok")
    size_bad = fn.append_basic_block("args.bad")
    b.cbranch(b.icmp_signed("==", abi.emit_list_size(b, arg_list), ir.Constant(_I64, n)), size_ok, size_bad)
    b.position_at_end(size_bad)
    b.ret(ir.Constant(_I32, -1))
    b.position_at_end(size_ok)
    objects = abi.emit_list_items(b, arg_list, n)
    for i, (arg, obj) in enumerate(zip(seg.args, objects)):
        ok = abi.emit_array_check(b, ctx, obj, arg.dtype, arg.shape, writeable=arg.is_output)
        bad = fn.append_basic_block(f"arg{i}.bad")
        good = fn.append_basic_block(f"arg{i}.ok")
        b.cbranch(ok, good, bad)
        b.position_at_end(bad)
        b.ret(ir.Constant(_I32, i + 1))
        b.position_at_end(good)
    table = entry_alloca(b, ir.ArrayType(_PTR, max(n, 1)), name="data")
    for i, obj in enumerate(objects):
        b.store(abi.emit_data_pointer(b, obj),
                b.gep(table, [ir.Constant(_I32, 0), ir.Constant(_I32, i)], inbounds=True,
                      source_etype=ir.ArrayType(_PTR, max(n, 1))))
    b.call(core, [ctx, table])
    b.ret(ir.Constant(_I32, 0))
    seg.symbol = symbol
    return fn
