"""`melanoma dedup DATA --review` driven in headless Chromium (Playwright with the system
Chromium) by real key presses and clicks."""

import shutil
import threading

import pandas as pd
import pytest

from melanoma.data.review import server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def data(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    names = sorted(p.stem for p in (data / "isic2020" / "jpeg" / "train").glob("*.jpg"))[:6]
    (data / "dedup").mkdir(exist_ok=True)
    pd.DataFrame({"group": [0, 1, 2], "image_a": names[0::2], "image_b": names[1::2],
                  "where_a": "isic2020:train", "where_b": "isic2020:train", "similarity": [0.91, 0.74, 0.58],
                  "decision": "duplicate"}).to_csv(data / "dedup" / "candidates.csv", index=False)  # fmt: skip
    return data


def _serve(data):
    httpd = server(data, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.url


def test_review_in_a_browser_saves_as_it_goes_and_resumes(data):
    from playwright.sync_api import sync_playwright

    from melanoma.data.dedup import apply

    assert CHROMIUM, "Chromium is missing: `make test` installs the Debian package chromium"
    csv = data / "dedup" / "candidates.csv"
    httpd, url = _serve(data)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("document.getElementById('status').textContent.includes('Pair 1 of 3')")
        assert "3 left to review" in page.text_content("#status")
        assert page.eval_on_selector("#a", "img => img.complete && img.naturalWidth") > 0  # thumbnails served
        page.keyboard.press("d")  # pair 1: duplicate, then on to pair 2
        page.wait_for_function("document.getElementById('status').textContent.includes('Pair 2 of 3')")
        saved = pd.read_csv(csv)
        assert (saved.decision[0], saved.reviewed[0]) == ("duplicate", 1) and saved.reviewed[1:].eq(0).all()
        page.click("#dis")  # pair 2: distinct, by the button
        page.wait_for_function("document.getElementById('status').textContent.includes('Pair 3 of 3')")
        assert "1 left to review" in page.text_content("#status")
        page.keyboard.press("ArrowLeft")  # back to pair 2: moving does not decide
        page.wait_for_function("document.getElementById('status').textContent.includes('Pair 2 of 3')")
        assert "distinct" in page.text_content("#status")
        saved = pd.read_csv(csv)
        assert list(saved.decision) == ["duplicate", "distinct", "duplicate"] and list(saved.reviewed) == [
            1,
            1,
            0,
        ]
        # the page has fetched the thumbnails it asked for: a server stopped with a request still
        # queued resets it, which the browser reports as an error (a race, not a bug of the page)
        page.wait_for_function("['a', 'b'].every((id) => document.getElementById(id).complete)")
        httpd.shutdown()
        httpd.server_close()
        # A new session starts at the first pair left, with the count of what is left.
        httpd, url = _serve(data)
        page.goto(url)
        page.wait_for_function("document.getElementById('status').textContent.includes('Pair 3 of 3')")
        assert "1 left to review" in page.text_content("#status")
        page.keyboard.press("x")
        page.wait_for_function("document.getElementById('status').textContent.includes('0 left to review')")
        page.wait_for_function("['a', 'b'].every((id) => document.getElementById(id).complete)")
        browser.close()
    httpd.shutdown()
    httpd.server_close()
    assert errors == []
    assert list(pd.read_csv(csv).decision) == ["duplicate", "distinct", "distinct"]
    groups = apply(data)  # --apply reads the reviewed file as always
    assert groups.group.nunique() == 1 and len(groups) == 2


def test_a_browser_going_away_prints_no_traceback(data, capfd):
    """A tab closed mid-answer breaks the pipe: nothing to say. Any other failure of a handler is
    one line on stderr, never a traceback, and is kept in `errors`."""
    import socket

    httpd = server(data, 0)
    try:
        for gone in (
            BrokenPipeError(32, "Broken pipe"),
            ConnectionResetError(104, "Connection reset by peer"),
        ):
            try:
                raise gone
            except ConnectionError:
                httpd.handle_error(None, ("127.0.0.1", 50000))
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            httpd.handle_error(None, ("127.0.0.1", 50001))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        host, port = httpd.server_address[:2]
        for _ in range(5):  # real clients that hang up at once, with a reset (SO_LINGER 0)
            client = socket.create_connection((host, port))
            client.sendall(f"GET /?token={httpd.token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and httpd.errors == ["RuntimeError: boom"]
    assert err.strip().splitlines() == [
        "review server: a request from ('127.0.0.1', 50001) failed (RuntimeError: boom)"
    ]
