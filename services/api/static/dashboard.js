// The dashboard: pages behind a hash router (#/, #/agents, #/agents/ID, #/board, #/escalations,
// #/spend). Each page reads the API when shown, then the live stream (server-sent events) keeps
// what is on screen current without a reload. Everything from the fleet is put in the page as
// text (textContent), never as HTML. Operators get buttons (the write routes); a viewer does not.
"use strict";

const STATUSES = ["inbox", "assigned", "in_progress", "blocked", "review", "done", "cancelled"];
const OPEN_TASK = new Set(["inbox", "assigned", "in_progress", "blocked", "review"]);
const LIST = 500; // rows a page reads at most (the API's limit)

let role = "viewer";
const agents = new Map(); // agent_id -> row of the agents table
const silent = new Map(); // escalation_id -> open heartbeat_missed escalation
const state = { page: "overview", agent: null, agentsLoaded: false, boardLoaded: false,
  escLoaded: false };

class Refused extends Error {}

async function api(path) {
  const r = await fetch("/api/v1/" + path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// An operator action: POST a JSON body; the server's one-line error is shown when refused.
async function act(path, body) {
  const r = await fetch("/api/v1/" + path, {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({ error: "HTTP " + r.status }));
  if (!r.ok) {
    say(answer.error || "HTTP " + r.status, true);
    throw new Refused(answer.error);
  }
  say("done: " + path, false);
  return answer;
}

function say(text, bad) {
  const p = document.getElementById("flash");
  p.textContent = text;
  p.className = bad ? "bad" : "ok";
  p.hidden = false;
}

const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

const link = (href, text) => { const a = el("a", text); a.href = href; return a; };

function button(text, cls, onClick) {
  const b = el("button", text, cls);
  b.type = "button";
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); } catch (exc) { if (!(exc instanceof Refused)) say(String(exc), true); }
    finally { b.disabled = false; }
  });
  return b;
}

function ago(when) {
  if (!when) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(when)) / 1000));
  if (s >= 86400) return Math.floor(s / 86400) + "d ago";
  if (s >= 3600) return Math.floor(s / 3600) + "h ago";
  if (s >= 60) return Math.floor(s / 60) + "m ago";
  return s + "s ago";
}

function emptyRow(body, text) {
  const tr = el("tr", undefined, "empty");
  tr.append(el("td", text));
  body.append(tr);
}

const usd = (x) => "$" + Number(x).toFixed(4);
const agentLink = (id) => (id ? link("#/agents/" + encodeURIComponent(id), id) : "-");
const cell = (content, cls) => {
  const td = el("td", typeof content === "string" ? content : undefined, cls);
  if (content instanceof Node) td.append(content);
  return td;
};

// ---- overview --------------------------------------------------------------------------------

function counts(id, data) {
  const dl = document.getElementById(id);
  dl.replaceChildren();
  const keys = Object.keys(data).sort();
  if (!keys.length) dl.append(el("dt", "none"), el("dd", ""));
  for (const k of keys) {
    const dd = el("dd", data[k]);
    dd.id = id + "-" + k;
    dl.append(el("dt", k), dd);
  }
}

function overview(o) {
  counts("agents-by-status", o.agents_by_status);
  counts("agents-by-state", o.agents_by_state);
  counts("escalations-by-tier", o.escalations_by_tier);
  counts("tasks-by-status", o.tasks_by_status);
  document.getElementById("done-today").textContent = o.tasks_done_today;
  document.getElementById("done-last-hour").textContent = o.tasks_done_last_hour;
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
  if (!o.budgets.length) emptyRow(body, "no budgets set");
}

// Agents the watchdog judges silent (warning) or offline (critical): their open
// heartbeat_missed escalations.
function putSilent(e) {
  if (e.reason !== "heartbeat_missed" || e.state === "resolved") silent.delete(e.escalation_id);
  else silent.set(e.escalation_id, e);
  const body = document.querySelector("#silent tbody");
  body.replaceChildren();
  for (const s of [...silent.values()].sort((a, b) => String(a.agent_id).localeCompare(b.agent_id))) {
    const tr = el("tr");
    tr.dataset.agentId = s.agent_id || "";
    tr.append(cell(agentLink(s.agent_id)),
      el("td", s.tier === "critical" ? "offline" : "silent", "t-" + s.tier),
      el("td", ago(s.tier_at || s.raised_at)), el("td", s.message));
    body.append(tr);
  }
  if (!silent.size) emptyRow(body, "none: every agent heartbeats");
}

