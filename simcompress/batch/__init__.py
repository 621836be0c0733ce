"""Batch shower generation: sharded, reproducible and resumable, on one machine or a Dask cluster.

* :func:`run_generation` writes ``shard_00000.root``, ... plus ``manifest.json``;
  shard ``i`` draws from ``numpy.random.SeedSequence(seed).spawn(n)[i]``.
* :func:`generate_to_file` writes one file from this process.
* :func:`merge_shards` concatenates a finished run into one file.
* :class:`ClusterConfig` / :func:`job_script` describe dask-jobqueue batch sites.
* :class:`ContentHasher` is the shard content hash, :mod:`simcompress.showers.io.hashing`.
"""

from ..showers.io.hashing import ContentHasher  # the content hash of shard files (one definition)
from .cluster import ClusterConfig, job_script, load_cluster_config, make_cluster
from .engine import GenerationSummary, generate_to_file, merge_shards, run_generation
from .executors import BatchError
from .manifest import MANIFEST_NAME, Manifest, shard_filename
from .seeds import shard_seed, shard_seed_sequence

__all__ = [
    "MANIFEST_NAME",
    "BatchError",
    "ClusterConfig",
    "ContentHasher",
    "GenerationSummary",
    "Manifest",
    "generate_to_file",
    "job_script",
    "load_cluster_config",
    "make_cluster",
    "merge_shards",
    "run_generation",
    "shard_filename",
    "shard_seed",
    "shard_seed_sequence",
]
