"""Training utilities: optimizers, global step, checkpoints.

Clipping lives at top level (``gc.clip_by_global_norm``, ``gc.clip_by_value``)
as in TF1; its implementation is :mod:`graphc.train.clip`.
"""
from . import optimizers as _optimizers
from .optimizers import *  # noqa: F401,F403
from .saver import Saver, latest_checkpoint

__all__ = ["Saver", "latest_checkpoint"] + list(_optimizers.__all__)
