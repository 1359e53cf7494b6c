"""Checkpoints: save and restore the variable values a Session holds.

A checkpoint ``<prefix>`` is one NumPy archive ``<prefix>.npz`` mapping each
variable's name (``"layer1/w"``) to its value. Loading never unpickles
(``allow_pickle=False``), so a checkpoint file cannot run code. Next to the
archives, ``checkpoint.json`` (the index) records the latest checkpoint and
the ones a Saver keeps; ``latest_checkpoint(dir)`` reads it.

Every file is written atomically: to a temporary file in the same directory,
flushed and fsync'ed, then renamed over the target with ``os.replace``. A
crash at any point leaves either the old file or the new one, never half of
one, and the index is only updated after the archive it names is complete.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

from ..files import atomic_write
from ..errors import DTypeError, GraphFormatError, GraphMismatchError, InvalidArgumentError, ShapeError
from ..errors import UninitializedVariableError

INDEX_NAME = "checkpoint.json"
SUFFIX = ".npz"
_FORMAT = "graphc.checkpoint"
_VERSION = 1


# one implementation of atomic writes (graphc/files.py); the name stays for callers
_atomic_write = atomic_write


def _data_path(prefix: str) -> str:
    return prefix if prefix.endswith(SUFFIX) else prefix + SUFFIX


def _prefix(path: str) -> str:
    return path[:-len(SUFFIX)] if path.endswith(SUFFIX) else path


def _read_index(directory: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(directory, INDEX_NAME)
    try:
        with open(path, "r", encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GraphFormatError(f"checkpoint index {path} cannot be read: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != _FORMAT or not isinstance(index.get("latest"), str):
        raise GraphFormatError(f"{path} is not a graphc checkpoint index")
    return index


def _write_index(directory: str, latest: str, kept: List[str]) -> None:
    index = {"format": _FORMAT, "version": _VERSION, "latest": latest, "checkpoints": kept}
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    _atomic_write(os.path.join(directory, INDEX_NAME), lambda f: f.write(text.encode("utf-8")))


def latest_checkpoint(checkpoint_dir: str) -> Optional[str]:
    """The prefix of the newest checkpoint saved in ``checkpoint_dir`` (pass
    it to ``Saver.restore``), or None when there is none."""
    index = _read_index(checkpoint_dir)
    if index is None:
        return None
    prefix = os.path.join(checkpoint_dir, index["latest"])
    return prefix if os.path.exists(_data_path(prefix)) else None


class Saver:
    """Saves and restores variables (TF1's ``tf.train.Saver``).

    ``var_list``: the variables to save, as a list or a ``{name: Variable}``
    dict (names then key the checkpoint); None means every global variable
    of the session's graph at save/restore time. ``max_to_keep``: how many
    recent checkpoints this Saver keeps on disk (None or 0 keeps all).
    """

    def __init__(self, var_list: Union[None, Iterable[Any], Dict[str, Any]] = None,
                 max_to_keep: Optional[int] = 5) -> None:
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 0):
            raise InvalidArgumentError(f"max_to_keep must be a non-negative int or None, got {max_to_keep!r}")
        self._var_list = _named_variables(var_list) if var_list is not None else None
        self.max_to_keep = max_to_keep
        self._kept: List[str] = []   # absolute prefixes this Saver wrote, oldest first

    @property
    def last_checkpoints(self) -> List[str]:
        """Prefixes of the checkpoints this Saver keeps, oldest first."""
        return list(self._kept)

    def _variables(self, sess: Any) -> Dict[str, Any]:
        if self._var_list is not None:
            named = self._var_list
        else:
            from ..ops.state import global_variables
            named = _named_variables(global_variables(sess.graph))
        if not named:
            raise InvalidArgumentError("there are no variables to save or restore")
        for name, var in named.items():
            if var.graph is not sess.graph:
                raise GraphMismatchError(f"variable {name!r} belongs to {var.graph!r}, not to the session's "
                                         f"graph {sess.graph!r}")
        return named

    def save(self, sess: Any, save_path: str, global_step: Optional[Any] = None) -> str:
        """Write the variables' values in ``sess`` to ``save_path`` (or
        ``save_path-<global_step>``). Returns the checkpoint prefix written."""
        _check_open(sess)
        named = self._variables(sess)
        values = sess._variable_values()
        arrays = {}
        for name, var in named.items():
            key = var._attrs["var"]
            if key not in values:
                raise UninitializedVariableError(
                    f"cannot save variable {name!r}: it is not initialized in this session")
            arrays[name] = np.asarray(values[key], order="C")
        prefix = _prefix(os.fspath(save_path))
        if not os.path.basename(prefix):
            raise InvalidArgumentError(f"save_path {save_path!r} names a directory; give a file prefix "
                                       "such as 'ckpt/model'")
        if global_step is not None:
            prefix = f"{prefix}-{_step_value(sess, global_step)}"
        directory = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(directory, exist_ok=True)
        _atomic_write(_data_path(prefix), lambda f: _write_archive(f, arrays))
        self._record(os.path.abspath(prefix), directory)
        return prefix

    def _record(self, prefix: str, directory: str) -> None:
        if prefix in self._kept:
            self._kept.remove(prefix)
        self._kept.append(prefix)
        drop: List[str] = []
        if self.max_to_keep:
            drop, self._kept = self._kept[:-self.max_to_keep], self._kept[-self.max_to_keep:]
        in_dir = [os.path.relpath(p, directory) for p in self._kept if os.path.dirname(p) == directory]
        _write_index(directory, os.path.relpath(prefix, directory), in_dir)
        # Old checkpoints go only after the index no longer names them.
        for old in drop:
            try:
                os.remove(_data_path(old))
            except FileNotFoundError:
                pass

    def restore(self, sess: Any, save_path: str) -> None:
        """Load the variables' values from checkpoint ``save_path`` into
        ``sess``. Every variable must be in the checkpoint with its exact
        shape and dtype; nothing is loaded unless all of them are."""
        _check_open(sess)
        if save_path is None:
            raise InvalidArgumentError("restore() needs a checkpoint path; latest_checkpoint() returned None?")
        named = self._variables(sess)
        path = _data_path(save_path)
        arrays = _load_archive(path)
        missing = sorted(n for n in named if n not in arrays)
        if missing:
            raise GraphFormatError(f"checkpoint {path} has no value for variable(s) {', '.join(missing)} "
                                   f"(it holds: {', '.join(sorted(arrays)) or 'nothing'})")
        for name, var in named.items():
            arr = arrays[name]
            if arr.dtype != var.dtype:
                raise DTypeError(f"checkpoint {path}: variable {name!r} has dtype {arr.dtype} there, but "
                                 f"{var.dtype.name} in the graph")
            if arr.shape != tuple(var.shape):
                raise ShapeError(f"checkpoint {path}: variable {name!r} has shape {arr.shape} there, but "
                                 f"{tuple(var.shape)} in the graph")
        for name, var in named.items():
            sess._load_variable(var, arrays[name])


def _named_variables(var_list: Union[Iterable[Any], Dict[str, Any]]) -> Dict[str, Any]:
    from ..ops.state import Variable
    if isinstance(var_list, dict):
        items = list(var_list.items())
    else:
        items = [(getattr(v, "_attrs", {}).get("var"), v) for v in var_list]
    named: Dict[str, Any] = {}
    for name, var in items:
        if not isinstance(var, Variable):
            raise InvalidArgumentError(f"Saver var_list must hold gc.Variable objects, got {var!r}")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"checkpoint names must be non-empty strings, got {name!r}")
        if name in named and named[name] is not var:
            raise InvalidArgumentError(f"two variables would be saved under the name {name!r}")
        named[name] = var
    return dict(sorted(named.items()))


def _write_archive(f: Any, arrays: Dict[str, np.ndarray]) -> None:
    # The .npz layout written by hand rather than with np.savez, whose own
    # keyword arguments would clash with variables named "file" or "allow_pickle".
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


def _load_archive(path: str) -> Dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise GraphFormatError(f"no checkpoint at {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _corrupted(path, exc) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise GraphFormatError(f"{path} is not a graphc checkpoint (not an .npz archive)")
    try:
        with archive:
            return {name: archive[name] for name in archive.files}
    except _READ_ERRORS as exc:
        raise _corrupted(path, exc) from None


def _corrupted(path: str, exc: BaseException) -> GraphFormatError:
    return GraphFormatError(f"checkpoint {path} is corrupted or not a graphc checkpoint: "
                            f"{type(exc).__name__}: {exc}")


def _check_open(sess: Any) -> None:
    if getattr(sess, "_closed", False):
        raise InvalidArgumentError("this Session was closed; create a new one")


def _step_value(sess: Any, global_step: Any) -> int:
    # TF accepts a Python int or a step variable/tensor evaluated in the session.
    if isinstance(global_step, (int, np.integer)) and not isinstance(global_step, bool):
        return int(global_step)
    value = np.asarray(sess.run(global_step))
    if value.shape != () or value.dtype.kind not in "iu":
        raise InvalidArgumentError(f"global_step must be an int or a scalar integer tensor, got {global_step!r}")
    return int(value)
