"""``pi-synth web`` (the server, pi-synth-web.service's ExecStart) and ``pi-synth
web-password`` (stores the password's scrypt hash in the config's ``[web]`` section).

``web-password`` is what provisioning (scripts/provision.sh, the Ansible role) calls:
keep its name and behaviour stable. It reads the password from stdin (one line) when
stdin is not a terminal, else asks twice; it edits only the ``password_hash`` line of
``[web]`` (adding the line or the section if missing), checks the result with the same
parser as ``pi-synth run``, and replaces the file atomically, keeping the rest as it was.
Which file: ``--config``, else ``$PI_SYNTH_CONFIG``, else the first config file found
(``/boot/firmware/pi-synth.toml`` on a Pi), else ``/boot/firmware/pi-synth.toml`` if
``/boot/firmware`` exists, else ``~/.config/pi-synth/config.toml``.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from pathlib import Path

from pi_synth.errors import ConfigError


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_web_key(text: str, key: str, value: str) -> str:
    """``text`` with ``[web] key = "value"``: the key's line replaced (or added at the
    top of ``[web]``, or a ``[web]`` section appended); every other line kept."""
    lines = text.splitlines(keepends=True)
    line = f"{key} = {_toml_string(value)}\n"
    header = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
    start = None
    for i, raw in enumerate(lines):
        m = header.match(raw.rstrip("\r\n"))
        if m and start is None and m.group(1).strip().strip('"') == "web":
            start = i
        elif raw.lstrip().startswith("[") and start is not None:
            break
        elif start is not None and re.match(rf"^\s*{re.escape(key)}\s*=", raw):
            lines[i] = line
            return "".join(lines)
    if start is not None:
        lines.insert(start + 1, line)
        return "".join(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines) + ("\n" if lines else "") + "[web]\n" + line


def password_config_path(explicit: str | None) -> Path:
    from pi_synth import config as config_mod

    if explicit:
        return Path(explicit)
    if os.environ.get("PI_SYNTH_CONFIG"):
        return Path(os.environ["PI_SYNTH_CONFIG"])
    for path, _ in config_mod.candidates(None):
        if Path(path).is_file():
            return Path(path)
    if Path(config_mod.BOOT_CONFIG).parent.is_dir():
        return Path(config_mod.BOOT_CONFIG)
    return Path(config_mod.candidates(None)[-1][0])


def read_password() -> str:
    if sys.stdin.isatty():
        a = getpass.getpass("web page password: ")
        b = getpass.getpass("again: ")
        if a != b:
            raise ConfigError("the two passwords differ; nothing changed")
        return a
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def cmd_web_password(args) -> int:
    from pi_synth import config as config_mod
    from pi_synth.state import atomic_write
    from pi_synth.web.auth import hash_password

    path = password_config_path(args.config)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    stored = hash_password(read_password())  # ConfigError if too short
    new = set_web_key(text, "password_hash", stored)
    cfg = config_mod.parse(new, str(path))  # the file must still be one pi-synth reads
    if cfg.web.password_hash != stored:
        raise ConfigError(f"{path}: could not set [web] password_hash; edit the file by hand")
    if path.parent != Path("") and not path.parent.is_dir():
        path.parent.mkdir(parents=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        atomic_write(path, new.encode("utf-8"), mode)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e}); run with sudo") from None
    print(f"web password set in {path} (scrypt hash); restart the page: sudo systemctl restart pi-synth-web")
    return 0


def cmd_web(args) -> int:
    from pi_synth import config as config_mod

    try:
        from pi_synth.web.server import serve
    except ImportError as e:
        raise ConfigError(f"the web page needs the 'web' extra ({e}); pip install 'pi-synth[web]'") from None
    cfg = config_mod.load(args.config)
    for w in cfg.warnings:
        print(f"pi-synth: warning: {w}", file=sys.stderr)
    return serve(cfg, args.config)


def add_parser(sub) -> None:
    w = sub.add_parser("web", help="the web page (its own process): status, models, knobs, presets, upload")
    w.add_argument("--config", help="config file (TOML)")
    w.set_defaults(func=cmd_web)
    p = sub.add_parser("web-password", help="set the web page's password (stored as a scrypt hash in [web])")
    p.add_argument("--config", help="config file to write (default: the one pi-synth reads)")
    p.set_defaults(func=cmd_web_password)
