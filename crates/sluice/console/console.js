// Sluice console: a hash-routed single page over the admin listener's JSON API (/api/...).
// Plain JavaScript, no build step, nothing loaded from elsewhere. Every piece of broker data is put
// into the page with textContent (through el()), never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const HISTORY = 60; // overview samples kept for the throughput sparkline (2 minutes)
const WINDOW_MS = HISTORY * POLL_MS; // the time the sparkline's width stands for

// ---------- small helpers ----------

/** Builds an element: el("td", {class: "num"}, "text", childNode, ...). Strings become text. */
function el(tag, attrs, ...children) {
  const node = tag === "svg" || tag === "path" || tag === "line" || tag === "polyline"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

async function api(path, options) {
  const response = await fetch("/api" + path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const message = body && body.error ? body.error : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
}

function fmtRate(n, unit) {
  if (!isFinite(n)) return "–";
  if (unit === "B") return fmtBytes(n) + "/s";
  return (n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en-US")) + " " + unit + "/s";
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function fmtTime(ms) {
  const d = new Date(Number(ms));
  if (isNaN(d.getTime())) return String(ms);
  const pad = (x, n = 2) => String(x).padStart(n, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function stateBadge(state) {
  const kind = { Stable: "good", Empty: "grey", PreparingRebalance: "warn", CompletingRebalance: "warn" }[state] || "";
  return el("span", { class: "badge " + kind }, state);
}

function panel(title, body, ...actions) {
  return el("section", { class: "panel" },
    el("div", { class: "panel-head" }, el("h2", {}, title), el("div", { class: "toolbar" }, actions)),
    body);
}

function table(headers, rows, emptyText, testid) {
  const head = el("thead", {}, el("tr", {}, headers.map((h) =>
    el("th", { class: h.num ? "num" : null }, h.label || h))));
  const body = el("tbody", { "data-testid": testid || null });
  if (rows.length === 0) {
    body.append(el("tr", {}, el("td", { class: "empty", colspan: headers.length }, emptyText || "Nothing here yet.")));
  } else {
    body.append(...rows);
  }
  return el("table", {}, head, body);
}

function card(label, value, kind, testid, note) {
  return el("div", { class: "card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value " + (kind || ""), "data-testid": testid || null }, value),
    note ? el("div", { class: "note", "data-testid": testid ? testid + "-note" : null }, note) : null);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = (path || "overview").split("/").map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || "") };
}

function go(hash) { location.hash = hash; }

// ---------- shared state: overview history, header ----------

const state = { history: [], overview: null, failed: false };

async function pollOverview() {
  try {
    const o = await api("/overview");
    state.overview = o;
    state.history.push({
      t: performance.now(), in: o.bytes_in_total, out: o.bytes_out_total,
      recs: o.records_in_total,
    });
    if (state.history.length > HISTORY + 1) state.history.shift();
    const clusterId = document.getElementById("cluster-id");
    clusterId.textContent = o.cluster_id;
    clusterId.title = o.cluster_id;
    document.getElementById("version").textContent = o.version;
    document.getElementById("uptime").textContent = "up " + fmtDuration(o.uptime_ms);
    setLive(true);
  } catch (e) {
    setLive(false, e.message);
  }
}

function setLive(ok, message) {
  const live = document.getElementById("live");
  live.classList.toggle("down", !ok);
  document.getElementById("live-text").textContent = ok ? "live" : "disconnected";
  const banner = document.getElementById("banner");
  banner.hidden = ok;
  if (!ok) banner.textContent = "Cannot reach the broker: " + (message || "no answer");
}

/** Per-second rates between consecutive samples, each at the time of the later one. */
function rates() {
  const out = [];
  const h = state.history;
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].t - h[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push({
      t: h[i].t,
      in: Math.max(0, (h[i].in - h[i - 1].in) / dt),
      out: Math.max(0, (h[i].out - h[i - 1].out) / dt),
      recs: Math.max(0, (h[i].recs - h[i - 1].recs) / dt),
    });
  }
  return out;
}

/** The last WINDOW_MS of rates: the newest at the right edge, time to scale, so 20 s of
 *  samples fill the right sixth of a 2-minute chart rather than all of it. */
function sparkline(series) {
  const w = 600, hgt = 150, pad = 8;
  const svg = el("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", "data-testid": "sparkline" });
  for (const f of [0.25, 0.5, 0.75]) {
    svg.append(el("line", { class: "grid", x1: 0, x2: w, y1: hgt * f, y2: hgt * f }));
  }
  const max = Math.max(1, ...series.map((r) => Math.max(r.in, r.out)));
  const newest = series.length ? series[series.length - 1].t : 0;
  const x = (t) => Math.max(0, w - ((newest - t) / WINDOW_MS) * w);
  const y = (v) => hgt - pad - (v / max) * (hgt - 2 * pad);
  if (series.length >= 1) {
    // One sample is a short flat line ending at the right edge.
    const shown = series.length === 1 ? [{ ...series[0], t: series[0].t - POLL_MS }, series[0]] : series;
    const points = (key) => shown.map((r) => `${x(r.t).toFixed(1)},${y(r[key]).toFixed(1)}`);
    const inPoints = points("in");
    const left = x(shown[0].t).toFixed(1);
    svg.append(el("path", { class: "in-area", d: `M${left},${hgt} L${inPoints.join(" L")} L${w},${hgt} Z` }));
    svg.append(el("polyline", { class: "in", points: inPoints.join(" "), "vector-effect": "non-scaling-stroke" }));
    svg.append(el("polyline", { class: "out", points: points("out").join(" "), "vector-effect": "non-scaling-stroke" }));
  }
  return el("div", { class: "spark-box" }, svg, el("div", { class: "spark-max" }, "peak " + fmtBytes(max) + "/s"));
}

// ---------- pages ----------
// Each page builds its skeleton once (mount) and refreshes its data on every poll (refresh), so
// polling never resets what the user typed.

const pages = {};

pages.overview = {
  title: "Overview",
  mount(view) {
    this.cards = el("div", { class: "cards" });
    this.spark = el("div", { class: "spark-wrap" });
    this.brokers = el("div", { class: "panel-body" });
    this.topics = el("div", { class: "panel-body flush" });
    view.append(this.cards,
      el("div", { class: "grid2" },
        panel("Throughput", el("div", { class: "panel-body" }, this.spark)),
        panel("Broker", this.brokers)),
      panel("Largest topics", this.topics, el("a", { href: "#/topics" }, "All topics →")));
  },
  async refresh() {
    const o = state.overview;
    if (!o) return;
    const topics = await api("/topics");
    const r = rates();
    const last = r[r.length - 1] || { in: 0, out: 0, recs: 0 };
    clear(this.cards,
      card("Brokers", fmtInt(o.brokers.length)),
      // User topics, as the topic list and "Largest topics" show them; internal ones apart.
      card("Topics", fmtInt(o.topic_count), null, "topic-count",
        o.internal_topic_count ? `+ ${fmtInt(o.internal_topic_count)} internal` : null),
      card("Partitions", fmtInt(o.partition_count), null, "partition-count",
        o.internal_partition_count ? `+ ${fmtInt(o.internal_partition_count)} internal` : null),
      card("Under-replicated", fmtInt(o.under_replicated_partitions), o.under_replicated_partitions ? "bad" : "good"),
      card("Offline", fmtInt(o.offline_partitions), o.offline_partitions ? "bad" : "good"),
      card("Consumer groups", fmtInt(o.group_count)),
      card("Data on disk", fmtBytes(o.size_bytes)));
    clear(this.spark,
      el("div", { class: "spark-legend" },
        el("span", {}, el("span", { class: "swatch", style: "background:#2f6fed" }), "In ", el("b", {}, fmtRate(last.in, "B"))),
        el("span", {}, el("span", { class: "swatch", style: "background:#13a3a0" }), "Out ", el("b", {}, fmtRate(last.out, "B"))),
        el("span", { class: "muted" }, "Records in ", el("b", {}, fmtRate(last.recs, "rec")))),
      sparkline(r),
      el("div", { class: "muted", style: "font-size:12px" }, "Last 2 minutes, sampled every 2 s"));
    const dl = el("dl", { class: "kv" });
    for (const b of o.brokers) {
      dl.append(
        el("dt", {}, "Node"), el("dd", {}, String(b.node_id), " ",
          el("span", { class: "badge" }, b.node_id === o.controller_id ? "controller" : "broker"),
          " ", el("span", { class: "badge good" }, "online")),
        el("dt", {}, "Listener"), el("dd", { class: "mono" }, b.advertised),
        el("dt", {}, "Data dir"), el("dd", { class: "mono" }, b.data_dir));
    }
    dl.append(
      el("dt", {}, "Version"), el("dd", {}, o.version),
      el("dt", {}, "Uptime"), el("dd", {}, fmtDuration(o.uptime_ms)),
      el("dt", {}, "Waiting requests"), el("dd", {}, `${o.purgatory.produce} produce · ${o.purgatory.fetch} fetch`),
      el("dt", {}, "Produced"), el("dd", {}, `${fmtBytes(o.bytes_in_total)} · ${fmtInt(o.records_in_total)} records`),
      el("dt", {}, "Fetched"), el("dd", {}, fmtBytes(o.bytes_out_total)));
    clear(this.brokers, dl);
    const largest = topics.filter((t) => !t.internal).sort((a, b) => b.size_bytes - a.size_bytes).slice(0, 5);
    clear(this.topics, topicTable(largest, "No topics yet."));
  },
};

function topicTable(topics, emptyText) {
  return table([
    "Topic", { label: "Partitions", num: true }, { label: "Records", num: true },
    { label: "End offsets", num: true }, { label: "Size", num: true }, "",
  ], topics.map((t) =>
    el("tr", { "data-testid": "topic-row", "data-topic": t.name },
      el("td", {}, el("a", { href: "#/topics/" + encodeURIComponent(t.name) }, t.name),
        t.internal ? [" ", el("span", { class: "badge grey" }, "internal")] : null),
      el("td", { class: "num" }, fmtInt(t.partition_count)),
      el("td", { class: "num" }, fmtInt(t.records)),
      el("td", { class: "num" }, fmtInt(t.end_offsets_total)),
      el("td", { class: "num" }, fmtBytes(t.size_bytes)),
      el("td", { class: "num" }, el("a", { href: "#/messages?topic=" + encodeURIComponent(t.name) }, "Browse")))),
  emptyText, "topics");
}

pages.topics = {
  title: "Topics",
  mount(view) {
    this.filter = el("input", { type: "search", placeholder: "Filter topics", oninput: () => this.refresh() });
    this.internal = el("input", { type: "checkbox", onchange: () => this.refresh() });
    this.body = el("div", { class: "panel-body flush" });
    view.append(panel("Topics", this.body, this.filter,
      el("label", { class: "check" }, this.internal, "Show internal")));
  },
  async refresh() {
    const topics = await api("/topics");
    const needle = this.filter.value.trim().toLowerCase();
    const shown = topics.filter((t) => (this.internal.checked || !t.internal) && t.name.toLowerCase().includes(needle));
    clear(this.body, topicTable(shown, needle ? "No topic matches." : "No topics yet. Create one with `sluice topic create`."));
  },
};

pages.topic = {
  title: "Topic",
  mount(view, parts) {
    this.name = parts[1] || "";
    this.title = "Topic " + this.name;
    this.cards = el("div", { class: "cards" });
    this.partitions = el("div", { class: "panel-body flush" });
    this.configs = el("div", { class: "panel-body flush" });
    const enc = encodeURIComponent(this.name);
    view.append(this.cards,
      panel("Partitions", this.partitions,
        el("a", { href: "#/messages?topic=" + enc }, "Browse messages"),
        el("a", { href: "#/produce?topic=" + enc }, "Produce")),
      panel("Configs", this.configs));
  },
  async refresh() {
    const t = await api("/topics/" + encodeURIComponent(this.name));
    clear(this.cards,
      card("Partitions", fmtInt(t.partition_count)),
      card("Records", fmtInt(t.records)),
      card("End offsets", fmtInt(t.end_offsets_total)),
      card("Size", fmtBytes(t.size_bytes)),
      card("Topic id", t.id, "id"));
    clear(this.partitions, table([
      { label: "Partition", num: true }, { label: "Leader", num: true }, { label: "Log start offset", num: true },
      { label: "High watermark", num: true }, { label: "Records", num: true }, { label: "Size", num: true }, "Replicas",
    ], t.partitions.map((p) => el("tr", { "data-testid": "partition-row" },
      el("td", { class: "num" }, String(p.partition)),
      el("td", { class: "num" }, String(p.leader)),
      el("td", { class: "num" }, fmtInt(p.log_start_offset)),
      el("td", { class: "num" }, fmtInt(p.high_watermark)),
      el("td", { class: "num" }, fmtInt(p.high_watermark - p.log_start_offset)),
      el("td", { class: "num" }, fmtBytes(p.size_bytes)),
      el("td", {}, p.offline
        ? el("span", { class: "badge bad", title: p.offline }, "offline: storage error")
        : el("span", { class: "badge " + (p.in_sync_replicas < p.replicas ? "bad" : "good") },
          `${p.in_sync_replicas}/${p.replicas} in sync`))))));
    // Overrides first, then the rest by name.
    const configs = t.configs.slice().sort((a, b) =>
      (a.source === "DYNAMIC_TOPIC_CONFIG" ? 0 : 1) - (b.source === "DYNAMIC_TOPIC_CONFIG" ? 0 : 1) || a.name.localeCompare(b.name));
    clear(this.configs, table(["Name", "Value", "Source"], configs.map((c) => el("tr", {},
      el("td", { class: "mono" }, c.name),
      el("td", { class: "mono" }, c.value, c.value === "9223372036854775807" ? el("span", { class: "note" }, "(no limit)") : null),
      el("td", {}, el("span", { class: "badge " + (c.source === "DYNAMIC_TOPIC_CONFIG" ? "" : "grey") }, c.source))))));
  },
};

function payloadNode(p) {
  if (!p || p.encoding === "null") return el("pre", { class: "payload null" }, "null");
  let text = p.data;
  if (p.encoding === "json") {
    try { text = JSON.stringify(JSON.parse(p.data), null, 2); } catch (_) { /* show as sent */ }
  }
  const nodes = [el("pre", { class: "payload " + p.encoding, "data-encoding": p.encoding }, text)];
  if (p.encoding !== "text") nodes.push(el("span", { class: "badge " + (p.encoding === "hex" ? "warn" : "") }, p.encoding === "hex" ? "binary · hex" : "JSON"));
  if (p.truncated) nodes.push(el("span", { class: "badge grey" }, `first ${fmtBytes(p.data.length)} of ${fmtBytes(p.size)}`));
  return nodes;
}

pages.messages = {
  title: "Messages",
  mount(view, parts, params) {
    this.topic = el("select", { "data-testid": "msg-topic", onchange: () => this.topicChanged() });
    this.partition = el("select", { "data-testid": "msg-partition", onchange: () => this.load() });
    this.mode = el("select", { "data-testid": "msg-mode", onchange: () => this.modeChanged() },
      el("option", { value: "latest" }, "Latest"),
      el("option", { value: "offset" }, "From offset"),
      el("option", { value: "timestamp" }, "From time"));
    this.at = el("input", { "data-testid": "msg-at", placeholder: "offset", disabled: true, size: 22 });
    this.max = el("select", { "data-testid": "msg-max" }, ["5", "20", "50", "100", "200", "500"].map((n) => el("option", { value: n }, n)));
    this.max.value = "50";
    this.follow = el("input", { type: "checkbox", checked: true });
    this.info = el("span", { class: "muted", "data-testid": "msg-range" });
    this.older = el("button", { class: "secondary", "data-testid": "msg-older", disabled: true, onclick: () => this.page(-1) }, "← Older");
    this.newer = el("button", { class: "secondary", "data-testid": "msg-newer", disabled: true, onclick: () => this.page(1) }, "Newer →");
    this.body = el("div", { class: "panel-body flush" });
    this.wantTopic = params.get("topic");
    this.wantPartition = params.get("partition");
    view.append(el("section", { class: "panel" }, el("div", { class: "panel-body toolbar" },
      el("label", { class: "field" }, "Topic", this.topic),
      el("label", { class: "field" }, "Partition", this.partition),
      el("label", { class: "field" }, "Start", this.mode),
      el("label", { class: "field" }, "Offset / time", this.at),
      el("label", { class: "field" }, "Max", this.max),
      el("button", { "data-testid": "msg-load", onclick: () => this.load() }, "Load"),
      el("label", { class: "check" }, this.follow, "Follow new messages"))),
    panel("Records", this.body, this.info, this.older, this.newer));
    this.topics = [];
    this.last = null;
  },
  /** Moves one page back (-1) or forward (1) from the page shown, as an offset start. */
  page(direction) {
    if (!this.last) return;
    const max = Number(this.max.value);
    const start = direction < 0
      ? Math.max(this.last.log_start_offset, this.last.start_offset - max)
      : this.last.next_offset;
    this.mode.value = "offset";
    this.at.disabled = false;
    this.at.value = String(start);
    this.follow.checked = false;
    this.load();
  },
  modeChanged() {
    const mode = this.mode.value;
    this.at.disabled = mode === "latest";
    this.at.placeholder = mode === "timestamp" ? "2026-01-31 12:00 or ms" : "offset";
    if (mode === "timestamp" && !this.at.value) this.at.value = fmtTime(Date.now() - 3600 * 1000).slice(0, 16);
    if (mode !== "latest") this.follow.checked = false;
    if (mode === "latest") this.load();
  },
  topicChanged() {
    const t = this.topics.find((x) => x.name === this.topic.value);
    clear(this.partition, (t ? t.partitions : []).map((p) => el("option", { value: p.partition }, String(p.partition))));
    this.load();
  },
  async refresh() {
    const topics = await api("/topics");
    const names = topics.map((t) => t.name).join("\n");
    if (names !== this.topics.map((t) => t.name).join("\n")) {
      const current = this.topic.value || this.wantTopic || (topics.find((t) => !t.internal) || {}).name;
      clear(this.topic, topics.map((t) => el("option", { value: t.name }, t.name)));
      this.topics = topics;
      if (current) this.topic.value = current;
      const t = topics.find((x) => x.name === this.topic.value);
      const part = this.partition.value || this.wantPartition || "0";
      clear(this.partition, (t ? t.partitions : []).map((p) => el("option", { value: p.partition }, String(p.partition))));
      this.partition.value = part;
      await this.load();
      return;
    }
    this.topics = topics;
    if (this.follow.checked && this.mode.value === "latest") await this.load();
  },
  async load() {
    if (!this.topic.value) {
      clear(this.body, el("div", { class: "empty" }, "No topics yet."));
      return;
    }
    const q = new URLSearchParams({ partition: this.partition.value || "0", max: this.max.value });
    const raw = this.at.value.trim();
    if (this.mode.value === "offset") q.set("offset", raw);
    if (this.mode.value === "timestamp") {
      const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw.replace(" ", "T"));
      q.set("timestamp", isNaN(ms) ? raw : String(ms));
    }
    let page;
    try {
      page = await api(`/topics/${encodeURIComponent(this.topic.value)}/messages?${q}`);
    } catch (e) {
      clear(this.body, el("div", { class: "result err", "data-testid": "msg-error" }, e.message));
      return;
    }
    this.last = page;
    this.older.disabled = page.start_offset <= page.log_start_offset;
    this.newer.disabled = page.next_offset >= page.high_watermark;
    this.info.textContent = rangeText(page);
    const rows = page.records.slice().reverse().map((r) => el("tr", { "data-testid": "message-row", "data-offset": r.offset },
      el("td", { class: "num mono" }, String(r.offset)),
      el("td", { class: "mono", style: "white-space:nowrap" }, fmtTime(r.timestamp)),
      el("td", { style: "max-width:220px" }, payloadNode(r.key)),
      el("td", { style: "width:45%" }, payloadNode(r.value)),
      el("td", {}, r.headers.length === 0 ? el("span", { class: "muted" }, "–")
        : el("div", { class: "headers" }, r.headers.map((h) =>
          el("div", {}, el("b", {}, h.key), " = ", h.value.encoding === "null" ? "null" : h.value.data))))));
    const damaged = (page.damaged || []).map((d) => el("div", { class: "result err", "data-testid": "damaged-batch" },
      `Damaged batch at offsets ${fmtInt(d.base_offset)} – ${fmtInt(d.last_offset)}, not shown: ${d.reason}`));
    clear(this.body, ...damaged, table([{ label: "Offset", num: true }, "Timestamp", "Key", "Value", "Headers"], rows,
      "No records in this range.", "messages"));
  },
};

