"""Near-duplicate images across ISIC 2019, 2020 train and 2020 test.

1. embed: every image through an ImageNet-pretrained CNN (the offline Lite0 weights), pooled
   features (central part) of three middle stages averaged over the 8 flips and rotations so
   that a flipped or rotated copy embeds alike, then whitened on the data;
2. search: cosine nearest neighbours in row blocks (memory bounded), pairs above a threshold;
3. review: candidates.csv (the pairs, each with a `decision` a person may edit) and a static
   review.html showing each pair side by side with its similarity;
4. apply: confirmed pairs form groups; one image per group is kept (test images always, then
   2020 over 2019, then the larger file) and DATA/duplicates.csv records it. `melanoma folds` and
   `melanoma prepare` read that file: a group shares a fold, dropped members leave training.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.decomposition import PCA

from melanoma.data.folder import DataFolder
from melanoma.data.ingest import ingest
from melanoma.fileio import atomic_write, write_csv
from melanoma.inputs.dataset import LesionDataset
from melanoma.inputs.decode import decode, split_hdf5
from melanoma.inputs.transforms import eval_transform
from melanoma.models.inference import dihedral_views, pick_device
from melanoma.models.model import create_backbone
from melanoma.models.weights import normalization
from melanoma.progress import progress_bar

DEFAULT_THRESHOLD = 0.55  # benchmarks/dedup_quality.py on two generator seeds
DECISIONS = ("duplicate", "distinct")
EMBED_BACKBONE = "tf_efficientnet_lite0"
# GeM over these stages' feature maps (80 + 112 + 192 channels) tells one photograph from another
# far better than the classifier head, which is built to say what is in it (dedup_quality.py).
EMBED_STAGES = (3, 4, 5)
# Pool the centre only: borders (vignette, rulers) change most when a copy is cropped.
CENTRE_MARGIN = 0.1
VIEWS = 8  # orientations averaged per image (the dihedral group); 1, 2 or 4 are cheaper
WHITEN_DIMS = 300
# Neighbour search: exact (every pair: n^2) up to EXACT_MAX rows, then an HNSW graph (faiss; time
# about n^1.2) with 16 links per node and candidate lists of 64 (building) and 128 (searching).
# Measured on the embeddings of 70,828 ISIC-scale synthetic images (benchmarks/scale.py's data): exact
# 2.2 s at 20,832 and 24.9 s at 70,828 rows, the graph 4.6 s and 20.5 s, every planted duplicate
# found by both and 8,067 of the exact search's 8,080 pairs (100 of 100 planted copies among 70,000
# random vectors, the hardest case). So: exact for the ISIC 2020 + 2019 download, the graph for
# ISIC 2024's 400,000 crops (about 3 minutes against 13 extrapolated).
EXACT_MAX = 100_000
HNSW_LINKS, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 16, 64, 128


def _gem(features: torch.Tensor, p: float = 3.0, margin: float = CENTRE_MARGIN) -> torch.Tensor:
    """Generalised-mean pooling over the central part of a feature map."""
    h, w = features.shape[2:]
    dh, dw = round(h * margin), round(w * margin)
    centre = features[:, :, dh : h - dh, dw : w - dw]
    return centre.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)


@torch.inference_mode()
def embed(
    table: pd.DataFrame,
    size: int = 96,
    batch: int = 64,
    progress: bool = True,
    views: int = VIEWS,
    device: str = "auto",
) -> np.ndarray:
    """One embedding per row: per stage, GeM-pooled features averaged over the first `views` of
    the 8 flips and rotations (8: invariant to all of them; fewer is faster and finds fewer
    rotated copies) and L2-normalised, then concatenated. `device` auto: a GPU when there is one."""
    if views not in (1, 2, 4, 8):
        raise ValueError(f"views must be 1, 2, 4 or 8, got {views}")
    dev = pick_device(device)
    # channels_last: depthwise convolutions run about twice as fast on the CPU in that layout.
    model = create_backbone(EMBED_BACKBONE, pretrained=True).eval().to(dev, memory_format=torch.channels_last)
    transform = eval_transform(size, *normalization(EMBED_BACKBONE, True))
    loader = torch.utils.data.DataLoader(
        LesionDataset(table.assign(target=0), transform), batch_size=batch, num_workers=0
    )
    out = []
    with progress_bar("dedup: embedding images", len(table), progress) as advance:
        for item in loader:
            totals = dict.fromkeys(EMBED_STAGES, 0)
            for view in dihedral_views(item["image"].to(dev, non_blocking=True))[:views]:
                x = model.bn1(model.conv_stem(view.contiguous(memory_format=torch.channels_last)))
                for stage, block in enumerate(model.blocks[: max(EMBED_STAGES) + 1]):
                    x = block(x)
                    if stage in totals:
                        totals[stage] = totals[stage] + _gem(x.relu())
            parts = [torch.nn.functional.normalize(totals[s] / views, dim=1) for s in EMBED_STAGES]
            out.append(torch.cat(parts, dim=1).float().cpu())
            advance(len(item["image"]))
    return torch.cat(out).numpy()


def whiten(embeddings: np.ndarray, dims: int = WHITEN_DIMS, seed: int = 0) -> np.ndarray:
    """PCA whitening fitted on the data itself, L2-normalised.

    Whitening evens out what all the images share (skin, lighting, the dermoscope), so that what
    is left tells one photograph from another. With few rows, fewer components (half the rows).
    """
    dims = min(dims, len(embeddings) // 2, embeddings.shape[1])
    if dims >= 2:
        embeddings = PCA(dims, whiten=True, random_state=seed).fit_transform(embeddings)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def _hnsw_neighbours(
    x: np.ndarray, threshold: float, k: int, block: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's k nearest rows by inner product from an HNSW graph (faiss), above the threshold:
    about n log n work instead of n^2."""
    import faiss

    index = faiss.IndexHNSWFlat(x.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH
    step = 16 * block
    with progress_bar("dedup: building the neighbour graph", len(x), progress) as advance:
        for start in range(0, len(x), step):
            index.add(x[start : start + step])
            advance(len(x[start : start + step]))
    found_i, found_j, found_s = [], [], []
    with progress_bar("dedup: nearest neighbours", len(x), progress) as advance:
        for start in range(0, len(x), step):
            sims, cols = index.search(x[start : start + step], k + 1)
            rows = np.repeat(np.arange(start, start + len(sims)), k + 1).reshape(sims.shape)
            keep = (cols >= 0) & (cols != rows) & (sims >= threshold)
            found_i.append(rows[keep])
            found_j.append(cols[keep])
            found_s.append(sims[keep])
            advance(len(sims))
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)


