import os

# Tests never reach a model hub: fail at once instead of retrying for a minute.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from melanoma.synthetic.generate import SynthConfig, generate  # noqa: E402

TINY = SynthConfig(n_train_2020=150, n_test_2020=40, n_2019=90, duplicate_rate=0.05, seed=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, TINY, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_data) -> dict:
    """Two small trained runs on the tiny data, shared by the prediction tests: `plain` (folds 0
    and 1, no metadata) and `meta` (fold 0, metadata branch); plus the ingested table."""
    from melanoma.config import TrainConfig
    from melanoma.data.ingest import ingest
    from melanoma.training.train import train

    root = tmp_path_factory.mktemp("runs")
    table = ingest(tiny_data, verify="none", progress=False)
    fast = dict(
        backbone="test_efficientnet", image_size=32, batch_size=16, num_workers=0, lr=3e-4, pretrained=False
    )
    train(table, TrainConfig(out=str(root / "plain"), epochs=2, folds=[0, 1], **fast), progress=False)
    train(
        table, TrainConfig(out=str(root / "meta"), epochs=1, folds=[0], use_meta=True, **fast), progress=False
    )
    return {"plain": root / "plain", "meta": root / "meta", "table": table}


@pytest.fixture(scope="session")
def tiny_2024(tmp_path_factory) -> Path:
    """A small synthetic ISIC 2024 folder (crops in HDF5), shared by the tests that only read it."""
    from melanoma.synthetic.isic2024 import Synth2024Config, generate_2024

    root = tmp_path_factory.mktemp("isic2024") / "data"
    cfg = Synth2024Config(
        n_train=400, n_test=20, malignant_rate=0.05, centres=3, lesions_per_patient=20, seed=9
    )
    generate_2024(root, cfg, progress=False)
    return root
