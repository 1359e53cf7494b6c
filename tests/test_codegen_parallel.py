"""The multi-core runtime for JIT code (graphc/codegen/parallel.py)."""

import ctypes
import ctypes.util
import os
import subprocess
import sys
import textwrap

import llvmlite.ir as ir
import numpy as np
import pytest

from graphc.codegen import parallel as P

PTR = ir.PointerType()
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F64 = ir.DoubleType()
VOID = ir.VoidType()
CTX = ir.LiteralStructType([PTR, PTR])
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _field(b, ctx, i):
    return b.load(b.gep(ctx, [I32(0), I32(i)], inbounds=True, source_etype=CTX), typ=PTR)


def build_fill(min_chunk=1000, grain=1, max_threads=None, nested=False, schedule="static"):
    """``run(out, tids, n)``: out[i] = i*i + 1 and tids[i] = the thread that
    wrote it, through emit_parallel_for.  With ``nested`` an outer region
    over 2 items runs the whole fill as an inner region from item 0."""
    mod = ir.Module()
    body = ir.Function(mod, P.body_function_type(), name="body")
    b = ir.IRBuilder(body.append_basic_block("e"))
    ctx, beg, end = body.args
    out, tids = _field(b, ctx, 0), _field(b, ctx, 1)
    tid = P.emit_thread_id(b)
    with P.emit_for_range(b, end, beg) as i:
        x = b.sitofp(i, F64)
        b.store(b.fadd(b.fmul(x, x), F64(1.0)), b.gep(out, [i], inbounds=True, source_etype=F64))
        b.store(tid, b.gep(tids, [i], inbounds=True, source_etype=I32))
    b.ret_void()
    target = body
    n_slot = ir.GlobalVariable(mod, I64, "n_total")
    n_slot.initializer = I64(0)
    if nested:
        outer = ir.Function(mod, P.body_function_type(), name="outer")
        b = ir.IRBuilder(outer.append_basic_block("e"))
        ctx, beg, end = outer.args
        with b.if_then(b.icmp_signed("==", beg, I64(0))):
            P.emit_parallel_for(b, body, ctx, b.load(n_slot, typ=I64), min_chunk=1)
        b.ret_void()
        target = outer
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR, PTR, I64]), name="run")
    b = ir.IRBuilder(fn.append_basic_block("e"))
    c = P.entry_alloca(b, CTX)
    for i in range(2):
        b.store(fn.args[i], b.gep(c, [I32(0), I32(i)], inbounds=True, source_etype=CTX))
    b.store(fn.args[2], n_slot)
    extent = I64(2) if nested else fn.args[2]
    P.emit_parallel_for(b, target, c, extent, min_chunk=min_chunk, grain=grain,
                        max_threads=max_threads, schedule=schedule)
    b.ret_void()
    jit = P.jit_compile(mod)
    fn = jit.ctypes_function("run", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    return jit, fn


@pytest.fixture(scope="module")
def fill():
    jit, fn = build_fill()
    yield fn
    del jit


@pytest.fixture
def threads():
    """Set the thread count for one test, then restore it."""
    before = P.num_threads() if P.parallel_runtime() == "gomp" else None
    yield P.set_num_threads
    P.set_num_threads(before)


def call(fn, n):
    out = np.zeros(n)
    tids = np.full(n, -1, np.int32)
    fn(out.ctypes.data, tids.ctypes.data, n)
    return out, tids


gomp = pytest.mark.skipif(P.parallel_runtime() != "gomp", reason="libgomp not found")


def test_runtime_reported():
    assert P.parallel_runtime() in ("gomp", "serial")
    if ctypes.util.find_library("gomp") and not os.environ.get(P.LIBGOMP_ENV):
        assert P.parallel_runtime() == "gomp"
        assert P.libgomp_path()
    assert P.num_threads() >= 1


def test_10m_elements_match_single_threaded(fill, threads):
    n = 10_000_000
    threads(1)
    serial, serial_tids = call(fill, n)
    threads(2)
    par, tids = call(fill, n)
    i = np.arange(n, dtype=np.float64)
    np.testing.assert_array_equal(serial, i * i + 1)
    np.testing.assert_array_equal(par, serial)
    assert set(np.unique(serial_tids)) == {0}
    if P.parallel_runtime() == "gomp":
        assert set(np.unique(tids)) == {0, 1}
        # static schedule: one contiguous range per thread, in order
        assert np.all(np.diff(tids) >= 0)


@gomp
def test_repeated_calls_create_no_threads(fill, threads):
    threads(2)
    call(fill, 100_000)  # the pool's workers start here (or earlier)
    before = len(os.listdir("/proc/self/task"))
    out = np.zeros(100_000)
    tids = np.zeros(100_000, np.int32)
    for _ in range(100):
        fill(out.ctypes.data, tids.ctypes.data, out.size)
    assert len(os.listdir("/proc/self/task")) == before
    assert set(np.unique(tids)) == {0, 1}


def test_small_extent_runs_inline(fill, threads):
    threads(2)
    for n in (1, 7, 1999):  # min_chunk=1000: fewer than 2 chunks of work
        out, tids = call(fill, n)
        np.testing.assert_array_equal(out, np.arange(n) ** 2 + 1.0)
        assert set(np.unique(tids)) == {0}


def test_empty_and_negative_extent(fill):
    out = np.full(4, 5.0)
    tids = np.zeros(4, np.int32)
    for n in (0, -3):
        fill(out.ctypes.data, tids.ctypes.data, n)
    np.testing.assert_array_equal(out, 5.0)


@gomp
@pytest.mark.parametrize("n", [2000, 2001, 4097, 99_999])
def test_grain_aligns_chunk_boundaries(threads, n):
    threads(2)
    jit, fn = build_fill(min_chunk=1, grain=64)
    out, tids = call(fn, n)
    np.testing.assert_array_equal(out, np.arange(n) ** 2 + 1.0)
    starts = np.flatnonzero(np.diff(tids)) + 1
    assert len(starts) == 1 and starts[0] % 64 == 0


@pytest.mark.parametrize("n", [1, 5000, 1_000_003])
def test_dynamic_schedule(threads, n):
    threads(2)
    jit, fn = build_fill(min_chunk=1000, grain=16, schedule="dynamic")
    out, tids = call(fn, n)
    np.testing.assert_array_equal(out, np.arange(n) ** 2 + 1.0)
    assert tids.min() >= 0
    # ranges: each at least min_chunk long (but the last), starting on grain
    starts = np.flatnonzero(np.diff(tids)) + 1
    assert np.all(starts % 16 == 0)
    with pytest.raises(ValueError):
        build_fill(schedule="guided")


@gomp
def test_max_threads_cap(threads):
    threads(2)
    jit, fn = build_fill(min_chunk=1, max_threads=1)
    out, tids = call(fn, 10_000)
    np.testing.assert_array_equal(out, np.arange(10_000) ** 2 + 1.0)
    assert set(np.unique(tids)) == {0}


def test_nested_regions_are_correct(threads):
    threads(2)
    jit, fn = build_fill(min_chunk=1, nested=True)
    out, _ = call(fn, 50_000)
    np.testing.assert_array_equal(out, np.arange(50_000) ** 2 + 1.0)


def test_num_threads_setting_is_read_at_run_time(threads):
    mod = ir.Module()
    fn = ir.Function(mod, ir.FunctionType(I32, []), name="nt")
    b = ir.IRBuilder(fn.append_basic_block("e"))
    b.ret(P.emit_num_threads(b))
    jit = P.jit_compile(mod)
    get = jit.ctypes_function("nt", ctypes.c_int32)
    expected = 3 if P.parallel_runtime() == "gomp" else 1
    threads(3)
    assert get() == expected
    with pytest.raises(ValueError):
        P.set_num_threads(0)


def _run_child(env_extra, code):
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
    return proc


CHILD = """
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from test_codegen_parallel import build_fill, call, P
    jit, fn = build_fill()
    out, tids = call(fn, 1_000_000)
    assert np.array_equal(out, np.arange(1_000_000) ** 2 + 1.0)
    print(P.parallel_runtime(), P.num_threads(), sorted(set(tids.tolist())))
"""


def test_env_one_thread_and_forced_serial():
    tests = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(tests=tests)
    one = _run_child({P.NUM_THREADS_ENV: "1"}, code)
    assert one.returncode == 0, one.stderr
    runtime = P.parallel_runtime()
    assert one.stdout.split()[:2] == [runtime, "1"]
    assert one.stdout.strip().endswith("[0]")
    serial = _run_child({P.LIBGOMP_ENV: "none", P.NUM_THREADS_ENV: "2"}, code)
    assert serial.returncode == 0, serial.stderr
    assert serial.stdout.split() == ["serial", "1", "[0]"]
    bad = _run_child({P.NUM_THREADS_ENV: "lots"}, code)
    assert bad.returncode != 0 and "GRAPHC_NUM_THREADS" in bad.stderr


def test_measure_bandwidth():
    bw = P.measure_bandwidth(n_bytes=8 << 20, repeats=2)
    assert 1e8 < bw < 1e13
    assert P.measure_bandwidth(n_bytes=8 << 20, repeats=2, kernel="copy") > 1e8
    with pytest.raises(ValueError):
        P.measure_bandwidth(n_bytes=1 << 20, repeats=1, kernel="scale")


@gomp
def test_forked_child_runs_single_threaded(fill, threads):
    """libgomp's pool does not survive fork(); the child must not hang."""
    import time
    threads(2)
    call(fill, 100_000)  # the parent's pool is now running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the thread ids it saw, then leave at once
        try:
            P.set_num_threads(2)
            out, tids = call(fill, 100_000)
            ok = np.array_equal(out, np.arange(100_000) ** 2 + 1.0)
            os.write(write, f"{int(ok)} {sorted(set(tids.tolist()))}".encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.time() + 30
    while os.waitpid(pid, os.WNOHANG)[0] == 0:
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a parallel region")
        time.sleep(0.05)
    assert os.read(read, 100).decode() == "1 [0]"
    os.close(read)


def test_thread_chooser_runs_with_the_faster_setting_and_keeps_probing():
    if P.parallel_runtime() != "gomp":
        pytest.skip("no libgomp: one thread only")
    before = P.num_threads()
    try:
        P.set_num_threads(2)
        chooser = P.ThreadChooser()
        cost = {2: 1.0, 1: 3.0}                       # two threads faster: an idle machine

        def call():
            n = chooser.begin()
            assert P._num_threads_cell.value == n
            chooser.end(n, cost[n])
            assert P._num_threads_cell.value == 2     # the configured count is restored
            return n

        used = [call() for _ in range(64)]
        assert used[:2] == [2, 1]                      # both settings timed first
        assert used[2:].count(2) > 55 and 1 in used[2:]  # then the faster, with probes of the other
        cost = {2: 7.0, 1: 1.0}                       # another process takes a core
        used = [call() for _ in range(64)]
        assert used[-32:].count(1) > 28               # follows the machine
        assert P.num_threads() == 2
    finally:
        P.set_num_threads(before)


def test_thread_chooser_is_idle_with_one_configured_thread():
    before = P.num_threads()
    try:
        P.set_num_threads(1)
        chooser = P.ThreadChooser()
        assert chooser.begin() == 1
        chooser.end(1, 1.0)
        assert chooser.seconds == {} and P.num_threads() == 1
    finally:
        P.set_num_threads(before)
