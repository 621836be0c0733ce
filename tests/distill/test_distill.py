"""Distillation: losses fall, students match teachers for the same noise, students are ordinary bundles."""

from __future__ import annotations

import json

import pytest
import torch

from simcompress.compress import GateResult, compress, config_from_dict, list_methods
from simcompress.distill import FlowToIAFConfig, GANToGANConfig, ToMLPConfig, compare_sampling_speed
from simcompress.distill.config import TrainingConfig
from simcompress.distill.students import IAFGenerator, MLPGenerator, check_firmware_layers
from simcompress.distill.train import Trainer
from simcompress.errors import ConfigError, UnsupportedLayerError
from simcompress.generators import load_generator, save_generator
from simcompress.generators.flow import FlowGenerator
from simcompress.generators.gan import GANGenerator
from simcompress.showers.geometry import Geometry

# 2 layers, 3 + 4 voxels: flow dimension L + V = 9 (the "toy 8-D-ish problem")
TOY = {
    "name": "toy",
    "layers": [
        {"id": 0, "r_edges_mm": [0, 1, 2, 4], "n_alpha": 1},
        {"id": 1, "r_edges_mm": [0, 2, 4], "n_alpha": 2},
    ],
}
FAST_SPEED = {"speed_batch_sizes": (1, 64), "speed_min_seconds": 0.01}


@pytest.fixture(scope="module")
def geo() -> Geometry:
    return Geometry.from_dict(TOY)


def _train(steps: int = 300, **kw: object) -> dict:
    return {"steps": steps, "batch_size": 128, "lr": 3e-3, "pool_size": 1024, "progress": False, "seed": 3, **kw}


@pytest.fixture(scope="module")
def flow_teacher(geo: Geometry) -> FlowGenerator:
    torch.manual_seed(0)
    t = FlowGenerator(geo, n_blocks=2, hidden=[32], n_groups=4, energy_range_mev=(1e3, 1e5))
    with torch.no_grad():  # a non-trivial teacher: random affine maps instead of the identity
        for b in t.network.blocks:
            b.made.out.weight.normal_(0, 0.1)
            b.made.out.bias.normal_(0, 0.3)
    return t.eval()


@pytest.fixture(scope="module")
def gan_teacher(geo: Geometry) -> GANGenerator:
    torch.manual_seed(1)
    return GANGenerator(geo, latent_dim=8, hidden=[64, 64], energy_range_mev=(1e3, 1e5)).eval()


