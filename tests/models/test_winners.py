"""models/winners.py and `melanoma import-winners`: the winners' published files, built here from
the facts of their layout (geffnet, pretrainedmodels and resnest under `enet.`, `myfc`, `meta`)
with random weights, read into our network, predict what their network predicts."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from melanoma.models.inference import dihedral_views
from melanoma.models.model import MelanomaNet
from melanoma.models.weights import WeightsError
from melanoma.models.winners import ORIGINAL_META, find_checkpoints, load_their_file, member_config, our_key

geffnet = pytest.importorskip("geffnet")


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class TheirNet(nn.Module):
    """The winners' layout as the facts describe it: `enet` (the backbone, classifier removed),
    5 dropouts under one `myfc`, and the metadata branch `meta`."""

    def __init__(self, enet: nn.Module, width: int, classes: int, n_meta: int = 0, hidden=(512, 128)):
        super().__init__()
        self.enet = enet
        self.dropouts = nn.ModuleList(nn.Dropout(0.5) for _ in range(5))
        self.meta = None
        if n_meta:
            h1, h2 = hidden
            self.meta = nn.Sequential(nn.Linear(n_meta, h1), nn.BatchNorm1d(h1), Swish(), nn.Dropout(0.3),
                                      nn.Linear(h1, h2), nn.BatchNorm1d(h2), Swish())  # fmt: skip
            width += h2
        self.myfc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor, x_meta: torch.Tensor | None = None) -> torch.Tensor:
        x = self.enet(x).flatten(1)
        if self.meta is not None:
            x = torch.cat([x, self.meta(x_meta)], dim=1)
        return torch.stack([self.myfc(d(x)) for d in self.dropouts]).mean(0)


def _geffnet(name: str) -> tuple[nn.Module, int]:
    enet = geffnet.create_model(name, pretrained=False)
    width = enet.classifier.in_features
    enet.classifier = nn.Identity()
    return enet, width


def _pretrainedmodels(name: str = "se_resnext101_32x4d") -> tuple[nn.Module, int]:
    pm = pytest.importorskip("pretrainedmodels")
    enet = getattr(pm, name)(num_classes=1000, pretrained=None)
    width = enet.last_linear.in_features
    enet.avg_pool, enet.last_linear = nn.AdaptiveAvgPool2d(1), nn.Identity()  # any input size
    return enet, width


def _resnest(name: str = "resnest101") -> tuple[nn.Module, int]:
    rt = pytest.importorskip("resnest.torch")
    enet = getattr(rt, name)(pretrained=False)
    width = enet.fc.in_features
    enet.fc = nn.Identity()
    return enet, width


def _config(member: str, backbone: str | None = None):
    """The member's settings; `backbone` stands in a smaller network of the same family where the
    test is about the head and the metadata branch (the big ones cost the suite a minute each)."""
    from dataclasses import replace

    cfg = member_config(member, "unused")
    return cfg if backbone is None else replace(cfg, backbone=backbone)


def _theirs(member: str, n_meta: int = 0, seed: int = 0, backbone: str | None = None) -> TheirNet:
    torch.manual_seed(seed)
    cfg = _config(member, backbone)
    if "se_x101" in member:
        enet, width = _pretrainedmodels("se_resnext50_32x4d" if backbone else "se_resnext101_32x4d")
    elif "nest101" in member:
        enet, width = _resnest("resnest50" if backbone else "resnest101")
    else:
        enet, width = _geffnet(_geffnet_name(cfg.backbone))
    net = TheirNet(enet, width, 4 if cfg.scheme == "4c" else 9, n_meta, tuple(cfg.meta_hidden))
    for m in net.modules():  # batch statistics that are not the identity, so BatchNorm is tested too
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _geffnet_name(timm_name: str) -> str:
    """tf_efficientnet_b4.ns_jft_in1k (timm) -> tf_efficientnet_b4_ns (geffnet)."""
    return timm_name.replace(".ns_jft_in1k", "_ns")


def _save(net: nn.Module, path, data_parallel: bool = False) -> None:
    state = net.state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()} if data_parallel else state, path)


def _tta(model: nn.Module, x: torch.Tensor, meta: torch.Tensor | None) -> np.ndarray:
    with torch.no_grad():
        views = [model(v) if meta is None else model(v, meta) for v in dihedral_views(x)]
    return torch.stack([v.softmax(1) for v in views]).mean(0).numpy()


B0_NS = "tf_efficientnet_b0.ns_jft_in1k"  # geffnet's tf_efficientnet_b0_ns: the B4-B7 family, small


@pytest.mark.parametrize(
    "member, backbone, n_meta, data_parallel",
    [
        ("9c_meta_b3_768_512_ext_18ep", None, len(ORIGINAL_META), False),  # efficientnet_b3 + metadata
        ("9c_meta128_32_b5ns_384_ext_15ep", B0_NS, len(ORIGINAL_META), True),  # branch 128, 32; DataParallel
        ("4c_b5ns_1.5e_640_ext_15ep", B0_NS, 0, False),  # 4 classes
        # pretrainedmodels' SE-ResNeXt and resnest's ResNeSt: the 50-layer networks of the members'
        # 101-layer ones (the same blocks, stems and names; the 101s cost the suite half a minute)
        ("9c_se_x101_640_ext_15ep", "legacy_seresnext50_32x4d", 0, False),
        ("9c_nest101_2e_640_ext_15ep", "resnest50d", 0, True),
    ],
)
def test_an_imported_file_predicts_what_their_network_predicts(
    member, backbone, n_meta, data_parallel, tmp_path
):
    theirs = _theirs(member, n_meta, backbone=backbone)
    path = tmp_path / f"{member}_best_fold0.pth"
    _save(theirs, path, data_parallel)
    cfg = _config(member, backbone)
    ours = load_their_file(path, cfg, list(ORIGINAL_META) if n_meta else [])
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    meta = torch.randn(3, n_meta) if n_meta else None
    assert np.abs(_tta(ours, x, meta) - _tta(theirs, x, meta)).max() < 1e-5  # 8-way TTA, eval mode
    with torch.no_grad():
        plain = ours(x, meta) if n_meta else ours(x)
        assert (plain.softmax(1) - (theirs(x, meta) if n_meta else theirs(x)).softmax(1)).abs().max() < 1e-5


def test_what_is_not_their_file_is_one_clear_error(tmp_path):
    member = "9c_b4ns_448_ext_15ep-newfold"
    theirs = _theirs(member, backbone=B0_NS)
    cfg = _config(member, B0_NS)
    state = theirs.state_dict()
    cases = {
        "extra": (
            {**state, "enet.spare.weight": torch.zeros(1)},
            r"1 unexpected key\(s\) \(enet.spare.weight\)",
        ),
        "missing": ({k: v for k, v in state.items() if k != "myfc.bias"}, r"1 missing \(fc.bias\)"),
        "shape": ({**state, "myfc.bias": torch.zeros(4)}, r"myfc.bias|fc.bias: \(4,\) in the file, \(9,\)"),
        "other": ({"conv.weight": torch.zeros(1)}, r"not the tf_efficientnet_b0.ns_jft_in1k layout"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(bad, path)
        with pytest.raises(WeightsError, match=message) as err:
            load_their_file(path, cfg, [])
        assert str(path) in str(err.value), name
    torch.save({"state": theirs}, tmp_path / "pickled.pth")  # a pickled module: code, not a state dict
    with pytest.raises(WeightsError, match="not readable as a plain state dict"):
        load_their_file(tmp_path / "pickled.pth", cfg, [])


def test_a_metadata_member_needs_the_original_features_in_order(tmp_path):
    member = "9c_meta_b3_768_512_ext_18ep"
    path = tmp_path / f"{member}_best_fold0.pth"
    _save(_theirs(member, n_meta=10), path)  # one feature fewer than ours
    cfg = member_config(member, tmp_path / "run")
    with pytest.raises(WeightsError, match=r"takes 10 features in the original's order \(sex, age_approx"):
        load_their_file(path, cfg, list(ORIGINAL_META))
    _save(_theirs(member, n_meta=len(ORIGINAL_META)), path)
    swapped = [ORIGINAL_META[1], ORIGINAL_META[0], *ORIGINAL_META[2:]]
    with pytest.raises(WeightsError, match="ours are 11: age_approx, sex"):
        load_their_file(path, cfg, swapped)


def test_our_metadata_columns_are_the_originals_in_order(tiny_data):
    from melanoma.data.formats import SITES_2020
    from melanoma.data.ingest import ingest
    from melanoma.data.metadata import meta_features

    table = ingest(tiny_data, verify="none", progress=False)
    sites = [*SITES_2020, None]  # the real data has every site; the tiny data may lack the rare ones
    table["anatom_site"] = [sites[i % len(sites)] for i in range(len(table))]
    assert list(meta_features(table).columns) == ORIGINAL_META


def test_their_file_names(tmp_path):
    for name in ("9c_b6ns_640_ext_15ep_best_fold0.pth", "9c_b6ns_640_ext_15ep_best_20_fold3.pth",
                 "9c_b6ns_640_ext_15ep_final_fold4.pth"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    found = {(c.member, c.checkpoint, c.fold) for c in find_checkpoints(tmp_path)}
    assert found == {("9c_b6ns_640_ext_15ep", "best", 0), ("9c_b6ns_640_ext_15ep", "best_20", 3),
                     ("9c_b6ns_640_ext_15ep", "last", 4)}  # fmt: skip
    (tmp_path / "my_model_best_fold0.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"not the winners' \(my_model_best_fold0.pth\)"):
        find_checkpoints(tmp_path)


@pytest.fixture
def small_member(monkeypatch):
    """The B4 member's settings on B0 (the same TF-ported family and head) at 64 px from 64 px
    copies: the import, predict and folds are what these tests check, and a B4 at 448 px costs the
    suite a minute."""
    from dataclasses import replace

    from melanoma.training import imported

    def small(member, out):
        return replace(member_config(member, out), backbone=B0_NS, image_size=64, data_size=64)

    monkeypatch.setattr(imported, "member_config", small)
    return "9c_b4ns_448_ext_15ep-newfold", B0_NS


def test_import_winners_writes_runs_that_predict_like_their_networks(small_member, tiny_data, tmp_path):
    """Two folds of a member, saved as they did; the runs predict image files through `predict`
    (fold mean, 8-way TTA) as their networks do; the command line says what it wrote; another
    file in the place of one imported is refused."""
    from typer.testing import CliRunner

    from melanoma.cli import app
    from melanoma.data.loose import read_images
    from melanoma.evaluation.predict import predict_images
    from melanoma.inputs.dataset import LesionDataset
    from melanoma.inputs.transforms import eval_transform
    from melanoma.models.weights import normalization
    from melanoma.run import Run

    member, backbone = small_member
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    nets = [_theirs(member, seed=k, backbone=backbone) for k in (0, 1)]
    for k, net in enumerate(nets):
        _save(net, downloads / f"{member}_best_fold{k}.pth", data_parallel=k == 1)
    shutil.copy(downloads / f"{member}_best_fold0.pth", downloads / f"{member}_final_fold0.pth")
    r = CliRunner().invoke(app, ["import-winners", str(downloads), "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / member
    assert f"{member}: {backbone}, folds [0, 1], 3 file(s)" in " ".join(r.output.split())
    opened = Run(run)
    assert opened.trained_folds() == [0, 1] and opened.settings.preset == member and opened.scheme == "9c"
    assert (run / "fold0" / "last.safetensors").is_file() and not (
        run / "fold1" / "last.safetensors"
    ).exists()
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((tiny_data / "isic2020" / "jpeg" / "test").glob("*.jpg"))[:1]:
        shutil.copy(path, photos)
    got = predict_images(run, [photos], progress=False)
    rows = read_images([photos])
    cfg = opened.settings
    dataset = LesionDataset(
        rows, eval_transform(cfg.image_size, *normalization(cfg.backbone, cfg.pretrained))
    )
    x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    expected = np.mean([_tta(net, x, None) for net in nets], axis=0)
    assert np.abs(got[[c for c in got.columns if c.startswith("p_")]].to_numpy() - expected).max() < 1e-5
    assert pd.Series(got.melanoma).between(0, 1).all()
    # another file in the place of one imported: refused before anything is read or written
    _save(_theirs(member, seed=5, backbone=backbone), downloads / f"{member}_best_fold0.pth")
    before = (run / "fold0" / "best.safetensors").read_bytes()
    r = CliRunner().invoke(app, ["import-winners", str(downloads), "--out", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "other settings (imported_from)" in " ".join(r.output.split())
    assert (run / "fold0" / "best.safetensors").read_bytes() == before


def test_with_the_data_each_member_gets_its_own_folds(small_member, tiny_data, tmp_path):
    """--data: the member's fold map (here newfold over the pre-resized copies' tfrecord column) at
    its own data size becomes the run's folds.csv and data identity, which evaluate then checks."""
    from typer.testing import CliRunner

    from melanoma.cli import app
    from melanoma.data.folds import published_folds
    from melanoma.data.ingest import ingest
    from melanoma.run import Run
    from melanoma.training.imported import import_winners

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    assert CliRunner().invoke(app, ["prepare", str(data), str(data), "--sizes", "64"]).exit_code == 0
    csv = data / "jpeg-melanoma-64x64" / "train.csv"
    rows = pd.read_csv(csv)
    rows.loc[:2, "tfrecord"] = -1  # as the winners' copies mark their dropped duplicates
    rows.to_csv(csv, index=False)
    member, backbone = small_member
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _save(_theirs(member, backbone=backbone), downloads / f"{member}_best_fold0.pth")
    (run,) = import_winners(downloads, tmp_path / "runs", data)
    table = ingest(data, 64, verify="none", progress=False)
    train = table[table.split == "train"]
    expected = published_folds(train, "newfold")
    saved = Run(run).folds
    assert (saved.loc[train.image_name].to_numpy() == expected.to_numpy()).all()
    assert (expected < 0).any()  # the winners' dropped duplicates (tfrecord -1) are in the table
    assert Run(run).data_identity["images"] == len(train)  # every labelled row, as train records it
    Run(run).check_data(train.assign(fold=expected.to_numpy()))  # its own data, as evaluate gives it
    with pytest.raises(ValueError, match="other images, labels or folds|this data gives"):
        Run(run).check_data(train.assign(fold=published_folds(train, "oldfold").to_numpy()))
    from melanoma.evaluation.calibration import calibrate
    from melanoma.evaluation.evaluate import evaluate

    scored = evaluate(run, table, tta=False, n_boot=10, progress=False)  # fold 0's rows by fold 0's model
    assert scored.folds[0]["fold"] == 0 and scored.folds[0]["images"] == int((expected == 0).sum())
    assert calibrate(run).rows == int((expected == 0).sum())  # the clinical commands read it as any run


@pytest.mark.parametrize("member", ["9c_se_x101_640_ext_15ep", "9c_nest101_2e_640_ext_15ep"])
def test_the_101_layer_members_keys_and_shapes_are_ours(member):
    """At full depth (on the meta device: no memory, no compute) their state dict is ours, name
    for name and shape for shape, with the network the import names."""
    cfg = member_config(member, "unused")
    with torch.device("meta"):
        theirs = _theirs(member)
        ours = MelanomaNet(cfg.backbone, 9)
    assert cfg.backbone == {"9c_se_x101_640_ext_15ep": "legacy_seresnext101_32x4d"}.get(member, "resnest101e")
    mapped = {our_key(k): tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert mapped == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
