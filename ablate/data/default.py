"""The embedded default data set: synthetic, generated and ingested on first use, no download."""

from __future__ import annotations

import sys
from pathlib import Path

from ablate.data.cache import META, ablate_home, default_cache_dir
from ablate.data.ingest import ingest
from ablate.data.kaggle import TRAIN_CSV


def default_data_dir() -> Path:
    return ablate_home() / "synth" / "default"


def default_cache() -> Path:
    """The default synthetic set's cache directory, generating and ingesting it if needed."""
    from ablate.data.synth import SynthConfig, generate

    data = default_data_dir()
    if not (data / TRAIN_CSV).is_file():
        data.mkdir(parents=True, exist_ok=True)  # a read-only $ABLATE_HOME fails here, before any message
        print(f"generating the default synthetic data set in {data} ...", file=sys.stderr, flush=True)
        generate(data, SynthConfig())
    cache = default_cache_dir(data)
    if not (cache / META).is_file():
        print(f"ingesting {data} ...", file=sys.stderr, flush=True)
    ingest(data, cache)  # a no-op when the cache is current; repairs a damaged one
    return cache
