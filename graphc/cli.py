"""The ``graphc`` command line (also ``python -m graphc``).

    graphc dump GRAPH_FILE [--fetch NAME ...] [--stage S] [--format text|dot|svg|html] [-o OUT]
    graphc passes
    graphc demo [--epochs N] [--batch-size N] [--backend B] [--quiet] ...

``dump`` reads a graph saved with ``gc.save_graph`` and prints (or writes)
its dump at one stage of the optimisation pipeline (see ``gc.dump``);
``passes`` lists the pipeline's passes in the order they run; ``demo`` trains
the MLP demo (:mod:`graphc.demo`). A graphc error prints one line,
``graphc: error: ...``, and exits with status 1; a usage error exits with 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional, Sequence, Union

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
                               "Inspect saved graphs and the optimisation pipeline, or run the demo.")
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
