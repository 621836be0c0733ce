"""Fixed-point ap_fixed types and the fixed_point / qat_fixed_point methods."""

from __future__ import annotations

import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.fixed_point import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedType,
    integer_bits_for_range,
    parse_fixed,
)
from simcompress.compress.fixed_point.fold import fold_batchnorm
from simcompress.compress.fixed_point.modules import (
    FixedPointNetwork,
    FixedQuantize,
    FoldedBatchNorm,
    precision_record,
)
from simcompress.compress.fixed_point.types import exact_accumulator
from simcompress.errors import ConfigError, UnsupportedLayerError


# ----------------------------------------------------------------------------- reference
def ref_quantize(x: Fraction, t: FixedType) -> Fraction:
    """Independent reference: exact rational arithmetic, one formula per mode."""
    q = x * Fraction(2) ** t.frac
    fl = math.floor(q)
    rem = q - fl
    half = Fraction(1, 2)
    if t.rounding == "TRN":
        n = fl
    elif t.rounding == "TRN_ZERO":
        n = math.trunc(q)
    elif t.rounding == "RND":
        n = math.floor(q + half)
    elif t.rounding == "RND_ZERO":
        n = math.trunc(q) if rem == half else math.floor(q + half)
    elif t.rounding == "RND_MIN_INF":
        n = math.ceil(q - half)
    elif t.rounding == "RND_INF":
        n = (fl + 1 if q > 0 else fl) if rem == half else math.floor(q + half)
    elif t.rounding == "RND_CONV":
        n = round(q)  # Fraction rounds half to even
    else:
        raise AssertionError(t.rounding)
    lo = -(2 ** (t.width - 1)) if t.signed else 0
    hi = 2 ** (t.width - 1) - 1 if t.signed else 2**t.width - 1
    if t.overflow == "WRAP":
        n = (n - lo) % (2**t.width) + lo
    elif t.overflow == "SAT":
        n = min(max(n, lo), hi)
    elif t.overflow == "SAT_SYM":
        n = min(max(n, -hi if t.signed else lo), hi)
    elif t.overflow == "SAT_ZERO":
        n = n if lo <= n <= hi else 0
    return Fraction(n) / Fraction(2) ** t.frac


TYPES = [(6, 3, True), (5, 1, False), (8, -1, True), (4, 6, True), (7, 7, False)]


def _edge_values(t: FixedType) -> np.ndarray:
    lsb = t.lsb
    k = np.arange(-2 ** (t.width + 1), 2 ** (t.width + 1) + 1)
    ties = (k + 0.5) * lsb  # every tie, in range and beyond
    near = np.concatenate([k * lsb + lsb * 0.25, k * lsb - lsb * 0.25, k * lsb])
    return np.concatenate([ties, near, [0.0, -0.0, 1e-30, -1e-30, 1e9, -1e9]])


@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
@pytest.mark.parametrize(("w", "i", "s"), TYPES)
def test_quantize_matches_reference(w: int, i: int, s: bool, rounding: str, overflow: str) -> None:
    if overflow == "SAT_SYM" and s and w < 2:
        pytest.skip("SAT_SYM needs 2 bits")
    t = FixedType(w, i, s, rounding, overflow)
    xs = _edge_values(t)
    got = t.quantize(xs)
    want = np.array([float(ref_quantize(Fraction(float(x)), t)) for x in xs])
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, f"{t.to_hls()}: x={xs[bad[:3]]} got {got[bad[:3]]} want {want[bad[:3]]}"
    # torch path agrees exactly (float64 and float32)
    tq = t.quantize(torch.from_numpy(xs))
    assert torch.equal(tq, torch.from_numpy(want))
    small = xs[np.abs(xs) < 1e6].astype(np.float32)
    assert torch.equal(t.quantize(torch.from_numpy(small)), torch.from_numpy(t.quantize(small.astype(np.float64)).astype(np.float32)))


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
def test_requantize_integer_path_matches_reference(rounding: str, overflow: str) -> None:
    """Casting a wide accumulator code to a narrower type (pure integer arithmetic)."""
    t = FixedType(6, 2, True, rounding, overflow)
    frac_in = 7  # 3 more fractional bits than the target
    codes = np.arange(-600, 601, dtype=np.int64)
    got = t.requantize(codes, frac_in)
    want = [ref_quantize(Fraction(int(c), 2**frac_in), t) * 2**t.frac for c in codes]
    assert got.tolist() == [int(v) for v in want]
    # very wide codes go through Python ints and agree
    big = np.array([(1 << 70) + 5, -(1 << 70) - 3], dtype=object)
    assert t.requantize(big, 68).tolist() == [int(ref_quantize(Fraction(int(c), 2**68), t) * 2**t.frac) for c in big]