@torch.no_grad()
def _same_noise(teacher, student, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(777)
    e = torch.exp(torch.empty(n).uniform_(torch.log(torch.tensor(1e3)).item(), torch.log(torch.tensor(1e5)).item(), generator=g))
    z = torch.randn(n, teacher.latent_dim, generator=g)
    return teacher.network(z, teacher.condition(e)), student.network(z, student.condition(e))


def test_methods_registered() -> None:
    assert {"distill_flow_iaf", "distill_mlp", "distill_gan"} <= set(list_methods())


@pytest.fixture(scope="module")
def iaf_result(flow_teacher: FlowGenerator):
    cfg = FlowToIAFConfig(training=_train(400), student={"hidden": 32}, **FAST_SPEED)
    return compress(flow_teacher, cfg)


def test_iaf_student_reproduces_teacher_for_same_noise(flow_teacher: FlowGenerator, iaf_result) -> None:
    student = iaf_result.model
    assert isinstance(student, IAFGenerator) and student.kind == "iaf"
    yt, ys = _same_noise(flow_teacher, student)
    # before training the student is the identity map: its error is the teacher's displacement
    identity_err = (yt - _same_noise(flow_teacher, IAFGenerator.like(flow_teacher, hidden=[32]))[1]).pow(2).mean()
    err = (yt - ys).pow(2).mean()
    assert identity_err > 0.05  # the toy teacher is far from the identity
    assert err < 0.05 * identity_err  # the student reproduces the teacher's samples for the same noise
    hist = iaf_result.extra["distillation"]["phases"]["flow_to_iaf"]
    assert hist["final_loss"] < 0.1 * hist["first_loss"]
    assert iaf_result.extra["distillation"]["intermediate_states"] is True


def test_iaf_is_a_flow_with_exact_inverse(iaf_result, geo: Geometry) -> None:
    student = iaf_result.model
    g = torch.Generator().manual_seed(5)
    z = torch.randn(64, student.latent_dim, generator=g)
    c = student.condition(torch.full((64,), 5e3))
    with torch.no_grad():
        x = student.network(z, c)
        z_back, _ = student.network.transform(x, c)
        lp = student.network.log_prob(x, c)
    assert (z_back - z).abs().max() < 1e-4
    assert torch.isfinite(lp).all()


def test_iaf_sampling_is_faster_and_measured(iaf_result) -> None:
    speed = iaf_result.extra["speed"]
    assert speed["measured"] is True and speed["batch_sizes"] == [1, 64]
    for bs in ("1", "64"):
        assert speed["rates"]["teacher"][bs]["showers_per_second"] > 0
        assert speed["speedup"]["student"][bs] > 0


def test_mlp_student_regression_and_physics(flow_teacher: FlowGenerator) -> None:
    cfg = ToMLPConfig(training=_train(400), student={"width": 64, "depth": 2}, **FAST_SPEED)
    res = compress(flow_teacher, cfg)
    student = res.model
    assert isinstance(student, MLPGenerator) and student.latent_dim == flow_teacher.latent_dim
    check_firmware_layers(student.network)  # passes: only Linear / LeakyReLU
    hist = res.extra["distillation"]["phases"]["to_mlp"]
    assert hist["final_loss"] < 0.5 * hist["first_loss"]
    same = res.extra["distillation"]["same_noise"]
    assert abs(same["total_energy_mean_rel_diff"]) < 0.05
    assert same["layer_fraction_mean_abs_diff"] < 0.1


def test_gan_student_quarter_params_feature_matching(gan_teacher: GANGenerator) -> None:
    ref = (torch.full((64,), 5e3), gan_teacher.sample(torch.full((64,), 5e3), torch.Generator().manual_seed(2)))
    cfg = GANToGANConfig(training=_train(300), student={"width": 12, "depth": 2}, adversarial_steps=10, **FAST_SPEED)
    res = compress(gan_teacher, cfg, reference=ref)
    student = res.model
    assert isinstance(student, GANGenerator)
    d = res.extra["distillation"]
    assert d["param_ratio"] <= 0.25
    ph = d["phases"]["gan_to_gan"]
    assert ph["final_loss"] < 0.3 * ph["first_loss"]
    assert d["phases"]["adversarial"]["steps"] == 10
    assert abs(d["same_noise"]["total_energy_mean_rel_diff"]) < 0.05


def test_gan_student_with_a_narrower_latent_reads_the_teachers_first_coordinates(gan_teacher: GANGenerator) -> None:
    """latent_dim 3 of the teacher's 8: the student takes z[:, :3] in training, in the same-noise figures and in
    the pipeline's fine-tuning toward the teacher; it samples its own 3-wide noise; wider than the teacher is refused."""
    from simcompress.generators.train import finetune_to_teacher

    torch.manual_seed(0)  # the student's initial weights
    cfg = GANToGANConfig(training=_train(300), student={"width": 12, "depth": 2}, latent_dim=3, **FAST_SPEED)
    res = compress(gan_teacher, cfg)
    student = res.model
    assert student.latent_dim == 3 and student.network.body[0].in_features == 3 + student.n_cond
    ph = res.extra["distillation"]["phases"]["gan_to_gan"]
    assert ph["final_loss"] < 0.5 * ph["first_loss"]
    assert abs(res.extra["distillation"]["same_noise"]["total_energy_mean_rel_diff"]) < 0.05
    e = torch.full((16,), 5e3)
    assert student.sample(e, torch.Generator().manual_seed(0)).shape == (16, gan_teacher.geometry.n_voxels)
    # the student learned the pairing: across noise its outputs follow the teacher's on the same first
    # coordinates (mean per-output correlation 0.33 here), not on shuffled ones (0.03)
    g = torch.Generator().manual_seed(5)
    z, c = torch.randn(512, 8, generator=g), gan_teacher.condition(torch.full((512,), 5e3))

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a - a.mean(0), b - b.mean(0)
        return float(((a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))).mean())

    with torch.no_grad():
        yt = gan_teacher.network(z, c)
        paired = corr(student.network(z[:, :3], c), yt)
        shuffled = corr(student.network(z[torch.randperm(512, generator=g), :3], c), yt)
    assert paired > 0.2 and paired > 5 * abs(shuffled)
    r = finetune_to_teacher(student, gan_teacher, steps=20, lr=1e-3, batch_size=64)
    assert r["loss_after"] <= r["loss_before"] * 1.05
    with pytest.raises(ConfigError, match="latent_dim 9 is wider than the teacher's noise \\(8\\)"):
        compress(gan_teacher, GANToGANConfig(training=_train(2), student={"width": 8, "depth": 1}, latent_dim=9, **FAST_SPEED))
    with pytest.raises(ConfigError, match="wider than the teacher's"):
        finetune_to_teacher(gan_teacher, student, steps=1, lr=1e-3)


