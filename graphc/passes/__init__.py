"""Graph → graph passes. Pruning to the fetched subgraph runs first."""
from .prune import prune

__all__ = ["prune"]
