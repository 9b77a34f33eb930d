// One invocation: its header, actions (cancel, kill, resume, retry), and its journal as a timeline with
// the attempts between the entries. Refreshed in place every 2 s until it has ended.

import { ApiError, api } from "./api.js";
import {
  ENDED,
  copyButton,
  failureBox,
  fmtDuration,
  fmtTime,
  h,
  icon,
  jsonBlock,
  keyed,
  liveDuration,
  patch,
  relTime,
  statusBadge,
} from "./dom.js";
import { confirmAction, notify } from "./app-shared.js";

/** How each journal entry kind is shown: its icon and its label. */
const KINDS = {
  run: ["run", "step"],
  sleep: ["sleep", "sleep"],
  call: ["call", "call"],
  send: ["send", "send"],
  awakeable: ["awakeable", "awakeable"],
  select: ["select", "select"],
  now: ["now", "clock"],
  cancel: ["cancel", "cancelled"],
  get_state: ["state", "get state"],
  get_state_keys: ["state", "state keys"],
  set_state: ["set_state", "set state"],
  clear_state: ["clear_state", "clear state"],
  clear_all_state: ["clear_state", "clear all state"],
  get_promise: ["promise", "await promise"],
  peek_promise: ["promise", "peek promise"],
  complete_promise: ["complete_promise", "complete promise"],
};
const COMPLETABLE = new Set(["sleep", "call", "awakeable", "get_promise", "peek_promise", "complete_promise"]);

const ATTEMPT_OUTCOMES = {
  completed: ["completed", "completed", "ok"],
  failed: ["failed", "failed", "bad"],
  retry: ["retry", "failed, will retry", "warn"],
  paused: ["pause", "failed, paused (retries used up)", "warn"],
  suspended: ["suspend", "suspended", "quiet"],
  resumed: ["retry", "ended to resume at once", "quiet"],
  abandoned: ["failed", "abandoned (proxy restart or lost lease)", "warn"],
  killed: ["failed", "killed", "bad"],
};

/** The completion of a completable entry, in either of the admin API's shapes. */
function completionOf(entry) {
  if (entry.completion !== undefined) return entry.completion;
  if (entry.completed === false) return null;
  if (entry.completed === true) {
    return { result: entry.result, failure: entry.failure ?? undefined, completed_at_ms: entry.completed_at_ms };
  }
  return null;
}

const calleeIds = new Map();

/** The callee's id of the call or send at `index`: from the admin API, else derived as the proxy does. */
async function calleeId(invocationId, entry) {
  if (entry.callee_id) return entry.callee_id;
  const memo = `${invocationId}/${entry.index}`;
  if (calleeIds.has(memo)) return calleeIds.get(memo);
  if (!globalThis.crypto?.subtle) return null;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(memo)));
  let value = 0n;
  for (const byte of digest.slice(0, 17)) value = (value << 8n) | BigInt(byte);
  const alphabet = "0123456789abcdefghjkmnpqrstvwxyz";
  let id = "inv_";
  for (let i = 0; i < 26; i++) {
    id += alphabet[Number(value & 31n)];
    value >>= 5n;
  }
  calleeIds.set(memo, id);
  return id;
}

function invocationLink(id, text) {
  return h("a", { href: `#/invocations/${encodeURIComponent(id)}`, class: "mono" }, text ?? id);
}

function target(service, handler, key) {
  return h(
    "span",
    { class: "target-inline" },
    h("span", { class: "svc" }, service),
    h("span", { class: "sep" }, "/"),
    handler,
    key !== undefined && key !== null ? h("span", { class: "key-chip", title: "key" }, key) : null,
  );
}

