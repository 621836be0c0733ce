"""Fine-tuning toward the teacher (``finetune_to_teacher``, the default of ``generator_finetune``):
it reduces the student's same-noise distance to its teacher, moves only the student, is
reproducible, and refuses what it cannot do."""

from __future__ import annotations

import pytest
import torch

from simcompress.compress import compress, config_from_dict
from simcompress.errors import ConfigError
from simcompress.generators.gan import GANGenerator
from simcompress.generators.train import copy_generator, finetune_to_teacher
from simcompress.showers.geometry import Geometry
from simcompress.workflows import generator_finetune

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def teacher() -> GANGenerator:
    torch.manual_seed(0)
    g = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[32, 32], critic_features="shape")
    return g.eval()


def _params(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def _same_noise_gap(student: GANGenerator, teacher: GANGenerator, n: int = 512) -> float:
    """Mean absolute difference of the layer-energy fractions on the same noise (independent of the loss)."""
    g = torch.Generator().manual_seed(999)
    e = torch.exp(torch.empty(n).uniform_(5.6, 15.2, generator=g))
    z = torch.randn(n, teacher.latent_dim, generator=g)
    with torch.no_grad():
        xt = teacher.postprocess(teacher.network(z, teacher.condition(e)), e)
        xs = student.postprocess(student.network(z, student.condition(e)), e)
    oh = teacher.onehot
    return float(((xs @ oh) / e[:, None] - (xt @ oh) / e[:, None]).abs().mean())


def test_distillation_reduces_the_distance_to_the_teacher(teacher: GANGenerator) -> None:
    pruned = compress(teacher, config_from_dict({"method": "structured_prune", "amount": 0.25})).model
    before_gap = _same_noise_gap(pruned, teacher)
    t_before = _params(teacher)
    r = finetune_to_teacher(pruned, teacher, steps=60, lr=5e-3, seed=1, batch_size=64)
    assert r["loss_after"] < 0.5 * r["loss_before"], r
    assert _same_noise_gap(pruned, teacher) < 0.7 * before_gap
    assert all(torch.equal(a, b) for a, b in zip(t_before, _params(teacher), strict=True))  # the teacher never moves


def test_distillation_is_reproducible(teacher: GANGenerator) -> None:
    outs = []
    for _ in range(2):
        s = compress(teacher, config_from_dict({"method": "ptq", "weights": {"bits": 4}})).model
        finetune_to_teacher(s, teacher, steps=20, lr=1e-3, seed=5, batch_size=64, energies=None)
        outs.append(_params(s))
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


def test_hook_trains_toward_the_teacher_by_default(teacher: GANGenerator) -> None:
    s = compress(teacher, config_from_dict({"method": "structured_prune", "amount": 0.25})).model
    gap0 = _same_noise_gap(s, teacher)
    t_before = _params(teacher)
    train = generator_finetune(teacher, None, seed=0, batch_size=64)  # no reference: log-uniform energies
    assert train(s, 60, 5e-3) is s
    assert _same_noise_gap(s, teacher) < 0.7 * gap0
    assert all(torch.equal(a, b) for a, b in zip(t_before, _params(teacher), strict=True))


def test_bad_input_is_refused(teacher: GANGenerator) -> None:
    with pytest.raises(ConfigError, match="unknown objective 'adversarial'; known: teacher, reference"):
        generator_finetune(teacher, None, 0, objective="adversarial")
    other = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=16, hidden=[8])  # a narrower one reads z[:, :k]
    with pytest.raises(ConfigError, match="latent width 16 is wider than the teacher's 8"):
        finetune_to_teacher(other, teacher, 1, 1e-3)
    with pytest.raises(ConfigError, match="steps >= 0 and lr > 0"):
        finetune_to_teacher(copy_generator(teacher), teacher, 1, 0.0)


def test_a_student_of_another_class_is_matched_on_the_showers(teacher: GANGenerator) -> None:
    from simcompress.distill.students import MLPGenerator

    torch.manual_seed(1)
    mlp = MLPGenerator(teacher.geometry, latent_dim=teacher.latent_dim, width=32, depth=2)
    r = finetune_to_teacher(mlp, teacher, steps=40, lr=3e-3, seed=2, batch_size=64)
    assert r["loss_after"] < 0.8 * r["loss_before"], r
