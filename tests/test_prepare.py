"""Tests for cdi_plugins.physics.prepare and data.prepare in recipes: masks, threshold, binning, centring, sizes."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.cli import main
from cdi_plugins.io import read_intensity
from cdi_plugins.pipeline import build_problem
from cdi_plugins.compute.fourier import oversampling
from cdi_plugins.physics.prepare import fft_friendly, parse_region, prepare, validate_prepare
from cdi_plugins.recipe import load_recipe
from cdi_plugins.physics.simulate import simulate_crystal


@pytest.fixture(scope="module")
def pattern():
    """A 32^3 noisy simulated pattern (peak at 16, 16, 16) and its metadata."""
    sim = simulate_crystal(32, seed=2, counts=1e8)
    return sim["intensity"], sim["metadata"]


def run_prepare(intensity, mask=None, **options):
    return prepare(intensity, mask, validate_prepare(options))


def fingerprint(path) -> tuple:
    """Content hash and modification time of a file or of every file in a folder."""
    paths = [path] if os.path.isfile(path) else sorted(os.path.join(path, n) for n in os.listdir(path))
    out = []
    for p in paths:
        with open(p, "rb") as fh:
            out.append((hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mtime_ns))
    return tuple(out)


# --------------------------------------------------------------------------- the operations


def test_threshold_zeroes_weak_pixels_only(pattern):
    intensity, _ = pattern
    before = intensity.copy()
    out, mask, report = run_prepare(intensity, threshold=3)
    np.testing.assert_array_equal(intensity, before)                  # input untouched
    assert (out[(before < 3)] == 0).all()
    np.testing.assert_array_equal(out[before >= 3], before[before >= 3])
    assert report["below_threshold"] == int(((before < 3) & (before > 0)).sum()) > 0
    assert not mask.any() and out.dtype == np.float32


def test_saturation_gaps_and_aliens_are_masked_not_zeroed(pattern):
    intensity, _ = pattern
    peak = float(intensity.max())
    out, mask, report = run_prepare(intensity, saturation=peak * 0.5, gaps=[":, 20:22, :"],
                                    aliens=["2:4, 3:5, 6:8", "-3:, 0, :"])
    assert mask[intensity >= peak * 0.5].all() and report["saturated"] == int((intensity >= peak * 0.5).sum())
    assert mask[:, 20:22, :].all() and report["gaps"] == 32 * 2 * 32
    assert mask[2:4, 3:5, 6:8].all() and mask[29:, 0, :].all()
    assert report["aliens"] == 8 + 3 * 32
    assert (out[mask] == 0).all()
    # everything else is untouched and measured
    keep = ~mask
    np.testing.assert_array_equal(out[keep], intensity[keep])


def test_hot_pixels_are_found_and_fringes_are_not(pattern):
    intensity, _ = pattern
    spiked = intensity.copy()
    spiked[5, 25, 7] = 5000.0            # a hot pixel far from the peak
    spiked[3:9, 27, 27] = 800.0          # a hot detector pixel seen in 6 frames
    _, mask, report = run_prepare(spiked, hot_pixels=20)
    assert mask[5, 25, 7] and mask[3:9, 27, 27].all()
    assert report["hot_pixels"] == 7      # and nothing else: fringes are not hot pixels
    _, mask, report = run_prepare(intensity, hot_pixels=20)
    assert report["hot_pixels"] == 0


def test_binning_sums_blocks_and_masks_blocks_with_a_bad_pixel(pattern):
    intensity, meta = pattern
    mask = np.zeros(intensity.shape, dtype=bool)
    mask[0, 0, 0] = True
    out, m, report = run_prepare(intensity, mask, bin=[1, 2, 2])
    assert out.shape == (32, 16, 16) and report["bin"] == [1, 2, 2]
    assert out.sum() == pytest.approx(float(intensity[~mask].sum()) - float(
        intensity[0, 0:2, 0:2].sum() - intensity[0, 0, 0]), rel=1e-5)
    assert m[0, 0, 0] and m.sum() == 1
    assert out[16, 8, 8] == pytest.approx(float(intensity[16, 16:18, 16:18].sum()))
    # binning by 2 halves the oversampling along those axes: below 2, the estimate says so
    os_in = oversampling(intensity)
    os_out = oversampling(out)
    assert os_out[0] == pytest.approx(os_in[0], rel=0.15)
    assert os_in[1] > 2.5 and os_out[1] < 2 and os_out[2] < 2
    # an axis that does not divide loses its remainder evenly from both ends
    odd, _, _ = run_prepare(intensity[:31], bin=[3, 1, 1])
    assert odd.shape == (10, 32, 32)


def test_centring_on_the_maximum_and_centre_of_mass(pattern):
    intensity, _ = pattern
    moved = np.roll(intensity, (3, -2, 5), axis=(0, 1, 2))
    out, mask, report = run_prepare(moved, centre="max")
    assert np.unravel_index(np.argmax(out), out.shape) == (16, 16, 16)
    assert report["shift"] == [-3, 2, -5] and report["peak"] == [19, 14, 21]
    # pixels that came from outside the data are masked (not measured), not zeros to fit
    assert report["outside_data"] == int(mask.sum()) > 0
    assert mask[-3:, :, :].all() and mask[:, :2, :].all() and mask[:, :, -5:].all()
    out, _, report = run_prepare(moved, centre="com")
    com = np.array(np.unravel_index(np.argmax(out), out.shape))
    assert np.abs(com - 16).max() <= 1


def test_crop_and_pad_to_a_shape(pattern):
    intensity, _ = pattern
    out, mask, report = run_prepare(intensity, shape=24)
    assert out.shape == (24, 24, 24) and not mask.any()
    np.testing.assert_array_equal(out, intensity[4:28, 4:28, 4:28])
    out, mask, report = run_prepare(intensity, shape=[40, 32, 36])
    assert out.shape == (40, 32, 36) and report["outside_data"] == 40 * 32 * 36 - 32 ** 3
    assert np.unravel_index(np.argmax(out), out.shape) == (20, 16, 18)
    out, _, _ = run_prepare(intensity[:, :, :31], shape="auto")
    assert out.shape == (32, 32, 30)                                 # 31 is prime: largest friendly below


def test_fft_friendly_sizes():
    assert [fft_friendly(n) for n in (64, 63, 62, 100, 127, 250)] == [64, 60, 60, 100, 120, 250]
    assert fft_friendly(62, up=True) == 64 and fft_friendly(97, up=True) == 100


def test_region_syntax():
    assert parse_region(":, 30:32, 5") == (slice(None), slice(30, 32), slice(5, 6))
    assert parse_region("[-3:, :4, -1]", (10, 10, 10)) == (slice(-3, None), slice(None, 4), slice(9, 10))
    for bad, words in ((":, :", "3 comma-separated"), ("a:b, :, :", "cannot read"),
                       (":, 70:80, :", "outside axis 1"), (":, 5:5, :", "empty")):
        with pytest.raises(CDIError, match=words):
            parse_region(bad, (64, 64, 64))


def test_oversampling_estimate_is_close_to_the_truth(pattern):
    intensity, meta = pattern
    est = oversampling(intensity)
    for e, t in zip(est, meta["oversampling"]):
        assert t * 0.95 <= e <= t * 1.25
    assert oversampling(np.zeros((8, 8, 8))) != oversampling(intensity)


# --------------------------------------------------------------------------- recipes


def recipe_text(data_path, prepare_block, extra=""):
    return f"""\
