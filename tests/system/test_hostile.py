"""The hostile-input suite: what a careless file, a damaged transfer, a hostile web page
or a full disk does to every command. Each case asserts the exit code, the one-line message and
that nothing was written or lost; no case may end in a traceback. Grow it with every new command.

Sections: 1 the review server, 2 decisions a person made, 3 the tree run, 4 the SLURM script,
5 damaged images, 6 ISIC 2024 identifiers and tables, 7 outputs and paths. (tests/system/test_safety.py
holds the earlier cases: overwrites of input data, kill -9, read-only folders.)
"""

import http.client
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import cli, digest, refused

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def data(tiny_data, tmp_path) -> Path:
    shutil.copytree(tiny_data, tmp_path / "data")
    return tmp_path / "data"


# 1. The review server.


@pytest.fixture()
def review(data):
    """A review server over three candidate pairs: (server, candidates.csv, its bytes)."""
    from melanoma.data.review import server

    names = sorted(p.stem for p in (data / "isic2020" / "jpeg" / "train").glob("*.jpg"))[:6]
    (data / "dedup").mkdir(exist_ok=True)
    pd.DataFrame({"group": [0, 1, 2], "image_a": names[0::2], "image_b": names[1::2],
                  "where_a": "isic2020:train", "where_b": "isic2020:train", "similarity": [0.91, 0.74, 0.58],
                  "decision": "duplicate"}).to_csv(data / "dedup" / "candidates.csv", index=False)  # fmt: skip
    csv = data / "dedup" / "candidates.csv"
    httpd = server(data, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, csv, csv.read_bytes()
    httpd.shutdown()
    httpd.server_close()


def _request(httpd, method, path, body=b"", **headers):
    port = httpd.server_address[1]
    headers = {"Host": f"127.0.0.1:{port}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    if method == "POST" and "Content-Length" not in headers:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    out = response.status, response.read().decode(errors="replace"), response.getheader("Set-Cookie")
    conn.close()
    return out


def _cookie(httpd):
    return f"melanoma_review_{httpd.server_address[1]}={httpd.token}"


def test_the_review_server_serves_only_its_own_page_with_its_token(review):
    httpd, csv, before = review
    port = httpd.server_address[1]
    own = f"http://127.0.0.1:{port}"
    # Without the token: nothing, not even the page.
    for path in ["/", "/pairs", "/image/x"]:
        status, text, _ = _request(httpd, "GET", path)
        assert status == 403 and "token" in text
    status, _, _ = _request(httpd, "GET", "/pairs?token=" + httpd.token)  # the URL token opens the page only
    assert status == 403
    # The printed URL sets a cookie for this port; with it, the page and its data are served.
    status, page, cookie = _request(httpd, "GET", "/?token=" + httpd.token)
    assert status == 200 and "Near-duplicate review" in page
    assert cookie.startswith(_cookie(httpd)) and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, pairs, _ = _request(httpd, "GET", "/pairs", Cookie=_cookie(httpd))
    assert status == 200 and len(json.loads(pairs)) == 3
    # A cookie left by an earlier session on this port does not lock the reviewer out of the new URL.
    stale = f"melanoma_review_{port}=an-earlier-sessions-token"
    status, _, cookie = _request(httpd, "GET", "/?token=" + httpd.token, Cookie=stale)
    assert status == 200 and cookie.startswith(_cookie(httpd))
    assert _request(httpd, "GET", "/pairs", Cookie=stale)[0] == 403
    # DNS rebinding: another name for this address is refused, token or not.
    for host in [f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"localhost.evil:{port}"]:
        status, text, _ = _request(httpd, "GET", "/pairs", Host=host, Cookie=_cookie(httpd))
        assert status == 403 and "Host" in text, host
    assert _request(httpd, "GET", "/pairs", Host=f"localhost:{port}", Cookie=_cookie(httpd))[0] == 200
    # What another page's fetch or <img> carries (cookies ignore ports, so it brings the cookie).
    for headers in [{"Origin": "http://127.0.0.1:9999"}, {"Sec-Fetch-Site": "same-site"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}]:  # fmt: skip
        status, _, _ = _request(httpd, "GET", "/pairs", Cookie=_cookie(httpd), **headers)
        assert status == 403, headers
    assert csv.read_bytes() == before and httpd.errors == []
    assert _request(httpd, "GET", "/pairs", Cookie=_cookie(httpd), Origin=own)[0] == 200


@pytest.mark.parametrize(
    "body, headers, status, says",
    [
        ('{"index": 0, "decision": "distinct"}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (
            '{"index": 0, "decision": "distinct"}',
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "json",
        ),
        ('{"index": 0, "decision": "distinct"}', {"Content-Type": None}, 415, "application/json"),
        ('{"index": true, "decision": "distinct"}', {}, 400, "integer"),
        ('{"index": 2.7, "decision": "distinct"}', {}, 400, "integer"),
        ('{"index": 1e999, "decision": "distinct"}', {}, 400, "finite"),
        ('{"index": NaN, "decision": "distinct"}', {}, 400, "NaN"),
        ('{"index": "0", "decision": "distinct"}', {}, 400, "integer"),
        ('{"index": 0, "decision": "distinct", "more": 1}', {}, 400, "JSON object"),
        ('{"index": 0, "decision": ["distinct"]}', {}, 400, "decision"),
        ('{"index": 0, "decision": "maybe"}', {}, 400, "decision"),
        ('{"index": 99, "decision": "distinct"}', {}, 400, "no candidate pair 99"),
        ('{"index": -1, "decision": "distinct"}', {}, 400, "no candidate pair"),
        ("[" * 2000 + "]" * 2000, {}, 400, "nested too deeply"),
        ("[[[1]]]", {}, 400, "expected a JSON object"),
        ('{"a":' * 600 + "1" + "}" * 600, {}, 400, "JSON object"),
        ("\xff\xfe not json", {}, 400, ""),
        ('{"index": 0, "decision": "distinct"}', {"Content-Length": "99999999999999999999"}, 413, "at most"),
        ('{"index": 0, "decision": "distinct"}', {"Content-Length": "-5"}, 411, "Content-Length"),
        ('{"index": 0, "decision": "distinct"}', {"Content-Length": "1e3"}, 411, "Content-Length"),
        ("x" * 5000, {}, 413, "at most"),
    ],
)
def test_a_decision_must_be_exactly_json_with_an_integer_index(review, body, headers, status, says):
    httpd, csv, before = review
    own = f"http://127.0.0.1:{httpd.server_address[1]}"
    headers = {"Content-Type": "application/json", "Origin": own, "Cookie": _cookie(httpd), **headers}
    headers = {k: v for k, v in headers.items() if v is not None}  # None: the header is not sent
    got, text, _ = _request(httpd, "POST", "/decide", body.encode("latin-1"), **headers)
    assert got == status and says in text, (got, text)
    assert csv.read_bytes() == before  # nothing written
    assert httpd.errors == []  # no handler raised


def test_a_decision_from_another_origin_or_without_proof_is_refused(review):
    httpd, csv, before = review
    port = httpd.server_address[1]
    body = b'{"index": 0, "decision": "distinct"}'
    json_type = {"Content-Type": "application/json"}
    for headers in [
        {"Origin": "http://127.0.0.1:9999", "Cookie": _cookie(httpd)},  # another local port's page
        {"Origin": "http://evil.example", "Cookie": _cookie(httpd)},
        {"Cookie": _cookie(httpd)},  # no Origin: a cookie alone proves nothing
        {"Origin": f"http://127.0.0.1:{port}"},  # no token at all
        {"Origin": f"http://127.0.0.1:{port}", "Cookie": f"melanoma_review_{port}=guess"},
        {"X-Review-Token": "guess"},
    ]:
        status, _, _ = _request(httpd, "POST", "/decide", body, **json_type, **headers)
        assert status == 403, headers
    for method in ["PUT", "DELETE", "OPTIONS"]:
        assert _request(httpd, method, "/decide", **{"Origin": "http://127.0.0.1:9999"})[0] == 405
    assert csv.read_bytes() == before and httpd.errors == []
    # The page's own request, and a script that holds the token, are served.
    own = {"Origin": f"http://127.0.0.1:{port}", "Cookie": _cookie(httpd)}
    assert _request(httpd, "POST", "/decide", body, **json_type, **own)[0] == 200
    body = b'{"index": 1, "decision": "distinct"}'
    assert _request(httpd, "POST", "/decide", body, **json_type, **{"X-Review-Token": httpd.token})[0] == 200
    saved = pd.read_csv(csv)
    assert list(saved.decision) == ["distinct", "distinct", "duplicate"] and list(saved.reviewed) == [1, 1, 0]


def test_an_edit_by_hand_while_the_page_is_open_is_kept(review):
    httpd, csv, _ = review
    own = {"Origin": f"http://127.0.0.1:{httpd.server_address[1]}", "Cookie": _cookie(httpd),
           "Content-Type": "application/json"}  # fmt: skip
    edited = pd.read_csv(csv)
    edited.loc[2, "decision"] = "distinct"  # by hand, in an editor
    edited.to_csv(csv, index=False)
    assert _request(httpd, "POST", "/decide", b'{"index": 0, "decision": "distinct"}', **own)[0] == 200
    assert list(pd.read_csv(csv).decision) == ["distinct", "duplicate", "distinct"]
    reordered = pd.read_csv(csv).iloc[::-1]  # rows moved: index 1 is another pair now
    reordered.to_csv(csv, index=False)
    status, text, _ = _request(httpd, "POST", "/decide", b'{"index": 2, "decision": "duplicate"}', **own)
    assert status == 400 and "changed since the page was loaded" in text
    assert pd.read_csv(csv).equals(reordered.reset_index(drop=True))


HOSTILE_PAGE = """<!doctype html><html><body><iframe name="sink"></iframe>
<form id="f" method="POST" action="REVIEW/decide" enctype="text/plain" target="sink">
<input name='{"index": 0, "decision": "distinct", "x": "' value='"}'></form>
<script>
const out = {};
async function attack() {
  try { const r = await fetch("REVIEW/pairs", {credentials: "include"}); out.read = await r.text(); }
  catch (e) { out.read = "blocked"; }
  try { const r = await fetch("REVIEW/pairs", {mode: "no-cors", credentials: "include"});
        out.opaque = r.type + ":" + (await r.text()); } catch (e) { out.opaque = "blocked"; }
  for (const type of ["text/plain", "application/json"]) {
    try { await fetch("REVIEW/decide", {method: "POST", mode: "no-cors", credentials: "include",
            headers: {"Content-Type": type}, body: JSON.stringify({index: 1, decision: "distinct"})}); }
    catch (e) {}
  }
  try { await fetch("REVIEW/decide", {method: "POST", credentials: "include",
          headers: {"Content-Type": "application/json"}, body: JSON.stringify({index: 2, decision: "distinct"})}); }
  catch (e) {}
  const img = new Image();
  out.image = await new Promise((done) => { img.onload = () => done("loaded"); img.onerror = () => done("refused");
                                            img.src = "REVIEW/image/NAME"; });
  document.getElementById("f").submit();
  setTimeout(() => { document.title = "done " + JSON.stringify(out); }, 1500);
}
attack();
</script></body></html>"""


def test_a_page_from_another_local_port_gets_nothing_and_changes_nothing(review):
    """In headless Chromium: the reviewer has the review page open (its cookie set), then opens a
    hostile page served from another local port, which tries to read the pairs, fetch a
    thumbnail and POST decisions every way a browser allows without a preflight."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is missing: `make test` installs the Debian package chromium"
    httpd, csv, before = review
    name = pd.read_csv(csv).image_a[0]
    page_html = HOSTILE_PAGE.replace("REVIEW", f"http://127.0.0.1:{httpd.server_address[1]}").replace(
        "NAME", name
    )

    class Hostile(BaseHTTPRequestHandler):
        def log_message(self, *args):
            return

        def do_GET(self):
            body = page_html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(httpd.url)  # the reviewer's own tab: the cookie is set in this browser
            page.wait_for_function("document.getElementById('status').textContent.includes('Pair 1 of 3')")
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
            page.wait_for_function("document.title.startsWith('done')", timeout=20000)
            seen = json.loads(page.title()[5:])
            browser.close()
    finally:
        evil.shutdown()
        evil.server_close()
    assert seen["read"] == "blocked" and seen["opaque"] == "opaque:" and seen["image"] == "refused", seen
    assert csv.read_bytes() == before  # no decision changed
    assert httpd.errors == []
    # The requests did reach the server and were refused there, not only by the browser.
    assert any(r.startswith("GET /pairs") for r in httpd.refused), httpd.refused
    assert any(r.startswith("POST /decide") for r in httpd.refused), httpd.refused
    assert any(r.startswith("GET /image/") for r in httpd.refused), httpd.refused


# 2. Decisions a person made.


def _decided(data: Path) -> pd.DataFrame:
    return pd.read_csv(data / "dedup" / "candidates.csv", dtype={"image_a": str, "image_b": str})


def test_a_reviewed_decision_survives_every_rerun(data):
    from melanoma.data.review import Review

    csv = data / "dedup" / "candidates.csv"
    assert cli("dedup", data)[0] == 0
    first = _decided(data)
    assert len(first) >= 3 and set(first.reviewed) == {0} and set(first.candidate) == {1}
    Review(data).decide(0, "distinct")  # in the browser
    Review(data).decide(1, "duplicate")  # confirmed in the browser
    edited = _decided(data)
    edited.loc[2, "decision"] = "distinct"  # by hand in an editor, without the reviewed mark
    edited.to_csv(csv, index=False)
    mine = {(r.image_a, r.image_b): (r.decision, r.reviewed) for r in edited.head(3).itertuples()}
    # A threshold no pair reaches: every decided pair stays on record, no longer a candidate.
    code, out = cli("dedup", data, "--threshold", "0.9999")
    assert (
        code == 0 and "3 decision(s) a person made are kept (3 of them on pairs no longer candidates)" in out
    )
    record = _decided(data)
    assert len(record) == 3 and set(record.candidate) == {0}
    assert {(r.image_a, r.image_b): (r.decision, r.reviewed) for r in record.itertuples()} == mine
    # Back to the default threshold: the pairs are candidates again and keep their decisions.
    assert cli("dedup", data)[0] == 0
    again = _decided(data)
    assert len(again) == len(first) and set(again.candidate) == {1}
    got = {(r.image_a, r.image_b): (r.decision, r.reviewed) for r in again.itertuples()}
    assert all(got[pair] == decided for pair, decided in mine.items())
    # --apply keeps both images of the pairs called distinct.
    assert cli("dedup", data, "--threshold", "0.9999")[0] == 0
    assert cli("dedup", data, "--apply")[0] == 0
    dropped = set(pd.read_csv(data / "duplicates.csv").query("keep == 0").image_name)
    confirmed = next(pair for pair, (d, _) in mine.items() if d == "duplicate")
    assert len(set(confirmed) & dropped) == 1  # a reviewed duplicate still counts off-threshold
    for (a, b), (decision, _) in mine.items():
        if decision == "distinct":
            assert not ({a, b} - set(confirmed)) & dropped


def test_apply_refuses_to_drop_an_image_a_person_called_distinct(data, tiny_data):
    names = sorted(p.stem for p in (data / "isic2020" / "jpeg" / "train").glob("*.jpg"))[:3]
    a, b, c = names
    (data / "dedup").mkdir(exist_ok=True)
    csv = data / "dedup" / "candidates.csv"
    pd.DataFrame({"image_a": [a, a, c], "image_b": [b, c, b], "similarity": [0.6, 0.9, 0.9],
                  "decision": ["distinct", "duplicate", "duplicate"], "reviewed": [1, 0, 0]}).to_csv(csv, index=False)  # fmt: skip
    (data / "duplicates.csv").write_text("image_name,group,keep\n")
    refused(
        *cli("dedup", data, "--apply"),
        f"line 2 calls {a} and {b} distinct",
        "line(s) 3, 4",
        "nothing was written",
    )
    assert (data / "duplicates.csv").read_text() == "image_name,group,keep\n"


@pytest.mark.parametrize("column, value", [("reviewed", "yes"), ("reviewed", "2"), ("candidate", "maybe")])
def test_a_candidates_file_a_person_broke_is_named_and_kept(data, column, value):
    names = sorted(p.stem for p in (data / "isic2020" / "jpeg" / "train").glob("*.jpg"))[:2]
    (data / "dedup").mkdir(exist_ok=True)
    csv = data / "dedup" / "candidates.csv"
    frame = pd.DataFrame({"image_a": [names[0]], "image_b": [names[1]], "similarity": [0.9],
                          "decision": ["distinct"], "reviewed": [1], "candidate": [1]})  # fmt: skip
    frame[column] = value
    frame.to_csv(csv, index=False)
    before = csv.read_bytes()
    refused(*cli("dedup", data, "--apply"), f"{csv}: {column} must be 0 or 1, line 2")
    refused(*cli("dedup", data), f"{csv}: {column} must be 0 or 1, line 2", "kept as it is")
    assert csv.read_bytes() == before


# 5. Damaged images.


def _cut_short(path: Path, keep: float = 0.5) -> Path:
    """Image data that stops short of what the header declares, with an end marker appended (what
    a damaged transfer or a rewritten header leaves)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] + b"\xff\xd9")
    return path


