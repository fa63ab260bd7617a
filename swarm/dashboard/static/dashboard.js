// The swarm dashboard: one server-sent event stream (/api/stream), rendered without reloads.
// Messages: snapshot (everything, at (re)connection), state (tree, curves, run), event (a merge,
// promotion, refusal... as it happens), circuits (the tables). No library: DOM calls and inline SVG.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#3e6fb0", "#c0612b", "#2f7d4f", "#8a3fb8", "#94740d", "#1f8a8a", "#b5462f", "#5b6770"];
const LOUD = new Set(["merge", "promotion"]);  // the other kinds are shown on request
const view = { state: null, nodes: new Map(), structure: "", events: new Set() };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);
const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + "%";
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

// ---------------------------------------------------------------- the tree
function nodeStats(n) {
  if (n.kind === "agent") {
    return [["step", n.step], ["bpb", fmt(n.bpb)], ["pushes", n.pushes], ["refused", n.refusals]];
  }
  if (n.version === null) return [];
  return [["v", n.version], ["merges/min", fmt(n.merges_per_min, 1)], ["screened", pct(n.screened_fraction)],
          ["refusals", n.refusals], ["bpb", fmt(n.bpb)]];
}
function walk(n, f) { f(n); for (const c of n.children || []) walk(c, f); }
function structureOf(root) { const names = []; walk(root, (n) => names.push(n.kind + ":" + n.name)); return names.join("|"); }

function renderNode(n) {
  const stats = el("span", { class: "stats" });
  const box = el("div", { class: `node ${n.kind}`, "data-node": n.name, "data-kind": n.kind },
                 el("span", { class: "name" }, n.name), n.slot ? el("span", { class: "slot" }, n.slot) : null, stats);
  view.nodes.set(n.name, { box, stats });
  const li = el("li", {}, box);
  if ((n.children || []).length) li.append(el("ul", {}, ...n.children.map(renderNode)));
  return li;
}
function fillNode(n) {
  const held = view.nodes.get(n.name);
  if (!held) return;
  held.box.setAttribute("data-version", n.version === null ? "" : n.version);
  held.box.setAttribute("data-bpb", n.bpb === null ? "" : n.bpb);
  held.stats.replaceChildren(...nodeStats(n).map(([k, v]) =>
    el("span", { class: "stat" }, k + " ", el("b", {}, String(v)))));
}
function renderTree(root) {
  const structure = structureOf(root);
  if (structure !== view.structure) {
    view.nodes.clear();
    document.getElementById("tree").replaceChildren(el("ul", { class: "tree" }, renderNode(root)));
    view.structure = structure;
  }
  walk(root, fillNode);
}

// ---------------------------------------------------------------- events
function addEvent(e, live) {
  const key = `${e.level}#${e.seq}#${e.time}`;
  if (view.events.has(key)) return;
  view.events.add(key);
  const li = el("li", { class: `${e.kind}${LOUD.has(e.kind) ? "" : " quiet"}`, "data-level": e.level,
                        "data-seq": e.seq, "data-kind": e.kind, "data-version": e.version, "data-time": e.time },
                el("span", { class: "t" }, clock(e.time)), el("span", { class: "k" }, e.kind),
                el("span", {}, `${e.level} v${e.version}`), el("span", { class: "d", title: e.detail }, e.detail));
  const list = document.getElementById("events");
  list.prepend(li);
  while (list.children.length > 300) list.lastChild.remove();
  if (live && (e.kind === "merge" || e.kind === "promotion")) {
    const held = view.nodes.get(e.level);
    if (held) {  // the version moves at once, before the next state message
      held.box.setAttribute("data-version", e.version);
      const b = held.stats.querySelector(".stat b");
      if (b) b.textContent = String(e.version);
      held.box.classList.add("flash");
      setTimeout(() => held.box.classList.remove("flash"), 400);
    }
  }
  // event to pixels: stamped once the frame that shows it has been painted
  requestAnimationFrame(() => requestAnimationFrame(() => li.setAttribute("data-shown", Date.now() / 1000)));
}

