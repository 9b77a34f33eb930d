// The invocation list: filters (kept in the URL's hash, so a filtered list can be bookmarked), one page at
// a time (the admin API's cursor), refreshed in place every 2 s while the tab is visible.

import { api } from "./api.js";
import {
  ENDED,
  STATUSES,
  fmtDuration,
  h,
  keyed,
  liveDuration,
  patch,
  relTime,
  shortId,
  statusBadge,
} from "./dom.js";

const PAGE_SIZE = 50;
const RANGES = [
  ["", "Any time"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["custom", "Custom range…"],
];
const RANGE_MS = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };

export function hashFor(filters) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
  const text = query.toString();
  return text ? `#/invocations?${text}` : "#/invocations";
}

/** The admin API's query parameters for the filters (time presets are relative to now). */
function apiParams(f) {
  const params = { limit: PAGE_SIZE, status: f.status, service: f.service, handler: f.handler, key: f.key };
  if (f.range && f.range !== "custom") params.created_after_ms = Date.now() - RANGE_MS[f.range];
  if (f.range === "custom") {
    if (f.after) params.created_after_ms = new Date(f.after).getTime();
    if (f.before) params.created_before_ms = new Date(f.before).getTime();
  }
  params.cursor = f.cursor;
  return params;
}

const FILTERS = ["status", "service", "handler", "key", "range", "after", "before", "cursor", "back"];

function readFilters(query) {
  return Object.fromEntries(FILTERS.map((name) => [name, query.get(name) ?? ""]));
}

