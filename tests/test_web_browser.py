"""The web page in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver (both from apt, installed by scripts/install.sh --dev; nothing is
downloaded), against ``pi-synth web`` talking OSC to a JACK-paced instrument.

``PI_SYNTH_SCREENSHOTS=docs/img`` writes the documentation's screenshots there.
"""

from __future__ import annotations

import http.server
import os
import socket
import shutil
import threading
import time
from pathlib import Path

import pytest

from _webrig import WebRig, bad_models, organ_factory
from conftest import JackDummy
from pi_synth.web import auth
from pi_synth.web.oscclient import ask, message

PASSWORD = "workshop wifi 2024"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic", "--hide-scrollbars", "--force-device-scale-factor=1")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    jack = JackDummy(f"pisynth-br-{time.monotonic_ns() % 10**8}")
    jack.start()
    h = auth.hash_password(PASSWORD, n=1 << 12)
    r = WebRig(tmp, organ_factory(tmp), web=f'password_hash = "{h}"\nupload_max_mb = 1.0\n',
               env={"JACK_DEFAULT_SERVER": jack.name})
    try:
        yield r.start()
    finally:
        r.stop()
        jack.stop()


@pytest.fixture(scope="module")
def browser():
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(exe):
            pytest.fail(f"{exe} is missing: apt-get install chromium chromium-driver (scripts/install.sh --dev)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    o.binary_location = CHROMIUM
    for f in FLAGS:
        o.add_argument(f)
    o.add_argument("--window-size=1100,900")
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    d.implicitly_wait(0)
    yield d
    d.quit()


def wait(cond, timeout=15.0, what="the page"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the element is not there yet
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} ({last})")


def css(d, sel):
    return d.find_element("css selector", sel)


def log_in(d, rig, password=PASSWORD):
    d.get(rig.url + "/")
    wait(lambda: d.current_url.endswith("/login"), what="the login page")
    box = css(d, "#login-password")
    box.clear()
    box.send_keys(password)
    css(d, "#login-button").click()


def logged_in(d, rig):
    """On the main page with a session (whatever page an earlier test left open)."""
    if not d.current_url.startswith(rig.url) or d.current_url.endswith("/login") or \
            not d.get_cookie("pisynth_session"):
        log_in(d, rig)
    elif d.current_url.rstrip("/") != rig.url:
        d.get(rig.url + "/")
    wait(lambda: css(d, "#st-model").text == rig.status()["model"], what="the main page's status")


def tab(d, name):
    css(d, f"#tabs button[data-tab={name}]").click()


@pytest.mark.jack
def test_wrong_password_gives_no_access(rig, browser):
    d = browser
    d.delete_all_cookies()
    log_in(d, rig, "not the password")
    wait(lambda: css(d, "#login-error").text == "wrong password", what="the refusal")
    assert d.current_url.endswith("/login") and d.get_cookie("pisynth_session") is None
    got = d.execute_async_script(
        "const done = arguments[0]; fetch('/api/status').then(r => done(r.status));")
    assert got == 401
    d.get(rig.url + "/")
    assert d.current_url.endswith("/login")


@pytest.mark.jack
def test_a_slider_moves_the_model_control_and_a_knob_moves_the_slider(rig, browser):
    d = browser
    logged_in(d, rig)
    tab(d, "play")
    slider = wait(lambda: css(d, 'input[data-control="brightness"]'), what="the brightness slider")
    from selenium.webdriver.common.keys import Keys

    slider.send_keys(Keys.END)  # all the way up: brightness's max, 1.0
    rig.wait_for(lambda: rig.status()["controls"]["brightness"] == pytest.approx(1.0), what="brightness 1.0")
    slider.send_keys(Keys.HOME)
    rig.wait_for(lambda: rig.status()["controls"]["brightness"] == pytest.approx(0.0), what="brightness 0.0")
    css(d, "#tabs button[data-tab=play]").click()  # focus away: the stream may move it now
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a knob (or any source) moves the control
        s.sendto(message("/pi-synth/control/brightness", 0.25), ("127.0.0.1", rig.osc_port))
    wait(lambda: css(d, 'input[data-control="brightness"]').get_attribute("value") == "250",
         what="the slider to follow the control")
    assert css(d, "#st-xruns").text.isdigit() and css(d, "#st-model").text == "organ"


@pytest.mark.jack
def test_uploads_good_plays_bad_refused_with_the_reason(rig, browser, tmp_path):
    d = browser
    logged_in(d, rig)
    tab(d, "models")
    organ = organ_factory(tmp_path)
    big = tmp_path / "huge.onnx"
    big.write_bytes(organ("huge").read_bytes() + b"\0" * 1_200_000)
    reasons = {"truncated": "not a valid ONNX file", "nan": "not finite", "junk": "not a valid ONNX file",
               "huge": "larger than 1 MB"}
    files = dict(bad_models(organ, tmp_path), huge=big)
    for kind, path in files.items():
        css(d, "#upload-file").send_keys(str(path))
        css(d, "#upload-button").click()
        wait(lambda: reasons[kind] in css(d, "#upload-result").text, timeout=60, what=f"the {kind} refusal")
        assert "bad" in css(d, "#upload-result").get_attribute("class")
        assert rig.status()["model"] == "organ"  # the old model keeps playing
    good = organ("bell")
    css(d, "#upload-file").send_keys(str(good))
    css(d, "#upload-button").click()
    wait(lambda: "installed bell" in css(d, "#upload-result").text, timeout=60, what="the install")
    rig.wait_for(lambda: rig.status()["model"] == "bell", what="the uploaded model to play")
    wait(lambda: css(d, "#st-model").text == "bell", what="the status to show it")
    wait(lambda: css(d, '#models li.on .name').text == "bell", what="the list to mark it")
    css(d, '#models button[data-model="organ"]').click()  # and back, by the list's button
    rig.wait_for(lambda: rig.status()["model"] == "organ", what="organ again")


class _Attacker(http.server.BaseHTTPRequestHandler):
    target = ""
    timeout = 5  # Chromium preconnects sockets it never uses: do not wait on them for ever

    def do_GET(self):
        page = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{self.target}/api/control" enctype="text/plain">
<input name='{{"name": "brightness", "value": 0.5, "x": "' value='"}}'></form>
<script>document.getElementById("f").submit();</script></body></html>"""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *a):
        pass


@pytest.mark.jack
def test_a_cross_site_post_is_refused(rig, browser):
    d = browser
    logged_in(d, rig)
    ask(rig.osc_port, "card", timeout=10)  # the instrument answers before we set a known value
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(message("/pi-synth/control/brightness", 0.25), ("127.0.0.1", rig.osc_port))
    rig.wait_for(lambda: rig.status()["controls"]["brightness"] == pytest.approx(0.25), what="brightness 0.25")
    brightness = 0.25  # what the attacker's 0.5 would change
    _Attacker.target = rig.url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        # same site, another origin (another port): the browser sends our session cookie
        # along, and the origin check refuses; cross-site (localhost): no cookie at all
        for host, refusal in (("127.0.0.1", "cross-site request refused"), ("localhost", "log in first")):
            d.get(f"http://{host}:{server.server_address[1]}/")
            wait(lambda: d.current_url.startswith(rig.url), what="the form to post")
            body = wait(lambda: d.find_element("tag name", "body").text, what="the answer")
            assert refusal in body, body
        # and a script on that origin gets its JSON POST refused too: blocked by the browser
        # (the preflight is refused, no CORS), or — where the browser sends it — refused by the
        # origin check; either way nothing changes (checked below)
        d.get(f"http://localhost:{server.server_address[1]}/")
        got = d.execute_async_script(
            "const done = arguments[0];"
            f"fetch('{rig.url}/api/control', {{method: 'POST', credentials: 'include',"
            " headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'brightness', value: 0.5})})"
            ".then(r => done('status ' + r.status), e => done('blocked'));")
        assert got in ("blocked", "status 403"), got
    finally:
        server.shutdown()
        server.server_close()
    time.sleep(0.3)
    assert rig.status()["controls"]["brightness"] == pytest.approx(brightness)


@pytest.mark.jack
@pytest.mark.slow
def test_screenshots_of_the_main_pages(rig, browser, tmp_path):
    """Desktop and phone sizes of each page; docs/web.md shows them."""
    d = browser
    out = Path(os.environ.get("PI_SYNTH_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    logged_in(d, rig)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # on the screen: a preset, a learned CC
        ask(rig.osc_port, "preset/save", 1, "warm organ", timeout=10)
        ask(rig.osc_port, "preset/save", 2, "bright lead", timeout=10)
        ask(rig.osc_port, "mapping/set", "cc74", '{"control": "brightness", "lo": 0.1, "hi": 0.9}', timeout=10)
        s.sendto(message("/pi-synth/note", 57, 90), ("127.0.0.1", rig.osc_port))
    shots = []
    for size, (w, h) in (("desktop", (1100, 900)), ("phone", (390, 844))):
        d.set_window_size(w, h)
        for page in ("play", "models", "presets", "mapping", "config"):
            tab(d, page)
            time.sleep(0.8)
            path = out / f"web-{page}-{size}.png"
            d.save_screenshot(str(path))
            shots.append(path)
    d.delete_all_cookies()
    d.set_window_size(390, 844)
    d.get(rig.url + "/login")
    wait(lambda: css(d, "#login-password"))
    d.save_screenshot(str(out / "web-login-phone.png"))
    d.set_window_size(1100, 900)
    for p in shots:
        assert p.stat().st_size > 8000, p  # a rendered page, not a blank one
