"""Pictures of a result: central slices of amplitude, phase and strain, and the chi^2 history.

Drawn with Matplotlib's object API on an Agg canvas: no window, no pyplot
state, and the backend of a user's own session is left alone.

Before anything is drawn the maps are put in one canonical twin orientation
(:func:`cdi_plugins.report.orientation.canonical`), so that an object and its
twin give the same picture; the caption says ``twin: as reconstructed`` or
``twin: flipped to canonical orientation``.  :func:`panels` and
:func:`caption` are what the HTML report (:mod:`cdi_plugins.report.html`)
draws too.
"""

from __future__ import annotations

import textwrap

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import atomic_path
from cdi_plugins.report.orientation import canonical, twin_caption

__all__ = ["figure", "write_png", "convergence_figure", "write_convergence_png", "panels", "caption",
           "fit_suptitle", "history_by_step", "axis_names", "grid_origin"]

_AXES = ((1, 2), (0, 2), (0, 1))  # the two in-plane axes of the slice through axis 0, 1, 2


def axis_names(processed) -> tuple[str, str, str]:
    """What array axes 0, 1, 2 are: ``lab x, lab y, lab z`` (or ``crystal ...``) for maps on an orthogonal grid
    of a scan's geometry (``info['frame']``), else ``axis 0, axis 1, axis 2`` (detector-frame arrays)."""
    frame = (processed.info or {}).get("frame")
    if frame in ("lab", "crystal"):
        return tuple(f"{frame} {c}" for c in "xyz")
    return ("axis 0", "axis 1", "axis 2")


def grid_origin(processed) -> tuple[float, float, float]:
    """Position (nm) of voxel (0, 0, 0) of the uncropped grid: the lab grid's corner, else 0."""
    return tuple((processed.info or {}).get("grid_origin_nm") or (0.0, 0.0, 0.0))


def _slices(a: np.ndarray, centre) -> list[np.ndarray]:
    return [a[centre[0], :, :], a[:, centre[1], :], a[:, :, centre[2]]]


def _symmetric_limit(values: np.ndarray) -> float:
    v = np.abs(values[np.isfinite(values)])
    if v.size == 0:
        return 1.0
    lim = float(np.percentile(v, 99.5))
    return lim if lim > 0 else (float(v.max()) or 1.0)


def panels(processed) -> list[dict]:
    """The central slices to draw, one dict per row (map).

    Rows: amplitude (relative), phase (rad), then strain (%) when known, else
    displacement (Angstrom) when a geometry is known.  Each row has ``name``,
    ``label`` (colour bar, with units), ``cmap`` (a Matplotlib colour map
    name), ``limits`` (vmin, vmax) and ``planes``: three dicts (the planes
    through the support's centre perpendicular to array axes 0, 1 and 2) with
    ``image`` (masked where nothing is shown: outside the support, and for
    strain where it is undefined), ``extent`` (left, right, bottom, top in
    ``unit``; lab or crystal coordinates for maps of a scan's geometry),
    ``axes`` (array axes along rows and columns of ``image``), ``names``
    (their :func:`axis_names`), ``unit`` and ``title``.

    Raises
    ------
    CDIError
        If the support is empty.
    """
    sup = processed.support
    if not sup.any():
        raise CDIError("the support is empty: nothing to draw")
    centre = [int(round(c)) for c in np.argwhere(sup).mean(axis=0)]
    voxel = processed.voxel_size
    unit = "nm" if voxel is not None else "voxel"
    step = voxel if voxel is not None else (1.0, 1.0, 1.0)
    origin = processed.origin
    names, base = axis_names(processed), grid_origin(processed)

    rows = [("amplitude", processed.amplitude, "amplitude (relative)", "gray_r", (0.0, 1.0), None)]
    plim = _symmetric_limit(processed.phase[sup])
    rows.append(("phase", processed.phase, "phase (rad)", "RdBu_r", (-plim, plim), sup))
    if processed.strain is not None:
        s = processed.strain * 100.0
        valid = processed.strain_valid if processed.strain_valid is not None else sup
        lim = _symmetric_limit(s[valid]) if valid.any() else 1.0
        rows.append(("strain", s, "strain along Q (%)", "coolwarm", (-lim, lim), valid))
    elif processed.displacement is not None:
        lim = _symmetric_limit(processed.displacement[sup])
        rows.append(("displacement", processed.displacement, "displacement along Q (Å)", "PiYG", (-lim, lim),
                     sup))
    out = []
    for name, data, label, cmap, limits, shown in rows:
        planes = []
        for c, (plane, (ax0, ax1)) in enumerate(zip(_slices(data, centre), _AXES)):
            mask = np.zeros(plane.shape, bool) if shown is None else ~_slices(shown, centre)[c]
            lo0, lo1 = base[ax0] + origin[ax0] * step[ax0], base[ax1] + origin[ax1] * step[ax1]
            extent = (lo1, lo1 + plane.shape[1] * step[ax1], lo0 + plane.shape[0] * step[ax0], lo0)
            at = (f"{base[c] + (origin[c] + centre[c]) * step[c]:.0f} nm" if voxel is not None
                  else f"{origin[c] + centre[c]}")
            planes.append({"image": np.ma.masked_array(plane, mask=mask), "extent": extent, "axes": (ax0, ax1),
                           "names": (names[ax0], names[ax1]), "unit": unit,
                           "title": f"{name}, plane {names[c]} = {at}"})
        out.append({"name": name, "label": label, "cmap": cmap, "limits": limits, "planes": planes})
    return out


