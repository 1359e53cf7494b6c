"""The PTX executable: native ops as kernel launches on the GPU, every other
op as a host step run by the interpreter, in schedule order.

Which ops run on the device is decided like on the CPU backend
(:func:`graphc.backends.cpu.segments.classify`, with every matmul lowered
to loop IR since no BLAS runs on a GPU): loop-IR kernels and matmuls are
launches, views (reshape and friends) alias their input's buffer, constants
are uploaded once, variable reads and updates touch device copies. Control
flow, random ops, convolutions... are host steps: their inputs are copied
to the host (once per run and tensor), their outputs are uploaded when a
launch needs them.

Memory. The tensors kernels compute live in device buffers allocated on
the first run and reused by every later one (shapes are static); tensors
whose lifetimes in the memory plan do not overlap share a buffer (never in
place: entries take ``noalias`` pointers). Reductions' scratch buffers are
per kernel. Fetches are copied out
into fresh host arrays; feeds are copied in.

Variables stay on the device across runs: per Session (its VariableStore)
and variable, a device copy of the value is kept with the host array it
mirrors, and reused as long as ``store.values[var]`` is that same array
(values are replaced, never mutated). An update writes the new value into
a device buffer of the variable's own (two per variable, alternating), and
at the end of the run (or before a host step, which may read variables) its
host mirror is refreshed with one device→host copy, so the Session, savers
and other backends always see current values.
"""
from __future__ import annotations

import os
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ...codegen import ptx as _ptx
from ...dump import add_timing
from ...errors import CompileError, ExecutionError
from ...graph import Operation, Tensor
from ...lowering import loop_ir as L
from ...runtime import cuda
from ..cpu.segments import NativeOp, classify
from ..interpreter import RunContext, VariableStore, execute_op
from ..interpreter import lookup_variable as _lookup

__all__ = ["DevicePlan", "PtxExecutable", "device_arch", "plan_device"]


def device_arch(ctx: "cuda.Context") -> str:
    """The PTX target for ``ctx``'s GPU: GRAPHC_PTX_ARCH / codegen.ptx.DEFAULT_ARCH,
    unless the GPU is older (PTX for a newer arch does not load on it)."""
    default = _ptx.DEFAULT_ARCH
    major, minor = ctx.compute_capability
    want = re.fullmatch(r"sm_(\d+)(\d)[af]?", default)
    if want and (int(want.group(1)), int(want.group(2))) > (major, minor):
        return f"sm_{major}{minor}"
    return default


# ---------------------------------------------------------------------------
# Variables: device copies per store
# ---------------------------------------------------------------------------
@dataclass
class _VarSlot:
    host: Optional[np.ndarray]          # the host array the device value mirrors
    value: "cuda.DeviceArray"
    spare: Optional["cuda.DeviceBuffer"] = None


def _fetcher(slot: _VarSlot):
    """Download the device value ``slot`` holds now; it then mirrors that array."""
    value = slot.value

    def fetch() -> np.ndarray:
        host = value.to_host()
        host.setflags(write=False)
        if slot.value is value:
            slot.host = host
        return host
    return fetch


_mirrors: "weakref.WeakKeyDictionary[VariableStore, Dict[str, _VarSlot]]" = weakref.WeakKeyDictionary()
_mirrors_lock = threading.Lock()


def _mirror(store: VariableStore) -> Dict[str, _VarSlot]:
    with _mirrors_lock:
        m = _mirrors.get(store)
        if m is None:
            m = {}
            _mirrors[store] = m
        return m


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------
@dataclass
class _KernelStep:
    op: Operation
    plan: Optional[_ptx.PtxKernel] = None
    # scratch buffers and the outputs' device arrays, allocated on the first run
    scratch: List["cuda.DeviceArray"] = field(default_factory=list)
    outputs: List["cuda.DeviceArray"] = field(default_factory=list)


@dataclass
class _UpdateStep:
    """assign / assign_add / assign_sub on the device; ``plan`` is the
    add/subtract kernel (None for assign)."""
    op: Operation
    plan: Optional[_ptx.PtxKernel] = None
    kernel: Optional[L.Kernel] = None
    output: Optional["cuda.DeviceArray"] = None


