"""File input and output: read diffraction patterns, write and read results.

All user-caused failures are raised as :class:`~cdi_plugins.errors.CDIError`
located at the file name.
"""

from cdi_plugins.io.atomic import atomic_path, check_writable
from cdi_plugins.io.cxi import load_cxi, write_cxi
from cdi_plugins.io.readers import SUPPORTED_EXTENSIONS, read_array, read_header, read_intensity, tiff_frames
from cdi_plugins.io.vtk import read_vti, write_vti

__all__ = ["read_array", "read_header", "read_intensity", "tiff_frames", "write_cxi", "load_cxi", "write_vti", "read_vti",
           "atomic_path", "check_writable", "SUPPORTED_EXTENSIONS"]
