"""The CPU executable: native segments and host steps, run in schedule order.

Per run, Python only gathers the arguments of each segment (feeds, variable
values, fresh output arrays), calls its entry point once, commits variable
updates and collects fetches. A program that lowers completely is one
segment: one native call per ``Session.run``.
"""
from __future__ import annotations

import ctypes
import re
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import llvmlite.ir as ir
import numpy as np

from ...codegen import jit
from ...codegen.parallel import ThreadChooser
from ...dump import add_timing
from ...errors import CompileError, ExecutionError
from ...graph import Operation, Tensor
from ..interpreter import RunContext, VariableStore, execute_op
from ..interpreter import lookup_variable as _lookup
from . import abi
from .entry import emit_segment
from .segments import Arg, HostStep, Layout, NativeOp, Segment, classify, plan_layout

__all__ = ["CpuExecutable"]

# NativeOp kinds that compute something (the others move or alias data)
_COMPUTING = ("kernel", "matmul", "cond", "while_loop")


class _CompiledSegment:
    """A segment's entry point with what Python does around each call."""

    def __init__(self, seg: Segment, address: int) -> None:
        self.seg = seg
        self.fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.py_object)(address)
        self.inputs = [a.source for a in seg.inputs()]
        self.outputs = [(a.shape, a.dtype) for a in seg.outputs()]
        self.n_inputs = len(self.inputs)
        # variable updates to commit after a call: (variable, argument index)
        self.commits = [(var, seg.where[t][1]) for var, t in seg.commits]
        self.chooser = ThreadChooser() if seg.parallel else None
        # Buffers for variable updates: a variable's previous value, once
        # nobody but this segment holds it, receives its next update. A fresh
        # array per update costs its page faults every run (W2: ~0.4 ms of
        # 1.3 ms for 1 MB of parameters); fetched outputs stay fresh arrays.
        self.update_slot = {index - self.n_inputs: var for var, index in self.commits}
        self.spares: Dict[str, np.ndarray] = {}

    def output_arrays(self) -> List[np.ndarray]:
        """Arrays for one call's outputs (reused buffers for variable updates)."""
        if not self.update_slot:
            return [np.empty(shape, dtype) for shape, dtype in self.outputs]
        outs = []
        for k, (shape, dtype) in enumerate(self.outputs):
            var = self.update_slot.get(k)
            spare = self.spares.pop(var, None) if var is not None else None
            # 2 references: `spare` and getrefcount's argument; any other holder
            # (a user's array, a checkpoint being written) means a fresh one
            if spare is not None and sys.getrefcount(spare) == 2:
                spare.setflags(write=True)
                outs.append(spare)
            else:
                outs.append(np.empty(shape, dtype))
        return outs

    def commit(self, values: Dict[str, np.ndarray], var: str, value: np.ndarray) -> None:
        """Make ``value`` the variable's value; keep the old one as a spare."""
        value.setflags(write=False)
        old = values.get(var)
        values[var] = value
        if old is not None and old.base is None and old.shape == value.shape and old.dtype == value.dtype:
            self.spares[var] = old
    def call(self, context_address: int, args: List[Any]) -> int:
        """One native call; the thread count is chosen per call when the code
        has parallel regions."""
        chooser = self.chooser
        if chooser is None:
            return self.fn(context_address, args)
        threads = chooser.begin()
        start = time.perf_counter()
        try:
            return self.fn(context_address, args)
        finally:
            chooser.end(threads, time.perf_counter() - start)

    def describe_bad_arg(self, index: int, value: Any) -> str:
        arg = self.seg.args[index]
        kind, what = arg.source
        name = what.name if isinstance(what, Tensor) else (f"variable {what!r}" if kind in ("start", "current")
                                                            else str(what))
        got = (f"{value.dtype.name}{list(value.shape)}" + ("" if value.flags.c_contiguous else " (not contiguous)")
               if isinstance(value, np.ndarray) else type(value).__name__)
        return f"{name}: expected {arg.dtype.name}{list(arg.shape)}, got {got}"