// ---- agents ----------------------------------------------------------------------------------

function matches(a) {
  const q = document.getElementById("search").value.trim().toLowerCase();
  return !q || [a.agent_id, a.name, a.team].some((v) => String(v).toLowerCase().includes(q));
}

function putAgent(a, flash) {
  if (state.page === "agent" && state.agent === a.agent_id) showAgent(a.agent_id);
  if (!state.agentsLoaded) return;
  const body = document.querySelector("#agents tbody");
  const old = body.querySelector(`tr[data-agent-id="${CSS.escape(a.agent_id)}"]`);
  if (a.removed) { agents.delete(a.agent_id); if (old) old.remove(); return; }
  agents.set(a.agent_id, a);
  const tr = el("tr");
  tr.dataset.agentId = a.agent_id;
  tr.append(cell(agentLink(a.agent_id)), el("td", a.team), el("td", a.status, "s-" + a.status),
    el("td", a.state || "-"), el("td", a.current_task || "-"), el("td", ago(a.last_seen)),
    el("td", usd(a.cost_today), "num"));
  tr.hidden = !matches(a);
  if (flash) tr.classList.add("flash");
  if (old) old.replaceWith(tr); else body.append(tr);
}

async function loadAgents(q) {
  const a = await api("agents?limit=" + LIST + (q ? "&q=" + encodeURIComponent(q) : ""));
  state.agentsLoaded = true;
  document.querySelector("#agents tbody").replaceChildren();
  for (const row of a.items) putAgent(row, false);
  document.getElementById("agents-note").textContent = a.next_offset === null ? ""
    : `the first ${LIST} agents (the dearest today first); search narrows them`;
  if (!q) truncated = a.next_offset !== null; // more agents than one read: search asks the server
}

async function refreshAgents() {
  await loadAgents(null);
  if (document.getElementById("search").value.trim()) search();
}

let truncated = false;
let searching = null;
function search() {
  for (const tr of document.querySelectorAll("#agents tbody tr")) {
    tr.hidden = !matches(agents.get(tr.dataset.agentId));
  }
  if (!truncated) return; // every agent is here: filtering the rows is enough
  clearTimeout(searching); // too many to hold: ask the server, once typing pauses
  searching = setTimeout(() => loadAgents(document.getElementById("search").value.trim()), 300);
}

// ---- an agent's page -------------------------------------------------------------------------

let agentReading = null;
let agentTasks = new Set(); // the tasks the agent's page shows it holding: a change reads it again
function showAgent(id) { // at most one read at a time; a change meanwhile reads again after
  if (agentReading) { agentReading.again = true; return; }
  agentReading = { again: false };
  readAgent(id).finally(() => {
    const again = agentReading.again;
    agentReading = null;
    if (again && state.agent === id) showAgent(id);
  });
}

async function readAgent(id) {
  const path = "agents/" + encodeURIComponent(id);
  const [a, events] = await Promise.all([api(path), api(path + "/events?limit=50")]);
  if (state.agent !== id) return;
  document.getElementById("agent-title").textContent = a ? `${a.name} (${a.agent_id})` : `no agent ${id}`;
  const facts = document.getElementById("agent-facts");
  facts.replaceChildren();
  if (!a) return;
  const fact = (k, v, cls) => { const dd = el("dd", v ?? "-", cls); dd.dataset.fact = k; facts.append(el("dt", k), dd); };
  fact("status", a.status + (a.status_reason ? ` (${a.status_reason})` : ""), "s-" + a.status);
  if (a.paused_by) fact("paused by", a.paused_by);
  fact("doing (last heartbeat)", (a.state || "unknown") + (a.message ? `: ${a.message}` : ""));
  fact("current task", a.current_task);
  fact("holds", a.holds.length ? a.holds.join(", ") : "nothing");
  agentTasks = new Set([...a.holds, a.current_task].filter(Boolean));
  fact("last heartbeat", a.last_seen ? `${ago(a.last_seen)} (${a.last_seen})` : "never");
  fact("cost today", usd(a.cost_today));
  fact("cost this month", usd(a.cost_month));
  fact("cost in total", usd(a.cost_total));
  fact("team", a.team);
  fact("owner", a.owner);
  fact("version", a.version);
  fact("risk class", a.risk_class);
  fact("tasks done", a.tasks_done);
  const body = document.querySelector("#timeline tbody");
  body.replaceChildren();
  for (const e of events ? events.items : []) {
    const tr = el("tr");
    tr.dataset.kind = e.kind;
    tr.append(el("td", e.at.replace("T", " ").slice(0, 19), "small"), el("td", e.kind),
      el("td", e.what), el("td", e.task_id || "-"), el("td", e.detail || ""), el("td", e.by || ""));
    body.append(tr);
  }
  if (events && !events.items.length) emptyRow(body, "nothing yet");
}