def test_negative_zero_and_tiny_negatives() -> None:
    t = FixedType(8, 3, True, "RND", "SAT")
    out = t.quantize(np.array([-0.0, -1e-12]))
    assert out.tolist() == [0.0, 0.0]
    assert not np.signbit(out).any()  # never a negative zero
    assert FixedType(8, 3, True, "TRN").quantize(np.array([-1e-12])).tolist() == [-t.lsb]
    assert FixedType(8, 3, True, "TRN_ZERO").quantize(np.array([-1e-12])).tolist() == [0.0]
    tt = t.quantize(torch.tensor([-0.0]))
    assert not torch.signbit(tt).any()


def test_wrap_is_twos_complement() -> None:
    t = FixedType(4, 4, True, "TRN", "WRAP")  # 4-bit integers
    assert t.quantize(np.array([7.0, 8.0, 9.0, -9.0, 16.0, -8.0])).tolist() == [7, -8, -7, 7, 0, -8]
    u = FixedType(4, 4, False, "TRN", "WRAP")
    assert u.quantize(np.array([15.0, 16.0, -1.0])).tolist() == [15, 0, 15]


def test_rounding_carry_into_overflow() -> None:
    """Rounding first, then overflow: 3.97 rounds to 4.0, which overflows ap_fixed<5,3>."""
    x = np.array([3.97])
    assert FixedType(5, 3, True, "RND", "SAT").quantize(x).tolist() == [3.75]
    assert FixedType(5, 3, True, "RND", "WRAP").quantize(x).tolist() == [-4.0]
    assert FixedType(5, 3, True, "RND", "SAT_ZERO").quantize(x).tolist() == [0.0]
    assert FixedType(5, 3, True, "TRN", "WRAP").quantize(x).tolist() == [3.75]


def test_hls_strings_round_trip() -> None:
    for w, i, s in TYPES:
        for r in ROUNDING_MODES:
            for o in OVERFLOW_MODES:
                t = FixedType(w, i, s, r, o)
                assert parse_fixed(t.to_hls()) == t
                assert FixedType.from_dict(t.to_dict()) == t
    assert FixedType(16, 6).to_hls() == "ap_fixed<16,6>"
    assert FixedType(8, 3, False, "RND", "SAT").to_hls() == "ap_ufixed<8,3,AP_RND,AP_SAT>"
    assert parse_fixed("fixed<18,8,RND_CONV,SAT_SYM,0>") == FixedType(18, 8, True, "RND_CONV", "SAT_SYM")


def test_bad_types_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="rounding mode 'ROUND'.*RND_CONV"):
        FixedType(8, 3, rounding="ROUND")
    with pytest.raises(ConfigError, match="width"):
        FixedType(0, 3)
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_fixed("ap_fixed<8>")
    with pytest.raises(ConfigError, match="unknown key 'bits'"):
        FixedType.from_dict({"width": 8, "integer": 2, "bits": 3})
    with pytest.raises(ValueError, match="non-finite"):
        FixedType(8, 3).quantize(np.array([np.nan]))


