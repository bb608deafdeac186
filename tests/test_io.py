"""Tests of model files: round trip, atomic writes, refusal of bad files."""

import json
import pickle

import numpy as np
import pytest

from npmf.estimator import MFRegressor
from npmf.io import FORMAT_VERSION, ModelFileError, atomic_path, load_model, save_model


@pytest.fixture
def fitted():
    X = np.array([["a", "x"], ["a", "y"], ["b", "x"], ["c", "z"]])
    return MFRegressor(n_factors=3, n_epochs=2, batch_size=2, seed=1).fit(
        X, [4, 2, 5, 3]
    ), X


def test_save_load_identical_predictions(fitted, tmp_path):
    """save -> load gives identical parameters, ids and predictions."""
    model, X = fitted
    save_model(
        model, tmp_path / "m.npz", extra={"item_titles": np.array(["X", "Y", "Z"])}
    )
    loaded, extra = load_model(tmp_path / "m.npz")
    assert type(loaded) is MFRegressor and loaded.get_params() == model.get_params()
    assert loaded.user_map_.ids.tolist() == ["a", "b", "c"]
    assert loaded.predict(X).tobytes() == model.predict(X).tobytes()
    assert extra["item_titles"].tolist() == ["X", "Y", "Z"]
    assert loaded.history_ == model.history_


def test_saved_file_has_no_pickle(fitted, tmp_path):
    """Every array in the file loads with allow_pickle=False."""
    model, _ = fitted
    save_model(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        for key in npz.files:
            assert npz[key].dtype != object


def test_load_truncated_file(fitted, tmp_path):
    """Issue 7 case 12: a truncated file gives a clear error."""
    model, _ = fitted
    path = tmp_path / "m.npz"
    save_model(model, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated or damaged"):
        load_model(path)


def test_load_other_version(fitted, tmp_path):
    """Issue 7 case 12: a file of another format version is refused."""
    model, _ = fitted
    save_model(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        arrays = dict(npz)
    arrays["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(ModelFileError, match=f"version {FORMAT_VERSION + 1}"):
        load_model(tmp_path / "v.npz")


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("loading executed code from the file",))


def test_load_pickle_never_executed(tmp_path):
    """Issue 7 case 12: a pickle in the file is refused, never executed."""
    np.savez(
        tmp_path / "p.npz",
        format_version=np.array(1),
        config=np.array([_Boom()], dtype=object),
    )
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(tmp_path / "p.npz")
    (tmp_path / "raw.npz").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "raw.npz")


def test_load_wrong_shape(fitted, tmp_path):
    """A parameter of the wrong shape is named."""
    model, _ = fitted
    save_model(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        arrays = dict(npz)
    arrays["param.Q"] = arrays["param.Q"][:, :2]
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(ModelFileError, match=r"parameter Q has shape \(3, 2\)"):
        load_model(tmp_path / "s.npz")
    json.loads(str(arrays["config"]))  # config stays plain JSON text


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    """A failed write leaves the previous file and no temporary behind."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_load_refuses_non_finite_parameters(fitted, tmp_path):
    """A model file holding NaN weights is refused, not served."""
    model, _ = fitted
    save_model(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        arrays = dict(npz)
    arrays["param.P"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ModelFileError, match="parameter P holds NaN"):
        load_model(tmp_path / "nan.npz")


def test_load_text_file_and_bad_config(fitted, tmp_path):
    """A text file is 'not an .npz archive'; damaged JSON names the file."""
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(ModelFileError, match="not an .npz archive"):
        load_model(tmp_path / "t.npz")
    model, _ = fitted
    save_model(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        arrays = dict(npz)
    arrays["config"] = np.array("{bad json")
    np.savez(tmp_path / "j.npz", **arrays)
    with pytest.raises(ModelFileError, match=r"j.npz: damaged config"):
        load_model(tmp_path / "j.npz")
    arrays["config"] = np.array('{"model": "mf", "hyperparameters": {"bogus": 1}}')
    np.savez(tmp_path / "h.npz", **arrays)
    with pytest.raises(ModelFileError, match="bad hyperparameters"):
        load_model(tmp_path / "h.npz")