/** "offsets 0 – 7 · showing 3 (5 – 7)": inclusive ranges, the partition's then the page's (the
 *  high watermark is the next offset, not the last one). */
function rangeText(page) {
  const held = page.high_watermark > page.log_start_offset
    ? `offsets ${fmtInt(page.log_start_offset)} – ${fmtInt(page.high_watermark - 1)}`
    : `no records (next offset ${fmtInt(page.high_watermark)})`;
  const offsets = page.records.map((r) => r.offset);
  const shown = offsets.length
    ? `showing ${fmtInt(offsets.length)} (${fmtInt(Math.min(...offsets))} – ${fmtInt(Math.max(...offsets))})`
    : "showing none";
  return `${held} · ${shown}`;
}

pages.groups = {
  title: "Consumer groups",
  mount(view) {
    this.body = el("div", { class: "panel-body flush" });
    view.append(panel("Consumer groups", this.body));
  },
  async refresh() {
    const groups = await api("/groups");
    clear(this.body, table(["Group", "State", "Protocol", { label: "Members", num: true }, { label: "Total lag", num: true }],
      groups.map((g) => el("tr", { "data-testid": "group-row", "data-group": g.group_id },
        el("td", {}, el("a", { href: "#/groups/" + encodeURIComponent(g.group_id) }, g.group_id)),
        el("td", {}, stateBadge(g.state)),
        el("td", {}, g.protocol_type || "–", g.protocol ? " / " + g.protocol : ""),
        el("td", { class: "num" }, fmtInt(g.members)),
        el("td", { class: "num", "data-testid": "group-lag" }, fmtInt(g.total_lag)))),
      "No consumer groups yet."));
  },
};

