#!/usr/bin/env python3
"""Generate docs/passes.md: every registered optimisation pass with its
description, a small graph that makes it fire, and the text dump before and
after it; then the MLP training step's op and kernel counts through the
whole pipeline.

    python3 scripts/gen_passes_doc.py          # rewrite docs/passes.md
    python3 scripts/gen_passes_doc.py --check  # exit 1 if docs/passes.md is stale
    python3 scripts/gen_passes_doc.py --stdout # print it

Each pass needs an example builder in EXAMPLES (keyed by pass name), and the
example must make that pass do something (change the program, leave notes or
add an analysis); otherwise this script fails, so the docs cannot silently
lack an example. The output holds no timings or addresses, so
tests/test_dump.py can regenerate it and compare.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "docs", "passes.md")
COMMAND = "python3 scripts/gen_passes_doc.py"

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docfile import write_or_check  # noqa: E402

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import graphc as gc  # noqa: E402
from graphc.dump import FINAL, INPUT, format_text, stage_label  # noqa: E402
from graphc.ops.registry import FUSED, SOURCE  # noqa: E402
from graphc.passes import StageRecord, extract, pipeline, run_pipeline  # noqa: E402


class DocError(RuntimeError):
    """The docs cannot be generated as they should be."""


@dataclass
class Example:
    """A graph, what to fetch, and the concrete shapes of its feeds."""
    graph: gc.Graph
    fetches: List[gc.Tensor]
    feeds: List[gc.Tensor]
    feed_shapes: List[Tuple[int, ...]]
    caption: str


# --------------------------------------------------------------------------
# One example per pass. Keep them small: a reader should see the rewrite at
# a glance in the before/after dumps.
# --------------------------------------------------------------------------
def example_fold() -> Example:
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        scale = gc.constant(2.0) * gc.constant(3.0)
        y = x * scale + gc.exp(gc.constant(0.0))
    return Example(g, [y], [x], [(2, 4)], "`x * (2.0 * 3.0) + exp(0.0)`: the constant subexpressions "
                   "are computed at compile time.")


def example_cse() -> Example:
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        a = gc.tanh(x)
        b = gc.tanh(x)
        y = a * b + gc.tanh(x)
    return Example(g, [y], [x], [(2, 4)], "`tanh(x)` computed three times: the duplicates become one op.")


def example_simplify() -> Example:
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        y = gc.transpose(gc.transpose(x * 1.0))
        z = gc.exp(gc.negative(gc.negative(gc.identity(y))))
    return Example(g, [z], [x], [(2, 4)], "`exp(-(-(transpose(transpose(x * 1)))))`: exact algebraic "
                   "identities leave `exp(x)` (the ops they bypass stay until `dce`).")


def example_dce() -> Example:
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 4), name="x")
        a = gc.exp(x)
        b = gc.exp(x)
        y = a + b * gc.constant(1.0)
    return Example(g, [y], [x], [(2, 4)], "earlier passes merge `exp(x)` twice and drop `* 1.0`; the ops "
                   "they leave without consumers are removed.")


def example_fusion() -> Example:
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 8), name="x")
        b = gc.placeholder(gc.float32, (8,), name="b")
        h = gc.tanh(x * 2.0 + b)
        y = gc.reduce_sum(h * h, axis=1)
    return Example(g, [y], [x, b], [(4, 8), (8,)], "an elementwise chain ending in a reduction becomes "
                   "one fused kernel.")


def example_memory() -> Example:
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (None, 16), name="x")
        w = gc.placeholder(gc.float32, (16, 16), name="w")
        h1 = gc.nn.relu(gc.matmul(x, w))
        h2 = gc.nn.relu(gc.matmul(h1, w))
        y = gc.matmul(h2, w)
    return Example(g, [y], [x, w], [(8, 16), (16, 16)], "three chained layers: intermediate buffers die "
                   "early and can be reused.")


EXAMPLES: Dict[str, Callable[[], Example]] = {
    "fold": example_fold,
    "cse": example_cse,
    "simplify": example_simplify,
    "dce": example_dce,
    "fusion": example_fusion,
    "memory": example_memory,
}


# --------------------------------------------------------------------------
def run_example(example: Example) -> List[StageRecord]:
    program = extract(example.graph, example.fetches, [], example.feeds, example.feed_shapes)
    _, records = run_pipeline(program, verify=True)
    return records


def fired(before: StageRecord, after: StageRecord) -> bool:
    """Whether a pass did something: changed the program, left notes, or
    recorded an analysis."""
    if after.changed or after.notes:
        return True
    if before.program is None or after.program is None:
        return False
    return set(after.program.analyses) != set(before.program.analyses)


def _dump(record: StageRecord) -> str:
    return format_text(record, show_timing=False)


def pass_section(name: str, description: str, changes_numerics: bool) -> List[str]:
    builder = EXAMPLES.get(name)
    if builder is None:
        raise DocError(f"pass {name!r} has no example: add a builder for it to EXAMPLES in "
                       f"scripts/gen_passes_doc.py")
    example = builder()
    records = run_example(example)
    index = next((i for i, r in enumerate(records) if r.name == name), None)
    if index is None:
        raise DocError(f"pass {name!r} did not run on its example (disabled by GRAPHC_DISABLE_PASSES?)")
    before, after = records[index - 1], records[index]
    if not fired(before, after):
        raise DocError(f"pass {name!r} did nothing on its example ({builder.__name__}); change the example "
                       "so the docs show the pass at work")
    numerics = (" May change floating-point results slightly (reassociation); optimized and unoptimized "
                "runs are compared with a tolerance." if changes_numerics else "")
    delta = after.ops_after - before.ops_after
    lines = [f"## `{name}`", "", f"{description[:1].upper()}{description[1:]}.{numerics}", "",
             f"Example ({builder.__name__}): {example.caption}", "",
             f"Ops: {before.ops_after} before, {after.ops_after} after ({delta:+d}); "
             f"changed: {'yes' if after.changed else 'no'}.", ""]
    if after.notes:
        lines += ["Notes the pass recorded:", ""] + [f"- {n}" for n in after.notes] + [""]
    lines += [f"Before (`{stage_label(before)}`):", "", "```", _dump(before).rstrip("\n"), "```", "",
              f"After (`{stage_label(after)}`):", "", "```", _dump(after).rstrip("\n"), "```", ""]
    return lines


def kernel_counts(record: StageRecord) -> Tuple[int, int, int]:
    """(ops, kernels, fused kernels): kernels are the ops that do work at
    run time (not constants, placeholders, variable handles or no_ops)."""
    ops = record.program.ops()
    idle = {"variable", "no_op"}
    kernels = [op for op in ops if op.opdef.lowering != SOURCE and op.type not in idle]
    fused = [op for op in ops if op.opdef.lowering == FUSED]
    return len(ops), len(kernels), len(fused)


def _mlp_builder() -> Callable:
    """The demo's model builder (graphc/demo.py; examples/train_mlp.py held
    it before the demo moved into the package)."""
    try:
        from graphc.demo import build_model
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        try:
            from train_mlp import build_model
        finally:
            sys.path.pop(0)
    return build_model


def mlp_section() -> List[str]:
    build_model = _mlp_builder()
    g = gc.Graph()
    with g.as_default():
        m = build_model(64, 128, 10, 0.003, 0)
    program = extract(g, [m["loss"]], [m["train"]], [m["x"], m["labels"]], [(64, 64), (64,)])
    _, records = run_pipeline(program, verify=True)
    lines = ["## The MLP training step through the pipeline", "",
             "The demo's graph (`graphc demo`, examples/train_mlp.py: a 64-128-10 MLP, ReLU, softmax cross-entropy, Adam), one training "
             "step fetching the loss and running the update, batch 64. *Kernels* are the ops that do work at "
             "run time (everything but constants, placeholders, variable handles and no_ops); fused kernels "
             "are counted among them.", "",
             "| stage | ops | kernels | fused kernels | changed |", "|---|---:|---:|---:|---|"]
    for r in records:
        ops, kernels, fused = kernel_counts(r)
        changed = "—" if r.name in (INPUT, FINAL) else ("yes" if r.changed else "no")
        lines.append(f"| `{stage_label(r)}` | {ops} | {kernels} | {fused} | {changed} |")
    return lines + [""]


def render() -> str:
    passes = pipeline()
    lines = ["# graphc optimisation passes", "",
             "<!-- Generated by scripts/gen_passes_doc.py from the pass registry. Do not edit by hand. -->", "",
             "Every `Session.run` (and compiled function) compiles the ops it needs: extraction prunes the "
             "graph to the fetches and specializes shapes on the fed values, then these passes run in order, "
             "each a graph → graph function over a `Program` (graphc/passes/). Switch passes off by name with "
             "`Config(disabled_passes=(...))` or `GRAPHC_DISABLE_PASSES=a,b`; `GRAPHC_DEBUG=1` verifies the "
             "graph after every pass. See what they did with `gc.dump(obj, stage=..., format=\"text\"|\"dot\"|"
             "\"html\")` or `GRAPHC_DUMP_DIR=dir` (graphc/dump.py).", "",
             f"Regenerate this file with `{COMMAND}`; tests/test_dump.py fails while it is out of date. Each "
             "example below is run through the whole pipeline (verified after every pass) and shows the "
             "program entering the pass and leaving it. Dump lines read "
             "`name: type = op(inputs) attrs  # file:line`; an input is named by its op when it is output 0, "
             "`^op` is a control input.", "",
             "## Floating-point results", "",
             "Passes that may change floating-point results: "
             + (", ".join(f"`{p.name}`" for p in passes if p.changes_numerics) or "none") + ". "
             "Folding evaluates constants with the same NumPy reference the interpreter runs; CSE, simplification "
             "and DCE only apply exact rewrites (no `x*0 → 0` or `x-x → 0` on floats: NaN/inf; no "
             "`log(exp(x)) → x`: overflow; no float `x+0.0 → x`: signed zeros; sums over size-1 axes keep a "
             "`+ 0.0` for the same reason); fusion and memory planning do not change arithmetic. A native "
             "backend's own transcendentals may differ from NumPy's by a few ULP, so optimized and "
             "unoptimized runs are compared exactly for integers and bools and within rtol 1e-5 (float32) / "
             "1e-12 (float64) for floats (tests/conftest.py).", "",
             "| # | pass | what it does |", "|---:|---|---|"]
    for i, p in enumerate(passes, 1):
        lines.append(f"| {i} | [`{p.name}`](#{p.name}) | {p.description} |")
    lines.append("")
    missing = [p.name for p in passes if p.name not in EXAMPLES]
    if missing:
        raise DocError(f"pass(es) {missing} have no example: add builders to EXAMPLES in scripts/gen_passes_doc.py")
    for p in passes:
        lines += pass_section(p.name, p.description.rstrip("."), p.changes_numerics)
    lines += mlp_section()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/passes.md is out of date")
    parser.add_argument("--stdout", action="store_true", help="print the document instead of writing it")
    args = parser.parse_args(argv)
    # the docs describe the full pipeline, whatever this shell disables
    os.environ.pop("GRAPHC_DISABLE_PASSES", None)
    try:
        text = render()
    except DocError as exc:
        print(f"gen_passes_doc: {exc}", file=sys.stderr)
        return 2
    return write_or_check(text, OUTPUT, ROOT, COMMAND, args.check, args.stdout)


if __name__ == "__main__":
    sys.exit(main())
