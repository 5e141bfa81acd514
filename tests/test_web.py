"""The web page's server over real HTTP, against a real instrument (JACK-paced, OSC on
localhost): login, sessions, CSRF and origin checks, uploads checked by the separate
process, the config editor; plus its commands (web, web-password) and auth primitives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from _webrig import WebRig, bad_models, http, multipart, organ_factory
from conftest import JackDummy
from pi_synth import config as config_mod
from pi_synth.web import auth
from pi_synth.web.cli import set_web_key
from pi_synth.web.server import model_name

PASSWORD = "correct horse battery"


# -- the primitives ------------------------------------------------------------------------


def test_password_hash_verifies_and_is_salted():
    h = auth.hash_password(PASSWORD, n=1 << 10)
    assert h.startswith("scrypt$1024$8$1$") and PASSWORD not in h
    assert auth.verify_password(PASSWORD, h)
    assert not auth.verify_password(PASSWORD + "x", h)
    assert auth.hash_password(PASSWORD, n=1 << 10) != h  # a fresh salt each time
    with pytest.raises(config_mod.ConfigError, match="at least 8 characters"):
        auth.hash_password("short")
    for bad in ("", "plain", "scrypt$3$8$1$AAAA$AAAA", "scrypt$1024$8$1$!!$AAAA"):
        with pytest.raises(config_mod.ConfigError, match="pi-synth web-password"):
            auth.parse_hash(bad)


def test_sessions_expire_and_limit_counts_failures():
    now = [1000.0]
    s = auth.Sessions(minutes=1, clock=lambda: now[0])
    a = s.create()
    assert s.get(a.sid) is a and auth.csrf_ok(a, a.csrf) and not auth.csrf_ok(a, ("y" if a.csrf[0] == "x" else "x") + a.csrf[1:])
    now[0] += 61
    assert s.get(a.sid) is None and s.get("nope") is None
    lim = auth.LoginLimiter(3, clock=lambda: now[0])
    for _ in range(3):
        assert lim.wait("10.0.0.2") == 0
        lim.failed("10.0.0.2")
    assert 59 < lim.wait("10.0.0.2") <= 60 and lim.wait("10.0.0.3") == 0
    now[0] += 60.5
    assert lim.wait("10.0.0.2") == 0


def test_upload_names_are_sanitised():
    assert model_name("flute.onnx") == "flute"
    assert model_name("My Pads!.int8.onnx") == "My-Pads.int8"
    assert model_name("../../etc/cron.d/x.onnx") == "x"
    assert model_name("C:\\Users\\a\\b c.ONNX") == "b-c"
    assert model_name(".hidden.onnx") == "hidden"
    for bad in ("x.sh", "....onnx", "", "/.onnx"):
        with pytest.raises(ValueError):
            model_name(bad)


def test_set_web_key_keeps_the_rest_of_the_file():
    text = "# my synth\n[audio]\nperiod = 128  # tight\n\n[web]\nenabled = true\npassword_hash = \"old\"\n\n[log]\nlevel = \"debug\"\n"
    out = set_web_key(text, "password_hash", "scrypt$x")
    assert out == text.replace('"old"', '"scrypt$x"')
    out = set_web_key("[audio]\nperiod = 128\n[web]\nport = 80\n", "password_hash", "h")
    assert out == "[audio]\nperiod = 128\n[web]\npassword_hash = \"h\"\nport = 80\n"
    assert set_web_key("[audio]\nperiod = 128", "password_hash", "h") == \
        "[audio]\nperiod = 128\n\n[web]\npassword_hash = \"h\"\n"
    assert config_mod.parse(set_web_key("", "password_hash", "a\"b\\c")).web.password_hash == "a\"b\\c"


def test_web_password_command_stores_a_hash_atomically(tmp_path, cli):
    conf = tmp_path / "pi-synth.toml"
    conf.write_text("# keep me\n[audio]\nperiod = 512\n")
    p = subprocess.run([sys.executable, "-m", "pi_synth", "web-password", "--config", str(conf)],
                       input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    text = conf.read_text()
    assert text.startswith("# keep me\n[audio]\nperiod = 512\n") and PASSWORD not in text
    cfg = config_mod.load(str(conf))
    assert auth.verify_password(PASSWORD, cfg.web.password_hash) and cfg.audio.period == 512
    p = subprocess.run([sys.executable, "-m", "pi_synth", "web-password", "--config", str(conf)],
                       input="short\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == "pi-synth: the web password must be at least 8 characters"
    assert conf.read_text() == text  # unchanged


def test_web_refuses_to_start_off_or_on_the_lan_without_a_password(tmp_path, cli):
    conf = tmp_path / "c.toml"
    conf.write_text("[web]\nport = 18080\n")
    p = cli("web", "--config", conf)
    assert p.returncode == 2 and p.stderr.strip() == f"pi-synth: the web page is off: set [web] enabled = true in {conf}"
    conf.write_text('[web]\nenabled = true\nhost = "0.0.0.0"\nport = 18080\n')
    p = cli("web", "--config", conf)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "needs a password: run  sudo pi-synth web-password --config" in p.stderr
    conf.write_text('[web]\nenabled = true\nhost = "0.0.0.0"\npassword_hash = "plain"\n')
    p = cli("web", "--config", conf)
    assert p.returncode == 2 and "password_hash is not a pi-synth scrypt hash" in p.stderr


def test_the_web_process_never_imports_the_audio_path(tmp_path):
    code = ("import sys\nfrom pi_synth import config\nfrom pi_synth.web.server import make_app\n"
            "make_app(config.parse('[web]\\nenabled = true\\n'))\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnxruntime', 'onnx')"
            " or m.startswith(('pi_synth.audio', 'pi_synth.app', 'pi_synth.control', 'pi_synth.patch')))\n"
            "print(bad)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


# -- against a running instrument ----------------------------------------------------------


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """One instrument + web page for the module (each start costs seconds on a busy machine)."""
    tmp = tmp_path_factory.mktemp("webrig")
    jack = JackDummy(f"pisynth-web-{time.monotonic_ns() % 10**8}")
    jack.start()
    h = auth.hash_password(PASSWORD, n=1 << 12)
    r = WebRig(tmp, organ_factory(tmp), web=f'password_hash = "{h}"\nupload_max_mb = 0.5\nlogin_per_minute = 3\n',
               env={"JACK_DEFAULT_SERVER": jack.name})
    try:
        yield r.start()
    finally:
        r.stop()
        jack.stop()


def login(rig, password=PASSWORD):
    status, body, headers = http("POST", rig.url + "/api/login", {"password": password},
                                 headers={"Origin": rig.url})
    cookie = headers.get("Set-Cookie", "").split(";")[0]
    return status, body, cookie


@pytest.fixture(scope="module")
def session(rig):
    status, body, cookie = login(rig)
    assert status == 200, body
    return cookie, body["csrf"]


def post(rig, session, path, body, **headers):
    cookie, csrf = session
    h = {"X-CSRF-Token": csrf, "Origin": rig.url}
    h.update(headers)
    return http("POST", rig.url + path, body, headers=h, cookie=cookie)


@pytest.mark.jack
def test_without_a_session_nothing_but_the_login(rig):
    assert http("GET", rig.url + "/api/status")[0] == 401
    req = urllib.request.Request(rig.url + "/")
    with urllib.request.urlopen(req, timeout=10) as r:  # redirected to the login page
        assert r.url.endswith("/login") and b"login-password" in r.read()
    status, body, cookie = login(rig, "wrong password")
    assert status == 401 and body["error"] == "wrong password" and not cookie


@pytest.mark.jack
def test_a_session_reads_and_writes_with_its_token(rig, session):
    cookie, csrf = session
    status, st, headers = http("GET", rig.url + "/api/status", cookie=cookie)
    assert status == 200 and st["model"] == "organ" and st["device"] == "ok"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"
    assert post(rig, session, "/api/control", {"name": "brightness", "value": 0.125})[0] == 200
    rig.wait_for(lambda: rig.status()["controls"]["brightness"] == pytest.approx(0.125), what="brightness")
    # a control the playing model lacks is said, not answered ok and dropped
    status, reply, _ = post(rig, session, "/api/control", {"name": "cutoff", "value": 0.5})
    assert status == 400 and "organ has no control 'cutoff'" in reply["error"] and "brightness" in reply["error"]
    # learn by the control's number, as OSC takes it (the page's API took only a name)
    status, reply, _ = post(rig, session, "/api/learn", {"control": 1})
    assert status == 200 and reply["ok"] is True, reply
    assert post(rig, session, "/api/learn", {"control": "cancel"})[0] == 200
    card = http("GET", rig.url + "/api/card", cookie=cookie)[1]
    assert [c["name"] for c in card["controls"]] == ["brightness", "attack", "release", "glide", "octave", "pitch",
                                                  "loudness"]  # the voice's controls too, after the timbre


@pytest.mark.jack
def test_writes_without_token_or_from_another_origin_are_refused(rig, session):
    cookie, csrf = session
    before = rig.status()["controls"]["brightness"]
    body = {"name": "brightness", "value": 0.875}
    cases = [
        ({"Origin": rig.url}, "application/json", 403, "CSRF"),                         # no token
        ({"Origin": rig.url, "X-CSRF-Token": "x" * 43}, "application/json", 403, "CSRF"),  # wrong token
        ({"Origin": "http://evil.example", "X-CSRF-Token": csrf}, "application/json", 403, "cross-site"),
        ({"Origin": rig.url, "X-CSRF-Token": csrf}, "text/plain", 415, "JSON"),         # a form's body
    ]
    for headers, ctype, code, word in cases:
        h = dict(headers, **{"Content-Type": ctype})
        status, reply, _ = http("POST", rig.url + "/api/control", json.dumps(body).encode(), headers=h, cookie=cookie)
        assert status == code and word in reply["error"], (headers, reply)
    # numbers OSC cannot carry: one line, 400 (they were 500s with a traceback in the log)
    for path, payload in (("/api/control", {"name": "brightness", "value": 1e308}),
                          ("/api/presets/save", {"slot": 10 ** 22})):
        status, reply, _ = post(rig, session, path, payload)
        assert status == 400 and "OSC" in reply["error"], (path, reply)
    status, reply, _ = http("GET", rig.url + "/api/recording.wav?seconds=1e39", cookie=cookie)
    assert status == 400 and "at most a day" in reply["error"], reply
    # text OSC would cut at a NUL ("ok\0HIDDEN" saved as "ok", answered 200), and mapping
    # sources no control could send (stored in learn.json): refused in one line
    status, reply, _ = post(rig, session, "/api/presets/save", {"slot": 8, "name": "ok\u0000HIDDEN"})
    assert status == 400 and "printable text" in reply["error"], reply
    for source in ("../../x", "bogus!!"):
        status, reply, _ = post(rig, session, "/api/mapping/set", {"source": source, "route": {"control": "brightness"}})
        assert status == 400 and "source must be a name such as knob1" in reply["error"], reply
    assert "Traceback" not in rig.log("web.log")
    time.sleep(0.3)
    assert rig.status()["controls"]["brightness"] == before


@pytest.mark.jack
def test_uploads_are_checked_before_they_are_installed(rig, session, tmp_path):
    organ = organ_factory(tmp_path)
    files = bad_models(organ, tmp_path)
    big = tmp_path / "big.onnx"
    big.write_bytes(organ("big").read_bytes() + b"\0" * 600_000)  # over upload_max_mb = 0.5
    expect = {"truncated": "not a valid ONNX file", "nan": "not finite", "junk": "not a valid ONNX file"}
    for kind, path in list(files.items()) + [("big", big)]:
        data, ctype = multipart(path, path.name)
        status, reply, _ = post(rig, session, "/api/models/upload?play=1", data, **{"Content-Type": ctype})
        if kind == "big":
            assert status == 413 and "larger than 0.5 MB" in reply["error"]
        else:
            assert status == 422 and expect[kind] in reply["error"], reply
            assert reply["error"].endswith("not installed, the old model plays on")
        assert not any(rig.uploads.glob("*")), list(rig.uploads.glob("*"))  # no temp left behind
    import onnx  # errors name the uploaded file, not "the file": a card-less model, a TorchScript file

    bare = onnx.load(organ("bare"))
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    for path, name, code, words in ((tmp_path / "bare.onnx", "mine.onnx", 422, "'pi-synth card mine.onnx --init'"),
                                    (tmp_path / "bare.onnx", "rave.ts", 400, "'pi-synth convert rave rave.ts -o")):
        data, ctype = multipart(path, name)
        status, reply, _ = post(rig, session, "/api/models/upload", data, **{"Content-Type": ctype})
        assert status == code and words in reply["error"] and "the file" not in reply["error"], reply
    st = rig.status()  # the old model plays on (xruns under load: benchmarks/web_poll.py measures them)
    assert st["model"] == "organ" and st["device"] == "ok"
    rig.wait_for(lambda: rig.status()["blocks"] > st["blocks"] + 50, what="blocks to keep flowing")
    # a good one, under a hostile name: installed sanitised, and it plays
    data, ctype = multipart(organ("voice2"), "../../voice two.onnx")
    status, reply, _ = post(rig, session, "/api/models/upload?play=1", data, **{"Content-Type": ctype})
    assert status == 200 and reply["model"] == "voice-two" and reply["played"]["ok"], reply
    assert [p.name for p in rig.uploads.iterdir()] == ["voice-two.onnx"]
    assert oct((rig.uploads / "voice-two.onnx").stat().st_mode & 0o777) == "0o644"
    rig.wait_for(lambda: rig.status()["model"] == "voice2", what="the uploaded model to play")
    # the name of a shipped or boot-folder model is refused rather than shadowed
    data, ctype = multipart(organ("organ2"), "organ.onnx")
    status, reply, _ = post(rig, session, "/api/models/upload", data, **{"Content-Type": ctype})
    assert status == 409 and "already installed" in reply["error"]
    assert post(rig, session, "/api/models/select", {"name": "organ"})[0] == 200
    rig.wait_for(lambda: rig.status()["model"] == "organ", what="organ back")


@pytest.mark.jack
def test_config_errors_are_the_clis_lines_and_web_is_not_editable(rig, session):
    cookie, _ = session
    c = http("GET", rig.url + "/api/config", cookie=cookie)[1]
    assert c["path"] == str(rig.config) and c["writable"]
    bad = c["text"].replace('[midi]\nports = ""', '[midi]\nports = ""\nchannel = 42')
    status, reply, _ = post(rig, session, "/api/config", {"text": bad, "check": True})
    line = bad.splitlines().index("channel = 42") + 1
    assert status == 400 and reply["error"] == f"{rig.config}:{line}: key 'midi.channel' must be in 0..16, got 42"
    missing = re.sub(r'(?m)^path = ".*"$', 'path = "nonexistent"', c["text"], count=1)  # saved: stopped the next start
    assert missing != c["text"]
    status, reply, _ = post(rig, session, "/api/config", {"text": missing, "check": True})
    assert status == 400 and "[model] path: no model named 'nonexistent'" in reply["error"], reply
    status, reply, _ = post(rig, session, "/api/config", {"text": missing})
    assert status == 400 and rig.config.read_text() == c["text"]  # not written
    opened = c["text"].replace("[web]\n", '[web]\nhost = "0.0.0.0"\n')
    status, reply, _ = post(rig, session, "/api/config", {"text": opened})
    assert status == 400 and "[web] section" in reply["error"]
    good = c["text"].replace('[midi]\nports = ""', '[midi]\nports = ""\nchannel = 5')
    status, reply, _ = post(rig, session, "/api/config", {"text": good})
    assert status == 200 and reply["ok"], reply
    assert rig.config.read_text() == good
    assert "config reloaded" in rig.log("instrument.log")


@pytest.mark.jack
def test_status_stream_pushes_without_reload(rig, session):
    cookie, _ = session
    req = urllib.request.Request(rig.url + "/api/events", headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        got = []
        while len(got) < 3:
            line = r.readline().decode()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
    assert all(g["model"] == "organ" for g in got) and got[-1]["blocks"] > got[0]["blocks"]


@pytest.mark.jack
def test_login_is_rate_limited(rig):
    codes = [login(rig, f"guess {i}")[0] for i in range(4)]
    assert codes == [401, 401, 401, 429]
    status, body, _ = login(rig)  # even the right password waits now
    assert status == 429 and body["error"].startswith("too many wrong passwords: wait")


@pytest.mark.jack
def test_download_what_just_played(rig, session, tmp_path):
    """The last seconds played, as a WAV: the samples the instrument gave its output
    (a held note set over OSC is in it), only with a session, a length asked or all kept."""
    from pi_synth.audio.backends.wav import read_wav

    cookie, _ = session
    assert http("GET", rig.url + "/api/recording.wav")[0] == 401
    for c, v in (("pitch", 220.0), ("loudness", -12.0)):
        assert post(rig, session, "/api/control", {"name": c, "value": v})[0] == 200
    time.sleep(1.0)  # a second of the note into the recording
    req = urllib.request.Request(rig.url + "/api/recording.wav?seconds=0.5", headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"] == "audio/wav"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="pi-synth-')
        (tmp_path / "last.wav").write_bytes(r.read())
    x, sr = read_wav(tmp_path / "last.wav")
    assert sr == 48000 and abs(len(x) - 0.5 * sr) <= 256
    assert np.sqrt(np.mean(x ** 2)) > 0.05  # the note, -12 dB: sound, not silence
    status, body, _ = http("GET", rig.url + "/api/recording.wav?seconds=nan", cookie=cookie)
    assert status == 400 and "seconds" in body["error"]
    req = urllib.request.Request(rig.url + "/api/recording.wav", headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=30) as r:
        y, _ = read_wav_bytes(r.read(), tmp_path)
    assert 0.5 * sr < len(y) <= 30 * sr  # all kept so far (the rig has played for seconds)


def read_wav_bytes(data: bytes, tmp_path):
    from pi_synth.audio.backends.wav import read_wav

    p = tmp_path / "all.wav"
    p.write_bytes(data)
    return read_wav(p)


def test_a_busy_instrument_is_a_503_to_try_again():
    """Slow requests past the instrument's queue (eight downloads at once) were a 400 that
    said a model load was running when none was: a client is not to retry a 400."""
    from pi_synth.web.server import _reply

    r = _reply({"ok": False, "busy": True, "error": "busy: 4 slow requests are waiting"})
    assert r.status == 503 and r.headers["Retry-After"] == "2"
    assert _reply({"ok": False, "error": "no such preset"}).status == 400 and _reply({"ok": True}).status == 200


def test_only_loopback_literals_count_as_local():
    """The DNS-rebinding guard: a Host header that merely starts with "127." is a name an
    attacker can own (127.attacker.example); only loopback IP literals and localhost pass."""
    from pi_synth.web.server import is_local

    assert all(is_local(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(is_local(h) for h in ("127.attacker.example", "127.0.0.1.nip.io", "evil.example", "10.0.0.2"))
