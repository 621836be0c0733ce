"""Built-in compression methods; importing this package registers them.

Each module holds one typed config and one registered transform.
"""

from . import (  # noqa: F401
    gradual_prune,
    lora,
    lowrank_quant,
    magnitude_prune,
    mixed_precision,
    ptq,
    qat,
    structured_prune,
    svd,
    tensor_train,
    tucker,
)

__all__: list[str] = []

# methods owned by other modules of the package register on import, when present
for _mod in ("simcompress.compress.fixed_point.methods",):
    try:
        __import__(_mod)
    except ModuleNotFoundError as _err:  # not written yet
        if _err.name is None or not _mod.startswith(_err.name):
            raise
