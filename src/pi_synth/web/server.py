"""The web page's HTTP server (aiohttp): pages, a JSON API, and the status stream.

Every request passes three checks before its handler (:func:`make_app`'s middleware):

1. ``Host``: without a password only ``localhost`` names are served (a DNS-rebinding
   page cannot borrow the browser's way in);
2. the session: with ``[web] password_hash`` set, everything but the login page and its
   assets needs a logged-in session; without one (localhost only), a session is made
   for each browser so it still gets a CSRF token;
3. every write (POST): a same-origin ``Origin`` if the browser sent one, the session's
   ``X-CSRF-Token``, and a JSON (or, for the upload, multipart) body — a form another
   site posts fails all three.

Handlers talk to the instrument over OSC on localhost (:class:`~.oscclient.OscClient`);
nothing here imports the audio path. Model uploads stream to a temp file in the uploads
folder with the size limit enforced as the bytes arrive, are checked by a separate
process (:mod:`pi_synth.web.check`) and only then renamed into place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from pi_synth import config as config_mod
from pi_synth.errors import ConfigError, PiSynthError
from pi_synth.model.library import find_model, list_models, uploads_dir
from pi_synth.web import auth
from pi_synth.web.auth import check_binding, is_local  # noqa: F401 - served here too
from pi_synth.web.oscclient import InstrumentUnreachable, OscClient

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "pisynth_session"
STATUS_PERIOD_S = 0.25  # the status stream's pace
MAX_JSON = 256 * 1024  # the largest JSON body (a config file)
SLOW_S = 180.0  # a model load or reload on a slow Pi
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
PUBLIC = ("/login", "/api/login", "/static/")

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def _hostname(host_header: str) -> str:
    """The name part of a Host header (``[::1]:8080`` → ``[::1]``, ``pi:80`` → ``pi``)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def refuse(status: int, error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)


def model_name(filename: str) -> str:
    """A safe model file name from an uploaded one: ``NAME.onnx`` or ``NAME.int8|fp32.onnx``,
    NAME of letters, digits, ``-`` and ``_`` (anything else becomes ``-``); no folders, no
    leading dot. ValueError if nothing usable is left."""
    base = re.split(r"[\\/]", filename or "")[-1]
    if base.lower().endswith((".ts", ".pt", ".ckpt", ".pth")):
        raise ValueError(f"{base} is a PyTorch file; convert a RAVE export on a desktop with "
                         f"'pi-synth convert rave {base} -o NAME.onnx', then upload the .onnx")
    if not base.lower().endswith(".onnx"):
        raise ValueError("the file must be a model: NAME.onnx")
    stem = base[: -len(".onnx")]
    precision = ""
    for p in (".int8", ".fp32"):
        if stem.endswith(p):
            stem, precision = stem[: -len(p)], p
    stem = _NAME.sub("-", stem).strip("-_")[:64]
    if not stem:
        raise ValueError("name the file like NAME.onnx (letters, digits, - and _)")
    return stem + precision


class WebApp:
    """The state behind the handlers: config, sessions, the OSC client."""

    def __init__(self, cfg, config_path: str | None = None):
        self.cfg = cfg
        w = cfg.web
        self.config_path = config_path
        self.password_hash = w.password_hash
        if self.password_hash:
            auth.parse_hash(self.password_hash)  # ConfigError now rather than at the first login
        self.sessions = auth.Sessions(w.session_minutes)
        self.limiter = auth.LoginLimiter(w.login_per_minute)
        self.osc = OscClient(cfg.osc.port)
        self.upload_max = int(w.upload_max_mb * 1024 * 1024)
        self.check_seconds = w.check_seconds
        self.upload_lock = asyncio.Lock()

    # -- talking to the instrument -------------------------------------------------------

    async def ask(self, request: str, *args, timeout: float | None = None):
        return await self.osc.ask(request, *args, timeout=timeout)


# -- middleware ------------------------------------------------------------------------


def _security_headers(resp: web.StreamResponse, path: str) -> None:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if path.startswith("/api/"):
        resp.headers["Cache-Control"] = "no-store"


