"""The ``graphc`` command line (also ``python -m graphc``).

    graphc dump GRAPH_FILE [--fetch NAME ...] [--stage S] [--format text|dot|svg|html] [-o OUT]
    graphc export GRAPH_FILE --fetch NAME ... --feed NAME:SHAPE:DTYPE ... -o DIR [--name fn] [--cpu CPU]
    graphc ptx GRAPH_FILE --fetch NAME ... [--feed NAME:SHAPE:DTYPE ...] [--arch sm_XY] [--check] [-o FILE]
    graphc passes
    graphc demo [--epochs N] [--batch-size N] [--backend B] [--quiet] ...

``dump`` reads a graph saved with ``gc.save_graph`` and prints (or writes)
its dump at one stage of the optimisation pipeline (see ``gc.dump``);
``export`` compiles fetched tensors of a saved graph, as a function of the
fed placeholders, into ``DIR/<name>.so`` and ``DIR/<name>.h`` (``gc.export``,
docs/export.md); ``ptx`` prints the PTX the ptx backend would run for them
(no GPU needed; docs/ptx.md); ``passes`` lists the pipeline's passes in the order they
run; ``demo`` trains the MLP demo (:mod:`graphc.demo`). A graphc error prints one line,
``graphc: error: ...``, and exits with status 1; a usage error exits with 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional, Sequence, Tuple, Union

from .errors import GraphcError

PROG = "graphc"
DUMP_FORMATS = ("text", "dot", "svg", "html")


class _UsageError(Exception):
    """A bad command-line value found after parsing (exit status 2)."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return
    the exit status (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and argv[0] == "demo":
        # the demo parses its own options (and its own --help)
        return _guarded(parser, lambda: _demo(argv[1:]))
    if argv and argv[0] == "bench":
        return _guarded(parser, lambda: _bench(argv[1:]))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return _guarded(parser, lambda: args.run(args))


def _guarded(parser: argparse.ArgumentParser, action: Any) -> int:
    try:
        return action()
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except GraphcError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `graphc dump g | head`: the reader left; not an error of ours
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="graphc: a static-graph compiler with source-transform autodiff. "
                               "Inspect saved graphs and the optimisation pipeline, export them as C "
                               "libraries, or run the demo.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    dump = sub.add_parser(
        "dump", help="print a saved graph at a stage of the optimisation pipeline",
        description="Load a graph saved with gc.save_graph and dump it (gc.dump) at one stage of the "
                    "optimisation pipeline. The pipeline runs on the ops that the fetched tensors and ops "
                    "need, with every placeholder fed (its shapes as declared).")
    dump.add_argument("graph_file", metavar="GRAPH_FILE", help="a graph file written by gc.save_graph")
    dump.add_argument("--fetch", action="append", default=None, metavar="NAME",
                      help="tensor ('loss:0') or op ('train') to compile for; repeat it, or give several "
                           "names separated by commas (default: every tensor nothing consumes and every "
                           "op without outputs)")
    dump.add_argument("--stage", default="final", metavar="S",
                      help="'input', a pass name (see `graphc passes`), 'final' (default) or a stage "
                           "index; ignored for html, which shows every stage")
    dump.add_argument("--format", choices=DUMP_FORMATS, default="text",
                      help="text (default), dot (Graphviz source), svg (needs Graphviz's `dot`) or html "
                           "(one page for the whole pipeline)")
    dump.add_argument("-o", "--output", metavar="OUT", help="write the dump to OUT instead of stdout")
    dump.add_argument("--full-paths", action="store_true",
                      help="show whole source file paths instead of base names")
    dump.set_defaults(run=_dump)

    export = sub.add_parser(
        "export", help="compile a saved graph into a shared library and a C header",
        description="Load a graph saved with gc.save_graph and compile the fetched tensors, as a function of "
                    "the fed placeholders, into DIR/<name>.so and DIR/<name>.h (a C function with no "
                    "Python or graphc dependency; see docs/export.md). Inputs are in --feed order, outputs "
                    "in --fetch order. Variables are frozen at their initial values, or at the values of "
                    "--checkpoint.")
    export.add_argument("graph_file", metavar="GRAPH_FILE", help="a graph file written by gc.save_graph")
    export.add_argument("--fetch", action="append", required=True, metavar="NAME",
                        help="tensor ('loss:0', or 'loss' for an op's first output) to compute; repeat it, or "
                             "give several names separated by commas")
    export.add_argument("--feed", action="append", default=[], metavar="NAME:SHAPE:DTYPE",
                        help="a placeholder and its concrete shape and dtype, e.g. x:128x784:float32, "
                             "labels:128:int64, t:scalar:float32 (shape '[]' or 'scalar' for a scalar); "
                             "repeat it, once per input, in argument order")
    export.add_argument("-o", "--output-dir", required=True, metavar="DIR",
                        help="directory to write <name>.so and <name>.h into (created if missing)")
    export.add_argument("--name", default="fn", help="the C function's name (default fn)")
    export.add_argument("--cpu", default=None, metavar="CPU",
                        help="LLVM target CPU, e.g. x86-64-v3 for a library other machines run "
                             "(default: this machine's CPU and features)")
    export.add_argument("--checkpoint", default=None, metavar="PREFIX",
                        help="restore the variables from this gc.train.Saver checkpoint before freezing them")
    export.set_defaults(run=_export)

    ptx_cmd = sub.add_parser(
        "ptx", help="print the PTX the ptx backend would run for a saved graph (no GPU needed)",
        description="Load a graph saved with gc.save_graph, optimize the fetched tensors as a function of "
                    "the fed placeholders, and print the PTX module the ptx backend would load, with each "
                    "kernel's launch strategy and grid on stderr (see docs/ptx.md). No GPU is needed.")
    ptx_cmd.add_argument("graph_file", metavar="GRAPH_FILE", help="a graph file written by gc.save_graph")
    ptx_cmd.add_argument("--fetch", action="append", required=True, metavar="NAME",
                         help="tensor to compute ('loss:0', or 'loss'); repeat it or separate names by commas")
    ptx_cmd.add_argument("--feed", action="append", default=[], metavar="NAME:SHAPE:DTYPE",
                         help="a placeholder and its concrete shape and dtype, e.g. x:128x784:float32")
    ptx_cmd.add_argument("--arch", default=None, metavar="sm_XY",
                         help="target architecture (default GRAPHC_PTX_ARCH or sm_80)")
    ptx_cmd.add_argument("--check", action="store_true", help="assemble the PTX with ptxas (CUDA toolkit)")
    ptx_cmd.add_argument("-o", "--output", default=None, metavar="FILE", help="write the PTX here, not stdout")
    ptx_cmd.set_defaults(run=_ptx)

    passes = sub.add_parser(
        "passes", help="list the optimisation passes in the order they run",
        description="List the optimisation pipeline's passes in the order they run. Switch passes off "
                    "by name with GRAPHC_DISABLE_PASSES=a,b or gc.Config(disabled_passes=[...]).")
    passes.set_defaults(run=_passes)

    sub.add_parser("demo", add_help=False, help="train the MLP demo on scikit-learn's digits "
                                                "(`graphc demo --help` for its options)")
    sub.add_parser("bench", add_help=False, help="run the benchmark suite of a source checkout "
                                                 "(`graphc bench --help` for its options)")
    return parser


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------
def _dump(args: argparse.Namespace) -> int:
    from .dump import dump
    from .serialize import load_graph
    graph = load_graph(args.graph_file)
    fetches = _resolve_fetches(graph, args.fetch, args.graph_file) if args.fetch else None
    stage: Union[str, int] = int(args.stage) if args.stage.isdigit() else args.stage
    text = dump(graph, stage=stage, format=args.format, fetches=fetches, full_paths=args.full_paths)
    if args.output:
        _write_output(args.output, text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    return 0


def _resolve_fetches(graph: Any, names: Sequence[str], where: str) -> List[Any]:
    from .errors import InvalidArgumentError
    wanted = [n.strip() for group in names for n in group.split(",") if n.strip()]
    if not wanted:
        raise _UsageError("--fetch needs a tensor or op name")
    found = []
    for name in wanted:
        try:
            found.append(graph.as_graph_element(name))
        except (KeyError, InvalidArgumentError):
            raise InvalidArgumentError(f"{where} has no tensor or op named {name!r}{_suggest(graph, name)}") from None
    return found


def _suggest(graph: Any, name: str) -> str:
    import difflib
    base = name.rpartition(":")[0] if ":" in name else name
    names = [op.name for op in graph.get_operations()]
    close = difflib.get_close_matches(base, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _write_output(path: str, text: str) -> None:
    try:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise GraphcError(f"cannot write {path}: {exc.strerror or exc}") from None


def _graph_fetches_feeds(args: argparse.Namespace, what: str) -> Tuple[Any, List[Any], List[Any], List[Any]]:
    """The saved graph, its --fetch tensors and --feed placeholders with
    their shapes (for commands that compile a function of the feeds)."""
    from . import dtypes as _dt
    from .errors import InvalidArgumentError
    from .serialize import load_graph
    graph = load_graph(args.graph_file)
    fetches = []
    for element in _resolve_fetches(graph, args.fetch, args.graph_file):
        if not hasattr(element, "op"):          # an Operation: take its first output
            if not element.outputs:
                raise InvalidArgumentError(f"--fetch {element.name} is an op without outputs ({element.type}); "
                                           f"{what} computes tensors")
            element = element.outputs[0]
        fetches.append(element)
    if not args.feed and what == "export":
        raise _UsageError("give each input placeholder with --feed NAME:SHAPE:DTYPE")
    feeds, shapes = [], []
    for text in args.feed:
        name, shape, dtype = _parse_feed(text)
        t = _resolve_placeholder(graph, name, args.graph_file)
        if t in feeds:
            raise _UsageError(f"--feed {t.op.name} is given twice")
        try:
            dt = _dt.as_dtype(dtype)
        except GraphcError:
            raise _UsageError(f"--feed {text!r}: unknown dtype {dtype!r} (float32, float64, int32, int64, bool)")
        if dt != t.dtype:
            raise InvalidArgumentError(f"--feed {text!r}: placeholder {t.op.name} is {t.dtype.name}, not {dt.name}")
        if t.shape is not None and (len(t.shape) != len(shape) or
                                    any(d is not None and d != n for d, n in zip(t.shape, shape))):
            declared = "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"
            raise InvalidArgumentError(f"--feed {text!r}: placeholder {t.op.name} has shape {declared}; "
                                       f"{list(shape)} does not fit it")
        feeds.append(t)
        shapes.append(shape)
    return graph, fetches, feeds, shapes


def _export(args: argparse.Namespace) -> int:
    from .export import export
    graph, fetches, feeds, shapes = _graph_fetches_feeds(args, "export")
    session = _session_with_variables(graph, args.checkpoint)
    result = export(fetches, feeds, args.output_dir, args.name, session=session, shapes=shapes, cpu=args.cpu)
    print(f"exported {result.name} to {args.output_dir}")
    print(f"  library  {result.library}")
    print(f"  header   {result.header}")
    width = max(len(n) for n, _, _ in result.inputs + result.outputs)
    for kind, specs in (("in", result.inputs), ("out", result.outputs)):
        for i, (label, dtype, shape) in enumerate(specs):
            print(f"  {kind + str(i):<8} {label:<{width}}  {dtype.name}[{', '.join(map(str, shape))}]")
    return 0


def _ptx(args: argparse.Namespace) -> int:
    from .backends.ptx import plan_device
    from .codegen import ptx as codegen_ptx
    from .passes import extract, run_pipeline
    graph, fetches, feeds, shapes = _graph_fetches_feeds(args, "ptx")
    program, _ = run_pipeline(extract(graph, fetches, [], feeds, [tuple(s) for s in shapes]))
    plan = plan_device(program, args.arch)
    module = plan.module
    host = sorted({op.type for op in plan.host_ops})
    if module is None:
        print("nothing to launch: every op runs on the host" + (f" ({', '.join(host)})" if host else ""),
              file=sys.stderr)
        return 0
    launches = sum(len(k.launches) for k in module.kernels)
    print(f"{module.name} for {module.arch}: {len(module.kernels)} kernels, {launches} launches per run"
          + (f"; host steps: {', '.join(host)}" if host else ""), file=sys.stderr)
    names = [op.name if len(op.name) <= 48 else "..." + op.name[-45:] for op in plan.owners]
    width = max(len(n) for n in names)
    for name, kernel in zip(names, module.kernels):
        shapes_text = "; ".join(f"{'x'.join(map(str, launch.grid))} blocks of {'x'.join(map(str, launch.block))}"
                                for launch in kernel.launches)
        print(f"  {name:<{width}}  {kernel.strategy:<15} {shapes_text}", file=sys.stderr)
    if args.check:
        codegen_ptx.check_with_ptxas(module.ptx, module.arch)
        print(f"ptxas -arch={module.arch} accepts it", file=sys.stderr)
    if args.output:
        _write_output(args.output, module.ptx)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(module.ptx)
    return 0


def _parse_feed(text: str) -> Any:
    """``NAME:SHAPE:DTYPE`` -> (name, shape tuple, dtype name); split from
    the right, so NAME may be a tensor name such as ``x:0``."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise _UsageError(f"--feed {text!r}: expected NAME:SHAPE:DTYPE, e.g. x:128x784:float32")
    name, shape_text, dtype = parts
    spec = shape_text.strip().strip("[]()").strip()
    if spec in ("", "scalar"):
        return name, (), dtype
    dims = [d.strip() for d in spec.replace(",", "x").split("x")]
    if not all(d.isdigit() for d in dims):
        raise _UsageError(f"--feed {text!r}: shape {shape_text!r} is not like 128x784, 10, [] or scalar "
                          "(every dim a non-negative integer)")
    return name, tuple(int(d) for d in dims), dtype


def _resolve_placeholder(graph: Any, name: str, where: str) -> Any:
    from .errors import InvalidArgumentError
    try:
        element = graph.as_graph_element(name)
    except (KeyError, InvalidArgumentError):
        raise InvalidArgumentError(f"{where} has no placeholder named {name!r}{_suggest(graph, name)}") from None
    tensor = element if hasattr(element, "op") else (element.outputs[0] if element.outputs else None)
    if tensor is None or tensor.op.type != "placeholder":
        kind = tensor.op.type if tensor is not None else element.type
        raise InvalidArgumentError(f"--feed {name}: only placeholders can be inputs of an export; "
                                   f"{name} is made by a {kind} op")
    return tensor


def _session_with_variables(graph: Any, checkpoint: Optional[str]) -> Any:
    """A session holding the values to freeze: the variables' initial values,
    or ``checkpoint``'s. The interpreter runs the initializers (one run: no
    native compile needed)."""
    from .errors import InvalidArgumentError
    from .ops.state import global_variables, variables_initializer
    from .session import Config, Session
    variables = global_variables(graph)
    session = Session(graph=graph, config=Config(backend="interpreter"))
    if variables:
        with graph.as_default():
            init = variables_initializer(variables)
        session.run(init)
        if checkpoint is not None:
            from .train.saver import Saver
            Saver().restore(session, checkpoint)
    elif checkpoint is not None:
        raise InvalidArgumentError(f"--checkpoint {checkpoint}: the graph has no variables to restore")
    return session


def _passes(args: argparse.Namespace) -> int:
    from .passes import pipeline
    passes = pipeline()
    width = max((len(p.name) for p in passes), default=0)
    print("Optimisation passes, in the order they run (after extraction: pruning to the fetches and "
          "shape specialization):")
    if not passes:
        print("  (none registered: graphs are compiled as extracted)")
    for i, p in enumerate(passes, 1):
        numerics = "  [may change floating-point results]" if p.changes_numerics else ""
        print(f"{i:>3}. {p.name:<{width}}  {p.description}{numerics}")
    print("Disable passes by name with GRAPHC_DISABLE_PASSES=a,b or gc.Config(disabled_passes=[...]); "
          "`graphc dump --stage NAME` shows the graph after one.")
    return 0


def _demo(argv: Sequence[str]) -> int:
    from . import demo
    try:
        demo.main(list(argv), prog=f"{PROG} demo")
    except SystemExit as exc:   # argparse: --help, or a usage error it already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _bench(argv: Sequence[str]) -> int:
    # benchmarks/ sits beside graphc/ in a source checkout and is not installed with the package
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "benchmarks", "__init__.py")) and root not in sys.path:
        sys.path.insert(0, root)
    try:
        from benchmarks import main as bench_main
    except ImportError:
        raise GraphcError("the benchmark suite is not importable: run `graphc bench` from a graphc source "
                          "checkout (the benchmarks/ package is not installed with graphc)") from None
    try:
        return bench_main(list(argv), prog=f"{PROG} bench")
    except SystemExit as exc:   # argparse: --help, or a usage error it already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
