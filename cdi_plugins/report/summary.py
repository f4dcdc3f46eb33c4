"""Judge a result and write what a person looks at: numbers, a PNG, an HTML page and a VTK file.

:func:`summarize` gives the numbers that say whether a reconstruction of real
data (no truth known) can be trusted: how far chi^2 fell, how compact the
support is.  :func:`report` post-processes a result
(:func:`cdi_plugins.physics.postprocess.postprocess`), puts it in the canonical twin
orientation (:func:`cdi_plugins.report.orientation.canonical`, so that all
its files show the same crystal) and writes the picture
(:func:`cdi_plugins.report.plots.write_png`), the self-contained HTML page with a 3-D
view (:func:`cdi_plugins.report.html.write_html`) and the ``.vti`` file
(:func:`cdi_plugins.io.write_vti`).  :func:`compare` measures how well two
reconstructions of the same data agree.
"""

from __future__ import annotations

import math

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.compute.metrics import agreement, support_stats
from cdi_plugins.physics.postprocess import POSTPROCESS, Geometry, Processed, postprocess
from cdi_plugins.report.orientation import canonical

__all__ = ["summarize", "report", "compare", "format_summary"]


def summarize(result) -> dict:
    """Convergence and compactness of a result.

    Returns
    -------
    dict
        ``chi2_start``, ``chi2_end`` (first and last history record),
        ``chi2_ratio`` (end / start), ``iterations``, and the
        :func:`~cdi_plugins.compute.metrics.support_stats` of the support
        (``support_fraction``, ``components``, ``largest``).
    """
    hist = list(result.history or [])
    start = float(hist[0]["chi2"]) if hist and "chi2" in hist[0] else math.nan
    end = float(hist[-1]["chi2"]) if hist and "chi2" in hist[-1] else math.nan
    st = support_stats(result.support)
    return {"chi2_start": start, "chi2_end": end,
            "chi2_ratio": end / start if start and math.isfinite(start) else math.nan,
            "iterations": len(hist), "support_fraction": st["fraction"], "components": st["components"],
            "largest": st["largest"]}


def format_summary(result, summary: dict | None = None) -> str:
    """One line: chi^2 start -> end, support fraction and components, averaging, oversampling estimate."""
    s = summary or summarize(result)
    line = (f"chi2 {s['chi2_start']:.3e} -> {s['chi2_end']:.3e} (x{s['chi2_ratio']:.2g}) in "
            f"{s['iterations']} iterations; support {s['support_fraction']:.2%} of the array, "
            f"{s['components']} connected component{'s' if s['components'] != 1 else ''}")
    md = result.metadata or {}
    if md.get("averaged_runs"):
        line += f"; object = mean of {len(md['averaged_runs'])} runs (chi2 {md['average_chi2']:.3e})"
    os_ = md.get("oversampling_estimate")
    if os_:
        line += f"; oversampling estimate {', '.join(f'{v:.2f}' for v in os_)}"
    return line


def _geometry(result, geometry) -> Geometry | None:
    if isinstance(geometry, Geometry):
        return geometry
    if geometry is None:
        geometry = (result.metadata or {}).get("geometry")
    if geometry is None:
        return None
    return Geometry.from_dict(geometry)