def _photo(path: Path, size=(300, 200), progressive=False, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    picture = np.stack([x % 256, y % 256, (x + y) % 256], -1) + rng.integers(0, 40, (size[1], size[0], 3))
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(path, quality=92, progressive=progressive)
    return path


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_short_is_refused_not_decoded_grey(tmp_path, progressive):
    from melanoma.inputs.decode import ImageError, check_image, decode

    path = _cut_short(_photo(tmp_path / "cut.jpg", progressive=progressive))
    with Image.open(path) as im:  # what every reader did before: a picture, flat grey below the cut
        im.load()
    assert check_image(path, "header") == ""  # its header and end marker are fine
    assert "premature end" in check_image(path, "decode").lower() or "truncated" in check_image(
        path, "decode"
    )
    for at_least in (None, 16, 100):
        with pytest.raises(ImageError, match=f"{path}: truncated or damaged JPEG"):
            decode(path, at_least=at_least)


def test_strict_decoding_gives_pillows_pixels(tmp_path):
    """The strict decoder changes nothing for a sound file: the same pixels as Pillow's, at every
    reduced scale, in greyscale and under each EXIF orientation."""
    import math

    from PIL import ImageOps

    from melanoma.inputs.decode import decode

    colour = _photo(tmp_path / "c.jpg", size=(640, 480))
    grey = tmp_path / "g.jpg"
    Image.open(colour).convert("L").save(grey, quality=90)
    for path in (colour, grey):
        for at_least in (None, 16, 60, 61, 120, 240, 480):
            with Image.open(path) as im:
                if at_least and at_least < min(im.size):
                    s = at_least / min(im.size)
                    im.draft("RGB", (math.ceil(im.width * s), math.ceil(im.height * s)))
                expected = np.asarray(im.convert("RGB"))
            got = np.asarray(decode(path, at_least=at_least))
            assert got.shape == expected.shape and (got == expected).all(), (path.name, at_least)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.jpg"
        with Image.open(colour) as im:
            exif = im.getexif()
            exif[0x0112] = orientation
            im.save(path, exif=exif, quality=92)
        with Image.open(path) as im:
            expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert (np.asarray(decode(path)) == expected).all(), orientation


def test_every_command_refuses_a_jpeg_cut_short(data, tiny_runs, tmp_path):
    from melanoma.data.checks import DataError
    from melanoma.data.ingest import ingest

    bad = _cut_short(sorted((data / "isic2020" / "jpeg" / "train").glob("*.jpg"))[3])
    with pytest.raises(DataError, match="1 image") as err:
        ingest(data, verify="decode", progress=False)
    assert f"{bad}: truncated or damaged JPEG" in str(err.value)
    refused(*cli("ingest", data, "--verify", "decode", "--out", tmp_path / "t.csv"), str(bad))
    assert not (tmp_path / "t.csv").exists()
    # prepare leaves it out and names it
    assert cli("prepare", data, tmp_path / "prepared", "--sizes", 32, "--workers", 1)[0] == 0
    report = pd.read_csv(tmp_path / "prepared" / "prepare_report.csv")
    assert list(report.image_path) == [str(bad)] and "truncated or damaged JPEG" in report.error[0]
    assert bad.stem not in set(
        pd.read_csv(tmp_path / "prepared" / "jpeg-melanoma-32x32" / "train.csv").image_name
    )
    # predict --images refuses it by name and writes nothing
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(bad, folder / "cut.jpg")
    shutil.copy(sorted((data / "isic2020" / "jpeg" / "test").glob("*.jpg"))[0], folder / "fine.jpg")
    out = tmp_path / "scores.csv"
    refused(*cli("predict", tiny_runs["plain"], "--images", folder, "--out", out, "--no-tta"),
            f"{folder / 'cut.jpg'}: truncated or damaged JPEG")  # fmt: skip
    assert not out.exists()


def test_an_hdf5_crop_cut_short_is_refused(tiny_2024, tmp_path):
    import h5py

    from melanoma.data.checks import DataError
    from melanoma.data.ingest import ingest

    data = tmp_path / "data"
    shutil.copytree(tiny_2024, data)
    hdf5 = data / "isic2024" / "train-image.hdf5"
    with h5py.File(hdf5, "a") as f:
        key = sorted(f.keys())[5]
        crop = bytes(f[key][()])
        del f[key]
        f[key] = np.void(crop[: len(crop) // 2] + b"\xff\xd9")
    assert len(ingest(data, verify="header", progress=False)) > 0  # the header check cannot see it
    with pytest.raises(DataError, match="1 image") as err:
        ingest(data, verify="decode", progress=False)
    assert f"{hdf5}::{key}: truncated or damaged JPEG" in str(err.value)


# 3. The tree run.

GBDT = ["--n-estimators", 20, "--k-folds", 3]


def _copy24(tiny_2024, tmp_path) -> Path:
    shutil.copytree(tiny_2024, tmp_path / "data24")
    return tmp_path / "data24"


def test_gbdt_never_writes_into_a_folder_of_someone_elses_files(tiny_2024, tmp_path):
    data = _copy24(tiny_2024, tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    for name in ("log.txt", "folds.csv", "submission.csv"):
        (theirs / name).write_text(f"my own {name}\n")
    before = digest(theirs)
    refused(
        *cli("gbdt", data, "--out", theirs, *GBDT),
        f"{theirs} holds files no run made (folds.csv, log.txt, submission.csv)",
    )
    assert digest(theirs) == before
    # an image run's folder and a tree run with other settings are refused too
    run = tmp_path / "run"
    assert cli("gbdt", data, "--out", run, *GBDT)[0] == 0
    before = digest(run)
    refused(
        *cli("gbdt", data, "--out", run, "--n-estimators", 30, "--k-folds", 3),
        "holds a run with other settings",
    )
    assert digest(run) == before


KILL_AT_FOLD = """
import os, sys
import lightgbm
fit, calls = lightgbm.LGBMClassifier.fit, []
def dying_fit(self, *a, **k):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), 9)  # kill -9 as the third fold starts
    return fit(self, *a, **k)
lightgbm.LGBMClassifier.fit = dying_fit
from melanoma.cli import app
app(sys.argv[1:])
"""


def test_a_tree_run_killed_mid_way_is_not_scored_as_complete(tiny_2024, tmp_path):
    import subprocess
    import sys

    from melanoma import rundir

    data, run = _copy24(tiny_2024, tmp_path), tmp_path / "run"
    args = ["gbdt", str(data), "--out", str(run), "--n-estimators", "20", "--k-folds", "5"]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_FOLD, *args], capture_output=True, text=True)
    assert killed.returncode == -9
    assert sorted(p.parent.name for p in run.glob("fold*/oof.csv")) == ["fold0", "fold1"]
    assert not list(run.rglob("*.tmp"))
    for command in (["evaluate", run], ["report", run], ["calibrate", run], ["operating-points", run]):
        refused(*cli(*command), "the tree run stopped early: folds 0, 1 of 5 were trained (not 2, 3, 4)")
    assert not (run / "report.html").exists() and not list(run.glob("evaluation_*.json"))
    code, out = cli("evaluate", run, "--allow-unfinished")  # asked for: scored, and said
    assert code == 0 and "unfinished tree run" in out
    stale = rundir.evaluations(run)
    assert len(stale) == 1
    # The same command again finishes the run; the evaluation of 2 folds is no longer shown.
    assert cli(*args)[0] == 0
    assert rundir.evaluations(run) == []
    assert cli("evaluate", run)[0] == 0 and len(rundir.evaluations(run)) == 1
    assert (run / "log.txt").read_text().count("; 5 fold(s) of") == 2  # the log is appended, not emptied


def test_a_full_disk_in_gbdt_leaves_no_fragment(tiny_2024, tmp_path, monkeypatch):
    import errno

    import lightgbm

    data, run = _copy24(tiny_2024, tmp_path), tmp_path / "run"
    assert cli("gbdt", data, "--out", run, *GBDT)[0] == 0
    log = (run / "log.txt").read_text()
    boosters = {p: p.read_bytes() for p in run.glob("fold*/lightgbm.txt")}

    def full_disk(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"tree\n" * 800)  # 4 KB, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(lightgbm.Booster, "save_model", full_disk)
    refused(*cli("gbdt", data, "--out", run, *GBDT), "No space left on device")
    assert not list(run.rglob("*.tmp"))
    assert {p: p.read_bytes() for p in run.glob("fold*/lightgbm.txt")} == boosters  # the old boosters stay
    assert (run / "log.txt").read_text().startswith(log)


# 4. The SLURM script.


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--partition", "gpu\n#SBATCH --array=0-0", "--partition"),
        ("--partition", "gpu; rm -rf ~", "--partition"),
        ("--logs", "logs\nrm -rf ~", "control character"),
        ("--logs", 'logs"x', "double quote"),
        ("--setup", "module load cuda\nrm -rf ~", "--setup"),
    ],
)
def test_no_value_starts_a_line_of_the_slurm_script(tmp_path, option, value, says):
    script = tmp_path / "m.sbatch"
    refused(*cli("members", "/d", "--out", tmp_path / "runs", "--slurm", script, option, value), says)
    assert not script.exists()


