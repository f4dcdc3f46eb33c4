"""Built-in beamlines: APS 34-ID-C (SPEC file, Timepix), a NeXus/HDF5 metadata reader and a generic
diffractometer described in YAML.

Registered through ``cdi_register_beamlines`` exactly as a third party's beamline would be.  The SPEC
file is read with xrayutilities' ``SPECFile`` (the library whose ``QConversion`` convention
:mod:`cdi_plugins.physics.geometry` follows, so one dependency serves both); NeXus files with h5py.
"""

from __future__ import annotations

import os
import re

from cdi_plugins.core import CDIError, hookimpl
from cdi_plugins.core.beamline import BeamlineSpec

# cohere's 34-ID-C definition (cohere-ui before the beamlines left it, beamlines/aps_34idc/diffractometers.py and
# detectors.py): sample axes y+, z-, y+, detector axes y+, x-, beam z+, Timepix pixelorientation ('x+', 'y-').
# cohere reads a TIFF transposed (cohere_core read_tif: imread(...).transpose()), so its 'x+' is the TIFF's X, the
# areaDetector's fast axis: the columns of a frame as this package reads it (not transposed), and 'y-' its rows.
# The #UIMR5 ROI (minX sizeX minY sizeY) follows the same rule: X cuts the columns (_uimr5_roi).
APS_34IDC_DIFFRACTOMETER = {
    "name": "34idc",
    "sample_circles": [["Theta", "y+"], ["Chi", "z-"], ["Phi", "y+"]],
    "detector_circles": [["Delta", "y+"], ["Gamma", "x-"]],
    "beam": "z+",
    "pixel_directions": ["y-", "x+"],      # rows, columns of the frames as read (cohere's axes 1 and 0)
}
# The SPEC file does not record the direct-beam pixel and cohere has none (its B is taken a frame's size away from
# the arm's axis): the default is the chip's geometric centre, the pixel on the detector arm's axis when the
# Timepix is mounted centred.  A recipe that knows better sets data.detector.beam_centre.
TIMEPIX = {"name": "34idcTIM2", "pixel_size": [55e-6, 55e-6], "shape": [512, 512], "beam_centre": [255.5, 255.5]}
_MOTORS = ("Delta", "Theta", "Chi", "Phi", "Gamma", "camdist", "Energy")


def _uimr5_roi(header) -> list | None:
    """``#UIMR5 minX sizeX minY sizeY ...`` (areaDetector: X = columns) -> [row0, row1, col0, col1]."""
    for line in header:
        parts = line.split()
        if parts and parts[0] == "#UIMR5" and len(parts) >= 5:
            min_x, size_x, min_y, size_y = (int(float(v)) for v in parts[1:5])
            return [min_y, min_y + size_y, min_x, min_x + size_x]
    return None


def read_spec_34idc(path, scan) -> dict:
    """What scan *scan* of the SPEC file *path* recorded: energy, distance, angles, rocking motor and step."""
    import xrayutilities as xu
    from xrayutilities.io.spec import SPECFile

    xu.config.VERBOSITY = 0
    if not os.path.isfile(path):
        raise CDIError(f"SPEC file not found: {path}")
    if scan is None:
        raise CDIError(f"{path}: give data.scan, the number of the rocking scan in this SPEC file")
    try:
        sf = SPECFile(os.path.basename(path), path=os.path.dirname(os.path.abspath(path)))
    except Exception as exc:  # noqa: BLE001 - a malformed file is the user's
        raise CDIError(f"{path}: not a readable SPEC file ({exc.__class__.__name__}: {exc})") from None
    found = [s for s in sf.scan_list if s.nr == int(scan)]
    if not found:
        nrs = [s.nr for s in sf.scan_list]
        span = f"{min(nrs)}-{max(nrs)}" if nrs else "none"
        raise CDIError(f"{path}: no scan {scan} (scans {span})")
    s = found[-1]
    s.ReadData()
    pos = {k[len("INIT_MOPO_"):]: float(v) for k, v in s.init_motor_pos.items()}
    missing = [m for m in _MOTORS if m not in pos]
    if missing:
        raise CDIError(f"{path}: scan {scan} has no position for motor(s) {', '.join(missing)}")
    names = list(s.data.dtype.names or ())
    if not names or names[0] not in ("Theta", "Chi", "Phi"):
        raise CDIError(f"{path}: scan {scan} ({s.command.strip()}) does not rock a sample circle "
                       f"(first column {names[0] if names else 'none'})")
    rocking = names[0]
    values = [float(v) for v in s.data[rocking]]
    if len(values) < 2:
        raise CDIError(f"{path}: scan {scan} has {len(values)} point(s): not a rocking scan")
    angles = {m: pos[m] for m in ("Delta", "Theta", "Chi", "Phi", "Gamma")}
    angles[rocking] = values[0]
    return {"energy": pos["Energy"], "distance": pos["camdist"] / 1000.0, "angles": angles, "rocking": rocking,
            "step": (values[-1] - values[0]) / (len(values) - 1), "frames": len(values),
            "rocking_values": values, "roi": _uimr5_roi(s.header), "command": s.command.strip()}


