"""A self-contained HTML report of a result: a 3-D crystal to turn with the mouse, no ParaView needed.

:func:`write_html` writes ONE ``.html`` file that any browser opens offline
(nothing is fetched: the JavaScript library is inside the file).  It shows

* the crystal as a rotatable 3-D **isosurface** of the amplitude, coloured by
  the phase (rad) or, when the geometry gives a strain, by the strain along Q
  (%), with a colour bar;
* the three **central slices** (amplitude, phase, and strain or displacement
  when known): the same panels as the PNG (:func:`cdi_plugins.report.plots.panels`),
  with the value under the mouse;
* the **chi^2 history**, log scale, one colour per step;
* a **table** of what the result is: dataset, source, shape, steps with their
  algorithms and iterations, final chi^2, runs, seed, voxel size, geometry,
  twin orientation.

As in the PNG, the maps are first put in the canonical twin orientation
(:func:`cdi_plugins.report.orientation.canonical`), and the caption says
whether the object was flipped.

Libraries
---------
**plotly** draws it: a well-kept, widely used library whose
``Figure.to_html`` writes figures for a page that holds plotly.js itself
(``plotly.offline.get_plotlyjs()``, about 4.8 MB, MIT licence), with WebGL
3-D meshes that turn, zoom and show values under the mouse; numeric arrays
go in as base64 binary, so a mesh costs about 21 bytes per vertex and 16 per
triangle.  **scikit-image** extracts the surface
(``skimage.measure.marching_cubes``, Lewiner's method).  plotly's own
``go.Isosurface`` was not used: it computes the surface in the browser and can
only colour it by the amplitude itself, not by the phase or strain, and it
needs the whole volume in the file (four float arrays of the cropped box).

The surface
-----------
The amplitude (relative, 0 outside the support) is contoured at
:data:`ISO_LEVEL` = 0.3 of its maximum: inside the crystal the amplitude is
close to 1, so the surface sits about where the density has fallen to a third
across the surface's one-voxel ramp.  To keep the file small the surface is
extracted on a grid of at most :data:`MESH_MAX_EDGE` = 96 points along the
longest edge of the cropped box (``marching_cubes(step_size=...)``: every
voxel up to a 96-voxel box, every 2nd up to 192, ...), so a mesh has at most
~3 x 10^4 vertices (~1.5 MB).  Measured: a 64^3 result (crystal ~30 voxels
wide) gives ~2.8 x 10^3 vertices and a 5.1 MB file; the 128^3 simulated
crystal (box 65 voxels) ~1.2 x 10^4 vertices and 5.8 MB; plotly.js is 4.8 MB
of that.  The colour of a vertex is the phase (or
strain) interpolated linearly there, from the map extended outside the support
by its nearest inside value (the surface lies between inside and outside
voxels).
"""

from __future__ import annotations

import html as _html
import math

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import atomic_path
from cdi_plugins.report.orientation import canonical
from cdi_plugins.report.plots import axis_names, caption, grid_origin, history_by_step, panels

__all__ = ["write_html", "page", "surface", "figures", "ISO_LEVEL", "MESH_MAX_EDGE"]

ISO_LEVEL = 0.3       # fraction of the maximum amplitude where the surface is drawn
MESH_MAX_EDGE = 96    # grid points along the longest edge of the cropped box for the surface


def _colorscale(name: str, n: int = 17) -> list:
    """A Matplotlib colour map as a plotly colour scale (the PNG's colours)."""
    from matplotlib import colormaps

    cmap = colormaps[name]
    return [[float(t), "rgb({},{},{})".format(*(int(round(255 * v)) for v in cmap(float(t))[:3]))]
            for t in np.linspace(0.0, 1.0, n)]


def _colour_row(rows: list[dict]) -> dict:
    """The row that colours the surface: strain when known, else phase."""
    by_name = {r["name"]: r for r in rows}
    return by_name.get("strain", by_name["phase"])