def test_integer_bits_for_range() -> None:
    assert integer_bits_for_range(-3.5, 3.2) == 3  # [-4, 4)
    assert integer_bits_for_range(-4.0, 3.99) == 3  # -4 fits exactly
    assert integer_bits_for_range(0.0, 4.0, signed=False) == 3  # 4 needs [0, 8)
    assert integer_bits_for_range(-0.2, 0.2) == -1  # [-0.25, 0.25)
    with pytest.raises(ConfigError, match="unsigned"):
        integer_bits_for_range(-1.0, 1.0, signed=False)


def test_union_and_contains() -> None:
    a, b = FixedType(8, 3, True), FixedType(6, 2, False)
    u = a.union(b)
    assert u.contains(a) and u.contains(b)
    assert not FixedType(8, 3).contains(FixedType(9, 3))


def test_exact_accumulator_holds_every_partial_sum() -> None:
    rng = np.random.default_rng(0)
    x_t, w_t, b_t = FixedType(6, 2, False), FixedType(5, 1), FixedType(7, 2)
    w = rng.integers(w_t.int_min, w_t.int_max + 1, size=(4, 9))
    b = rng.integers(b_t.int_min, b_t.int_max + 1, size=4)
    acc = exact_accumulator(x_t, w, w_t, b, b_t)
    # brute-force extreme partial sums in accumulator units
    fa = acc.frac
    for o in range(4):
        terms = [max(w[o, j] * x_t.int_max, w[o, j] * x_t.int_min) << (fa - x_t.frac - w_t.frac) for j in range(9)]
        lows = [min(w[o, j] * x_t.int_max, w[o, j] * x_t.int_min) << (fa - x_t.frac - w_t.frac) for j in range(9)]
        bb = int(b[o]) << (fa - b_t.frac)
        assert acc.int_min <= bb + sum(lows) and bb + sum(terms) <= acc.int_max
        assert acc.int_min <= sum(lows) and sum(terms) <= acc.int_max


# ----------------------------------------------------------------------------- methods
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 12)
        self.bn1 = nn.BatchNorm1d(12)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(12, 7)
        self.act2 = nn.LeakyReLU(0.25)
        self.out = nn.Linear(7, 6)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.fc2(self.act1(self.bn1(self.fc1(torch.cat([z, c], dim=1)))))))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    m = Net()
    m.train()
    with torch.no_grad():
        m(torch.randn(64, 4), torch.rand(64, 1))  # running stats
    return m.eval()


def _cal(n: int = 256, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, generator=g), torch.rand(n, 1, generator=g)]


def test_fold_batchnorm_preserves_outputs() -> None:
    m = _net()
    x = _cal()
    with torch.no_grad():
        before = m(*x)
        folded = fold_batchnorm(m)
        after = m(*x)
    assert folded == ["bn1"]
    assert isinstance(m.bn1, FoldedBatchNorm)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_fixed_point_record_and_on_grid_values() -> None:
    m = _net()
    cfg = config_from_dict({"method": "fixed_point", "weight": {"width": 6}, "layers": {"out": {"weight": {"width": 10}}}})
    res = compress(m, cfg, calibration=_cal())
    assert isinstance(m.bn1, nn.BatchNorm1d)  # input untouched
    fpn = res.model
    assert isinstance(fpn, FixedPointNetwork)
    rec = precision_record(res.model)
    assert rec is not None and rec["folded_batchnorm"] == ["bn1"]
    assert rec["input_sizes"] == [4, 1]
    L = rec["layers"]
    assert L["fc1"]["weight"]["width"] == 6 and L["out"]["weight"]["width"] == 10
    assert L["act1"]["result"]["signed"] is False  # unsigned after ReLU
    assert L["fc1"]["activation_layer"] == "act1"
    assert L["act2"]["param"]["signed"] is False
    # weights are exactly on their grid
    for name in ("fc1", "fc2", "out"):
        lin = fpn.inner.get_submodule(name)
        t = FixedType.from_dict(L[name]["weight"])
        w = lin.weight.detach().double().numpy()
        np.testing.assert_array_equal(t.quantize(w), w)
    # integer bits cover the observed weight range
    w_fc1 = fpn.inner.fc1.parametrizations.weight.original.detach().abs().max().item()
    assert w_fc1 <= FixedType.from_dict(L["fc1"]["weight"]).max_value + FixedType.from_dict(L["fc1"]["weight"]).lsb
    # outputs are on the result grid of the last layer and close to the float model
    x = _cal(128, seed=5)
    with torch.no_grad():
        y = res.model(*x)
        y_f = m(*x)
    t_out = FixedType.from_dict(L["out"]["result"])
    np.testing.assert_array_equal(t_out.quantize(y.double().numpy()), y.double().numpy())
    assert (y - y_f).abs().max().item() < 0.1  # 6-bit weights on an untrained net: loose but finite
    assert [r.name for r in res.layers] == ["fc1", "fc2", "out"]
    assert res.layers[0].bits_after == 12 * 5 * 6 + 12 * 12


