"""Who may use the web page: the password hash, sessions with expiry, CSRF tokens, and
the login rate limit. Standard library only (``hashlib.scrypt``, ``hmac``, ``secrets``).

* The password is never stored: ``[web] password_hash`` holds
  ``scrypt$N$r$p$SALT$HASH`` (base64), written by ``pi-synth web-password``.
* A login gives a session: a random 256-bit id in an ``HttpOnly; SameSite=Strict``
  cookie, held in this process's memory only (a restart logs everyone out), ending
  ``[web] session_minutes`` after the login.
* Each session has its own CSRF token, which the page sends in ``X-CSRF-Token`` on every
  write; the server also requires a JSON or multipart body and a same-origin ``Origin``.
* Failed logins are counted per client address: more than ``[web] login_per_minute`` in
  a minute and the address waits (HTTP 429), before any password is even hashed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from pi_synth.errors import ConfigError

# 16 MB of memory and ~50 ms on a PC per check (~0.5 s on a Pi Zero 2 W): slow for a guesser.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_SESSIONS = 64


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The ``scrypt$N$r$p$SALT$HASH`` string for ``password`` (a fresh random salt)."""
    check_password(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=256 * n * r)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def check_password(password: str) -> str:
    """A new password must be long enough to resist guessing over Wi-Fi."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ConfigError(f"the web password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ConfigError(f"the web password must be at most {MAX_PASSWORD} characters")
    return password


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """``(n, r, p, salt, digest)``; ConfigError if ``stored`` is not our format."""
    why = "set it with: pi-synth web-password"
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ConfigError(f"[web] password_hash is not a pi-synth scrypt hash; {why}")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ConfigError(f"[web] password_hash is damaged; {why}") from None
    if not (2 <= n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
            and len(salt) >= 8 and len(digest) >= 16):
        raise ConfigError(f"[web] password_hash has parameters out of range; {why}")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    n, r, p, salt, digest = parse_hash(stored)
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                         maxmem=256 * n * r)
    return hmac.compare_digest(got, digest)


@dataclass
class Session:
    sid: str
    csrf: str
    expires: float


class Sessions:
    """Sessions in memory: ``create``, ``get`` (None once expired), ``drop``."""

    def __init__(self, minutes: float, clock=time.monotonic):
        self.seconds = minutes * 60.0
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def create(self) -> Session:
        now = self.clock()
        for sid in [s for s, v in self._by_id.items() if v.expires <= now]:
            del self._by_id[sid]
        while len(self._by_id) >= MAX_SESSIONS:  # the oldest goes: memory stays bounded
            del self._by_id[min(self._by_id, key=lambda s: self._by_id[s].expires)]
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.seconds)
        self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        if s is None or not hmac.compare_digest(s.sid, sid):
            return None
        if s.expires <= self.clock():
            del self._by_id[sid]
            return None
        return s

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and bool(token) and hmac.compare_digest(session.csrf, token)


@dataclass
class LoginLimiter:
    """At most ``per_minute`` failed logins per address in any 60 s."""

    per_minute: int
    clock: object = time.monotonic
    _fails: dict[str, deque] = field(default_factory=dict)

    def wait(self, address: str) -> float:
        """Seconds ``address`` must wait before trying again (0: it may try now)."""
        q = self._fails.get(address)
        if not q:
            return 0.0
        now = self.clock()
        while q and q[0] <= now - 60.0:
            q.popleft()
        if len(q) < self.per_minute:
            return 0.0
        return max(0.0, q[0] + 60.0 - now)

    def failed(self, address: str) -> None:
        if len(self._fails) > 4096:  # a flood of addresses: forget the quiet ones
            self._fails = {a: q for a, q in self._fails.items() if q and q[-1] > self.clock() - 60.0}
        self._fails.setdefault(address, deque()).append(self.clock())

    def succeeded(self, address: str) -> None:
        self._fails.pop(address, None)


# -- where the page may listen (no aiohttp here: `pi-synth doctor` checks it too) -------------

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_local(host: str) -> bool:
    """A loopback host: its name, or an IP literal in 127.0.0.0/8 or ::1 — never a prefix
    match, which ``127.attacker.example`` (a DNS-rebinding page) would pass."""
    import ipaddress

    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(cfg) -> None:
    """The rules for starting at all: enabled, and LAN access only with a password."""
    w = cfg.web
    where = cfg.path or "the config"
    if not w.enabled:
        raise ConfigError(f"the web page is off: set [web] enabled = true in {where}")
    if not is_local(w.host) and not w.password_hash:
        raise ConfigError(f"[web] host = {w.host!r} opens the page to the network, which needs a password: "
                          f"run  sudo pi-synth web-password{' --config ' + cfg.path if cfg.path else ''}  first "
                          "(or use host = \"127.0.0.1\")")
    if w.password_hash:
        parse_hash(w.password_hash)
