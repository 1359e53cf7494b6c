"""Testing helpers for users: numeric gradient checks (``gc.test``)."""
from .autodiff.checker import check_gradients, compute_gradient_error

__all__ = ["check_gradients", "compute_gradient_error"]
