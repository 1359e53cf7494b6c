"""Export a compiled program as a shared library and a C header.

The program goes through the same passes, lowering and codegen as the CPU
backend, with three differences, each because the library must run without
Python, graphc or SciPy:

* every matmul is a loop-IR kernel (``lowering/matvec.lower_matmul``), not
  a BLAS call: no BLAS is needed at run time (no system BLAS is assumed to
  exist; a matmul-heavy library is slower than the in-process backend);
* code runs on the calling thread (``codegen.parallel.serial_codegen``): no
  OpenMP runtime and no graphc thread-count symbol;
* constants and frozen variable values are global arrays in the library.

The C function (API.md, "Export") is ``int <name>(const T* in0, ..., T* out0,
...)``: inputs in signature order, then outputs in result order; contiguous
row-major buffers the caller allocates. It returns 0, or
``GRAPHC_ERR_NULL_ARGUMENT`` / ``GRAPHC_ERR_OUT_OF_MEMORY``. ``<name>_describe``
reports every argument's dtype and shape at run time. Scratch memory is
allocated per call (``aligned_alloc``), so calls are reentrant.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from .errors import CompileError, ExportError
from .graph import Graph, Tensor

__all__ = ["ExportedFunction", "DTYPE_CODES", "export", "export_graph"]

# dtype codes in the header and in <name>_describe
DTYPE_CODES = {"float32": 0, "float64": 1, "int32": 2, "int64": 3, "bool": 4}
_C_TYPES = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t", "bool": "uint8_t"}
ERR_NULL_ARGUMENT = 1
ERR_OUT_OF_MEMORY = 2

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()


@dataclass
class ExportedFunction:
    """Where an export went and what the C function takes."""
    library: str
    header: str
    name: str
    inputs: List[Tuple[str, np.dtype, Tuple[int, ...]]]
    outputs: List[Tuple[str, np.dtype, Tuple[int, ...]]]


def _c_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ExportError(f"export name {name!r} is not a C identifier")
    return name


def _compiler() -> str:
    cc = os.environ.get("CC")
    if cc:
        cc = shutil.which(cc)
    else:
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise ExportError("exporting needs a C compiler to link the shared library; none found "
                          "(install gcc or clang, or set CC)")
    return cc


def export_graph(graph: Graph, inputs: Sequence[Tensor], outputs: Sequence[Tensor], directory: str,
                 name: str = "fn", *, shapes: Optional[Sequence[Sequence[int]]] = None,
                 variables: Optional[Dict[str, np.ndarray]] = None, variables_as: str = "constants",
                 input_names: Optional[Sequence[str]] = None,
                 output_names: Optional[Sequence[str]] = None, cpu: Optional[str] = None,
                 triple: Optional[str] = None, optimize: bool = True) -> ExportedFunction:
    """Compile ``outputs`` as a function of ``inputs`` (placeholders of
    ``graph``) into ``directory/<name>.so`` and ``directory/<name>.h``.

    ``shapes``: one concrete shape per input (default: their static shapes,
    which must then be fully known). ``variables``: values of the variables
    the outputs read. ``variables_as="constants"`` freezes them into the
    library; ``"inputs"`` makes each variable read an extra input of the C
    function, after the graph inputs, in variable-name order (the header
    names them), so the caller can pass updated parameters. ``cpu``: target
    CPU name for LLVM (default: this machine's CPU with its features; use
    e.g. ``"x86-64-v3"`` for a library other machines run). ``triple``: an
    LLVM target triple other than this machine's (cross-compiling): then
    ``directory/<name>.o`` is written instead of the ``.so``, for the
    target's own toolchain to link (``cc -shared -o <name>.so <name>.o
    -lm``). Raises
    ExportError, before writing anything, when a shape is unknown, an op
    cannot be exported or no C compiler is found.
    """
    from .backends.cpu import abi
    from .backends.cpu.entry import emit_core
    from .backends.cpu.segments import HostStep, Segment, classify, plan_layout
    from .codegen import jit
    from .codegen.llvm_cpu import _constant_global
    from .codegen.parallel import serial_codegen
    from .passes import extract, run_pipeline

    name = _c_name(name)
    if variables_as not in ("constants", "inputs"):
        raise ExportError(f"variables_as must be 'constants' or 'inputs', got {variables_as!r}")
    host_triple = llvm.get_process_triple()
    cross = triple is not None and triple != host_triple
    cc = None if cross else _compiler()
    inputs, outputs = list(inputs), list(outputs)
    for t in inputs:
        if t.op.type != "placeholder":
            raise ExportError(f"export inputs must be placeholders; {t.name} is made by a {t.op.type} op")
    if shapes is None:
        shapes = []
        for t in inputs:
            if t.shape is None or any(d is None for d in t.shape):
                raise ExportError(f"input {t.name} has shape {t.shape} with unknown dims; give shapes= "
                                  "(or call the function once / give an input_signature) before exporting")
            shapes.append(tuple(t.shape))
    shapes = [tuple(int(d) for d in s) for s in shapes]
    try:
        program = extract(graph, outputs, [], inputs, shapes)
        if optimize:
            program, _ = run_pipeline(program)
    except CompileError:
        raise
    except Exception as exc:
        raise ExportError(f"cannot export {name}: {exc}") from exc
    fed = {t.op for t in program.feeds}
    schedule = [op for op in program.graph._ops if op not in fed]
    native = {op: classify(op, blas=False) for op in schedule}
    unsupported = sorted({op.type for op, n in native.items() if n is None or n.kind == "assign"})
    if unsupported:
        culprits = [op for op, n in native.items() if n is None or n.kind == "assign"]
        where = ", ".join(f"{op.name} ({op.type}, created at {op.source})" for op in culprits[:3])
        raise ExportError(f"cannot export {name}: no exportable native code for op type(s) "
                          f"{', '.join(unsupported)}: {where}")
    for t in program.fetches:
        if t.shape is None or any(d is None for d in t.shape):
            raise ExportError(f"output {t.name} of {name} has an unknown shape {t.shape}")
    with serial_codegen():
        layout = plan_layout(program, schedule, native)
        segments = [s for s in layout.steps if isinstance(s, Segment)]
        if any(isinstance(s, HostStep) for s in layout.steps) or len(segments) > 1:
            raise ExportError(f"cannot export {name}: the program does not compile to a single native function")
        seg = segments[0] if segments else None
        var_inputs: List[Tuple[str, np.dtype, Tuple[int, ...]]] = []
        if variables_as == "inputs" and seg is not None:
            seen = {}
            for a in seg.args:
                kind, what = a.source
                if kind in ("start", "current") and what not in seen:
                    seen[what] = (what, a.dtype, tuple(a.shape))
            var_inputs = [seen[v] for v in sorted(seen)]
        module = ir.Module(name=name)
        core = emit_core(module, seg, layout, f"graphc.{name}") if seg is not None else None
        _emit_wrapper(module, name, program, seg, core, layout, variables or {}, _constant_global,
                      [v for v, _, _ in var_inputs])
    in_specs = [(n, t.dtype, tuple(s)) for n, t, s in zip(input_names or [t.op.name for t in inputs],
                                                          program.feeds, shapes)]
    in_specs += [(f"variable {v}", dt, shape) for v, dt, shape in var_inputs]
    out_specs = [(n, t.dtype, tuple(t.shape)) for n, t in zip(output_names or [f"out{i}" for i in range(len(outputs))],
                                                             program.fetches)]
    _emit_describe(module, name, in_specs, out_specs)
    obj = _object_code(module, cpu, triple if cross else None)
    return _write(directory, name, obj, _header(name, in_specs, out_specs), cc, in_specs, out_specs)


def export(fetches: Any, feeds: Sequence[Tensor], directory: str, name: str = "fn", *,
           session: Any = None, shapes: Optional[Sequence[Sequence[int]]] = None,
           variables_as: str = "constants", cpu: Optional[str] = None,
           triple: Optional[str] = None) -> ExportedFunction:
    """Session-style export: ``fetches`` (a Tensor or a list of them) as a
    function of the placeholders ``feeds``. Variables the fetches read are
    frozen at their values in ``session`` (default: the default session), or
    become extra inputs with ``variables_as="inputs"``."""
    from .session import get_default_session
    outputs = [fetches] if isinstance(fetches, Tensor) else list(fetches)
    if not outputs or not all(isinstance(t, Tensor) for t in outputs):
        raise ExportError("export fetches must be a Tensor or a list of Tensors")
    graph = outputs[0].graph
    session = session or get_default_session()
    values = dict(session._store.values) if session is not None and session.graph is graph else {}
    return export_graph(graph, list(feeds), outputs, directory, name, shapes=shapes, variables=values,
                        variables_as=variables_as, output_names=[t.name for t in outputs], cpu=cpu,
                        triple=triple)


# ---- code -----------------------------------------------------------------------------
def _emit_wrapper(module: ir.Module, name: str, program, seg, core, layout, variables: Dict[str, np.ndarray],
                  constant_global, var_inputs: Sequence[str] = ()) -> None:
    from .backends.cpu import abi
    from .codegen.parallel import entry_alloca
    n_in, n_out = len(program.feeds) + len(var_inputs), len(program.fetches)
    var_input_pos = {v: len(program.feeds) + k for k, v in enumerate(var_inputs)}
    fn = ir.Function(module, ir.FunctionType(_I32, [_PTR] * (n_in + n_out)), name=name)
    fn.attributes.add("nounwind")
    ins, outs = list(fn.args[:n_in]), list(fn.args[n_in:])
    for i, a in enumerate(ins):
        a.name = f"in{i}"
    for i, a in enumerate(outs):
        a.name = f"out{i}"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    # null pointers are refused before anything runs (zero-size buffers included: C callers pass real pointers)
    for a in ins + outs:
        bad = fn.append_basic_block(f"{a.name}.null")
        ok = fn.append_basic_block(f"{a.name}.ok")
        b.cbranch(b.icmp_unsigned("==", a, ir.Constant(_PTR, None)), bad, ok)
        b.position_at_end(bad)
        b.ret(ir.Constant(_I32, ERR_NULL_ARGUMENT))
        b.position_at_end(ok)
    alloc = _declare(module, "aligned_alloc", _PTR, [_I64, _I64])
    free = _declare(module, "free", ir.VoidType(), [_PTR])
    memcpy = module.declare_intrinsic("llvm.memcpy", [_PTR, _PTR, _I64])
    feed_pos = {t: i for i, t in enumerate(program.feeds)}
    allocated: List[ir.Value] = []

    def malloc(nbytes: int) -> ir.Value:
        size = max(64, (nbytes + 63) // 64 * 64)
        p = b.call(alloc, [ir.Constant(_I64, 64), ir.Constant(_I64, size)])
        fail = fn.append_basic_block("oom")
        ok = fn.append_basic_block("allocated")
        b.cbranch(b.icmp_unsigned("==", p, ir.Constant(_PTR, None)), fail, ok)
        b.position_at_end(fail)
        for q in allocated:
            b.call(free, [q])
        b.ret(ir.Constant(_I32, ERR_OUT_OF_MEMORY))
        b.position_at_end(ok)
        allocated.append(p)
        return p

    def nbytes(t: Tensor) -> int:
        return int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize

    constants = [constant_global(module, f"{name}.const{k}", c) for k, c in enumerate(layout.constants)]
    claimed: Dict[int, int] = {}           # segment output arg -> fetch position
    copies: List[Tuple[int, Any]] = []     # (fetch position, source) filled after the core runs
    exports = dict(seg.exports) if seg is not None else {}
    for j, t in enumerate(program.fetches):
        if t in feed_pos:
            copies.append((j, ("input", feed_pos[t])))
            continue
        where = exports.get(t)
        if where is None:
            raise ExportError(f"output {t.name} of {name} has no native source")
        kind, index = where
        if kind == "arg" and seg.args[index].is_output and index not in claimed:
            claimed[index] = j
        else:
            copies.append((j, where))
    if seg is not None:
        table_type = ir.ArrayType(_PTR, max(len(seg.args), 1))
        table = entry_alloca(b, table_type, name="data")
        ctx_type = ir.ArrayType(_PTR, abi.CTX_CONST_BASE + len(constants))
        ctx = entry_alloca(b, ctx_type, name="ctx")

        def slot(arr, atype, i: int):
            return b.gep(arr, [ir.Constant(_I32, 0), ir.Constant(_I32, i)], inbounds=True, source_etype=atype)

        arena = malloc(layout.arena_bytes) if layout.arena_bytes else ir.Constant(_PTR, None)
        for i in range(abi.CTX_CONST_BASE):
            b.store(arena if i == abi.CTX_ARENA else ir.Constant(_PTR, None), slot(ctx, ctx_type, i))
        for k, g in enumerate(constants):
            b.store(g, slot(ctx, ctx_type, abi.CTX_CONST_BASE + k))
        for i, arg in enumerate(seg.args):
            kind, what = arg.source
            if kind == "tensor":
                if what not in feed_pos:
                    raise ExportError(f"{name}: {what.name} is read but neither fed nor computed")
                ptr = ins[feed_pos[what]]
            elif kind in ("start", "current") and what in var_input_pos:
                ptr = ins[var_input_pos[what]]
            elif kind in ("start", "current"):
                if what not in variables:
                    raise ExportError(f"{name} reads variable {what!r}; pass its value (variables=) to freeze it")
                value = np.ascontiguousarray(variables[what], dtype=arg.dtype)
                if value.shape != arg.shape:
                    raise ExportError(f"variable {what!r} has shape {value.shape}, the graph expects {arg.shape}")
                ptr = constant_global(module, f"{name}.var.{re.sub(r'[^A-Za-z0-9_]', '_', what)}.{i}", value)
            elif i in claimed:
                ptr = outs[claimed[i]]
            else:
                ptr = malloc(int(np.prod(arg.shape, dtype=np.int64)) * arg.dtype.itemsize)
            b.store(ptr, slot(table, table_type, i))
        b.call(core, [ctx, table])
    for j, (kind, index) in copies:
        t = program.fetches[j]
        if kind == "input":
            src = ins[index]
        elif kind == "const":
            src = constants[index]
        else:
            src = b.load(b.gep(table, [ir.Constant(_I32, 0), ir.Constant(_I32, index)], inbounds=True,
                               source_etype=table_type), typ=_PTR)
        if nbytes(t):
            b.call(memcpy, [outs[j], src, ir.Constant(_I64, nbytes(t)), ir.Constant(_I1, 0)])
    for p in allocated:
        b.call(free, [p])
    b.ret(ir.Constant(_I32, 0))


def _declare(module: ir.Module, fname: str, ret: ir.Type, args: List[ir.Type]) -> ir.Function:
    existing = module.globals.get(fname)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name=fname)


def _emit_describe(module: ir.Module, name: str, in_specs, out_specs) -> None:
    """``int <name>_describe(int is_output, int index, int* dtype, int* ndim,
    const int64_t** shape)``: 0, or -1 for an index out of range."""
    def tables(specs, which: str):
        shape_ptrs = []
        for k, (_, dt, shape) in enumerate(specs):
            arr = ir.ArrayType(_I64, max(len(shape), 1))
            g = ir.GlobalVariable(module, arr, f"{name}.{which}{k}.shape")
            g.global_constant = True
            g.linkage = "internal"
            g.initializer = ir.Constant(arr, [int(d) for d in shape] or [0])
            shape_ptrs.append(g)
        def table(typ, values, label):
            arr = ir.ArrayType(typ, max(len(values), 1))
            g = ir.GlobalVariable(module, arr, f"{name}.{which}.{label}")
            g.global_constant = True
            g.linkage = "internal"
            g.initializer = ir.Constant(arr, values or [ir.Constant(typ, None) if typ is _PTR else 0])
            return g, arr
        return (table(_I32, [DTYPE_CODES[dt.name] for _, dt, _ in specs], "dtypes"),
                table(_I32, [len(s) for _, _, s in specs], "ndims"),
                table(_PTR, shape_ptrs, "shapes"), len(specs))

    fn = ir.Function(module, ir.FunctionType(_I32, [_I32, _I32, _PTR, _PTR, _PTR]), name=f"{name}_describe")
    is_out, index, dtype_p, ndim_p, shape_p = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    bad = fn.append_basic_block("bad")
    b2 = ir.IRBuilder(bad)
    b2.ret(ir.Constant(_I32, -1))
    for flag, specs, which in ((0, in_specs, "in"), (1, out_specs, "out")):
        (dt_g, dt_t), (nd_g, nd_t), (sh_g, sh_t), count = tables(specs, which)
        here = fn.append_basic_block(f"{which}")
        nxt = fn.append_basic_block(f"not_{which}")
        b.cbranch(b.icmp_signed("==", is_out, ir.Constant(_I32, flag)), here, nxt)
        b.position_at_end(here)
        ok = fn.append_basic_block(f"{which}.ok")
        in_range = b.and_(b.icmp_signed(">=", index, ir.Constant(_I32, 0)),
                          b.icmp_signed("<", index, ir.Constant(_I32, count)))
        b.cbranch(in_range, ok, bad)
        b.position_at_end(ok)
        zero = ir.Constant(_I32, 0)

        def at(g, t):
            return b.load(b.gep(g, [zero, index], inbounds=True, source_etype=t),
                          typ=t.element)
        for ptr, value in ((dtype_p, at(dt_g, dt_t)), (ndim_p, at(nd_g, nd_t)), (shape_p, at(sh_g, sh_t))):
            null = fn.append_basic_block("skip")
            store = fn.append_basic_block("store")
            b.cbranch(b.icmp_unsigned("==", ptr, ir.Constant(_PTR, None)), null, store)
            b.position_at_end(store)
            b.store(value, ptr)
            b.branch(null)
            b.position_at_end(null)
        b.ret(ir.Constant(_I32, 0))
        b.position_at_end(nxt)
    b.branch(bad)


def _object_code(module: ir.Module, cpu: Optional[str], triple: Optional[str] = None) -> bytes:
    from .codegen import jit
    jit.initialize()
    if triple is not None:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        try:
            target = llvm.Target.from_triple(triple)
        except RuntimeError as exc:
            raise ExportError(f"LLVM cannot target {triple!r}: {exc}") from None
        tm = target.create_target_machine(cpu=cpu or "generic", opt=3, reloc="pic", codemodel="default")
    elif cpu is None:
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3, reloc="pic",
            codemodel="default")
    else:
        tm = llvm.Target.from_default_triple().create_target_machine(cpu=cpu, opt=3, reloc="pic",
                                                                     codemodel="default")
    llmod = jit.optimize_module(module, tm, name="export", opt=3, vectorize=True)
    return tm.emit_object(llmod)


def _header(name: str, in_specs, out_specs) -> str:
    upper = name.upper()
    lines = [f"/* {name}.h: generated by graphc. C ABI of {name}.so (no Python, no graphc at run time).",
             " *",
             f" * int {name}(inputs..., outputs...) computes the outputs from the inputs. Every buffer is",
             " * contiguous, row-major, allocated by the caller, of the dtype and shape listed below.",
             " * Returns 0 on success, GRAPHC_ERR_NULL_ARGUMENT if a pointer is NULL (nothing is written),",
             " * GRAPHC_ERR_OUT_OF_MEMORY if scratch memory could not be allocated. Calls are reentrant.",
             " */",
             f"#ifndef GRAPHC_{upper}_H", f"#define GRAPHC_{upper}_H", "", "#include <stdint.h>", "",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
             "#ifndef GRAPHC_DTYPES_DEFINED", "#define GRAPHC_DTYPES_DEFINED",
             *[f"#define GRAPHC_{k.upper()} {v}" for k, v in DTYPE_CODES.items()],
             f"#define GRAPHC_ERR_NULL_ARGUMENT {ERR_NULL_ARGUMENT}",
             f"#define GRAPHC_ERR_OUT_OF_MEMORY {ERR_OUT_OF_MEMORY}", "#endif", "",
             f"#define {upper}_NUM_INPUTS {len(in_specs)}", f"#define {upper}_NUM_OUTPUTS {len(out_specs)}", ""]
    params = []
    for which, specs, const in (("IN", in_specs, "const "), ("OUT", out_specs, "")):
        for k, (label, dt, shape) in enumerate(specs):
            dims = ", ".join(str(d) for d in shape)
            count = int(np.prod(shape, dtype=np.int64))
            lines.append(f"/* {which.lower()}{k}: {label}, {dt.name}[{dims}] ({count} elements) */")
            lines.append(f"#define {upper}_{which}{k}_DTYPE GRAPHC_{dt.name.upper()}")
            lines.append(f"#define {upper}_{which}{k}_NDIM {len(shape)}")
            lines.append(f"#define {upper}_{which}{k}_SIZE {count}")
            lines.append(f"static const int64_t {upper}_{which}{k}_SHAPE[{max(len(shape), 1)}] = "
                         f"{{{dims if shape else '0'}}};")
            params.append(f"{const}{_C_TYPES[dt.name]}* {which.lower()}{k}")
    lines += ["", f"int {name}({', '.join(params) or 'void'});", "",
              "/* Run-time description of argument `index` (is_output 0: inputs, 1: outputs): its dtype",
              " * (GRAPHC_FLOAT32, ...), rank and shape (a pointer into the library). NULL out-parameters",
              " * are skipped. Returns 0, or -1 when there is no such argument. */",
              f"int {name}_describe(int is_output, int index, int* dtype, int* ndim, const int64_t** shape);",
              "", "#ifdef __cplusplus", "}", "#endif", f"#endif /* GRAPHC_{upper}_H */", ""]
    return "\n".join(lines)


def _write(directory: str, name: str, obj: bytes, header: str, cc: Optional[str], in_specs,
           out_specs) -> ExportedFunction:
    """Link (unless cross-compiling: ``cc`` None keeps the object file) and
    move into place; on any failure nothing is left behind."""
    os.makedirs(directory, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=directory)
    try:
        obj_path = os.path.join(work, f"{name}.o")
        with open(obj_path, "wb") as f:
            f.write(obj)
        lib_tmp = obj_path
        if cc is not None:
            lib_tmp = os.path.join(work, f"{name}.so")
            proc = subprocess.run([cc, "-shared", "-o", lib_tmp, obj_path, "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise ExportError(f"linking {name}.so with {cc} failed:\n{proc.stderr.strip()}")
        header_tmp = os.path.join(work, f"{name}.h")
        with open(header_tmp, "w") as f:
            f.write(header)
        library = os.path.join(directory, os.path.basename(lib_tmp))
        header_path = os.path.join(directory, f"{name}.h")
        os.replace(lib_tmp, library)
        os.replace(header_tmp, header_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportedFunction(os.path.abspath(library), os.path.abspath(header_path), name,
                            list(in_specs), list(out_specs))