def test_gan_student_too_large_refused(gan_teacher: GANGenerator) -> None:
    cfg = GANToGANConfig(training=_train(2), student={"width": 64, "depth": 2}, **FAST_SPEED)
    with pytest.raises(ConfigError, match="max_param_fraction"):
        compress(gan_teacher, cfg)


def test_adversarial_needs_reference(gan_teacher: GANGenerator) -> None:
    cfg = GANToGANConfig(training=_train(2), student={"width": 8, "depth": 1}, adversarial_steps=5, **FAST_SPEED)
    with pytest.raises(ConfigError, match="reference"):
        compress(gan_teacher, cfg)


def test_gan_adversarial_against_the_teachers_showers_needs_no_reference(gan_teacher: GANGenerator) -> None:
    """adversarial_real 'teacher': the fine-tuning runs on the teacher pool (no reference), moves the student,
    and a reference passed alongside is not what it trains on (same numbers with or without it)."""
    kw = {"training": _train(40), "student": {"width": 12, "depth": 2}, **FAST_SPEED}
    torch.manual_seed(0)
    plain = compress(gan_teacher, GANToGANConfig(**kw)).model
    cfg = GANToGANConfig(adversarial_steps=15, adversarial_real="teacher", adversarial_lr=1e-3, **kw)
    torch.manual_seed(0)
    res = compress(gan_teacher, cfg)
    adv = res.extra["distillation"]["phases"]["adversarial"]
    assert adv["steps"] == 15
    with torch.no_grad():
        moved = max(float((a - b).abs().max()) for a, b in zip(plain.network.parameters(), res.model.network.parameters(), strict=True))
    assert moved > 1e-4
    ref = (torch.full((64,), 5e3), gan_teacher.sample(torch.full((64,), 5e3), torch.Generator().manual_seed(2)) * 3.0)
    torch.manual_seed(0)
    again = compress(gan_teacher, cfg, reference=ref).model
    for a, b in zip(res.model.network.parameters(), again.network.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="adversarial_real"):
        config_from_dict({"method": "distill_gan", "adversarial_real": "candidate"}, "recipe.yaml")


def test_gan_feature_mmd_term_is_trained_and_reported(gan_teacher: GANGenerator) -> None:
    kw = {"training": _train(200), "student": {"width": 12, "depth": 2}, **FAST_SPEED}
    torch.manual_seed(0)
    res = compress(gan_teacher, GANToGANConfig(feature_mmd=5.0, **kw))
    hist = res.extra["distillation"]["phases"]["gan_to_gan"]
    assert "feature_mmd" in json.dumps(hist)
    torch.manual_seed(0)
    off = compress(gan_teacher, GANToGANConfig(**kw))
    assert "feature_mmd" not in json.dumps(off.extra["distillation"]["phases"]["gan_to_gan"])
    with pytest.raises(ConfigError, match="feature_mmd"):
        config_from_dict({"method": "distill_gan", "feature_mmd": -1.0}, "recipe.yaml")


def test_gan_shape_term_above_the_validation_threshold(gan_teacher: GANGenerator) -> None:
    """weight_shape > 0 adds the same-noise term on the summary columns, reported per step and lowered by the
    training; feature_threshold_mev moves what every term compares (other numbers than raw showers)."""
    kw = {"training": _train(200), "student": {"width": 12, "depth": 2}, **FAST_SPEED}
    torch.manual_seed(0)
    res = compress(gan_teacher, GANToGANConfig(weight_shape=2.0, feature_threshold_mev=1.0, sparsity_sharpness=4.0, **kw))
    hist = res.extra["distillation"]["phases"]["gan_to_gan"]["history"]
    assert all("shape" in h for h in hist)
    assert hist[-1]["shape"] < hist[0]["shape"]
    torch.manual_seed(0)
    raw = compress(gan_teacher, GANToGANConfig(weight_shape=2.0, sparsity_sharpness=4.0, **kw))
    assert raw.extra["distillation"]["phases"]["gan_to_gan"]["history"][0]["output"] != hist[0]["output"]
    for key, bad in (("weight_shape", -1.0), ("feature_threshold_mev", -0.5), ("sparsity_sharpness", 0.0)):
        with pytest.raises(ConfigError, match=key):
            config_from_dict({"method": "distill_gan", key: bad}, "recipe.yaml")


