"""Fast-simulation shower generators: a conditional WGAN-GP and a CaloFlow-style MAF,
their bundles (safetensors + JSON, never pickles) and the shipped zoo.

>>> from simcompress.generators import load_generator   # doctest: +SKIP
>>> gen = load_generator("ds1-photons-gan")              # doctest: +SKIP
"""

from __future__ import annotations

from .base import GENERATORS, ShowerGenerator, build_generator, register_generator
from .bundle import bundle_hash, load_generator, save_generator, zoo_names
from .flow import FlowGenerator
from .gan import GANGenerator

__all__ = [
    "GENERATORS",
    "ShowerGenerator",
    "GANGenerator",
    "FlowGenerator",
    "build_generator",
    "register_generator",
    "save_generator",
    "load_generator",
    "bundle_hash",
    "zoo_names",
    "generate_showers",
]


def __getattr__(name: str):  # noqa: ANN202
    if name == "generate_showers":
        from .generate import generate_showers

        return generate_showers
    raise AttributeError(f"module 'simcompress.generators' has no attribute {name!r}")