export function listView(query) {
  // `back`: the cursors of the pages before this one ("-" for the first), so that "Newer" goes back.
  const filters = readFilters(query);
  const go = (changes) => {
    location.hash = hashFor({ ...filters, ...changes });
  };
  const applyFilters = (changes) => go({ ...changes, cursor: "", back: "" });
  const backs = () => filters.back.split("~").filter(Boolean);

  // ------------------------------------------------------------------------------------- filters
  const statusSummary = h("span", {});
  const statusBoxes = STATUSES.map((status) =>
    h(
      "label",
      { class: "check" },
      h("input", {
        type: "checkbox",
        name: "status",
        value: status,
        onchange: () => {
          const picked = statusBoxes.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
          applyFilters({ status: picked.join(",") });
        },
      }),
      h("span", { class: "badge", "data-status": status }, h("span", { class: "dot", "aria-hidden": "true" }), status.replace("_", " ")),
    ),
  );
  const statusPicker = h(
    "details",
    { class: "dropdown", id: "status-filter" },
    h("summary", { id: "status-summary", "aria-labelledby": "status-label status-summary" }, statusSummary),
    h(
      "fieldset",
      { class: "dropdown-panel" },
      h("legend", { class: "sr-only" }, "Statuses to show"),
      statusBoxes,
      h(
        "div",
        { class: "row-actions" },
        h("button", { type: "button", onclick: () => applyFilters({ status: "" }) }, "Any status"),
        h("button", { type: "button", onclick: () => applyFilters({ status: "scheduled,queued,pending,running,suspended,backing_off,paused" }) }, "Active"),
      ),
    ),
  );

  // The status menu closes on Escape and on a click elsewhere, as a menu does.
  statusPicker.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && statusPicker.open) {
      statusPicker.open = false;
      statusPicker.querySelector("summary").focus();
    }
  });
  const closeStatusPicker = (event) => {
    if (statusPicker.open && !statusPicker.contains(event.target)) statusPicker.open = false;
  };
  document.addEventListener("click", closeStatusPicker);

  const serviceSelect = h("select", { id: "f-service", name: "service" }, h("option", { value: "" }, "Any service"));
  const handlerSelect = h("select", { id: "f-handler", name: "handler" }, h("option", { value: "" }, "Any handler"));
  serviceSelect.addEventListener("change", () => applyFilters({ service: serviceSelect.value, handler: "" }));
  handlerSelect.addEventListener("change", () => applyFilters({ handler: handlerSelect.value }));
  const keyInput = h("input", { id: "f-key", name: "key", type: "search", placeholder: "any", size: 14 });
  const rangeSelect = h(
    "select",
    {
      id: "f-range",
      name: "range",
      onchange: () => {
        const range = rangeSelect.value;
        applyFilters(range === "custom" ? { range } : { range, after: "", before: "" });
      },
    },
    RANGES.map(([value, label]) => h("option", { value }, label)),
  );
  const afterInput = h("input", { id: "f-after", name: "after", type: "datetime-local", step: 1 });
  const beforeInput = h("input", { id: "f-before", name: "before", type: "datetime-local", step: 1 });
  const custom = h(
    "div",
    { class: "field-group" },
    h("div", { class: "field" }, h("label", { for: "f-after" }, "From"), afterInput),
    h("div", { class: "field" }, h("label", { for: "f-before" }, "To"), beforeInput),
  );
  afterInput.addEventListener("change", () => applyFilters({ after: afterInput.value }));
  beforeInput.addEventListener("change", () => applyFilters({ before: beforeInput.value }));

  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      "aria-label": "Filter invocations",
      onsubmit: (event) => {
        event.preventDefault();
        applyFilters({ key: keyInput.value.trim() });
      },
    },
    h("div", { class: "field" }, h("span", { class: "label", id: "status-label" }, "Status"), statusPicker),
    h("div", { class: "field" }, h("label", { for: "f-service" }, "Service"), serviceSelect),
    h("div", { class: "field" }, h("label", { for: "f-handler" }, "Handler"), handlerSelect),
    h("div", { class: "field" }, h("label", { for: "f-key" }, "Key"), keyInput),
    h("div", { class: "field" }, h("label", { for: "f-range" }, "Created"), rangeSelect),
    custom,
    h(
      "div",
      { class: "field buttons" },
      h("button", { type: "submit", class: "primary" }, "Apply"),
      h("button", { type: "button", onclick: () => (location.hash = "#/invocations") }, "Clear"),
    ),
  );
  keyInput.addEventListener("change", () => {
    if (keyInput.value.trim() !== filters.key) applyFilters({ key: keyInput.value.trim() });
  });

  // The service and handler choices come from the registry (fetched once; without it, only the chosen ones).
  let services = [];
  api("/services")
    .then((data) => {
      services = data.services ?? [];
      syncChoices();
    })
    .catch(() => {});

  function options(select, anyLabel, names, value) {
    const wanted = [...new Set([...names, ...(value ? [value] : [])])].sort();
    const current = [...select.options].map((o) => o.value).join("\n");
    if (current !== ["", ...wanted].join("\n")) {
      select.replaceChildren(h("option", { value: "" }, anyLabel), ...wanted.map((name) => h("option", { value: name }, name)));
    }
    select.value = value;
  }

  /** The service and handler choices: the registered ones (the handlers of the chosen service). */
  function syncChoices() {
    options(serviceSelect, "Any service", services.map((svc) => svc.name), filters.service);
    const handlers = services
      .filter((svc) => !filters.service || svc.name === filters.service)
      .flatMap((svc) => (svc.handlers ?? []).map((handler) => handler.name));
    options(handlerSelect, "Any handler", handlers, filters.handler);
  }

  /** Make the form show `filters` (after a hash change: back button, a link, or its own change). */
  function syncForm() {
    const chosen = new Set(filters.status.split(",").filter(Boolean));
    for (const label of statusBoxes) label.firstChild.checked = chosen.has(label.firstChild.value);
    statusSummary.textContent = chosen.size ? [...chosen].map((name) => name.replace("_", " ")).join(", ") : "any";
    syncChoices();
    keyInput.value = filters.key;
    rangeSelect.value = filters.range;
    afterInput.value = filters.after;
    beforeInput.value = filters.before;
    custom.hidden = filters.range !== "custom";
    newer.disabled = !filters.cursor;
  }

  // --------------------------------------------------------------------------------------- table
  const tbody = h("tbody", { id: "invocation-rows" });
  const table = h(
    "table",
    { class: "grid invocations", "aria-describedby": "list-summary" },
    h("caption", { class: "sr-only" }, "Invocations, most recent first"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        [
          ["Status"],
          ["Invocation"],
          ["Key"],
          ["ID"],
          ["Attempts", "num"],
          ["Entries", "num"],
          ["Created"],
          ["Duration", "num"],
        ].map(([title, cls]) => h("th", { scope: "col", class: cls }, title)),
      ),
    ),
    tbody,
  );
  const empty = h("p", { class: "empty", hidden: true });
  const summary = h("p", { id: "list-summary", class: "muted" }, "Loading…");
  const newer = h("button", { type: "button" }, "← Newer");
  const older = h("button", { type: "button", disabled: true }, "Older →");
  let nextCursor = null;
  newer.addEventListener("click", () => {
    const back = backs();
    go({ cursor: back.at(-1) === "-" ? "" : (back.at(-1) ?? ""), back: back.slice(0, -1).join("~") });
  });
  older.addEventListener("click", () => {
    if (nextCursor) go({ cursor: nextCursor, back: [...backs(), filters.cursor || "-"].join("~") });
  });
  // Rows are links for the pointer too: a click anywhere on a row opens it (not when selecting text).
  tbody.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (!row || event.target.closest("a, button") || String(window.getSelection() ?? "")) return;
    location.hash = `#/invocations/${encodeURIComponent(row.dataset.id)}`;
  });

  const node = h(
    "section",
    { class: "page", "aria-labelledby": "list-title" },
    h("div", { class: "page-head" }, h("h1", { id: "list-title" }, "Invocations")),
    form,
    h("div", { class: "table-wrap" }, table),
    empty,
    h("nav", { class: "pager", "aria-label": "Pages" }, summary, h("div", { class: "row-actions" }, newer, older)),
  );

  async function refresh() {
    const data = await api("/invocations", { params: apiParams(filters) });
    const rows = data.invocations ?? [];
    nextCursor = data.next_cursor ?? null;
    older.disabled = !nextCursor;
    patch(tbody, rows.map(row));
    const filtered = Object.entries(filters).some(([name, value]) => value && name !== "cursor" && name !== "back");
    empty.hidden = rows.length > 0;
    empty.textContent = filtered
      ? "No invocations match these filters."
      : "No invocations yet. Send a request to the proxy's ingress and it shows up here.";
    table.hidden = rows.length === 0;
    const page = backs().length + 1;
    summary.textContent = `${rows.length} invocation${rows.length === 1 ? "" : "s"}${page > 1 || nextCursor ? `, page ${page}` : ""}`;
    return { live: true };
  }

  /** A new hash for this same view: take its filters without rebuilding the form (focus stays). */
  function update(next) {
    Object.assign(filters, readFilters(next));
    syncForm();
  }

  syncForm();
  const dispose = () => document.removeEventListener("click", closeStatusPicker);
  return { node, refresh, update, dispose, title: "Invocations" };
}

