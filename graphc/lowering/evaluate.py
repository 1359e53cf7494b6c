"""Reference evaluator of loop IR, in plain Python over NumPy scalars.

It defines what the IR means and is what codegens are tested against (with
the graph interpreter as the reference for the lowering itself). Slow by
design: one Python step per scalar operation, for small test shapes.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

from ..ops import registry
from . import loop_ir as ir


def _index(e: ir.IExpr, env: Dict[str, int], buffers: Dict[str, np.ndarray], accs: Dict[str, Any]) -> int:
    if isinstance(e, ir.IConst):
        return e.value
    if isinstance(e, ir.IVar):
        return env[e.name]
    if isinstance(e, ir.IndexOf):
        return int(_expr(e.x, buffers, env, accs))
    a, b = _index(e.a, env, buffers, accs), _index(e.b, env, buffers, accs)
    if e.op == "+":
        return a + b
    if e.op == "*":
        return a * b
    if e.op == "//":
        return a // b
    if e.op == "%":
        return a % b
    if e.op == "min":
        return min(a, b)
    if e.op == "max":
        return max(a, b)
    raise TypeError(f"unknown index operator {e.op!r}")


def _address(buffer: str, index: ir.IExpr, buffers: Dict[str, np.ndarray], env: Dict[str, int],
             accs: Dict[str, Any]) -> int:
    # NumPy would wrap a negative index silently: the IR's meaning is that
    # every access is in bounds, so the reference says so when one is not
    i = _index(index, env, buffers, accs)
    n = buffers[buffer].shape[0]
    if not 0 <= i < n:
        raise IndexError(f"index {index} = {i} is outside {buffer}'s {n} elements")
    return i


def _compute(op: str, *args: Any) -> Any:
    # the registry's NumPy reference on 0-d arrays: exactly the interpreter's semantics
    arrays = [np.asarray(a) for a in args]
    return registry.get(op).compute(*arrays)


def _expr(e: ir.Expr, buffers: Dict[str, np.ndarray], env: Dict[str, int], accs: Dict[str, Any]) -> Any:
    if isinstance(e, ir.Const):
        return e.dtype.type(e.value)
    if isinstance(e, ir.Load):
        return buffers[e.buffer][_address(e.buffer, e.index, buffers, env, accs)]
    if isinstance(e, ir.IndexValue):
        return np.asarray(_index(e.index, env, buffers, accs)).astype(e.dtype)[()]
    if isinstance(e, ir.InRange):
        return np.bool_(e.lo <= _index(e.index, env, buffers, accs) < e.hi)
    if isinstance(e, ir.AccRef):
        return accs[e.name]
    if isinstance(e, ir.Unary):
        return _compute(e.op, _expr(e.x, buffers, env, accs))[()]
    if isinstance(e, ir.Binary):
        return _compute(e.op, _expr(e.x, buffers, env, accs), _expr(e.y, buffers, env, accs))[()]
    if isinstance(e, ir.Select):
        c = _expr(e.cond, buffers, env, accs)
        return _expr(e.x, buffers, env, accs) if c else _expr(e.y, buffers, env, accs)
    if isinstance(e, ir.Cast):
        with np.errstate(invalid="ignore"):
            return np.asarray(_expr(e.x, buffers, env, accs)).astype(e.dtype)[()]
    raise TypeError(f"unknown loop IR expression {e!r}")


def _combine(op: str, acc: Any, v: Any) -> Any:
    with np.errstate(all="ignore"):
        if op == "add":
            return type(acc)(acc + v)
        if op == "mul":
            return type(acc)(acc * v)
        if op == "max":
            return np.maximum(acc, v)      # NaN propagates, like NumPy's max
        if op == "min":
            return np.minimum(acc, v)
        if op == "and":
            return bool(acc and v)
        return bool(acc or v)


def _run(stmts: Sequence[ir.Stmt], buffers: Dict[str, np.ndarray], env: Dict[str, int], accs: Dict[str, Any]) -> None:
    for s in stmts:
        if isinstance(s, ir.Loop):
            for i in range(s.extent):
                env[s.var] = i
                _run(s.body, buffers, env, accs)
            env.pop(s.var, None)
        elif isinstance(s, ir.Store):
            value = _expr(s.value, buffers, env, accs)
            buffers[s.buffer][_address(s.buffer, s.index, buffers, env, accs)] = value
        elif isinstance(s, ir.AccInit):
            accs[s.name] = s.dtype.type(s.value)
        elif isinstance(s, ir.AccUpdate):
            accs[s.name] = _combine(s.op, accs[s.name], _expr(s.value, buffers, env, accs))
        else:
            raise TypeError(f"unknown loop IR statement {s!r}")


def evaluate(kernel: ir.Kernel, inputs: Sequence[np.ndarray]) -> list:
    """Run ``kernel`` on input arrays; returns its output arrays."""
    buffers: Dict[str, np.ndarray] = {}
    for p, a in zip(kernel.inputs, inputs):
        buffers[p.name] = np.ascontiguousarray(a, dtype=p.dtype).reshape(-1)
    outs = []
    for p in kernel.outputs:
        buffers[p.name] = np.zeros(p.size, dtype=p.dtype)
        outs.append(p)
    for name, value in kernel.constants.items():
        buffers[name] = np.ascontiguousarray(value).reshape(-1)
    _run(kernel.body, buffers, {}, {})
    return [buffers[p.name].reshape(p.shape) for p in outs]
