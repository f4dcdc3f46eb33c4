"""Built-in beamlines: APS 34-ID-C (SPEC file, Timepix) and a generic diffractometer described in YAML.

Registered through ``cdi_register_beamlines`` exactly as a third party's beamline would be.  The SPEC
file is read with xrayutilities' ``SPECFile`` (the library whose ``QConversion`` convention
:mod:`cdi_plugins.physics.geometry` follows, so one dependency serves both).
"""

from __future__ import annotations

import os

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


@hookimpl
def cdi_register_beamlines(register):
    register(BeamlineSpec(name="aps_34idc", summary="APS 34-ID-C: SPEC file (xrayutilities), Timepix 34idcTIM2, "
                          "55 um pixels", diffractometer=APS_34IDC_DIFFRACTOMETER, detector=TIMEPIX,
                          read_metadata=read_spec_34idc))
    register(BeamlineSpec(name="generic", summary="any diffractometer: circles, detector and angles in the recipe",
                          diffractometer={}, detector={}, read_metadata=_nothing))