def test_qat_trains_through_straight_through_estimator() -> None:
    m = _net()
    res = compress(m, config_from_dict({"method": "qat_fixed_point"}), calibration=_cal())
    model = res.model
    model.train()
    x = _cal(64, seed=7)
    loss = model(*x).pow(2).mean()
    loss.backward()
    g = model.inner.fc1.parametrizations.weight.original.grad
    assert g is not None and g.abs().sum() > 0
    # PTQ freezes: no gradient reaches the weights
    ptq = compress(m, config_from_dict({"method": "fixed_point"}), calibration=_cal()).model
    out = ptq(*x)
    assert not out.requires_grad


def test_requires_calibration_or_integer_bits() -> None:
    with pytest.raises(ConfigError, match="integer bits not given"):
        compress(_net(), config_from_dict({"method": "fixed_point"}))
    spec = {"width": 12, "integer": 4}
    cfg = config_from_dict({"method": "fixed_point", "input": spec, "result": spec, "activation": {"width": 12, "integer": 4, "signed": False}})
    res = compress(_net(), cfg)
    assert precision_record(res.model)["input"]["integer"] == 4


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="weight.bitz"):
        config_from_dict({"method": "fixed_point", "weight": {"width": 8, "bitz": 3}})
    with pytest.raises(ConfigError, match="rounding"):
        config_from_dict({"method": "fixed_point", "weight": {"width": 8, "rounding": "NEAREST"}})


def test_unsupported_layer_is_refused() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.act = nn.Softplus()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x))

    with pytest.raises(UnsupportedLayerError, match="act: Softplus"):
        compress(Bad(), config_from_dict({"method": "fixed_point"}), calibration=[torch.randn(32, 3)])


def test_fixed_quantize_spec_round_trip() -> None:
    q = FixedQuantize(FixedType(9, 2, False, "RND_CONV", "SAT_SYM"), ste=True)
    q2 = FixedQuantize.from_spec(q.to_spec())
    assert q2.ftype == q.ftype and q2.ste


def test_compressed_bundle_round_trip(tmp_path: Path) -> None:
    from simcompress.compress.bundle import load_compressed, save_compressed

    m = _net()
    res = compress(m, config_from_dict({"method": "qat_fixed_point"}), calibration=_cal())
    base = {"kind": "test-net"}
    save_compressed(res.model, base, [res.config.to_dict()], res.report(), tmp_path / "b")
    assert (tmp_path / "b" / "precision.json").is_file()
    loaded = load_compressed(tmp_path / "b", builder=lambda _cfg: _net(seed=3))
    x = _cal(32, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(*x), res.model(*x))
    assert precision_record(loaded) == precision_record(res.model)