class CpuExecutable:
    """Compiled program for the CPU backend (see graphc.backends.cpu)."""

    def __init__(self, program: Any, config: Any = None) -> None:
        self.program = program
        self.feeds = list(program.feeds)
        self.fetches = list(program.fetches)
        fed = {t.op for t in self.feeds}
        schedule = [op for op in program.graph._ops if op not in fed]
        native: Dict[Operation, Optional[NativeOp]] = {op: classify(op) for op in schedule}
        for op in schedule:
            if op.type == "placeholder":
                native[op] = None        # an unfed placeholder: the interpreter's error
        if not any(n is not None and n.kind in _COMPUTING for n in native.values()):
            # Nothing to compute (variable initializers: constants assigned
            # to variables; variable reads; no_ops): host steps, the NumPy
            # copies the native code would make, without compiling a module
            # for them (~10 ms of LLVM for W2's initializer, which runs once).
            native = dict.fromkeys(native)
        start = time.perf_counter()
        while True:
            layout = plan_layout(program, schedule, native)
            try:
                module, symbols = self._emit(layout)
                break
            except CompileError as exc:
                # a kernel the codegen cannot emit runs as a host step instead
                culprit = _failed_op(exc, native)
                if culprit is None:
                    raise
                native[culprit] = None
        add_timing("cpu: build IR", time.perf_counter() - start)
        self.layout = layout
        self.native_ops = sum(1 for n in native.values() if n is not None)
        self.host_ops = [op for op in schedule if native[op] is None]
        self.uses_blas = any(n is not None and n.kind == "matmul" for n in native.values())
        segments: List[_CompiledSegment] = []
        self.module = None
        if symbols:
            # only the entry points stay external: LLVM drops kernels it inlined
            self.module = jit.compile_module(module, name="graphc_cpu", exports=symbols)
            for seg, sym in zip([s for s in layout.steps if isinstance(s, Segment)], symbols):
                segments.append(_CompiledSegment(seg, self.module.address(sym)))
        self._setup(layout.steps, segments, layout.constants, layout.arena_bytes)

    def _setup(self, steps: Sequence[Any], segments: List[_CompiledSegment], constants: List[np.ndarray],
               arena_bytes: int) -> None:
        """The per-executable memory: the context table and the arena live as
        long as the executable; steps in run order."""
        self.segments = segments
        self.constants = constants
        self.arena_bytes = arena_bytes
        self.context = np.concatenate([abi.context_prefix(),
                                       np.array([c.ctypes.data for c in self.constants], dtype=np.int64)])
        self.arena = np.empty(arena_bytes + 64, dtype=np.uint8)
        self.context[abi.CTX_ARENA] = (self.arena.ctypes.data + 63) // 64 * 64
        self.context_address = self.context.ctypes.data
        self._lock = threading.Lock() if arena_bytes else None
        compiled = iter(self.segments)
        self.steps: List[Any] = [next(compiled) if isinstance(s, Segment) else s for s in steps]
        self.single = self.segments[0] if len(self.steps) == 1 and self.segments else None

    # ---- the executable cache (graphc/backends/cpu/cache.py) ------------------------------
    def manifest(self) -> Optional[Dict[str, Any]]:
        """What rebuilding this executable without its program's passes and IR
        needs (one native segment only), as JSON-ready data."""
        cs = self.single
        if cs is None or self.host_ops:
            return None
        feed_index = {t: i for i, t in enumerate(self.feeds)}
        args = []
        for a in cs.seg.args:
            kind, what = a.source
            if kind == "tensor":
                if what not in feed_index:
                    return None
                ref: Any = feed_index[what]
            elif kind == "output":
                ref = what.name
            else:
                ref = what
            args.append({"kind": kind, "ref": ref, "dtype": a.dtype.name, "shape": list(a.shape)})
        exports = dict(cs.seg.exports)
        fetches = []
        for t in self.fetches:
            if t in feed_index:
                fetches.append(["feed", feed_index[t]])
            elif t in exports:
                fetches.append(list(exports[t]))
            else:
                return None
        return {"symbol": cs.seg.symbol, "args": args, "commits": [list(c) for c in cs.commits],
                "fetches": fetches, "arena_bytes": self.arena_bytes, "native_ops": self.native_ops,
                "blas": self.uses_blas, "parallel": cs.seg.parallel}

    @classmethod
    def restore(cls, program: Any, manifest: Dict[str, Any], constants: List[np.ndarray],
                module: Any) -> "CpuExecutable":
        """An executable from a manifest, its constants and its loaded machine code."""
        self = cls.__new__(cls)
        self.program = program
        self.feeds = list(program.feeds)
        self.fetches = list(program.fetches)
        self.layout = None
        self.native_ops = int(manifest["native_ops"])
        self.host_ops = []
        self.uses_blas = bool(manifest["blas"])
        self.module = module
        args = []
        for a in manifest["args"]:
            kind, ref = a["kind"], a["ref"]
            source = ("tensor", self.feeds[ref]) if kind == "tensor" else (kind, ref)
            args.append(Arg(source, np.dtype(a["dtype"]), tuple(a["shape"])))
        seg = Segment([], args, symbol=manifest["symbol"], parallel=bool(manifest["parallel"]))
        for j, (kind, index) in enumerate(manifest["fetches"]):
            if kind != "feed":
                seg.exports.append((self.fetches[j], (kind, int(index))))
        cs = _CompiledSegment(seg, module.address(seg.symbol))
        cs.commits = [(var, int(index)) for var, index in manifest["commits"]]
        constants = [np.ascontiguousarray(c) for c in constants]
        self._setup([seg], [cs], constants, int(manifest["arena_bytes"]))
        return self

    def _emit(self, layout: Layout) -> Tuple[ir.Module, List[str]]:
        module = ir.Module(name="graphc_cpu")
        symbols = []
        for i, s in enumerate(layout.steps):
            if isinstance(s, Segment):
                sym = f"graphc_segment{len(symbols)}"
                emit_segment(module, s, layout, sym)
                symbols.append(sym)
        return module, symbols

    # ---- running ------------------------------------------------------------------
    def describe(self) -> str:
        segs = len(self.segments)
        host = ", ".join(sorted({op.type for op in self.host_ops}))
        return (f"{segs} native segment(s), {self.native_ops} native ops"
                + (f", host steps: {host}" if host else ""))

    def run(self, feed_values: Sequence[np.ndarray], store: VariableStore, rng: np.random.Generator) -> List[np.ndarray]:
        if self._lock is not None:
            with self._lock:
                return self._run(feed_values, store, rng)
        return self._run(feed_values, store, rng)

    def _run(self, feed_values: Sequence[np.ndarray], store: VariableStore, rng: np.random.Generator) -> List[np.ndarray]:
        env: Dict[Tensor, Any] = dict(zip(self.feeds, feed_values))
        rctx: Optional[RunContext] = None
        if self.single is None:
            rctx = RunContext(store, rng)       # snapshots the start-of-run values
        for step in self.steps:
            if isinstance(step, HostStep):
                op = step.op
                outs = execute_op(op, [env[t] for t in op.inputs], rctx)
                for t, v in zip(op.outputs, outs):
                    if t not in env:
                        env[t] = v
            else:
                self._call(step, env, store, rctx)
        return [env[t] for t in self.fetches]

    def _call(self, cs: _CompiledSegment, env: Dict[Tensor, Any], store: VariableStore,
              rctx: Optional[RunContext]) -> None:
        seg = cs.seg
        start_values = rctx._frames[0] if rctx is not None else store.values
        args: List[Any] = []
        for kind, what in cs.inputs:
            if kind == "tensor":
                args.append(env[what])
            elif kind == "start":
                args.append(_lookup(start_values, what))
            else:
                args.append(_lookup(store.values, what))
        args.extend(cs.output_arrays())
        rc = cs.call(self.context_address, args)
        if rc < 0:
            raise ExecutionError(f"native segment {seg.symbol} got {len(args)} arguments, "
                                 f"expected {len(seg.args)}")
        if rc:
            args = self._fix_args(cs, args, rc)
            rc = cs.call(self.context_address, args)
            if rc:
                raise ExecutionError(f"native segment rejected argument {rc - 1}: "
                                     f"{cs.describe_bad_arg(rc - 1, args[rc - 1])}")
        for var, index in cs.commits:
            cs.commit(store.values, var, args[index])
        for t, (kind, index) in seg.exports:
            value = args[index] if kind == "arg" else self.constants[index]
            if value.shape != tuple(t.shape):
                value = value.reshape(t.shape)
            env[t] = value

    # ---- the fast path ------------------------------------------------------------
    def runner(self, positions: Sequence[int], store: VariableStore) -> Optional[Callable[[Sequence[Any]], List[Any]]]:
        """For a one-segment executable: a function of the feed values (the
        value of ``self.feeds[j]`` at ``positions[j]`` of its argument) that
        runs the segment and returns ``(results, fresh)``; ``fresh[i]`` says
        result ``i`` is a new array nobody else holds (else the caller copies
        it before handing it out). The values must be ndarrays of the feeds'
        exact dtypes and of the shapes this executable was compiled for
        (the entry point checks them natively; the slow path reports errors).
        None when the executable has host steps or other segments."""
        cs = self.single
        if cs is None or self._lock is not None:
            return None
        seg = cs.seg
        feed_pos = {t: positions[j] for j, t in enumerate(self.feeds)}
        getters: List[Tuple[int, Any]] = []
        for kind, what in cs.inputs:
            if kind == "tensor" and what in feed_pos:
                getters.append((0, feed_pos[what]))
            elif kind in ("start", "current"):
                getters.append((1, what))
            else:
                return None
        n_in = cs.n_inputs
        fetch_from: List[Tuple[str, Any, Optional[Tuple[int, ...]]]] = []
        exports = dict(seg.exports)
        for t in self.fetches:
            if t in feed_pos:
                fetch_from.append(("feed", feed_pos[t], None))
                continue
            where = exports.get(t)
            if where is None:
                return None
            kind, index = where
            shape = tuple(t.shape)
            if kind == "arg" and index >= n_in:
                out_shape = seg.args[index].shape
                fetch_from.append(("out", index - n_in, None if out_shape == shape else shape))
            elif kind == "arg":
                fetch_from.append(("arg", index, shape))
            else:
                fetch_from.append(("const", self.constants[index], shape))
        fresh = [kind == "out" for kind, _, _ in fetch_from]
        commits = [(var, index - n_in) for var, index in cs.commits]
        output_arrays, commit = cs.output_arrays, cs.commit
        fn, ctx_address = (cs.fn if cs.chooser is None else cs.call), self.context_address
        values = store.values
        all_feeds = all(k == 0 for k, _ in getters)
        feed_index = [i for _, i in getters]

        identity_feeds = all_feeds and feed_index == list(range(len(feed_index)))
        plain_outputs = (all(kind == "out" and shape is None for kind, _, shape in fetch_from)
                         and [what for _, what, _ in fetch_from] == list(range(len(cs.outputs))))

        def run(vals: Sequence[Any]) -> Tuple[Optional[List[Any]], Optional[List[bool]]]:
            if identity_feeds:
                args = list(vals)
            elif all_feeds:
                args = [vals[i] for i in feed_index]
            else:
                args = [vals[i] if k == 0 else _lookup(values, i) for k, i in getters]
            outs = output_arrays()
            args += outs
            if fn(ctx_address, args):
                return None, None      # the slow path redoes the run and reports
            for var, k in commits:
                commit(values, var, outs[k])
            if plain_outputs:
                return outs, fresh
            results = []
            for kind, what, shape in fetch_from:
                if kind == "out":
                    v = outs[what]
                elif kind == "feed":
                    v = vals[what]
                elif kind == "arg":
                    v = args[what]
                else:
                    v = what
                results.append(v if shape is None else v.reshape(shape))
            return results, fresh

        return run

    def _fix_args(self, cs: _CompiledSegment, args: List[Any], rc: int) -> List[Any]:
        """Arguments the entry point rejected that are the right values in
        another memory layout (strided, byte-swapped, an ndarray subclass):
        contiguous copies. Anything else is an error naming the tensor."""
        fixed = list(args)
        for i, arg in enumerate(cs.seg.args[:cs.n_inputs]):
            v = fixed[i]
            if not isinstance(v, np.ndarray) or v.shape != arg.shape or v.dtype != arg.dtype:
                raise ExecutionError(f"native segment argument {i} is wrong: {cs.describe_bad_arg(i, v)}")
            # a contiguous copy, viewed with NumPy's own dtype object (an equal
            # one from elsewhere, e.g. out of pickle, fails the native check)
            copy = np.array(v, dtype=arg.dtype, order="C", copy=True, subok=False)
            fixed[i] = copy.view(np.dtype(arg.dtype.name))
        return fixed


_KERNEL_ERROR = re.compile(r"kernel (\S+?):")


def _failed_op(exc: CompileError, native: Dict[Operation, Optional[NativeOp]]) -> Optional[Operation]:
    m = _KERNEL_ERROR.search(str(exc))
    if not m:
        return None
    for op, n in native.items():
        if n is not None and n.kernel is not None and n.kernel.name == m.group(1):
            return op
    return None
