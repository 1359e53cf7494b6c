"""Random elementwise/reduction programs for hypothesis tests (shared by the
lowering and codegen tests)."""
from typing import Callable, List, Sequence, Tuple


def build_program(inputs: Sequence, program: Sequence[Tuple[int, int, int]], unary: Sequence[Callable],
                  binary: Sequence[Callable], reduce: Sequence[Callable]) -> List:
    """Apply ``program`` steps (kind, a, b) to ``inputs``; returns the new values.
    kind 0: a unary op, 1: a binary op, 2: a keepdims reduction over one axis."""
    values = list(inputs)
    for kind, a, b in program:
        u = values[a % len(values)]
        if kind == 0:
            values.append(unary[b % len(unary)](u))
        elif kind == 1:
            values.append(binary[b % len(binary)](u, values[b % len(values)]))
        else:
            rank = len(u.shape)
            values.append(reduce[b % len(reduce)](u, axis=(a % rank) if rank else None, keepdims=True))
    return values[len(inputs):]
