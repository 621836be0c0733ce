"""Fast-simulation shower generators: a conditional WGAN-GP and a CaloFlow-style MAF,
their bundles (safetensors + JSON, never pickles) and the shipped zoo.

>>> import torch
>>> from simcompress.generators import load_generator
>>> gen = load_generator("ds1-photons-gan")
>>> showers = gen.sample(torch.full((4,), 65536.0), generator=torch.Generator().manual_seed(0))
>>> tuple(showers.shape), gen.geometry.n_voxels
((4, 368), 368)
"""

from __future__ import annotations

from .base import GENERATORS, ShowerGenerator, build_generator, register_generator
from .bundle import bundle_hash, load_generator, save_generator, zoo_names
from .flow import FlowGenerator
from .gan import GANGenerator

__all__ = [
    "GENERATORS",
    "FlowGenerator",
    "GANGenerator",
    "ShowerGenerator",
    "build_generator",
    "bundle_hash",
    "generate_showers",
    "load_generator",
    "register_generator",
    "save_generator",
    "zoo_names",
]


def __getattr__(name: str):
    if name == "generate_showers":
        from .generate import generate_showers

        return generate_showers
    msg = f"module 'simcompress.generators' has no attribute {name!r}"
    raise AttributeError(msg)