def surface(processed, *, level: float = ISO_LEVEL, max_edge: int = MESH_MAX_EDGE) -> dict:
    """The isosurface of the amplitude, coloured by strain (%) when known, else phase (rad).

    Parameters
    ----------
    processed : Processed
        Maps as drawn (already in the canonical orientation when wanted).
    level : float
        Fraction of the maximum amplitude.
    max_edge : int
        At most this many grid points along the longest edge of the box.

    Returns
    -------
    dict
        ``vertices`` (n, 3) float32 in nm (voxel size known) or voxels, in the
        frame of the uncropped array (axis order 0, 1, 2); ``faces`` (m, 3)
        int32; ``values`` (n,) float32; ``name`` (``"phase"`` or ``"strain"``),
        ``label`` (with units), ``cmap``, ``limits``, ``level``, ``step``
        (voxels between grid points).

    Raises
    ------
    CDIError
        If the amplitude never reaches *level* inside the support.
    """
    from scipy import ndimage
    from skimage.measure import marching_cubes

    row = _colour_row(panels(processed))
    if row["name"] == "strain":
        values = processed.strain * 100.0
        valid = processed.strain_valid if processed.strain_valid is not None else processed.support
    else:
        values, valid = processed.phase, processed.support
    amp = np.where(processed.support, processed.amplitude, 0.0).astype(np.float32)
    peak = float(amp.max())
    if not peak > 0 or not valid.any():
        raise CDIError("the support is empty: nothing to draw")
    # one empty voxel around the box closes the surface where the support touches the box
    vol = np.pad(amp / peak, 1)
    step = max(1, math.ceil(max(amp.shape) / max_edge))
    try:
        verts, faces, _, _ = marching_cubes(vol, level=level, step_size=step, allow_degenerate=False)
    except (ValueError, RuntimeError) as exc:
        raise CDIError(f"no isosurface at {level:g} of the maximum amplitude ({exc})") from None
    idx = verts - 1.0                                          # back to the box's voxel indices
    nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    filled = values[tuple(nearest)]
    colour = ndimage.map_coordinates(filled.astype(np.float64), idx.T, order=1, mode="nearest")
    spacing = np.asarray(processed.voxel_size or (1.0, 1.0, 1.0), dtype=np.float64)
    xyz = (idx + np.asarray(processed.origin, dtype=np.float64)) * spacing + np.asarray(grid_origin(processed))
    return {"vertices": xyz.astype(np.float32), "faces": faces.astype(np.int32),
            "values": colour.astype(np.float32), "name": row["name"], "label": row["label"],
            "cmap": row["cmap"], "limits": row["limits"], "level": level, "step": step,
            "names": axis_names(processed)}


def _surface_figure(surf: dict, unit: str):
    import plotly.graph_objects as go

    v, f = surf["vertices"], surf["faces"]
    n = surf.get("names") or ("axis 0", "axis 1", "axis 2")
    units = "%" if surf["name"] == "strain" else "rad"
    mesh = go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                     intensity=surf["values"], colorscale=_colorscale(surf["cmap"]),
                     cmin=surf["limits"][0], cmax=surf["limits"][1],
                     colorbar={"title": {"text": surf["label"]}},
                     lighting={"ambient": 0.55, "diffuse": 0.8, "specular": 0.15, "roughness": 0.6},
                     flatshading=False, name="crystal",
                     hovertemplate=(f"{n[0]} %{{x:.1f}} {unit}<br>{n[1]} %{{y:.1f}} {unit}<br>"
                                    f"{n[2]} %{{z:.1f}} {unit}<br>{surf['name']} %{{intensity:.3g}} {units}"
                                    "<extra></extra>"))
    fig = go.Figure(mesh)
    fig.update_layout(template="plotly_white", margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      title={"text": f"isosurface at {surf['level']:g} of the maximum amplitude, coloured by "
                                     f"{surf['name']}", "font": {"size": 13}},
                      scene={"aspectmode": "data",
                             "xaxis": {"title": {"text": f"{n[0]} ({unit})"}},
                             "yaxis": {"title": {"text": f"{n[1]} ({unit})"}},
                             "zaxis": {"title": {"text": f"{n[2]} ({unit})"}}})
    return fig


