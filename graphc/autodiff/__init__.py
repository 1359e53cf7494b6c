"""Automatic differentiation as a graph transform."""
from .custom import custom_gradient
from .gradients import gradients
from .higher import hessians, jacobian

__all__ = ["gradients", "custom_gradient", "hessians", "jacobian"]
from .subgraph import copy_subgraph, subgraph_gradients

__all__ += ["copy_subgraph", "subgraph_gradients"]
