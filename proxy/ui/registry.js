// Services (with their handlers and schemas) and deployments (with their endpoints).

import { api } from "./api.js";
import { fmtTime, h, jsonBlock, keyed, patch, relTime } from "./dom.js";
import { hashFor } from "./list.js";

const KIND_LABELS = { service: "service", virtual_object: "virtual object", workflow: "workflow" };

export function servicesView() {
  const list = h("div", { class: "stack", id: "services" });
  const summary = h("p", { class: "muted" }, "Loading…");
  const node = h(
    "section",
    { class: "page", "aria-labelledby": "services-title" },
    h("div", { class: "page-head" }, h("h1", { id: "services-title" }, "Services"), summary),
    list,
  );

  async function refresh() {
    const data = await api("/services");
    const services = [...(data.services ?? [])].sort((a, b) => a.name.localeCompare(b.name));
    summary.textContent = services.length
      ? `${services.length} service${services.length === 1 ? "" : "s"} registered`
      : "No services yet: register a deployment (durable-proxy register http://host:port).";
    patch(list, services.map(serviceCard));
    return { live: true };
  }
  return { node, refresh, title: "Services", pollMs: 10000 };
}

function serviceCard(service) {
  const rows = (service.handlers ?? []).map((handler) =>
    h(
      "tr",
      {},
      h("th", { scope: "row", class: "mono" }, handler.name),
      h("td", {}, handler.kind ? h("span", { class: "kind-chip" }, handler.kind) : h("span", { class: "muted" }, "—")),
      h(
        "td",
        { class: "schemas" },
        jsonBlock("input", handler.input_schema ?? undefined, `${service.name}/${handler.name}/in`) ??
          h("span", { class: "muted" }, "any input"),
        jsonBlock("output", handler.output_schema ?? undefined, `${service.name}/${handler.name}/out`),
      ),
      h(
        "td",
        { class: "num" },
        h("a", { href: hashFor({ service: service.name, handler: handler.name }) }, "invocations"),
      ),
    ),
  );
  const card = h(
    "article",
    { class: "card service", id: `service-${service.name}`, "aria-labelledby": `svc-${service.name}` },
    h(
      "div",
      { class: "card-head" },
      h("h2", { id: `svc-${service.name}` }, service.name),
      h("span", { class: "kind-chip strong" }, KIND_LABELS[service.kind] ?? service.kind),
      service.deployment_id ? h("a", { href: "#/deployments", class: "mono muted" }, service.deployment_id) : null,
      h("a", { href: hashFor({ service: service.name }), class: "push" }, "Invocations →"),
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "grid handlers" },
        h("caption", { class: "sr-only" }, `Handlers of ${service.name}`),
        h("thead", {}, h("tr", {}, ["Handler", "Kind", "Schemas", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows),
      ),
    ),
  );
  return keyed(card, service.name, service);
}

export function deploymentsView() {
  const list = h("div", { class: "stack", id: "deployments" });
  const summary = h("p", { class: "muted" }, "Loading…");
  const node = h(
    "section",
    { class: "page", "aria-labelledby": "deployments-title" },
    h("div", { class: "page-head" }, h("h1", { id: "deployments-title" }, "Deployments"), summary),
    list,
  );

  async function refresh() {
    const data = await api("/deployments");
    const deployments = [...(data.deployments ?? [])].sort((a, b) => b.created_at_ms - a.created_at_ms);
    summary.textContent = deployments.length
      ? `${deployments.length} deployment${deployments.length === 1 ? "" : "s"}`
      : "No deployments yet: durable-proxy register http://host:port adds one.";
    patch(list, deployments.map(deploymentCard));
    return { live: true };
  }
  return { node, refresh, title: "Deployments", pollMs: 10000 };
}

function deploymentCard(d) {
  const card = h(
    "article",
    { class: "card deployment", "aria-labelledby": `dep-${d.id}` },
    h(
      "div",
      { class: "card-head" },
      h("h2", { id: `dep-${d.id}`, class: "mono" }, d.id),
      h("span", { class: "muted" }, "registered ", relTime(d.created_at_ms), ` · ${fmtTime(d.created_at_ms)}`),
    ),
    h(
      "dl",
      { class: "facts" },
      h(
        "div",
        { class: "fact" },
        h("dt", {}, "Endpoints"),
        h("dd", {}, h("ul", { class: "plain" }, (d.endpoints ?? []).map((e) => h("li", { class: "mono endpoint" }, e)))),
      ),
      h(
        "div",
        { class: "fact" },
        h("dt", {}, "Services"),
        h(
          "dd",
          {},
          h(
            "ul",
            { class: "inline" },
            (d.services ?? []).map((s) => h("li", {}, h("a", { href: `#/services` }, s))),
          ),
        ),
      ),
    ),
  );
  return keyed(card, d.id, d);
}
