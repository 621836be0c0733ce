"""Geometry: the CaloChallenge binning XML reader against the real files and the built-ins."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.errors import GeometryError, UnknownNameError
from simcompress.showers.geometry import Geometry

XML_FILES = {
    "ds1-photons": ("binning_dataset_1_photons.xml", 368, [0, 1, 2, 3, 12]),
    "ds1-pions": ("binning_dataset_1_pions.xml", 533, [0, 1, 2, 3, 12, 13, 14]),
    "ds2": ("binning_dataset_2.xml", 6480, list(range(45))),
    "ds3": ("binning_dataset_3.xml", 40500, list(range(45))),
}


@pytest.mark.parametrize("name", sorted(XML_FILES))
def test_builtin_voxel_counts(name: str) -> None:
    g = Geometry.from_name(name)
    assert g.n_voxels == XML_FILES[name][1]
    assert [layer.id for layer in g.layers] == XML_FILES[name][2]
    assert g.layer_offsets[-1] == g.n_voxels


@pytest.mark.parametrize("name", sorted(XML_FILES))
def test_xml_reader_matches_builtin_voxel_for_voxel(name: str, calochallenge_dir) -> None:
    fname, n_vox, ids = XML_FILES[name]
    path = calochallenge_dir / fname
    if not path.is_file():
        pytest.skip(f"CaloChallenge binning files not available ({calochallenge_dir})")
    xml = Geometry.from_xml(path)
    builtin = Geometry.from_name(name)
    assert xml.n_voxels == n_vox
    assert [layer.id for layer in xml.layers] == ids
    assert xml.same_binning(builtin)
    for a, b in zip(xml.layers, builtin.layers, strict=False):
        assert a.r_edges_mm == b.r_edges_mm
        assert a.n_alpha == b.n_alpha
    for attr in ("voxel_r", "voxel_alpha", "voxel_x", "voxel_y", "voxel_layer"):
        np.testing.assert_array_equal(getattr(xml, attr), getattr(builtin, attr))


def test_flattening_order_is_layer_alpha_radius() -> None:
    g = Geometry.from_name("ds2")
    showers = np.arange(g.n_voxels, dtype=np.float32)[None, :]
    layer3 = g.layer_view(showers, 3)
    assert layer3.shape == (1, 16, 9)
    # first entries of a layer are the radial bins of its first angular slice
    np.testing.assert_array_equal(layer3[0, 0], np.arange(3 * 144, 3 * 144 + 9))
    np.testing.assert_array_equal(layer3[0, 1, 0], 3 * 144 + 9)


def test_unknown_geometry_name() -> None:
    with pytest.raises(UnknownNameError, match="unknown geometry 'ds1-photon'.*did you mean 'ds1-photons'"):
        Geometry.from_name("ds1-photon")


def test_bad_xml_is_a_one_line_error(tmp_path) -> None:
    p = tmp_path / "bad.xml"
    p.write_text("<Bins><Bin name='photon'><Layer id='0' r_edges='0,5,x' n_bin_alpha='1'/></Bin></Bins>")
    with pytest.raises(GeometryError, match="bad.xml: layer 0: bad attribute"):
        Geometry.from_xml(p)
    p.write_text("<Bins><Bin")
    with pytest.raises(GeometryError, match="not a valid binning XML"):
        Geometry.from_xml(p)