def caption(result, processed, title: str | None = None) -> tuple[str, str]:
    """Title (*title*, else dataset and source) and one line saying what is shown.

    The line has the final chi^2, the support fraction, the averaging, the
    geometry and voxel size when known, and the twin orientation.
    """
    final = f"{result.chi2:.3e}" if result.chi2 is not None else "n/a"
    md = result.metadata or {}
    text = title or f"{result.dataset}: {md.get('source', '')}"
    sub = f"final chi² {final}, support {float(np.mean(result.support)):.2%} of the array"
    if md.get("averaged_runs"):
        sub += (f"; object: mean of {len(md['averaged_runs'])} runs (chi² {md['average_chi2']:.3e}), "
                "history of the best")
    if processed.geometry is not None:
        sub += "; " + processed.geometry.describe()
        if processed.voxel_size is not None:
            sub += f"; voxel {' x '.join(f'{v:g}' for v in processed.voxel_size)} nm"
    return text, f"{sub}; {twin_caption(processed)}"


def history_by_step(result) -> list[dict]:
    """The chi^2 history cut into steps: ``step``, ``algorithm``, ``x`` (1-based
    iteration over all steps), ``chi2`` and ``chi2_free`` (or None) per step."""
    hist = list(result.history or [])
    chi = np.array([h.get("chi2", np.nan) for h in hist], dtype=np.float64)
    free = (np.array([h.get("chi2_free", np.nan) for h in hist], dtype=np.float64)
            if any("chi2_free" in h for h in hist) else None)
    steps = np.array([h.get("step", 0) for h in hist])
    x = np.arange(1, len(hist) + 1)
    out = []
    for st in dict.fromkeys(steps.tolist()):
        sel = steps == st
        out.append({"step": st, "algorithm": str(hist[int(np.flatnonzero(sel)[0])].get("algorithm", "?")),
                    "x": x[sel], "chi2": chi[sel], "chi2_free": None if free is None else free[sel]})
    return out


def _wrap(line: str, width: int, break_words: bool = False) -> list[str]:
    """*line* in lines of at most *width* characters, broken after '; ' where possible."""
    out: list[str] = []
    for part in line.split("; "):
        if out and len(out[-1]) + 2 + len(part) <= width:
            out[-1] += "; " + part
        else:
            if out:
                out[-1] += ";"
            out.extend(textwrap.wrap(part, width, break_long_words=break_words) or [""])
    return out


