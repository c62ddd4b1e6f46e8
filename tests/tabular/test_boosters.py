"""Each tree library fitted, saved in its own format, read back and predicting the same; unseen
categories as gaps; gain shares that add up."""

import json

import numpy as np
import pandas as pd
import pytest

from melanoma.tabular import boosters

SETTINGS = {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 5,
            "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0, "early_stopping": 5}  # fmt: skip


def _rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.normal(0, 1, n), "noise": rng.normal(0, 1, n)})
    x["site"] = pd.Categorical(rng.choice(["arm", "leg", "back"], n))
    y = ((x.a + (x.site == "back") + rng.normal(0, 0.5, n)) > 1.2).astype(int).to_numpy()
    return x, y


@pytest.mark.parametrize("library", boosters.LIBRARIES)
@pytest.mark.parametrize("preset", list(boosters.PRESETS))
def test_a_saved_model_predicts_what_it_predicted(library, preset, tmp_path):
    x, y = _rows(600, 0)
    categories = boosters.categories_of(x)
    x = boosters.coded(x, categories)
    model = boosters.fit(
        library, preset, SETTINGS, (x[:400], y[:400]), (x[400:500], y[400:500]), categories, 3
    )
    path = tmp_path / boosters.booster_file(library, 1)
    boosters.save(library, model, path)
    assert path.name == f"{library}_1.{boosters.EXTENSIONS[library]}"
    if library == "lightgbm":
        assert path.read_text().startswith("tree")  # LightGBM's text format
    else:
        json.loads(path.read_text())  # JSON, nothing pickled
    again = boosters.load(library, path)
    p = boosters.predict(library, model, x[500:], categories)
    np.testing.assert_allclose(boosters.predict(library, again, x[500:], categories), p, atol=1e-12)
    from melanoma.metrics import melanoma_auc

    assert melanoma_auc(p, y[500:] == 1) > 0.8  # it learnt the signal
    share = boosters.importance(library, again if library != "lightgbm" else model, list(x.columns))
    assert share.sum() == pytest.approx(1.0) and share.idxmax() == "a" and share["noise"] < share["a"]
    # a site never seen in training is a gap, predicted without an error
    unseen = x[500:510].copy()
    unseen["site"] = "scalp"
    assert np.isfinite(boosters.predict(library, again, boosters.coded(unseen, categories), categories)).all()


def test_early_stopping_stops_before_the_last_round():
    x, y = _rows(600, 1)
    x["site"] = x.site.cat.codes.astype(float)  # numbers only
    long = {**SETTINGS, "n_estimators": 400, "learning_rate": 0.3, "early_stopping": 5}
    model = boosters.fit("lightgbm", "default", long, (x[:400], y[:400]), (x[400:], y[400:]), {}, 0)
    assert model.num_trees() < 400
    model = boosters.fit("xgboost", "default", long, (x[:400], y[:400]), (x[400:], y[400:]), {}, 0)
    assert model.num_boosted_rounds() < 400
    model = boosters.fit("catboost", "default", long, (x[:400], y[:400]), (x[400:], y[400:]), {}, 0)
    assert model.tree_count_ < 400


def test_unknown_libraries_are_refused():
    for models in ([], ["lightgbm", "lightgbm"], ["sklearn"]):
        with pytest.raises(ValueError, match="models must be one or more of lightgbm, xgboost, catboost"):
            boosters.check_models(models)
