"""Training utilities: checkpoints (``Saver``, ``latest_checkpoint``)."""
from .saver import Saver, latest_checkpoint
from .optimizers import *  # noqa: F401,F403  (optimizers, global step); clipping is gc.clip_by_global_norm etc.

__all__ = ["Saver", "latest_checkpoint"]