@dataclass
class _SimpleStep:
    op: Operation
    kind: str            # "view" | "read" | "const" | "nothing" | "host"


def _update_kernel(op: Operation) -> Optional[L.Kernel]:
    """``out = var (+|-) value`` over the flat buffers (equal static shapes)."""
    var_shape = tuple(op.attrs["shape"])
    value = op.inputs[0]
    dt = np.dtype(op.attrs["dtype"])
    if tuple(value.shape) != var_shape or np.dtype(value.dtype) != dt or dt.kind not in "iuf":
        return None
    size = int(np.prod(var_shape, dtype=np.int64))
    binop = "add" if op.type == "assign_add" else "subtract"
    i = L.IVar("i")
    body = (L.Loop("i", size, (L.Store("out0", i, L.Binary(binop, L.Load("in0", i, dt), L.Load("in1", i, dt), dt)),)),) \
        if size > 1 else (L.Store("out0", L.IConst(0),
                                  L.Binary(binop, L.Load("in0", L.IConst(0), dt), L.Load("in1", L.IConst(0), dt), dt)),)
    params = (L.Param("in0", dt, var_shape, "input"), L.Param("in1", dt, var_shape, "input"),
              L.Param("out0", dt, var_shape, "output"))
    return L.Kernel(f"{op.name}.update", params, body)


def _device_slots(program: Any, schedule: Sequence[Operation],
                  kernel_ops: Sequence[Operation]) -> "tuple[Dict[Tensor, int], List[int]]":
    """Device buffers for the kernels' outputs, shared between tensors whose
    lifetimes (from the memory plan) do not overlap: tensor -> slot, and
    each slot's bytes. Unlike the CPU arena, no output takes the buffer of
    an input whose last use is its own kernel: GPU entries mark their
    pointers ``noalias``. Without a plan (or a schedule it does not
    describe) every output gets a buffer of its own."""
    plan = program.analyses.get("memory_plan")
    ours = set(schedule)
    if plan is None or [op for op in plan.schedule if op in ours] != list(schedule):
        return {}, []
    ends: Dict[Tensor, int] = {}
    for life in plan.tensors.values():
        ends[life.owner] = max(ends.get(life.owner, -1), life.end)
    slots: Dict[Tensor, int] = {}
    sizes: List[int] = []
    free_after: List[int] = []          # the last position a slot's current tensor is used at
    for op in kernel_ops:
        for t in op.outputs:
            life = plan.tensors.get(t)
            if life is None or life.kind != "planned" or life.nbytes is None or life.base is not None:
                continue
            fits = [i for i in range(len(sizes)) if free_after[i] < life.start and sizes[i] >= life.nbytes]
            if fits:
                slot = min(fits, key=lambda i: (sizes[i], i))
            else:
                slot = len(sizes)
                sizes.append(max(life.nbytes, 1))
                free_after.append(-1)
            slots[t] = slot
            free_after[slot] = ends.get(t, life.end)
    return slots, sizes


_KERNEL_ERROR = re.compile(r"\bop (\S+?):")


@dataclass
class DevicePlan:
    """What runs where for a program on the ptx backend: per scheduled op its
    native form (None: a host step), the assign_add/sub kernels, and the PTX
    module of every launch (None when nothing is launched)."""
    schedule: List[Operation]
    native: Dict[Operation, Optional[NativeOp]]
    updates: Dict[Operation, Optional[L.Kernel]]
    module: Optional[_ptx.PtxModule]
    owners: List[Operation]           # the op of each module kernel, in order

    @property
    def host_ops(self) -> List[Operation]:
        return [op for op in self.schedule if self.native[op] is None and op.type != "placeholder"]


