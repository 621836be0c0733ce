from __future__ import annotations

import numpy as np
import pytest

from simcompress.batch import ContentHasher, shard_seed, shard_seed_sequence
from simcompress.errors import ConfigError


@pytest.mark.parametrize("n_shards", [1, 3, 17])
def test_shard_stream_is_spawn_child_whatever_the_shard_count(n_shards: int) -> None:
    children = np.random.SeedSequence(7).spawn(n_shards)
    for i, child in enumerate(children):
        mine = shard_seed_sequence(7, i)
        assert np.array_equal(mine.generate_state(4), child.generate_state(4))


def test_shard_seeds_distinct_and_stable() -> None:
    seeds = [shard_seed(7, i) for i in range(200)]
    assert len(set(seeds)) == 200
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds[5] == shard_seed(7, 5)
    assert shard_seed(8, 5) != seeds[5]


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "7", True])
def test_bad_seed_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        shard_seed(bad, 0)  # type: ignore[arg-type]


def test_batch_uses_the_showers_content_hash() -> None:
    from simcompress.showers.io import ContentHasher as ShowersHasher

    assert ContentHasher is ShowersHasher
