"""Every CPU recipe in configs/ gives, bit for bit, the result recorded before the restructuring.

The recorded hashes hold on the machine kind that recorded them (CPU SIMD dispatch and library versions
are part of the fingerprint in tests/golden/hashes.json); elsewhere the test says why it cannot compare.
Regenerate with ``python -m tests.golden.recipes --update`` only when a change of results is intended.
"""

import json

import pytest

from tests.golden import recipes as golden

with open(golden.HASHES) as fh:
    RECORDED = json.load(fh)


def _mismatch() -> str | None:
    here, there = golden.fingerprint(), RECORDED["fingerprint"]
    diff = [k for k in sorted(set(here) | set(there)) if here.get(k) != there.get(k)]
    if diff:
        return "bitwise hashes were recorded on another CPU or library set (differs in: " + ", ".join(diff) + ")"
    return None


def test_every_recipe_has_a_recorded_hash():
    # a new recipe in configs/ must be recorded, a removed one dropped from the record
    assert sorted(RECORDED["hashes"]) == golden.recipes()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECORDED["hashes"]))
def test_recipe_result_is_bitwise_unchanged(name):
    why = _mismatch()
    if why:
        pytest.skip(why)
    if name == "cohere_seeded.yaml":
        pytest.importorskip("cohere_core")
    assert golden.hash_recipe(name) == RECORDED["hashes"][name]
