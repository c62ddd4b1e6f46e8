import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from melanoma.cli import app
from melanoma.data import dedup
from melanoma.data.dedup import apply_decisions, group_pairs, neighbour_pairs, review_page


def _pairs(names):
    names = sorted(set(names))
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_neighbour_pairs_find_planted_copies_in_any_block_size():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    x[10] = x[200] + 0.05 * rng.standard_normal(32)
    x[77] = x[5] + 0.05 * rng.standard_normal(32)
    x = unit(x)
    pairs = neighbour_pairs(x, threshold=0.9, progress=False)
    assert set(zip(pairs.i, pairs.j, strict=True)) == {(10, 200), (5, 77)}
    assert (pairs.i < pairs.j).all() and pairs.similarity.between(0.9, 1.0001).all()
    small = neighbour_pairs(x, threshold=0.9, block=7, progress=False)
    assert small[["i", "j"]].equals(pairs[["i", "j"]])
    assert neighbour_pairs(x, threshold=0.999, progress=False).empty


def test_the_hnsw_graph_finds_what_every_pair_finds(monkeypatch):
    """Above EXACT_MAX rows the search is approximate (HNSW); on clustered data with planted
    near-copies it returns the exact search's pairs."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, 48))
    x = centres[rng.integers(0, 40, 4000)] + 0.8 * rng.standard_normal((4000, 48))
    copies = rng.choice(4000, (60, 2), replace=False)
    x[copies[:, 1]] = x[copies[:, 0]] + 0.05 * rng.standard_normal((60, 48))
    x = unit(x.astype(np.float32))
    exact = neighbour_pairs(x, 0.95, progress=False, method="exact")
    graph = neighbour_pairs(x, 0.95, progress=False, method="hnsw")
    assert {(min(a, b), max(a, b)) for a, b in copies} <= set(zip(graph.i, graph.j, strict=True))
    same = exact.merge(graph, on=["i", "j"], suffixes=("", "_graph"))
    assert len(same) == len(exact) == len(graph) == 60
    np.testing.assert_allclose(same.similarity_graph, same.similarity, atol=1e-5)
    monkeypatch.setattr(dedup, "EXACT_MAX", 1000)  # auto switches by size
    auto = neighbour_pairs(x, 0.95, progress=False)
    assert set(zip(auto.i, auto.j, strict=True)) == set(zip(exact.i, exact.j, strict=True))
    with pytest.raises(ValueError, match="method must be"):
        neighbour_pairs(x, 0.95, method="fast")


def test_group_pairs_are_connected_components():
    assert group_pairs(6, np.array([0, 1, 4]), np.array([1, 2, 5])).tolist() == [0, 0, 0, -1, 1, 1]
    assert group_pairs(3, np.array([], int), np.array([], int)).tolist() == [-1, -1, -1]


@pytest.fixture
def table(tmp_path):
    rows = [
        ("T1", "isic2020", "test", 0, 10), ("A1", "isic2020", "train", 0, 10), ("E1", "isic2019", "train", 1, 99),
        ("A2", "isic2020", "train", 0, 5), ("E2", "isic2019", "train", 1, 50),
        ("E3", "isic2019", "train", 1, 20), ("E4", "isic2019", "train", 1, 30),
        ("A3", "isic2020", "train", 0, 10), ("A4", "isic2020", "train", 0, 10),
    ]  # fmt: skip
    paths = []
    for name, *_, size in rows:
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(b"x" * size)
        paths.append(str(path))
    return pd.DataFrame(
        {
            "image_name": [r[0] for r in rows],
            "source": [r[1] for r in rows],
            "split": [r[2] for r in rows],
            "is_ext": [r[3] for r in rows],
            "image_path": paths,
        }
    )


def test_apply_keeps_test_then_2020_then_the_largest(table, tmp_path):
    decisions = pd.DataFrame(
        {
            "image_a": ["T1", "A1", "A2", "E3", "A3"],
            "image_b": ["A1", "E1", "E2", "E4", "A4"],
            "decision": ["duplicate", "duplicate", "duplicate", "duplicate", "distinct"],
        }
    )
    result = apply_decisions(table, decisions, tmp_path / "candidates.csv").set_index("image_name")
    assert result.keep.to_dict() == {"T1": 1, "A1": 0, "E1": 0, "A2": 1, "E2": 0, "E3": 0, "E4": 1}
    assert result.group.nunique() == 3 and "A3" not in result.index  # a rejected pair is no group
    assert result.loc["T1", "group"] == result.loc["E1", "group"]


def test_apply_refuses_bad_decisions(table, tmp_path):
    bad = pd.DataFrame({"image_a": ["A1", "A2"], "image_b": ["E1", "E2"], "decision": ["duplicate", "yes"]})
    with pytest.raises(ValueError, match=r"decision must be duplicate or distinct: line 3 \('yes'\)"):
        apply_decisions(table, bad, tmp_path / "c.csv")
    unknown = pd.DataFrame({"image_a": ["A1"], "image_b": ["ZZ"], "decision": ["duplicate"]})
    with pytest.raises(ValueError, match=r"1 pair\(s\) name images not in the data"):
        apply_decisions(table, unknown, tmp_path / "c.csv")


def test_review_page_shows_pairs_side_by_side_and_escapes(tmp_path):
    paths = []
    for _ in range(2):
        path = tmp_path / f"{len(paths)}.jpg"
        Image.new("RGB", (40, 30), (200, 100, 50)).save(path)
        paths.append(str(path))
    table = pd.DataFrame({"image_name": ["a<b>", "c&d"], "image_path": paths})
    pairs = pd.DataFrame(
        {"group": [0], "image_a": ["a<b>"], "image_b": ["c&d"], "where_a": ["isic2020:train"],
         "where_b": ["isic2019:train"], "similarity": [0.9731], "decision": ["duplicate"]}
    )  # fmt: skip
    page = review_page(pairs, table, tmp_path / "review.html", "data/dedup/candidates.csv").read_text()
    assert (
        "a&lt;b&gt;" in page and "c&amp;d" in page and "<b>" not in page.split("<table>")[1].split("a&lt;")[0]
    )
    assert page.count("data:image/jpeg;base64,") == 2 and "0.9731" in page
    assert "data/dedup/candidates.csv" in page


def test_find_apply_and_folds_on_generator_data(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    pairs = dedup.find_duplicates(data, progress=False)
    assert (data / "dedup/review.html").is_file() and (data / "dedup/candidates.csv").is_file()
    truth = pd.read_csv(data / "truth/duplicates.csv")
    planted = {tuple(sorted(g.image_name)) for _, g in truth.groupby("group")}
    found = {tuple(sorted(p)) for p in zip(pairs.image_a, pairs.image_b, strict=True)}
    originals = truth.groupby("group").image_name.first()
    same_lesion = {
        tuple(sorted(p))
        for o in set(originals)
        for p in _pairs(truth[truth.group.isin(originals[originals == o].index)].image_name)
    }
    # Measured: 12 of 14 planted pairs found, none wrong; whitening has only 145 dimensions on so
    # few images. On the demo-sized data benchmarks/dedup_quality.py measures recall 0.96 at
    # precision 0.93-0.95 (goal: 0.95 at 0.90).
    assert len(planted & found) / len(planted) >= 0.75
    assert len(found & same_lesion) / max(1, len(found)) >= 0.9
    # A person rejects one pair; a rerun keeps that decision (and reuses the embeddings).
    edited = pd.read_csv(data / "dedup/candidates.csv")
    edited.loc[0, "decision"] = "distinct"
    edited.to_csv(data / "dedup/candidates.csv", index=False)
    again = dedup.find_duplicates(data, progress=False)
    assert again.decision.tolist() == edited.decision.tolist()
    runner = CliRunner()
    result = runner.invoke(app, ["dedup", str(data), "--apply"])
    assert result.exit_code == 0, result.output
    dups = pd.read_csv(data / "duplicates.csv")
    assert (dups.groupby("group").keep.sum() >= 1).all()
    result = runner.invoke(app, ["folds", str(data), "--k", "3"])
    assert result.exit_code == 0, result.output
    folds = pd.read_csv(data / "folds.csv").merge(dups, on="image_name")
    assert (folds[folds.keep == 0].fold == -1).all()
    kept = folds[folds.keep == 1]
    assert kept.groupby("group").fold.nunique().max() == 1


def test_embedding_cache_is_keyed_by_content_and_settings(tiny_data, tmp_path, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    calls = []

    def fake_embed(table, size=96, batch=64, progress=True, views=8, device="auto"):
        calls.append(size)
        return np.random.default_rng(len(calls)).normal(size=(len(table), 16)).astype(np.float32)

    monkeypatch.setattr(dedup, "embed", fake_embed)
    dedup.find_duplicates(data, progress=False)
    dedup.find_duplicates(data, progress=False)
    assert calls == [96]  # the same images: the cached embeddings are used
    image = next((data / "isic2020" / "jpeg" / "train").glob("*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")  # one image changes (same name)
    dedup.find_duplicates(data, progress=False)
    assert calls == [96, 96]  # ... so everything is embedded again
    dedup.find_duplicates(data, size=64, progress=False)
    assert calls == [96, 96, 64]  # another setting, another key
    dedup.find_duplicates(data, progress=False)
    assert calls == [96, 96, 64]
    dedup.find_duplicates(data, progress=False, views=2)  # fewer orientations: another key too
    assert calls == [96, 96, 64, 96]


def test_the_threshold_help_says_the_default_dedup_uses():
    import typer

    from melanoma.cli import app
    from melanoma.data.dedup import DEFAULT_THRESHOLD

    option = next(p for p in typer.main.get_command(app).commands["dedup"].params if p.name == "threshold")
    assert f"default: {DEFAULT_THRESHOLD}" in option.help
