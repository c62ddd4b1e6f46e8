import os

# Tests never reach a model hub: fail at once instead of retrying for a minute.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from melanoma.synth import SynthConfig, generate  # noqa: E402

TINY = SynthConfig(n_train_2020=150, n_test_2020=40, n_2019=90, duplicate_rate=0.05, seed=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, TINY, workers=1, progress=False)
    return root
