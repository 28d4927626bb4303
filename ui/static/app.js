// wgmesh ui: renders the members from /api/members, follows the node's
// view from /api/status, and sends changes with the CSRF token. Text only
// ever goes into the page as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const SPARK_POINTS = 20;
let csrf = { token: "", header: "X-CSRF-Token" };
const history = new Map(); // member name -> {last: {rx, tx, t}, rates: []}

function $(sel) { return document.querySelector(sel); }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function say(text, bad) {
  const m = $("#message");
  m.textContent = text;
  m.classList.toggle("bad", !!bad);
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== "GET") opts.headers[csrf.header] = csrf.token;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = {};
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error(data.error || r.status + " " + r.statusText);
  return data;
}

function list(s) {
  return s.split(",").map(x => x.trim()).filter(x => x !== "");
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

function pathClass(path) {
  if (path === "direct") return "path-direct";
  if (path.startsWith("relayed")) return "path-relayed";
  if (path === "idle") return "path-idle";
  return "path-none";
}

function row(m) {
  const tr = el("tr");
  tr.dataset.name = m.name;
  tr.append(
    el("td", "name", m.name),
    el("td", "addresses", m.addresses.join(", ")),
    el("td", "endpoint", m.endpoint || "—"),
    el("td", "groups", m.groups.join(", ")),
    el("td", "subnets", m.subnets.join(", ")),
    el("td", "flags", [m.registry ? "registry" : "", m.relay ? "relay" : ""].join(" ").trim()),
    el("td", "path", "—"), el("td", "handshake", "—"), el("td", "rx", "—"), el("td", "tx", "—"),
    el("td", "spark"), el("td", "actions"));
  actions(tr, m);
  return tr;
}

function actions(tr, m) {
  const td = tr.querySelector("td.actions");
  td.replaceChildren();
  const edit = el("button", "edit", "edit");
  edit.type = "button";
  edit.addEventListener("click", () => startEdit(m));
  const rm = el("button", "remove danger", "remove");
  rm.type = "button";
  let armed = null;
  rm.addEventListener("click", async () => {
    if (!armed) {
      // A second click within 5 s confirms: no native dialog needed.
      rm.textContent = "really remove " + m.name + "?";
      armed = setTimeout(() => { rm.textContent = "remove"; armed = null; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    try {
      const r = await api("DELETE", "/api/members/" + encodeURIComponent(m.name));
      say("removed " + m.name + "; serial " + r.serial);
      await loadMembers();
    } catch (e) { say(e.message, true); rm.textContent = "remove"; }
  });
  td.append(edit, " ", rm);
}

let members = [];

async function loadMembers() {
  const r = await api("GET", "/api/members");
  members = r.members;
  $("#serial") && ($("#serial").textContent = r.serial);
  $("#members tbody").replaceChildren(...members.map(row));
  if (lastStatus) showStatus(lastStatus);
}

let editing = null;

function startEdit(m) {
  editing = m.name;
  const f = $("#edit-form");
  $("#edit-name").textContent = m.name;
  f.endpoint.value = m.endpoint || "";
  f.subnets.value = m.subnets.join(", ");
  f.groups.value = m.groups.join(", ");
  $("#edit").hidden = false;
  f.endpoint.focus();
}

function spark(name, p, now) {
  let h = history.get(name);
  if (!h) { h = { last: null, rates: [] }; history.set(name, h); }
  if (h.last && now > h.last.t) {
    const d = (p.rx_bytes - h.last.rx + p.tx_bytes - h.last.tx) / ((now - h.last.t) / 1000);
    h.rates.push(Math.max(0, d));
    if (h.rates.length > SPARK_POINTS) h.rates.shift();
  }
  h.last = { rx: p.rx_bytes, tx: p.tx_bytes, t: now };
  const w = 120, ht = 22;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", ht);
  svg.setAttribute("viewBox", "0 0 " + w + " " + ht);
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  const cur = h.rates.length ? h.rates[h.rates.length - 1] : 0;
  title.textContent = bytes(Math.round(cur)) + "/s now";
  svg.append(title);
  const base = document.createElementNS("http://www.w3.org/2000/svg", "line");
  base.setAttribute("x1", 0);
  base.setAttribute("x2", w);
  base.setAttribute("y1", ht - 0.5);
  base.setAttribute("y2", ht - 0.5);
  svg.append(base);
  if (h.rates.length > 1) {
    const max = Math.max(...h.rates, 1);
    const step = w / (SPARK_POINTS - 1);
    const off = (SPARK_POINTS - h.rates.length) * step;
    const pts = h.rates.map((r, i) => (off + i * step).toFixed(1) + "," + (ht - 1 - (r / max) * (ht - 2)).toFixed(1));
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

let lastStatus = null;

function showStatus(st) {
  lastStatus = st;
  const now = Date.now();
  const peers = new Map((st.peers || []).filter(p => p.name).map(p => [p.name, p]));
  for (const tr of document.querySelectorAll("#members tbody tr")) {
    const name = tr.dataset.name;
    const cell = c => tr.querySelector("td." + c);
    if (name === st.name) {
      cell("path").replaceChildren(el("span", "path-self", "this node"));
      continue;
    }
    const p = peers.get(name);
    if (!p) {
      cell("path").replaceChildren(el("span", "path-none", "not on the node"));
      continue;
    }
    cell("path").replaceChildren(el("span", pathClass(p.path), p.path));
    cell("handshake").textContent = ago(p.last_handshake);
    cell("rx").textContent = bytes(p.rx_bytes);
    cell("tx").textContent = bytes(p.tx_bytes);
    cell("spark").replaceChildren(spark(name, p, now));
  }
  const rej = st.last_rejection;
  $("#rejection").hidden = !rej;
  if (rej) {
    $("#rejection-serial").textContent = st.book_serial;
    $("#rejection-time").textContent = ago(rej.time);
    $("#rejection-error").textContent = rej.error;
  }
}

async function poll() {
  const node = $("#node");
  try {
    const st = await api("GET", "/api/status");
    node.textContent = "live view of node " + st.name + " (" + st.mode + ", book serial " + st.book_serial + "), updated " + new Date().toLocaleTimeString();
    showStatus(st);
  } catch (e) {
    node.textContent = "node not reachable: " + e.message;
  }
}

// The mesh matrix (a book in etcd): row = reporting member, column = the
// member it reports on; no report is grey.
function matrixCell(c) {
  if (c.path === "self") return el("td", "path-self", "·");
  if (c.path === "") {
    const td = el("td", "path-unknown", "?");
    td.title = "no report";
    return td;
  }
  const td = el("td", pathClass(c.path), c.path === "direct" ? "direct" : c.path);
  td.title = c.path + (c.last_handshake ? ", handshake " + ago(c.last_handshake) : "");
  return td;
}

async function pollMatrix() {
  let m;
  try { m = await api("GET", "/api/matrix"); } catch (e) { say("matrix: " + e.message, true); return; }
  const head = el("tr");
  head.append(el("th", "", "reports ↓ on →"), ...m.members.map(n => el("th", "", n)));
  $("#matrix-table thead").replaceChildren(head);
  $("#matrix-table tbody").replaceChildren(...m.rows.map(r => {
    const tr = el("tr");
    tr.dataset.name = r.name;
    const th = el("th", "", r.name);
    th.title = r.reported ? "reported " + ago(r.reported) : "no report: not running, or not publishing";
    tr.append(th, ...r.cells.map(c => { const td = matrixCell(c); td.dataset.to = c.name; return td; }));
    return tr;
  }));
}

async function start() {
  csrf = await api("GET", "/api/csrf");
  await loadMembers();

  $("#add-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target;
    const body = { name: f.name.value.trim(), subnets: list(f.subnets.value), groups: list(f.groups.value) };
    if (f.public_key.value.trim()) body.public_key = f.public_key.value.trim();
    if (f.endpoint.value.trim()) body.endpoint = f.endpoint.value.trim();
    try {
      const r = await api("POST", "/api/members", body);
      say("added " + r.member.name + ": " + r.member.addresses.join(", ") + "; serial " + r.serial);
      f.reset();
      if (r.config) {
        $("#created-name").textContent = r.member.name;
        $("#created-config").textContent = r.config;
        $("#created-qr").src = "data:image/png;base64," + r.qr_png;
        $("#created").hidden = false;
      }
      await loadMembers();
    } catch (e) { say(e.message, true); }
  });

  $("#created-done").addEventListener("click", () => {
    $("#created-config").textContent = "";
    $("#created-qr").removeAttribute("src");
    $("#created").hidden = true;
  });

  $("#edit-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = ev.target;
    const body = { endpoint: f.endpoint.value.trim(), subnets: list(f.subnets.value), groups: list(f.groups.value) };
    try {
      const r = await api("PATCH", "/api/members/" + encodeURIComponent(editing), body);
      say("changed " + r.member.name + "; serial " + r.serial);
      $("#edit").hidden = true;
      await loadMembers();
    } catch (e) { say(e.message, true); }
  });
  $("#edit-cancel").addEventListener("click", () => { $("#edit").hidden = true; });

  if (document.body.dataset.live === "yes") {
    await poll();
    setInterval(poll, POLL_MS);
  }
  if (document.body.dataset.matrix === "yes") {
    await pollMatrix();
    setInterval(pollMatrix, POLL_MS);
  }
  document.body.dataset.ready = "yes";
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch(e => say(e.message, true));
});