def test_students_load_as_ordinary_bundles(iaf_result, gan_teacher: GANGenerator, tmp_path) -> None:
    mlp = MLPGenerator(gan_teacher.geometry, latent_dim=8, width=16, depth=2, energy_range_mev=(1e3, 1e5))
    small_gan = GANGenerator(gan_teacher.geometry, latent_dim=8, hidden=[8], energy_range_mev=(1e3, 1e5))
    e = torch.tensor([2e3, 3e4, 9e4])
    for name, gen in {"iaf": iaf_result.model, "mlp": mlp, "gan": small_gan}.items():
        out = save_generator(gen, tmp_path / name, card={"note": "distilled"})
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["kind"] == gen.kind and "compression" not in cfg
        back = load_generator(out)
        assert type(back) is type(gen)
        a = gen.sample(e, torch.Generator().manual_seed(9))
        b = back.sample(e, torch.Generator().manual_seed(9))
        assert torch.equal(a, b), name


def test_firmware_recipe_refuses_unconvertible_layers() -> None:
    with pytest.raises(ConfigError, match="hls4ml-convertible"):
        config_from_dict({"method": "distill_mlp", "student": {"activation": "gelu"}}, "recipe.yaml")
    ToMLPConfig(firmware=False, student={"activation": "gelu"})  # allowed off-firmware
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.SiLU(), torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' is SiLU.*allowed: .*Linear"):
        check_firmware_layers(net)


def test_wrong_teacher_kind_refused(gan_teacher: GANGenerator, flow_teacher: FlowGenerator) -> None:
    with pytest.raises(UnsupportedLayerError, match="kind 'gan'"):
        compress(gan_teacher, FlowToIAFConfig(training=_train(2)))
    with pytest.raises(UnsupportedLayerError, match="kind 'flow'"):
        compress(flow_teacher, GANToGANConfig(training=_train(2)))


def test_unknown_config_key_named() -> None:
    with pytest.raises(ConfigError, match=r"training.step: unknown key 'step'; did you mean 'steps'"):
        config_from_dict({"method": "distill_mlp", "training": {"step": 3}}, "r.yaml")


def test_gate_on_teacher_and_student(gan_teacher: GANGenerator) -> None:
    calls = []

    def gate(model):
        calls.append(model.kind)
        x = model.sample(torch.full((32,), 5e3), torch.Generator().manual_seed(0))
        return GateResult(passed=True, summary="ok", metrics={"mean_total_mev": float(x.sum(1).mean())})

    cfg = GANToGANConfig(training=_train(5), student={"width": 8, "depth": 1}, **FAST_SPEED)
    res = compress(gan_teacher, cfg, gate=gate)
    fid = res.extra["fidelity"]
    assert calls == ["gan", "gan"]
    assert fid["teacher"]["passed"] and "mean_total_mev" in fid["student"]["metrics"]
    json.dumps(res.report())  # the whole report is JSON


def test_checkpoint_resume_is_bit_identical(tmp_path) -> None:
    torch.manual_seed(0)
    target = torch.randn(256, 2)

    def make():
        torch.manual_seed(1)
        return torch.nn.Linear(2, 2)

    def loss_for(m, fail_at=None):
        calls = {"n": 0}

        def fn(idx, gen):
            calls["n"] += 1
            if fail_at is not None and calls["n"] == fail_at:
                raise KeyboardInterrupt
            loss = (m(target[idx]) - target[idx].flip(1)).pow(2).mean()
            return loss, {"loss": float(loss.detach())}

        return fn

    cfg = TrainingConfig(steps=20, batch_size=16, checkpoint_every=5, progress=False, checkpoint_dir=str(tmp_path / "a"))
    ref = make()
    Trainer("p", {"m": ref}, cfg, "fp").run(loss_for(ref), 256)

    cfg_b = cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "b")})
    m1 = make()
    with pytest.raises(KeyboardInterrupt):
        Trainer("p", {"m": m1}, cfg_b, "fp").run(loss_for(m1, fail_at=13), 256)
    m2 = make()
    t2 = Trainer("p", {"m": m2}, cfg_b, "fp")
    hist = t2.run(loss_for(m2), 256)
    assert hist[-1]["step"] == 20
    for a, b in zip(ref.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="different distillation run"):
        Trainer("p", {"m": make()}, cfg_b, "another-run").run(loss_for(make()), 256)


