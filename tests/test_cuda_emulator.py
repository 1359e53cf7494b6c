"""The CUDA emulator (graphc.runtime.cuda_emulator) behaves like a strict
driver: it runs the host build of graphc's own PTX modules, checks copies,
launch configurations and arguments, and catches kernels writing outside
their buffers instead of corrupting memory."""
import ctypes

import numpy as np
import pytest

from graphc.codegen import ptx as P
from graphc.lowering import loop_ir as L
from graphc.runtime import cuda


@pytest.fixture(autouse=True)
def emulator():
    previous = cuda.use_emulator(True)
    yield cuda.get_context()
    cuda.use_emulator(previous)


def _scale_kernel(n):
    i = L.IVar("i")
    dt = np.dtype(np.float32)
    body = (L.Loop("i", n, (L.Store("out0", i, L.Binary("multiply", L.Load("in0", i, dt), L.Const(2.0, dt), dt)),)),)
    return L.Kernel("scale", (L.Param("in0", dt, (n,), "input"), L.Param("out0", dt, (n,), "output")), body)


def test_the_emulated_device_runs_a_compiled_module(emulator):
    assert cuda.emulated() and "emulator" in emulator.name and emulator.arch == "sm_80"
    module = P.compile_ptx([_scale_kernel(1000)])
    loaded = emulator.load_module(module.ptx)
    x = np.arange(1000, dtype=np.float32)
    dx, dy = emulator.to_device(x), emulator.empty((1000,), np.float32)
    (launch,) = module.kernels[0].launches
    loaded.function(launch.entry).launch(launch.grid, launch.block, [dx.ptr, dy.ptr])
    emulator.synchronize()
    np.testing.assert_array_equal(dy.to_host(), 2 * x)


def test_a_buffer_shorter_than_the_kernel_touches_is_refused_before_the_launch(emulator):
    module = P.compile_ptx([_scale_kernel(1000)])
    loaded = emulator.load_module(module.ptx)
    dx, small = emulator.to_device(np.ones(1000, np.float32)), emulator.empty((10,), np.float32)
    (launch,) = module.kernels[0].launches
    with pytest.raises(cuda.CudaError, match="INVALID_VALUE.*parameter 1: 4000 bytes"):
        loaded.function(launch.entry).launch(launch.grid, launch.block, [dx.ptr, small.ptr])


def test_a_write_past_a_buffer_is_reported_by_the_next_launch(emulator):
    """Guard bytes around every allocation are checked after each launch,
    for a kernel whose code writes beyond what its plan declares (a codegen
    bug). The stray write is made by the host here: correct kernels have none."""
    module = P.compile_ptx([_scale_kernel(16)])
    loaded = emulator.load_module(module.ptx)
    dx, dy = emulator.to_device(np.ones(16, np.float32)), emulator.empty((16,), np.float32)
    (launch,) = module.kernels[0].launches
    fn = loaded.function(launch.entry)
    fn.launch(launch.grid, launch.block, [dx.ptr, dy.ptr])
    ctypes.memset(dy.ptr + 64, 0, 4)             # 4 bytes just past the end
    with pytest.raises(cuda.CudaError, match="ILLEGAL_ADDRESS.*wrote outside"):
        fn.launch(launch.grid, launch.block, [dx.ptr, dy.ptr])
    ctypes.memset(dy.ptr + 64, 0xA5, 4)          # mend it, so freeing the buffer succeeds


def test_only_ptx_compiled_in_this_process_loads(emulator):
    with pytest.raises(cuda.CudaError, match="could not load the PTX.*INVALID_PTX"):
        emulator.load_module("// not graphc's\n.version 7.0\n.target sm_80\n")
    with pytest.raises(cuda.CudaError, match="NOT_FOUND"):
        emulator.load_module(P.compile_ptx([_scale_kernel(4)]).ptx).function("no_such_entry")


def test_switching_the_emulator_off_without_a_driver_names_the_driver(emulator):
    cuda.use_emulator(False)
    if cuda.available():
        pytest.skip("this machine has a real GPU")
    assert not cuda.emulated()
    with pytest.raises(cuda.CudaUnavailableError, match="driver|GPU"):
        cuda.get_context()


