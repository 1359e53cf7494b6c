#!/usr/bin/env python3
"""Generate docs/ops.md, the table of graphc's primitive ops, from the op
registry, plus the list of public op functions that are composites.

    python3 scripts/gen_op_table.py          # rewrite docs/ops.md
    python3 scripts/gen_op_table.py --check  # exit 1 if docs/ops.md is stale

The output depends only on the registry and the op functions' source, never
on dict order or memory addresses, so tests/test_op_table.py can regenerate
it in memory and compare.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import re
import sys
import textwrap
from typing import Callable, Dict, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "docs", "ops.md")
COMMAND = "python3 scripts/gen_op_table.py"

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docfile import write_or_check  # noqa: E402

_OP_CALL = re.compile(r"""\b(?:apply_op|create_op)\(\s*["']([A-Za-z_][\w.]*)["']""")


def _import_graphc():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import graphc
    from graphc.ops import registry
    return graphc, registry


def _cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped, '—' when empty."""
    text = " ".join(str(text).split())
    return text.replace("|", "\\|") if text else "—"


def _first_line(doc: Optional[str], limit: int = 160) -> str:
    """The doc's first paragraph on one line; its first sentence when long."""
    text = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())
    if len(text) > limit:
        end = text.find(". ")
        if 0 < end:
            text = text[:end + 1]
    return text


def gradient_status(opdef) -> str:
    if not opdef.differentiable:
        return "not differentiable"
    return "yes" if opdef.grad is not None else "no"


def _op_rows(registry) -> List[str]:
    rows = ["| op | lowering | inputs | attrs | dtypes | gradient | description |",
            "|---|---|---|---|---|---|---|"]
    for name, opdef in sorted(registry.all_ops().items()):
        doc = _first_line(opdef.doc)
        if opdef.notes:
            doc = f"{doc} (note: {opdef.notes})" if doc else f"note: {opdef.notes}"
        rows.append("| " + " | ".join([
            f"`{name}`", opdef.lowering, _cell(", ".join(opdef.inputs)), _cell(", ".join(opdef.attrs)),
            _cell(opdef.dtypes), gradient_status(opdef), _cell(doc)]) + " |")
    return rows


def public_op_functions(graphc) -> Dict[str, Callable]:
    """``gc.<name>`` and ``gc.nn.<name>`` functions defined in graphc.ops."""
    found: Dict[str, Callable] = {}
    nn_names = getattr(graphc.nn, "__all__", None) or [n for n in dir(graphc.nn) if not n.startswith("_")]
    for prefix, module, names in (("gc.", graphc, dir(graphc)), ("gc.nn.", graphc.nn, nn_names)):
        for name in sorted(names):
            if name.startswith("_"):
                continue
            obj = getattr(module, name, None)
            if inspect.isfunction(obj) and (obj.__module__ or "").startswith("graphc.ops"):
                found[prefix + name] = obj
    return found


def _source_tree(fn: Callable) -> Optional[ast.AST]:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None


def _function_node(tree: ast.AST) -> Optional[ast.AST]:
    return next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))),
                None)


def _local_imports(node: ast.AST, fn: Callable) -> Dict[str, object]:
    """Names bound by imports inside the function (``from .shape import squeeze``)."""
    bound: Dict[str, object] = {}
    package = (fn.__module__ or "").rpartition(".")[0]
    for imp in ast.walk(node):
        if not isinstance(imp, ast.ImportFrom):
            continue
        module_name = "." * imp.level + (imp.module or "")
        try:
            module = importlib.import_module(module_name, package=package or None)
        except ImportError:
            continue
        for alias in imp.names:
            target = getattr(module, alias.name, None)
            if target is None:
                try:
                    target = importlib.import_module(f"{module.__name__}.{alias.name}")
                except ImportError:
                    continue
            bound[alias.asname or alias.name] = target
    return bound


def _local_names(node: ast.AST) -> Set[str]:
    """Parameters and assigned names: these shadow module-level functions."""
    names: Set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
    return names


def _called_objects(fn: Callable, node: ast.AST) -> List[object]:
    """What the function's names and ``module.attr`` references resolve to."""
    imports = _local_imports(node, fn)
    local = _local_names(node) - set(imports)
    scope = getattr(fn, "__globals__", {})

    def resolve(name: str) -> object:
        if name in imports:
            return imports[name]
        return None if name in local else scope.get(name)

    found: List[object] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            found.append(resolve(n.id))
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            base = resolve(n.value.id)
            if inspect.ismodule(base):   # ew.exp, not arr.size
                found.append(getattr(base, n.attr, None))
    return found


