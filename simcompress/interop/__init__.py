"""Interoperability with other quantization frameworks (optional extra ``qkeras``).

:mod:`simcompress.interop.qkeras` reads QKeras models saved as Keras ``.h5``
files into an exactly equivalent PyTorch fixed-point network (and generator),
and writes simcompress fixed-point MLPs back as QKeras ``.h5`` files. The core
never imports TensorFlow: the ``.h5`` files are read and written with h5py.
The TensorFlow side (QKeras itself, hls4ml's Keras route) runs in a separate
interpreter, see :mod:`simcompress.interop.tf_env`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FixedQuantizer",
    "QKerasMLPGenerator",
    "QKerasNetwork",
    "export_qkeras",
    "load_qkeras_generator",
    "load_qkeras_network",
    "network_from_precision",
    "read_qkeras_h5",
]


def __getattr__(name: str) -> Any:
    if name in ("QKerasNetwork", "FixedQuantizer", "read_qkeras_h5", "load_qkeras_network", "export_qkeras",
                "network_from_precision"):
        from . import qkeras

        return getattr(qkeras, name)
    if name in ("QKerasMLPGenerator", "load_qkeras_generator"):
        from . import generator

        return getattr(generator, name)
    msg = f"module 'simcompress.interop' has no attribute {name!r}"
    raise AttributeError(msg)