def plan_device(program: Any, arch: Optional[str] = None) -> DevicePlan:
    """Sort the ops of an optimized program into launches and host steps and
    compile the launches' PTX for ``arch``. Needs no GPU (the backend, the
    ``graphc ptx`` command and the tests share it). Ops are classified like
    on the CPU backend (every matmul as loop IR: no BLAS on a GPU); control
    flow, random ops... are host steps, and so is any kernel the PTX codegen
    refuses (e.g. one that would need libm)."""
    fed = {t.op for t in program.feeds}
    schedule = [op for op in program.graph._ops if op not in fed]
    native: Dict[Operation, Optional[NativeOp]] = {}
    for op in schedule:
        n = classify(op, blas=False) if op.type != "placeholder" else None
        if n is not None and n.kind in ("cond", "while_loop", "matmul"):
            n = None        # control flow runs on the host (its subgraphs through the interpreter)
        if n is not None and n.kind == "source" and op.type not in ("const", "no_op"):
            n = None
        native[op] = n
    updates: Dict[Operation, Optional[L.Kernel]] = {}
    for op, n in native.items():
        if n is not None and n.kind == "assign" and op.type != "assign":
            updates[op] = _update_kernel(op)
            if updates[op] is None:
                native[op] = None
    while True:
        kernels: List[L.Kernel] = []
        owners: List[Operation] = []
        for op in schedule:
            n = native[op]
            if n is None:
                continue
            if n.kind == "kernel":
                kernels.append(n.kernel)
                owners.append(op)
            elif n.kind == "assign" and updates.get(op) is not None:
                kernels.append(updates[op])
                owners.append(op)
        try:
            module = _ptx.compile_ptx(kernels, arch, name="graphc_ptx") if kernels else None
            return DevicePlan(schedule, native, updates, module, owners)
        except CompileError as exc:
            # a kernel the PTX codegen cannot emit runs as a host step instead
            m = _KERNEL_ERROR.search(str(exc))
            culprit = None
            if m:
                for op, k in zip(owners, kernels):
                    if k.name == m.group(1) or op.name == m.group(1):
                        culprit = op
            if culprit is None:
                raise
            native[culprit] = None


class PtxExecutable:
    """Compiled program for the ptx backend (see the module docstring)."""

    def __init__(self, program: Any, config: Any = None) -> None:
        self.ctx = cuda.get_context()
        # Launches are asynchronous: a kernel fault surfaces at the next
        # synchronizing call, not at its launch. In debug mode (or with
        # GRAPHC_CUDA_SYNC=1) every launch is waited for, so the error names its op.
        self.sync_each_launch = bool(getattr(config, "debug", False)) or \
            os.environ.get("GRAPHC_CUDA_SYNC", "") not in ("", "0")
        self.arch = device_arch(self.ctx)
        self.program = program
        self.feeds = list(program.feeds)
        self.fetches = list(program.fetches)
        start = time.perf_counter()
        device = plan_device(program, self.arch)
        schedule, native, updates, module = device.schedule, device.native, device.updates, device.module
        add_timing("ptx: compile", time.perf_counter() - start)
        self.ptx_module = module
        self.module = None
        if module is not None:
            start = time.perf_counter()
            self.module = self.ctx.load_module(module.ptx)
            add_timing("ptx: driver load", time.perf_counter() - start)
        plans = iter(module.kernels if module is not None else [])
        self.steps: List[Any] = []
        self.constants: Dict[Tensor, "cuda.DeviceArray"] = {}
        for op in schedule:
            n = native[op]
            if n is None:
                self.steps.append(_SimpleStep(op, "host"))
            elif n.kind == "kernel":
                self.steps.append(_KernelStep(op, next(plans)))
            elif n.kind == "assign":
                k = updates.get(op)
                self.steps.append(_UpdateStep(op, next(plans) if k is not None else None, k))
            elif n.kind == "source":
                if op.type == "const":
                    t = op.outputs[0]
                    self.constants[t] = self.ctx.to_device(np.asarray(op.attrs["value"], dtype=t.dtype))
                    self.steps.append(_SimpleStep(op, "const"))
                else:
                    self.steps.append(_SimpleStep(op, "nothing"))
            else:
                self.steps.append(_SimpleStep(op, n.kind))       # view | read
        self.slots, self.slot_bytes = _device_slots(program, schedule, [s.op for s in self.steps
                                                                         if isinstance(s, _KernelStep)])
        self.slot_buffers: List["cuda.DeviceBuffer"] = []
        self.host_ops = [s.op for s in self.steps if isinstance(s, _SimpleStep) and s.kind == "host"]
        self.device_ops = sum(1 for s in self.steps if not (isinstance(s, _SimpleStep) and s.kind == "host"))
        self._lock = threading.Lock()

    def describe(self) -> str:
        host = ", ".join(sorted({op.type for op in self.host_ops}))
        launches = sum(len(k.launches) for k in self.ptx_module.kernels) if self.ptx_module else 0
        return (f"{self.device_ops} device ops ({launches} launches per run on {self.ctx.name}, {self.arch})"
                + (f", host steps: {host}" if host else ""))

    @property
    def ptx(self) -> str:
        return self.ptx_module.ptx if self.ptx_module is not None else ""

    def run(self, feed_values: Sequence[np.ndarray], store: VariableStore, rng: np.random.Generator) -> List[np.ndarray]:
        with self._lock:
            return _Run(self, feed_values, store, rng).run()


