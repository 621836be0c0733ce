"""Small helpers several validation modules share: strict JSON, the too-few-events error.

>>> import numpy as np
>>> jsonable({"a": np.float32(0.5), "b": [float("nan"), np.int64(3)], 1: np.bool_(True)})
{'a': 0.5, 'b': [None, 3], '1': True}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["TooFewEventsError", "jsonable"]


class TooFewEventsError(ConfigError):
    """A metric was asked for on fewer events than it needs (never a silent number)."""


def jsonable(o: Any) -> Any:
    """NaN/inf become None (strict JSON); numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o
