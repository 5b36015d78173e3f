"""Shared fixtures: small real data made by the library itself."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A real feature store (stft + chroma) of 4 synthetic classes × 12 one-second clips."""
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store
    from advaudio.store import Store

    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": 12, "duration": 1.0, "n_classes": 4},
        features=FeatureConfig(representations=("stft", "chroma")),
    )
    result = featurize_store(config, cache=tmp_path_factory.mktemp("cache"), workers=0, progress=False)
    return Store(result.store_dir)


@pytest.fixture(scope="module")
def one_thread():
    """The module's tests compute with one torch thread (a module asks with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): results compared bit for bit, or
    against runs in subprocesses with OMP_NUM_THREADS=1, since float sums split over other thread
    counts round differently; and the step counts of the cost tests are those of one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A command run in-process (CliRunner, main([...])) sets torch's threads for its stage
    (advaudio.threads); put them back so that no later test computes with another count."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