pages.group = {
  title: "Group",
  mount(view, parts) {
    this.id = parts[1] || "";
    this.title = "Group " + this.id;
    this.cards = el("div", { class: "cards" });
    this.members = el("div", { class: "panel-body flush" });
    this.offsets = el("div", { class: "panel-body flush" });
    view.append(this.cards, panel("Members", this.members), panel("Committed offsets and lag", this.offsets));
  },
  async refresh() {
    const g = await api("/groups/" + encodeURIComponent(this.id));
    clear(this.cards,
      card("State", stateBadge(g.state)),
      card("Members", fmtInt(g.members)),
      card("Partitions", fmtInt(g.offsets.length)),
      card("Total lag", fmtInt(g.total_lag), g.total_lag > 0 ? "bad" : "good", "group-total-lag"));
    clear(this.members, table(["Member", "Client id", "Host", "Assigned partitions"], g.member_list.map((m) => el("tr", {},
      el("td", { class: "mono" }, m.member_id, m.instance_id ? el("div", { class: "muted" }, "static: " + m.instance_id) : null),
      el("td", {}, m.client_id),
      el("td", { class: "mono" }, m.client_host),
      el("td", {}, m.assignment === null ? el("span", { class: "muted" }, "not a consumer assignment")
        : m.assignment.length === 0 ? el("span", { class: "muted" }, "none")
          : m.assignment.map((a) => el("span", { class: "badge", style: "margin:0 4px 4px 0" }, `${a.topic}-${a.partition}`))))),
    "No active members (offsets are committed, nobody is consuming)."));
    const maxLag = Math.max(1, ...g.offsets.map((o) => o.lag || 0));
    clear(this.offsets, table(["Topic", { label: "Partition", num: true }, { label: "Committed", num: true },
      { label: "Log end", num: true }, { label: "Lag", num: true }, "Committed at"],
    g.offsets.map((o) => el("tr", { "data-testid": "offset-row", "data-topic": o.topic, "data-partition": o.partition },
      el("td", {}, el("a", { href: "#/topics/" + encodeURIComponent(o.topic) }, o.topic)),
      el("td", { class: "num" }, String(o.partition)),
      el("td", { class: "num" }, fmtInt(o.committed_offset)),
      el("td", { class: "num" }, fmtInt(o.log_end_offset)),
      el("td", { class: "num", "data-testid": "partition-lag" }, fmtInt(o.lag),
        el("div", { class: "lagbar" }, el("span", { style: `width:${Math.round(100 * (o.lag || 0) / maxLag)}%` }))),
      el("td", { class: "mono muted" }, fmtTime(o.commit_timestamp)))),
    "No committed offsets."));
  },
};