def test_a_suite_name_from_a_file_does_not_reach_the_script_unchecked(tmp_path):
    import subprocess

    suite = tmp_path / "suite.toml"
    suite.write_text(
        'name = "mine\\nrm -rf ~"\nfolds = [0]\n[baseline]\nepochs = 1\n[variants.b]\nlr = 1e-4\n'
    )
    script = tmp_path / "a.sbatch"
    refused(*cli("ablate", "units", suite, "--data", "/d", "--out", tmp_path / "o", "--slurm", script),
            "the job name", "control character")  # fmt: skip
    assert not script.exists()
    # Spaces are fine: quoted as sbatch reads them, and the script is valid bash.
    suite.write_text('name = "my suite"\nfolds = [0]\n[baseline]\nepochs = 1\n[variants.b]\nlr = 1e-4\n')
    logs = tmp_path / "my logs"
    assert (
        cli(
            "ablate",
            "units",
            suite,
            "--data",
            "/d",
            "--out",
            tmp_path / "o",
            "--slurm",
            script,
            "--logs",
            logs,
        )[0]
        == 0
    )
    lines = script.read_text().splitlines()
    assert '#SBATCH --job-name="melanoma-my suite"' in lines
    assert f'#SBATCH --output="{logs}/%x_%a.log"' in lines
    header = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert header == list(range(1, len(header) + 1))  # one unbroken block after the shebang
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


