"""Firmware: fixed-point generators -> hls4ml trigger IP, bit-exact with the project's own emulation.

* :func:`export_firmware` builds the IP folder (hls4ml project, test vectors,
  ``firmware.json``, README) and proves bit-exactness of the hls4ml C simulation
  against :meth:`FixedGraph.emulate`;
* :func:`build_graph` / :class:`FixedGraph` is the integer emulation;
* :mod:`.estimate` gives resource and latency proxies and the reuse-factor planner;
* :mod:`.rtl` is the open-source alkaid -> Verilog -> Verilator cross-check of that route;
* :mod:`.alkaid_route` / :mod:`.alkaid_export` are the route for what hls4ml 1.3.0 cannot
  convert (transposed convolutions, Tanh/Sigmoid tables): alkaid Verilog, bit-exact with the
  emulation (``route: auto`` in the target picks it by itself).

hls4ml, alkaid and verilator are imported lazily (extra ``simcompress[firmware]``).
"""

from .config import FirmwareConfig, load_firmware_config
from .export import FirmwareResult, SynthesisUnavailableError, export_firmware
from .graph import FixedGraph, build_graph

__all__ = [
    "FirmwareConfig",
    "FirmwareResult",
    "FixedGraph",
    "SynthesisUnavailableError",
    "build_graph",
    "export_firmware",
    "load_firmware_config",
]