def test_pool_cached_and_resumed(flow_teacher: FlowGenerator, tmp_path) -> None:
    cfg = ToMLPConfig(training=_train(30, checkpoint_dir=str(tmp_path), checkpoint_every=10), student={"width": 16, "depth": 1}, **FAST_SPEED)
    r1 = compress(flow_teacher, cfg)
    assert (tmp_path / "pool.safetensors").is_file() and (tmp_path / "to_mlp" / "state.json").is_file()
    r2 = compress(flow_teacher, cfg)  # finds the finished checkpoint: same student, no training
    for a, b in zip(r1.model.parameters(), r2.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_compare_sampling_speed_same_run(gan_teacher: GANGenerator) -> None:
    out = compare_sampling_speed({"teacher": gan_teacher, "student": gan_teacher}, (1, 10), 0.0)
    assert set(out["speedup"]["student"]) == {"1", "10"}
    assert out["rates"]["teacher"]["10"]["batch_size"] == 10


def test_sampling_rate_excludes_the_first_full_size_batch() -> None:
    """The first batch of a new size (the allocator's first touch) is warm-up, not measurement."""
    import time

    from simcompress.distill import sampling_rate

    class ColdFirstBatch:
        def __init__(self) -> None:
            self.seen: set[int] = set()

        def sample(self, e: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
            if len(e) not in self.seen:
                self.seen.add(len(e))
                time.sleep(0.3)
            return e

    r = sampling_rate(ColdFirstBatch(), 1000, 1e3, min_seconds=0.0)
    assert r["batches"] == 1
    assert r["seconds"] < 0.05  # the 0.3 s cold batch was the untimed warm-up


def test_distill_then_fixed_point_chain_saves_and_loads(flow_teacher: FlowGenerator, tmp_path) -> None:
    from simcompress.compress.bundle import save_compressed
    from simcompress.compress.fixed_point import precision_record
    from simcompress.compress.pipeline import Pipeline

    steps = [
        {"method": "distill_mlp", "student": {"width": 16, "depth": 2}, "training": _train(40), **FAST_SPEED},
        {"method": "fixed_point", "network": "network", "weight": {"width": 10}},
    ]
    res = Pipeline(steps).run(flow_teacher)
    model = res.model
    assert model.kind == "mlp"
    rec = precision_record(model)
    assert rec is not None and set(rec["layers"]) >= {"body.0", "body.2", "body.4"}
    first = res.steps[0].result
    assert first.extra["replaces_model"] is True
    out = save_compressed(model, first.extra["base_config"], [s.config.to_dict() for s in res.steps], None, tmp_path / "b")
    back = load_generator(out)
    e = torch.tensor([2e3, 5e4])
    assert torch.equal(model.sample(e, torch.Generator().manual_seed(4)), back.sample(e, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("recipe", ["flow-to-iaf", "flow-to-mlp", "gan-to-small-gan", "distill-then-fixed-point"])
def test_shipped_recipes_parse(recipe: str) -> None:
    from pathlib import Path

    from simcompress.compress.pipeline import load_recipe

    path = Path(__file__).resolve().parents[2] / "configs" / "compress" / f"{recipe}.yaml"
    r = load_recipe(path)
    assert r.steps[0]["method"].startswith("distill_")


def test_iaf_reverse_kl_and_endpoint_only_matching(flow_teacher: FlowGenerator) -> None:
    # a student with fewer blocks than the teacher: only the end states can be matched
    cfg = FlowToIAFConfig(training=_train(60), student={"hidden": 16, "steps": 1}, weight_reverse_kl=0.1, **FAST_SPEED)
    res = compress(flow_teacher, cfg)
    d = res.extra["distillation"]
    assert d["intermediate_states"] is False
    hist = d["phases"]["flow_to_iaf"]["history"]
    assert all("reverse_kl_per_dim" in h and torch.isfinite(torch.tensor(h["reverse_kl_per_dim"])) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert len(res.model.network.blocks) == 1


def test_iaf_teacher_init_needs_matching_shapes(flow_teacher: FlowGenerator) -> None:
    with pytest.raises(ConfigError, match="init 'teacher'"):
        compress(flow_teacher, FlowToIAFConfig(training=_train(2), student={"hidden": 16, "init": "teacher"}))
    res = compress(flow_teacher, FlowToIAFConfig(training=_train(1), student={"hidden": 32, "init": "teacher"}, **FAST_SPEED))
    for sb, tb in zip(res.model.network.blocks, flow_teacher.network.blocks, strict=True):
        assert sb.made.out.weight.shape == tb.made.out.weight.shape


# --------------------------------------------------------------------------------------
# spline (rqs) IAF students of a spline teacher
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rqs_teacher(geo: Geometry) -> FlowGenerator:
    torch.manual_seed(4)
    t = FlowGenerator(geo, n_blocks=2, hidden=[32], n_groups=4, transform="rqs", n_bins=4, tail_bound=4.0, energy_range_mev=(1e3, 1e5))
    with torch.no_grad():  # a non-trivial spline teacher
        for b in t.network.blocks:
            b.made.out.weight.normal_(0, 0.1)
            b.made.out.bias.normal_(0, 0.5)
    return t.eval()


def test_rqs_iaf_block_is_an_exact_bijection_with_the_jacobians_logdet(rqs_teacher: FlowGenerator) -> None:
    student = IAFGenerator.like(rqs_teacher, hidden=[16], transform="rqs").double()
    with torch.no_grad():
        for i, p in enumerate(student.network.parameters()):
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype))
    g = torch.Generator().manual_seed(6)
    z = 1.5 * torch.randn(16, student.latent_dim, generator=g, dtype=torch.float64)
    c = student.condition(torch.full((16,), 4e3)).double()
    with torch.no_grad():
        states, ld_sample = student.network.sample_states(z, c)
        z_back, ld_density = student.network.transform(states[0], c)
    assert (z_back - z).abs().max().item() < 1e-9
    assert (ld_sample + ld_density).abs().max().item() < 1e-9
    for n in range(3):  # log|det dx/dz| against the autograd Jacobian of the sampling map
        cn = c[n : n + 1]
        jac = torch.autograd.functional.jacobian(lambda v, cn=cn: student.network(v[None], cn)[0], z[n])
        assert abs(torch.linalg.slogdet(jac)[1].item() - ld_sample[n].item()) < 1e-8


def test_rqs_iaf_student_follows_a_spline_teacher_better_than_an_affine_one(rqs_teacher: FlowGenerator) -> None:
    errs = {}
    for transform in ("affine", "rqs"):
        cfg = FlowToIAFConfig(training=_train(300), student={"hidden": 32, "transform": transform}, **FAST_SPEED)
        res = compress(rqs_teacher, cfg)
        assert res.model.arch.transform == transform
        yt, ys = _same_noise(rqs_teacher, res.model)
        errs[transform] = (yt - ys).pow(2).mean().item()
        hist = res.extra["distillation"]["phases"]["flow_to_iaf"]
        assert hist["final_loss"] < 0.5 * hist["first_loss"]
    identity = IAFGenerator.like(rqs_teacher, hidden=[32], transform="rqs")
    yt, yi = _same_noise(rqs_teacher, identity)
    err_identity = (yt - yi).pow(2).mean().item()
    assert errs["rqs"] < 0.1 * err_identity
    assert errs["rqs"] < errs["affine"]


def test_rqs_iaf_student_bundle_round_trip(rqs_teacher: FlowGenerator, tmp_path) -> None:
    student = IAFGenerator.like(rqs_teacher, hidden=[16], transform="rqs", n_bins=6)
    with torch.no_grad():
        for p in student.network.parameters():
            p.normal_(0, 0.05)
    save_generator(student, tmp_path / "s")
    back = load_generator(tmp_path / "s")
    assert back.kind == "iaf" and back.arch.transform == "rqs" and back.arch.n_bins == 6
    e = torch.tensor([1.5e3, 2e4, 9e4])
    assert torch.equal(student.sample(e, torch.Generator().manual_seed(1)), back.sample(e, torch.Generator().manual_seed(1)))


def test_shape_features_are_the_validation_centres_and_widths() -> None:
    """distill's differentiable centres / widths equal the validation features (threshold 0) on ds1-photons."""
    from simcompress.distill.common import shape_basis, shape_features
    from simcompress.showers.data import ShowerSet
    from simcompress.validation.features import compute_features

    geo = Geometry.from_name("ds1-photons")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(64, geo.n_voxels, generator=g).pow(4) * 5000.0  # MeV: layer sums >> the 1e-3 MeV guard
    e = torch.full((64,), 1e4)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(geo.voxel_layer, dtype=torch.long), geo.n_layers).float()
    f = shape_features(x.double(), onehot.double(), shape_basis(geo).double()).numpy()
    t = compute_features(ShowerSet(e.numpy(), x.numpy(), geo), threshold_mev=0.0)
    L = geo.n_layers
    xy_layers = 0
    for j, lay in enumerate(geo.layers):
        assert f[:, 4 * L + j] == pytest.approx(t[f"EC_r_{lay.id}"], rel=1e-4, abs=1e-4)
        assert f[:, 5 * L + j] == pytest.approx(t[f"width_r_{lay.id}"], rel=1e-4, abs=1e-4)  # float32 there
        if f"EC_x_{lay.id}" in t:
            assert f[:, j] == pytest.approx(t[f"EC_x_{lay.id}"], rel=1e-4, abs=1e-4)
            assert f[:, 3 * L + j] == pytest.approx(t[f"width_y_{lay.id}"], rel=1e-4, abs=1e-4)
            xy_layers += 1
    assert xy_layers == 2  # ds1-photons layers 1 and 2 have angular bins: the x / y columns were compared


def test_mlp_shape_term_is_trained_and_reported(flow_teacher: FlowGenerator) -> None:
    """shape_features > 0 adds the centre / width term: reported per step, and it ends lower than without it."""
    from simcompress.distill.common import _shape_stats, shape_basis, shape_features

    kw = {"training": _train(300), "student": {"width": 32, "depth": 2}, **FAST_SPEED}
    on = compress(flow_teacher, ToMLPConfig(shape_features=3.0, **kw))
    off = compress(flow_teacher, ToMLPConfig(**kw))
    hist = on.extra["distillation"]["phases"]["to_mlp"]
    assert "shape_features" in json.dumps(hist)
    assert "shape_features" not in json.dumps(off.extra["distillation"]["phases"]["to_mlp"])
    g = torch.Generator().manual_seed(9)
    e = torch.full((2048,), 1e4)
    z = torch.randn(2048, flow_teacher.latent_dim, generator=g)
    with torch.no_grad():
        xt = flow_teacher.postprocess(flow_teacher.network(z, flow_teacher.condition(e)), e)  # as the pool's showers
        basis, onehot = shape_basis(flow_teacher.geometry), on.model.onehot
        ft, sc = _shape_stats(xt, onehot, basis)

        def err(m) -> float:
            xs = m.postprocess(m.network(z, m.condition(e)), e, threshold=False)
            return float(((shape_features(xs, onehot, basis) - ft) / sc).pow(2).mean())

        assert err(on.model) < err(off.model)


def test_shape_features_weight_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="shape_features"):
        config_from_dict({"method": "distill_mlp", "shape_features": -1.0}, "recipe.yaml")


def test_mmd_is_zero_for_one_sample_and_grows_with_a_shift() -> None:
    from simcompress.distill.common import mmd

    g = torch.Generator().manual_seed(2)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64)
    b = torch.randn(400, 6, generator=g, dtype=torch.float64)
    assert float(mmd(a, a)) == pytest.approx(0.0, abs=1e-12)
    same, shifted, wider = float(mmd(a, b)), float(mmd(a, b + 0.5)), float(mmd(a, b * 2.0))
    assert 0.0 <= same < 0.1 * shifted and same < 0.1 * wider  # two samples of one distribution: near 0
    x = b.clone().requires_grad_(True)
    mmd(a, x + 0.5).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_mlp_shape_mmd_term_is_trained_and_reported(flow_teacher: FlowGenerator) -> None:
    kw = {"training": _train(60), "student": {"width": 16, "depth": 1}, **FAST_SPEED}
    res = compress(flow_teacher, ToMLPConfig(shape_mmd=1.0, **kw))
    hist = json.dumps(res.extra["distillation"]["phases"]["to_mlp"])
    assert "shape_mmd" in hist and "shape_features" not in hist
    with pytest.raises(ConfigError, match="shape_mmd"):
        config_from_dict({"method": "distill_mlp", "shape_mmd": -0.5}, "recipe.yaml")
