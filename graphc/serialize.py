"""Saving and loading graphs without pickle: ``gc.save_graph(graph, path)``
and ``gc.load_graph(path)``.

File layout
-----------
``save_graph(g, "model.graph")`` writes two files:

* ``model.graph``: a UTF-8 JSON document (human-readable, diffable);
* ``model.graph.npz``: a NumPy archive of the graph's array attributes
  (constant values), read back with ``allow_pickle=False``. It is written
  only when the graph has arrays; the JSON records its SHA-256, so a stale
  or mismatched archive is refused instead of silently mixed in.

Both files are written atomically (temporary file + rename), the archive
first, so a crash never leaves a document naming an archive that is not
complete. Nothing in either file is executable: loading cannot run code.

The document (format ``"graphc.graph"``, version 1)::

    {"format": "graphc.graph", "version": 1, "graphc_version": "0.1.0",
     "graph": {"ops": [OP, ...]},                 # the root graph, schedule order
     "functions": [FUNCTION, ...],                # subgraphs of cond/while ops
     "variables": [{"op": "w", "initial_value": "w/initial_value:0",
                    "initializer": "w/Assign", "trainable": true}, ...],
     "collections": {"trainable_variables": [{"variable": "w"}], ...},
     "arrays": null | {"sha256": "...", "count": N}}

    OP = {"name": "dense/MatMul", "type": "matmul",
          "inputs": ["x:0", "dense/w:0"],            # tensor names in the op's graph
          "control_inputs": ["init"],                # op names in the op's graph
          "attrs": {"transpose_a": false, ...},      # encoded values, see below
          "outputs": [{"shape": [null, 10], "dtype": "float32"}],
          "source": ["train.py", 12, "build"],       # file, line, function
          "gradient_of": {"graph": "root", "op": "dense/MatMul"}}   # optional

    FUNCTION = {"name": "cond/true_fn", "outer": "root" | "f0" | null,
                "ops": [OP, ...], "inputs": ["arg:0", ...], "outputs": [...],
                "captures": [["x:0", "capture:0"], ...]}   # (outer tensor, argument)

Graphs are referred to as ``"root"`` or ``"f<i>"`` (index in ``functions``).
A function whose enclosing graph is not part of the saved graph (a pipeline
program's copy of a user cond) has ``"outer": null`` and no captures; it is
enclosed by the graph of the op using it when loaded.

Attribute values: JSON null/bool/int/str and lists as themselves, finite
floats as numbers; everything else is an object with one ``$`` tag:
``{"$float": "nan"|"inf"|"-inf"}``, ``{"$tuple": [...]}`` (shapes, axes),
``{"$dtype": "float32"}``, ``{"$scalar": "int64", "value": 3}`` (NumPy
scalars; other kinds as ``{"$scalar": "a<i>"}``, a 0-d array), ``{"$array":
"a<i>"}`` (a member of the archive), ``{"$dict": [[key, value], ...]}`` and
``{"$func": i}`` (a subgraph). A value of any other kind (the Python
function of a ``custom_gradient`` op) cannot be saved: ``ExportError``.

Loading re-creates every op with ``Graph.create_op`` (shapes and dtypes
are inferred again and checked against the recorded ones), keeps every name
exactly, and restores Variables and collections, so the loaded graph runs,
trains, saves checkpoints and differentiates like the original. Files of
another format or version, and malformed ones, raise ``GraphFormatError``.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import shapes as _shapes
from .errors import ExportError, GraphcError, GraphFormatError
from .graph import FuncGraph, Graph, Operation, SourceLocation, Tensor

__all__ = ["save_graph", "load_graph", "to_document", "from_document", "graph_to_bytes", "graph_from_bytes",
           "FORMAT", "VERSION"]

FORMAT = "graphc.graph"
VERSION = 1
ARRAYS_SUFFIX = ".npz"
ROOT = "root"

Arrays = Dict[str, np.ndarray]


# ==========================================================================
# Saving
# ==========================================================================
def save_graph(graph: Any, path: str) -> str:
    """Write ``graph`` to ``path`` (JSON) and, when it holds arrays,
    ``path + ".npz"``. ``graph`` is a Graph or anything with a ``.graph``
    (a compiled function, a Session). Returns ``path``.

    Raises ExportError when an op holds something a file cannot (the Python
    function of a ``custom_gradient`` op), naming the op."""
    graph = _root_graph(graph)
    doc, arrays = to_document(graph)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    from .train.saver import _atomic_write, _write_archive
    if arrays:
        buf = io.BytesIO()
        _write_archive(buf, arrays)
        data = buf.getvalue()
        doc["arrays"] = {"sha256": hashlib.sha256(data).hexdigest(), "count": len(arrays)}
        _atomic_write(path + ARRAYS_SUFFIX, lambda f: f.write(data))
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def graph_to_bytes(graph: Any) -> bytes:
    """``graph`` as one bytes object: a zip archive holding the JSON document
    (member ``graph.json``) and the arrays as ``.npy`` members, the same data
    ``save_graph`` writes to its two files. ``graph_from_bytes`` reads it
    (this is what pickling a compiled function stores). Raises ExportError
    as ``save_graph`` does."""
    doc, arrays = to_document(_root_graph(graph))
    # the arrays sit in the same archive, so no checksum: only their count, checked on reading
    doc["arrays"] = {"count": len(arrays)} if arrays else None
    text = json.dumps(doc, allow_nan=False).encode("utf-8")
    buf = io.BytesIO()
    # one zip (rather than the .npz written by save_graph plus a JSON file) so that
    # the document and its arrays travel as a single value
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_BYTES_DOCUMENT, text)
        for name, arr in arrays.items():
            with zf.open(_BYTES_ARRAYS + name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def graph_from_bytes(data: bytes, where: str = "<graph bytes>") -> Graph:
    """A new Graph from ``graph_to_bytes`` output. Arrays are read with
    ``allow_pickle=False``: loading runs no code. Raises GraphFormatError for
    anything else (``where`` names the data in the message)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GraphFormatError(f"{where}: graph bytes must be bytes, got {type(data).__name__}")
    arrays: Arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            names = zf.namelist()
            if _BYTES_DOCUMENT not in names:
                raise GraphFormatError(f"{where} is not a graphc graph: no {_BYTES_DOCUMENT} member")
            raw = zf.read(_BYTES_DOCUMENT)
            for member in names:
                if member.startswith(_BYTES_ARRAYS) and member.endswith(".npy"):
                    with zf.open(member) as f:
                        arr = np.lib.format.read_array(f, allow_pickle=False)
                    arr.setflags(write=False)
                    arrays[member[len(_BYTES_ARRAYS):-len(".npy")]] = arr
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise GraphFormatError(f"{where} is not a graphc graph archive: {exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise GraphFormatError(f"{where}: the graph document is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise GraphFormatError(f"{where}: the graph document is not JSON") from None
    info = doc.get("arrays") if isinstance(doc, dict) else None
    expected = info.get("count") if isinstance(info, dict) else 0
    if expected != len(arrays):
        raise GraphFormatError(f"{where}: the document names {expected!r} arrays but the archive holds "
                               f"{len(arrays)}")
    return from_document(doc, arrays, where=where)


_BYTES_DOCUMENT = "graph.json"
_BYTES_ARRAYS = "arrays/"


def _root_graph(obj: Any) -> Graph:
    if not isinstance(obj, Graph) and isinstance(getattr(obj, "graph", None), Graph):
        obj = obj.graph
    if not isinstance(obj, Graph):
        raise ExportError(f"save_graph takes a gc.Graph (or an object with a .graph), got {type(obj).__name__}")
    if isinstance(obj, FuncGraph) or obj.outer is not None:
        raise ExportError(f"{obj!r} is the body of a cond/while op; save the graph that holds the op")
    return obj


def to_document(graph: Graph) -> Tuple[Dict[str, Any], Arrays]:
    """The JSON-ready document of ``graph`` and its arrays (archive member
    name → array); ``save_graph`` writes them, ``from_document`` reads them."""
    return _Writer(graph).document()


class _Writer:
    def __init__(self, root: Graph) -> None:
        self.root = root
        self.arrays: Arrays = {}
        self.functions: List[FuncGraph] = []
        self.refs: Dict[Graph, str] = {root: ROOT}
        self._collect(root)

    # ---- structure ---------------------------------------------------------------
    def _collect(self, graph: Graph) -> None:
        """Number every subgraph reachable from ``graph`` (depth first, in
        schedule order), so references can be written before use."""
        for op in graph._ops:
            for value in op.attrs.values():
                for fg in _funcgraphs_in(value):
                    if fg not in self.refs:
                        self.refs[fg] = f"f{len(self.functions)}"
                        self.functions.append(fg)
                        self._collect(fg)

    def document(self) -> Tuple[Dict[str, Any], Arrays]:
        doc: Dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "graphc_version": _graphc_version(),
            "graph": {"ops": [self._op(op) for op in self.root._ops]},
            "functions": [self._function(fg) for fg in self.functions],
            "variables": [self._variable(v) for v in self.root._variables],
            "collections": {name: [self._collection_item(name, item) for item in items]
                            for name, items in self.root._collections.items()},
            "arrays": None,
        }
        return doc, self.arrays

    def _function(self, fg: FuncGraph) -> Dict[str, Any]:
        outer = self.refs.get(fg.outer) if fg.outer is not None else None
        captures = []
        if outer is not None:
            captures = [[o.name, i.name] for o, i in fg.captures if o.graph is fg.outer and i.graph is fg]
        return {
            "name": fg.name,
            "outer": outer,
            "ops": [self._op(op) for op in fg._ops],
            "inputs": [self._own_tensor(t, fg, f"input of subgraph {fg.name!r}") for t in fg.inputs],
            "outputs": [self._own_tensor(t, fg, f"output of subgraph {fg.name!r}") for t in fg.outputs],
            "captures": captures,
        }

    def _own_tensor(self, t: Tensor, graph: Graph, what: str) -> str:
        if t.graph is not graph:
            raise ExportError(f"{what} {t.name} belongs to another graph ({t.graph!r}); the graph cannot be saved")
        return t.name

    def _op(self, op: Operation) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "name": op.name,
            "type": op.type,
            "inputs": [self._own_tensor(t, op.graph, f"input of {op.describe()}") for t in op.inputs],
            "control_inputs": [c.name for c in op.control_inputs if c.graph is op.graph],
            "attrs": {key: self._value(value, op, key) for key, value in op.attrs.items()},
            "outputs": [{"shape": None if t.shape is None else list(t.shape), "dtype": _dtype_name(t.dtype)}
                        for t in op.outputs],
            "source": [op.source.file, op.source.line, op.source.function],
        }
        fwd = op.gradient_of
        if fwd is not None and fwd.graph in self.refs:
            doc["gradient_of"] = {"graph": self.refs[fwd.graph], "op": fwd.name}
        return doc

    def _value(self, v: Any, op: Operation, key: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int) and not isinstance(v, np.integer):
            return int(v)
        if isinstance(v, float) and not isinstance(v, np.floating):
            return _float(v)
        if isinstance(v, np.dtype):
            return {"$dtype": _dtype_name(v)}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise ExportError(f"cannot save {op.describe()}: attr {key!r} is an array of Python objects")
            name = f"a{len(self.arrays)}"
            self.arrays[name] = v
            return {"$array": name}
        if isinstance(v, np.generic) and not isinstance(v, np.object_):
            if v.dtype.kind in "biuf":
                return {"$scalar": _dtype_name(v.dtype), "value": self._value(v.item(), op, key)}
            name = f"a{len(self.arrays)}"
            self.arrays[name] = np.asarray(v)
            return {"$scalar": name}
        if type(v) is tuple:
            return {"$tuple": [self._value(x, op, key) for x in v]}
        if type(v) is list:
            return [self._value(x, op, key) for x in v]
        if type(v) is dict:
            return {"$dict": [[self._value(k, op, key), self._value(x, op, key)] for k, x in v.items()]}
        if isinstance(v, FuncGraph):
            return {"$func": int(self.refs[v][1:])}
        what = "a Python function" if callable(v) else f"a {type(v).__module__}.{type(v).__qualname__}"
        raise ExportError(
            f"cannot save {op.describe()}: its attr {key!r} is {what}, which a graph file cannot hold "
            "(graph files store data only, never code); build this part of the graph in Python instead")

    def _variable(self, var: Any) -> Dict[str, Any]:
        return {"op": var.op.name, "initial_value": var.initial_value.name,
                "initializer": var.initializer.name, "trainable": bool(var.trainable)}

    def _collection_item(self, collection: str, item: Any) -> Any:
        from .ops.state import Variable
        if isinstance(item, Variable):
            if item not in self.root._variables:
                raise ExportError(f"collection {collection!r} holds variable {item.name} of another graph")
            return {"variable": item.op.name}
        if isinstance(item, (Tensor, Operation)):
            if item.graph is not self.root:
                raise ExportError(f"collection {collection!r} holds {item.name} of another graph")
            return {"tensor": item.name} if isinstance(item, Tensor) else {"operation": item.name}
        if item is None or isinstance(item, (bool, int, float, str)):
            return {"value": _float(item) if isinstance(item, float) else item}
        raise ExportError(f"collection {collection!r} holds a {type(item).__name__}, which a graph file cannot "
                          "hold (collections may hold variables, tensors, operations and plain values)")


