"""Dead-code elimination.

Keeps the ops the run needs, through data and control edges, from its
roots: the fetched tensors, the target ops, and every op with a side effect
(assigns, random draws, control flow containing them). Extraction already
pruned the program to what the run needs, so a side-effecting op in it is
one the run performs; the earlier passes may have stopped using its value
(``shape_of(v.assign(x))`` folds to a constant) but the write or the draw
must still happen. Pure variable reads are not side effects and go when
nothing uses them. Everything else no root needs is dropped; the stage
note says how many ops of which types. Schedule order is kept.
"""
from __future__ import annotations

from collections import Counter
from typing import Set

from ..graph import Operation, ancestors
from .fold import describe
from .manager import register_pass
from .program import Program, Rewriter

_PURE_STATE_OPS = frozenset({"variable", "read_variable"})


def has_side_effects(op: Operation) -> bool:
    """Whether running ``op`` changes session state (variables, random
    streams), directly or inside its subgraphs."""
    if op.opdef.stateful and op.type not in _PURE_STATE_OPS:
        return True
    return any(has_side_effects(inner) for sub in op.subgraphs() for inner in sub.get_operations())


def live_ops(program: Program) -> Set[Operation]:
    """Ops reachable from the roots through data and control inputs."""
    roots = list(program.targets) + [op for op in program.ops() if has_side_effects(op)]
    return ancestors(list(program.fetches) + list(program.feeds), ops=roots)


def eliminate_dead_code(program: Program) -> Program:
    live = live_ops(program)
    dead = [op for op in program.ops() if op not in live]
    if not dead:
        return program
    rw = Rewriter(program)
    for op in program.ops():
        if op in live and not rw.is_copied(op):
            rw.copy(op)
    result = rw.finish()
    result.analyses.setdefault("_notes", []).append(describe(Counter(op.type for op in dead), "removed"))
    return result


@register_pass("dce", "drop ops that no fetch, target or side effect needs")
def dce(program: Program) -> Program:
    return eliminate_dead_code(program)
