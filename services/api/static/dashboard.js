// The dashboard: reads the API once, then follows its live stream (server-sent events).
// Everything from the fleet is put in the page as text (textContent), never as HTML.
"use strict";

const api = (path) => fetch("/api/v1/" + path, { credentials: "same-origin" }).then((r) => {
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
});

const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

function ago(when) {
  if (!when) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(when)) / 1000));
  if (s >= 86400) return Math.floor(s / 86400) + "d ago";
  if (s >= 3600) return Math.floor(s / 3600) + "h ago";
  if (s >= 60) return Math.floor(s / 60) + "m ago";
  return s + "s ago";
}

const usd = (x) => "$" + Number(x).toFixed(4);

function counts(id, data) {
  const dl = document.getElementById(id);
  dl.replaceChildren();
  const keys = Object.keys(data).sort();
  if (!keys.length) dl.append(el("dt", "none"), el("dd", ""));
  for (const k of keys) {
    const dt = el("dt", k);
    const dd = el("dd", data[k]);
    dd.id = id + "-" + k;
    dl.append(dt, dd);
  }
}

function overview(o) {
  counts("agents-by-status", o.agents_by_status);
  counts("agents-by-state", o.agents_by_state);
  counts("escalations-by-tier", o.escalations_by_tier);
  counts("tasks-by-status", o.tasks_by_status);
  document.getElementById("spend-today").textContent = usd(o.spend_today_usd);
  document.getElementById("dead-letters").textContent = o.dead_letters;
  const body = document.querySelector("#budgets tbody");
  body.replaceChildren();
  for (const b of o.budgets) {
    const tr = el("tr");
    tr.append(el("td", b.budget_id), el("td", b.scope + " " + b.scope_id), el("td", b.budget_window),
      el("td", usd(b.spent_usd), "num"), el("td", usd(b.limit_usd), "num"),
      el("td", b.state, "b-" + b.state));
    body.append(tr);
  }
  if (!o.budgets.length) {
    const tr = el("tr");
    tr.append(el("td", "no budgets set"));
    body.append(tr);
  }
}

const agents = new Map(); // agent_id -> row data

function agentRow(a) {
  const tr = el("tr");
  tr.dataset.agentId = a.agent_id;
  tr.append(el("td", a.agent_id), el("td", a.team), el("td", a.status, "s-" + a.status),
    el("td", a.state || "-"), el("td", a.current_task || "-"), el("td", ago(a.last_seen)),
    el("td", usd(a.cost_today), "num"));
  tr.hidden = !matches(a);
  return tr;
}

function matches(a) {
  const q = document.getElementById("search").value.trim().toLowerCase();
  return !q || [a.agent_id, a.name, a.team].some((v) => String(v).toLowerCase().includes(q));
}

function putAgent(a, flash) {
  const body = document.querySelector("#agents tbody");
  const old = body.querySelector(`tr[data-agent-id="${CSS.escape(a.agent_id)}"]`);
  if (a.removed) { agents.delete(a.agent_id); if (old) old.remove(); return; }
  agents.set(a.agent_id, a);
  const tr = agentRow(a);
  if (flash) tr.classList.add("flash");
  if (old) old.replaceWith(tr); else body.append(tr);
}

function escalationRow(e) {
  const tr = el("tr");
  tr.dataset.escalationId = e.escalation_id;
  tr.append(el("td", e.tier, "t-" + e.tier), el("td", e.reason), el("td", e.agent || "-"),
    el("td", e.task || "-"), el("td", e.message), el("td", e.state));
  return tr;
}

function putEscalation(e, flash) {
  const body = document.querySelector("#escalations tbody");
  const old = body.querySelector(`tr[data-escalation-id="${CSS.escape(e.escalation_id)}"]`);
  if (e.state === "resolved") { if (old) old.remove(); return; }
  const tr = escalationRow(e);
  if (flash) tr.classList.add("flash");
  if (old) old.replaceWith(tr); else body.append(tr);
}

async function loadAll() {
  const [o, a, e] = await Promise.all([
    api("overview"), api("agents?limit=500"), api("escalations?limit=500"),
  ]);
  overview(o);
  document.querySelector("#agents tbody").replaceChildren();
  agents.clear();
  for (const row of a.items) putAgent(row, false);
  document.getElementById("agents-note").textContent =
    a.next_offset === null ? "" : "the first 500 agents (the dearest today first); search narrows them";
  document.querySelector("#escalations tbody").replaceChildren();
  for (const row of e.items) putEscalation(row, false);
}

function follow() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/v1/events");
  let opened = false;
  source.onopen = () => {
    live.textContent = "live"; live.className = "live on";
    if (opened) loadAll(); // back after a break: what was missed is read again
    opened = true;
  };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  const on = (name, f) => source.addEventListener(name, (m) => f(JSON.parse(m.data)));
  on("overview", overview);
  on("agent", (a) => putAgent(a, true));
  on("escalation", (e) => putEscalation(e, true));
  on("resync", () => loadAll());
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("search").addEventListener("input", () => {
    for (const tr of document.querySelectorAll("#agents tbody tr")) {
      tr.hidden = !matches(agents.get(tr.dataset.agentId));
    }
  });
  setInterval(() => { // keep "last seen" honest between changes
    for (const tr of document.querySelectorAll("#agents tbody tr")) {
      const a = agents.get(tr.dataset.agentId);
      if (a) tr.children[5].textContent = ago(a.last_seen);
    }
  }, 5000);
  const me = await api("whoami");
  document.getElementById("whoami").textContent = me.person + " (" + me.role + ")";
  await loadAll();
  follow();
});