async function pauseOrResume(verb) {
  const reason = document.getElementById("agent-reason").value.trim();
  await act(`agents/${encodeURIComponent(state.agent)}/${verb}`, reason ? { reason } : {});
}

// ---- the task board --------------------------------------------------------------------------

function boardColumns() {
  const board = document.getElementById("board");
  if (board.children.length) return;
  for (const s of STATUSES) {
    const col = el("div", undefined, "column");
    col.dataset.status = s;
    col.append(el("h3", s.replace("_", " ")), el("div", undefined, "cards"));
    board.append(col);
  }
}

function boardQuery() {
  const project = document.getElementById("board-project").value.trim();
  const priority = document.getElementById("board-priority").value;
  return { project, priority };
}

function onBoard(t) {
  const { project, priority } = boardQuery();
  return (!project || t.project === project) && (!priority || t.priority === priority);
}

function card(t) {
  const c = el("div", undefined, "task p-" + t.priority);
  c.dataset.taskId = t.task_id;
  c.append(el("strong", t.title), el("div", `${t.task_id} · ${t.project} · ${t.priority}`, "small"));
  c.append(el("div", t.assignee ? "" : "unassigned", "small"));
  if (t.assignee) c.lastChild.append("held by ", agentLink(t.assignee));
  if (t.depends_on.length) {
    const deps = el("div", "after: ", "small deps" + (t.waiting_on_dependencies ? " waiting" : ""));
    deps.append(t.depends_on.join(", "));
    if (t.waiting_on_dependencies) deps.append(" (waiting)");
    c.append(deps);
  }
  c.append(el("div", `${usd(t.cost_usd)} · ${t.review_rounds} reviews`, "small"));
  if (OPEN_TASK.has(t.status)) c.append(taskActions(t));
  return c;
}

function taskActions(t) {
  const box = el("div", undefined, "actions op");
  const path = "tasks/" + encodeURIComponent(t.task_id) + "/";
  const text = el("input");
  text.placeholder = t.status === "review" ? "feedback" : t.status === "inbox" ? "agent id" : "reason";
  text.maxLength = 500;
  box.append(text);
  const said = () => text.value.trim();
  if (t.status === "review") {
    box.append(
      button("approve", "approve", () => act(path + "review", { verdict: "approve", feedback: said() })),
      button("reject", "reject", () => act(path + "review", { verdict: "reject", feedback: said() })));
  }
  if (t.status === "inbox" || t.status === "assigned") {
    box.append(button("assign", "assign", () => act(path + "assign", { agent_id: said() })));
  }
  box.append(button("cancel", "cancel", () => act(path + "cancel", said() ? { reason: said() } : {})));
  return box;
}

function putTask(t, flash) {
  const old = document.querySelector(`#board .task[data-task-id="${CSS.escape(t.task_id)}"]`);
  if (!t.title || !onBoard(t)) { if (old) old.remove(); return; }
  const c = card(t);
  if (flash) c.classList.add("flash");
  const column = document.querySelector(`#board .column[data-status="${t.status}"] .cards`);
  if (old && old.parentElement === column) old.replaceWith(c);
  else { if (old) old.remove(); column.prepend(c); }
}

async function loadBoard() {
  boardColumns();
  const { project, priority } = boardQuery();
  let path = "tasks?limit=" + LIST;
  if (project) path += "&project=" + encodeURIComponent(project);
  if (priority) path += "&priority=" + priority;
  const page = await api(path);
  for (const col of document.querySelectorAll("#board .cards")) col.replaceChildren();
  const projects = new Set();
  for (const t of page.items) { projects.add(t.project); putTask(t, false); }
  for (const col of document.querySelectorAll("#board .cards")) { // open first, by priority, age
    col.append(...[...col.children].reverse());
  }
  const list = document.getElementById("projects");
  for (const p of projects) if (!list.querySelector(`option[value="${CSS.escape(p)}"]`)) {
    const o = el("option"); o.value = p; list.append(o);
  }
  document.getElementById("board-note").textContent = page.next_offset === null ? ""
    : `the first ${LIST} tasks (open first, by priority then age): filter by project or priority`;
  state.boardLoaded = true;
}

