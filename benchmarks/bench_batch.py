"""Throughput of `cdi batch`: N scans of 64^3, sequential in one process vs a local Dask cluster.

    .venv/bin/python benchmarks/bench_batch.py [--scans 8] [--workers 2] [--steps "50*ER+100*HIO+50*ER"]

Prints scans per minute both ways, their ratio, and the engine's overhead per scan (the batch's wall time
times the workers, minus the scans' own run times, over the scans; cluster start-up counted apart)."""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--steps", default="50*ER+100*HIO+50*ER")
    a = ap.parse_args()
    from cdi_plugins.batch.cluster import make_local
    from cdi_plugins.batch.manifest import Manifest
    from cdi_plugins.batch.runner import run_batch
    from cdi_plugins.batch.tasks import scan_tasks
    from cdi_plugins.batch.worker import run_task
    from cdi_plugins.physics.simulate import simulate_crystal
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/scans")
        for n in range(a.scans):
            np.save(f"{d}/scans/scan_{n:04d}.npy", simulate_crystal(a.shape, seed=n)["intensity"])
        with open(f"{d}/r.yaml", "w") as fh:
            fh.write(f'data: {{path: "scans/scan_{{scan:04d}}.npy"}}\nfft: scipy\nsteps: "{a.steps}"\n')
        nums = list(range(a.scans))
        seq = scan_tasks(f"{d}/r.yaml", nums, out=f"{d}/seq/s{{scan}}.cxi", threads=1)
        os.makedirs(f"{d}/seq")
        t0 = time.perf_counter()
        recs = [run_task(t) for t in seq]
        t_seq = time.perf_counter() - t0
        assert all(r["status"] == "done" for r in recs), recs
        per_scan = t_seq / a.scans
        t0 = time.perf_counter()
        ex = make_local({"workers": a.workers, "threads": 1})
        t_start = time.perf_counter() - t0
        par = scan_tasks(f"{d}/r.yaml", nums, out=f"{d}/par/s{{scan}}.cxi", threads=1)
        t0 = time.perf_counter()
        rep = run_batch(par, ex, Manifest(f"{d}/par/m.json"), progress=False, stream=False)
        t_par = time.perf_counter() - t0
        ex.shutdown()
        assert rep.ok, rep.failed
        worker_sum = sum(r["seconds"] for r in rep.records)
        overhead = (t_par * a.workers - worker_sum) / a.scans
        print(f"{a.scans} scans of {a.shape}^3, steps {a.steps}, 1 FFT thread each, {os.cpu_count()} cores")
        print(f"sequential, one process:        {t_seq:7.1f} s  {60 * a.scans / t_seq:6.1f} scans/min "
              f"({per_scan:.2f} s per scan)")
        print(f"cdi batch, LocalCluster x{a.workers}:    {t_par:7.1f} s  {60 * a.scans / t_par:6.1f} scans/min "
              f"(+ {t_start:.1f} s cluster start)")
        print(f"ratio (batch / sequential):     {t_seq / t_par:7.2f}x")
        print(f"engine overhead per scan:       {overhead:7.2f} s ({100 * overhead / per_scan:.1f} % of a scan's "
              f"{per_scan:.2f} s); mean scan on a worker {worker_sum / a.scans:.2f} s")


if __name__ == "__main__":
    main()
