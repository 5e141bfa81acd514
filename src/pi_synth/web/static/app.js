"use strict";
// The pi-synth page: plain JS, no build step. Status arrives by server-sent events;
// every write is a JSON POST carrying this session's CSRF token.
const $ = (id) => document.getElementById(id);
let csrf = "";
let card = null;          // the playing model's card (from /api/card)
let dragging = null;      // the control whose slider the user holds: status does not move it
const sent = {};          // last time each control was sent (throttle)

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
  };
  const r = await fetch("/api/" + path, opts);
  if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
  const j = await r.json().catch(() => ({ok: false, error: "no answer (" + r.status + ")"}));
  if (!r.ok || j.ok === false) throw new Error(j.error || ("refused (" + r.status + ")"));
  return j;
}

function say(id, text, good) {
  const el = $(id);
  el.textContent = text;
  el.className = "result " + (good ? "good" : "bad");
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

// -- control values along the card's curve (as model/card.py's from_unit / to_unit) ------
function fromUnit(c, x) {
  x = Math.min(Math.max(x, 0), 1);
  if (c.curve === "log" && c.min > 0 && c.max > 0) return c.min * Math.pow(c.max / c.min, x);
  if (c.curve === "exp") x = x * x;
  return c.min + (c.max - c.min) * x;
}
function toUnit(c, v) {
  if (c.max === c.min) return 0;
  let x;
  if (c.curve === "log" && c.min > 0 && c.max > 0 && v > 0) x = Math.log(v / c.min) / Math.log(c.max / c.min);
  else { x = (v - c.min) / (c.max - c.min); if (c.curve === "exp") x = Math.sqrt(Math.min(Math.max(x, 0), 1)); }
  return Math.min(Math.max(x, 0), 1);
}
function fmt(v, unit) {
  const a = Math.abs(v);
  const s = a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(3);
  return unit ? s + " " + unit : s;
}

// -- status ---------------------------------------------------------------------------
function showStatus(st) {
  $("conn").textContent = "playing"; $("conn").className = "pill on";
  $("st-model").textContent = st.model || "–";
  $("st-precision").textContent = (st.precision || "") + (st.model_path ? " " + st.model_path.split("/").pop() : "");
  $("st-load").textContent = st.load !== undefined ? (st.load * 100).toFixed(0) + " %" : "–";
  $("st-load-bar").value = st.load || 0;
  $("st-xruns").textContent = st.xruns ?? "–";
  $("st-late").textContent = st.late_periods ?? "–";
  $("st-device").textContent = st.device || "–";
  $("st-input-box").hidden = !st.input;
  if (st.input) {
    $("st-input").textContent = fmt(st.input.level_db, "dB") + (st.input.clips ? ", clips " + st.input.clips : "");
    $("st-input-bar").value = st.input.level_db;
  }
  $("st-voices-box").hidden = !st.voices;
  if (st.voices) $("st-voices").textContent = st.voices.active + " of " + st.voices.max;
  $("st-error-box").hidden = !st.last_error;
  $("st-error").textContent = st.last_error || "";
  const learn = st.learn || {};
  $("learn-state").textContent = learn.armed ? "move a knob for " + learn.target : "";
  $("learn-state").className = learn.armed ? "pill warn" : "pill";
  if (card && st.model && st.model !== card.name) { loadCard(); loadModels(); loadMapping(); }
  for (const [name, v] of Object.entries(st.controls || {})) {
    if (name === dragging) continue;
    const s = document.querySelector(`input[data-control="${CSS.escape(name)}"]`);
    if (!s) continue;
    const c = card.controls.find((c) => c.name === name);
    s.value = Math.round(toUnit(c, v) * 1000);
    s.parentElement.querySelector(".val").textContent = fmt(v, c.unit);
  }
}

function startEvents() {
  const es = new EventSource("/api/events");
  es.onmessage = (ev) => showStatus(JSON.parse(ev.data));
  es.addEventListener("offline", (ev) => {
    $("conn").textContent = "instrument not answering"; $("conn").className = "pill off";
  });
  es.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").className = "pill off"; };
}

// -- controls ---------------------------------------------------------------------------
async function loadCard() {
  card = await api("card");
  $("card-name").textContent = card.name + (card.description ? " — " + card.description : "");
  const box = $("sliders");
  box.replaceChildren();
  for (const c of card.controls) {
    const s = el("input", {type: "range", min: "0", max: "1000", step: "1", "data-control": c.name,
                           "aria-label": c.name, value: String(Math.round(toUnit(c, c.value) * 1000))});
    const val = el("span", {class: "val", text: fmt(c.value, c.unit)});
    s.addEventListener("pointerdown", () => { dragging = c.name; });
    s.addEventListener("pointerup", () => { dragging = null; });
    s.addEventListener("blur", () => { dragging = null; });
    s.addEventListener("input", () => {
      const v = fromUnit(c, s.value / 1000);
      val.textContent = fmt(v, c.unit);
      const now = performance.now();
      if (now - (sent[c.name] || 0) < 30) return;  // ~30 messages a second is plenty
      sent[c.name] = now;
      api("control", {name: c.name, value: v}).catch((e) => say("upload-result", e.message, false));
    });
    s.addEventListener("change", () => api("control", {name: c.name, value: fromUnit(c, s.value / 1000)}));
    box.append(el("label", {class: "slider"}, el("span", {class: "name", text: c.name}), s, val));
  }
  const sel = $("learn-control"), tgt = $("route-target");
  sel.replaceChildren(...card.controls.map((c) => el("option", {text: c.name})));
  tgt.replaceChildren(...card.controls.map((c) => el("option", {value: "control:" + c.name, text: c.name})));
  const m = await api("mapping");
  for (const a of m.actions) tgt.append(el("option", {value: "action:" + a, text: "action: " + a}));
}

// -- models -----------------------------------------------------------------------------
async function loadModels() {
  const m = await api("models");
  $("models").replaceChildren(...m.models.map((x) => el("li", {class: x.playing ? "on" : ""},
    el("span", {class: "name", text: x.name}),
    el("span", {class: "meta", text: x.files.join(", ")}),
    x.playing ? el("span", {class: "pill on", text: "playing"})
      : el("button", {text: "Play", "data-model": x.name, onclick: () => selectModel(x.name)}))));
}
async function selectModel(name) {
  try { await api("models/select", {name}); say("upload-result", "crossfading to " + name, true); }
  catch (e) { say("upload-result", e.message, false); }
  loadModels();
}
$("upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = $("upload-file").files[0];
  if (!f) return;
  const form = new FormData();
  form.append("model", f, f.name);
  say("upload-result", "checking " + f.name + "…", true);
  $("upload-button").disabled = true;
  try {
    const r = await fetch("/api/models/upload?play=1", {method: "POST", body: form, headers: {"X-CSRF-Token": csrf}});
    const j = await r.json().catch(() => ({ok: false, error: "refused (" + r.status + ")"}));
    if (!r.ok || j.ok === false) throw new Error(j.error);
    say("upload-result", `installed ${j.model}: plays at ${(j.rtf * 100).toFixed(1)} % of a CPU here`, true);
  } catch (e) { say("upload-result", e.message, false); }
  $("upload-button").disabled = false;
  loadModels();
});

