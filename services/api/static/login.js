// Sign-in: the token goes to POST /login, which sets an HttpOnly cookie. A link of the form
// /login#token=... (what `make run` prints) signs in at once: a fragment never reaches a server log.
"use strict";

async function signIn(token) {
  const r = await fetch("/login", {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
  });
  if (r.ok) { location.replace("/"); return; }
  const body = await r.json().catch(() => ({ error: "HTTP " + r.status }));
  document.getElementById("error").textContent = body.error;
}

document.addEventListener("DOMContentLoaded", () => {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) { history.replaceState(null, "", "/login"); signIn(given); }
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn(document.getElementById("token").value.trim());
  });
});
