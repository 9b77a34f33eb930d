// DOM helpers shared by the views: element builders, keyed patching (so that live refreshes keep focus,
// scroll and open <details> and never flicker), icons, JSON blocks and time formatting.
// Every piece of data goes into the page as text (textContent), never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("a", {href: "#/x", class: "c", onclick: f, "data-key": "k"}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A node whose identity (data-key) and content signature (data-sig) let `patch` keep it across refreshes. */
export function keyed(node, key, data) {
  node.dataset.key = key;
  node.dataset.sig = typeof data === "string" ? data : JSON.stringify(data);
  return node;
}

/**
 * Make `parent`'s children the `next` nodes, reusing an existing child when its key and signature are
 * unchanged. A replaced child hands its open <details data-key> on to its successor.
 */
export function patch(parent, next) {
  const old = new Map();
  for (const child of parent.children) if (child.dataset.key) old.set(child.dataset.key, child);
  const wanted = next.map((node) => {
    const previous = old.get(node.dataset.key);
    if (previous === undefined) return node;
    old.delete(node.dataset.key);
    if (previous.dataset.sig === node.dataset.sig) return previous;
    keepOpen(previous, node);
    previous.remove();
    return node;
  });
  for (const stale of old.values()) stale.remove();
  for (const child of [...parent.children]) if (!child.dataset.key) child.remove();
  // Existing nodes that keep their relative order are never moved (moving one would blur it):
  // only new, replaced or reordered nodes are inserted.
  let cursor = parent.firstElementChild;
  for (const node of wanted) {
    if (node === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(node, cursor);
  }
}

function keepOpen(from, to) {
  const state = new Map();
  const all = (root) => [...(root.matches("details[data-key]") ? [root] : []), ...root.querySelectorAll("details[data-key]")];
  for (const d of all(from)) state.set(d.dataset.key, d.open);
  for (const d of all(to)) if (state.has(d.dataset.key)) d.open = state.get(d.dataset.key);
}

// ------------------------------------------------------------------------------------------- icons

const ICONS = {
  run: ["M13 2 3 14h9l-1 8 10-12h-9l1-8z"],
  sleep: ["M21 12.8A9 9 0 1 1 11.2 3 7 7 0 0 0 21 12.8z"],
  call: ["M7 17 17 7", "M8 7h9v9"],
  send: ["M22 2 11 13", "M22 2l-7 20-4-9-9-4 20-7z"],
  awakeable: ["M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9", "M13.7 21a2 2 0 0 1-3.4 0"],
  select: ["M6 3v12", "M18 3a3 3 0 1 1 0 6 3 3 0 0 1 0-6z", "M6 15a3 3 0 1 1 0 6 3 3 0 0 1 0-6z", "M18 9a9 9 0 0 1-9 9"],
  now: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M12 6v6l4 2"],
  cancel: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M4.9 4.9l14.2 14.2"],
  state: [
    "M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3-3.6 3-8 3-8-1.3-8-3z",
    "M4 6v12c0 1.7 3.6 3 8 3s8-1.3 8-3V6",
    "M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3",
  ],
  set_state: ["M12 20h9", "M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z"],
  clear_state: ["M3 6h18", "M8 6V4h8v2", "M19 6l-1 14H6L5 6"],
  promise: ["M12 2 22 12 12 22 2 12z"],
  complete_promise: ["M12 2 22 12 12 22 2 12z", "M8 12l3 3 5-6"],
  start: ["M7 4l13 8-13 8z"],
  created: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M12 8v8", "M8 12h8"],
  completed: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M8 12l3 3 5-6"],
  failed: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M15 9l-6 6", "M9 9l6 6"],
  retry: ["M1 4v6h6", "M3.5 15a9 9 0 1 0 2.1-9.4L1 10"],
  pause: ["M8 5v14", "M16 5v14"],
  suspend: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M10 9v6", "M14 9v6"],
  waiting: ["M12 2a10 10 0 1 1 0 20 10 10 0 0 1 0-20z", "M12 7v5l3 3"],
  link: ["M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7", "M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7"],
  copy: ["M9 9h11v11H9z", "M5 15H4V4h11v1"],
};

export function icon(name, label) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  for (const d of ICONS[name] ?? ICONS.now) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

// -------------------------------------------------------------------------------------------- JSON

/** Parsed JSON, coloured, as a list of spans (strings, numbers, keys, literals). */
function highlighted(text) {
  const out = [];
  const token = /("(?:\\.|[^"\\])*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  for (const m of text.matchAll(token)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) {
      out.push(h("span", { class: m[2] ? "j-key" : "j-str" }, m[1]));
      if (m[2]) out.push(m[2]);
    } else if (m[3] !== undefined) {
      out.push(h("span", { class: "j-num" }, m[3]));
    } else {
      out.push(h("span", { class: "j-lit" }, m[4]));
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

export function jsonText(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

/**
 * A labelled JSON value: inline when it is short, otherwise a collapsible block (open when `open`).
 * `key` names the block so that its open state survives refreshes.
 */
export function jsonBlock(label, value, key, { open = false, tone = "" } = {}) {
  if (value === undefined) return null;
  const compact = JSON.stringify(value);
  if (compact.length <= 72) {
    return h(
      "div",
      { class: ["json-inline", tone] },
      h("span", { class: "json-label" }, label),
      h("code", { class: "json" }, highlighted(compact)),
    );
  }
  const preview = compact.length > 90 ? `${compact.slice(0, 90)}…` : compact;
  return h(
    "details",
    { class: ["json-block", tone], "data-key": key, open },
    h("summary", {}, h("span", { class: "json-label" }, label), h("code", { class: "json preview" }, preview)),
    h("pre", { class: "json", tabindex: "0" }, highlighted(jsonText(value))),
  );
}

export function failureBox(failure, label = "Error") {
  if (!failure) return null;
  return h(
    "div",
    { class: "failure" },
    h("span", { class: "failure-label" }, label),
    failure.code !== undefined ? h("span", { class: "failure-code" }, String(failure.code)) : null,
    h("span", { class: "failure-message" }, failure.message ?? JSON.stringify(failure)),
  );
}

// -------------------------------------------------------------------------------------------- time

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** 2024-05-01 12:03:04 (local time); with `ms`, .123 too. */
export function fmtTime(ms, { date = true, millis = false } = {}) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const frac = millis ? `.${pad(d.getMilliseconds(), 3)}` : "";
  return date ? `${day} ${time}${frac}` : `${time}${frac}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const sign = ms < 0 ? "−" : "";
  ms = Math.abs(ms);
  if (ms < 1000) return `${sign}${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 10) return `${sign}${s.toFixed(2)} s`;
  if (s < 60) return `${sign}${s.toFixed(1)} s`;
  const whole = Math.round(s);
  const m = Math.floor(whole / 60);
  if (m < 60) return `${sign}${m} m ${pad(whole % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${sign}${hours} h ${pad(m % 60)} m`;
  return `${sign}${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function fmtAgo(ms, now = Date.now()) {
  const delta = now - ms;
  if (delta < 0) return `in ${fmtDuration(-delta)}`;
  if (delta < 1500) return "just now";
  return `${fmtDuration(delta).replace(/\.\d+ s$/, " s")} ago`;
}

/** A time shown relative to now ("3 s ago", "in 5 m"), kept current by `tickRelative`; absolute in its title. */
export function relTime(ms) {
  if (ms === null || ms === undefined) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: new Date(ms).toISOString(), title: fmtTime(ms, { millis: true }), "data-rel": ms }, fmtAgo(ms));
}

/** A duration still growing ("for 12 s"), kept current by `tickRelative`. */
export function liveDuration(sinceMs) {
  return h("span", { "data-since": sinceMs }, fmtDuration(Date.now() - sinceMs));
}

export function tickRelative(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("[data-rel]")) {
    const text = fmtAgo(Number(el.dataset.rel), now);
    if (el.textContent !== text) el.textContent = text;
  }
  for (const el of root.querySelectorAll("[data-since]")) {
    const text = fmtDuration(now - Number(el.dataset.since));
    if (el.textContent !== text) el.textContent = text;
  }
}

// ------------------------------------------------------------------------------------------ badges

export const STATUSES = [
  "scheduled",
  "queued",
  "pending",
  "running",
  "suspended",
  "backing_off",
  "paused",
  "completed",
  "failed",
];
export const ENDED = new Set(["completed", "failed"]);

export function statusBadge(status, failure) {
  const label = status.replace("_", " ");
  const badge = h("span", { class: "badge", "data-status": status }, h("span", { class: "dot", "aria-hidden": "true" }), label);
  const how = status === "failed" && failure && /^(cancelled|killed)$/.test(failure.message) ? failure.message : null;
  return how ? h("span", { class: "badges" }, badge, h("span", { class: "badge subtle", "data-how": how }, how)) : badge;
}

export function shortId(id) {
  return id && id.length > 14 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id;
}

export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button", class: "icon-button", title: `${label}: ${text}`, "aria-label": label }, icon("copy"));
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.classList.add("done");
      setTimeout(() => button.classList.remove("done"), 1200);
    } catch {
      window.prompt("Copy:", text);
    }
  });
  return button;
}
