"""The skeptic's forward model: a crystal placed in the lab, measured by a rocking scan, reconstructed with a
recipe, orthogonalised, compared with the truth (shape IoU, extent per lab axis, strain along Q)."""

import os

import numpy as np
import tifffile

from cdi_plugins.physics.geometry import ScanGeometry
from cdi_plugins.physics.postprocess import Geometry, postprocess
from cdi_plugins.physics.scan import lab_maps, simulate_scan

# nm: ellipsoid semi-axes before rotation.  With 60 x 45 x 38 nm the crystal was 7-12 voxels across (10-12 nm
# voxels): after the 2-voxel erosion that keeps edge artefacts out, 58-104 voxels were left and the strain slope
# of the six-circle came out 1.25-1.49 while the true object, orthogonalised the same way, gave 1.00 (the geometry
# was right, the crystal too coarsely sampled).  At 1.5x that size (about 11-18 voxels across) both geometries give
# slopes 1.02-1.08 over seeds 1-3.
SEMI_AXES = np.array([90.0, 67.5, 57.0])
CUT = 0.45                                   # the ellipsoid cut by a plane: not centrosymmetric (twin decided)
STRAIN_GRADIENT = 4e-5                       # 1/nm: strain = a (q_hat . r), u_Q = a (q_hat . r)^2 / 2


def _rot():
    a, b = np.radians(25.0), np.radians(-35.0)
    ra = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rb = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rb @ ra


def inside(x, y, z):
    """The crystal's shape in lab nm (origin at the ellipsoid centre)."""
    r = _rot().T
    p = [r[i, 0] * x + r[i, 1] * y + r[i, 2] * z for i in range(3)]
    ell = sum((p[i] / SEMI_AXES[i]) ** 2 for i in range(3)) <= 1.0
    return ell & (p[0] <= CUT * SEMI_AXES[0])


def density_for(q0):
    q_norm = float(np.linalg.norm(q0))
    q_hat = q0 / q_norm

    def density(x, y, z):
        s = q_hat[0] * x + q_hat[1] * y + q_hat[2] * z
        return inside(x, y, z) * np.exp(1j * q_norm * STRAIN_GRADIENT * s ** 2 / 2)
    return density


def six_circle_vertical():
    """A vertical-rocking six-circle, as a user writes it in YAML (data.diffractometer)."""
    return {"name": "sixc_vertical", "sample_circles": {"Mu": "y+", "Eta": "x-", "Chi": "z+", "Phi": "x-"},
            "detector_circles": {"Nu": "y+", "Delta": "x-"}, "beam": "z+", "pixel_directions": ["y-", "x+"]}


def geometries():
    from cdi_plugins.algorithms.beamlines import APS_34IDC_DIFFRACTOMETER
    from cdi_plugins.physics.geometry import validate_diffractometer
    id34c = validate_diffractometer(APS_34IDC_DIFFRACTOMETER)     # what data.beamline: aps_34idc reads with
    six = validate_diffractometer(six_circle_vertical())
    return {
        "aps_34idc": ScanGeometry(id34c, 9.0, 0.5, (55e-6, 55e-6), (128, 128),
                                  {"Theta": 0.0, "Chi": 90.0, "Phi": -5.0, "Delta": 32.174, "Gamma": 12.6346},
                                  "Theta", 0.02),
        "sixc_vertical": ScanGeometry(six, 9.0, 0.6, (55e-6, 55e-6), (128, 128),
                                      {"Mu": 0.0, "Eta": 16.0, "Chi": 90.0, "Phi": 0.0, "Nu": 3.0, "Delta": 33.5},
                                      "Eta", -0.025),
    }


def write_scan(folder, geom, frames=64, size=256, seed=0):
    """One 256 x 256 TIFF per rocking step, named like the real 34-ID-C frames."""
    sim = simulate_scan(geom, (frames, size, size), _density(geom, frames, size),
                        photons=2e9, seed=seed, supersample=1)
    os.makedirs(folder, exist_ok=True)
    for k in range(frames):
        tifffile.imwrite(os.path.join(folder, f"Sim_S0054_{k:05d}.tif"), sim["intensity"][k].astype(np.int32))
    return sim