def _nothing(path, scan) -> dict:
    return {}


# ---------------------------------------------------------------------------------------------------------
# NeXus (HDF5) metadata: NXmx-style names, the diffractometer in the recipe (data.diffractometer) whose circle
# names are those of the file's positioners.

_ENERGY_UNITS = {"kev": 1.0, "ev": 1e-3}
_LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "micron": 1e-6, "microns": 1e-6, "cm": 1e-2}
_WAVELENGTH_UNITS = {"angstrom": 1.0, "a": 1.0, "\u00e5": 1.0, "nm": 10.0}   # -> angstrom (units are lower-cased)
_HC_KEV_ANGSTROM = 12.398419843320026


def _units(ds, table, default, path, what):
    u = ds.attrs.get("units", default)
    u = u.decode() if isinstance(u, bytes) else str(u)
    key = u.strip().lower().replace("\u00b5", "u")
    if key not in table:
        raise CDIError(f"{path}: {ds.name} ({what}) has units '{u}'; expected one of {', '.join(table)}")
    return table[key]


def _nx_class(obj) -> str:
    c = obj.attrs.get("NX_class", b"")
    return c.decode() if isinstance(c, bytes) else str(c)


def _nx_entry(f, path, scan):
    """The NXentry of scan *scan* (its name holds the number: entry54, scan_54, 54.1), or the only one."""
    entries = [k for k in f if _nx_class(f[k]) == "NXentry"] or [k for k in f if k.startswith("entry")]
    if not entries:
        raise CDIError(f"{path}: no NXentry group (not a NeXus file?)")
    if scan is None:
        if len(entries) > 1:
            raise CDIError(f"{path}: {len(entries)} entries ({', '.join(entries[:6])}); give data.scan")
        return f[entries[0]]
    for k in entries:
        nums = re.findall(r"\d+", k)
        if nums and int(nums[0]) == int(scan):
            return f[k]
    if len(entries) == 1 and "scan" in f[entries[0]].attrs and int(f[entries[0]].attrs["scan"]) == int(scan):
        return f[entries[0]]
    raise CDIError(f"{path}: no entry for scan {scan} (entries: {', '.join(entries[:6])})")


def _groups(group, nx_class):
    return [group[k] for k in group if hasattr(group[k], "attrs") and _nx_class(group[k]) == nx_class]


def _first(entry, candidates):
    for c in candidates:
        if c in entry:
            return entry[c]
    return None


def _positioners(entry) -> dict:
    """Circle name -> angles (deg, one per frame or one value) from NXtransformations and NXpositioner groups."""
    import numpy as np

    found = {}

    def add(name, ds):
        units = ds.attrs.get("units", "deg")
        units = units.decode() if isinstance(units, bytes) else str(units)
        vals = np.atleast_1d(np.asarray(ds[()], dtype=np.float64))
        if units.lower() in ("rad", "radian", "radians"):
            vals = np.degrees(vals)
        elif units.lower() not in ("deg", "degree", "degrees"):
            return
        found[name] = vals

    def walk(group):
        for k in group:
            obj = group[k]
            cls = _nx_class(obj)
            if cls == "NXtransformations":
                for name in obj:
                    if not hasattr(obj[name], "shape"):
                        continue
                    t = obj[name].attrs.get("transformation_type", b"rotation")
                    if (t.decode() if isinstance(t, bytes) else str(t)) == "rotation":
                        add(name, obj[name])
            elif cls == "NXpositioner" and "value" in obj:
                add(k, obj["value"])
            elif hasattr(obj, "keys") and cls in ("NXinstrument", "NXsample", "NXdetector", "NXentry", ""):
                walk(obj)

    walk(entry)
    return found


