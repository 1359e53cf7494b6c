"""On-disk cache of whole CPU executables, keyed above the IR.

The JIT's object cache (graphc/codegen/jit.py) skips LLVM when the IR text
is known, but a new process still runs the passes, lowers, builds and
prints the IR (~0.1 s for issue 5's W2 step). This cache keys the program
*before* the passes: a hash of its serialized graph (graphc/serialize.py:
ops, attributes, constants, specialized shapes), its feeds, fetches and
targets, the pass configuration and the code generator's identity. An entry
is a manifest (the segment's arguments, variable commits, fetch sources,
arena size, the JIT cache key of its machine code) plus the constants the
code reads. A hit rebuilds the executable from those and the cached object
code alone: no passes, no lowering, no IR.

Only executables that are one native segment (no host steps) are cached;
that covers training steps and the benchmark workloads. Enabled with
``GRAPHC_CACHE_DIR``, like the object cache; entries live in
``$GRAPHC_CACHE_DIR/executables``. Writes are atomic; unreadable or
mismatched entries are ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from ...codegen import jit
from ...dump import add_timing
from ...files import atomic_write

MANIFEST_VERSION = "graphc-cpu-executable-1"
_SUBDIR = "executables"


def _directory() -> Optional[str]:
    root = os.environ.get(jit.CACHE_ENV, "")
    return os.path.join(os.path.abspath(os.path.expanduser(root)), _SUBDIR) if root else None


def program_key(program: Any, config: Any) -> Optional[str]:
    """Hex key of a program before the passes, or None when the cache is off
    or the program cannot be serialized."""
    if _directory() is None:
        return None
    from ...serialize import to_document
    try:
        doc, arrays = to_document(program.graph)
    except Exception:       # a graph serialize cannot write is simply not cached
        return None
    h = hashlib.sha256()
    h.update(MANIFEST_VERSION.encode())
    h.update(json.dumps(doc, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    h.update(json.dumps({
        "feeds": [t.name for t in program.feeds], "fetches": [t.name for t in program.fetches],
        "targets": [op.name for op in program.targets], "optimize": bool(config.optimize),
        "disabled": sorted(config.disabled_passes),
        "env": {k: os.environ.get(k, "") for k in ("GRAPHC_DISABLE_PASSES", "GRAPHC_LLVM_MATH", "GRAPHC_LLVM_UNROLL")},
        "codegen": jit.cache_key(""),
    }, sort_keys=True).encode())
    return h.hexdigest()


def store(key: str, executable: Any) -> None:
    """Save ``executable`` under ``key`` when it is one native segment whose
    machine code the object cache holds."""
    directory = _directory()
    module = getattr(executable, "module", None)
    if directory is None or executable.single is None or module is None or not module.cache_key:
        return
    manifest = executable.manifest()
    if manifest is None:
        return
    manifest["version"] = MANIFEST_VERSION
    manifest["ir_key"] = module.cache_key
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write(os.path.join(directory, key + ".npz"),
                     lambda f: np.savez(f, **{f"c{k}": c for k, c in enumerate(executable.constants)}),
                     durable=False)
        # the manifest goes last: its presence means the entry is complete
        atomic_write(os.path.join(directory, key + ".json"), lambda f: f.write(json.dumps(manifest).encode()),
                     durable=False)
    except OSError:
        return


def load(key: str, program: Any) -> Optional[Any]:
    """The executable stored under ``key``, rebuilt for ``program``, or None."""
    directory = _directory()
    if directory is None:
        return None
    import time
    start = time.perf_counter()
    try:
        with open(os.path.join(directory, key + ".json"), "rb") as f:
            manifest = json.loads(f.read().decode())
        if manifest.get("version") != MANIFEST_VERSION:
            return None
        with np.load(os.path.join(directory, key + ".npz"), allow_pickle=False) as data:
            constants = [data[f"c{k}"] for k in range(len(data.files))]
    except (OSError, ValueError, KeyError):
        return None
    from ...codegen import parallel
    parallel.ensure_runtime()
    if manifest.get("blas"):
        from ...codegen import blas
        blas.register_blas_symbols()
    module = jit.load_cached_module(manifest["ir_key"], name="graphc_cpu")
    if module is None:
        return None
    from .executable import CpuExecutable
    try:
        executable = CpuExecutable.restore(program, manifest, constants, module)
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    add_timing("cpu: executable cache hit", time.perf_counter() - start)
    return executable
