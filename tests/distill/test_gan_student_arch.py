"""The GAN -> small GAN student keeps the teacher's architecture except the generator widths."""

from __future__ import annotations

import torch

from simcompress.distill.gan import GANToGANConfig, _gan_student
from simcompress.generators import GANGenerator
from simcompress.showers.geometry import Geometry


def test_student_has_the_teachers_critic_features_and_response_tables() -> None:
    torch.manual_seed(0)
    teacher = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[32], critic_hidden=[16],
                           critic_features="shape", minibatch_std=True, n_calib=7)
    with torch.no_grad():
        teacher.resp_mean.copy_(torch.linspace(0.9, 1.0, 7))
    student = _gan_student(teacher, GANToGANConfig.model_validate({"student": {"width": 12, "depth": 2}}))
    assert student.arch.critic_features == "shape" and student.arch.minibatch_std and student.arch.n_calib == 7
    assert [m.out_features for m in student.network.modules() if isinstance(m, torch.nn.Linear)][:2] == [12, 12]
    assert torch.equal(student.resp_mean, teacher.resp_mean) and torch.equal(student.resp_std, teacher.resp_std)
    for k, v in teacher.critic.state_dict().items():  # the shipped critic loads (it did not: feat_mean 397 vs 374)
        assert torch.equal(student.critic.state_dict()[k], v)