// -- presets -----------------------------------------------------------------------------
async function loadPresets() {
  const p = await api("presets");
  $("presets").replaceChildren(...p.presets.map((x) => {
    const name = el("input", {value: x.name, maxlength: "64", "aria-label": "name of preset " + x.slot});
    return el("li", {},
      el("span", {class: "slot", text: String(x.slot)}), name,
      el("span", {class: "meta", text: x.error || x.model}),
      el("button", {text: "Load", onclick: () => presetDo("presets/load", {slot: x.slot}, "loaded " + x.slot)}),
      el("button", {class: "secondary", text: "Rename", onclick: () => presetDo("presets/rename", {slot: x.slot, name: name.value}, "renamed")}),
      el("button", {class: "danger", text: "Delete", onclick: () => presetDo("presets/delete", {slot: x.slot}, "deleted " + x.slot)}));
  }));
}
async function presetDo(path, body, done) {
  try { await api(path, body); say("preset-result", done, true); } catch (e) { say("preset-result", e.message, false); }
  loadPresets();
}
$("preset-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const slot = parseInt($("preset-slot").value, 10);
  presetDo("presets/save", {slot, name: $("preset-name").value}, "saved in slot " + slot);
});

// -- mapping -----------------------------------------------------------------------------
async function loadMapping() {
  const m = await api("mapping");
  const rows = Object.entries(m.routes).sort(([a], [b]) => a.localeCompare(b, undefined, {numeric: true}));
  $("routes").tBodies[0].replaceChildren(...rows.map(([src, r]) => el("tr", {},
    el("td", {text: src + (m.learned.includes(src) ? " ★" : "")}),
    el("td", {text: r.control || ("action: " + r.action)}),
    el("td", {text: `${(r.lo ?? 0)}…${(r.hi ?? 1)}${r.invert ? " inverted" : ""}${r.curve ? " " + r.curve : ""}`}),
    el("td", {}, el("button", {class: "secondary", text: "Edit", onclick: () => editRoute(src, r)}),
      el("button", {class: "danger", text: "Delete", onclick: () => routeDo("mapping/delete", {source: src}, "removed " + src)})))));
}
function editRoute(src, r) {
  $("route-source").value = src;
  $("route-target").value = r.control ? "control:" + r.control : "action:" + r.action;
  $("route-lo").value = r.lo ?? 0; $("route-hi").value = r.hi ?? 1;
  $("route-curve").value = r.curve || ""; $("route-invert").checked = !!r.invert;
  $("route-source").focus();
}
async function routeDo(path, body, done) {
  try { await api(path, body); say("route-result", done, true); } catch (e) { say("route-result", e.message, false); }
  loadMapping();
}
$("route-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const [kind, name] = $("route-target").value.split(/:(.*)/s);
  const route = {[kind]: name, lo: parseFloat($("route-lo").value), hi: parseFloat($("route-hi").value),
                 invert: $("route-invert").checked, curve: $("route-curve").value};
  routeDo("mapping/set", {source: $("route-source").value.trim(), route}, "saved " + $("route-source").value);
});
$("learn-button").addEventListener("click", () => api("learn", {control: $("learn-control").value})
  .catch((e) => say("route-result", e.message, false)));
