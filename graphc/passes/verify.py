"""Graph verification (debug mode): after each pass, every op's inputs exist
earlier in the schedule and in the same graph, and every output's shape and
dtype agree with the op's own rule re-run on its inputs."""
from __future__ import annotations

from .. import shapes as _shapes
from ..errors import CompileError
from ..graph import normalize_output_specs
from .program import Program


def verify_program(program: Program, stage: str) -> None:
    graph = program.graph
    position = {op: i for i, op in enumerate(graph._ops)}
    for i, op in enumerate(graph._ops):
        for t in op.inputs:
            if t.op.graph is not graph:
                raise CompileError(f"after pass {stage!r}: {op.describe()} uses {t.name} from another graph")
            if position.get(t.op, i) >= i:
                raise CompileError(f"after pass {stage!r}: {op.describe()} uses {t.name}, which is not scheduled "
                                   "before it (dangling input or cycle)")
        for c in op.control_inputs:
            if position.get(c, i) >= i:
                raise CompileError(f"after pass {stage!r}: control input {c.name} of {op.name} is not scheduled before it")
        specs = normalize_output_specs(op.opdef.infer(*op.inputs, **op.attrs))
        if len(specs) != len(op.outputs):
            raise CompileError(f"after pass {stage!r}: {op.describe()} has {len(op.outputs)} outputs, its rule gives {len(specs)}")
        for t, (shape, dtype) in zip(op.outputs, specs):
            if t.dtype != dtype:
                raise CompileError(f"after pass {stage!r}: {t.name} has dtype {t.dtype}, its rule gives {dtype}")
            if _shapes.as_shape(shape) != t.shape:
                raise CompileError(f"after pass {stage!r}: {t.name} has shape {_shapes.fmt(t.shape)}, its rule gives "
                                   f"{_shapes.fmt(_shapes.as_shape(shape))}")
    for t in program.fetches:
        if t.op.graph is not graph or t.op not in position:
            raise CompileError(f"after pass {stage!r}: fetch {t.name} is not in the program")
