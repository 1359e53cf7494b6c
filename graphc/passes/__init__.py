"""Graph → graph passes over a :class:`Program` (the ops one run needs).

Pruning/extraction runs first; then the registered passes in order (see
``graphc passes`` and docs/passes.md).
"""
from .manager import Pass, StageRecord, pipeline, register_pass, run_pipeline
from .program import Program, Rewriter, extract
from .prune import prune

__all__ = ["Pass", "Program", "Rewriter", "StageRecord", "extract", "pipeline", "prune", "register_pass",
           "run_pipeline"]