$("learn-cancel").addEventListener("click", () => api("learn", {control: "cancel"}).then(loadMapping));

// -- config -------------------------------------------------------------------------------
async function loadConfig() {
  const c = await api("config");
  $("config-path").textContent = c.path;
  $("config-text").value = c.text;
  $("config-save").disabled = !c.writable;
  if (!c.writable) $("config-hint").textContent = "This file is on the boot partition, which only root may write: " +
    "check your changes here, then edit it from a laptop or over SSH.";
}
async function configDo(check) {
  try {
    const r = await api("config", {text: $("config-text").value, check});
    const w = (r.warnings || []).join("; ");
    say("config-result", (check ? "looks right" : "saved and reloaded") + (w ? " — " + w : ""), true);
  } catch (e) { say("config-result", e.message, false); }
}
$("config-check").addEventListener("click", () => configDo(true));
$("config-save").addEventListener("click", () => configDo(false));

// -- tabs and start ---------------------------------------------------------------------
for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => {
    for (const o of document.querySelectorAll("#tabs button")) o.classList.toggle("on", o === b);
    for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== "tab-" + b.dataset.tab;
    if (b.dataset.tab === "presets") loadPresets();
    if (b.dataset.tab === "mapping") loadMapping();
    if (b.dataset.tab === "config") loadConfig();
    if (b.dataset.tab === "models") loadModels();
  });
}
$("logout").addEventListener("click", () => api("logout", {}).finally(() => { location.href = "/login"; }));

(async () => {
  const s = await api("session");
  csrf = s.csrf;
  $("logout").hidden = !s.password;
  await loadCard();
  startEvents();
  loadModels();
})().catch((e) => { $("conn").textContent = e.message; $("conn").className = "pill off"; });