# 6. ISIC 2024: identifiers and tables.


def _edit_2024(data: Path, split: str, change) -> Path:
    path = data / "isic2024" / f"{split}-metadata.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(path, index=False)
    return path


def test_an_isic_id_in_train_and_test_is_refused_before_anything_is_written(tiny_2024, tmp_path):
    import h5py

    data = _copy24(tiny_2024, tmp_path)
    train_id = pd.read_csv(data / "isic2024" / "train-metadata.csv").isic_id[7]
    with h5py.File(data / "isic2024" / "test-image.hdf5", "a") as f:
        old = sorted(f.keys())[0]
        f[train_id] = f[old][()]
    path = _edit_2024(data, "test", lambda t: t.__setitem__("isic_id", t.isic_id.replace(old, train_id)))
    refused(*cli("ingest", data), f"{path}: 1 row(s) repeat an isic_id of train-metadata.csv", train_id)
    run = tmp_path / "run"
    refused(*cli("gbdt", data, "--out", run, *GBDT), "repeat an isic_id of train-metadata.csv")
    assert not run.exists()


def test_targets_patients_and_hdf5_keys_are_checked_at_the_boundary(tiny_2024, tmp_path):
    import h5py

    from melanoma.data.ingest import ingest

    data = _copy24(tiny_2024, tmp_path)
    # "1.0" is 1: read as such everywhere, not a bare error later
    path = _edit_2024(
        data, "train", lambda t: t.__setitem__("target", t.target.replace({"1": "1.0", "0": "0.0"}))
    )
    table = ingest(data, verify="none", progress=False)
    assert set(table.diagnosis[table.split == "train"]) == {"benign", "malignant"}
    _edit_2024(data, "train", lambda t: t.loc.__setitem__((3, "target"), "2"))
    refused(
        *cli("ingest", data), f"{path}: 1 row(s) have a target other than 0 (benign) or 1 (malignant): line 5"
    )
    _edit_2024(data, "train", lambda t: t.loc.__setitem__((3, "target"), "0"))
    # a patient of only spaces is no patient
    _edit_2024(data, "train", lambda t: t.loc.__setitem__((4, "patient_id"), "   "))
    refused(*cli("ingest", data), f"{path}: 1 row(s) have no patient_id (empty or only spaces): line 6")
    ids = pd.read_csv(path).isic_id
    _edit_2024(data, "train", lambda t: t.loc.__setitem__((4, "patient_id"), " " + t.patient_id[5] + " "))
    table = ingest(data, verify="none", progress=False).set_index("image_name")
    assert table.patient_id[ids[4]] == table.patient_id[ids[5]]  # spaces around an id do not make a patient
    # an HDF5 key that is a group, not a crop
    hdf5 = data / "isic2024" / "train-image.hdf5"
    with h5py.File(hdf5, "a") as f:
        del f[ids[8]]
        f.create_group(ids[8])
    refused(*cli("ingest", data), f"name an HDF5 group, not an image's bytes, in {hdf5}: line 10 ({ids[8]})")


