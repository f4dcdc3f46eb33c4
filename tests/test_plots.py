"""Tests for cdi_plugins.report.plots: the slices-and-chi^2 picture, the convergence picture, their files."""

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.report import report
from cdi_plugins.report.plots import (convergence_figure, figure, iteration_times, write_convergence_png,
                                      write_png)
from tests.helpers import PNG_MAGIC, made  # noqa: F401  (made: fixture)

SIM = "data: {simulate: {shape: 32, seed: 0, counts: 1.0e8}}\nthreads: 1\n"


def test_report_without_geometry_draws_amplitude_and_phase(made, capsys):
    res = cdi_plugins.load(made / "res.cxi")
    res.metadata.pop("geometry")
    p = report(res)
    assert p.displacement is None and p.strain is None
    assert len(figure(res, p).axes) == 2 * 3 + 2 + 1       # two rows, their colour bars, the chi2 panel
    q = report(res, geometry={"hkl": [2, 0, 0], "lattice_constant": 4.078, "voxel_size": 10})
    assert len(figure(res, q).axes) == 3 * 3 + 3 + 1


def test_iteration_times_spread_each_step_over_its_iterations():
    r = cdi_plugins.run(SIM + 'steps: "10*ER+30*HIO"\n')
    t = iteration_times(r)
    assert len(t) == 40 and np.all(np.diff(t) > 0)
    assert t[9] == pytest.approx(r.timings[0]) and t[-1] == pytest.approx(sum(r.timings))


def test_pictures_are_written_as_png_and_never_overwritten_unasked(made, tmp_path):
    res = cdi_plugins.load(made / "res.cxi")
    p = report(res)
    write_png(tmp_path / "a.png", res, p, title="mine")
    write_convergence_png(tmp_path / "c.png", {"one": res, "two": res})
    assert (tmp_path / "a.png").read_bytes()[:8] == (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    before = (tmp_path / "a.png").read_bytes()
    for write in (lambda: write_png(tmp_path / "a.png", res, p),
                  lambda: write_convergence_png(tmp_path / "a.png", {"one": res})):
        with pytest.raises(CDIError, match="a.png.*exists"):
            write()
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.png", "c.png"]      # no temporary files left
    ax = convergence_figure({"one": res, "two": res}).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["one", "two"] and ax.get_yscale() == "log"


def test_an_empty_support_cannot_be_drawn(made):
    res = cdi_plugins.load(made / "res.cxi")
    p = report(res)
    p.support[...] = False
    with pytest.raises(CDIError, match="the support is empty"):
        figure(res, p)