export function invocationView(id) {
  const root = h("div", { class: "page invocation" });
  const crumbs = h(
    "nav",
    { class: "crumbs", "aria-label": "Breadcrumb" },
    h("a", { href: "#/invocations" }, "Invocations"),
    h("span", { "aria-hidden": "true" }, " / "),
    h("span", { class: "mono", "aria-current": "page" }, id),
  );
  const body = h("div", { class: "sections" });
  root.append(crumbs, body);
  // The timeline section stays; its list is patched entry by entry, so open results stay open.
  const timelineList = h("ol", { class: "timeline", id: "timeline" });
  const timelineSummary = h("span", { class: "muted" });
  const timelineSection = keyed(
    h(
      "section",
      { class: "card", "aria-labelledby": "timeline-title" },
      h("div", { class: "card-head" }, h("h2", { id: "timeline-title" }, "Timeline"), timelineSummary),
      timelineList,
    ),
    "timeline",
    "kept",
  );

  async function act(action, inv) {
    const texts = {
      cancel: [
        "Cancel this invocation?",
        "Its handler raises a cancellation at its next step, its compensations run, and the calls it awaits are cancelled too.",
        "Cancel invocation",
      ],
      kill: [
        "Kill this invocation?",
        "It ends now, failed, with the calls it awaits, and no compensation runs. This cannot be undone.",
        "Kill invocation",
      ],
      resume: ["Resume this invocation?", "It runs again with a fresh retry budget.", "Resume"],
      retry: [
        "Retry now?",
        "Its next attempt starts now instead of after the backoff. It counts against its retry policy as any other.",
        "Retry now",
      ],
    };
    const [title, text, ok] = texts[action];
    if (!(await confirmAction(title, `${text}\n\n${inv.service}/${inv.handler} · ${inv.id}`, ok, action === "kill" || action === "cancel"))) {
      return;
    }
    try {
      await api(`/invocations/${encodeURIComponent(inv.id)}/${action}`, { method: "POST" });
      notify(`${ok}: requested`);
    } catch (error) {
      notify(`${ok} failed: ${error.message}`, true);
    }
    document.dispatchEvent(new CustomEvent("refresh-now"));
  }

  async function refresh() {
    let inv;
    try {
      inv = await api(`/invocations/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        patch(body, [
          keyed(
            h("section", { class: "card" }, h("h1", {}, "Invocation not found"), h("p", {}, error.message)),
            "missing",
            "",
          ),
        ]);
        return { live: false };
      }
      throw error;
    }
    const journal = inv.journal ?? [];
    const entries = await Promise.all(
      journal.map(async (e) => ({ ...e, callee: e.kind === "call" || e.kind === "send" ? await calleeId(inv.id, e) : null })),
    );
    const { items, summary } = timelineEvents(inv, entries);
    patch(timelineList, items);
    timelineSummary.textContent = summary;
    patch(body, [header(inv), actions(inv), problems(inv), payloads(inv), timelineSection, attemptsTable(inv)].filter(Boolean));
    return { live: !ENDED.has(inv.status) };
  }

  function actions(inv) {
    const ended = ENDED.has(inv.status);
    const buttons = [];
    if (!ended) {
      buttons.push(
        h("button", { type: "button", class: "warn", "data-action": "cancel", onclick: () => act("cancel", inv), disabled: inv.cancel_requested }, "Cancel…"),
        h("button", { type: "button", class: "danger", "data-action": "kill", onclick: () => act("kill", inv) }, "Kill…"),
      );
    }
    if (inv.status === "paused") {
      buttons.push(h("button", { type: "button", class: "primary", "data-action": "resume", onclick: () => act("resume", inv) }, "Resume…"));
    }
    if (inv.status === "backing_off") {
      buttons.push(h("button", { type: "button", class: "primary", "data-action": "retry", onclick: () => act("retry", inv) }, "Retry now…"));
    }
    const note = inv.cancel_requested && !ended ? h("span", { class: "muted" }, "Cancellation requested: it ends at its next step.") : null;
    if (!buttons.length && !note) return null;
    return keyed(
      h("section", { class: "actions", "aria-label": "Actions" }, buttons, note),
      "actions",
      [inv.status, inv.cancel_requested, inv.id],
    );
  }

  return {
    node: root,
    refresh,
    title: `Invocation ${id}`,
  };
}

function fact(label, ...value) {
  return h("div", { class: "fact" }, h("dt", {}, label), h("dd", {}, ...value));
}

function header(inv) {
  const ended = ENDED.has(inv.status);
  const end = inv.completed_at_ms ?? null;
  const facts = [
    fact("Created", relTime(inv.created_at_ms), h("span", { class: "muted abs" }, fmtTime(inv.created_at_ms))),
    ended
      ? fact("Ended", relTime(end ?? inv.modified_at_ms), h("span", { class: "muted abs" }, fmtTime(end ?? inv.modified_at_ms)))
      : fact("Last change", relTime(inv.modified_at_ms)),
    fact(ended ? "Took" : "Running for", ended ? fmtDuration((end ?? inv.modified_at_ms) - inv.created_at_ms) : liveDuration(inv.created_at_ms)),
    fact("Attempts", String(inv.attempt ?? 0)),
    fact("Journal", `${inv.journal_length ?? (inv.journal ?? []).length} entries`),
  ];
  if (inv.next_run_at_ms && !ended) facts.push(fact("Next run", relTime(inv.next_run_at_ms)));
  if (inv.waiting_on?.length) facts.push(fact("Waiting on", inv.waiting_on.map((i) => `#${i}`).join(", ")));
  if (inv.parent_id) {
    facts.push(fact("Started by", invocationLink(inv.parent_id), inv.parent_index !== null && inv.parent_index !== undefined ? ` at #${inv.parent_index}` : ""));
  }
  if (inv.deployment_id) facts.push(fact("Deployment", h("a", { href: "#/deployments", class: "mono" }, inv.deployment_id)));
  if (inv.idempotency_key) facts.push(fact("Idempotency key", h("span", { class: "mono" }, inv.idempotency_key)));
  const section = h(
    "section",
    { class: "inv-header", "aria-labelledby": "inv-title" },
    h(
      "div",
      { class: "title-row" },
      h("h1", { id: "inv-title" }, target(inv.service, inv.handler, inv.key)),
      h("span", { id: "inv-status" }, statusBadge(inv.status, inv.failure)),
    ),
    h("p", { class: "id-line" }, h("span", { class: "mono" }, inv.id), copyButton(inv.id, "Copy invocation id")),
    h("dl", { class: "facts" }, facts),
  );
  const sig = { ...inv, journal: undefined, attempts: undefined, input: undefined, output: undefined };
  return keyed(section, "header", sig);
}

function problems(inv) {
  if (inv.failure) {
    return keyed(h("section", { class: "problem bad" }, failureBox(inv.failure, "Failed")), "problem", inv.failure);
  }
  if (inv.last_failure && inv.status !== "completed") {
    return keyed(
      h("section", { class: "problem warn" }, failureBox(inv.last_failure, `Last failure (attempt ${inv.attempt})`)),
      "problem",
      [inv.last_failure, inv.attempt],
    );
  }
  return null;
}

function payloads(inv) {
  const blocks = [jsonBlock("Input", inv.input, "input"), jsonBlock("Output", inv.output ?? undefined, "output", { open: true, tone: "ok" })];
  return keyed(h("section", { class: "payloads", "aria-label": "Input and output" }, blocks), "payloads", [inv.input, inv.output]);
}

// ---------------------------------------------------------------------------------------- timeline

/** The timeline's events, oldest first: creation, attempts' starts and ends, entries, and the end (or now). */
function timelineEvents(inv, entries) {
  const t0 = inv.created_at_ms;
  const ended = ENDED.has(inv.status);
  const events = [];
  events.push({ at: t0, attempt: 0, order: 0, node: () => createdEvent(inv) });
  for (const a of inv.attempts ?? []) {
    events.push({ at: a.started_at_ms, attempt: a.attempt, order: 1, node: () => attemptStart(a, t0), key: `a${a.attempt}s`, sig: a });
    if (a.ended_at_ms !== null && a.ended_at_ms !== undefined) {
      events.push({ at: a.ended_at_ms, attempt: a.attempt, order: 3, node: () => attemptEnd(a, t0), key: `a${a.attempt}e`, sig: a });
    }
  }
  entries.forEach((e, i) => {
    const next = entries[i + 1]?.created_at_ms ?? (ended ? (inv.completed_at_ms ?? null) : null);
    const waiting = inv.status === "suspended" && (inv.waiting_on ?? []).includes(e.index);
    events.push({
      at: e.created_at_ms,
      attempt: e.attempt,
      order: 2,
      index: e.index,
      node: () => entryEvent(inv, e, t0, next, waiting),
      key: `e${e.index}`,
      sig: [e, next, waiting, inv.status],
    });
  });
  events.sort((x, y) => x.at - y.at || x.attempt - y.attempt || x.order - y.order || (x.index ?? 0) - (y.index ?? 0));
  events.push({ node: () => finalEvent(inv, t0), key: "end", sig: [inv.status, inv.completed_at_ms, inv.failure, inv.next_run_at_ms, inv.output] });

  const items = events.map((ev) => keyed(ev.node(), ev.key ?? "created", ev.sig ?? [inv.created_at_ms, inv.input]));
  const attempts = (inv.attempts ?? []).length;
  return {
    items,
    summary: `${entries.length} journal entr${entries.length === 1 ? "y" : "ies"}, ${attempts} attempt${attempts === 1 ? "" : "s"}`,
  };
}

function offset(ms, t0) {
  return h("span", { class: "offset", title: fmtTime(ms, { millis: true }) }, `+${fmtDuration(ms - t0)}`);
}

function eventItem(kind, iconName, { tone = "", label, title, meta = [], details = [], times = [] }) {
  return h(
    "li",
    { class: ["ev", `ev-${kind}`, tone && `tone-${tone}`] },
    h("span", { class: "ev-icon" }, icon(iconName)),
    h(
      "div",
      { class: "ev-body" },
      h("div", { class: "ev-line" }, h("span", { class: "ev-kind" }, label), title ? h("span", { class: "ev-name" }, title) : null, meta),
      details.filter(Boolean).length ? h("div", { class: "ev-details" }, details) : null,
    ),
    h("div", { class: "ev-time" }, times),
  );
}

function createdEvent(inv) {
  return eventItem("created", "created", {
    label: "created",
    title: null,
    meta: [h("span", { class: "muted" }, fmtTime(inv.created_at_ms, { millis: true }))],
    details: [],
    times: [h("span", { class: "offset" }, "+0 ms")],
  });
}

function attemptStart(a, t0) {
  return eventItem("attempt", "start", {
    tone: "quiet",
    label: `attempt ${a.attempt}`,
    title: null,
    meta: [h("span", { class: "muted" }, "started"), a.endpoint ? h("span", { class: "mono muted endpoint" }, a.endpoint) : null],
    times: [offset(a.started_at_ms, t0)],
  });
}

function attemptEnd(a, t0) {
  const [iconName, text, tone] = ATTEMPT_OUTCOMES[a.outcome] ?? ["waiting", a.outcome ?? "ended", "quiet"];
  return eventItem("attempt-end", iconName, {
    tone,
    label: `attempt ${a.attempt}`,
    title: null,
    meta: [h("span", { class: ["outcome", `tone-${tone}`] }, text), h("span", { class: "muted" }, `after ${fmtDuration(a.ended_at_ms - a.started_at_ms)}`)],
    details: [failureBox(a.failure)],
    times: [offset(a.ended_at_ms, t0)],
  });
}

function finalEvent(inv, t0) {
  if (inv.status === "completed") {
    return eventItem("end", "completed", {
      tone: "ok",
      label: "completed",
      times: [offset(inv.completed_at_ms ?? inv.modified_at_ms, t0)],
    });
  }
  if (inv.status === "failed") {
    return eventItem("end", "failed", {
      tone: "bad",
      label: "failed",
      title: inv.failure?.message,
      times: [offset(inv.completed_at_ms ?? inv.modified_at_ms, t0)],
    });
  }
  const now = {
    running: "running now",
    suspended: "suspended: waiting for a completion",
    backing_off: "backing off before the next attempt",
    paused: "paused: its retries ran out; resume it to try again",
    scheduled: "scheduled to start",
    queued: "queued behind the invocation holding its key",
    pending: "about to run",
  }[inv.status];
  return eventItem("now", "waiting", {
    tone: "live",
    label: "now",
    title: now ?? inv.status,
    meta: inv.next_run_at_ms ? [h("span", { class: "muted" }, "next run "), relTime(inv.next_run_at_ms)] : [],
    times: [h("span", { class: "offset" }, "+", liveDuration(t0))],
  });
}

function entryEvent(inv, e, t0, nextAt, waiting) {
  const [iconName, label] = KINDS[e.kind] ?? ["now", e.kind];
  const entry = e.entry ?? {};
  const completion = COMPLETABLE.has(e.kind) ? completionOf(e) : undefined;
  const meta = [h("span", { class: "idx" }, `#${e.index}`), h("span", { class: "att", title: "the attempt that wrote it" }, `attempt ${e.attempt}`)];
  const details = [];
  let tone = "";
  const key = (name) => `e${e.index}-${name}`;

  switch (e.kind) {
    case "run":
      if (entry.failure) {
        details.push(failureBox(entry.failure));
        tone = "bad";
      } else {
        details.push(jsonBlock("result", entry.result ?? null, key("result")));
      }
      break;
    case "sleep": {
      const wake = entry.wake_at_ms;
      details.push(
        h(
          "div",
          { class: "ev-fact" },
          `sleeps ${fmtDuration(wake - e.created_at_ms)}, until `,
          h("time", { datetime: new Date(wake).toISOString() }, fmtTime(wake, { millis: true })),
          completion ? null : [" (", relTime(wake), ")"],
        ),
      );
      break;
    }
    case "call":
    case "send": {
      const callee = target(entry.service, entry.handler, entry.key);
      details.push(
        h(
          "div",
          { class: "ev-fact" },
          e.kind === "call" ? "calls " : "sends to ",
          e.callee ? h("a", { href: `#/invocations/${encodeURIComponent(e.callee)}`, class: "callee", "data-callee": e.callee }, callee) : callee,
          entry.delay_ms ? h("span", { class: "muted" }, `, delayed ${fmtDuration(entry.delay_ms)}`) : null,
        ),
      );
      details.push(jsonBlock("input", entry.input, key("input")));
      break;
    }
    case "awakeable": {
      const awk = e.awakeable_id ?? `awk_${inv.id.replace(/^inv_/, "")}_${e.index}`;
      details.push(h("div", { class: "ev-fact" }, "id ", h("span", { class: "mono" }, awk), copyButton(awk, "Copy awakeable id")));
      break;
    }
    case "select":
      details.push(h("div", { class: "ev-fact" }, `winner: #${entry.winner}`));
      break;
    case "now":
      details.push(h("div", { class: "ev-fact" }, `read ${fmtTime(entry.now_ms, { millis: true })}`));
      break;
    case "cancel":
      tone = "warn";
      details.push(
        h("div", { class: "ev-fact" }, entry.awaiting ? `while awaiting ${entry.awaiting.map((i) => `#${i}`).join(", ")}` : "instead of its next step"),
      );
      break;
    case "get_state":
      details.push(entry.found ? jsonBlock("value", entry.value ?? null, key("value")) : h("div", { class: "ev-fact muted" }, "not set"));
      break;
    case "get_state_keys":
      details.push(jsonBlock("keys", entry.keys ?? [], key("keys")));
      break;
    case "set_state":
      details.push(jsonBlock("value", entry.value ?? null, key("value")));
      break;
    case "complete_promise":
      details.push(entry.failure ? failureBox(entry.failure, "reject") : jsonBlock("resolve", entry.value ?? null, key("value")));
      break;
    default:
      break;
  }

  if (COMPLETABLE.has(e.kind)) {
    if (completion) {
      const doneAt = completion.completed_at_ms ?? e.completed_at_ms;
      if (completion.failure) {
        details.push(failureBox(completion.failure, e.kind === "call" ? "callee failed" : "failed"));
        tone = "bad";
      } else if (e.kind !== "sleep") {
        details.push(jsonBlock(e.kind === "call" ? "result" : "completion", completion.result ?? null, key("completion")));
      }
      if (doneAt) meta.push(h("span", { class: "done", title: fmtTime(doneAt, { millis: true }) }, `done after ${fmtDuration(doneAt - e.created_at_ms)}`));
    } else if (ENDED.has(inv.status)) {
      meta.push(h("span", { class: "muted" }, "never completed"));
    } else {
      meta.push(h("span", { class: ["pending", waiting && "waiting"] }, waiting ? "waiting…" : "not completed yet"));
      if (!tone) tone = "live";
    }
  }

  const times = [offset(e.created_at_ms, t0)];
  if (nextAt !== null && nextAt !== undefined) {
    times.push(h("span", { class: "delta", title: "time until the next entry" }, `Δ ${fmtDuration(nextAt - e.created_at_ms)}`));
  }
  const item = eventItem(`entry kind-${e.kind}`, iconName, { tone, label, title: e.name || null, meta, details, times });
  item.dataset.kind = e.kind;
  item.dataset.index = e.index;
  item.id = `entry-${e.index}`;
  return item;
}

// ---------------------------------------------------------------------------------------- attempts

function attemptsTable(inv) {
  const attempts = inv.attempts ?? [];
  if (!attempts.length) return null;
  const rows = attempts.map((a) => {
    const [, text, tone] = ATTEMPT_OUTCOMES[a.outcome] ?? ["", a.outcome ?? "running", "live"];
    return h(
      "tr",
      {},
      h("td", { class: "num" }, String(a.attempt)),
      h("td", { class: "mono endpoint" }, a.endpoint ?? "—"),
      h("td", {}, h("span", { title: fmtTime(a.started_at_ms, { millis: true }) }, fmtTime(a.started_at_ms, { date: false, millis: true }))),
      h("td", { class: "num" }, a.ended_at_ms ? fmtDuration(a.ended_at_ms - a.started_at_ms) : liveDuration(a.started_at_ms)),
      h("td", {}, h("span", { class: ["outcome", `tone-${tone}`] }, text)),
      h("td", {}, a.failure ? h("span", { class: "failure-message" }, `${a.failure.code} ${a.failure.message}`) : ""),
    );
  });
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "attempts-title" },
    h("div", { class: "card-head" }, h("h2", { id: "attempts-title" }, "Attempts")),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "grid attempts" },
        h("caption", { class: "sr-only" }, "Attempts of this invocation"),
        h("thead", {}, h("tr", {}, ["#", "Endpoint", "Started", "Took", "Outcome", "Error"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
    ),
  );
  return keyed(section, "attempts", attempts);
}