def test_gbdt_refuses_data_with_no_malignant_row_and_identifier_features(tiny_2024, tmp_path):
    from melanoma.tabular.features import build_features

    data, run = _copy24(tiny_2024, tmp_path), tmp_path / "run"
    for column in ("isic_id", "patient_id"):
        refused(*cli("gbdt", data, "--out", run, "--features", column), f"{column}: an identifier")
    assert not run.exists()
    meta = pd.read_csv(data / "isic2024" / "train-metadata.csv")
    features = build_features(meta, ["copyright_license", "image_type"])
    for column in ("copyright_license", "image_type"):  # text: a category, not an all-NaN number
        assert features[column].dtype == "category" and features[column].notna().all()
    path = _edit_2024(data, "train", lambda t: t.__setitem__("target", "0"))
    refused(*cli("gbdt", data, "--out", run, *GBDT), f"{path}: no malignant row (target 1)")
    assert not run.exists()


def test_image_commands_on_a_tree_run_say_what_to_do(tiny_2024, tmp_path):
    data, run = _copy24(tiny_2024, tmp_path), tmp_path / "run"
    assert cli("gbdt", data, "--out", run, *GBDT)[0] == 0
    before = digest(run)
    image = tmp_path / "x.jpg"
    _photo(image)
    for command in (["predict", run, "--data", data], ["predict", run, "--images", image],
                    ["explain", run, "--images", image], ["export", run]):  # fmt: skip
        refused(*cli(*command), f"{run} is a tree run (`melanoma gbdt`)", "test_probs.csv")
    assert digest(run) == before