def _slices_figure(rows: list[dict]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(rows)
    fig = make_subplots(rows=n, cols=3, subplot_titles=[p["title"] for r in rows for p in r["planes"]],
                        horizontal_spacing=0.08, vertical_spacing=0.3 / n)
    for r, row in enumerate(rows):
        axis = f"coloraxis{r + 1 if r else ''}"
        top, bottom = 1 - r / n, 1 - (r + 1) / n
        fig.update_layout({axis: {"colorscale": _colorscale(row["cmap"]), "cmin": row["limits"][0],
                                  "cmax": row["limits"][1],
                                  "colorbar": {"title": {"text": row["label"], "side": "right"},
                                               "y": (top + bottom) / 2, "len": 0.85 / n, "x": 1.02}}})
        for c, plane in enumerate(row["planes"]):
            img = plane["image"]
            left, right, bottom_, top_ = plane["extent"]
            dx, dy = (right - left) / img.shape[1], (bottom_ - top_) / img.shape[0]
            unit = plane["unit"]
            a0, a1 = plane["names"]
            fig.add_trace(go.Heatmap(z=np.ma.filled(img.astype(np.float32), np.nan), x0=left + dx / 2, dx=dx,
                                     y0=top_ + dy / 2, dy=dy, coloraxis=axis, hoverongaps=False,
                                     hovertemplate=(f"{a1} %{{x:.1f}} {unit}<br>{a0} %{{y:.1f}} {unit}"
                                                    f"<br>{row['label']}: %{{z:.3g}}<extra></extra>")),
                          row=r + 1, col=c + 1)
            k = 3 * r + c + 1
            fig.update_xaxes(title_text=f"{a1} ({unit})", row=r + 1, col=c + 1, showgrid=False,
                             constrain="domain")
            fig.update_yaxes(title_text=f"{a0} ({unit})", row=r + 1, col=c + 1, showgrid=False,
                             autorange="reversed", scaleanchor=f"x{k if k > 1 else ''}", constrain="domain")
    fig.update_layout(template="plotly_white", plot_bgcolor="rgb(217,217,217)",
                      margin={"l": 60, "r": 20, "t": 40, "b": 40})
    return fig


def _history_figure(result):
    import plotly.graph_objects as go

    fig = go.Figure()
    steps = history_by_step(result)
    for s in steps:
        fig.add_trace(go.Scatter(x=s["x"], y=s["chi2"], mode="lines", name=f"step {s['step']}: {s['algorithm']}",
                                 hovertemplate="iteration %{x}<br>chi² %{y:.4g}<extra>" + s["algorithm"]
                                 + "</extra>"))
    if steps and steps[0]["chi2_free"] is not None:
        fig.add_trace(go.Scatter(x=np.concatenate([s["x"] for s in steps]),
                                 y=np.concatenate([s["chi2_free"] for s in steps]), mode="lines",
                                 name="chi² (free pixels)", line={"color": "black", "dash": "dash", "width": 1}))
    chi = np.concatenate([s["chi2"] for s in steps]) if steps else np.array([])
    log = chi.size > 0 and np.nanmin(chi) > 0
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 40, "b": 40},
                      title={"text": "chi² history, one colour per step", "font": {"size": 13}},
                      xaxis={"title": {"text": "iteration (all steps in order)"}},
                      yaxis={"title": {"text": "chi²"}, "type": "log" if log else "linear"})
    return fig


def figures(result, processed) -> dict:
    """The plotly figures of the page: ``surface``, ``slices``, ``history``, and ``processed``
    (the maps drawn, in the canonical twin orientation) and ``mesh`` (:func:`surface`)."""
    processed = canonical(processed, np.shape(result.obj))
    rows = panels(processed)
    mesh = surface(processed)
    unit = "nm" if processed.voxel_size is not None else "voxel"
    return {"surface": _surface_figure(mesh, unit), "slices": _slices_figure(rows),
            "history": _history_figure(result), "processed": processed, "mesh": mesh, "rows": len(rows)}


