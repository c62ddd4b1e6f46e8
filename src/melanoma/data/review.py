"""Reviewing near-duplicate candidates in the browser: `melanoma dedup DATA --review`.

A small server on 127.0.0.1 (the standard library's http.server; nothing is reachable from
another machine) shows one candidate pair at a time, large, with its similarity. `d` (or the
Duplicate button) and `x` (Distinct) decide and move to the next undecided pair; the arrow keys
move without deciding. Every decision is written to DATA/dedup/candidates.csv at once (atomically,
with `reviewed` = 1), so closing the page or stopping the server loses nothing and the next
`--review` starts at the first pair left. `melanoma dedup DATA --apply` then uses the file as
always; the static review.html stays for sharing.
"""

from __future__ import annotations

import html
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

from melanoma.data.dedup import DECISIONS, thumbnail_jpeg
from melanoma.data.ingest import ingest
from melanoma.fileio import write_csv

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Near-duplicate review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
#pair { display: flex; gap: 1.5rem; } figure { margin: 0; text-align: center; }
img { width: 360px; height: 360px; object-fit: contain; background: #eee; }
button { font-size: 1rem; padding: 0.4rem 1rem; margin-right: 0.5rem; }
.duplicate { color: #a00; } .distinct { color: #060; } #status { margin: 0.75rem 0; }
</style></head><body>
<h1>Near-duplicate review</h1>
<p>d or <b>Duplicate</b>: the same lesion photograph; x or <b>Distinct</b>: two photographs. Arrows move
without deciding. Each decision is saved to <code>__CSV__</code> at once.</p>
<div id="status"></div>
<div id="pair"><figure><img id="a" alt="image A"><figcaption id="ca"></figcaption></figure>
<figure><img id="b" alt="image B"><figcaption id="cb"></figcaption></figure></div>
<p><button id="dup">Duplicate (d)</button><button id="dis">Distinct (x)</button>
<button id="prev">&larr;</button><button id="next">&rarr;</button></p>
<script>
let pairs = [], at = 0;
const $ = (id) => document.getElementById(id);
function left() { return pairs.filter((p) => !p.reviewed).length; }
function show() {
  if (!pairs.length) { $("status").textContent = "No candidate pairs."; return; }
  const p = pairs[at];
  $("a").src = "/image/" + encodeURIComponent(p.image_a);
  $("b").src = "/image/" + encodeURIComponent(p.image_b);
  $("ca").textContent = p.image_a + " (" + p.where_a + ")";
  $("cb").textContent = p.image_b + " (" + p.where_b + ")";
  const state = p.reviewed ? p.decision : "undecided (file says " + p.decision + ")";
  $("status").innerHTML = "";
  $("status").append("Pair " + (at + 1) + " of " + pairs.length + ", similarity " + p.similarity.toFixed(4) +
    ": ", Object.assign(document.createElement("b"), {className: p.reviewed ? p.decision : "", textContent: state}),
    " | " + left() + " left to review");
}
function move(step) { at = Math.min(pairs.length - 1, Math.max(0, at + step)); show(); }
async function decide(decision) {
  const r = await fetch("/decide", {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({index: pairs[at].index, decision})});
  if (!r.ok) { $("status").textContent = "Not saved: " + (await r.text()); return; }
  Object.assign(pairs[at], {decision, reviewed: 1});
  const next = pairs.findIndex((p, i) => i > at && !p.reviewed);
  at = next >= 0 ? next : Math.max(0, pairs.findIndex((p) => !p.reviewed), at);
  show();
}
$("dup").onclick = () => decide("duplicate");
$("dis").onclick = () => decide("distinct");
$("prev").onclick = () => move(-1);
$("next").onclick = () => move(1);
document.addEventListener("keydown", (e) => {
  if (e.key === "d") decide("duplicate");
  else if (e.key === "x") decide("distinct");
  else if (e.key === "ArrowLeft") move(-1);
  else if (e.key === "ArrowRight") move(1);
});
fetch("/pairs").then((r) => r.json()).then((data) => {
  pairs = data; const first = pairs.findIndex((p) => !p.reviewed); at = first >= 0 ? first : 0; show();
});
</script></body></html>
"""


class Review:
    """The candidates of a data folder, their decisions, and the images' thumbnails."""

    def __init__(self, data: Path) -> None:
        self.path = Path(data) / "dedup" / "candidates.csv"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: not found; run `melanoma dedup {data}` first")
        self.pairs = pd.read_csv(self.path, dtype={"image_a": str, "image_b": str})
        missing = [c for c in ("image_a", "image_b", "decision", "similarity") if c not in self.pairs.columns]
        if missing:
            raise ValueError(f"{self.path}: missing column(s) {', '.join(missing)}")
        if "reviewed" not in self.pairs.columns:
            self.pairs["reviewed"] = 0
        table = ingest(data, verify="none", progress=False)
        self.images = dict(zip(table.image_name, table.image_path, strict=True))
        self.lock = threading.Lock()

    def listing(self) -> list[dict]:
        fields = ["image_a", "image_b", "where_a", "where_b", "similarity", "decision", "reviewed"]
        frame = self.pairs.reindex(columns=fields).fillna({"where_a": "", "where_b": ""})
        return [
            {"index": i, **row}
            for i, row in zip(frame.index.tolist(), frame.to_dict(orient="records"), strict=True)
        ]

    def decide(self, index: int, decision: str) -> int:
        """Record a decision and save the file; returns how many pairs are left to review."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        with self.lock:
            if index not in self.pairs.index:
                raise ValueError(f"no candidate pair {index}")
            self.pairs.loc[index, ["decision", "reviewed"]] = [decision, 1]
            write_csv(self.pairs, self.path)
            return int((self.pairs.reviewed == 0).sum())

    def thumbnail(self, name: str) -> bytes:
        if name not in self.images:
            raise KeyError(name)
        return thumbnail_jpeg(self.images[name], size=360)


def _handler(review: Review) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: the terminal shows the URL only
            return

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            from urllib.parse import unquote

            if self.path == "/":
                page = PAGE.replace("__CSV__", html.escape(str(review.path)))
                self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            elif self.path == "/pairs":
                self._send(HTTPStatus.OK, json.dumps(review.listing()).encode(), "application/json")
            elif self.path.startswith("/image/"):
                try:
                    self._send(HTTPStatus.OK, review.thumbnail(unquote(self.path[7:])), "image/jpeg")
                except (KeyError, ValueError) as err:
                    self._send(HTTPStatus.NOT_FOUND, str(err).encode(), "text/plain")
            elif self.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/decide":
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                left = review.decide(int(body["index"]), str(body["decision"]))
                self._send(HTTPStatus.OK, json.dumps({"left": left}).encode(), "application/json")
            except (ValueError, KeyError, TypeError) as err:
                self._send(HTTPStatus.BAD_REQUEST, str(err).encode(), "text/plain")

    return Handler


def server(data: Path, port: int = 8765) -> ThreadingHTTPServer:
    """The review server for DATA on 127.0.0.1:port (0: any free port); call serve_forever()."""
    return ThreadingHTTPServer(("127.0.0.1", port), _handler(Review(data)))