# 7. Outputs and paths.


def test_force_never_writes_over_a_runs_own_files(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["plain"], run)
    before = digest(run)
    image = tmp_path / "x.jpg"
    _photo(image)
    for args in [
        ("predict", run, "--images", image, "--out", run / "folds.csv", "--force", "--no-tta"),
        ("predict", run, "--images", image, "--out", run / "config.json", "--force", "--no-tta"),
        ("predict", run, "--images", image, "--out", run / "fold0" / "oof.csv", "--force", "--no-tta"),
        ("report", run, "--out", run / "config.json", "--force"),
        ("report", run, "--out", run / "metrics.csv", "--force"),
        ("explain", run, "--images", image, "--out", run, "--no-tta"),
        ("explain", run, "--images", image, "--out", run / "fold0", "--no-tta"),
        ("export", run, "--out", run / "fold1"),
    ]:
        refused(*cli(*args), "would write over the input data")
    assert digest(run) == before


def test_a_symlink_loop_is_one_line_naming_the_path(tiny_runs, data, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    image = tmp_path / "x.jpg"
    _photo(image)
    for args in [
        ("predict", tiny_runs["plain"], "--images", image, "--out", loop / "s.csv", "--no-tta"),
        ("predict", tiny_runs["plain"], "--images", loop, "--out", tmp_path / "s.csv", "--no-tta"),
        ("ingest", data, "--verify", "none", "--out", loop / "t.csv"),
        ("train", data, "--out", loop, "--backbone", "test_efficientnet", "--no-pretrained", "--epochs", 1),
        ("report", tiny_runs["plain"], "--out", loop / "r.html"),
    ]:
        refused(*cli(*args), str(loop))
    assert not (tmp_path / "s.csv").exists()


def test_a_run_never_writes_into_a_folder_of_someone_elses_files(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.csv").write_text("fold,epoch,auc\n0,1,0.99\n")
    before = digest(out)
    refused(*cli("train", data, "--out", out, "--backbone", "test_efficientnet", "--no-pretrained",
                 "--image-size", 32, "--epochs", 1, "--folds", 0, "--workers", 0),
            f"{out} holds files no run made (metrics.csv)")  # fmt: skip
    assert digest(out) == before


def test_a_full_disk_while_saving_weights_is_one_line(data, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import melanoma.models.checkpoint as checkpoint

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 4096)
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    run = tmp_path / "run"
    code, out = cli("train", data, "--out", run, "--backbone", "test_efficientnet", "--no-pretrained",
                    "--image-size", 32, "--batch-size", 16, "--epochs", 1, "--folds", 0, "--workers", 0)  # fmt: skip
    refused(code, out, f"{run / 'fold0'}", "No space left on device")
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.safetensors"))


# 8. Reruns lose nothing.

TINY = ["--backbone", "test_efficientnet", "--image-size", 32, "--batch-size", 16, "--epochs", 1, "--folds", 0,
        "--workers", 0]  # fmt: skip


def test_a_plain_rerun_never_retrains_a_finished_fold(data, tmp_path):
    run = tmp_path / "run"
    assert cli("train", data, "--out", run, *TINY, "--no-pretrained")[0] == 0
    before = digest(run)
    refused(*cli("train", data, "--out", run, *TINY, "--no-pretrained"),
            f"{run}: fold 0 is already trained (1 epochs); pass --resume", f"remove {run / 'fold0'}")  # fmt: skip
    assert digest(run) == before
    code, out = cli("train", data, "--out", run, *TINY, "--no-pretrained", "--resume")
    assert code == 0 and "finished earlier; kept as it is" in out
    assert {k: v for k, v in digest(run).items() if not k.endswith("log.txt")} == {
        k: v for k, v in before.items() if not k.endswith("log.txt")
    }


def test_a_start_that_fails_leaves_nothing_behind(data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    # test_efficientnet has no offline weights: the hub is asked, and it is offline
    code, out = cli("train", data, "--out", run, *TINY, "--pretrained")
    assert code == 2 and "Traceback" not in out, out
    assert not run.exists()
    assert cli("train", data, "--out", run, *TINY, "--no-pretrained")[0] == 0  # the rerun its error suggests
    # in an existing run: another fold's failed start leaves the run's files as they were
    before = digest(run)
    import melanoma.training.train as training

    def broken(*args, **kwargs):
        raise ValueError("the network could not be built")

    monkeypatch.setattr(training, "build_model", broken)
    refused(*cli("train", data, "--out", run, *TINY[:-4], "--folds", 1, "--workers", 0, "--no-pretrained"),
            "the network could not be built")  # fmt: skip
    assert digest(run) == before and not (run / "fold1").exists()


def test_folds_never_replace_a_folds_file_with_other_folds_unasked(data):
    path = data / "folds.csv"
    assert cli("folds", data, "--k", 3)[0] == 0
    before = path.read_bytes()
    assert cli("folds", data, "--k", 3)[0] == 0 and path.read_bytes() == before  # the same folds: unchanged
    refused(*cli("folds", data, "--k", 4), f"{path} exists with other folds", "--force")
    assert path.read_bytes() == before
    assert cli("folds", data, "--k", 4, "--force")[0] == 0
    assert pd.read_csv(path).fold.max() == 3
