"""Graph → graph passes over a :class:`Program` (the ops one run needs).

Extraction (pruning to the fetched subgraph, shape specialization) runs
first; then the registered passes, in the order their modules are imported
below (see ``graphc passes`` and docs/passes.md).
"""
from .manager import Pass, StageRecord, pipeline, register_pass, run_pipeline
from .program import Program, Rewriter, extract
from .prune import prune

# Pipeline order = import order.
from . import fold, cse, simplify, dce, fusion, memory  # noqa: E402,F401

__all__ = ["Pass", "Program", "Rewriter", "StageRecord", "extract", "pipeline", "prune", "register_pass",
           "run_pipeline"]
