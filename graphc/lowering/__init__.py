"""Lowering: fused kernels → target-neutral loop IR (graphc.lowering.loop_ir),
with a reference evaluator. The CPU and PTX codegens consume the same IR."""
from . import loop_ir
from .evaluate import evaluate
from .lower import lower_fused_kernel, lower_op, lower_tensors

__all__ = ["loop_ir", "evaluate", "lower_fused_kernel", "lower_op", "lower_tensors"]