@web.middleware
async def guard(request: web.Request, handler):
    app: WebApp = request.app["web"]
    path = request.path
    host = _hostname(request.host or "")
    if not app.password_hash and not is_local(host):
        return refuse(403, "this page answers only on localhost until a password is set "
                           "(pi-synth web-password)")
    session = app.sessions.get(request.cookies.get(COOKIE))
    new_session = None
    if session is None and not app.password_hash:
        session = new_session = app.sessions.create()  # localhost, no password: still a CSRF token
    request["session"] = session
    request["new_session"] = new_session
    if session is None and not path.startswith(PUBLIC):
        if path.startswith("/api/"):
            return refuse(401, "log in first")
        raise web.HTTPFound("/login")
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return refuse(403, "cross-site request refused")
        ctype = request.content_type
        if ctype not in ("application/json", "multipart/form-data"):
            return refuse(415, "send JSON (Content-Type: application/json)")
        if path != "/api/login" and not auth.csrf_ok(session, request.headers.get("X-CSRF-Token")):
            return refuse(403, "missing or wrong CSRF token: reload the page")
    try:
        resp = await handler(request)
    except Refused as e:
        resp = refuse(e.status, e.error)
    except InstrumentUnreachable as e:
        resp = refuse(503, str(e))
    if not resp.prepared:  # the status stream sets its own before it starts
        _security_headers(resp, path)
        if new_session is not None:
            _set_cookie(resp, new_session, app)
    return resp


class Refused(Exception):
    """A request refused with one line (HTTP ``status``)."""

    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.error = status, error


def _set_cookie(resp: web.StreamResponse, session: auth.Session, app: WebApp) -> None:
    resp.set_cookie(COOKIE, session.sid, max_age=int(app.sessions.seconds), httponly=True,
                    samesite="Strict", path="/")


async def _json(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise Refused(415, "send JSON (Content-Type: application/json)")
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise Refused(413, f"the request is larger than {MAX_JSON // 1024} kB")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("the request body is not JSON") from None
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, f"the request is larger than {MAX_JSON // 1024} kB") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def _bad(error: str) -> Refused:
    return Refused(400, error)


def _reply(result) -> web.Response:
    """An instrument's reply as HTTP: 200, 400 with its one-line error, or 503 with a
    Retry-After when it was busy (a request to try again, not a wrong one)."""
    refused = isinstance(result, dict) and result.get("ok") is False
    if refused and result.get("busy"):
        return web.json_response(result, status=503, headers={"Retry-After": "2"})
    return web.json_response(result, status=400 if refused else 200)


# -- pages -----------------------------------------------------------------------------


async def index(request):
    return web.FileResponse(STATIC / "index.html")


async def login_page(request):
    app: WebApp = request.app["web"]
    if not app.password_hash:
        raise web.HTTPFound("/")
    return web.FileResponse(STATIC / "login.html")


async def login(request):
    app: WebApp = request.app["web"]
    peer = request.remote or "?"
    wait = app.limiter.wait(peer)
    if wait > 0:
        return web.json_response({"ok": False, "error": f"too many wrong passwords: wait {math.ceil(wait)} s"},
                                 status=429, headers={"Retry-After": str(math.ceil(wait))})
    body = await _json(request)
    password = body.get("password")
    if not app.password_hash:
        return _reply({"ok": True, "csrf": request["session"].csrf})
    ok = isinstance(password, str) and await asyncio.get_running_loop().run_in_executor(
        None, auth.verify_password, password, app.password_hash)
    if not ok:
        app.limiter.failed(peer)
        log.warning("web: wrong password from %s", peer)
        return refuse(401, "wrong password")
    app.limiter.succeeded(peer)
    app.sessions.drop(request.cookies.get(COOKIE))
    s = app.sessions.create()
    resp = web.json_response({"ok": True, "csrf": s.csrf})
    _set_cookie(resp, s, app)
    return resp


async def logout(request):
    app: WebApp = request.app["web"]
    app.sessions.drop(request.cookies.get(COOKIE))
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def session_info(request):
    app: WebApp = request.app["web"]
    return web.json_response({"ok": True, "csrf": request["session"].csrf, "password": bool(app.password_hash),
                              "upload_max_mb": app.cfg.web.upload_max_mb})