def fit_suptitle(fig, text: str, *, fontsize: float = 11, min_fontsize: float = 7, **kwargs):
    """``fig.suptitle(text)``, fitted to the figure's width.

    While the title is wider than the figure its lines are wrapped (after
    '; ' where possible, else between words); when no line can be broken any
    more the font shrinks, down to *min_fontsize*; then words are cut.
    Measured with the Agg renderer (one is attached to *fig* if it has none).
    Returns the title's Text.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    room = 0.98 * fig.bbox.width
    lines = text.split("\n")
    t = fig.suptitle(text, fontsize=fontsize, **kwargs)
    for _ in range(40):
        extent = t.get_window_extent(renderer).width
        if extent <= room:
            break
        current = t.get_text().split("\n")
        longest = max(len(line) for line in current)
        shorter = max(1, int(longest * room / extent))
        wrapped = [w for line in lines for w in _wrap(line, shorter)]
        if max(len(w) for w in wrapped) < longest:
            t.set_text("\n".join(wrapped))
        elif t.get_fontsize() > min_fontsize:
            t.set_fontsize(max(min_fontsize, t.get_fontsize() * room / extent))
        else:
            t.set_text("\n".join(w for line in lines for w in _wrap(line, shorter, break_words=True)))
    return t


def figure(result, processed, *, title: str | None = None):
    """A Matplotlib Figure: 3 rows of central slices and the chi^2 history.

    The maps are first put in the canonical twin orientation
    (:func:`~cdi_plugins.report.orientation.canonical`).  Rows and columns
    are those of :func:`panels`; voxels outside the support (and, for strain,
    where it is undefined) are grey in the phase and strain rows.
    The bottom panel is chi^2 at every iteration of every step (log scale),
    one colour per algorithm.  The title is wrapped to fit the figure.

    Parameters
    ----------
    result : Result
        For the history, the dataset name and the source.
    processed : Processed
        From :func:`cdi_plugins.physics.postprocess.postprocess`.
    title : str, optional
    """
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    processed = canonical(processed, np.shape(result.obj))
    rows = panels(processed)
    nrows = len(rows) + 1
    fig = Figure(figsize=(12.5, 3.4 * nrows + 0.8), dpi=100, layout="constrained")
    grid = fig.add_gridspec(nrows, 3, height_ratios=[1.0] * len(rows) + [0.8])
    for r, row in enumerate(rows):
        cmap = colormaps[row["cmap"]].with_extremes(bad="0.85")
        for c, plane in enumerate(row["planes"]):
            ax = fig.add_subplot(grid[r, c])
            im = ax.imshow(plane["image"], cmap=cmap, vmin=row["limits"][0], vmax=row["limits"][1],
                           extent=plane["extent"], interpolation="nearest")
            ax.set_xlabel(f"{plane['names'][1]} ({plane['unit']})")
            ax.set_ylabel(f"{plane['names'][0]} ({plane['unit']})")
            ax.set_title(plane["title"], fontsize=10)
            if c == 2:
                fig.colorbar(im, ax=ax, label=row["label"], shrink=0.9)
    ax = fig.add_subplot(grid[-1, :])
    steps = history_by_step(result)
    if steps:
        colours = colormaps["tab10"]
        algorithms = sorted({s["algorithm"] for s in steps})
        labelled = set()
        for s in steps:
            alg = s["algorithm"]
            ax.plot(s["x"], s["chi2"], color=colours(algorithms.index(alg) % 10), lw=1.2,
                    label=None if alg in labelled else alg)
            labelled.add(alg)
        if steps[0]["chi2_free"] is not None:
            ax.plot(np.concatenate([s["x"] for s in steps]), np.concatenate([s["chi2_free"] for s in steps]),
                    color="k", lw=0.8, ls="--", label="chi² (free pixels)")
        chi = np.concatenate([s["chi2"] for s in steps])
        if np.nanmin(chi) > 0:
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=9, ncols=min(6, len(labelled) + 1))
        ax.set_xlim(0, len(chi) + 1)
    ax.set_xlabel("iteration (all steps in order)")
    ax.set_ylabel("chi²")
    ax.grid(True, which="both", alpha=0.3)
    fit_suptitle(fig, "\n".join(caption(result, processed, title)), fontsize=11)
    return fig


def write_png(path, result, processed, *, overwrite: bool = False, protect=(), title: str | None = None) -> None:
    """Draw :func:`figure` and write it as a PNG, atomically.

    Raises
    ------
    CDIError
        If the file cannot or may not be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure(result, processed, title=title)
    FigureCanvasAgg(fig)
    with atomic_path(path, overwrite=overwrite, protect=protect) as tmp:
        try:
            fig.savefig(tmp, format="png")
        except OSError as exc:
            raise CDIError(f"cannot write the picture ({exc.strerror or exc})", str(path)) from None


def iteration_times(result) -> np.ndarray:
    """Elapsed seconds at the end of each history record.

    A step's wall time is spread evenly over its iterations (per-iteration
    clocks are not recorded: reading one would cost a GPU sync per iteration).
    """
    hist = list(result.history or [])
    t = np.zeros(len(hist))
    seconds = {st["step"]: st["seconds"] for st in (result.steps or [])}
    counts: dict = {}
    for h in hist:
        counts[h.get("step")] = counts.get(h.get("step"), 0) + 1
    elapsed, seen, last_step = 0.0, 0, None
    for i, h in enumerate(hist):
        step = h.get("step")
        if step != last_step:
            if last_step is not None:
                elapsed += seconds.get(last_step, 0.0)
            last_step, seen = step, 0
        seen += 1
        t[i] = elapsed + seconds.get(step, 0.0) * seen / counts[step]
    return t


def convergence_figure(curves: dict, *, title: str = "chi^2 against time"):
    """chi^2 against wall time for several results: ``{label: Result}``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for label, result in curves.items():
        chi = np.array([h.get("chi2", np.nan) for h in result.history], dtype=float)
        ax.plot(iteration_times(result), chi, label=label, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("chi^2")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_convergence_png(path, curves: dict, *, overwrite: bool = False, protect=()) -> None:
    """Write :func:`convergence_figure` as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = convergence_figure(curves)
    FigureCanvasAgg(fig)
    with atomic_path(path, overwrite=overwrite, protect=protect) as tmp:
        try:
            fig.savefig(tmp, format="png", dpi=110)
        except OSError as exc:
            raise CDIError(f"cannot write the picture ({exc.strerror or exc})", str(path)) from None
