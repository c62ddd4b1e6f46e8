"""Reviewing near-duplicate candidates in the browser: `melanoma dedup DATA --review`.

A small server on 127.0.0.1 (the standard library's http.server; nothing is reachable from
another machine) shows one candidate pair at a time, large, with its similarity. `d` (or the
Duplicate button) and `x` (Distinct) decide and move to the next undecided pair; the arrow keys
move without deciding. Every decision is written to DATA/dedup/candidates.csv at once (atomically,
with `reviewed` = 1), so closing the page or stopping the server loses nothing and the next
`--review` starts at the first pair left. `melanoma dedup DATA --apply` then uses the file as
always; the static review.html stays for sharing.

Any web page the reviewer has open can send requests to 127.0.0.1, so the server trusts a request
only as local servers people trust do (Jupyter's rules):
- a random token per session, in the URL the command prints; opening it sets a cookie for this
  port (HttpOnly, SameSite=Strict), and every other request needs the cookie or the token in an
  X-Review-Token header;
- the Host header must be 127.0.0.1 or localhost with this port (a DNS-rebound name is refused);
- a request a browser marks as coming from another origin (Origin, Sec-Fetch-Site) is refused,
  and a POST must carry this server's own Origin unless it brings the token in the header;
- /decide takes JSON only (Content-Type application/json), at most MAX_BODY bytes, an object with
  exactly an integer `index` and a `decision` among DECISIONS;
- whatever a request holds, the server answers it with a status and one line, never a traceback.
"""

from __future__ import annotations