# -- the instrument ----------------------------------------------------------------------


async def status(request):
    return web.json_response(await request.app["web"].ask("status"))


async def events(request):
    """Server-sent events: the instrument's status every STATUS_PERIOD_S, until the
    browser leaves or its session ends."""
    app: WebApp = request.app["web"]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    _security_headers(resp, request.path)
    if request.get("new_session") is not None:
        _set_cookie(resp, request["new_session"], app)
    await resp.prepare(request)
    sid = request.cookies.get(COOKIE) or (request["session"].sid if request["session"] else None)
    try:
        while app.sessions.get(sid) is not None or not app.password_hash:
            try:
                st = await app.ask("status")
                data = f"data: {json.dumps(st)}\n\n"
            except InstrumentUnreachable as e:
                data = f"event: offline\ndata: {json.dumps({'error': str(e)})}\n\n"
            await resp.write(data.encode())
            await asyncio.sleep(STATUS_PERIOD_S)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


async def ask_get(request):
    """GET /api/{models,card,presets,mapping}: the instrument's answer as JSON."""
    return _reply(await request.app["web"].ask(request.match_info["what"]))


async def recording(request):
    """GET /api/recording.wav[?seconds=N]: the last seconds played (``[output]
    record_seconds`` kept by the instrument), as a WAV download."""
    args = []
    q = request.query.get("seconds")
    if q is not None:
        try:
            secs = float(q)
        except ValueError:
            raise _bad("seconds must be a number") from None
        if not (math.isfinite(secs) and 0 < secs <= 86400):
            raise _bad("seconds must be a number > 0 (at most a day)")
        args = [secs]
    r = await request.app["web"].ask("recording", *args, timeout=SLOW_S)
    if not isinstance(r, dict) or r.get("ok") is not True:
        return _reply(r)
    path = Path(str(r.get("path", "")))
    if path.name != "last.wav" or path.parent.name != "recordings":  # only ever that one file
        raise Refused(502, "the instrument named an unexpected file")
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as e:
        raise Refused(500, f"cannot read the recording {path} ({e.strerror})") from None
    import time

    name = time.strftime("pi-synth-%Y%m%d-%H%M%S.wav")
    return web.Response(body=data, content_type="audio/wav",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def set_control(request):
    body = await _json(request)
    name, value = body.get("name"), body.get("value")
    if not isinstance(name, str) or not name or len(name) > 64 or "/" in name or not name.isprintable():
        raise _bad("name must be one of the model's controls")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > OSC_FLOAT_MAX:
        raise _bad("value must be a finite number (within ±3.4e38, what OSC carries)")
    return _reply(await request.app["web"].ask("set", name, float(value)))


OSC_FLOAT_MAX = 3.4028234663852886e38  # OSC's 'f' is a 32-bit float


def _args(body: dict, spec: tuple) -> list:
    out = []
    for key, kind, required in spec:
        v = body.get(key)
        if v is None:
            if required:
                raise _bad(f"missing {key!r}")
            break
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, int) or not -2**31 <= v < 2**31:
                raise _bad(f"{key!r} must be an integer (32-bit, what OSC carries)")
        elif isinstance(v, bool) or not isinstance(v, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise _bad(f"{key!r} must be {names}")
        elif isinstance(v, int) and not -2**31 <= v < 2**31:
            raise _bad(f"{key!r} must be a 32-bit integer (what OSC carries)")
        elif isinstance(v, str) and not v.isprintable():  # OSC strings end at a NUL: "ok\0x" would save "ok"
            raise _bad(f"{key!r} must be printable text (no control characters)")
        out.append(v)
    return out


# POST /api/<path> → (OSC request, [(json key, type, required)], slow)
ACTIONS = {
    "models/select": ("model/select", (("name", str, True),), True),
    "presets/save": ("preset/save", (("slot", int, True), ("name", str, False)), False),
    "presets/load": ("preset/load", (("slot", int, True),), False),
    "presets/rename": ("preset/rename", (("slot", int, True), ("name", str, True)), False),
    "presets/delete": ("preset/delete", (("slot", int, True),), False),
    "mapping/set": ("mapping/set", (("source", str, True), ("route", dict, True)), False),
    "mapping/delete": ("mapping/delete", (("source", str, True),), False),
    "learn": ("learn", (("control", (str, int), False),), False),  # a name, or its number as OSC takes
    "reload": ("reload", (), True),
}


async def act(request):
    what = request.match_info["what"]
    if what not in ACTIONS:
        raise web.HTTPNotFound()
    address, spec, slow = ACTIONS[what]
    args = _args(await _json(request), spec)
    args = [json.dumps(a) if isinstance(a, dict) else a for a in args]
    return _reply(await request.app["web"].ask(address, *args, timeout=SLOW_S if slow else None))


# -- the config file ---------------------------------------------------------------------


def _config_file(app: WebApp) -> Path:
    cfg = config_mod.load(app.config_path)
    if cfg.path:
        return Path(cfg.path)
    return Path(config_mod.candidates(None)[-1][0])  # ~/.config/pi-synth/config.toml, to be made


def _writable(path: Path) -> bool:
    d = path.parent
    return (os.access(d, os.W_OK | os.X_OK) or not d.exists() and os.access(d.parent, os.W_OK)) and (
        not path.exists() or os.access(path, os.W_OK))


async def get_config(request):
    app: WebApp = request.app["web"]
    path = _config_file(app)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return web.json_response({"ok": True, "path": str(path), "text": text, "writable": _writable(path)})


async def put_config(request):
    """Check (``check: true``) or save the config text, then have the instrument reload it.
    The errors are the CLI's own lines (file:line: key …). ``[web]`` stays as provisioned."""
    app: WebApp = request.app["web"]
    body = await _json(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise _bad("'text' must be the config file's text")
    path = _config_file(app)
    try:
        new = config_mod.parse(text, str(path))
        old = config_mod.parse(path.read_text(encoding="utf-8"), str(path)) if path.is_file() \
            else config_mod.Config(None, config_mod.defaults())
    except ConfigError as e:
        return refuse(400, str(e))
    wanted = new.values["model"]["path"]
    if wanted:  # a name that finds nothing would be refused by the reload, and stop the next start
        try:
            find_model(wanted, "int8")  # which file plays is the instrument's call; here: is there one
        except PiSynthError as e:
            return refuse(400, f"{new.where('model.path') or path}: [model] path: {e}")
    if new.values["web"] != old.values["web"]:
        return refuse(400, f"{path}: the [web] section (network access, password) is set at provisioning, "
                           "not from this page; edit it over SSH (pi-synth web-password sets the password)")
    if body.get("check"):
        return web.json_response({"ok": True, "warnings": new.warnings})
    if not _writable(path):
        return refuse(403, f"{path}: this page may not write that file (the boot partition belongs to root); "
                           "edit it from a laptop or over SSH, then reload")
    from pi_synth.state import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    atomic_write(path, text.encode("utf-8"), mode)
    result = await app.ask("reload", timeout=SLOW_S)
    result["warnings"] = new.warnings
    return _reply(result)


# -- model upload --------------------------------------------------------------------------


async def upload(request):
    """POST /api/models/upload (multipart, one file field ``model``; ``?play=1`` to play it)."""
    app: WebApp = request.app["web"]
    if app.upload_lock.locked():
        return refuse(409, "another model is being checked; try again when it is done")
    async with app.upload_lock:
        return await _upload(request, app)


async def _upload(request, app: WebApp):
    reader = await request.multipart()
    field = await reader.next()
    while field is not None and field.name != "model":
        field = await reader.next()
    if field is None or not field.filename:
        return refuse(400, "no model file in the upload (a form field named 'model')")
    try:
        name = model_name(field.filename)
    except ValueError as e:
        return refuse(400, str(e))
    folder = uploads_dir()
    base = name.split(".")[0]
    for p in list_models():
        if p.name.split(".")[0] == base and p.parent != folder:
            return refuse(409, f"a model named {base!r} is already installed in {p.parent}; "
                               "rename your file to upload it beside that one")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=folder)
    except OSError as e:
        return refuse(500, f"cannot write to {folder} ({e.strerror or e})")
    limit_mb = app.cfg.web.upload_max_mb
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            while chunk := await field.read_chunk(1 << 16):
                size += len(chunk)
                if size > app.upload_max:
                    return refuse(413, f"the file is larger than {limit_mb:g} MB ([web] upload_max_mb); "
                                       "not installed")
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # data: never executable
        if size == 0:
            return refuse(400, "the file is empty; not installed")
        result = await check_model(app, tmp, f"{name}.onnx")
        if not result.get("ok"):
            return refuse(422, f"{field.filename}: {result.get('error')}; not installed, the old model plays on")
        final = folder / f"{name}.onnx"
        os.replace(tmp, final)
        tmp = None
        _fsync_dir(folder)
    except OSError as e:
        return refuse(500, f"the upload failed ({e.strerror or e}); not installed")
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    log.info("web: installed model %s (%d bytes)", final, size)
    result.update(installed=str(final), model=base, size=size)
    if request.query.get("play") in ("1", "true", "yes"):
        played = await app.ask("model/select", base, timeout=SLOW_S)
        result["played"] = played
        if not played.get("ok"):
            return refuse(422, f"installed as {final.name}, but it does not play: {played.get('error')}")
    return web.json_response(result)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_memory_mb(size: int) -> int:
    """Address space for the checking process: onnxruntime and numpy take ~1 GB of it
    before loading anything; a model needs a few times its size."""
    return 1536 + 6 * (size >> 20)


async def check_model(app: WebApp, path: str, name: str = "the file") -> dict:
    """Run :mod:`pi_synth.web.check` on ``path`` in a separate limited process; its errors
    call the file ``name`` (the uploaded file's), not the temporary path."""
    size = os.path.getsize(path)
    cpus = ",".join(str(c) for c in app.cfg.audio.cpus)
    argv = [sys.executable, "-m", "pi_synth.web.check", "--seconds", str(app.check_seconds),
            "--memory-mb", str(check_memory_mb(size)), "--avoid-cpus", cpus, "--name", name, path]
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), app.check_seconds + 10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return {"ok": False, "error": f"checking it took longer than {app.check_seconds:g} s"}
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
        if isinstance(result, dict) and "ok" in result:
            return result
    except (IndexError, json.JSONDecodeError):
        pass
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    log.warning("web: model check crashed (%s): %s", how, tail[0])
    return {"ok": False, "error": f"the check crashed ({how}): this Pi cannot load that file"}