class _Run:
    """The values of one run: each tensor on the host, the device, or both."""

    def __init__(self, ex: PtxExecutable, feed_values: Sequence[np.ndarray], store: VariableStore,
                 rng: np.random.Generator) -> None:
        self.ex = ex
        self.ctx = ex.ctx
        self.store = store
        self.mirror = _mirror(store)
        # Start-of-run values. Host steps need them on the host (the RunContext
        # snapshots store.values, fetching deferred device values); a program
        # of device ops only reads them from the device copies, and moves none.
        self.rctx: Optional[RunContext] = RunContext(store, rng) if ex.host_ops else None
        self.rng = rng
        self.start_values = self.rctx._frames[0] if self.rctx is not None else dict(store._values)
        # device values the store deferred to at the start: the start-of-run
        # values (an update this run writes another buffer, so they stay intact)
        self.start_device = {var: owner.value for var, (owner, _) in store.deferred.items()
                             if self.mirror.get(var) is owner}
        self.host: Dict[Tensor, np.ndarray] = dict(zip(ex.feeds, feed_values))
        self.dev: Dict[Tensor, "cuda.DeviceArray"] = dict(ex.constants)
        # variables updated on the device this run, not yet the store's values
        self.pending: Dict[str, "cuda.DeviceArray"] = {}

    # ---- values ----------------------------------------------------------------
    def on_device(self, t: Tensor) -> "cuda.DeviceArray":
        d = self.dev.get(t)
        if d is None:
            h = self.host[t]
            d = self.ctx.to_device(np.asarray(h, dtype=t.dtype, order="C"))
            self.dev[t] = d
        return d

    def on_host(self, t: Tensor) -> np.ndarray:
        h = self.host.get(t)
        if h is None:
            h = self.dev[t].to_host()
            self.host[t] = h
        return h

    def variable(self, var: str, start: bool) -> "cuda.DeviceArray":
        """The device value of ``var`` at the start of the run (``start``) or
        now. The device copy is current when the store defers to it, or when
        the store's host value is the array it was uploaded from."""
        if not start and var in self.pending:
            return self.pending[var]
        if start and var in self.start_device:
            return self.start_device[var]
        slot = self.mirror.get(var)
        if not start and slot is not None and self.store.deferred.get(var, (None,))[0] is slot:
            return slot.value
        host = _lookup(self.start_values if start else self.store.values, var)
        if slot is not None and slot.host is host:
            return slot.value
        value = self.ctx.to_device(host)
        if slot is None:
            self.mirror[var] = _VarSlot(host, value)
        elif not start:
            slot.host, slot.value = host, value
        return value

    def flush(self, final: bool = False) -> None:
        """Hand the variables updated on the device to the store. Before a
        host step (``final`` False) they are copied to the host, since the
        step may read them; at the end of the run the store only *defers* to
        the device copies (fetched when someone reads the store's values), and
        a replaced device value becomes the variable's spare buffer (until
        then a start-of-run read may still be using it)."""
        for var, value in self.pending.items():
            slot = self.mirror.get(var)
            if slot is None:
                slot = self.mirror[var] = _VarSlot(None, value)
            elif final and slot.value.buffer is not value.buffer:
                slot.spare = slot.value.buffer
            slot.value = value
            if final:
                slot.host = None
                self.store.defer(var, slot, _fetcher(slot))
            else:
                host = value.to_host()
                host.setflags(write=False)
                self.store.deferred.pop(var, None)
                self.store.values[var] = host
                slot.host = host
        self.pending.clear()

    # ---- steps -----------------------------------------------------------------
    def run(self) -> List[np.ndarray]:
        for step in self.ex.steps:
            op = step.op
            if isinstance(step, _KernelStep):
                self.launch_kernel(step)
            elif isinstance(step, _UpdateStep):
                self.update(step)
            elif step.kind == "host":
                self.flush()
                outs = execute_op(op, [self.on_host(t) for t in op.inputs], self.rctx)
                for t, v in zip(op.outputs, outs):
                    if t not in self.host and t not in self.dev:
                        self.host[t] = v
            elif step.kind == "view":
                src, out = op.inputs[0], op.outputs[0]
                if src in self.dev:
                    self.dev[out] = self.dev[src].reshape(out.shape)
                if src in self.host:
                    self.host[out] = self.host[src].reshape(out.shape)
            elif step.kind == "read":
                var = op.attrs["var"]
                start = op.type == "variable" or not op.attrs.get("ordered")
                self.dev[op.outputs[0]] = self.variable(var, start)
        try:
            self.ctx.synchronize()
        except cuda.CudaError as exc:
            raise ExecutionError(f"a kernel of this run failed on the GPU: {exc}. Launches are asynchronous; "
                                 "run with gc.Config(debug=True) or GRAPHC_CUDA_SYNC=1 to learn which op's "
                                 "kernel it was") from None
        self.flush(final=True)
        return [self.on_host(t) for t in self.ex.fetches]

    def launch_kernel(self, step: _KernelStep) -> None:
        op, plan = step.op, step.plan
        if not step.outputs:
            ex = self.ex
            if not ex.slot_buffers:
                ex.slot_buffers = [self.ctx.alloc(n) for n in ex.slot_bytes]
            step.outputs = [cuda.DeviceArray(self.ctx, tuple(t.shape), t.dtype, ex.slot_buffers[ex.slots[t]])
                            if t in ex.slots else self.ctx.empty(t.shape, t.dtype) for t in op.outputs]
            step.scratch = [self.ctx.empty(p.shape, p.dtype) for p in plan.scratch]
        params = [self.on_device(t).ptr for t in op.inputs] + [d.ptr for d in step.outputs]
        if len(params) != len(plan.params):
            raise ExecutionError(f"{op.describe()}: its kernel has {len(plan.params)} parameters, "
                                 f"the op {len(params)} tensors")
        self._launch(op, plan, params, [s.ptr for s in step.scratch])
        for t, d in zip(op.outputs, step.outputs):
            self.dev[t] = d

    def _launch(self, op: Operation, plan: _ptx.PtxKernel, params: List[int], scratch: List[int]) -> None:
        module = self.ex.module
        for launch in plan.launches:
            ptrs = [params[a.index] if a.kind == "param" else scratch[a.index] for a in launch.args]
            try:
                module.function(launch.entry).launch(launch.grid, launch.block, ptrs, launch.shared_bytes)
                if self.ex.sync_each_launch:
                    self.ctx.synchronize()
            except cuda.CudaError as exc:
                raise ExecutionError(f"{op.describe()}: its kernel {launch.entry} (grid {launch.grid}, block "
                                     f"{launch.block}) failed on the GPU: {exc}") from None

    def update(self, step: _UpdateStep) -> None:
        op = step.op
        var = op.attrs["var"]
        slot = self.mirror.get(var)
        if op.type == "assign":
            source = self.on_device(op.inputs[0])
        else:
            if step.output is None:
                step.output = self.ctx.empty(op.outputs[0].shape, op.outputs[0].dtype)
            current = self.variable(var, start=False)
            self._launch(op, step.plan, [current.ptr, self.on_device(op.inputs[0]).ptr, step.output.ptr], [])
            source = step.output
        # the new value goes to a buffer of the variable's own (the one it does
        # not hold now), so no later launch of this executable overwrites it
        target = None
        if slot is not None and slot.spare is not None and slot.spare.nbytes == source.nbytes \
                and var not in self.pending:
            target, slot.spare = slot.spare, None
        if target is None:
            target = self.ctx.alloc(source.nbytes)
        target.copy_from_device(source.buffer, source.nbytes)
        value = cuda.DeviceArray(self.ctx, tuple(op.outputs[0].shape), op.outputs[0].dtype, target)
        self.pending[var] = value
        self.dev[op.outputs[0]] = value
