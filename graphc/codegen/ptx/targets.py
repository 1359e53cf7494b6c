"""Targets: how an entry reaches thread indices, barriers and shared memory
(the GPU's special registers, or the CUDA emulator's per-thread state), and
the generic entry emission every launch strategy shares."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import llvmlite.ir as ir

from ...errors import CompileError
from ...lowering import loop_ir as L

from ..llvm_cpu import emit_kernel
from .plans import _I32, _I64, _PTR, _VOID, Launch, _grid, _Part

# LLVM intrinsics the NVPTX backend can only lower to libm calls (which do not exist on a GPU).
_LIBCALL_INTRINSICS = ("llvm.exp.", "llvm.exp2.f64", "llvm.exp10.", "llvm.log.", "llvm.log2.", "llvm.log10.",
                       "llvm.sin.", "llvm.cos.", "llvm.tan.", "llvm.pow.", "llvm.powi.")


# ---------------------------------------------------------------------------
# Targets: how an entry reaches thread indices, barriers and shared memory
# ---------------------------------------------------------------------------
class _NvptxTarget:
    """The GPU: ``__global__`` entries (calling convention ``ptx_kernel``),
    special registers through ``llvm.nvvm.read.ptx.sreg.*``, ``barrier0``
    and ``addrspace(3)`` globals for shared memory."""
    host = False

    def entry(self, module: ir.Module, name: str, nparams: int) -> Tuple[ir.Function, ir.IRBuilder, List[ir.Value]]:
        if name in module.globals:
            raise CompileError(f"PTX entry {name!r} is defined twice")
        fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * nparams), name=name)
        fn.calling_convention = "ptx_kernel"
        fn.attributes.add("nounwind")
        for arg in fn.args:
            # every buffer of a launch is its own allocation: lets NVPTX read
            # inputs through the read-only data cache
            arg.add_attribute("noalias")
        return fn, ir.IRBuilder(fn.append_basic_block("entry")), list(fn.args)

    def finish_entry(self, module: ir.Module, fn: ir.Function) -> None:
        pass

    def sreg(self, b: ir.IRBuilder, name: str) -> ir.Value:
        module = b.module
        full = f"llvm.nvvm.read.ptx.sreg.{name}"
        fn = module.globals.get(full)
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(_I32, []), name=full)
        return b.zext(b.call(fn, []), _I64)

    def barrier(self, b: ir.IRBuilder) -> None:
        module = b.module
        fn = module.globals.get("llvm.nvvm.barrier0")
        if fn is None:
            fn = ir.Function(module, ir.FunctionType(_VOID, []), name="llvm.nvvm.barrier0")
        b.call(fn, [])

    def shared(self, b: ir.IRBuilder, name: str, el: ir.Type, count: int) -> ir.Value:
        """A generic pointer to ``count`` elements of block-shared memory
        (NVPTX's address-space inference turns its loads and stores back
        into ld/st.shared)."""
        array = ir.ArrayType(el, count)
        g = ir.GlobalVariable(b.module, array, name=name, addrspace=3)
        g.linkage = "internal"
        g.align = 16
        g.initializer = ir.Constant(array, ir.Undefined)
        return b.addrspacecast(g, _PTR)


# The host emulation's per-thread state (graphc.runtime.cuda_emulator fills it):
# i32 tid[3], ntid[3], ctaid[3], nctaid[3]; ptr shared; ptr barrier. A barrier is
# ``EMU_BARRIER_SYMBOL(barrier)``, a symbol the emulator binds to pthread_barrier_wait.
EMU_SREG_OFFSETS = {"tid": 0, "ntid": 12, "ctaid": 24, "nctaid": 36}
EMU_SHARED_OFFSET, EMU_BARRIER_OFFSET, EMU_STATE_BYTES = 48, 56, 64
EMU_BARRIER_SYMBOL = "graphc_emu_barrier_wait"


def _type_bytes(t: ir.Type) -> int:
    if isinstance(t, ir.IntType):
        return max(1, t.width // 8)
    if isinstance(t, ir.FloatType):
        return 4
    if isinstance(t, ir.DoubleType):
        return 8
    raise CompileError(f"no shared-memory size for {t}")


class _HostTarget:
    """The same entries compiled for the host CPU, for
    :mod:`graphc.runtime.cuda_emulator`: each entry takes a pointer to its
    thread's state first (special registers, the block's shared memory, a
    barrier function), and gets two drivers: ``<entry>.call(state, argv)``
    runs one thread, ``<entry>.grid(state, argv)`` every thread of the grid
    one after the other (only valid without barriers)."""
    host = True

    def __init__(self) -> None:
        self.shared_bytes: Dict[str, int] = {}
        self.barriers: set = set()
        self.nparams: Dict[str, int] = {}
        self._entry: Optional[str] = None
        self._state: Optional[ir.Value] = None

    def entry(self, module: ir.Module, name: str, nparams: int) -> Tuple[ir.Function, ir.IRBuilder, List[ir.Value]]:
        if name in module.globals:
            raise CompileError(f"PTX entry {name!r} is defined twice")
        fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * (nparams + 1)), name=name)
        fn.attributes.add("nounwind")
        self._entry, self._state = name, fn.args[0]
        self.shared_bytes[name] = 0
        self.nparams[name] = nparams
        return fn, ir.IRBuilder(fn.append_basic_block("entry")), list(fn.args[1:])

    def _field(self, b: ir.IRBuilder, offset: int) -> ir.Value:
        return b.gep(self._state, [ir.Constant(_I64, offset)], inbounds=True, source_etype=ir.IntType(8))

    def sreg(self, b: ir.IRBuilder, name: str) -> ir.Value:
        kind, axis = name.split(".")
        offset = EMU_SREG_OFFSETS[kind] + 4 * "xyz".index(axis)
        return b.zext(b.load(self._field(b, offset), typ=_I32), _I64)

    def barrier(self, b: ir.IRBuilder) -> None:
        self.barriers.add(self._entry)
        wait = b.module.globals.get(EMU_BARRIER_SYMBOL)
        if wait is None:
            wait = ir.Function(b.module, ir.FunctionType(_I32, [_PTR]), name=EMU_BARRIER_SYMBOL)
        b.call(wait, [b.load(self._field(b, EMU_BARRIER_OFFSET), typ=_PTR)])

    def shared(self, b: ir.IRBuilder, name: str, el: ir.Type, count: int) -> ir.Value:
        offset = -(-self.shared_bytes[self._entry] // 16) * 16
        self.shared_bytes[self._entry] = offset + count * _type_bytes(el)
        base = b.load(self._field(b, EMU_SHARED_OFFSET), typ=_PTR)
        return b.gep(base, [ir.Constant(_I64, offset)], inbounds=True, source_etype=ir.IntType(8))

    def finish_entry(self, module: ir.Module, fn: ir.Function) -> None:
        """``<entry>.call(state, argv)`` and ``<entry>.grid(state, argv)``
        (argv: the launch's device pointers as u64s)."""
        nparams = self.nparams[fn.name]
        for suffix in (".call", ".grid"):
            driver = ir.Function(module, ir.FunctionType(_VOID, [_PTR, _PTR]), name=fn.name + suffix)
            state, argv = driver.args
            b = ir.IRBuilder(driver.append_basic_block("entry"))
            args = [b.inttoptr(b.load(b.gep(argv, [ir.Constant(_I64, i)], source_etype=_I64), typ=_I64), _PTR)
                    for i in range(nparams)]
            if suffix == ".call":
                b.call(fn, [state] + args)
                b.ret_void()
                continue
            i32 = lambda off: b.gep(state, [ir.Constant(_I64, off)], source_etype=ir.IntType(8))  # noqa: E731
            dims = {k: [b.zext(b.load(i32(o + 4 * a), typ=_I32), _I64) for a in range(3)]
                    for k, o in (("ntid", 12), ("nctaid", 36))}
            threads = b.mul(b.mul(dims["ntid"][0], dims["ntid"][1]), dims["ntid"][2])
            blocks = b.mul(b.mul(dims["nctaid"][0], dims["nctaid"][1]), dims["nctaid"][2])
            total = b.mul(threads, blocks)
            pre = b.block
            loop = driver.append_basic_block("thread")
            done = driver.append_basic_block("done")
            b.cbranch(b.icmp_unsigned("==", total, ir.Constant(_I64, 0)), done, loop)
            b.position_at_end(loop)
            flat = b.phi(_I64)
            flat.add_incoming(ir.Constant(_I64, 0), pre)
            # last thread first: any order is valid on a GPU, and this one
            # exposes a thread reading what another thread writes in the launch
            index = b.sub(b.sub(total, ir.Constant(_I64, 1)), flat)
            blk, thr = b.udiv(index, threads), b.urem(index, threads)
            for kind, value, extents in (("tid", thr, dims["ntid"]), ("ctaid", blk, dims["nctaid"])):
                for a in range(3):
                    b.store(b.trunc(b.urem(value, extents[a]), _I32), i32(EMU_SREG_OFFSETS[kind] + 4 * a))
                    value = b.udiv(value, extents[a])
            b.call(fn, [state] + args)
            nxt = b.add(flat, ir.Constant(_I64, 1))
            flat.add_incoming(nxt, b.block)
            b.cbranch(b.icmp_unsigned("<", nxt, total), loop, done)
            b.position_at_end(done)
            b.ret_void()


def _callees(fn: ir.Function) -> List[str]:
    names = []
    for block in fn.blocks:
        for instr in block.instructions:
            if isinstance(instr, ir.CallInstr):
                callee = getattr(instr, "callee", None)
                name = getattr(callee, "name", None)
                if name:
                    names.append(name)
    return names


def _check_gpu_calls(module: ir.Module, body: ir.Function, kernel: L.Kernel) -> None:
    """A CompileError naming the op when its code calls a function no GPU has."""
    seen = set()
    todo = [body]
    while todo:
        fn = todo.pop()
        for name in _callees(fn):
            if name in seen:
                continue
            seen.add(name)
            callee = module.globals.get(name)
            if name.startswith("llvm."):
                if name.startswith(_LIBCALL_INTRINSICS):
                    raise CompileError(f"op {kernel.name}: kernel {kernel.name} needs {name}, which NVPTX lowers "
                                       "to a libm call: there is no GPU implementation (graphc.codegen.llvm_math "
                                       "covers it unless GRAPHC_LLVM_MATH=0)")
                continue
            if isinstance(callee, ir.Function) and not callee.is_declaration:
                todo.append(callee)
                continue
            raise CompileError(f"op {kernel.name}: kernel {kernel.name} calls {name} (libm), which has no GPU "
                               "implementation (graphc.codegen.llvm_math covers it unless GRAPHC_LLVM_MATH=0)")


def _global_thread_index(target, b: ir.IRBuilder, axis: str = "x") -> ir.Value:
    return b.add(b.mul(target.sreg(b, f"ctaid.{axis}"), target.sreg(b, f"ntid.{axis}"), flags=("nuw", "nsw")),
                 target.sreg(b, f"tid.{axis}"), flags=("nuw", "nsw"))


def _emit_body(module: ir.Module, kernel: L.Kernel, symbol: str, split: bool) -> ir.Function:
    body = emit_kernel(module, kernel, split=split, symbol=symbol)
    body.linkage = "internal"
    body.attributes.add("alwaysinline")
    _check_gpu_calls(module, body, kernel)
    return body


def _emit_part(module: ir.Module, part: _Part, target) -> None:
    k = part.kernel
    body = _emit_body(module, k, f"{part.entry}.body", part.threads > 0)
    fn, b, args = target.entry(module, part.entry, len(k.params))
    if part.threads > 0:
        i = _global_thread_index(target, b)
        inside = b.icmp_unsigned("<", i, ir.Constant(_I64, part.threads))
        with b.if_then(inside, likely=True):
            b.call(body, args + [i, b.add(i, ir.Constant(_I64, 1), flags=("nuw", "nsw"))])
    else:
        first = b.icmp_unsigned("==", _global_thread_index(target, b), ir.Constant(_I64, 0))
        with b.if_then(first):
            b.call(body, args)
    b.ret_void()
    target.finish_entry(module, fn)


def _launch(part: _Part) -> Launch:
    if part.threads > 0:
        grid, block = _grid(part.threads)
    else:
        grid, block = (1, 1, 1), (1, 1, 1)
    return Launch(part.entry, part.args, grid, block)