const taskReads = new Map(); // task_id -> the number of its latest read: an older answer is dropped
async function taskMoved(change) {
  if (!state.boardLoaded) return;
  const n = (taskReads.get(change.task_id) || 0) + 1;
  taskReads.set(change.task_id, n);
  if (!onBoard(change)) { putTask(change, false); return; } // filtered out: only its card goes
  const t = await api("tasks/" + encodeURIComponent(change.task_id));
  if (taskReads.get(change.task_id) !== n) return; // a later change read it again meanwhile
  if (t) putTask(t, true);
}

// ---- escalations -----------------------------------------------------------------------------

function escalationShown(e) {
  const want = document.getElementById("esc-state").value;
  return want === "all" || want === e.state || (want === "unresolved" && e.state !== "resolved");
}

function putEscalation(e, flash) {
  putSilent(e);
  if (!state.escLoaded) return;
  const body = document.querySelector("#escalations tbody");
  const old = body.querySelector(`tr[data-escalation-id="${CSS.escape(e.escalation_id)}"]`);
  if (!escalationShown(e)) { if (old) old.remove(); return; }
  const tr = el("tr");
  tr.dataset.escalationId = e.escalation_id;
  tr.append(el("td", e.tier, "t-" + e.tier), el("td", e.reason), cell(agentLink(e.agent_id)),
    el("td", e.task_id || "-"), el("td", e.message), el("td", e.state, "e-" + e.state),
    el("td", ago(e.raised_at)));
  const acts = el("td", undefined, "op");
  if (e.state !== "resolved") {
    const note = el("input");
    note.placeholder = "note";
    note.maxLength = 500;
    const path = "escalations/" + encodeURIComponent(e.escalation_id) + "/";
    const body_ = () => (note.value.trim() ? { note: note.value.trim() } : {});
    acts.append(note);
    if (e.state === "open") acts.append(button("ack", "ack", () => act(path + "ack", body_())));
    acts.append(button("resolve", "resolve", () => act(path + "resolve", body_())));
  }
  tr.append(acts);
  if (flash) tr.classList.add("flash");
  if (old) old.replaceWith(tr); else body.append(tr);
}

async function loadEscalations() {
  const want = document.getElementById("esc-state").value;
  const page = await api(`escalations?limit=${LIST}&state=${want}`);
  document.querySelector("#escalations tbody").replaceChildren();
  state.escLoaded = true;
  for (const e of page.items) putEscalation(e, false);
}

// ---- spend -----------------------------------------------------------------------------------

async function loadSpend() {
  const page = await api("spend?by=team&limit=" + LIST);
  const today = new Date();
  const days = [];
  for (let i = 29; i >= 0; i--) {
    days.push(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i))
      .toISOString().slice(0, 10));
  }
  const { chart, colours } = window.spendChart(page.items, days);
  document.getElementById("spend-chart").replaceChildren(chart);
  const legend = document.getElementById("spend-legend");
  legend.replaceChildren();
  for (const [team, colour] of colours) {
    const li = el("li");
    li.append(window.swatch(colour), " " + team);
    legend.append(li);
  }
  const body = document.querySelector("#spend tbody");
  body.replaceChildren();
  for (const r of page.items) {
    const tr = el("tr");
    tr.append(el("td", r.day), el("td", r.key ?? "(none)"), el("td", usd(r.cost_usd), "num"),
      el("td", r.tokens_in, "num"), el("td", r.tokens_out, "num"));
    body.append(tr);
  }
  if (!page.items.length) emptyRow(body, "no spend in these 30 days");
}

// ---- the router and the live stream ----------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  let page = parts[0] || "overview";
  if (page === "agents" && parts[1]) { page = "agent"; state.agent = decodeURIComponent(parts[1]); }
  else state.agent = null;
  if (!document.getElementById("page-" + page)) page = "overview";
  state.page = page;
  for (const s of document.querySelectorAll("main > .page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("here", a.dataset.page === page || (page === "agent" && a.dataset.page === "agents"));
  }
  document.getElementById("flash").hidden = true;
  if (page === "agents") fresh(refreshAgents);
  if (page === "agent") showAgent(state.agent);
  if (page === "board") fresh(loadBoard);
  if (page === "escalations") fresh(loadEscalations);
  if (page === "spend") loadSpend();
}