def neighbour_pairs(
    embeddings: np.ndarray,
    threshold: float,
    k: int = 10,
    block: int = 1024,
    progress: bool = True,
    method: str = "auto",
) -> pd.DataFrame:
    """Pairs (i < j) with cosine similarity >= threshold, at most k neighbours per row.

    Rows must be L2-normalised. method "exact" compares every row with every other, `block` rows
    at a time (memory stays at block x n similarities; time grows as n^2); "hnsw" searches an
    approximate neighbour graph (time about n log n; see HNSW_*); "auto" is exact up to
    EXACT_MAX rows (the ISIC 2020 + 2019 download), HNSW above (ISIC 2024's 400,000 crops).
    """
    if method not in ("auto", "exact", "hnsw"):
        raise ValueError(f"method must be auto, exact or hnsw, got {method!r}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    if method == "hnsw" or (method == "auto" and n > EXACT_MAX):
        i, j, s = _hnsw_neighbours(x, threshold, k, block, progress)
        return _pairs(i, j, s)
    found_i, found_j, found_s = [], [], []
    with progress_bar("dedup: nearest neighbours", n, progress) as advance:
        for start in range(0, n, block):
            sims = x[start : start + block] @ x.T
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf  # not itself
            r, c = np.nonzero(sims >= threshold)
            s = sims[r, c]
            order = np.lexsort((-s, r))  # by row, most similar first
            r, c, s = r[order], c[order], s[order]
            within_row = np.arange(len(r)) - np.searchsorted(r, r)
            keep = within_row < k
            found_i.append(r[keep] + start)
            found_j.append(c[keep])
            found_s.append(s[keep])
            advance(len(sims))
    i, j = np.concatenate(found_i or [np.empty(0, int)]), np.concatenate(found_j or [np.empty(0, int)])
    s = np.concatenate(found_s or [np.empty(0, np.float32)])
    return _pairs(i, j, s)


def _pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    """Row pairs as (smaller, larger) once, most similar first."""
    pairs = pd.DataFrame({"i": np.minimum(i, j), "j": np.maximum(i, j), "similarity": s})
    pairs = pairs.drop_duplicates(["i", "j"])
    return pairs.sort_values(["similarity", "i", "j"], ascending=[False, True, True]).reset_index(drop=True)


def group_pairs(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the pair graph: a group id per row (-1 for rows in no pair)."""
    if len(i) == 0:
        return np.full(n, -1)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    in_pair = np.zeros(n, bool)
    in_pair[i] = in_pair[j] = True
    _, group = np.unique(label[in_pair], return_inverse=True)
    out = np.full(n, -1)
    out[in_pair] = group
    return out


def candidates(
    table: pd.DataFrame, embeddings: np.ndarray, threshold: float, progress: bool = True
) -> pd.DataFrame:
    """Candidate duplicate pairs with their group, for review; decision defaults to duplicate."""
    pairs = neighbour_pairs(embeddings, threshold, progress=progress)
    group = group_pairs(len(table), pairs.i.to_numpy(), pairs.j.to_numpy())
    names = table.image_name.to_numpy()
    where = (table.source + ":" + table.split).to_numpy()
    return pd.DataFrame(
        {
            "group": group[pairs.i.to_numpy()] if len(pairs) else [],
            "image_a": names[pairs.i],
            "image_b": names[pairs.j],
            "where_a": where[pairs.i],
            "where_b": where[pairs.j],
            "similarity": pairs.similarity.round(4),
            "decision": "duplicate",
            "reviewed": 0,
            "candidate": 1,
        }
    )


def thumbnail_jpeg(path: str, size: int = 160) -> bytes:
    """An image as a small JPEG (for review pages)."""
    im = decode(path, at_least=size)
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def thumbnail(path: str, size: int = 160) -> str:
    """thumbnail_jpeg as a data: URI, for a self-contained page."""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(path, size)).decode()


def review_page(pairs: pd.DataFrame, table: pd.DataFrame, path: Path, decisions_csv: str) -> Path:
    """A self-contained HTML page: each candidate pair side by side with its similarity."""
    paths = dict(zip(table.image_name, table.image_path, strict=True))
    rows = []
    for p in pairs.itertuples(index=False):
        cells = "".join(
            f'<td><img src="{thumbnail(paths[name])}" alt="{html.escape(name)}"><br>'
            f"{html.escape(name)}<br><small>{html.escape(where)}</small></td>"
            for name, where in [(p.image_a, p.where_a), (p.image_b, p.where_b)]
        )
        rows.append(
            f"<tr><td>{int(p.group)}</td><td>{p.similarity:.4f}</td>{cells}"
            f"<td>{html.escape(str(p.decision))}</td></tr>"
        )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Near-duplicate review</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:6px;text-align:center;vertical-align:top;
border-bottom:1px solid #ddd}}img{{max-width:160px;max-height:160px}}</style></head><body>
<h1>Near-duplicate candidates ({len(pairs)} pairs)</h1>
<p>Every pair is marked <b>duplicate</b>. To reject a pair, set its <code>decision</code> to
<code>distinct</code> in <code>{html.escape(decisions_csv)}</code>, then run
<code>melanoma dedup DATA --apply</code>.</p>
<table><tr><th>group</th><th>similarity</th><th>image A</th><th>image B</th><th>decision</th></tr>
{"".join(rows)}
</table></body></html>
"""
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def _pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)  # a pair is the same pair whichever image comes first


def read_decisions(path: Path) -> pd.DataFrame:
    """DATA/dedup/candidates.csv as a person left it: names as text, `reviewed` 0/1 (missing or
    empty: 0), `candidate` 0/1 (missing: 1). A file that cannot be read that way is an error
    naming the line, never replaced."""
    frame = pd.read_csv(path, dtype={"image_a": str, "image_b": str, "decision": str})
    missing = [c for c in ("image_a", "image_b", "decision") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; it is kept as it is")
    for column, default in (("reviewed", 0), ("candidate", 1)):
        if column not in frame.columns:
            frame[column] = default
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & ~values.isin([0, 1])
        if bad.any():
            raise ValueError(
                f"{path}: {column} must be 0 or 1, line {frame.index[bad][0] + 2} has "
                f"{frame[column][frame.index[bad][0]]!r}; it is kept as it is"
            )
        frame[column] = values.fillna(default).astype(int)
    return frame


def keep_decisions(pairs: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """The new candidate pairs with every decision a person made in `old` carried over.

    A person's decision is a row marked reviewed, or a decision other than the default
    (duplicate): it stays, with its reviewed mark, on the pair wherever the pair now is. A decided
    pair that is no longer a candidate (another threshold, other embeddings) stays on record as a
    row with candidate = 0 and its old similarity, and --apply still honours it."""
    old = old.assign(key=[_pair_key(a, b) for a, b in zip(old.image_a, old.image_b, strict=True)])
    person = old[(old.reviewed == 1) | (old.decision != "duplicate")].drop_duplicates("key", keep="last")
    made = dict(zip(person.key, zip(person.decision, person.reviewed, strict=True), strict=True))
    keys = [_pair_key(a, b) for a, b in zip(pairs.image_a, pairs.image_b, strict=True)]
    pairs = pairs.assign(
        decision=[made.get(k, ("duplicate", 0))[0] for k in keys],
        reviewed=[made.get(k, ("duplicate", 0))[1] for k in keys],
        candidate=1,
    )
    gone = person[~person.key.isin(set(keys))]
    if len(gone):
        record = gone.reindex(columns=pairs.columns).assign(group=-1, candidate=0)
        record["similarity"] = pd.to_numeric(gone.get("similarity"), errors="coerce")
        pairs = pd.concat([pairs, record], ignore_index=True)
    return pairs


def apply_decisions(table: pd.DataFrame, decisions: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Groups of confirmed duplicates and which member each keeps: image_name, group, keep."""
    missing = [c for c in ["image_a", "image_b", "decision"] if c not in decisions.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}")
    bad = ~decisions.decision.isin(DECISIONS)
    if bad.any():
        lines = ", ".join(f"line {i + 2} ({decisions.decision[i]!r})" for i in decisions.index[bad][:5])
        raise ValueError(f"{source}: decision must be duplicate or distinct: {lines}")
    index = {n: i for i, n in enumerate(table.image_name)}
    unknown = decisions[~decisions.image_a.isin(index) | ~decisions.image_b.isin(index)]
    if len(unknown):
        raise ValueError(
            f"{source}: {len(unknown)} pair(s) name images not in the data, e.g. line {unknown.index[0] + 2}"
        )
    confirmed = decisions[decisions.decision == "duplicate"]
    i = confirmed.image_a.map(index).to_numpy(int)
    j = confirmed.image_b.map(index).to_numpy(int)
    group = group_pairs(len(table), i, j)
    _check_distinct_kept_apart(decisions, index, group, source)
    members = table.assign(group=group)[group >= 0].copy()
    members["size"] = members.image_path.map(os.path.getsize)
    # Keep: a test image (it must be predicted), else a 2020 image, else the largest file.
    members["rank"] = list(
        zip(members.split != "test", members.is_ext, -members["size"], members.image_name, strict=True)
    )
    keep = members.sort_values("rank").groupby("group").head(1).index
    members["keep"] = members.index.isin(keep).astype(int)
    # A test image's train duplicates are dropped too; two test images in one group both stay.
    members.loc[members.split == "test", "keep"] = 1
    return members[["image_name", "group", "keep"]].reset_index(drop=True)


def _check_distinct_kept_apart(
    decisions: pd.DataFrame, index: dict[str, int], group: np.ndarray, source: Path
) -> None:
    """A pair called distinct must not end up in one group through other pairs marked duplicate
    (A = C and C = B would drop A or B): refuse, naming the lines to decide again."""
    distinct = decisions[decisions.decision == "distinct"]
    ga = group[distinct.image_a.map(index).to_numpy(int)]
    gb = group[distinct.image_b.map(index).to_numpy(int)]
    joined = distinct[(ga >= 0) & (ga == gb)]
    if len(joined):
        row = joined.index[0]
        g = group[index[decisions.image_a[row]]]
        in_group = decisions.image_a.map(index).map(lambda r: group[r] == g)
        linking = decisions.index[(decisions.decision == "duplicate") & in_group][:5]
        raise ValueError(
            f"{source}: line {row + 2} calls {decisions.image_a[row]} and {decisions.image_b[row]} distinct, "
            f"but pairs marked duplicate join them (line(s) {', '.join(str(r + 2) for r in linking)}): "
            "decide those again (`melanoma dedup DATA --review`); nothing was written"
        )


def load_duplicates(data: Path) -> tuple[pd.Series | None, set[str]]:
    """From DATA/duplicates.csv (made by `apply`): image_name -> group, and the names dropped
    from training; (None, empty) when there is no such file."""
    path = DataFolder(data).duplicates
    if not path.is_file():
        return None, set()
    dups = pd.read_csv(path, dtype={"image_name": str})
    if list(dups.columns) != ["image_name", "group", "keep"]:
        raise ValueError(f"{path}: expected columns image_name,group,keep; rerun `melanoma dedup --apply`")
    return pd.Series(dups.group.to_numpy(), index=dups.image_name), set(dups.image_name[dups.keep == 0])


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to a name
        np.save(f, array)


def embedding_key(table: pd.DataFrame, size: int, views: int = VIEWS) -> str:
    """What the embeddings depend on: every image's name, path, byte size and modification time,
    and the embedding settings. A changed image or setting gives another key (the cache is redone)."""
    settings = (EMBED_BACKBONE, EMBED_STAGES, CENTRE_MARGIN, size) + ((views,) if views != VIEWS else ())
    digest = hashlib.sha256(repr(settings).encode())
    for name, path in zip(table.image_name, table.image_path, strict=True):
        inside = split_hdf5(path)  # an ISIC 2024 crop: the HDF5 file's size and time stand for it
        st = os.stat(inside[0] if inside else path)
        digest.update(f"{name}\t{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def find_duplicates(
    data: Path,
    threshold: float = DEFAULT_THRESHOLD,
    size: int = 96,
    progress: bool = True,
    views: int = VIEWS,
    device: str = "auto",
) -> pd.DataFrame:
    """Embed every image under DATA, search, and write DATA/dedup/{embeddings.npy,candidates.csv,
    review.html}; returns the candidate pairs. Embeddings are reused when the images are the same."""
    table = ingest(data, verify="header", progress=progress)  # the embedding decodes every byte
    place = DataFolder(data)
    folder, decisions = place.dedup, place.candidates
    made = (
        read_decisions(decisions) if decisions.is_file() else None
    )  # a broken file stops us before any work
    folder.mkdir(exist_ok=True)
    cache, key_file = place.embeddings(size)
    key = embedding_key(table, size, views)
    if cache.is_file() and key_file.is_file() and key_file.read_text() == key:
        embeddings = np.load(cache)
    else:
        embeddings = embed(table, size, progress=progress, views=views, device=device)
        atomic_write(cache, lambda tmp: _save_array(tmp, embeddings))
        atomic_write(key_file, lambda tmp: tmp.write_text(key))
    pairs = candidates(table, whiten(embeddings), threshold, progress)
    if made is not None:  # a rerun keeps every decision a person made
        pairs = keep_decisions(pairs, made)
    write_csv(pairs, decisions)
    review_page(pairs, table, place.review_page, str(decisions))
    return pairs


def apply(data: Path) -> pd.DataFrame:
    """Read DATA/dedup/candidates.csv (as edited) and write DATA/duplicates.csv."""
    table = ingest(data, verify="none", progress=False)
    source = DataFolder(data).candidates
    if not source.is_file():
        raise FileNotFoundError(f"{source}: not found; run `melanoma dedup DATA` first")
    result = apply_decisions(table, read_decisions(source), source)
    write_csv(result, DataFolder(data).duplicates)
    return result