def report(result, *, png=None, vti=None, html=None, geometry=None, options: dict | None = None,
           overwrite: bool = False, protect=(), title: str | None = None, lab: dict | None = None,
           vts=None) -> Processed:
    """Post-process *result* and write a PNG, an HTML page and/or a VTK image file.

    Parameters
    ----------
    result : Result
    png, vti, html : str or os.PathLike, optional
        Where to write the picture, the ``.vti`` file and the self-contained
        ``.html`` report (each atomically).
    geometry : Geometry or dict, optional
        Default: the geometry stored with the result (a recipe's ``geometry:``).
    options : dict, optional
        :data:`~cdi_plugins.physics.postprocess.POSTPROCESS` options (``remove_ramp``,
        ``centre``, ``zero_phase``, ``unwrap``, ``crop``, ``margin``); default:
        those stored with the result, else the defaults.
    overwrite : bool
    protect : iterable of paths
        Input files never to overwrite.
    title : str, optional
        Title of the picture and of the page.
    vts : str or os.PathLike, optional
        For a result of a raw scan: amplitude, phase and support on the skewed grid it was reconstructed on,
        every voxel at its lab position ``T (n - N/2)`` nm (a VTK StructuredGrid), the twin as in the other
        files.
    lab : dict, optional
        For a result of a raw scan (``metadata['scan_geometry']``): ``frame`` (``lab``, ``crystal`` or
        ``detector``), ``q_axis`` (crystal frame: Q along x, y or z) and ``spacing`` (nm), over the
        recipe's ``data.lab``.

    Returns
    -------
    Processed
        The maps that were drawn and written, in the canonical twin
        orientation (``info['twin']`` says whether they were flipped; the
        ``.vti`` origin is then in the frame of the twin).

    Raises
    ------
    CDIError
        For an invalid geometry or option, an empty support, or an output that
        cannot be written.
    """
    geo = _geometry(result, geometry)
    opts = dict((result.metadata or {}).get("postprocess") or {}) if options is None else dict(options)
    opts = POSTPROCESS.validate(opts, lambda key=None: f"postprocess.{key}" if key else "postprocess")
    grid_origin = (0.0, 0.0, 0.0)
    scan = (result.metadata or {}).get("scan_geometry")
    if (lab or vts is not None) and scan is None:
        raise CDIError("this result carries no scan geometry: it cannot be put in the lab or crystal frame")
    lab = {**((scan or {}).get("lab") or {}), **(lab or {})}
    if scan is not None and lab.get("frame", "lab") != "detector":
        # a raw scan with its geometry: the maps on an orthogonal grid in nm, strain along the true Q
        from cdi_plugins.physics.scan import lab_maps, measured_geometry
        maps = lab_maps(result.obj, result.support, scan, spacing=lab.get("spacing"), frame=lab.get("frame", "lab"),
                        q_axis=lab.get("q_axis", 2))
        geo = measured_geometry(maps, None if geo is None else geo.hkl, scan["scan"]["energy_keV"])
        opts["centre"] = False          # the orthogonal grid is not periodic
        grid_origin = tuple(maps["origin"])
        processed = canonical(postprocess(maps["object"], maps["support"], geo, **opts), maps["object"].shape)
        processed.info["frame"] = maps["frame"]
        processed.info["grid_origin_nm"] = list(grid_origin)
    else:
        processed = canonical(postprocess(result.obj, result.support, geo, **opts), np.shape(result.obj))
    if png is not None:
        from cdi_plugins.report.plots import write_png
        write_png(png, result, processed, overwrite=overwrite, protect=protect, title=title)
    if html is not None:
        from cdi_plugins.report.html import write_html
        write_html(html, result, processed, overwrite=overwrite, protect=protect, title=title)
    if vti is not None:
        from cdi_plugins.io import write_vti
        spacing = processed.voxel_size or (1.0, 1.0, 1.0)
        origin = [g + o * d for g, o, d in zip(grid_origin, processed.origin, spacing)]
        write_vti(vti, processed.arrays(), spacing=spacing, origin=origin, overwrite=overwrite, protect=protect)
    if vts is not None:
        _write_skewed(vts, result, scan, opts, processed.info.get("twin"), overwrite=overwrite, protect=protect)
    return processed


def _write_skewed(path, result, scan: dict, opts: dict, twin, *, overwrite: bool, protect) -> None:
    """The reconstruction on its own (skewed) grid, each voxel at ``T (n - N/2)`` nm in the lab."""
    from cdi_plugins.io.vtk import write_vts
    from cdi_plugins.report.orientation import FLIPPED

    o, s = np.asarray(result.obj), np.asarray(result.support, dtype=bool)
    if twin == FLIPPED:     # conj(rho(-r)): index n - N/2 -> N/2 - n
        o = np.conj(np.roll(o[::-1, ::-1, ::-1], 1, axis=(0, 1, 2)))
        s = np.roll(s[::-1, ::-1, ::-1], 1, axis=(0, 1, 2))
    pp = postprocess(o, s, None, **{**opts, "centre": False})
    t = np.asarray(scan["T_nm"], dtype=np.float64)
    n = np.stack(np.meshgrid(*[np.arange(k) + pp.origin[i] - o.shape[i] // 2 for i, k in
                               enumerate(pp.amplitude.shape)], indexing="ij"), axis=-1)
    write_vts(path, {"amplitude": pp.amplitude, "phase": pp.phase, "support": pp.support}, n @ t.T,
              overwrite=overwrite, protect=protect)


def compare(a, b) -> dict:
    """How well two results (or objects) of the same data agree.

    Parameters
    ----------
    a, b : Result or ndarray
        Reconstructions of the same shape; *a* is aligned onto *b*.

    Returns
    -------
    dict
        :func:`~cdi_plugins.compute.metrics.agreement` (``difference``, ``twin``,
        ``shift``, ``phase``).

    Raises
    ------
    CDIError
        On a shape mismatch.
    """
    oa = getattr(a, "obj", a)
    ob = getattr(b, "obj", b)
    if np.shape(oa) != np.shape(ob):
        raise CDIError(f"the two reconstructions have different shapes {np.shape(oa)} and {np.shape(ob)}")
    return agreement(oa, ob)