def read_nexus(path, scan) -> dict:
    """What a NeXus (HDF5) file records for one rocking scan.

    Energy: ``instrument/monochromator/energy`` or ``instrument/beam/incident_energy`` (keV or eV) or
    ``incident_wavelength`` (angstrom); distance: the NXdetector's ``distance`` (m or mm); the direct-beam
    pixel: its ``beam_center_y``/``beam_center_x`` (pixels: y the rows, x the columns); pixel size:
    ``y_pixel_size``/``x_pixel_size``; angles: every rotation in an NXtransformations group and every
    NXpositioner ``value`` under the entry; the rocking circle is the one whose values change, its step the
    mean change per frame.
    """
    import h5py
    import numpy as np

    if not os.path.isfile(path):
        raise CDIError(f"NeXus file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CDIError(f"{path}: not a readable HDF5/NeXus file ({exc})") from None
    with f:
        entry = _nx_entry(f, path, scan)
        inst = _first(entry, ["instrument"]) or entry
        out: dict = {}
        ds = _first(inst, ["monochromator/energy", "beam/incident_energy"])
        if ds is not None:
            out["energy"] = float(np.mean(ds[()])) * _units(ds, _ENERGY_UNITS, "keV", path, "energy")
        else:
            ds = _first(inst, ["beam/incident_wavelength", "monochromator/wavelength"])
            if ds is not None:
                lam = float(np.mean(ds[()])) * _units(ds, _WAVELENGTH_UNITS, "angstrom", path, "wavelength")
                out["energy"] = _HC_KEV_ANGSTROM / lam
        dets = _groups(inst, "NXdetector") or ([inst["detector"]] if "detector" in inst else [])
        if dets:
            det = dets[0]
            if "distance" in det:
                out["distance"] = float(np.mean(det["distance"][()])) * _units(
                    det["distance"], _LENGTH_UNITS, "m", path, "distance")
            sizes = [det[k] for k in ("y_pixel_size", "x_pixel_size") if k in det]
            if len(sizes) == 2:
                out["pixel_size"] = [float(d[()]) * _units(d, _LENGTH_UNITS, "m", path, "pixel size") for d in sizes]
            centre = [det[k] for k in ("beam_center_y", "beam_center_x") if k in det]
            if len(centre) == 2:
                units = [str(d.attrs.get("units", "pixel")).lower() for d in centre]
                if any(u not in ("pixel", "pixels") for u in units):
                    raise CDIError(f"{path}: {det.name}/beam_center_x/y must be in pixels, got {units}")
                out["beam_centre"] = [float(centre[0][()]), float(centre[1][()])]
        angles = _positioners(entry)
        if not angles:
            raise CDIError(f"{path}: {entry.name} records no rotation angle (NXtransformations or NXpositioner)")
        moving = [k for k, v in angles.items() if v.size > 1 and np.ptp(v) > 0]
        if len(moving) > 1:
            raise CDIError(f"{path}: several circles move during the scan ({', '.join(moving)}): not a rocking scan")
        out["angles"] = {k: float(v[0]) for k, v in angles.items()}
        if moving:
            vals = angles[moving[0]]
            out.update(rocking=moving[0], step=float((vals[-1] - vals[0]) / (vals.size - 1)), frames=int(vals.size),
                       rocking_values=[float(v) for v in vals])
        out["command"] = f"NeXus {entry.name}"
        return out


@hookimpl
def cdi_register_beamlines(register):
    register(BeamlineSpec(name="aps_34idc", summary="APS 34-ID-C: SPEC file (xrayutilities), Timepix 34idcTIM2, "
                          "55 um pixels", diffractometer=APS_34IDC_DIFFRACTOMETER, detector=TIMEPIX,
                          read_metadata=read_spec_34idc))
    register(BeamlineSpec(name="nexus", summary="any diffractometer (data.diffractometer) with energy, distance, "
                          "pixel size, beam centre and angles from a NeXus/HDF5 file (data.spec)",
                          diffractometer={}, detector={}, read_metadata=read_nexus))
    register(BeamlineSpec(name="generic", summary="any diffractometer: circles, detector and angles in the recipe",
                          diffractometer={}, detector={}, read_metadata=_nothing))
