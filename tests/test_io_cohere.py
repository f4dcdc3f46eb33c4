"""cohere's results folders (cdi_plugins/io/cohere.py): written so that cohere-ui reads them, read back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.io.cohere import read_cohere_results, write_cohere_results
from tests.cohere_helpers import er_result  # noqa: F401 (fixture)


def test_results_folder_round_trip(tmp_path, er_result):
    out = write_cohere_results(er_result, tmp_path / "rp")
    names = sorted(os.listdir(out))
    assert {"image.npy", "support.npy", "errors.npy", "errors.txt", "metrics.txt"} <= set(names)
    image = np.load(os.path.join(out, "image.npy"))
    assert np.abs(image).max() == pytest.approx(1.0)  # cohere's max-normalisation
    back = read_cohere_results(out)
    scale = np.abs(er_result.obj).max()
    assert np.allclose(back["obj"] * scale, er_result.obj, atol=1e-5 * scale)  # conjugated back
    assert np.array_equal(back["support"], er_result.support)
    assert back["errors"][-1] == pytest.approx(er_result.chi2, rel=1e-6)
    assert back["metrics"]["chi"] == pytest.approx(er_result.chi2, rel=1e-6)
    with pytest.raises(CDIError, match="exists"):
        write_cohere_results(er_result, out)
    write_cohere_results(er_result, out, overwrite=True)
    (tmp_path / "other").mkdir()
    with pytest.raises(CDIError, match="not a cohere results folder"):
        write_cohere_results(er_result, tmp_path / "other", overwrite=True)


def test_a_pickle_in_a_results_folder_is_never_unpickled(tmp_path, er_result):
    import pickle

    from tests.helpers import CodePayload
    out = write_cohere_results(er_result, tmp_path / "rp")
    marker = tmp_path / "pwned"
    with open(os.path.join(out, "coherence.npy"), "wb") as fh:        # an object array: a pickle inside .npy
        np.save(fh, np.array([CodePayload(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(CDIError):
        read_cohere_results(out)
    assert not marker.exists()
    pickle.loads(pickle.dumps(CodePayload(str(marker))))   # the payload is real: unpickling it does run
    assert marker.exists()