def _density(geom, frames, size):
    from cdi_plugins.physics.geometry import detector_matrix
    _, q0 = detector_matrix(geom, (frames // 2, size // 2, size // 2), "lab")
    return density_for(q0)


def write_spec(path, geom, frames, scan=54):
    """A SPEC file like 34-ID-C's: motor positions (#O/#P), the Timepix ROI (#UIMR5), Theta per frame."""
    a = geom.angles
    lines = ["#F fake.spec", "#E 1580840000", "#D Tue Feb 04 12:00:00 2020",
             "#O0 Delta  Theta  Chi  Phi  Mu  Gamma", "#O1 camdist  Energy", "",
             f"#S {scan}  ascan  th {a['Theta']:g} {a['Theta'] + geom.step * (frames - 1):g}  {frames - 1} 0.25",
             "#D Tue Feb 04 12:28:23 2020", "#T 0.25  (Seconds)",
             f"#P0 {a['Delta']} {a['Theta']} {a['Chi']} {a['Phi']} 0 {a['Gamma']}",
             f"#P1 {geom.distance * 1000:g} {geom.energy:g}", "#UIMR5  0 256 0 256 1", "#N 3", "#L Theta  Epoch  Detector"]
    lines += [f"{a['Theta'] + geom.step * k:.7f} {k} 0" for k in range(frames)]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n\n")


def write_fields(folder):
    """512 x 512 dark and white fields (the frames are the ROI 0:256, 0:256 of them); one dead pixel."""
    dark = np.zeros((512, 512), np.int32)
    white = np.ones((512, 512), np.float32)
    white[0, 0] = 0.0
    tifffile.imwrite(os.path.join(folder, "dark.tif"), dark)
    tifffile.imwrite(os.path.join(folder, "whitefield.tif"), white)


def recipe(folder, name, seed=0):
    """The raw-scan recipe: 34-ID-C from its SPEC file, the six-circle fully in YAML."""
    data = {"frames": os.path.join(folder, "frames"),
            "prepare": {"bin": [1, 2, 2], "centre": "max", "shape": [64, 64, 64]}}
    geom = geometries()[name]
    if name == "aps_34idc":
        write_spec(os.path.join(folder, "fake.spec"), geom, 64)
        write_fields(folder)
        data.update({"beamline": "aps_34idc", "spec": os.path.join(folder, "fake.spec"), "scan": 54,
                     "dark": os.path.join(folder, "dark.tif"), "white": os.path.join(folder, "whitefield.tif"),
                     "detector": {"beam_centre": [128, 128]}})
    else:
        data.update({"beamline": "generic", "diffractometer": six_circle_vertical(),
                     "detector": {"pixel_size": 55.0e-6, "beam_centre": [128, 128]},
                     "metadata": {"energy": geom.energy, "distance": geom.distance, "angles": dict(geom.angles),
                                  "rocking": geom.rocking, "step": geom.step}})
    return {"name": "forward", "data": data, "fft": "scipy", "threads": 1, "seed": seed,
            "steps": "3*(20*ER+180*HIO)+20*ER"}


def compare(result):
    """IoU, extent error per lab axis (nm), strain errors, for a reconstruction of the crystal above
    (with the geometry the pipeline recorded in the result)."""
    g = result.metadata["scan_geometry"]
    maps = lab_maps(np.asarray(result.obj), np.asarray(result.support), g)
    spacing = maps["spacing"]
    q_hat = np.asarray(maps["q_direction"])
    best = None
    for twin in (False, True):
        o = maps["object"]
        if twin:
            o = np.conj(o[::-1, ::-1, ::-1])
        amp = np.abs(o)
        rec = amp > 0.5 * np.percentile(amp[amp > 0.2 * amp.max()], 90)
        idx = np.argwhere(rec)
        com = idx.mean(axis=0)
        # the truth on the same grid, its centre of mass put on the reconstruction's
        grid = [(np.arange(n) - com[i]) * spacing for i, n in enumerate(o.shape)]
        x, y, z = np.meshgrid(*grid, indexing="ij")
        truth0 = inside(x, y, z)
        tcom = (np.argwhere(truth0).mean(axis=0) - com) * spacing
        x, y, z = x + tcom[0], y + tcom[1], z + tcom[2]
        truth = inside(x, y, z)
        iou = (rec & truth).sum() / (rec | truth).sum()
        if best is None or iou > best[0]:
            best = (iou, twin, o, rec, truth, (x, y, z))
    iou, twin, o, rec, truth, (x, y, z) = best
    ext = []
    for i in range(3):
        other = tuple(j for j in range(3) if j != i)
        r_idx = np.nonzero(rec.any(axis=other))[0]
        t_idx = np.nonzero(truth.any(axis=other))[0]
        ext.append(float((np.ptp(r_idx) - np.ptp(t_idx)) * spacing))
    geo = Geometry(hkl=(1, 1, 1), lattice_constant=2 * np.pi * np.sqrt(3) / (maps["q_norm"] / 10.0),
                   voxel_size=(spacing,) * 3, q_direction=tuple(q_hat))
    pp = postprocess(o, rec, geo, crop=False, centre=False)
    truth_strain = STRAIN_GRADIENT * (q_hat[0] * x + q_hat[1] * y + q_hat[2] * z)
    from scipy import ndimage
    core = ndimage.binary_erosion(pp.strain_valid, iterations=2) & truth
    diff = (pp.strain - pp.strain[core].mean()) - (truth_strain - truth_strain[core].mean())
    rs, ts = pp.strain[core], truth_strain[core]
    corr = float(np.corrcoef(rs, ts)[0, 1])
    slope = float(np.polyfit(ts, rs, 1)[0])
    return {"iou": float(iou), "strain_correlation": corr, "strain_slope": slope, "twin": twin, "extent_error_nm": ext, "spacing_nm": spacing,
            "voxel_nm": g["voxel_nm"], "strain_rms_error": float(np.sqrt(np.mean(diff[core] ** 2))),
            "strain_rms_truth": float(np.std(truth_strain[core])), "core_voxels": int(core.sum())}


def write_example(folder, name="aps_34idc", seed=0, command=""):
    """The frames of the forward model as a beamline would leave them (one 256 x 256 TIFF per rocking step, for
    34-ID-C a SPEC file and 512 x 512 dark and white fields) and a recipe ``<folder>/<name>.yaml`` that reads
    them, with paths relative to the recipe and outputs in *folder*."""
    import yaml

    write_scan(os.path.join(folder, "frames"), geometries()[name], seed=seed)
    r = recipe(folder, name, seed=seed)
    data = r["data"]
    for key in ("frames", "spec", "dark", "white"):
        if key in data:
            data[key] = os.path.relpath(data[key], folder)
    data["lab"] = {"frame": "lab"}
    r.update({"name": name, "fft": "auto", "threads": None, "geometry": {"hkl": [1, 1, 1], "lattice_constant": 4.078},
              "postprocess": {"remove_ramp": True, "unwrap": True, "crop": True, "margin": 4},
              "output": {k: os.path.join(folder, f"{name}.{k if k != 'path' else 'cxi'}")
                         for k in ("path", "png", "vti", "html")}})
    del r["threads"]
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as fh:
        fh.write(f"# a simulated {name} scan (the forward model of tests/forward_helpers.py){command}\n")
        yaml.safe_dump(r, fh, sort_keys=False, default_flow_style=None)
    return path


if __name__ == "__main__":   # python -m tests.forward_helpers: the figures quoted in the README
    import sys
    import tempfile

    import cdi_plugins

    if len(sys.argv) == 3 and sys.argv[1] == "--write-frames":
        for name in geometries():
            cmd = f": python -m tests.forward_helpers --write-frames {sys.argv[2]}"
            print(f"wrote {write_example(os.path.join(sys.argv[2], name), name, command=cmd)} and its frames")
        sys.exit(0)
    if len(sys.argv) > 1:
        sys.exit("usage: python -m tests.forward_helpers [--write-frames FOLDER]")
    for name, geom in geometries().items():
        with tempfile.TemporaryDirectory() as tmp:
            write_scan(os.path.join(tmp, "frames"), geom)
            c = compare(cdi_plugins.run(recipe(tmp, name), write=False))
        print(f"{name}: IoU {c['iou']:.3f}; extent error per lab axis (x, y, z) "
              f"{', '.join(f'{e:+.1f}' for e in c['extent_error_nm'])} nm (grid {c['spacing_nm']:.2f} nm, voxel "
              f"{' x '.join(f'{v:.2f}' for v in c['voxel_nm'])} nm); strain along Q: rms error "
              f"{c['strain_rms_error']:.2e} (truth spread {c['strain_rms_truth']:.2e}), correlation "
              f"{c['strain_correlation']:.3f}, slope {c['strain_slope']:.2f}; twin {'flipped' if c['twin'] else 'as is'}")
