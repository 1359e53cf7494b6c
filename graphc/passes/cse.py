"""Common-subexpression elimination.

Two ops compute the same value when they have the same type, the same
inputs (after earlier merges), the same attributes and the same control
inputs; the later one is replaced by the earlier one. Constants compare by
dtype, shape and bytes (so ``0.0`` and ``-0.0`` stay apart); constants over
:data:`MAX_COMPARED_BYTES` only by identity, which keeps compiles of graphs
with big weights cheap. ``add``,
``multiply``, ``equal``, ``not_equal``, ``logical_and`` and ``logical_or``
are commutative bit for bit, so their operands are compared as a set;
``maximum``/``minimum`` are not (NumPy returns the second operand of a tie
between ``0.0`` and ``-0.0``), nor is anything else.

Never merged: stateful ops (variable reads, assigns, random draws, control
flow holding them), placeholders and subgraph arguments, ops without
outputs, run targets and ops used as control inputs. Attributes holding
subgraphs, callables or other objects compare by identity. The rewrite is
exact: the kept op computes bitwise what the merged one did.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Hashable, Tuple

import numpy as np

from ..graph import Operation, Tensor
from ..ops.registry import RANDOM, STATE
from .fold import describe, pinned_ops
from .manager import register_pass
from .program import Program, Rewriter

# Array attributes (constants) up to this size compare by value; bigger ones
# (weights) only merge when they are the same array object.
MAX_COMPARED_BYTES = 1 << 20

_COMMUTATIVE = frozenset({"add", "multiply", "equal", "not_equal", "logical_and", "logical_or"})
_NEVER_TYPES = frozenset({"placeholder", "arg"})


def attr_key(value: Any) -> Hashable:
    """A hashable key equal for attribute values that are the same value:
    arrays by dtype, shape and bytes; floats by their exact bits; bools,
    ints and floats never equal each other; unknown objects by identity."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, np.ndarray):
        if value.nbytes > MAX_COMPARED_BYTES:
            return ("ndarray", id(value))
        return ("ndarray", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, np.generic):
        return ("scalar", value.dtype.str, value.tobytes())
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(attr_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((repr(k), attr_key(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    if isinstance(value, (frozenset, set)):
        return ("set", frozenset(attr_key(v) for v in value))
    # subgraphs, callables and anything else: the same object only
    return ("id", id(value))


def attrs_key(attrs: Dict[str, Any]) -> Hashable:
    return tuple(sorted((k, attr_key(v)) for k, v in attrs.items()))


def mergeable(op: Operation, pinned: set) -> bool:
    if not op.outputs or op in pinned or op.type in _NEVER_TYPES:
        return False
    if op.opdef.lowering in (STATE, RANDOM):
        return False
    return not op.is_stateful


def plan_merges(program: Program) -> Dict[Operation, Operation]:
    """Each op that duplicates an earlier one, mapped to that op."""
    pinned = pinned_ops(program)
    position = {op: i for i, op in enumerate(program.ops())}
    canon: Dict[Tensor, Tensor] = {}
    seen: Dict[Hashable, Operation] = {}
    merges: Dict[Operation, Operation] = {}
    for op in program.ops():
        if not mergeable(op, pinned):
            continue
        inputs = [canon.get(t, t) for t in op.inputs]
        refs = [(position[t.op], t.value_index) for t in inputs]
        if op.type in _COMMUTATIVE:
            refs.sort()
        key = (op.type, tuple(refs), attrs_key(op.attrs), tuple(sorted(position[c] for c in op.control_inputs)))
        first = seen.get(key)
        if first is None:
            seen[key] = op
            continue
        merges[op] = first
        canon.update(zip(op.outputs, first.outputs))
    return merges


def eliminate_common_subexpressions(program: Program) -> Tuple[Program, Counter]:
    """The CSE rewrite; returns the program (the same object when nothing
    merges) and how many ops of each type were merged away."""
    merges = plan_merges(program)
    if not merges:
        return program, Counter()
    result = Rewriter(program).substitute(merges, lambda rw, op, first: [rw[t] for t in first.outputs])
    return result, Counter(op.type for op in merges)


@register_pass("cse", "merge ops that compute the same value (same type, inputs, attributes, control inputs)")
def cse(program: Program) -> Program:
    result, counts = eliminate_common_subexpressions(program)
    if result is not program:
        result.analyses.setdefault("_notes", []).append(describe(counts, "merged"))
    return result