async function loadAll() {
  const [o, open] = await Promise.all([api("overview"), api("escalations?limit=" + LIST)]);
  overview(o);
  silent.clear();
  for (const e of open.items) putSilent(e);
  // the pages read before, and the page shown even if its first reading failed (cut off)
  if (state.agentsLoaded || state.page === "agents") await refreshAgents();
  if (state.escLoaded || state.page === "escalations") await loadEscalations();
  if (state.boardLoaded || state.page === "board") await loadBoard();
  if (state.page === "agent") showAgent(state.agent);
  if (state.page === "spend") await loadSpend();
}

// Reads of the views and the live stream: a change that arrives while something is read is
// held and applied after that reading is shown (an older one applied after a newer reading is
// corrected by the change that follows it: every change is sent).
let reading = 0;
let held = [];
async function fresh(load) {
  reading++;
  try { await load(); } finally {
    if (--reading === 0) { const h = held; held = []; for (const [f, d] of h) f(d); }
  }
}

let spendAt = 0;
// The stream says "ready" once it is subscribed (at first and after every break): only then
// are the views read, so no change falls between the reading and the stream.
// How long to wait before opening a new live stream after one was refused (ms): doubled at
// each refusal in a row, up to RETRY_MAX_MS, back to RETRY_MS once a stream says "ready".
const RETRY_MS = 2000, RETRY_MAX_MS = 30000;
let retryMs = RETRY_MS;

function follow(first) {
  const live = document.getElementById("live");
  const source = new EventSource("/api/v1/events");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => {
    live.textContent = "reconnecting"; live.className = "live off";
    if (source.readyState !== EventSource.CLOSED) return; // the browser tries again itself
    // refused (the token expired: 401; or the server, or a proxy before it, answered an
    // error): a browser does not try again. Signed out: whoami goes to the sign-in page;
    // else (whoami answered, or failed too: the server is away) a new stream in a while.
    const again = () => {
      setTimeout(() => follow(first), retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };
    api("whoami").then(again, (e) => { if (e.message !== "signed out") again(); });
  };
  const on = (name, f) => source.addEventListener(name, (m) => {
    const d = JSON.parse(m.data);
    if (reading) held.push([f, d]); else f(d);
  });
  source.addEventListener("ready", () => {
    retryMs = RETRY_MS;
    fresh(async () => {
      await loadAll();
      if (first) { first(); first = null; }
    });
  });
  on("overview", (o) => {
    overview(o);
    if (state.page === "spend" && Date.now() - spendAt > 10000) { spendAt = Date.now(); loadSpend(); }
  });
  on("agent", (a) => putAgent(a, true));
  on("escalation", (e) => {
    putEscalation(e, true);
    if (state.page === "agent" && e.agent_id === state.agent) showAgent(state.agent);
  });
  on("task", (t) => {
    taskMoved(t);
    if (state.page === "agent" && (t.assignee === state.agent || agentTasks.has(t.task_id))) {
      showAgent(state.agent); // its task, or one it was shown holding (revoked, reassigned)
    }
  });
  on("resync", () => fresh(loadAll));
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("search").addEventListener("input", search);
  document.getElementById("board-project").addEventListener("change", () => fresh(loadBoard));
  document.getElementById("board-priority").addEventListener("change", () => fresh(loadBoard));
  document.getElementById("esc-state").addEventListener("change", () => fresh(loadEscalations));
  document.getElementById("agent-pause").addEventListener("click", () => pauseOrResume("pause").catch(() => {}));
  document.getElementById("agent-resume").addEventListener("click", () => pauseOrResume("resume").catch(() => {}));
  window.addEventListener("hashchange", route);
  setInterval(() => { // keep "last seen" honest between changes
    for (const tr of document.querySelectorAll("#agents tbody tr")) {
      const a = agents.get(tr.dataset.agentId);
      if (a) tr.children[5].textContent = ago(a.last_seen);
    }
  }, 5000);
  const me = await api("whoami");
  role = me.role;
  document.body.classList.toggle("operator", role === "operator");
  document.getElementById("whoami").textContent = me.person + " (" + me.role + ")";
  follow(route);
});
