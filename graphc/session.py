"""Session: owns variable state and runs (fetches, feeds) through a backend.

``Session.run`` does only per-run work: resolve and validate feeds, look the
executable up in a cache keyed by (fetches, feeds), call it, and rebuild the
fetch structure around the results.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import shapes as _shapes
from .backends import get_backend
from .backends.interpreter import VariableStore
from .errors import (DTypeError, ExecutionError, FeedError, GraphcError, GraphMismatchError, InvalidArgumentError,
                     ShapeError)
from .graph import Graph, Operation, Tensor, get_default_graph


@dataclass
class Config:
    """Session / function options.

    backend: "auto" (the best available), "interpreter", "cpu" or "ptx".
    optimize: run the optimisation passes before codegen (executables are
        then specialized on the fed shapes).
    seed: seed of the session's random number generator (random ops).
    disabled_passes: pass names to skip (also GRAPHC_DISABLE_PASSES=a,b).
    debug: verify the graph after every pass (also GRAPHC_DEBUG=1).
    dump_dir: write the graph after every pass there (also GRAPHC_DUMP_DIR).
    """
    backend: str = "auto"
    optimize: bool = True
    seed: Optional[int] = None
    disabled_passes: Tuple[str, ...] = ()
    debug: bool = False
    dump_dir: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)


class _Fetches:
    """Flattens a nested fetch structure into graph elements and rebuilds it."""

    def __init__(self, graph: Graph, fetches: Any) -> None:
        self.graph = graph
        self.elements: List[Any] = []
        self.structure = self._flatten(fetches)

    def _flatten(self, f: Any) -> Any:
        if isinstance(f, dict):
            return (type(f), [(k, self._flatten(v)) for k, v in f.items()])
        if isinstance(f, tuple) and hasattr(f, "_fields"):
            return ("namedtuple", type(f), [self._flatten(v) for v in f])
        if isinstance(f, (list, tuple)):
            return (type(f), [self._flatten(v) for v in f])
        if f is None:
            raise TypeError("a fetch cannot be None")
        try:
            element = self.graph.as_graph_element(f)
        except GraphMismatchError as exc:
            raise GraphMismatchError(f"cannot fetch {getattr(f, 'name', f)!r}: {exc}") from None
        except KeyError as exc:
            raise KeyError(f"cannot fetch {f!r}: {exc.args[0]}") from None
        self.elements.append(element)
        return len(self.elements) - 1

    def rebuild(self, values: List[Any], s: Any = None) -> Any:
        s = self.structure if s is None else s
        if isinstance(s, int):
            return values[s]
        if s[0] == "namedtuple":
            return s[1](*[self.rebuild(values, x) for x in s[2]])
        kind, items = s
        if issubclass(kind, dict):
            return kind((k, self.rebuild(values, v)) for k, v in items)
        return kind(self.rebuild(values, x) for x in items)


def _feed_key(graph: Graph, key: Any) -> Tensor:
    try:
        element = graph.as_graph_element(key)
    except GraphMismatchError:
        raise FeedError(f"cannot feed {getattr(key, 'name', key)!r}: it belongs to another graph than "
                        "this session's") from None
    except (KeyError, ValueError) as exc:
        raise FeedError(f"cannot feed {key!r}: no such tensor in the session's graph") from None
    except TypeError:
        raise FeedError(f"feed_dict keys must be Tensors or tensor names, got {type(key).__name__}") from None
    if isinstance(element, Operation):
        if len(element.outputs) != 1:
            raise FeedError(f"cannot feed operation {element.name!r}; feed one of its output tensors")
        element = element.outputs[0]
    return element


def convert_feed(tensor: Tensor, value: Any) -> np.ndarray:
    """Convert a fed value to the tensor's dtype (NumPy same_kind casting) and
    check it against the tensor's static shape."""
    what = f"{tensor.op.type} '{tensor.op.name}'" if tensor.op.type == "placeholder" else f"tensor '{tensor.name}'"
    if isinstance(value, (Tensor, Operation)) or hasattr(value, "_as_tensor"):
        raise FeedError(f"the value fed to {what} is a graphc {type(value).__name__}; feed NumPy data "
                        "(run the tensor first to get its value)")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise FeedError(f"cannot convert the value fed to {what} to an array: {exc}") from None
    if arr.dtype != tensor.dtype:
        if arr.dtype.kind not in "biuf" or not np.can_cast(arr.dtype, tensor.dtype, "same_kind"):
            raise FeedError(f"{what} expects dtype {tensor.dtype.name}, but the fed value has dtype "
                            f"{arr.dtype} which cannot be converted safely (created at {tensor.op.source})")
        if tensor.dtype.kind in "iu" and arr.dtype.kind in "iu" and arr.size:
            # same_kind allows int64 -> int32, but astype would wrap out-of-range values
            info = np.iinfo(tensor.dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise FeedError(f"{what} expects dtype {tensor.dtype.name}, but the fed values range over "
                                f"[{arr.min()}, {arr.max()}], which does not fit (created at {tensor.op.source})")
        arr = arr.astype(tensor.dtype)
    if not _shapes.compatible(tensor.shape, arr.shape):
        raise FeedError(f"{what} expects shape {_shapes.fmt(tensor.shape)}, but the fed value has shape "
                        f"{arr.shape} (created at {tensor.op.source})")
    return arr


def _owned(value: np.ndarray, feed_values: Sequence[np.ndarray]) -> np.ndarray:
    """A fetched array the caller may modify: variable values and constants
    are stored read-only, and a fed array can pass through unchanged, so
    those come back as copies (writing to them must not change the session's
    state or the caller's input)."""
    if not value.flags.writeable or any(np.may_share_memory(value, f) for f in feed_values):
        return value.copy()
    return value


def compile_run(graph: Graph, fetches: Sequence[Tensor], targets: Sequence[Operation], feeds: Sequence[Tensor],
                feed_shapes: Sequence[Tuple[int, ...]], config: Config, backend: Any) -> Any:
    """Graph → executable for one (fetches, feeds[, shapes]): extract the
    needed ops, run the pass pipeline, hand the program to the backend. The
    executable keeps the pipeline's stage records (``.stages``) and its
    timings (``.compile_log``) for dumps; with ``config.dump_dir`` or
    GRAPHC_DUMP_DIR set, every stage is written there (graphc/dump.py)."""
    import time
    from .dump import compiling
    from .passes import extract, run_pipeline
    start = time.perf_counter()
    try:
        program = extract(graph, fetches, targets, feeds, feed_shapes if config.optimize else None)
    except (ShapeError, DTypeError, InvalidArgumentError) as exc:
        # Shapes re-inferred with the fed sizes disagree: a run-time error
        # (it is one under optimize=False too), reported with the feeds.
        fed = ", ".join(f"{t.name}={tuple(s)}" for t, s in zip(feeds, feed_shapes))
        raise ExecutionError(f"{exc} [fed shapes: {fed}]") from exc
    timings = {"extract": time.perf_counter() - start}
    stages = []
    # A backend's on-disk executable cache is keyed on the program before the
    # passes (not consulted while dumping: a dump shows every stage).
    cache_key = None
    if hasattr(backend, "cache_key") and not (config.dump_dir or os.environ.get("GRAPHC_DUMP_DIR")):
        cache_key = backend.cache_key(program, config)
        hit = backend.cached(cache_key, program) if cache_key else None
        if hit is not None:
            with compiling(program, [], timings, None) as log:
                log.add_timing("backend executable cache hit", time.perf_counter() - start)
            hit.stages = []
            hit.compile_log = log
            return hit
    if config.optimize:
        debug = config.debug or os.environ.get("GRAPHC_DEBUG", "") not in ("", "0")
        start = time.perf_counter()
        try:
            program, stages = run_pipeline(program, disabled=config.disabled_passes, verify=debug)
        except Exception as exc:
            done = getattr(exc, "graphc_stages", None)
            if done:
                # dump the stages before the failing pass, then re-raise
                with compiling(done[-1].program, done, timings, config.dump_dir):
                    raise
            raise
        timings["passes"] = time.perf_counter() - start
    with compiling(program, stages, timings, config.dump_dir) as log:
        start = time.perf_counter()
        executable = backend.compile(program, config)
        log.add_timing(f"backend compile ({getattr(backend, 'name', type(backend).__name__)})",
                       time.perf_counter() - start)
    executable.stages = stages
    executable.compile_log = log
    if cache_key:
        backend.remember(cache_key, executable)
    return executable


_MISS = object()


def _fast_fetch_key(fetches: Any) -> Optional[Tuple]:
    """A hashable key for fetches the fast path handles: one Tensor, or a
    list/tuple of Tensors."""
    if type(fetches) is Tensor:
        return (fetches,)
    if type(fetches) in (list, tuple):
        for f in fetches:
            if type(f) is not Tensor:
                return None
        return (type(fetches), *fetches)
    return None


class _FastEntry:
    """Runners for one (fetches, feed keys) by fed shapes. A run takes this
    path only when every fed value is an ndarray of exactly the expected
    dtype and its shapes were seen before: nothing is left to convert or
    check in Python (the entry point checks the arrays natively)."""

    def __init__(self, dtypes: Tuple[np.dtype, ...]) -> None:
        self.dtypes = dtypes
        self.runners: Dict[Tuple, Any] = {}

    def run(self, fetches: Any, feed_dict: Optional[Dict[Any, Any]]) -> Any:
        values = list(feed_dict.values()) if feed_dict else []
        for v, dt in zip(values, self.dtypes):
            if type(v) is not np.ndarray or v.dtype is not dt:
                return _MISS
        runner = self.runners.get(tuple([v.shape for v in values]))
        if runner is None:
            return _MISS
        results, fresh = runner(values)
        if results is None:
            return _MISS
        out = [r if f else _owned(r, values) for r, f in zip(results, fresh)]
        return out[0] if type(fetches) is Tensor else type(fetches)(out)


class _DefaultSessionStack(threading.local):
    def __init__(self) -> None:
        self.stack: List["Session"] = []


_default_sessions = _DefaultSessionStack()


def get_default_session() -> Optional["Session"]:
    return _default_sessions.stack[-1] if _default_sessions.stack else None


def _session_for(graph: Graph, session: Optional["Session"]) -> "Session":
    session = session or get_default_session()
    if session is None:
        raise InvalidArgumentError("no session given and no default session: pass session= or use `with sess:`")
    if session.graph is not graph:
        raise GraphMismatchError("the session runs another graph than the one this tensor belongs to")
    return session


class Session:
    """Runs parts of a graph; owns the values of its variables."""

    def __init__(self, graph: Optional[Graph] = None, config: Optional[Config] = None) -> None:
        self.graph = graph if graph is not None else get_default_graph()
        self.config = config or Config()
        self._backend = get_backend(self.config.backend)
        self._store = VariableStore()
        self._rng = np.random.default_rng(self.config.seed)
        self._cache: Dict[Tuple, Any] = {}
        # fast path: (fetch key, feed keys) -> _FastEntry (see _run_fast)
        self._fast: Dict[Tuple, "_FastEntry"] = {}
        self._closed = False

    @property
    def backend(self) -> str:
        return self._backend.name

    # ---- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Free the session's state (variable values, compiled executables)."""
        self._store.clear()
        self._cache.clear()
        self._fast.clear()
        self._closed = True

    def __enter__(self) -> "Session":
        _default_sessions.stack.append(self)
        self._graph_ctx = self.graph.as_default()
        self._graph_ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._graph_ctx.__exit__(*exc)
        _default_sessions.stack.remove(self)
        self.close()

    @contextlib.contextmanager
    def as_default(self) -> Iterator["Session"]:
        _default_sessions.stack.append(self)
        try:
            with self.graph.as_default():
                yield self
        finally:
            _default_sessions.stack.remove(self)

    # ---- running -----------------------------------------------------------------
    def run(self, fetches: Any, feed_dict: Optional[Dict[Any, Any]] = None) -> Any:
        """Compute ``fetches`` (a Tensor, Operation, name, or nested
        list/tuple/dict of them) given ``feed_dict``. Operations give None."""
        if self._closed:
            raise InvalidArgumentError("this Session was closed; create a new one")
        fast_key = _fast_fetch_key(fetches)
        if fast_key is not None:
            feed_keys = tuple(feed_dict) if feed_dict else ()
            entry = self._fast.get((fast_key, feed_keys))
            if entry is not None:
                result = entry.run(fetches, feed_dict)
                if result is not _MISS:
                    return result
        fetch = _Fetches(self.graph, fetches)
        feed_tensors: List[Tensor] = []
        feed_values: List[np.ndarray] = []
        for key, value in (feed_dict or {}).items():
            t = _feed_key(self.graph, key)
            if t in feed_tensors:
                raise FeedError(f"tensor {t.name} is fed twice")
            feed_tensors.append(t)
            feed_values.append(convert_feed(t, value))
        tensors = [e for e in fetch.elements if isinstance(e, Tensor)]
        targets = [e for e in fetch.elements if isinstance(e, Operation)]
        # a canonical feed order (names are unique in a graph): one executable per feed set,
        # and the same program in every process (the on-disk executable cache keys on it)
        order = sorted(range(len(feed_tensors)), key=lambda i: feed_tensors[i].name)
        feed_tensors = [feed_tensors[i] for i in order]
        feed_values = [feed_values[i] for i in order]
        key = (tuple(map(id, tensors)), tuple(map(id, targets)), tuple(map(id, feed_tensors)))
        if self.config.optimize:
            key += (tuple(v.shape for v in feed_values),)
        executable = self._cache.get(key)
        if executable is None:
            executable = compile_run(self.graph, tensors, targets, feed_tensors,
                                     [v.shape for v in feed_values], self.config, self._backend)
            self._cache[key] = executable
        results = executable.run(feed_values, self._store, self._rng)
        it = iter(results)
        values = [_owned(next(it), feed_values) if isinstance(e, Tensor) else None for e in fetch.elements]
        if fast_key is not None and hasattr(executable, "runner"):
            self._remember_fast(fast_key, feed_dict, feed_tensors, order, executable)
        return fetch.rebuild(values)

    def _fast_runner(self, fetches: List[Tensor], feeds: List[Tensor], values: Sequence[Any]) -> Optional[Any]:
        """The runner a previous ``run(fetches, dict(zip(feeds, values)))``
        registered for these shapes (graphc.function calls it directly)."""
        entry = self._fast.get(((list, *fetches), tuple(feeds)))
        if entry is None:
            return None
        return entry.runners.get(tuple(np.shape(v) for v in values))

    def _remember_fast(self, fast_key: Tuple, feed_dict: Optional[Dict[Any, Any]], feed_tensors: List[Tensor],
                       order: List[int], executable: Any) -> None:
        """After a successful run, let later runs with the same fetches, feed
        keys, dtypes and shapes skip straight to the executable's runner."""
        feed_keys = tuple(feed_dict) if feed_dict else ()
        runner = executable.runner(order, self._store)
        if runner is None:
            return
        dtypes = [None] * len(order)
        for j, i in enumerate(order):
            dtypes[i] = feed_tensors[j].dtype
        entry = self._fast.setdefault((fast_key, feed_keys), _FastEntry(tuple(dtypes)))
        if entry.dtypes == tuple(dtypes):
            shapes = tuple(np.shape(v) for v in (feed_dict or {}).values())
            entry.runners[shapes] = runner

    def _load_variable(self, var: Any, value: Any) -> None:
        arr = np.array(value, dtype=var.dtype)
        if arr.shape != tuple(var.shape):
            raise FeedError(f"cannot load a value of shape {arr.shape} into variable {var.name} of shape {tuple(var.shape)}")
        arr.setflags(write=False)
        self._store.values[var._attrs["var"]] = arr

    def _variable_values(self) -> Dict[str, np.ndarray]:
        return dict(self._store.values)
