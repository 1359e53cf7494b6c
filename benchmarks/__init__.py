"""graphc's benchmark suite (issue 5): float32 workloads W1-W6 run side by
side with NumPy, JAX, PyTorch (eager and torch.compile) and PyTensor where
they are installed (the optional ``bench`` extra), with every result
verified against a float64 NumPy reference before it is timed.

``python -m benchmarks [--quick] [--only W1,W3] [--backend auto|interpreter|cpu]
[--output docs/benchmarks.md] [--size-scale S] [--peers all|none|LIST]``,
or ``graphc bench ...``; :func:`run_suite` and :func:`render` from Python.
"""
from .report import SuiteReport, render
from .suite import main, run_suite

__all__ = ["main", "run_suite", "render", "SuiteReport"]