# -- the app -------------------------------------------------------------------------------


def make_app(cfg, config_path: str | None = None) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_JSON)
    app["web"] = WebApp(cfg, config_path)
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/session", session_info)
    r.add_get("/api/status", status)
    r.add_get("/api/events", events)
    r.add_get("/api/config", get_config)
    r.add_post("/api/config", put_config)
    r.add_post("/api/models/upload", upload)
    r.add_post("/api/control", set_control)
    r.add_get("/api/recording.wav", recording)
    r.add_get(r"/api/{what:models|card|presets|mapping}", ask_get)
    r.add_post(r"/api/{what:.+}", act)
    r.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def serve(cfg, config_path: str | None = None) -> int:
    """``pi-synth web``: serve until SIGTERM/SIGINT."""
    check_binding(cfg)
    app = make_app(cfg, config_path)
    w = cfg.web
    host = "::1" if w.host == "[::1]" else w.host
    log.info("web page on http://%s:%d/ (instrument OSC on localhost:%d)%s", w.host, w.port, cfg.osc.port,
             "" if w.password_hash else ", no password: localhost only")
    try:
        web.run_app(app, host=host, port=w.port, print=None, access_log=None, handle_signals=True,
                    shutdown_timeout=2.0)
    except OSError as e:
        raise PiSynthError(f"cannot listen on {w.host}:{w.port} ({e.strerror or e}); "
                           "choose another [web] port or stop the program using it") from None
    return 0
