"""The contract every registered generator kind keeps (tiny, seeded models).

Config round trip, bundle round trip with bit-identical samples, determinism, refusal of a
bundle for another geometry, and a one-line refusal of an unknown architecture key naming it.
A kind registered without a factory here fails ``test_every_registered_kind_is_covered``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from simcompress.errors import BundleError, ConfigError
from simcompress.generators import GENERATORS, ShowerGenerator, build_generator, load_generator, save_generator
from simcompress.showers.geometry import Geometry

TOY = Path(__file__).resolve().parents[1] / "interop" / "external_dcgan.py"
E = torch.tensor([300.0, 5e3, 7e4, 1e6, 4e6])


def _gan(geo: Geometry) -> ShowerGenerator:
    from simcompress.generators.gan import GANGenerator

    return GANGenerator(geo, latent_dim=4, hidden=[8], critic_hidden=[8])


def _flow(geo: Geometry) -> ShowerGenerator:
    from simcompress.generators.flow import FlowGenerator

    return FlowGenerator(geo, n_blocks=1, hidden=[16], n_groups=8)


def _iaf(geo: Geometry) -> ShowerGenerator:
    from simcompress.distill.students import IAFGenerator

    return IAFGenerator(geo, n_blocks=1, hidden=[16], n_groups=8)


def _mlp(geo: Geometry) -> ShowerGenerator:
    from simcompress.distill.students import MLPGenerator

    return MLPGenerator(geo, latent_dim=4, width=8, depth=1)


def _qkeras(geo: Geometry) -> ShowerGenerator:
    from simcompress.interop.generator import QKerasMLPGenerator

    return QKerasMLPGenerator.random(geo, latent_dim=4, hidden=[8], seed=0)


def _external(geo: Geometry) -> ShowerGenerator:
    import importlib.util

    from simcompress.interop.external import wrap_generator

    spec = importlib.util.spec_from_file_location("external_dcgan_contract", TOY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.ConcatMLP(5, geo.n_voxels)
    return wrap_generator(net, geometry=geo, latent_dim=4, model=f"{TOY}:ConcatMLP", kwargs={"n_in": 5, "n_out": geo.n_voxels},
                          input="concat", postprocess={"output": "relu", "multiply_by_energy": True})


FACTORIES: dict[str, Callable[[Geometry], ShowerGenerator]] = {
    "gan": _gan, "flow": _flow, "iaf": _iaf, "mlp": _mlp, "qkeras-mlp": _qkeras, "external": _external,
}
KINDS = GENERATORS.list()  # entry points loaded: every installed kind


@pytest.fixture(scope="module")
def geometry() -> Geometry:
    return Geometry.from_name("ds1-photons")


@pytest.fixture(params=KINDS)
def gen(request: pytest.FixtureRequest, geometry: Geometry) -> ShowerGenerator:
    kind = request.param
    if kind not in FACTORIES:
        pytest.fail(f"generator kind {kind!r} has no factory in this contract test")
    g = FACTORIES[kind](geometry).eval()
    assert g.kind == kind
    return g


def _sample(g: ShowerGenerator, seed: int = 7) -> torch.Tensor:
    return g.sample(E, torch.Generator().manual_seed(seed))


def test_every_registered_kind_is_covered() -> None:
    assert {"gan", "flow", "iaf", "mlp"} <= set(KINDS)
    assert set(KINDS) <= set(FACTORIES)


def test_config_round_trip(gen: ShowerGenerator) -> None:
    cfg = gen.config_dict()
    assert json.loads(json.dumps(cfg)) == cfg  # plain JSON
    again = type(gen).from_config(cfg, gen.geometry)
    assert again.config_dict() == cfg
    assert build_generator(json.loads(json.dumps(cfg))).config_dict() == cfg
    assert type(gen).parse_architecture(cfg).model_dump(mode="json") == gen.architecture()


def test_bundle_round_trip_is_bit_identical(gen: ShowerGenerator, tmp_path: Path) -> None:
    save_generator(gen, tmp_path / "b")
    back = load_generator(tmp_path / "b")
    assert back.kind == gen.kind and back.config_dict() == gen.config_dict()
    assert torch.equal(_sample(back), _sample(gen))


def test_same_seed_same_showers(gen: ShowerGenerator) -> None:
    a, b = _sample(gen, 3), _sample(gen, 3)
    assert a.shape == (len(E), gen.geometry.n_voxels)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_mismatched_geometry_is_refused(gen: ShowerGenerator, tmp_path: Path) -> None:
    save_generator(gen, tmp_path / "b")
    with pytest.raises(BundleError, match="not 'ds1-pions'"):
        load_generator(tmp_path / "b", geometry="ds1-pions")


def test_unknown_architecture_key_is_refused_in_one_line(gen: ShowerGenerator, tmp_path: Path) -> None:
    out = save_generator(gen, tmp_path / "b")
    cfg = json.loads((out / "config.json").read_text())
    known = min(cfg["architecture"])
    bad = known + "x"
    cfg["architecture"][bad] = 1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((BundleError, ConfigError)) as err:
        load_generator(out)
    msg = str(err.value)
    assert "\n" not in msg
    assert "config.json" in msg and repr(bad) in msg and repr(known) in msg
