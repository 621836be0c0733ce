"""Exact mathematics of the methods: Eckart-Young, dead-neuron removal, LoRA merge, TT, Tucker, quantizers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from compress_toys import ConvNet, make_mlp
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.coverage import CoverageWarning
from simcompress.compress.methods.gradual_prune import polynomial_sparsity
from simcompress.compress.methods.svd import SVDConfig
from simcompress.compress.methods.tensor_train import tt_decompose
from simcompress.compress.modules import Factorized, TTLinear, balanced_factors
from simcompress.compress.parametrizations import FakeQuant, LoRA, fake_quantize
from simcompress.errors import UnsupportedLayerError

pytestmark = pytest.mark.usefixtures("one_thread")

EXACT = 1e-12  # float64 round-off on matrices of a few dozen entries


def _linear64(out_f: int, in_f: int, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_f, out_f, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=g, dtype=torch.float64))
    return nn.Sequential(lin)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_svd_rank_k_error_equals_eckart_young(k: int) -> None:
    model = _linear64(20, 12)
    w = model[0].weight.detach().clone()
    res = compress(model, SVDConfig(rank=k, only_if_smaller=False))
    fac = res.model[0]
    assert isinstance(fac, Factorized) and [type(m) for m in fac] == [nn.Linear, nn.Linear]
    approx = (fac[1].weight @ fac[0].weight).detach()
    s = torch.linalg.svdvals(w)
    bound = torch.sqrt((s[k:] ** 2).sum())
    assert float(torch.linalg.norm(w - approx)) == pytest.approx(float(bound), rel=1e-10)
    assert res.layers[0].details["rel_error"] == pytest.approx(res.layers[0].details["eckart_young_rel_error"], rel=1e-10)
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(res.model(x), x @ approx.T + model[0].bias, rtol=0, atol=EXACT)


def test_svd_error_threshold_picks_smallest_rank() -> None:
    model = _linear64(30, 30, seed=2)
    s = torch.linalg.svdvals(model[0].weight.detach())
    total = float((s**2).sum())
    res = compress(model, SVDConfig(max_rel_error=0.5, only_if_smaller=False))
    k = res.layers[0].details["rank"]
    err = lambda r: math.sqrt(float((s[r:] ** 2).sum()) / total)
    assert err(k) <= 0.5 < err(k - 1)
    res_e = compress(model, SVDConfig(energy=0.8, only_if_smaller=False))
    ke = res_e.layers[0].details["rank"]
    frac = lambda r: float((s[:r] ** 2).sum()) / total
    assert frac(ke) >= 0.8 > frac(ke - 1)


def test_randomized_svd_matches_exact_for_low_rank_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(600, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 550, generator=g, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(550, 600, dtype=torch.float64))
    with torch.no_grad():
        model[0].weight.copy_(w)
    res = compress(model, SVDConfig(rank=5, randomized="auto", randomized_min_dim=512))
    assert res.layers[0].details["randomized"] is True
    assert res.layers[0].details["rel_error"] < 1e-10  # rank-5 matrix is reproduced exactly


def test_svd_keeps_layer_when_factors_are_not_smaller() -> None:
    res = compress(_linear64(6, 6), SVDConfig(rank=5))
    assert isinstance(res.model[0], nn.Linear)
    assert res.layers[0].details["kept"] is True


def test_structured_pruning_of_neurons_without_outgoing_weights_is_exact() -> None:
    model = make_mlp(dtype=torch.float64)
    dead = [1, 4, 5, 9, 17, 20]  # of the 24 hidden units of layer 0
    with torch.no_grad():
        model[2].weight[:, dead] = 0.0
    x = torch.randn(50, 8, dtype=torch.float64)
    res = compress(model, config_from_dict({"method": "structured_prune", "amount": len(dead) / 24, "include": ["0"]}))
    assert res.model[0].out_features == 24 - len(dead)
    assert res.model[2].in_features == 24 - len(dead)
    torch.testing.assert_close(res.model(x), model(x), rtol=0, atol=EXACT)


def test_structured_pruning_folds_dead_inputs_into_next_bias() -> None:
    model = make_mlp(dtype=torch.float64)
    dead = [0, 3, 7]  # zero incoming weights: constant LeakyReLU(bias) outputs
    with torch.no_grad():
        model[0].weight[dead] = 0.0
        model[0].bias[dead] = torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64)
    x = torch.randn(40, 8, dtype=torch.float64)
    res = compress(model, config_from_dict({"method": "structured_prune", "amount": 3 / 24, "criterion": "l2", "include": ["0"]}))
    assert res.layers[0].details["folded_dead_units"] == 3
    torch.testing.assert_close(res.model(x), model(x), rtol=0, atol=EXACT)


def test_structured_pruning_shrinks_batchnorm_between_layers() -> None:
    model = make_mlp(dtype=torch.float64)
    model[3].running_mean.uniform_(-1, 1)
    res = compress(model, config_from_dict({"method": "structured_prune", "amount": 0.5}))
    assert res.model[3].num_features == 8 and res.model[2].out_features == 8 and res.model[5].in_features == 8
    assert res.model[5].out_features == 4  # output layer: width is the interface
    out = res.model(torch.randn(3, 8, dtype=torch.float64))
    assert out.shape == (3, 4)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) + x)


def test_structured_pruning_refuses_residual_connection() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"'a'.*add"):
        compress(_Residual(), config_from_dict({"method": "structured_prune", "include": ["a"]}))


def test_lora_merge_equals_unmerged_forward() -> None:
    model = make_mlp(dtype=torch.float64)
    res = compress(model, config_from_dict({"method": "lora", "rank": 2, "steps": 0, "merge": False}))
    g = torch.Generator().manual_seed(5)
    for _, mod in res.model.named_modules():
        if isinstance(mod, nn.Linear) and hasattr(mod, "parametrizations"):
            lora = mod.parametrizations.weight[0]
            assert isinstance(lora, LoRA)
            with torch.no_grad():
                lora.B.copy_(torch.randn(lora.B.shape, generator=g, dtype=torch.float64))
    x = torch.randn(10, 8, dtype=torch.float64)
    unmerged = res.model(x)
    from simcompress.compress.methods.lora import merge_lora_

    for mod in res.model.modules():
        merge_lora_(mod)
    assert not any(hasattr(m, "parametrizations") for m in res.model.modules())
    torch.testing.assert_close(res.model(x), unmerged, rtol=0, atol=EXACT)
    assert not torch.allclose(unmerged, model(x))  # the update really changed the function


def test_lora_trains_only_adapters(trainer) -> None:
    model = make_mlp()
    res = compress(model, config_from_dict({"method": "lora", "rank": 2, "steps": 3, "lr": 1e-2}), trainer=trainer)
    assert all(p.requires_grad for p in res.model.parameters())  # flags restored
    assert all(isinstance(m, (nn.Linear, nn.LeakyReLU, nn.BatchNorm1d, nn.Sequential)) for m in res.model.modules())


def test_tensor_train_error_falls_with_rank() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(36, 48, generator=g, dtype=torch.float64)
    of, inf = balanced_factors(36, 3), balanced_factors(48, 3)
    errors = []
    for r in (1, 2, 4, 8, 64):
        cores, ranks = tt_decompose(w, of, inf, r)
        tt = TTLinear(48, 36, inf, of, ranks, bias=False).to(torch.float64)
        with torch.no_grad():
            for p, c in zip(tt.cores, cores, strict=False):
                p.copy_(c)
        errors.append(float(torch.linalg.norm(tt.full_weight().detach() - w)))
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-10 * float(torch.linalg.norm(w))  # full TT rank is exact


def test_ttlinear_forward_equals_full_weight_with_padding() -> None:
    tt = TTLinear(23, 13, balanced_factors(23, 2), balanced_factors(13, 2), [1, 3, 1]).to(torch.float64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tt.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(7, 23, dtype=torch.float64)
    torch.testing.assert_close(tt(x), x @ tt.full_weight().T + tt.bias, rtol=0, atol=1e-12)
    assert tt.macs_per_sample() > 0


def test_balanced_factors() -> None:
    assert balanced_factors(64, 3) == [4, 4, 4]
    assert math.prod(balanced_factors(368, 2)) >= 368
    assert balanced_factors(368, 2) == [21, 18]  # 378 = 21 * 18: 2.7 % zero padding


def test_tucker_full_rank_is_exact_and_low_rank_smaller() -> None:
    model = ConvNet().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with pytest.warns(CoverageWarning, match=r"head \(Linear"):  # tucker factorizes convolutions only
        full = compress(model, config_from_dict({"method": "tucker", "rank_ratio": 1.0, "only_if_smaller": False}))
    assert [r["name"] for r in full.coverage["left_alone"]] == ["head"]
    torch.testing.assert_close(full.model(x), model(x), rtol=0, atol=1e-10)
    low = compress(model, config_from_dict({"method": "tucker", "rank_ratio": 0.5, "include": ["c2"], "only_if_smaller": False}))
    assert isinstance(low.model.c2, Factorized) and len(low.model.c2) == 3
    assert low.layers[0].details["ranks"] == [3, 4]


def test_fake_quantize_grid_and_straight_through_gradient() -> None:
    x = torch.tensor([-1.0, -0.26, 0.0, 0.24, 0.26, 0.8, 2.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.25), torch.tensor(0.0), 3, True)  # codes -4..3
    assert y.tolist() == [-1.0, -0.25, 0.0, 0.25, 0.25, 0.75, 0.75]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # zero where clamped


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "mse"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_ptq_weights_lie_on_the_grid(calibration: str, granularity: str) -> None:
    model = make_mlp()
    cfg = config_from_dict({"method": "ptq", "weights": {"bits": 4, "calibration": calibration, "granularity": granularity}})
    res = compress(model, cfg)
    lin = res.model[0]
    fq = lin.parametrizations.weight[0]
    assert isinstance(fq, FakeQuant) and fq.bits == 4
    assert fq.scale.numel() == (24 if granularity == "per_channel" else 1)
    codes = lin.weight / fq.scale
    torch.testing.assert_close(codes, torch.round(codes), rtol=0, atol=1e-4)
    assert int(codes.abs().max().round()) <= 8


def test_mse_calibration_beats_minmax_on_gaussian_weights() -> None:
    model = make_mlp()  # Gaussian weights: at 3 bits, clipping the tails lowers the total error
    errs = {}
    for cal in ("minmax", "mse"):
        res = compress(model, config_from_dict({"method": "ptq", "weights": {"bits": 3, "calibration": cal, "granularity": "per_tensor"}}))
        errs[cal] = float(((res.model[0].weight - model[0].weight) ** 2).sum().detach())
    assert errs["mse"] < errs["minmax"]


def test_activation_quantizer_calibrated_on_inputs(x: torch.Tensor) -> None:
    model = make_mlp()
    res = compress(model, config_from_dict({"method": "ptq", "weights": None, "activations": {"bits": 8}}), calibration=x)
    q = res.model[0].input_quantizer
    lo, hi = float(x.min()), float(x.max())
    assert float(q.scale) == pytest.approx((hi - lo) / 255, rel=1e-5)
    assert float((res.model(x) - model(x)).abs().max().detach()) < 0.05


def test_mixed_precision_meets_budget_and_gives_sensitive_layers_more_bits(x: torch.Tensor) -> None:
    model = make_mlp()
    res = compress(model, config_from_dict({"method": "mixed_precision", "avg_bits": 5.0, "candidate_bits": [2, 4, 8]}), calibration=x)
    bits = {r.name: r.details["weight_bits"] for r in res.layers}
    numel = {r.name: res.model.get_submodule(r.name).weight.numel() for r in res.layers}
    mean = sum(bits[n] * numel[n] for n in bits) / sum(numel.values())
    assert mean <= 5.0 and res.extra["mean_weight_bits"] == pytest.approx(mean)
    assert len(set(bits.values())) > 1


def test_magnitude_pruning_layerwise_and_global_exact_counts() -> None:
    model = make_mlp()
    res = compress(model, config_from_dict({"method": "magnitude_prune", "sparsity": 0.75}))
    for r in res.layers:
        w = res.model.get_submodule(r.name).weight
        assert int((w == 0).sum()) == round(0.75 * w.numel())
    res_g = compress(model, config_from_dict({"method": "magnitude_prune", "sparsity": 0.6, "scope": "global"}))
    ws = [res_g.model.get_submodule(r.name).weight for r in res_g.layers]
    total = sum(w.numel() for w in ws)
    assert sum(int((w == 0).sum()) for w in ws) == round(0.6 * total)
    kept_min = min(float(w[w != 0].abs().min().detach()) for w in ws)
    orig = torch.cat([model.get_submodule(r.name).weight.detach().abs().reshape(-1) for r in res_g.layers])
    assert kept_min >= float(torch.kthvalue(orig, round(0.6 * total)).values)


def test_polynomial_schedule_and_gradual_pruning(trainer) -> None:
    assert polynomial_sparsity(50, 0.5, 0.9, 100) == pytest.approx(0.9 + (0.5 - 0.9) * 0.5**3)
    res = compress(make_mlp(), config_from_dict({"method": "gradual_prune", "initial_sparsity": 0.5, "final_sparsity": 0.8,
                                                 "steps": 20, "update_every": 5, "recovery_steps": 5, "scope": "layer"}), trainer=trainer)
    assert [s["step"] for s in res.extra["schedule"]] == [0, 5, 10, 15, 20]
    sp = [s["sparsity"] for s in res.extra["schedule"]]
    assert sp[0] == 0.5 and sp[-1] == pytest.approx(0.8) and sp == sorted(sp)
    for r in res.layers:
        w = res.model.get_submodule(r.name).weight
        assert int((w == 0).sum()) == round(0.8 * w.numel())  # recovery training keeps masked weights at zero


class _MaskedLinear(nn.Linear):
    """A Linear subclass with its own forward (like MADE's masked layers)."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(i, o)
        self.register_buffer("mask", torch.tril(torch.ones(o, i)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


def test_structural_methods_keep_linear_subclasses_and_say_so() -> None:
    model = nn.Sequential(_MaskedLinear(6, 6), nn.ReLU(), nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    x = torch.randn(4, 6)
    res = compress(model, SVDConfig(rank=1))
    kept = [r for r in res.layers if r.name == "0"]
    assert kept and kept[0].details["kept"] and "own forward" in kept[0].details["note"]
    assert type(res.model[0]) is _MaskedLinear
    # weight-only methods act through .weight, so the subclass keeps its own maths on quantized weights
    q = compress(model, config_from_dict({"method": "ptq", "weights": {"bits": 4}}))
    assert {r.name for r in q.layers} == {"0", "2", "4"}
    w = q.model[0].weight.detach()
    assert torch.equal(q.model[0](x), nn.functional.linear(x, w * model[0].mask, q.model[0].bias))


def test_structured_pruning_keep_mode_records_the_reason() -> None:
    res = compress(_Residual(), config_from_dict({"method": "structured_prune", "include": ["a"], "on_unsupported": "keep"}))
    assert res.layers[0].details["kept"] and "add" in res.layers[0].details["note"]
    assert res.model.a.out_features == 4