@pytest.mark.firmware
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_matches_vendor_ap_fixed_headers(tmp_path: Path) -> None:
    """Cross-check against the real ap_fixed C++ library shipped with hls4ml."""
    hls4ml = pytest.importorskip("hls4ml")
    inc = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    types = [FixedType(6, 3, True, r, o) for r in ROUNDING_MODES for o in OVERFLOW_MODES]
    types += [FixedType(5, 1, False, r, o) for r in ROUNDING_MODES for o in ("WRAP", "SAT", "SAT_ZERO")]
    body = "\n".join(
        f'  {{ {t.to_hls() if t.to_hls().count(",") > 1 else t.to_hls()[:-1] + ",AP_TRN,AP_WRAP>"} v = x; printf("%.17g ", v.to_double()); }}'
        for t in types
    )
    src = tmp_path / "t.cpp"
    src.write_text(
        '#include <cstdio>\n#include "ap_fixed.h"\nint main(){ double x; while (scanf("%lf", &x) == 1) {\n'
        + body + '\n  printf("\\n"); } }\n'
    )
    exe = tmp_path / "t"
    subprocess.run(["g++", "-O0", "-std=c++14", f"-I{inc}", str(src), "-o", str(exe)], check=True)
    xs = np.concatenate([_edge_values(FixedType(6, 3)), np.random.default_rng(0).uniform(-20, 20, 300)])
    out = subprocess.run([str(exe)], input="\n".join(repr(float(x)) for x in xs), capture_output=True, text=True, check=True)
    got = np.array([[float(v) for v in line.split()] for line in out.stdout.strip().splitlines()])
    for k, t in enumerate(types):
        ours = t.quantize(xs)
        bad = np.nonzero(ours != got[:, k])[0]
        assert bad.size == 0, f"{t.to_hls()}: x={xs[bad[:3]]} ours {ours[bad[:3]]} ap_fixed {got[bad[:3], k]}"


def test_calibration_callable_and_network_path() -> None:
    """The pipeline passes ``calibration=callable(model)``; the method captures what reaches ``model.network``."""

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = _net()

    x = _cal()
    by_call = compress(Holder(), config_from_dict({"method": "fixed_point"}), calibration=lambda m: m.network(*x))
    by_tuple = compress(_net(), config_from_dict({"method": "fixed_point"}), calibration=tuple(x))
    rec_call, rec_tuple = precision_record(by_call.model), precision_record(by_tuple.model)
    assert isinstance(by_call.model.network, FixedPointNetwork)
    assert rec_call["network"] == "network" and rec_tuple["network"] == ""
    assert rec_call["layers"] == rec_tuple["layers"] and rec_call["input"] == rec_tuple["input"]


def test_exclude_leaves_layer_float_and_is_refused_downstream() -> None:
    with pytest.raises(ConfigError, match="'out' follows an unquantized layer|include every Linear"):
        compress(_net(), config_from_dict({"method": "fixed_point", "exclude": ["fc2"]}), calibration=_cal())
    res = compress(_net(), config_from_dict({"method": "fixed_point", "exclude": ["out"]}), calibration=_cal())
    assert "out" not in precision_record(res.model)["layers"]


def test_storage_accounting_counts_fixed_point_widths_issue_5() -> None:
    """A fixed-point weight is stored with its ap_fixed width, not as float32."""
    import torch
    from torch.nn.utils import parametrize

    from simcompress.compress.accounting import storage_bits, weight_bits_of
    from simcompress.compress.fixed_point import FixedType
    from simcompress.compress.fixed_point.modules import FixedQuantize

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(0.1, 1.2, 12).reshape(3, 4))  # no value rounds to zero
    parametrize.register_parametrization(lin, "weight", FixedQuantize(FixedType(10, 2)))
    assert weight_bits_of(lin) == 10
    # 12 weights at 10 bits (dense) + 3 float32 biases
    assert storage_bits(lin) == 12 * 10 + 3 * 32