function row(inv) {
  const href = `#/invocations/${encodeURIComponent(inv.id)}`;
  const ended = ENDED.has(inv.status);
  const problem = inv.status !== "completed" ? (inv.failure ?? inv.last_failure) : null;
  const tr = h(
    "tr",
    { "data-id": inv.id, "data-status": inv.status, class: "clickable" },
    h("td", {}, statusBadge(inv.status, inv.failure)),
    h(
      "td",
      { class: "target" },
      h("a", { href }, h("span", { class: "svc" }, inv.service), h("span", { class: "sep" }, "/"), inv.handler),
      problem ? h("div", { class: "row-error", title: problem.message }, `${problem.code} ${problem.message}`) : null,
    ),
    h("td", { class: "mono key" }, inv.key ?? h("span", { class: "muted" }, "—")),
    h("td", { class: "mono", title: inv.id }, shortId(inv.id)),
    h("td", { class: "num" }, String(inv.attempt ?? 0)),
    h("td", { class: "num" }, String(inv.journal_length ?? 0)),
    h("td", {}, relTime(inv.created_at_ms)),
    h(
      "td",
      { class: "num" },
      ended ? fmtDuration((inv.completed_at_ms ?? inv.modified_at_ms) - inv.created_at_ms) : liveDuration(inv.created_at_ms),
    ),
  );
  const sig = [inv.status, inv.attempt, inv.journal_length, inv.completed_at_ms, inv.failure, inv.last_failure, inv.key];
  return keyed(tr, inv.id, sig);
}
