"""The pass manager: runs named graph → graph passes in a fixed order,
records per-pass statistics and snapshots (for dumps), verifies the graph
after each pass in debug mode, and lets passes be switched off by name
(``Config(disabled_passes=...)`` or ``GRAPHC_DISABLE_PASSES=a,b``)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .program import Program

PassFn = Callable[[Program], Program]


@dataclass(frozen=True)
class Pass:
    name: str
    fn: PassFn
    description: str
    # Rewrites that may change floating-point results (reassociation...).
    changes_numerics: bool = False


@dataclass
class StageRecord:
    """One stage of the pipeline: the program after it, and what it did."""
    index: int
    name: str
    program: Program
    ops_before: int
    ops_after: int
    seconds: float
    changed: bool
    notes: List[str] = field(default_factory=list)


_PASSES: Dict[str, Pass] = {}
_ORDER: List[str] = []


def register_pass(name: str, description: str, after: Optional[str] = None, changes_numerics: bool = False) -> Callable:
    """Register a pass. The pipeline order is the registration order unless
    ``after`` names the pass it must follow; ``graphc passes`` lists it."""
    def wrap(fn: PassFn) -> PassFn:
        if name in _PASSES:
            raise KeyError(f"pass {name!r} registered twice")
        _PASSES[name] = Pass(name, fn, description, changes_numerics)
        if after is not None and after in _ORDER:
            _ORDER.insert(_ORDER.index(after) + 1, name)
        else:
            _ORDER.append(name)
        return fn
    return wrap


def pipeline() -> List[Pass]:
    """The passes in the order they run."""
    return [_PASSES[n] for n in _ORDER]


def _disabled(extra: Sequence[str]) -> set:
    names = {n.strip() for n in os.environ.get("GRAPHC_DISABLE_PASSES", "").split(",") if n.strip()}
    names.update(extra)
    unknown = names - set(_PASSES)
    if unknown:
        from ..errors import InvalidArgumentError
        raise InvalidArgumentError(f"unknown pass name(s) {sorted(unknown)}; passes are {_ORDER}")
    return names


def run_pipeline(program: Program, disabled: Sequence[str] = (), verify: bool = False,
                 keep_stages: bool = True) -> Tuple[Program, List[StageRecord]]:
    """Run every enabled pass; return the final program and the stage records
    (``input`` first, ``final`` last)."""
    from .verify import verify_program
    skip = _disabled(disabled)
    records = [StageRecord(0, "input", program, program.num_ops(), program.num_ops(), 0.0, False)]
    if verify:
        verify_program(program, "input")
    for p in pipeline():
        if p.name in skip:
            continue
        before = program.num_ops()
        start = time.perf_counter()
        try:
            result = p.fn(program)
            if verify:
                verify_program(result, p.name)
        except Exception as exc:
            # the stages that did run, so the caller can still dump them
            exc.graphc_stages = records  # type: ignore[attr-defined]
            raise
        seconds = time.perf_counter() - start
        changed = result is not program
        notes = result.analyses.pop("_notes", []) if changed or "_notes" in result.analyses else []
        program = result
        records.append(StageRecord(len(records), p.name, program if keep_stages else None, before,
                                   program.num_ops(), seconds, changed, notes))
    records.append(StageRecord(len(records), "final", program, program.num_ops(), program.num_ops(), 0.0, False))
    return program, records
