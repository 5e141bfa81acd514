"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("login-error");
  out.textContent = "";
  const r = await fetch("/api/login", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({password: document.getElementById("login-password").value}),
  });
  const j = await r.json().catch(() => ({error: "no answer"}));
  if (r.ok) { location.href = "/"; } else { out.textContent = j.error || ("refused (" + r.status + ")"); }
});
