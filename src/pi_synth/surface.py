"""What the instrument answers over its control surface: the requests behind the web page.

The web page runs in a process of its own and sees the instrument only through OSC on
localhost (``docs/osc.md``). This module turns an :class:`~pi_synth.app.Instrument` into
the :class:`~pi_synth.control.sources.osc.Request` table the OSC source serves: the
installed models and a crossfade to one, the playing card with its controls' ranges and
values, presets, the mapping and MIDI learn, and a config reload. Every handler runs on a
control thread (OSC's receive loop, or its worker for the slow ones), never on the audio
thread; each returns a JSON-able dict, and refuses bad input by raising an error whose
one line becomes the reply's ``error``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from pi_synth.control.mapping import ACTIONS, route_from_json, route_to_json, routes_to_json
from pi_synth.control.presets import check_name, check_slot
from pi_synth.control.sources.osc import Request
from pi_synth.model.library import list_models, uploads_dir

MAX_PRESETS_LISTED = 128


def _slot(v) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return check_slot(v)


def _text(v, what: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be text, got {v!r}")
    return v


class Surface:
    """The request handlers for one instrument (see :func:`requests`)."""

    def __init__(self, inst):
        self.inst = inst

    # -- models --------------------------------------------------------------------------

    def models(self) -> dict:
        playing = Path(self.inst.model_path).name.split(".")[0]
        out: dict[str, dict] = {}
        for p in list_models():
            base = p.name.split(".")[0]
            m = out.setdefault(base, {"name": base, "files": [], "folder": str(p.parent),
                                      "playing": base == playing})
            if str(p.parent) == m["folder"]:
                m["files"].append(p.name)
        return {"ok": True, "models": list(out.values()), "playing": playing,
                "uploads": str(uploads_dir())}

    def select_model(self, name) -> dict:
        """Crossfade to an installed model, by name only (never a path a sender chooses)."""
        name = _text(name, "model name")
        names = self.inst.model_names()
        if name not in names:
            raise ValueError(f"no model named {name!r}; installed: {', '.join(names) or 'none'}")
        if not self.inst.swap(name):
            return {"ok": False, "error": self.inst.last_error}
        return {"ok": True, "model": name, "path": str(self.inst.model_path)}  # crossfading now

    # -- the playing card ----------------------------------------------------------------

    def set_control(self, name, value) -> dict:
        """``/pi-synth/control/<name>`` with a reply: what the web page's knobs send, so a
        control the playing model lacks is said to the sender instead of only counted."""
        name = _text(name, "control name")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"value must be a finite number, got {value!r}")
        router = self.inst.router
        try:
            router.set(name, float(value))
        except KeyError:
            raise ValueError(f"{self.inst.controls.card.name} has no control {name!r}; its controls are: "
                             + ", ".join(router.bank.names)) from None
        return {"ok": True, "control": name}

    def card(self) -> dict:
        card, values = self.inst.controls.card, self.inst.controls.values()
        controls = [{"name": c.name, "min": c.min, "max": c.max, "default": c.default, "unit": c.unit,
                     "curve": c.curve, "description": c.description, "value": values.get(c.name, c.default)}
                    for c in card.controls]
        return {"ok": True, "name": card.name, "kind": card.kind, "description": card.description,
                "sample_rate": card.sample_rate, "block_size": card.block_size, "channels": card.channels,
                "license": card.license, "controls": controls, "path": str(self.inst.model_path)}

    # -- presets -------------------------------------------------------------------------

    def presets(self) -> dict:
        store, out = self.inst.presets, []
        for slot in store.slots()[:MAX_PRESETS_LISTED]:
            try:
                doc = store.load(slot)
            except (ValueError, OSError) as e:  # ConfigError is a ValueError: a corrupt file
                out.append({"slot": slot, "name": "", "model": "", "error": str(e)})
                continue
            if doc is not None:
                out.append({"slot": slot, "name": doc.get("name", ""), "model": doc.get("model", "")})
        return {"ok": True, "presets": out}

    # -- the last seconds played -------------------------------------------------------

    def recording(self, seconds=None) -> dict:
        """Write the last ``seconds`` played (default: all kept) to ``recordings/last.wav``
        in the state folder, where the web page reads it for the download."""
        from pi_synth.state import atomic_write, state_dir

        rec = self.inst.player.recorder
        if rec is None:
            raise ValueError("nothing is recorded: set [output] record_seconds (e.g. 30) and restart pi-synth")
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
                    math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"seconds must be a number > 0, got {seconds!r}")
            seconds = min(float(seconds), rec.seconds)
        folder = state_dir() / "recordings"
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755)  # the web page's user reads it (the service's umask is 0077)
        path = folder / "last.wav"
        from pi_synth.audio.recorder import wav_bytes

        frames = rec.snapshot(seconds)
        atomic_write(path, wav_bytes(frames, rec.sample_rate))
        return {"ok": True, "path": str(path), "seconds": round(frames.shape[0] / rec.sample_rate, 3),
                "kept_seconds": rec.seconds, "sample_rate": rec.sample_rate, "channels": rec.channels}

    def preset_save(self, slot, name=None) -> dict:
        slot = _slot(slot)
        self.inst.save_preset(slot, None if name is None else check_name(name))
        return {"ok": True, "slot": slot}

    def preset_load(self, slot) -> dict:
        slot = _slot(slot)
        skipped, model = self.inst.recall_preset(slot)
        return {"ok": True, "slot": slot, "skipped": skipped, "model": model}

    def preset_rename(self, slot, name) -> dict:
        slot = _slot(slot)
        self.inst.presets.rename(slot, check_name(name))
        return {"ok": True, "slot": slot}

    def preset_delete(self, slot) -> dict:
        slot = _slot(slot)
        if not self.inst.presets.delete(slot):
            raise ValueError(f"preset slot {slot} is empty")
        return {"ok": True, "slot": slot}

    # -- mapping and learn ---------------------------------------------------------------

    def mapping(self) -> dict:
        learn = self.inst.learn
        return {"ok": True, "routes": routes_to_json(dict(self.inst.mapping.routes)),
                "learned": sorted(learn.bindings), "controls": list(self.inst.card.control_names),
                "actions": list(ACTIONS), "last_source": self._last_source()}

    def _last_source(self):
        last = self.inst.router.last_source
        return None if last is None else {"source": last[0], "value": last[1]}

    def mapping_set(self, source, route) -> dict:
        """Route ``source`` (JSON of a route: ``{"control": …, "lo": …}`` or ``{"action": …}``);
        kept for every model and saved, like a learned binding."""
        source = _text(source, "source").strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}", source):  # as /pi-synth/source/NAME can send it
            raise ValueError("source must be a name such as knob1, cc74 or cv1 (letters, digits, _ . -; "
                             "at most 64 characters)")
        try:
            doc = json.loads(_text(route, "route"))
        except json.JSONDecodeError as e:
            raise ValueError(f"route is not JSON ({e})") from None
        r = route_from_json(doc, f"route for {source}")
        if not math.isfinite(r.smooth_ms) or not 0 <= r.smooth_ms <= 5000:
            raise ValueError("smooth_ms must be in range 0..5000")
        if r.curve not in ("", "lin", "log", "exp"):
            raise ValueError("curve must be one of: lin, log, exp (or empty for the card's)")
        saved = self.inst.learn.bind(source, r)
        if r.control and r.smooth_ms > 0:
            self.inst.controls.set_smoothing(r.control, r.smooth_ms / 1000.0)
        return {"ok": True, "source": source, "route": route_to_json(r), "saved": saved}

    def mapping_delete(self, source) -> dict:
        source = _text(source, "source")
        learn = self.inst.learn
        if source in learn.bindings:
            learn.forget(source)
        elif self.inst.mapping.routes.pop(source, None) is None:
            raise ValueError(f"source {source!r} is not mapped")
        return {"ok": True, "source": source}

    def learn(self, arg=None) -> dict:
        target = self.inst.learn.on_action(arg)
        return {"ok": True, "armed": target is not None, "target": target}

    # -- config --------------------------------------------------------------------------

    def reload(self) -> dict:
        if not self.inst.reload(self.inst.config_path):
            return {"ok": False, "error": self.inst.last_error or "config not reloaded (see the log)"}
        return {"ok": True, "config": self.inst.cfg.path or "built-in defaults",
                "model": self.inst.controls.card.name, "restart": list(self.inst.needs_restart)}


def requests(inst) -> dict[str, Request]:
    """The OSC request table for ``inst``: address (after ``/pi-synth/``) → Request."""
    s = Surface(inst)
    return {
        "models": Request(s.models),
        "model/select": Request(s.select_model, "<name>", slow=True),
        "card": Request(s.card),
        "set": Request(s.set_control, "<control> <number>"),
        "presets": Request(s.presets),
        "preset/save": Request(s.preset_save, "<slot 0..127> [name]"),
        "preset/load": Request(s.preset_load, "<slot 0..127>"),
        "preset/rename": Request(s.preset_rename, "<slot 0..127> <name>"),
        "preset/delete": Request(s.preset_delete, "<slot 0..127>"),
        "mapping": Request(s.mapping),
        "mapping/set": Request(s.mapping_set, "<source> <route JSON>"),
        "mapping/delete": Request(s.mapping_delete, "<source>"),
        "learn": Request(s.learn, "[control | N | cancel]"),
        "reload": Request(s.reload, slow=True),
        "recording": Request(s.recording, "[seconds]", slow=True),
    }