def _funcgraphs_in(value: Any) -> List[FuncGraph]:
    if isinstance(value, FuncGraph):
        return [value]
    if type(value) in (list, tuple):
        return [fg for v in value for fg in _funcgraphs_in(v)]
    if type(value) is dict:
        return [fg for v in value.values() for fg in _funcgraphs_in(v)]
    return []


def _float(v: float) -> Any:
    if math.isnan(v):
        return {"$float": "nan"}
    if math.isinf(v):
        return {"$float": "inf" if v > 0 else "-inf"}
    return v


def _dtype_name(dt: np.dtype) -> str:
    # the readable name where it names this exact dtype, else NumPy's code
    try:
        if np.dtype(dt.name) == dt:
            return dt.name
    except TypeError:
        pass
    return dt.str


def _graphc_version() -> str:
    from . import __version__
    return __version__


# ==========================================================================
# Loading
# ==========================================================================
def load_graph(path: str) -> Graph:
    """Read a graph written by ``save_graph`` into a new Graph (names, shapes,
    source lines, gradient links, variables and collections as saved).

    Raises GraphFormatError for a file that is missing, of another format or
    version, malformed, or that names op types this graphc does not have."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise GraphFormatError(f"cannot read graph file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise GraphFormatError(f"{path} is not a graphc graph file: its JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        hint = " (that is the array archive; pass the JSON file next to it)" if raw[:2] == b"PK" else ""
        raise GraphFormatError(f"{path} is not a graphc graph file: it is not JSON{hint}") from None
    _check_header(doc, path)
    arrays = _read_arrays(doc, path)
    return from_document(doc, arrays, where=path)


def from_document(doc: Any, arrays: Optional[Arrays] = None, where: str = "<document>") -> Graph:
    """A new Graph from a document made by ``to_document`` (``where`` names
    it in error messages)."""
    _check_header(doc, where)
    try:
        return _Reader(doc, arrays or {}, where).load()
    except GraphFormatError:
        raise
    except GraphcError as exc:
        raise GraphFormatError(f"{where}: {exc}") from None
    except RecursionError:
        raise GraphFormatError(f"{where}: malformed graph file (nested too deeply)") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # Every field is checked where it is read; this is the net under that.
        raise GraphFormatError(f"{where}: malformed graph file ({type(exc).__name__}: {exc})") from None


def _check_header(doc: Any, where: str) -> None:
    if not isinstance(doc, dict) or "format" not in doc:
        raise GraphFormatError(f"{where} is not a graphc graph file (no 'format' field)")
    if doc["format"] != FORMAT:
        raise GraphFormatError(f"{where} is not a graphc graph file: its format is {doc['format']!r}, "
                               f"expected {FORMAT!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise GraphFormatError(f"{where}: the 'version' field must be an integer, got {version!r}")
    if version != VERSION:
        newer = " (written by a newer graphc; upgrade graphc to read it)" if version > VERSION else ""
        raise GraphFormatError(f"{where}: graph format version {version} is not supported; this graphc reads "
                               f"version {VERSION}{newer}")


def _read_arrays(doc: Dict[str, Any], path: str) -> Arrays:
    info = doc.get("arrays")
    if info is None:
        return {}
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
        raise GraphFormatError(f"{path}: malformed 'arrays' field {info!r}")
    apath = path + ARRAYS_SUFFIX
    try:
        with open(apath, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise GraphFormatError(f"{path} keeps its arrays in {apath}, which cannot be read: "
                               f"{exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise GraphFormatError(f"{apath} does not belong to {path} (checksum mismatch): it was overwritten or "
                               "corrupted; save the graph again")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise GraphFormatError(f"{apath} is not a readable array archive: {exc}") from None
    for arr in arrays.values():
        arr.setflags(write=False)
    return arrays


def _fail(where: str, msg: str) -> GraphFormatError:
    return GraphFormatError(f"{where}: {msg}")


class _Reader:
    def __init__(self, doc: Dict[str, Any], arrays: Arrays, where: str) -> None:
        self.doc = doc
        self.arrays = arrays
        self.where = where
        self.root = Graph()
        self.graphs: Dict[str, Graph] = {ROOT: self.root}
        self.function_docs = self._list(doc, "functions", "the document")
        self.loading: set = set()
        self.grad_links: List[Tuple[Operation, Any, str]] = []

    # ---- field access with clear errors -----------------------------------------
    def _get(self, d: Any, key: str, kind: Any, what: str) -> Any:
        if not isinstance(d, dict):
            raise _fail(self.where, f"{what} must be a JSON object, got {type(d).__name__}")
        if key not in d:
            raise _fail(self.where, f"{what} has no {key!r} field")
        value = d[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise _fail(self.where, f"{what}: field {key!r} must be a {names}, got {value!r}")
        return value

    def _list(self, d: Any, key: str, what: str) -> list:
        return self._get(d, key, list, what)

    def _str(self, d: Any, key: str, what: str) -> str:
        return self._get(d, key, str, what)

    # ---- graphs --------------------------------------------------------------------
    def load(self) -> Graph:
        graph_doc = self._get(self.doc, "graph", dict, "the document")
        self._load_ops(self.root, self._list(graph_doc, "ops", "the root graph"), ROOT)
        for op, link, what in self.grad_links:
            op.gradient_of = self._gradient_target(link, what)
        self._load_variables()
        self._load_collections()
        return self.root

    def _load_ops(self, graph: Graph, op_docs: list, ref: str) -> None:
        label = "the root graph" if ref == ROOT else f"subgraph {ref}"
        seen: set = set()
        for i, d in enumerate(op_docs):
            what = f"op #{i} of {label}"
            name = self._str(d, "name", what)
            if not name:
                raise _fail(self.where, f"{what} has an empty name")
            if name in seen:
                raise _fail(self.where, f"{label} has two ops named {name!r}")
            seen.add(name)
            self._load_op(graph, d, f"op {name!r} of {label}")
        _reserve_scopes(graph)

    def _load_op(self, graph: Graph, d: Dict[str, Any], what: str) -> Operation:
        from .ops import registry
        op_type = self._str(d, "type", what)
        if not registry.has(op_type):
            raise _fail(self.where, f"{what} has op type {op_type!r}, which this graphc does not define "
                                    "(written by another version, or by code that registers its own ops)")
        inputs = [self._tensor(graph, n, f"{what}, input {j}")
                  for j, n in enumerate(self._list(d, "inputs", what))]
        controls = [self._op_ref(graph, n, f"{what}, control input")
                    for n in self._list(d, "control_inputs", what)]
        attrs_doc = self._get(d, "attrs", dict, what)
        unknown = sorted(set(attrs_doc) - set(registry.get(op_type).attrs))
        if unknown:
            raise _fail(self.where, f"{what}: a {op_type} op has no attr(s) {', '.join(map(repr, unknown))} "
                                    f"(its attrs: {', '.join(registry.get(op_type).attrs) or 'none'})")
        attrs = {k: self._value(v, graph, f"{what}, attr {k!r}") for k, v in attrs_doc.items()}
        source = self._source(d.get("source"), what)
        try:
            with graph.control_dependencies(controls):
                op = graph.create_op(op_type, inputs, attrs, name=d["name"], source=source, exact_name=True)
        except (GraphcError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # a shape rule given attrs of the wrong kind fails in its own way
            detail = str(exc) if isinstance(exc, GraphcError) else f"{type(exc).__name__}: {exc}"
            raise _fail(self.where, f"{what} cannot be re-created: {detail}") from None
        self._check_outputs(op, self._list(d, "outputs", what), what)
        if d.get("gradient_of") is not None:
            self.grad_links.append((op, d["gradient_of"], what))
        return op

    def _check_outputs(self, op: Operation, outputs: list, what: str) -> None:
        if len(outputs) != len(op.outputs):
            raise _fail(self.where, f"{what} was saved with {len(outputs)} outputs but has {len(op.outputs)} "
                                    "when re-created")
        for i, (o, t) in enumerate(zip(outputs, op.outputs)):
            dtype = self._dtype(self._str(o, "dtype", f"{what}, output {i}"), f"{what}, output {i}")
            shape = self._shape(self._get(o, "shape", (list, type(None)), f"{what}, output {i}"),
                                f"{what}, output {i}")
            if dtype != t.dtype or not _shapes_agree(shape, t.shape):
                raise _fail(self.where, f"{what}: output {i} was saved as {_shapes.fmt(shape)} {dtype.name} but "
                                        f"is {_shapes.fmt(t.shape)} {t.dtype.name} when re-created")

    def _shape(self, value: Any, what: str) -> _shapes.Shape:
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in value):
            raise _fail(self.where, f"{what}: bad shape {value!r}")
        return tuple(value)

    def _source(self, value: Any, what: str) -> SourceLocation:
        if (not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], str)
                or not isinstance(value[1], int) or not isinstance(value[2], str)):
            raise _fail(self.where, f"{what}: 'source' must be [file, line, function], got {value!r}")
        return SourceLocation(value[0], value[1], value[2])

    def _tensor(self, graph: Graph, name: Any, what: str) -> Tensor:
        if not isinstance(name, str):
            raise _fail(self.where, f"{what}: a tensor name must be a string, got {name!r}")
        op_name, sep, index = name.rpartition(":")
        op = graph._ops_by_name.get(op_name) if sep and index.isdigit() else None
        if op is None or int(index) >= len(op.outputs):
            raise _fail(self.where, f"{what} refers to tensor {name!r}, which is not an earlier op's output "
                                    f"in {self._label(graph)}")
        return op.outputs[int(index)]

    def _op_ref(self, graph: Graph, name: Any, what: str) -> Operation:
        op = graph._ops_by_name.get(name) if isinstance(name, str) else None
        if op is None:
            raise _fail(self.where, f"{what} refers to op {name!r}, which is not an earlier op in "
                                    f"{self._label(graph)}")
        return op

    def _label(self, graph: Graph) -> str:
        for ref, g in self.graphs.items():
            if g is graph:
                return "the root graph" if ref == ROOT else f"subgraph {ref}"
        return repr(graph)

    def _gradient_target(self, link: Any, what: str) -> Operation:
        ref = self._str(link, "graph", f"{what}, gradient_of")
        name = self._str(link, "op", f"{what}, gradient_of")
        graph = self.graphs.get(ref)
        if graph is None:
            raise _fail(self.where, f"{what}: gradient_of names graph {ref!r}, which is not in the file")
        return self._op_ref(graph, name, f"{what}, gradient_of")

    # ---- subgraphs --------------------------------------------------------------------
    def _function(self, index: Any, user: Graph, what: str) -> FuncGraph:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.function_docs):
            raise _fail(self.where, f"{what} refers to subgraph {index!r}; the file has "
                                    f"{len(self.function_docs)}")
        ref = f"f{index}"
        if ref in self.loading:
            raise _fail(self.where, f"subgraph {ref} contains itself")
        if ref in self.graphs:
            return self.graphs[ref]
        d = self.function_docs[index]
        label = f"subgraph {ref}"
        outer_ref = d.get("outer") if isinstance(d, dict) else None
        if outer_ref is None:
            outer = user
        else:
            outer = self.graphs.get(outer_ref) if isinstance(outer_ref, str) else None
            if outer is None:
                raise _fail(self.where, f"{label} is enclosed by {outer_ref!r}, which is not a graph loaded "
                                        "before it")
        fg = FuncGraph(self._str(d, "name", label), outer=outer)
        self.loading.add(ref)
        self.graphs[ref] = fg
        try:
            self._load_ops(fg, self._list(d, "ops", label), ref)
        finally:
            self.loading.discard(ref)
        fg.inputs = [self._tensor(fg, n, f"{label}, input {i}") for i, n in enumerate(self._list(d, "inputs", label))]
        for t in fg.inputs:
            if t.op.type != "arg":
                raise _fail(self.where, f"{label}: input {t.name} is not an argument (an 'arg' op)")
        fg.outputs = [self._tensor(fg, n, f"{label}, output {i}")
                      for i, n in enumerate(self._list(d, "outputs", label))]
        for pair in self._list(d, "captures", label):
            if not isinstance(pair, list) or len(pair) != 2 or outer_ref is None:
                raise _fail(self.where, f"{label}: bad capture {pair!r}")
            outer_t = self._tensor(outer, pair[0], f"{label}, capture")
            inner = self._tensor(fg, pair[1], f"{label}, capture")
            fg.captures.append((outer_t, inner))
            fg._capture_map[outer_t] = inner
        return fg

    # ---- attribute values ---------------------------------------------------------------
    def _value(self, v: Any, graph: Graph, what: str) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self._value(x, graph, what) for x in v]
        if not isinstance(v, dict) or not v:
            raise _fail(self.where, f"{what}: cannot decode {v!r}")
        tags = [k for k in v if k.startswith("$")]
        if len(tags) != 1:
            raise _fail(self.where, f"{what}: an encoded value must have exactly one '$' tag, got {sorted(v)}")
        tag = tags[0]
        body = v[tag]
        if tag == "$tuple" and isinstance(body, list):
            return tuple(self._value(x, graph, what) for x in body)
        if tag == "$dtype" and isinstance(body, str):
            return self._dtype(body, what)
        if tag == "$float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$array" and isinstance(body, str):
            return self._array(body, what)
        if tag == "$scalar" and isinstance(body, str):
            return self._scalar(v, body, graph, what)
        if tag == "$dict" and isinstance(body, list):
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in body):
                raise _fail(self.where, f"{what}: a $dict holds [key, value] pairs")
            return {_hashable(self._value(k, graph, what), self.where, what): self._value(x, graph, what)
                    for k, x in body}
        if tag == "$func":
            return self._function(body, graph, what)
        raise _fail(self.where, f"{what}: unknown or malformed encoded value {v!r}")

    def _array(self, key: str, what: str) -> np.ndarray:
        if key not in self.arrays:
            raise _fail(self.where, f"{what} refers to array {key!r}, which is not in the array archive")
        return self.arrays[key]

    def _scalar(self, v: Dict[str, Any], body: str, graph: Graph, what: str) -> Any:
        if "value" not in v:
            return self._array(body, what)[()]
        dtype = self._dtype(body, what)
        value = self._value(v["value"], graph, what)
        if dtype.kind not in "biuf" or isinstance(value, (list, tuple, dict, str)) or value is None:
            raise _fail(self.where, f"{what}: bad scalar {v!r}")
        return dtype.type(value)

    def _dtype(self, name: str, what: str) -> np.dtype:
        try:
            dt = np.dtype(name)
        except TypeError:
            raise _fail(self.where, f"{what}: unknown dtype {name!r}") from None
        if dt.hasobject or dt.kind == "V":
            raise _fail(self.where, f"{what}: dtype {name!r} is not allowed in a graph file")
        return dt

    # ---- variables and collections ---------------------------------------------------------
    def _load_variables(self) -> None:
        from .ops.state import Variable
        self.variables: Dict[str, Variable] = {}
        for i, d in enumerate(self._list(self.doc, "variables", "the document")):
            what = f"variable #{i}"
            snapshot = self._op_ref(self.root, self._str(d, "op", what), what)
            init = self._tensor(self.root, self._str(d, "initial_value", what), what)
            initializer = self._op_ref(self.root, self._str(d, "initializer", what), what)
            trainable = self._get(d, "trainable", bool, what)
            if snapshot.type != "variable" or initializer.type != "assign" or \
                    initializer.attrs.get("var") != snapshot.attrs.get("var"):
                raise _fail(self.where, f"{what}: op {snapshot.name!r} is not a variable with initializer "
                                        f"{initializer.name!r}")
            self.variables[snapshot.name] = Variable._from_ops(snapshot, init, initializer, trainable)

    def _load_collections(self) -> None:
        collections = self._get(self.doc, "collections", dict, "the document")
        for name, items in collections.items():
            if not isinstance(items, list):
                raise _fail(self.where, f"collection {name!r} must be a list")
            for item in items:
                self.root.add_to_collection(name, self._collection_item(name, item))

    def _collection_item(self, collection: str, item: Any) -> Any:
        what = f"collection {collection!r}"
        if not isinstance(item, dict) or len(item) != 1:
            raise _fail(self.where, f"{what}: bad item {item!r}")
        kind, value = next(iter(item.items()))
        if kind == "variable":
            if not isinstance(value, str) or value not in self.variables:
                raise _fail(self.where, f"{what} names variable {value!r}, which is not in the file")
            return self.variables[value]
        if kind == "tensor":
            return self._tensor(self.root, value, what)
        if kind == "operation":
            return self._op_ref(self.root, value, what)
        if kind == "value" and (value is None or isinstance(value, (bool, int, float, str, dict))):
            return self._value(value, self.root, what)
        raise _fail(self.where, f"{what}: bad item {item!r}")


def _shapes_agree(a: _shapes.Shape, b: _shapes.Shape) -> bool:
    """No dim known on both sides differs (a shape rule may have grown more
    precise since the file was written)."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _hashable(key: Any, where: str, what: str) -> Any:
    try:
        hash(key)
    except TypeError:
        raise _fail(where, f"{what}: a $dict key must be hashable, got {key!r}") from None
    return key


def _reserve_scopes(graph: Graph) -> None:
    """Mark the name scopes of loaded ops as used, so ops added later get
    fresh names (``name_scope("dense")`` gives ``dense_1`` when ``dense/w``
    exists), as in the original graph."""
    for name in list(graph._ops_by_name):
        parts = name.split("/")
        for i in range(1, len(parts)):
            key = "/".join(parts[:i]).lower()
            graph._names_in_use[key] = max(graph._names_in_use.get(key, 0), 1)
