"""QKeras <-> simcompress: exact import and export of quantized MLPs as Keras ``.h5`` files.

QKeras (0.9.0) quantizers are fixed-point casts in disguise. With ``alpha=1`` (or
``None`` on a ``QActivation``), no stochastic rounding and ``qnoise_factor=1``:

* ``quantized_bits(bits, integer, symmetric, keep_negative=True)`` computes
  ``2**integer * clip(round(x * 2**(bits-1-integer)), -2**(bits-1) [+1 if symmetric], 2**(bits-1)-1) / 2**(bits-1)``
  with ``tf.round`` (half to even), i.e. the HLS cast to
  ``ap_fixed<bits, integer+1, AP_RND_CONV, AP_SAT>`` (``AP_SAT_SYM`` when symmetric);
* ``quantized_bits(..., keep_negative=False)`` and ``quantized_relu(bits, integer)``
  are ``ap_ufixed<bits, integer, AP_RND_CONV, AP_SAT>`` (negative values go to 0).

All of this is exact in float32 (scaling by powers of two, rounding, clipping), so a
PyTorch module applying :meth:`FixedType.quantize` reproduces QKeras bit for bit. A
``QDense`` is a float32 matrix product of quantized weights with its input: it is
exact (independent of the summation order) when every partial sum is a float32
integer multiple of the grid step, which :class:`QKerasNetwork` checks from the
types and the weights (:attr:`QKerasNetwork.float32_exact`). ``BatchNormalization``
is accepted only when it is exact too (``moving_variance + epsilon`` a power of 4,
so ``rsqrt`` is exact, and all products/sums short enough for float32).

Anything else (``alpha="auto"``/``"auto_po2"``, po2/binary/ternary quantizers,
stochastic rounding, ``use_sigmoid``, leaky quantized relu, convolutions, branching
graphs, ...) is refused with :class:`~simcompress.errors.UnsupportedLayerError`
naming the layer and what is allowed.

The ``.h5`` layout is the Keras 2 (tf.keras 2.14) legacy HDF5 format: root attribute
``model_config`` (JSON), group ``model_weights/<layer>/<layer>/<weight>:0``. Files
written by :func:`export_qkeras` load with ``qkeras.utils.load_qmodel``.
"""

from .export import export_qkeras, network_from_fixed_point, network_from_precision
from .h5 import KERAS_VERSION, read_qkeras_h5
from .load import load_qkeras_network
from .network import QKerasNetwork, check_exact
from .quantizers import FixedQuantizer, fixed_to_quantizer, quantizer_to_fixed

__all__ = [
    "KERAS_VERSION",
    "FixedQuantizer",
    "QKerasNetwork",
    "check_exact",
    "export_qkeras",
    "fixed_to_quantizer",
    "load_qkeras_network",
    "network_from_fixed_point",
    "network_from_precision",
    "quantizer_to_fixed",
    "read_qkeras_h5",
]
