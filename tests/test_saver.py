"""gc.train.Saver: atomic .npz checkpoints, restore checks, latest_checkpoint."""
import json
import os

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, GraphcError, GraphFormatError, ShapeError, UninitializedVariableError


def _model():
    with gc.name_scope("layer1"):
        w = gc.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="w")
        b = gc.Variable(np.zeros(3, np.float64), name="b")
    step = gc.Variable(0, name="step")
    return w, b, step


def _session():
    return gc.Session(config=gc.Config(backend="interpreter"))


def _files(directory):
    return sorted(os.listdir(directory))


def test_round_trip_in_the_same_session(tmp_path):
    w, b, step = _model()
    saver = gc.train.Saver()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run([w.assign(np.ones((2, 3), np.float32)), b.assign([1.5, 2.5, 3.5]), step.assign(7)])
        path = saver.save(sess, str(tmp_path / "model"))
        assert path == str(tmp_path / "model")
        sess.run(gc.global_variables_initializer())
        assert sess.run(step) == 0
        saver.restore(sess, path)
        out_w, out_b, out_step = sess.run([w, b, step])
    np.testing.assert_array_equal(out_w, np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(out_b, [1.5, 2.5, 3.5])
    assert out_w.dtype == np.float32 and out_b.dtype == np.float64 and out_step == 7


def test_restore_into_a_fresh_session_needs_no_initializer(tmp_path):
    w, b, step = _model()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(w.assign_add(np.full((2, 3), 10, np.float32)))
        path = gc.train.Saver().save(sess, str(tmp_path / "ckpt" / "model"), global_step=3)
    assert path.endswith("model-3") and os.path.exists(path + ".npz")
    with _session() as sess:
        gc.train.Saver().restore(sess, path)
        np.testing.assert_array_equal(sess.run(w), np.arange(6).reshape(2, 3) + 10)
        # restored state is ordinary state: it can be updated and read back
        np.testing.assert_array_equal(sess.run(w.assign_sub(np.ones((2, 3), np.float32)))[0], [9, 10, 11])


def test_checkpoint_is_a_plain_npz_keyed_by_variable_name(tmp_path):
    w, b, step = _model()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        path = gc.train.Saver().save(sess, str(tmp_path / "m"))
    with np.load(path + ".npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["layer1/b", "layer1/w", "step"]
        np.testing.assert_array_equal(data["layer1/w"], np.arange(6).reshape(2, 3))
        assert data["step"].shape == () and data["step"].dtype == np.int32
    index = json.loads((tmp_path / "checkpoint.json").read_text())
    assert index["latest"] == "m" and index["checkpoints"] == ["m"]


def test_global_step_latest_checkpoint_and_max_to_keep(tmp_path):
    w, b, step = _model()
    saver = gc.train.Saver(max_to_keep=2)
    assert gc.train.latest_checkpoint(str(tmp_path)) is None
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        for i in range(4):
            sess.run(step.assign(i * 100))
            saver.save(sess, str(tmp_path / "model"), global_step=step)   # a step variable works too
    assert _files(tmp_path) == ["checkpoint.json", "model-200.npz", "model-300.npz"]
    latest = gc.train.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-300")
    assert [os.path.basename(p) for p in saver.last_checkpoints] == ["model-200", "model-300"]
    with _session() as sess:
        saver.restore(sess, latest)
        assert sess.run(step) == 300


def test_max_to_keep_none_keeps_everything(tmp_path):
    _model()
    saver = gc.train.Saver(max_to_keep=None)
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        for i in range(7):
            saver.save(sess, str(tmp_path / "m"), global_step=i)
    assert len([f for f in _files(tmp_path) if f.endswith(".npz")]) == 7


def test_var_list_subset_and_dict_names(tmp_path):
    w, b, step = _model()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(step.assign(5))
        path = gc.train.Saver({"weights": w, "global_step": step}).save(sess, str(tmp_path / "m"))
    with np.load(path + ".npz") as data:
        assert sorted(data.files) == ["global_step", "weights"]
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        gc.train.Saver({"global_step": step}).restore(sess, path)
        assert sess.run(step) == 5


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    w, b, step = _model()
    saver = gc.train.Saver()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        sess.run(step.assign(1))
        first = saver.save(sess, str(tmp_path / "model"))
        before = (tmp_path / "model.npz").read_bytes()
        sess.run(step.assign(2))

        def crash(src, dst):
            raise OSError("simulated crash during rename")
        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            saver.save(sess, str(tmp_path / "model"))
        monkeypatch.undo()
    assert _files(tmp_path) == ["checkpoint.json", "model.npz"]      # no stray temp files
    assert (tmp_path / "model.npz").read_bytes() == before
    assert gc.train.latest_checkpoint(str(tmp_path)) == first
    with _session() as sess:
        saver.restore(sess, first)
        assert sess.run(step) == 1


def test_a_crash_while_writing_the_index_leaves_it_naming_a_complete_checkpoint(tmp_path, monkeypatch):
    _, _, step = _model()
    saver = gc.train.Saver()
    real_replace = os.replace
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        saver.save(sess, str(tmp_path / "model"), global_step=1)

        def crash_on_index(src, dst):
            if os.path.basename(dst) == "checkpoint.json":
                raise OSError("simulated crash")
            real_replace(src, dst)
        monkeypatch.setattr(os, "replace", crash_on_index)
        with pytest.raises(OSError):
            saver.save(sess, str(tmp_path / "model"), global_step=2)
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]
    latest = gc.train.latest_checkpoint(str(tmp_path))
    assert latest == str(tmp_path / "model-1")


def test_missing_variable_is_a_clear_error(tmp_path):
    w, b, step = _model()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        path = gc.train.Saver([w]).save(sess, str(tmp_path / "m"))
    with _session() as sess:
        with pytest.raises(GraphFormatError, match=r"layer1/b.*step|no value for variable"):
            gc.train.Saver().restore(sess, path)
        # nothing was loaded
        with pytest.raises(UninitializedVariableError):
            sess.run(w)


def test_shape_and_dtype_mismatches_name_the_variable(tmp_path):
    g1 = gc.Graph()
    with g1.as_default():
        gc.Variable(np.zeros((2, 3), np.float32), name="v")
        with gc.Session(graph=g1) as sess:
            sess.run(gc.global_variables_initializer())
            path = gc.train.Saver().save(sess, str(tmp_path / "m"))
    g2 = gc.Graph()
    with g2.as_default():
        gc.Variable(np.zeros((3, 2), np.float32), name="v")
        with gc.Session(graph=g2) as sess, pytest.raises(ShapeError, match=r"'v'.*\(2, 3\).*\(3, 2\)"):
            gc.train.Saver().restore(sess, path)
    g3 = gc.Graph()
    with g3.as_default():
        gc.Variable(np.zeros((2, 3), np.float64), name="v")
        with gc.Session(graph=g3) as sess, pytest.raises(DTypeError, match=r"'v'.*float32.*float64"):
            gc.train.Saver().restore(sess, path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupted_checkpoint_raises_graph_format_error(tmp_path, damage):
    _model()
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        path = gc.train.Saver().save(sess, str(tmp_path / "m"))
    data = tmp_path / "m.npz"
    raw = data.read_bytes()
    data.write_bytes({"garbage": b"not a zip file at all" * 10, "truncated": raw[: len(raw) // 2],
                      "empty": b""}[damage])
    with _session() as sess, pytest.raises(GraphFormatError, match="m.npz"):
        gc.train.Saver().restore(sess, path)


def test_pickled_arrays_are_refused(tmp_path):
    v = gc.Variable(np.zeros(2, np.float32), name="v")
    np.savez(tmp_path / "evil.npz", v=np.array([{"a": 1}, None], dtype=object))
    with _session() as sess, pytest.raises(GraphFormatError, match="corrupted or not a graphc checkpoint"):
        gc.train.Saver([v]).restore(sess, str(tmp_path / "evil"))


def test_missing_checkpoint_and_bad_use(tmp_path):
    v = gc.Variable(1.0, name="v")
    with _session() as sess:
        with pytest.raises(GraphFormatError, match="no checkpoint"):
            gc.train.Saver().restore(sess, str(tmp_path / "nope"))
        with pytest.raises(UninitializedVariableError, match="'v'"):
            gc.train.Saver().save(sess, str(tmp_path / "m"))
        with pytest.raises(GraphcError):
            gc.train.Saver([v.initial_value])
        with pytest.raises(GraphcError):
            gc.train.Saver(max_to_keep=-1)
    assert not os.path.exists(tmp_path / "m.npz")


def test_variable_names_that_clash_with_numpy_keywords(tmp_path):
    a = gc.Variable(1.0, name="file")
    b = gc.Variable(2.0, name="allow_pickle")
    with _session() as sess:
        sess.run(gc.global_variables_initializer())
        path = gc.train.Saver().save(sess, str(tmp_path / "m"))
    with _session() as sess:
        gc.train.Saver().restore(sess, path)
        assert sess.run([a, b]) == [1.0, 2.0]


def test_a_damaged_index_is_a_graph_format_error(tmp_path):
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(GraphFormatError, match="checkpoint.json"):
        gc.train.latest_checkpoint(str(tmp_path))
    (tmp_path / "checkpoint.json").write_text('{"something": "else"}')
    with pytest.raises(GraphFormatError, match="not a graphc checkpoint index"):
        gc.train.latest_checkpoint(str(tmp_path))