def test_calls_go_through_the_drivers_own_ctypes_signatures(emulator):
    """The runtime's _Driver loads the emulator like libcuda and sets the real
    argument types: a badly typed argument fails in ctypes, as it would
    with the real library, and an error carries the driver's name and text."""
    from graphc.runtime.cuda_emulator import EmulatedLibrary
    assert isinstance(emulator.driver.lib, EmulatedLibrary)
    with pytest.raises(ctypes.ArgumentError):
        emulator.driver.call("cuMemFree_v2", "not a device pointer")
    with pytest.raises(cuda.CudaError, match=r"cuMemFree_v2 failed: CUDA_ERROR_INVALID_VALUE: 0x10 is not an "
                                             r"allocation.*\(CUresult 1\)"):
        emulator.driver.call("cuMemFree_v2", 16)
    assert emulator.driver.lib.calls["cuMemFree_v2"] >= 1


def test_the_host_build_has_the_same_entries_and_launch_plans_as_the_ptx():
    import graphc as gc
    from graphc.lowering import lower_op
    from graphc.lowering.matvec import lower_matmul
    g = gc.Graph()
    with g.as_default():
        x = gc.placeholder(gc.float32, (3, 70000))
        a, b = gc.placeholder(gc.float32, (2, 20, 17)), gc.placeholder(gc.float32, (2, 17, 30))
        outs = [gc.reduce_sum(x, axis=1), gc.exp(x), gc.matmul(a, b)]
    kernels = [lower_matmul(t.op) if t.op.type == "matmul" else lower_op(t.op) for t in outs]
    module = P.compile_ptx(kernels)
    build = P.build_for_host(module.ptx)
    assert [k.strategy for k in build.plans] == [k.strategy for k in module.kernels] == \
        ["block_reduce", "parallel", "tiled_matmul"]
    assert [k.launches for k in build.plans] == [k.launches for k in module.kernels]
    assert set(build.nparams) == set(module.entries)
    assert {e for e in module.entries if e.endswith(("_block", "_blocks", "_tiled"))} == build.barriers
    assert all(f".entry {e}(" in module.ptx for e in build.nparams)


@pytest.mark.parametrize("os_threads", [False, True])
def test_barrier_kernels_run_on_fibers_or_os_threads_alike(monkeypatch, os_threads):
    """Blocks with barriers run as ucontext fibers where glibc has them (a
    barrier is a switch to the next fiber), else as OS threads at a pthread
    barrier (GRAPHC_CUDA_EMULATOR_THREADS=1 forces that): same results."""
    import graphc as gc
    from graphc.lowering.matvec import lower_matmul
    from graphc.runtime import cuda_emulator_fibers
    if not os_threads and not cuda_emulator_fibers.supported():
        pytest.skip("no ucontext fibers on this platform")
    monkeypatch.setenv("GRAPHC_CUDA_EMULATOR_THREADS", "1" if os_threads else "0")
    cuda.use_emulator(False)
    cuda.use_emulator(True)                      # a fresh emulator reads the setting
    ctx = cuda.get_context()
    assert (ctx.driver.lib.emulator.fibers is None) == os_threads
    g = gc.Graph()
    with g.as_default():
        out = gc.matmul(gc.placeholder(gc.float32, (2, 40, 33)), gc.placeholder(gc.float32, (2, 33, 50)))
    module = P.compile_ptx([lower_matmul(out.op)])
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 40, 33)).astype(np.float32), rng.standard_normal((2, 33, 50)).astype(np.float32)
    da, db, dc = ctx.to_device(a), ctx.to_device(b), ctx.empty((2, 40, 50), np.float32)
    (launch,) = module.kernels[0].launches
    ctx.load_module(module.ptx).function(launch.entry).launch(launch.grid, launch.block, [da.ptr, db.ptr, dc.ptr])
    np.testing.assert_allclose(dc.to_host(), a @ b, rtol=1e-5, atol=1e-5)
