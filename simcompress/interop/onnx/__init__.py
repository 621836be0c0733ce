"""ONNX generators in: convert an ONNX graph into plain torch layers, checked against ONNX Runtime.

:func:`convert_onnx` reads an ``.onnx`` file (with the ``onnx`` package) and returns a JSON graph
description plus the weights; :class:`OnnxNetwork` rebuilds the torch network from that
description alone (``Linear``, ``ConvNd``, ``ConvTransposeNd``, ``BatchNormNd`` and activation
modules; reshapes, crops and concatenations as tensor operations), so a bundle holds JSON +
safetensors and no ONNX file or pickle. The forward is a static sequence of operations, so
``torch.fx`` traces it and every compression method sees ordinary layers.

Supported operators (the ones ``torch.onnx.export`` writes for MLP and (transposed-)
convolutional generators): Gemm, MatMul (constant weight), Conv, ConvTranspose,
BatchNormalization, Relu, LeakyRelu, Elu, Tanh, Sigmoid, Softplus, Exp, Abs, Identity, Dropout,
Reshape (constant shape, or the ``Shape -> Gather -> Unsqueeze -> Concat`` chain of
``x.view(x.size(0), ...)``), Flatten, Slice, Concat, Squeeze/Unsqueeze, Transpose, Add / Sub /
Mul / Div, Resize/Upsample (nearest), Softmax, Constant. Anything else raises
:class:`~simcompress.errors.UnsupportedLayerError` naming the node and operator.

:func:`import_onnx` converts, wraps the network as an
:class:`~simcompress.interop.external.ExternalGenerator` and compares the torch network with ONNX
Runtime on seeded random inputs; a max |difference| above ``tolerance`` relative to the largest
|output| refuses the import.
"""

from .convert import SUPPORTED, convert_onnx
from .network import OnnxNetwork, compare_with_onnxruntime, import_onnx

__all__ = ["SUPPORTED", "OnnxNetwork", "compare_with_onnxruntime", "convert_onnx", "import_onnx"]