# Conversion plumbing every op function goes through; following it would
# credit every function with the `const` op of a Python-scalar operand.
_PLUMBING = {"apply_op", "convert_to_tensor", "convert_operands", "op_scope", "is_tensor_like"}


def ops_built_by(fn: Callable, registry, _seen: Optional[Set[int]] = None) -> Set[str]:
    """Primitive ops a function creates: op names passed literally to
    apply_op/create_op, plus those of the op functions and graphc.ops
    helpers it calls (followed recursively)."""
    seen = _seen if _seen is not None else set()
    if id(fn) in seen:
        return set()
    seen.add(id(fn))
    tree = _source_tree(fn)
    node = _function_node(tree) if tree is not None else None
    if node is None:
        return set()
    ops = {m for m in _OP_CALL.findall(ast.unparse(node)) if registry.has(m)}
    for target in _called_objects(fn, node):
        if target is fn or not inspect.isfunction(target) or not (target.__module__ or "").startswith("graphc.ops"):
            continue
        if registry.has(target.__name__):
            ops.add(target.__name__)
        elif target.__name__ not in _PLUMBING:
            ops |= ops_built_by(target, registry, seen)
    return ops


def classify(graphc, registry) -> Tuple[Dict[str, List[str]], List[str]]:
    """The public op functions not simply named after their op: those that
    build ops (with the primitive ops they build) and helpers that build none."""
    functions = public_op_functions(graphc)
    composites: Dict[str, List[str]] = {}
    helpers: List[str] = []
    for qual, fn in sorted(functions.items()):
        if registry.has(fn.__name__):
            continue     # the op's own function, or an alias of it (gc.sub)
        ops = sorted(ops_built_by(fn, registry))
        if ops:
            composites[qual] = ops
        else:
            helpers.append(qual)
    return composites, helpers


def render() -> str:
    graphc, registry = _import_graphc()
    ops = registry.all_ops()
    functions = public_op_functions(graphc)
    composites, helpers = classify(graphc, registry)
    counts = {}
    for opdef in ops.values():
        counts[opdef.lowering] = counts.get(opdef.lowering, 0) + 1
    by_class = ", ".join(f"{counts[c]} {c}" for c in registry.LOWERING_CLASSES if c in counts)
    lines = [
        "# graphc ops",
        "",
        "<!-- Generated by scripts/gen_op_table.py from the op registry. Do not edit by hand. -->",
        "",
        f"This file is generated from the op registry (`graphc.ops.registry.all_ops()`). "
        f"Regenerate it with `{COMMAND}` after adding or changing an op; "
        "`tests/test_op_table.py` fails while it is out of date.",
        "",
        f"{len(ops)} primitive ops ({by_class}); {len(functions)} public op functions "
        "(`gc.*` and `gc.nn.*`).",
        "",
        "Columns: **lowering** is the class native backends dispatch on (elementwise, reduction, layout, "
        "library, control_flow, state, source, random); **inputs** are the op's tensor inputs and "
        "**attrs** its static attributes; **dtypes** the input dtypes it accepts; **gradient** is "
        "`yes` (a gradient rule is registered), `no` (differentiable in principle, no rule yet) or "
        "`not differentiable` (no gradient flows: comparisons, integer results, argmax, sources).",
        "",
        "## Primitive ops",
        "",
        *_op_rows(registry),
        "",
        "## Public functions that are not primitives",
        "",
        "Composites and renamed wrappers: public op functions that are not named after a primitive "
        "op, with the primitive ops they create. Functions named after their op (`gc.exp` creates "
        "an `exp` op) and aliases of them (`gc.sub` is `gc.subtract`) are left out.",
        "",
        "| function | primitive ops it creates | description |",
        "|---|---|---|",
    ]
    for qual, used in composites.items():
        ops_text = ", ".join(f"`{o}`" for o in used)
        lines.append(f"| `{qual}` | {ops_text} | {_cell(_first_line(functions[qual].__doc__))} |")
    lines += ["", "Helpers that create no op: "
              + (", ".join(f"`{h}`" for h in helpers) if helpers else "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/ops.md is out of date")
    parser.add_argument("--stdout", action="store_true", help="print the table instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    return write_or_check(text, OUTPUT, ROOT, COMMAND, args.check, args.stdout)


if __name__ == "__main__":
    sys.exit(main())