def _facts(result, processed, mesh: dict) -> list[tuple[str, str]]:
    md = result.metadata or {}
    steps = history_by_step(result)
    facts = [("dataset", str(result.dataset)), ("source", str(md.get("source", "unknown"))),
             ("array shape", " x ".join(map(str, np.shape(result.obj)))),
             ("maps (cropped)", " x ".join(map(str, processed.amplitude.shape))
              + f" from index {tuple(int(o) for o in processed.origin)}")]
    if steps:
        facts.append(("steps", "<br>".join(
            _html.escape(f"{s['step']}. {s['algorithm']}: {len(s['x'])} iterations, final chi² {s['chi2'][-1]:.3e}")
            for s in steps)))
    facts.append(("final chi²", f"{result.chi2:.4e}" if result.chi2 is not None else "n/a"))
    runs = md.get("runs", 1)
    runs_text = str(runs)
    if md.get("averaged_runs"):
        runs_text += (f"; object = mean of runs {', '.join(map(str, md['averaged_runs']))} "
                      f"(chi² {md['average_chi2']:.3e}); history of the best")
    elif md.get("best_run"):
        runs_text += f"; best: run {md['best_run']}"
    facts += [("runs", runs_text), ("seed (random start)", str(md.get("seed", "n/a")))]
    voxel = processed.voxel_size
    facts.append(("voxel size", " x ".join(f"{v:g}" for v in voxel) + " nm" if voxel is not None
                  else "unknown: lengths in voxels"))
    facts.append(("geometry", processed.geometry.describe() if processed.geometry is not None
                  else "none: no displacement or strain"))
    info = processed.info or {}
    orient = info.get("twin", "")
    if info.get("twin_rule") and info["twin_rule"] != "none":
        orient += f" (rule: {info['twin_rule']})"
    facts.append(("twin", orient))
    facts.append(("surface", f"amplitude = {mesh['level']:g} of its maximum, {len(mesh['vertices'])} vertices, "
                             f"{len(mesh['faces'])} triangles, every {mesh['step']} voxel(s); colour: "
                             f"{mesh['label']}"))
    if info.get("note"):
        facts.append(("note", str(info["note"])))
    if result.versions.get("cdi-plugins"):
        facts.append(("cdi-plugins", str(result.versions["cdi-plugins"])))
    return [(k, v if k == "steps" else _html.escape(v)) for k, v in facts]


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
p.caption { margin: 0 0 12px 0; color: #444; font-size: 14px; }
.top { display: grid; grid-template-columns: minmax(0, 2fr) minmax(300px, 1fr); gap: 16px; align-items: start; }
.surface { height: 620px; min-width: 0; }
table { border-collapse: collapse; font-size: 13px; overflow-wrap: anywhere; }
th, td { text-align: left; vertical-align: top; padding: 3px 8px; border-bottom: 1px solid #ddd; }
th { white-space: nowrap; color: #555; font-weight: 600; }
h2 { font-size: 16px; margin: 20px 0 4px 0; }
"""


def page(result, processed, *, title: str | None = None) -> str:
    """The HTML text of the report (see the module docstring)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    figs = figures(result, processed)
    shown = figs["processed"]
    head, line = caption(result, shown, title)
    config = {"displaylogo": False, "responsive": True}

    def div(name: str, height: str) -> str:
        return pio.to_html(figs[name], include_plotlyjs=False, full_html=False, config=config,
                           div_id=name, default_width="100%", default_height=height)

    rows = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _facts(result, shown, figs["mesh"]))
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_html.escape(head)}</title>\n<style>{_STYLE}</style>\n"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head>\n<body>\n"
            f"<h1>{_html.escape(head)}</h1>\n<p class=\"caption\">{_html.escape(line)}</p>\n"
            f"<div class=\"top\">\n<div class=\"surface\">{div('surface', '620px')}</div>\n"
            f"<table>\n{rows}\n</table>\n</div>\n"
            f"<h2>Central slices</h2>\n{div('slices', str(330 * figs['rows']) + 'px')}\n"
            f"<h2>Convergence</h2>\n{div('history', '360px')}\n</body>\n</html>\n")


def write_html(path, result, processed, *, overwrite: bool = False, protect=(), title: str | None = None) -> None:
    """Write :func:`page` as one self-contained ``.html`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    result : Result
    processed : Processed
        From :func:`cdi_plugins.physics.postprocess.postprocess`.
    overwrite : bool
        Whether an existing *path* may be replaced.
    protect : iterable of paths
        Input files never to overwrite.
    title : str, optional
        Default: the dataset name and the data's source.

    Raises
    ------
    CDIError
        If the file cannot or may not be written, or there is nothing to draw.
    """
    text = page(result, processed, title=title)
    with atomic_path(path, overwrite=overwrite, protect=protect) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CDIError(f"cannot write the HTML report ({exc.strerror or exc})", str(path)) from None
