"""What a plugin registers for a beamline (hook ``cdi_register_beamlines``).

A beamline is data plus one reader: its diffractometer written as in a recipe's
``data.diffractometer`` (circles outermost first in xrayutilities' axis
notation), its detector, and ``read_metadata(path, scan) -> dict`` that returns
what one scan recorded::

    {"energy": keV, "distance": m, "angles": {circle: degrees at frame 0}, "rocking": circle name,
     "step": degrees per frame, "frames": count, "rocking_values": [degrees per frame],
     "roi": [row0, row1, col0, col1] of the frames in the full detector, or None,
     "beam_centre": [row, column] of the full detector hit by the direct beam at zero detector angles,
                    when the file records it (a NeXus beam_center_x/y); optional,
     "pixel_size": [m along rows, m along columns] when the file records it; optional}

The direct-beam pixel used is the recipe's ``data.detector.beam_centre``, else the file's, else the
beamline's ``detector["beam_centre"]``.

The geometry itself (:mod:`cdi_plugins.physics.geometry`) validates the
diffractometer when a recipe uses the beamline.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

__all__ = ["BeamlineSpec", "BEAMLINE_NAME"]

BEAMLINE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class BeamlineSpec:
    """One beamline.

    Parameters
    ----------
    name : str
        Lower-case identifier used in recipes (``data.beamline: aps_34idc``).
    summary : str
        One line.
    diffractometer : dict
        ``sample_circles``, ``detector_circles`` (lists of ``[name, axis]``,
        outermost first), ``beam``, ``pixel_directions`` (rows, columns).
    detector : dict
        ``name``, ``pixel_size`` (m, rows and columns), ``shape`` (full
        detector, pixels), ``beam_centre`` (full-detector pixel of the direct
        beam at zero detector angles).
    read_metadata : callable
        ``read_metadata(path, scan) -> dict`` (see the module docstring);
        raises :class:`cdi_plugins.CDIError` for a file or scan it cannot read.
    """

    name: str
    summary: str
    diffractometer: dict
    detector: dict
    read_metadata: Callable
    plugin: str = ""  # filled in by the registry