pages.produce = {
  title: "Produce a test message",
  mount(view, parts, params) {
    this.topic = el("select", { name: "topic", "data-testid": "produce-topic" });
    this.partition = el("input", { name: "partition", "data-testid": "produce-partition", placeholder: "by key, else round-robin", inputmode: "numeric" });
    this.key = el("input", { name: "key", "data-testid": "produce-key", placeholder: "optional" });
    this.value = el("textarea", { name: "value", "data-testid": "produce-value", placeholder: "{\"hello\": \"world\"}" });
    this.headers = el("div", {});
    this.result = el("div", { "data-testid": "produce-result" });
    this.wantTopic = params.get("topic");
    const form = el("form", { class: "form", "data-testid": "produce-form", onsubmit: (e) => { e.preventDefault(); this.submit(); } },
      el("div", { class: "form-row" },
        el("label", { class: "field" }, "Topic", this.topic),
        el("label", { class: "field" }, "Partition", this.partition)),
      el("label", { class: "field" }, "Key", this.key),
      el("label", { class: "field" }, "Value", this.value),
      el("div", { class: "field" }, "Headers", this.headers,
        el("div", {}, el("button", { type: "button", class: "secondary", onclick: () => this.addHeader() }, "Add header"))),
      el("div", {}, el("button", { type: "submit", "data-testid": "produce-submit" }, "Produce")),
      this.result);
    this.curl = el("pre", {});
    for (const input of [this.topic, this.partition, this.key, this.value]) {
      input.addEventListener("input", () => this.updateCurl());
      input.addEventListener("change", () => this.updateCurl());
    }
    view.append(el("div", { class: "grid-form" },
      panel("Produce a test message", el("div", { class: "panel-body" }, form)),
      panel("About test messages", el("div", { class: "panel-body help" },
        el("p", {}, "The record is appended by the broker itself, as an acks=all producer would: "
          + "it counts in the topic's traffic and consumers read it like any other."),
        el("p", {}, "Without a partition, a keyed record goes where Kafka's default partitioner "
          + "would put it (murmur2 of the key); a keyless one goes round-robin."),
        el("p", {}, "The same from a script:"),
        this.curl))));
    this.loaded = false;
  },
  addHeader() {
    const row = el("div", { class: "header-row" },
      el("input", { placeholder: "header key", "data-role": "hkey" }),
      el("input", { placeholder: "header value", "data-role": "hvalue" }),
      el("button", { type: "button", class: "secondary", onclick: () => row.remove() }, "Remove"));
    this.headers.append(row);
  },
  async refresh() {
    if (this.loaded) return;
    const topics = (await api("/topics")).filter((t) => !t.internal);
    clear(this.topic, topics.map((t) => el("option", { value: t.name }, t.name)));
    if (this.wantTopic) this.topic.value = this.wantTopic;
    this.loaded = true;
    this.updateCurl();
  },
  body() {
    const body = { value: this.value.value };
    if (this.key.value !== "") body.key = this.key.value;
    const p = this.partition.value.trim();
    if (/^\d+$/.test(p)) body.partition = Number(p);
    return body;
  },
  updateCurl() {
    const quote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
    this.curl.textContent = `curl -X POST -H 'content-type: application/json' \\\n  ${location.origin}/api/topics/`
      + `${encodeURIComponent(this.topic.value || "TOPIC")}/produce \\\n  -d ${quote(JSON.stringify(this.body()))}`;
  },
  async submit() {
    const p = this.partition.value.trim();
    if (p !== "" && !/^\d+$/.test(p)) { this.show(false, "Partition must be a number."); return; }
    const body = this.body();
    body.headers = [...this.headers.querySelectorAll(".header-row")].map((row) => ({
      key: row.querySelector("[data-role=hkey]").value,
      value: row.querySelector("[data-role=hvalue]").value,
    })).filter((h) => h.key !== "");
    try {
      const r = await api(`/topics/${encodeURIComponent(this.topic.value)}/produce`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      this.show(true, `Produced to ${r.topic} partition ${r.partition} at offset ${r.offset}.`,
        `#/messages?topic=${encodeURIComponent(r.topic)}&partition=${r.partition}`);
    } catch (e) {
      this.show(false, e.message);
    }
  },
  show(ok, message, link) {
    clear(this.result, el("div", { class: "result " + (ok ? "ok" : "err") }, message,
      link ? [" ", el("a", { href: link }, "View it in the message browser →")] : null));
  },
};

// ---------- router and polling ----------

let current = null;
let generation = 0;

function route() {
  const { parts, params } = parseHash();
  let name = parts[0];
  if (name === "topics" && parts.length > 1) name = "topic";
  if (name === "groups" && parts.length > 1) name = "group";
  if (!pages[name]) name = "overview";
  const page = Object.create(pages[name]);
  const view = clear(document.getElementById("view"));
  page.mount(view, parts, params);
  document.getElementById("page-title").textContent = page.title;
  document.title = page.title + " · Sluice";
  const navName = { topic: "topics", group: "groups" }[name] || name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === navName);
  current = page;
  generation += 1;
  refresh();
}

async function refresh() {
  const mine = generation;
  const page = current;
  try {
    await page.refresh();
  } catch (e) {
    if (mine !== generation) return;
    if (e.status === 404) {
      clear(document.getElementById("view"), el("div", { class: "result err" }, e.message));
    } else {
      setLive(false, e.message);
    }
  }
}

async function tick() {
  await pollOverview();
  await refresh();
  setTimeout(tick, POLL_MS);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  await pollOverview();
  route();
  setTimeout(tick, POLL_MS);
});
