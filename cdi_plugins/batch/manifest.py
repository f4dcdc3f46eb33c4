"""The batch manifest: one JSON file saying, per scan, what was done (written atomically after each scan)."""

from __future__ import annotations

import json
import os
import time

from cdi_plugins.errors import CDIError

__all__ = ["Manifest"]

FIELDS = ("scan", "status", "chi2", "support_fraction", "seconds", "outputs", "error")


class Manifest:
    """``{"recipe", "updated", "scans": {label: record}}`` in a JSON file.

    A record's ``status`` is ``done`` (every output written), ``failed`` (``error`` says why), ``cancelled``
    (interrupted before it finished) or ``pending``.
    """

    def __init__(self, path: str, recipe: str = ""):
        self.path = os.path.abspath(path)
        self.recipe = recipe
        self.scans: dict[str, dict] = {}
        if os.path.exists(self.path):
            try:
                with open(self.path) as fh:
                    doc = json.load(fh)
                self.scans = {str(k): dict(v) for k, v in doc["scans"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CDIError(f"cannot read this batch manifest ({exc.__class__.__name__}: {exc}); "
                               "move it away or pass --manifest with another file", self.path) from None

    def complete(self, scan: str, outputs: list[str]) -> bool:
        """Whether *scan* is done and every one of its *outputs* (and the ones recorded) exists."""
        rec = self.scans.get(scan)
        if not rec or rec.get("status") != "done":
            return False
        paths = set(outputs) | set(rec.get("outputs") or [])
        return all(os.path.exists(p.rstrip("/")) for p in paths)

    def known(self, scan: str) -> bool:
        return scan in self.scans

    def update(self, record: dict, write: bool = True) -> None:
        self.scans[str(record["scan"])] = {**self.scans.get(str(record["scan"]), {}), **record}
        if write:
            self.write()

    def counts(self) -> dict:
        out: dict[str, int] = {}
        for rec in self.scans.values():
            out[rec.get("status", "?")] = out.get(rec.get("status", "?"), 0) + 1
        return out

    def write(self) -> None:
        from cdi_plugins.io.atomic import atomic_path
        doc = {"recipe": self.recipe, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": self.counts(),
               "scans": self.scans}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_path(self.path, overwrite=True) as tmp:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=1, default=str)
