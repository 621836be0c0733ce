"""Per-shard random streams derived from one root seed.

Shard ``i`` of a run with root seed ``s`` always gets the stream of
``numpy.random.SeedSequence(s).spawn(n)[i]``, whatever ``n`` (the number of
shards), the number of workers or the executor: a spawned child is fully defined
by ``(entropy, spawn_key=(i,))``, so it is built directly from the shard index.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["check_seed", "shard_seed", "shard_seed_sequence"]

_MAX_SEED = 2**63 - 1


def check_seed(seed: object, source: str = "--seed") -> int:
    """Return ``seed`` as an int in [0, 2**63), or raise :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        msg = f"{source}: seed must be an integer, got {seed!r}"
        raise ConfigError(msg)
    if not 0 <= int(seed) <= _MAX_SEED:
        msg = f"{source}: seed must be in [0, 2**63), got {seed}"
        raise ConfigError(msg)
    return int(seed)


def shard_seed_sequence(root_seed: int, shard_index: int) -> np.random.SeedSequence:
    """The seed sequence of shard ``shard_index``: ``SeedSequence(root_seed).spawn(n)[shard_index]``."""
    return np.random.SeedSequence(check_seed(root_seed), spawn_key=(int(shard_index),))


def shard_seed(root_seed: int, shard_index: int) -> int:
    """A 63-bit integer seed for shard ``shard_index`` drawn from its :func:`shard_seed_sequence`.

    This is what the shard's ``generate_showers(..., seed=...)`` call receives; it
    seeds both the incident-energy sampler and the model's ``torch.Generator``.
    """
    state = shard_seed_sequence(root_seed, shard_index).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1
