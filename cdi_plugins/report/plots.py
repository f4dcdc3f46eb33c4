"""Pictures of a result: central slices of amplitude, phase and strain, and the chi^2 history.

Drawn with Matplotlib's object API on an Agg canvas: no window, no pyplot
state, and the backend of a user's own session is left alone.
"""

from __future__ import annotations

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import atomic_path

__all__ = ["figure", "write_png", "convergence_figure", "write_convergence_png"]

_AXES = ((1, 2), (0, 2), (0, 1))  # the two in-plane axes of the slice through axis 0, 1, 2


def _slices(a: np.ndarray, centre) -> list[np.ndarray]:
    return [a[centre[0], :, :], a[:, centre[1], :], a[:, :, centre[2]]]


def _symmetric_limit(values: np.ndarray) -> float:
    v = np.abs(values[np.isfinite(values)])
    if v.size == 0:
        return 1.0
    lim = float(np.percentile(v, 99.5))
    return lim if lim > 0 else (float(v.max()) or 1.0)


def figure(result, processed, *, title: str | None = None):
    """A Matplotlib Figure: 3 rows of central slices and the chi^2 history.

    Rows: amplitude (relative), phase (rad), then strain (%) when known, else
    displacement (Angstrom) when a geometry is known.  Columns: the planes
    through the support's centre perpendicular to array axes 0, 1 and 2.
    Voxels outside the support (and, for strain, where it is undefined) are
    grey in the phase and strain rows.
    The bottom panel is chi^2 at every iteration of every step (log scale),
    one colour per step.

    Parameters
    ----------
    result : Result
        For the history, the dataset name and the source.
    processed : Processed
        From :func:`cdi_plugins.postprocess.postprocess`.
    title : str, optional
    """
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    sup = processed.support
    if not sup.any():
        raise CDIError("the support is empty: nothing to draw")
    centre = [int(round(c)) for c in np.argwhere(sup).mean(axis=0)]
    voxel = processed.voxel_size
    unit = "nm" if voxel is not None else "voxel"
    step = voxel if voxel is not None else (1.0, 1.0, 1.0)
    origin = processed.origin

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

    nrows = len(rows) + 1
    fig = Figure(figsize=(12.5, 3.4 * nrows + 0.8), dpi=100, layout="constrained")
    grid = fig.add_gridspec(nrows, 3, height_ratios=[1.0] * len(rows) + [0.8])
    for r, (name, data, label, cmap_name, (vmin, vmax), shown) in enumerate(rows):
        cmap = colormaps[cmap_name].with_extremes(bad="0.85")
        for c, (plane, (ax0, ax1)) in enumerate(zip(_slices(data, centre), _AXES)):
            img = plane if shown is None else np.ma.masked_where(~_slices(shown, centre)[c], plane)
            ax = fig.add_subplot(grid[r, c])
            lo0, lo1 = origin[ax0] * step[ax0], origin[ax1] * step[ax1]
            extent = (lo1, lo1 + plane.shape[1] * step[ax1], lo0 + plane.shape[0] * step[ax0], lo0)
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
            ax.set_xlabel(f"axis {ax1} ({unit})")
            ax.set_ylabel(f"axis {ax0} ({unit})")
            ax.set_title(f"{name}, plane axis {c} = {origin[c] + centre[c]}", fontsize=10)
            if c == 2:
                fig.colorbar(im, ax=ax, label=label, shrink=0.9)
    ax = fig.add_subplot(grid[-1, :])
    hist = list(result.history or [])
    if hist:
        chi = np.array([h.get("chi2", np.nan) for h in hist], dtype=np.float64)
        steps = np.array([h.get("step", 0) for h in hist])
        x = np.arange(1, len(hist) + 1)
        colours = colormaps["tab10"]
        labelled = set()
        for k, st in enumerate(dict.fromkeys(steps.tolist())):
            sel = steps == st
            alg = str(hist[int(np.flatnonzero(sel)[0])].get("algorithm", "?"))
            colour = colours(sorted(set(h.get("algorithm", "?") for h in hist)).index(alg) % 10)
            ax.plot(x[sel], chi[sel], color=colour, lw=1.2, label=None if alg in labelled else alg)
            labelled.add(alg)
        if any("chi2_free" in h for h in hist):
            free = np.array([h.get("chi2_free", np.nan) for h in hist], dtype=np.float64)
            ax.plot(x, free, color="k", lw=0.8, ls="--", label="chi² (free pixels)")
        if np.nanmin(chi) > 0:
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=9, ncols=min(6, len(labelled) + 1))
        ax.set_xlim(0, len(hist) + 1)
    ax.set_xlabel("iteration (all steps in order)")
    ax.set_ylabel("chi²")
    ax.grid(True, which="both", alpha=0.3)
    final = f"{result.chi2:.3e}" if result.chi2 is not None else "n/a"
    text = title or f"{result.dataset}: {result.metadata.get('source', '')}"
    sub = f"final chi² {final}, support {float(np.mean(result.support)):.2%} of the array"
    md = result.metadata or {}
    if md.get("averaged_runs"):
        sub += (f"; object: mean of {len(md['averaged_runs'])} runs (chi² {md['average_chi2']:.3e}), "
                "history of the best")
    if processed.geometry is not None:
        sub += "; " + processed.geometry.describe()
        if voxel is not None:
            sub += f"; voxel {' x '.join(f'{v:g}' for v in voxel)} nm"
    fig.suptitle(f"{text}\n{sub}", fontsize=11)
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
