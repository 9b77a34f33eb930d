// durable-proxy's web UI: hash routes, and the live loop that refreshes the current view every 2 s while
// the tab is visible (and stops for an invocation that has ended).
//
//   #/invocations?status=&service=&handler=&key=&range=&cursor=   the list
//   #/invocations/{id}                                            one invocation and its timeline
//   #/services, #/deployments                                     the registry

import { ApiError, forgetToken, retryToken, token } from "./api.js";
import { fmtTime, h, tickRelative } from "./dom.js";
import { invocationView } from "./invocation.js";
import { listView } from "./list.js";
import { deploymentsView, servicesView } from "./registry.js";

const POLL_MS = 2000;
const main = document.getElementById("view");
const liveLine = document.getElementById("live");
const banner = document.getElementById("banner");

/** The view on screen: {route, node, refresh, update?, dispose?, title, pollMs?}, plus the loop's bookkeeping. */
let current = null;
let timer = null;

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/invocations";
  const [path, queryText = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(queryText) };
}

function routeKey(parts) {
  if (parts[0] === "invocations" && parts[1]) return `invocation:${parts[1]}`;
  if (parts[0] === "services" || parts[0] === "deployments") return parts[0];
  return "invocations";
}

function build(parts, query) {
  if (parts[0] === "invocations" && parts[1]) return invocationView(parts[1]);
  if (parts[0] === "services") return servicesView();
  if (parts[0] === "deployments") return deploymentsView();
  return listView(query);
}

function onRoute() {
  const { parts, query } = parseHash();
  const key = routeKey(parts);
  if (current && current.route === key && current.update) {
    current.update(query);
    current.live = true;
    schedule(0);
    return;
  }
  current?.dispose?.();
  const view = build(parts, query);
  current = { ...view, route: key, live: true, inFlight: false };
  main.replaceChildren(view.node);
  document.title = `${view.title} · durable-proxy`;
  const section = key.startsWith("invocation") ? "invocations" : key;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  hideBanner();
  schedule(0);
}

function schedule(delayMs) {
  clearTimeout(timer);
  timer = setTimeout(tick, delayMs);
}

async function tick() {
  const view = current;
  if (!view) return;
  if (document.hidden) {
    showLive("paused", "Paused while the tab is hidden");
    return; // the visibilitychange handler starts the loop again
  }
  if (view.inFlight) {
    schedule(POLL_MS);
    return;
  }
  view.inFlight = true;
  let failed = false;
  try {
    const result = await view.refresh();
    if (view !== current) return;
    view.live = result.live;
    hideBanner();
    const at = fmtTime(Date.now(), { date: false });
    if (result.live) showLive("live", `Live · updated ${at}`);
    else showLive("ended", `Ended · not refreshing (updated ${at})`);
  } catch (error) {
    failed = true;
    if (view === current) {
      showError(error);
      showLive("error", "Not updating · retrying");
    }
  } finally {
    view.inFlight = false;
    if (view === current && (view.live || failed) && !document.hidden) schedule(view.pollMs ?? POLL_MS);
  }
}

function showLive(state, text) {
  liveLine.dataset.state = state;
  liveLine.textContent = text;
}

function hideBanner() {
  banner.hidden = true;
  banner.replaceChildren();
}

function showError(error) {
  const parts = [];
  if (error instanceof ApiError && error.status === 401) {
    parts.push(
      h("span", {}, "The admin API needs a token. "),
      h("button", { type: "button", class: "primary", onclick: () => retryToken().then((ok) => ok && schedule(0)) }, "Enter token"),
    );
  } else if (error instanceof ApiError && error.code === "unreachable") {
    parts.push(h("span", {}, `${error.message}. Retrying every ${POLL_MS / 1000} s.`));
  } else {
    const code = error instanceof ApiError ? `${error.status} ${error.code}: ` : "";
    parts.push(h("span", {}, `${code}${error.message}`));
  }
  banner.replaceChildren(...parts);
  banner.hidden = false;
}

// A "Forget token" button while a token is kept, so that another one can be entered.
const forget = h("button", { type: "button", class: "link-button", id: "token-forget", hidden: !token() }, "Forget token");
forget.addEventListener("click", () => {
  forgetToken();
  schedule(0);
});
document.querySelector(".topbar").append(forget);
document.addEventListener("token-changed", () => {
  forget.hidden = !token();
});

document.addEventListener("refresh-now", () => {
  if (current) current.live = true;
  schedule(0);
});
document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    clearTimeout(timer);
    showLive("paused", "Paused while the tab is hidden");
  } else if (current && current.live) {
    schedule(0);
  }
});
window.addEventListener("hashchange", onRoute);
setInterval(() => {
  if (!document.hidden) tickRelative(main);
}, 1000);

onRoute();
