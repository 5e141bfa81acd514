"""``pi_synth_room_table``: every box's ``pi-synth doctor --json`` as one table for the room.

A box that was unreachable, or failed before its doctor ran, gets a row that says so, so a
missing box is never a missing line. Used by ansible/playbook.yml's last play.
"""

from __future__ import annotations

import json

ORDER = {"fail": 0, "warn": 1}


def _report(result) -> dict | None:
    if not isinstance(result, dict) or result.get("skipped") or "stdout" not in result:
        return None
    try:
        rep = json.loads(result["stdout"])
    except (TypeError, ValueError):
        return None
    return rep if isinstance(rep, dict) and "checks" in rep else None


def _model(rep: dict) -> str:
    for c in rep.get("checks", []):
        if c.get("name") == "model":
            d = c.get("details") or {}
            if "rtf" in d:
                return f"{d.get('model', '?')} rtf {d['rtf']:.2f}"
            return "does not load"
    return "-"


def room_lines(reports: dict[str, dict | None]) -> list[str]:
    """One header, one row per box (in the inventory's order), one total."""
    rows = [("box", "doctor", "fail", "warn", "model", "first problem (pi-synth doctor on the box lists all, with fixes)")]
    ok = bad = missing = 0
    for box, rep in reports.items():
        if rep is None:
            missing += 1
            rows.append((box, "-", "", "", "", "no report: unreachable, or a step failed before doctor (see above)"))
            continue
        n = rep.get("counts", {})
        problems = sorted((c for c in rep.get("checks", []) if c.get("status") in ORDER),
                          key=lambda c: ORDER[c["status"]])
        first = f"{problems[0]['status']} {problems[0]['name']}: {problems[0]['summary']}" if problems else ""
        if rep.get("ok"):
            ok += 1
        else:
            bad += 1
        rows.append((box, "ok" if rep.get("ok") else "FAIL", str(n.get("fail", 0)), str(n.get("warn", 0)),
                     _model(rep), first))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    lines.append(f"{len(reports)} box{'es' if len(reports) != 1 else ''}: {ok} ok, {bad} with failures, "
                 f"{missing} without a report")
    return [line.rstrip() for line in lines]


def room_table(hosts, hostvars, key: str = "pi_synth_doctor_result") -> str:
    reports = {}
    for h in hosts:
        hv = hostvars[h] if h in hostvars else {}
        reports[str(h)] = _report(hv.get(key) if hasattr(hv, "get") else None)
    return "\n".join(room_lines(reports))


class FilterModule:
    def filters(self):
        return {"pi_synth_room_table": room_table}