import html
import json
import math
import secrets
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from melanoma.data.dedup import DECISIONS, thumbnail_jpeg
from melanoma.data.folder import DataFolder
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
  const similarity = p.similarity == null ? "not recorded" : p.similarity.toFixed(4);
  $("status").append("Pair " + (at + 1) + " of " + pairs.length + ", similarity " + similarity +
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
        self.path = DataFolder(data).candidates
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: not found; run `melanoma dedup {data}` first")
        self.pairs = self._read()
        table = ingest(data, verify="none", progress=False)
        self.images = dict(zip(table.image_name, table.image_path, strict=True))
        self.lock = threading.Lock()

    def _read(self) -> pd.DataFrame:
        pairs = pd.read_csv(self.path, dtype={"image_a": str, "image_b": str})
        missing = [c for c in ("image_a", "image_b", "decision", "similarity") if c not in pairs.columns]
        if missing:
            raise ValueError(f"{self.path}: missing column(s) {', '.join(missing)}")
        if "reviewed" not in pairs.columns:
            pairs["reviewed"] = 0
        pairs["reviewed"] = pairs.reviewed.fillna(0).astype(int)
        return pairs

    def listing(self) -> list[dict]:
        """Every row of the file as it is now (an edit by hand shows on reload)."""
        with self.lock:
            self.pairs = self._read()
        fields = ["image_a", "image_b", "where_a", "where_b", "similarity", "decision", "reviewed"]
        frame = self.pairs.reindex(columns=fields).fillna({"where_a": "", "where_b": ""})
        frame = frame.astype(object).where(frame.notna(), None)  # JSON has no NaN
        return [
            {"index": i, **row}
            for i, row in zip(frame.index.tolist(), frame.to_dict(orient="records"), strict=True)
        ]

    def decide(self, index: int, decision: str) -> int:
        """Record a decision and save the file; returns how many pairs are left to review.

        The file is read again first, so an edit made by hand while the page is open is kept;
        if the pair at `index` is no longer the one the page shows, nothing is written."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        with self.lock:
            if index not in self.pairs.index:
                raise ValueError(f"no candidate pair {index}")
            shown = tuple(self.pairs.loc[index, ["image_a", "image_b"]])
            current = self._read()
            if index not in current.index or tuple(current.loc[index, ["image_a", "image_b"]]) != shown:
                raise ValueError(f"{self.path} changed since the page was loaded: reload the page")
            current.loc[index, ["decision", "reviewed"]] = [decision, 1]
            write_csv(current, self.path)
            self.pairs = current
            return int((self.pairs.reviewed == 0).sum())

    def thumbnail(self, name: str) -> bytes:
        if name not in self.images:
            raise KeyError(name)
        return thumbnail_jpeg(self.images[name], size=360)


MAX_BODY = 4096  # a decision is about 50 bytes
TOKEN_HEADER = "X-Review-Token"


class Refused(Exception):
    """A request the server will not serve: its HTTP status and the one line it answers."""

    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status


def _strict_json(text: bytes) -> object:
    """JSON with no NaN, Infinity or out-of-range numbers (1e999 is not a number here)."""

    def no_constant(name: str) -> object:
        raise ValueError(f"{name} is not allowed")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise ValueError(f"{number} is not a finite number")
        return value

    try:
        return json.loads(text, parse_constant=no_constant, parse_float=finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def parse_decision(body: object) -> tuple[int, str]:
    """(index, decision) of a /decide request body: exactly {"index": int, "decision": str}."""
    if not isinstance(body, dict) or set(body) != {"index", "decision"}:
        raise ValueError('expected a JSON object {"index": <integer>, "decision": "duplicate" or "distinct"}')
    index, decision = body["index"], body["decision"]
    if type(index) is not int:  # not a bool, not 2.7
        raise ValueError(f"index must be an integer, got {json.dumps(index)}")
    if not isinstance(decision, str) or decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {json.dumps(decision)}")
    return index, decision


class ReviewHandler(BaseHTTPRequestHandler):
    """One request to the review server: the page, its pairs and thumbnails, a decision; every
    other request refused, and logged in the server's `refused`."""

    server: ReviewServer

    def log_message(self, *args: object) -> None:  # quiet: the terminal shows the URL only
        return

    @property
    def _port(self) -> int:
        return self.server.server_address[1]

    @property
    def _cookie_name(self) -> str:
        return f"melanoma_review_{self._port}"  # cookies ignore ports: one name per server

    def _send(self, status: int, body: bytes, kind: str, cookie: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        if cookie:
            self.send_header(
                "Set-Cookie", f"{self._cookie_name}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
            )
        self.end_headers()
        self.wfile.write(body)

    def _origins(self) -> set[str]:
        return {f"http://{host}:{self._port}" for host in ("127.0.0.1", "localhost")}

    def _given_tokens(self) -> list[tuple[str, str]]:
        """The tokens the request brings, and how: header, cookie, query. (A cookie may be left
        from an earlier session on this port, so each is tried, not only the first.)"""
        found = []
        if self.headers.get(TOKEN_HEADER):
            found.append((self.headers[TOKEN_HEADER], "header"))
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except CookieError:
            jar = SimpleCookie()
        if self._cookie_name in jar:
            found.append((jar[self._cookie_name].value, "cookie"))
        found += [(t, "query") for t in parse_qs(urlsplit(self.path).query).get("token", [])[:1]]
        return found

    def _check(self, post: bool) -> str:
        """Refuse what this server must not serve; returns how the token came."""
        host = self.headers.get("Host", "")
        if host not in {f"{h}:{self._port}" for h in ("127.0.0.1", "localhost")}:
            raise Refused(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this server (127.0.0.1:{self._port})")
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self._origins():
            raise Refused(HTTPStatus.FORBIDDEN, f"requests from {origin!r} are not served")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(HTTPStatus.FORBIDDEN, f"a {site} request is not served")
        valid = [
            how
            for given, how in self._given_tokens()
            if secrets.compare_digest(given.encode(), self.server.token.encode())
        ]
        if not valid:
            raise Refused(
                HTTPStatus.FORBIDDEN, "no valid token: open the URL `melanoma dedup --review` printed"
            )
        how = valid[0]
        if post and origin is None and how != "header":
            raise Refused(
                HTTPStatus.FORBIDDEN, f"a POST needs this server's Origin or the {TOKEN_HEADER} header"
            )
        return how

    def _refuse(self, err: Refused) -> None:
        self.server.refused.append(f"{self.command} {urlsplit(self.path).path}: {err}")
        self._send(err.status, str(err).encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            path = urlsplit(self.path).path
            if path == "/favicon.ico":  # asked for by every browser; holds nothing
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
                return
            how = self._check(post=False)
            if path == "/":
                page = PAGE.replace("__CSV__", html.escape(str(self.server.review.path)))
                self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8", cookie=how == "query")
            elif how == "query":  # the token in a URL opens the page only
                raise Refused(HTTPStatus.FORBIDDEN, "the token in the URL opens the page only")
            elif path == "/pairs":
                self._send(
                    HTTPStatus.OK, json.dumps(self.server.review.listing()).encode(), "application/json"
                )
            elif path.startswith("/image/"):
                try:
                    self._send(HTTPStatus.OK, self.server.review.thumbnail(unquote(path[7:])), "image/jpeg")
                except (KeyError, ValueError, OSError) as err:
                    raise Refused(HTTPStatus.NOT_FOUND, f"no image {err}") from None
            else:
                raise Refused(HTTPStatus.NOT_FOUND, "not found")
        except Refused as err:
            self._refuse(err)

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._check(post=True)
            if urlsplit(self.path).path != "/decide":
                raise Refused(HTTPStatus.NOT_FOUND, "not found")
            kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a decision is sent as application/json")
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                raise Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length must be a number of bytes")
            if int(length) > MAX_BODY:
                raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a decision is at most {MAX_BODY} bytes")
            try:
                index, decision = parse_decision(_strict_json(self.rfile.read(int(length))))
                left = self.server.review.decide(index, decision)
            except ValueError as err:
                raise Refused(HTTPStatus.BAD_REQUEST, str(err)) from None
            self._send(HTTPStatus.OK, json.dumps({"left": left}).encode(), "application/json")
        except Refused as err:
            self._refuse(err)

    def _other(self) -> None:
        self._refuse(Refused(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and POST"))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other  # noqa: N815


class ReviewServer(ThreadingHTTPServer):
    """The review server; `url` (with its session token) is what the reviewer opens."""

    daemon_threads = True

    def __init__(self, data: Path, port: int) -> None:
        self.token = secrets.token_urlsafe(32)
        self.errors: list[str] = []  # requests that broke a handler (none expected)
        self.refused: list[str] = []  # requests refused, and why
        self.review = Review(data)
        super().__init__(("127.0.0.1", port), ReviewHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/?token={self.token}"

    def handle_error(self, request: object, client_address: object) -> None:
        """A request that broke its handler (a dropped connection, say): one line, no traceback."""
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, ConnectionError):  # the browser went away mid-answer: nothing lost
            return
        self.errors.append(f"{type(err).__name__}: {err}")
        print(f"review server: a request from {client_address} failed ({self.errors[-1]})", file=sys.stderr)


def server(data: Path, port: int = 8765) -> ReviewServer:
    """The review server for DATA on 127.0.0.1:port (0: any free port); call serve_forever()
    and open its `url`."""
    return ReviewServer(data, port)
