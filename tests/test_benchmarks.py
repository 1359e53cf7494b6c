"""The benchmark suite (benchmarks/): a tiny smoke run of every workload for
graphc and NumPy, verification that refuses wrong results, and the report."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import main, render, run_suite  # noqa: E402
from benchmarks.harness import PEER, Prepared, TimingPolicy, measure, verify  # noqa: E402
from benchmarks.peers import Peer, select_peers  # noqa: E402
from benchmarks.suite import run_workload  # noqa: E402
from benchmarks.workloads import (W1, W2, WORKLOADS, Context, training_outputs, w1_numpy,  # noqa: E402
                                  w2_loss_and_grads, w3_numpy, w4_numpy)

TINY = 1e-4   # W1: 1,000 elements; W3: 10 x 256; W4: 4 x 1000


def _quiet(message):
    pass


@pytest.fixture(scope="module")
def smoke_report():
    return run_suite(quick=True, scale=TINY, peers="none", backend="auto", log=_quiet)


def test_smoke_run_times_and_verifies_every_workload(smoke_report):
    assert [r.key for r in smoke_report.workloads] == ["W1", "W2", "W3", "W4", "W5"]
    for result in smoke_report.workloads:
        names = [row.name for row in result.rows]
        assert any(n.startswith("graphc") for n in names) and any(n.startswith("NumPy") for n in names)
        for row in result.rows:
            assert row.status == "ok", (result.key, row.name, row.detail)
            assert row.check.ok and row.timing.median > 0 and row.timing.minimum <= row.timing.median
    assert {(c.impl, c.workload) for c in smoke_report.compile_rows} == {("graphc", "W2"), ("graphc", "W1")}
    for crow in smoke_report.compile_rows:
        assert crow.status == "ok", crow.detail
        assert crow.cold and crow.cold[0].first_s > 0
    assert smoke_report.bandwidth_bytes_per_s > 1e8


def test_report_renders_every_section(smoke_report):
    text = render(smoke_report)
    assert text.startswith("# graphc benchmarks\n")
    for heading in ("## Machine", "## Summary against the targets of issue 5", "## W1 elementwise chain",
                    "## W2 MLP training step", "## W3 logistic regression", "## W4 softmax cross-entropy",
                    "## W5 dispatch overhead", "## W6 compile time", "## How this was measured"):
        assert heading in text
    assert f"graphc backend: `{smoke_report.backend}`" in text
    assert "Sizes scaled by 0.0001" in text
    assert "| implementation | median | min | vs graphc | vs fastest peer | samples | check |" in text
    assert "Roofline:" in text and "Target (issue 5)" in text
    for label in ("CPU", "cores", "memory", "Python", "NumPy", "llvmlite", "graphc"):
        assert f"| {label} |" in text
    if smoke_report.backend == "interpreter":
        assert "measure the interpreter, not compiled code" in text


def _wrong_w1(data, ctx):
    x = data["x"]
    out = {}

    def call():
        value, grad = w1_numpy(x)
        out["value"], out["grad"] = value, grad * np.float32(1.01)   # a gradient 1% off
    return Prepared(call, lambda: dict(out))


def _w2_without_bias_update(data, ctx):
    params = {k: v.copy() for k, v in data["params"].items()}
    out = {}

    def call():
        loss, grads = w2_loss_and_grads(params, data["x"], data["labels"])
        for k in ("W1", "b1", "W2"):   # forgets b2
            params[k] -= np.float32(data["lr"]) * grads[k]
        out["loss"] = loss
    return Prepared(call, lambda: training_outputs(out["loss"], data["params"], params, data["lr"]))


def test_verification_refuses_wrong_results():
    policy = TimingPolicy.quick()
    ctx = Context(backend="interpreter")
    result = run_workload(W1, ctx, policy, [], TINY, extra=[("wrong gradient", PEER, _wrong_w1)], log=_quiet)
    wrong = result.rows[-1]
    assert wrong.status == "failed" and wrong.timing is None
    assert "grad" in wrong.detail and wrong.check.error > 5e-3
    assert result.fastest_peer().name == "NumPy"   # a failed row is never "fastest"
    result2 = run_workload(W2, ctx, policy, [], TINY, extra=[("no b2 update", PEER, _w2_without_bias_update)],
                           log=_quiet)
    assert result2.rows[-1].status == "failed" and "grad_b2" in result2.rows[-1].detail


def test_verify_checks_shape_dtype_and_finiteness():
    ref = {"y": np.array([1.0, 2.0])}
    assert verify({"y": np.array([1, 2], np.float32)}, ref, 1e-6).ok
    assert not verify({"y": np.array([1, 2], np.float64)}, ref, 1e-6).ok        # not float32
    assert not verify({"y": np.array([1, 2, 3], np.float32)}, ref, 1e-6).ok     # wrong shape
    assert not verify({"y": np.array([1, np.nan], np.float32)}, ref, 1e-6).ok   # not finite
    assert not verify({}, ref, 1e-6).ok                                          # missing output


def test_unavailable_and_crashing_implementations_do_not_stop_the_suite():
    missing = Peer("Missing", "graphc_no_such_module_for_bench", "missing", {"W5": _wrong_w1})

    def crash(data, ctx):
        raise RuntimeError("boom")
    result = run_workload(WORKLOADS["W5"], Context(backend="interpreter"), TimingPolicy.quick(), [missing], 1.0,
                          extra=[("crashes", PEER, crash)], log=_quiet)
    by_name = {r.name: r for r in result.rows}
    assert by_name["Missing"].status == "unavailable" and "ModuleNotFoundError" in by_name["Missing"].detail
    assert by_name["crashes"].status == "error" and "boom" in by_name["crashes"].detail
    assert by_name["NumPy expression"].timed


def _central_difference(f, x, idx, eps=1e-6):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    return (float(f(xp)) - float(f(xm))) / (2 * eps)


def test_reference_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(7)
    _, g = w1_numpy(x)
    for i in range(7):
        assert g[i] == pytest.approx(_central_difference(lambda v: w1_numpy(v)[0], x, i), rel=1e-6, abs=1e-8)
    X, y, w = rng.standard_normal((5, 3)), (rng.random(5) < 0.5).astype(float), rng.standard_normal(3)
    _, gw, gb = w3_numpy(X, y, w, 0.2)
    assert gw[1] == pytest.approx(_central_difference(lambda v: w3_numpy(X, y, v, 0.2)[0], w, 1), rel=1e-6)
    assert gb == pytest.approx(_central_difference(lambda v: w3_numpy(X, y, w, v[0])[0], np.array([0.2]), 0),
                               rel=1e-6)
    logits, labels = rng.standard_normal((3, 4)), np.array([0, 3, 1])
    _, gl = w4_numpy(logits.copy(), labels)
    assert gl[2, 1] == pytest.approx(_central_difference(lambda v: w4_numpy(v, labels)[0], logits, (2, 1)),
                                     rel=1e-6)
    params = {"W1": rng.standard_normal((4, 5)), "b1": rng.standard_normal(5),
              "W2": rng.standard_normal((5, 3)), "b2": rng.standard_normal(3)}
    xb, lb = rng.standard_normal((2, 4)), np.array([2, 0])
    _, grads = w2_loss_and_grads(params, xb, lb)
    for name, idx in (("W1", (1, 2)), ("b1", 3), ("W2", (4, 1)), ("b2", 0)):
        def loss_at(v, name=name):
            return w2_loss_and_grads({**params, name: v}, xb, lb)[0]
        assert grads[name][idx] == pytest.approx(_central_difference(loss_at, params[name], idx),
                                                 rel=1e-5, abs=1e-9)


def test_measure_batches_microsecond_calls():
    calls = []
    timing = measure(Prepared(lambda: calls.append(1), dict), TimingPolicy.quick())
    assert timing.inner > 1 and timing.repeats >= 3 and 0 < timing.minimum <= timing.median


def test_peer_selection():
    assert select_peers("none") == []
    assert [p.key for p in select_peers("jax,pytensor")] == ["jax", "pytensor"]
    with pytest.raises(ValueError, match="unknown peer"):
        select_peers("tensorflow")


def test_command_line_writes_the_report(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert main(["--quick", "--only", "W5", "--peers", "none", "--backend", "interpreter",
                 "--output", str(out)]) == 0
    text = out.read_text()
    assert "## W5 dispatch overhead" in text and "## W1" not in text
    with pytest.raises(SystemExit) as exc:
        main(["--only", "W9"])
    assert exc.value.code == 2
    assert "unknown workload" in capsys.readouterr().err


def test_workloads_verify_on_the_ptx_backend():
    """The benchmark workloads compute the right results through the ptx
    backend (on the CUDA emulator without a GPU, whose times the report
    disowns)."""
    from graphc.backends import available_backends
    from graphc.runtime import cuda
    if "ptx" not in available_backends():
        pytest.skip("no ptx backend (no GPU and the emulator is off)")
    report = run_suite(only=["W1", "W3", "W4", "W5"], quick=True, scale=TINY, peers="none", backend="ptx",
                       log=_quiet)
    for result in report.workloads:
        for row in result.rows:
            assert row.status == "ok" and row.check.ok, (result.key, row.name, row.detail)
    assert ("CUDA emulator" in report.backend_note) == cuda.emulated()
