"""compression_report's throughput is the execution form the deploy path picks (issue 14, part 3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from compress_toys import make_mlp

from simcompress.compress import compress, config_from_dict, report
from simcompress.compress.deploy import Int8Linear, choose_form, deploy, network_inputs
from simcompress.compress.report import compression_report, report_markdown
from simcompress.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gan_q():
    from simcompress.generators import build_generator
    from simcompress.showers.geometry import Geometry

    torch.manual_seed(0)
    gan = build_generator({
        "kind": "gan", "latent_dim": 8, "geometry": Geometry.from_name("ds1-photons").to_dict(),
        "energy_range_mev": [256.0, 4194304.0],
        "architecture": {"hidden": [64, 128], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]},
    }).eval()
    q = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 8, "granularity": "per_channel"}})).model.eval()
    return gan, q


class _Spy:
    """Records the models and torch threads ``report.sample_rate`` measures with."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, []

    def __call__(self, models: dict[str, Any], batch: int, **kw: Any) -> dict[str, float]:
        rates = self.real(models, batch, **kw)
        self.calls.append({"models": dict(models), "batch": batch, "threads": torch.get_num_threads(), "rates": rates})
        return rates


def test_report_measures_and_names_the_form_choose_form_picks(gan_q, monkeypatch: pytest.MonkeyPatch) -> None:
    gan, q = gan_q
    spy, chosen = _Spy(report.sample_rate), []

    def choose(model: Any, **kw: Any) -> Any:
        chosen.append((model, kw))
        ch = choose_form(model, **kw)
        chosen.append(ch)
        return ch

    monkeypatch.setattr(report, "sample_rate", spy)
    monkeypatch.setattr(report, "choose_form", choose)
    torch.set_num_threads(2)  # the figure is on one thread whatever the caller set
    rep = compression_report(gan, q, n_samples=64, batch=256, min_time=0.005, repeats=1, onnx=False)
    assert torch.get_num_threads() == 2
    (model, kw), ch = chosen
    assert model is q and kw["batch"] == 256 and kw["threads"] == 1
    (call,) = spy.calls
    fast = call["models"]["compressed"]
    assert call["batch"] == 256 and call["threads"] == 1
    assert getattr(fast, "_deploy_form", None) == ch.form == rep["deploy"]["form"]  # the deploy path's model, not a bake
    assert rep["compressed"]["throughput"] == call["rates"]["compressed"]
    assert rep["original"]["throughput"] == call["rates"]["original"]
    assert rep["ratios"]["throughput"] == pytest.approx(call["rates"]["compressed"] / call["rates"]["original"])
    d = rep["deploy"]
    assert d["max_abs_diff_vs_fake_quantized"] == ch.max_abs_diff[ch.form] and d["rates"] == ch.rates
    assert d["measured_batch"] == 256 and d["measured_threads"] == 1 == rep["threads"]
    assert f"execution form {ch.form!r}" in rep["throughput_unit"] and "batch 256" in rep["throughput_unit"]
    assert rep["deployable_form"][0].startswith(f"execution form {ch.form!r}")
    assert f"execution form {ch.form!r}" in report_markdown(rep)
    json.dumps(rep)


def test_report_runs_a_given_int8_choice_through_integer_kernels(gan_q, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a recorded torch-int8 choice the measured student runs Int8Linear layers (a baked
    measurement would have none) and the reported difference is that form's, not zero."""
    gan, q = gan_q
    ch = choose_form(q, batch=128, min_time=0.005, repeats=1, forms=("baked", "torch-int8"))
    ch.form = "torch-int8"
    spy = _Spy(report.sample_rate)

    def no_choice(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a given choice is not chosen again")

    monkeypatch.setattr(report, "sample_rate", spy)
    monkeypatch.setattr(report, "choose_form", no_choice)
    rep = compression_report(gan, q, n_samples=64, batch=128, choice=ch, min_time=0.005, repeats=1, onnx=False)
    fast = spy.calls[0]["models"]["compressed"]
    assert sum(isinstance(m, Int8Linear) for m in fast.modules()) == 3
    assert rep["deploy"]["form"] == "torch-int8" and "torch-int8" in rep["throughput_unit"]
    diff = rep["deploy"]["max_abs_diff_vs_fake_quantized"]
    assert diff == ch.max_abs_diff["torch-int8"] and diff > 0
    # the same form deploy() builds for generate: its network output on fresh inputs is the measured model's
    args = network_inputs(q, 32, seed=9)
    with torch.no_grad():
        assert torch.equal(fast.network(*args), deploy(q, "torch-int8").network(*args))


def test_module_report_is_baked_and_bad_arguments_are_refused() -> None:
    torch.manual_seed(1)
    model = make_mlp(widths=(16, 32, 8)).double()
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = compress(model, config_from_dict({"method": "magnitude_prune", "sparsity": 0.5})).model
    rep = compression_report(model, q, example=(x,), min_time=0.005, repeats=1, onnx=False)
    assert rep["deploy"]["form"] == "baked" and rep["deploy"]["max_abs_diff_vs_fake_quantized"] == 0.0
    assert rep["throughput_unit"] == "samples/s (forward())"
    with pytest.raises(ConfigError, match="batch must be >= 1"):
        compression_report(model, q, example=(x,), batch=0, onnx=False)
    with pytest.raises(ConfigError, match="for shower generators"):
        compression_report(model, q, example=(x,), choice=object(), onnx=False)  # type: ignore[arg-type]
