from __future__ import annotations

from pathlib import Path

import pytest

from simcompress.showers.plots import save_layer_images
from simcompress.showers.reference import simulate


@pytest.mark.parametrize(("name", "magic"), [("layers.png", b"\x89PNG"), ("sub/layers.PDF", b"%PDF")])
def test_save_layer_images_format_from_suffix_and_atomic(tmp_path: Path, name: str, magic: bytes) -> None:
    s = simulate("calogan", 20, energies="fixed:10000", seed=1, progress=False)
    out = save_layer_images(tmp_path / name, {"GFlash": s.showers.mean(axis=0)}, s.geometry)
    assert out == tmp_path / name and out.read_bytes().startswith(magic)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left behind