// ---------------------------------------------------------------- curves
function chart(title, subtitle, series) {
  const W = 340, H = 170, L = 38, R = 8, T = 8, B = 22;
  const pts = series.flatMap((s) => s.points);
  const box = el("div", { class: "curve", "data-level": title }, el("h3", {}, title), el("p", { class: "hint" }, subtitle));
  if (pts.length === 0) { box.append(el("p", { class: "empty" }, "no evaluation yet")); return box; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-6) { y0 -= 0.05; y1 += 0.05; }
  const X = (x) => L + (W - L - R) * (x - x0) / (x1 - x0), Y = (y) => T + (H - T - B) * (1 - (y - y0) / (y1 - y0));
  const s = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  s.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#c9ced4" }));
  s.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#c9ced4" }));
  for (const [v, y] of [[y1, T + 4], [y0, H - B]]) {
    const t = svg("text", { x: L - 4, y, "text-anchor": "end" }); t.textContent = fmt(v, 2); s.append(t);
  }
  for (const [v, x, a] of [[x0, L, "start"], [x1, W - R, "end"]]) {
    const t = svg("text", { x, y: H - 6, "text-anchor": a }); t.textContent = `step ${Math.round(v)}`; s.append(t);
  }
  const legend = el("div", { class: "legend" });
  series.forEach((se) => {
    if (!se.points.length) return;
    const d = se.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    s.append(svg("path", { d, fill: "none", stroke: se.color, "stroke-width": se.width, opacity: se.width > 2 ? 1 : 0.8 }));
    for (const p of se.points) s.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: se.width > 2 ? 2.5 : 1.6, fill: se.color }));
    const sw = el("i"); sw.style.background = se.color;
    legend.append(el("span", {}, sw, se.label));
  });
  box.append(s, legend);
  return box;
}
function levelsOf(root) { const out = []; walk(root, (n) => { if (n.kind === "level" && n.version !== null) out.push(n); }); return out; }
function renderCurves(st) {
  const boxes = levelsOf(st.tree).map((lvl) => {
    const agents = st.curves.below[lvl.name] || [];
    const series = agents.map((a, i) => ({ label: a, points: st.curves.agents[a] || [], color: COLORS[i % COLORS.length], width: 1.2 }));
    series.unshift({ label: "mean", points: st.curves.levels[lvl.name] || [], color: "#1d232a", width: 3 });
    const every = lvl.seconds_per_merge ? `one merge every ${fmt(lvl.seconds_per_merge, 1)} s` : "no merge rate yet";
    return chart(lvl.name, `timescale: ${every}, ${st.windows[lvl.name]} pushes per merge · ${lvl.merges} merges`, series);
  });
  document.getElementById("curves").replaceChildren(...boxes);
}

// ---------------------------------------------------------------- circuits
function showBytes(text) {
  const out = [];
  for (const part of text.split(/(\n|\t)/)) {
    if (part === "\n") out.push(el("span", { class: "ws" }, "⏎")); else if (part === "\t") out.push(el("span", { class: "ws" }, "→"));
    else if (part) out.push(part);
  }
  return out;
}
function renderCircuits(circuits) {
  const blocks = [];
  for (const [level, rows] of Object.entries(circuits || {})) {
    if (level === "_error") { blocks.push(el("p", { class: "empty" }, "snippets failed: " + rows[0].error)); continue; }
    blocks.push(el("h3", {}, level));
    if (!rows.length) { blocks.push(el("p", { class: "empty" }, "no circuit tracked yet")); continue; }
    const head = el("tr", {}, ...["circuit", "stability", "strength", "age", "origin", "what it does (top snippets)"].map((h, i) => el("th", { class: i === 2 || i === 3 ? "num" : "" }, h)));
    const body = rows.map((c) => {
      const bar = el("span", { class: "bar" }); bar.style.width = `${Math.round(60 * c.stability)}px`;
      const snippets = c.snippets.length ? c.snippets.map((s) => el("span", { class: "snippet", "data-activation": s.activation },
        ...showBytes(s.before), el("mark", {}, ...showBytes(s.focus)), ...showBytes(s.after),
        el("span", { class: "who" }, `${s.agent} · ${fmt(s.activation, 2)}`))) : [el("span", { class: "empty" }, "computing…")];
      return el("tr", { "data-circuit": c.id }, el("td", {}, c.module.split(".").slice(-3).join("."), el("br"), el("span", { class: "hint" }, "#" + c.id.split("#").pop())),
        el("td", {}, bar, " ", fmt(c.stability, 2)), el("td", { class: "num" }, Number(c.strength).toPrecision(3)),
        el("td", { class: "num" }, String(c.age)), el("td", {}, c.origin), el("td", {}, ...snippets));
    });
    blocks.push(el("table", { class: "circuits", "data-level": level }, el("thead", {}, head), el("tbody", {}, ...body)));
  }
  document.getElementById("circuits").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "empty" }, "no circuits yet")]));
}

// ---------------------------------------------------------------- the stream
function applyState(st) {
  view.state = st;
  document.getElementById("run-name").textContent = st.run.name;
  const state = document.getElementById("run-state");
  state.textContent = st.run.live ? `live · ${st.run.state}` : `${st.run.state} · from its checkpoints`;
  state.className = "badge" + (st.run.live ? " live" : "");
  document.getElementById("run-note").textContent = st.run.note || "";
  renderTree(st.tree);
  renderCurves(st);
}
function connect() {
  const conn = document.getElementById("connection");
  const source = new EventSource("/api/stream");
  source.onopen = () => { conn.textContent = "updating live"; conn.className = "badge live"; };
  source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "badge off"; };
  source.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "snapshot") {
      applyState(msg);
      for (const e of msg.events) addEvent(e, false);
      renderCircuits(msg.circuits);
    } else if (msg.type === "state") applyState(msg);
    else if (msg.type === "event") addEvent(msg, true);
    else if (msg.type === "circuits") renderCircuits(msg.circuits);
    document.body.setAttribute("data-updated", Date.now() / 1000);
  };
}
document.getElementById("show-refusals").addEventListener("change", (e) =>
  document.getElementById("events").classList.toggle("all", e.target.checked));
connect();