name: prep
data:
  path: {data_path}
  prepare:
{prepare_block}
seed: 0
threads: 1
steps: "10*ER+10*HIO+10*ER"
{extra}"""


def test_recipe_prepare_reaches_the_problem_and_the_summary(tmp_path, pattern, capsys, monkeypatch):
    intensity, _ = pattern
    np.save(tmp_path / "raw.npy", np.roll(intensity, (2, 0, -1), axis=(0, 1, 2)))
    (tmp_path / "r.yaml").write_text(recipe_text("raw.npy", "    threshold: 2\n    centre: max\n    shape: auto"))
    plan = load_recipe(str(tmp_path / "r.yaml")).dataset()
    problem = build_problem(plan)
    assert np.unravel_index(np.argmax(problem.intensity), problem.shape) == (16, 16, 16)
    md = problem.metadata
    assert md["preparation"]["shift"] == [-2, 0, 1] and md["preparation"]["centre"] == "max"
    assert len(md["oversampling_estimate"]) == 3
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml", "--out", "o.cxi"]) == 0
    out = capsys.readouterr().out
    assert "prepared 32x32x32 -> 32x32x32" in out and "centred on the maximum (moved -2, +0, +1)" in out
    assert "oversampling estimate (autocorrelation):" in out
    assert cdi_plugins.load(tmp_path / "o.cxi").metadata["preparation"]["shift"] == [-2, 0, 1]


def test_undersampled_axis_is_flagged(tmp_path, pattern, capsys, monkeypatch):
    intensity, _ = pattern
    np.save(tmp_path / "raw.npy", intensity)
    (tmp_path / "r.yaml").write_text(recipe_text("raw.npy", "    bin: [1, 1, 3]"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml", "--out", "o.cxi"]) == 0
    out = capsys.readouterr().out
    assert "below 2 on axis 2" in out and "undersampled" in out


@pytest.mark.parametrize("block, words", [
    ("    threshhold: 2", ["r.yaml:5: data.prepare.threshhold", "unknown key", "did you mean 'threshold'"]),
    ("    threshold: -1", ["r.yaml:5: data.prepare.threshold", "out of range"]),
    ("    centre: middle", ["r.yaml:5: data.prepare.centre", "max, com"]),
    ("    bin: [1, 0, 2]", ["r.yaml:5: data.prepare.bin", "integer >= 1"]),
    ("    shape: 2", ["r.yaml:5: data.prepare.shape", ">= 4"]),
    ("    gaps: [\":, 30-32, :\"]", ["r.yaml:5: data.prepare.gaps", "cannot read '30-32'"]),
    ("    aliens: [[1, 2]]", ["r.yaml:5: data.prepare.aliens", "quoted string"]),
    ("    hot_pixels: 1", ["r.yaml:5: data.prepare.hot_pixels", "out of range"]),
])
def test_bad_prepare_values_name_the_recipe_line(tmp_path, pattern, block, words):
    np.save(tmp_path / "raw.npy", pattern[0])
    (tmp_path / "r.yaml").write_text(recipe_text("raw.npy", block))
    with pytest.raises(CDIError) as info:
        load_recipe(str(tmp_path / "r.yaml"))
    for w in words:
        assert w in str(info.value), str(info.value)


def test_errors_that_need_the_data_name_the_recipe_key(tmp_path, pattern):
    np.save(tmp_path / "raw.npy", pattern[0])
    (tmp_path / "r.yaml").write_text(recipe_text("raw.npy", "    aliens: [\"40:50, :, :\"]"))
    plan = load_recipe(str(tmp_path / "r.yaml")).dataset()
    with pytest.raises(CDIError, match=r"r.yaml:5: data.prepare.aliens: region .* outside axis 0, which has 32"):
        build_problem(plan)


def test_prepare_refuses_simulated_data():
    with pytest.raises(CDIError, match="data.prepare works on measured data"):
        cdi_plugins.run({"data": {"simulate": {"shape": 32}, "prepare": {"threshold": 1}}, "steps": "ER"})


def test_prepare_applies_to_an_array_and_never_changes_it(pattern):
    intensity, _ = pattern
    arr = np.roll(intensity, 4, axis=1)
    before = arr.copy()
    r = cdi_plugins.run({"data": {"path": "<array>", "prepare": {"centre": "max", "threshold": 1}},
                         "threads": 1, "steps": "5*ER"}, data=arr)
    np.testing.assert_array_equal(arr, before)
    assert np.unravel_index(np.argmax(r.intensity), r.intensity.shape) == (16, 16, 16)


# --------------------------------------------------------------------------- inputs: never modified; TIFF folders


@pytest.mark.parametrize("kind", ["npy", "tif", "h5", "folder"])
def test_preparation_never_modifies_the_input(tmp_path, pattern, kind, monkeypatch):
    import h5py
    import tifffile
    intensity, _ = pattern
    if kind == "npy":
        path = tmp_path / "raw.npy"
        np.save(path, intensity)
    elif kind == "tif":
        path = tmp_path / "raw.tif"
        tifffile.imwrite(path, intensity)
    elif kind == "h5":
        path = tmp_path / "raw.h5"
        with h5py.File(path, "w") as f:
            f["entry_1/data_1/data"] = intensity
    else:
        path = tmp_path / "frames"
        path.mkdir()
        for i, frame in enumerate(intensity):
            tifffile.imwrite(path / f"frame_{i}.tif", frame)
    mask = np.zeros(intensity.shape, dtype=np.uint8)
    mask[0] = 1
    np.save(tmp_path / "mask.npy", mask)
    os.chmod(tmp_path / "mask.npy", 0o444)
    before, mbefore = fingerprint(path), fingerprint(tmp_path / "mask.npy")
    (tmp_path / "r.yaml").write_text(recipe_text(
        path.name, "    threshold: 2\n    hot_pixels: 10\n    gaps: [\":, 3:5, :\"]\n    bin: [1, 2, 1]\n"
                   "    centre: com\n    shape: auto").replace("  prepare:", "  mask: mask.npy\n  prepare:"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml", "--out", "o.cxi", "-q"]) == 0
    assert fingerprint(path) == before and fingerprint(tmp_path / "mask.npy") == mbefore
    assert cdi_plugins.load(tmp_path / "o.cxi").intensity.shape == (32, 16, 32)


def test_a_folder_of_tiff_frames_is_read_in_natural_order(tmp_path):
    import tifffile
    frames = tmp_path / "scan"
    frames.mkdir()
    stack = np.arange(12 * 4 * 5, dtype=np.float32).reshape(12, 4, 5)
    for i in range(12):                          # frame_10 must come after frame_9
        tifffile.imwrite(frames / f"frame_{i}.tif", stack[i])
    (frames / "notes.txt").write_text("ignored")
    (frames / ".hidden.tif").write_bytes(b"ignored")
    np.testing.assert_array_equal(read_intensity(frames), stack)


def test_tiff_folder_errors(tmp_path):
    import tifffile
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CDIError, match="empty.*directory with no .tif"):
        read_intensity(empty)
    odd = tmp_path / "odd"
    odd.mkdir()
    tifffile.imwrite(odd / "a1.tif", np.zeros((4, 5), np.float32))
    tifffile.imwrite(odd / "a2.tif", np.zeros((4, 6), np.float32))
    with pytest.raises(CDIError, match=r"odd.*frame a2.tif has shape \(4, 6\) but a1.tif has \(4, 5\)"):
        read_intensity(odd)
    stacked = tmp_path / "stacked"
    stacked.mkdir()
    tifffile.imwrite(stacked / "a.tif", np.zeros((3, 4, 5), np.float32), photometric="minisblack")
    with pytest.raises(CDIError, match="frame a.tif holds a 3-D array"):
        read_intensity(stacked)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.tif").write_bytes(b"not a tiff")
    with pytest.raises(CDIError, match="frame x.tif: cannot read as a TIFF"):
        read_intensity(bad)


def test_a_tiff_folder_as_recipe_data_and_as_cli_data(tmp_path, pattern, monkeypatch, capsys):
    import tifffile
    intensity, _ = pattern
    frames = tmp_path / "scan"
    frames.mkdir()
    for i, frame in enumerate(intensity):
        tifffile.imwrite(frames / f"img{i:03d}.tiff", frame)
    (tmp_path / "r.yaml").write_text(recipe_text("scan", "    threshold: 1"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml", "--out", "a.cxi", "-q"]) == 0
    assert main(["run", "r.yaml", "--data", "scan", "--out", "b.cxi", "-q"]) == 0
    a, b = cdi_plugins.load("a.cxi"), cdi_plugins.load("b.cxi")
    np.testing.assert_array_equal(a.intensity, b.intensity)
    np.testing.assert_array_equal(a.intensity, np.where(intensity < 1, 0, intensity))


def test_check_regions_finds_a_gap_outside_the_data_from_its_shape_alone():
    from cdi_plugins.physics.prepare import check_regions
    opts = validate_prepare({"gaps": [":, 30:32, :"], "aliens": ["1:3, 1:3, 70:80"]})
    check_regions({"gaps": opts["gaps"]}, (64, 64, 64))
    with pytest.raises(CDIError, match=r"r.yaml:5: data.prepare.aliens: region '1:3, 1:3, 70:80': index 70 is "
                                       r"outside axis 2, which has 64 pixels"):
        check_regions(opts, (64, 64, 64), where={"aliens": "r.yaml:5: data.prepare.aliens"})
