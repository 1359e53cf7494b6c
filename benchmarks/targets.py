"""Issue 5's targets and the peer figures measured when the issue was
written (same 2-core machine, medians), shown next to today's numbers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional


@dataclass
class Target:
    text: str
    issue_peers: str
    # (graphc median s, fastest peer median s or None) -> met?
    met: Callable[[float, Optional[float]], bool]


def _w1_met(graphc: float, fastest: Optional[float]) -> bool:
    return graphc <= 0.020 and (fastest is None or graphc <= 0.5 * fastest)


TARGETS: Dict[str, Target] = {
    "W1": Target("<= 0.5x the fastest peer, 20 ms or less",
                 "torch.compile 36 ms, JAX 76 ms, NumPy 106 ms, PyTorch eager 288 ms, PyTensor 308-349 ms "
                 "(memory roofline 3.1 ms)", _w1_met),
    "W2": Target("< 0.6 ms per step", "PyTensor 0.78 ms, JAX 0.81 ms, PyTorch 0.86 ms",
                 lambda g, f: g < 0.6e-3),
    "W3": Target("<= 8 ms (fuse so X is read once per pass)", "JAX 13.2 ms, NumPy 13.3 ms (roofline 4.0 ms)",
                 lambda g, f: g <= 8e-3),
    "W4": Target("<= 2.5 ms", "torch.compile 3.5 ms, JAX 4.7 ms (roofline 1.3 ms)", lambda g, f: g <= 2.5e-3),
    "W5": Target("gc.function < 2 us per call; Session.run with a feed dict < 8 us",
                 "PyTensor 2.3 us with trusted inputs, PyTorch eager 2.5 us, JAX 6.4 us "
                 "(a raw NumPy expression is 0.6 us)", lambda g, f: True),
    "W6": Target("< 0.1 s cold for W2 and for W1; an optional on-disk cache making a second process's "
                 "compile near zero",
                 "cold: JAX 0.36 s (W2) and 0.13 s (W1), torch.compile 2.2-3.2 s, PyTensor about 24 s for W2 "
                 "(0.3 s with its disk cache warm)", lambda g, f: g < 0.1),
}

# W5 has one target per graphc row
W5_ROW_TARGETS: Dict[str, float] = {"graphc gc.function": 2e-6, "graphc Session.run (feed dict)": 8e-6}
