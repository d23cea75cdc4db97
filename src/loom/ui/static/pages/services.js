// Services: name, kind, health (passing/warning/critical check counts), instances, tags,
// datacenter; search by name or tag, filter by health, sidecars hidden unless asked for.
// Follows /v1/catalog/services (its index moves with any catalog or health change). With a
// metrics provider, a Traffic column: each service's inbound request rate, errors and p99.

import { watch } from "../api.js";
import { badge, h, replace, table } from "../dom.js";
import { describe, pollMetrics } from "../metrics.js";
import { isProxy, loadServices, sidecarsOf } from "../model.js";

export default async function services(el, { signal, onError }) {
  const search = h("input", { id: "service-search", type: "search", placeholder: "Search by name or tag" });
  const status = h("select", { id: "service-status", "aria-label": "health" },
    ["all", "passing", "warning", "critical"].map((s) => h("option", { value: s }, s)));
  const proxies = h("input", { id: "show-proxies", type: "checkbox" });
  const body = h("div", { id: "services" }, h("p", { class: "muted" }, "Loading services…"));
  el.append(
    h("h1", {}, "Services"),
    h("div", { class: "toolbar" }, search, status, h("label", {}, proxies, " show sidecar proxies")),
    body);
  let all = [];
  let metrics = null;
  const draw = () => {
    const text = search.value.trim().toLowerCase();
    const shown = all.filter((s) => (proxies.checked || !isProxy(s))
      && (status.value === "all" || s.status === status.value)
      && (!text || s.name.toLowerCase().includes(text) || s.tags.some((t) => t.toLowerCase().includes(text))));
    if (!shown.length) {
      replace(body, h("p", { class: "muted empty" }, all.length ? "No service matches." : "No services registered."));
      return;
    }
    const traffic = (s) => (metrics && !isProxy(s)
      ? h("td", { class: "traffic", "data-rate": String(metrics.Services[s.name]?.RequestRate ?? 0) },
        describe(metrics.Services[s.name]))
      : null);
    const heads = ["Service", "Kind", "Health", "Instances", "Mesh", "Tags", "Datacenter"];
    replace(body, table(metrics ? [...heads, "Traffic"] : heads,
      shown.map((s) => h("tr", { "data-service": s.name, class: `status-${s.status}` },
        h("td", {}, h("a", { href: `#/service/${encodeURIComponent(s.name)}` }, s.name)),
        h("td", {}, s.kind || "service"),
        h("td", { class: "health" },
          badge(`${s.counts.passing} passing`, s.counts.passing ? "passing" : "none"),
          badge(`${s.counts.warning} warning`, s.counts.warning ? "warning" : "none"),
          badge(`${s.counts.critical} critical`, s.counts.critical ? "critical" : "none")),
        h("td", { class: "instances" }, String(s.instances)),
        h("td", {}, isProxy(s) ? "" : sidecarsOf(all, s.name).length ? "in mesh" : ""),
        h("td", {}, s.tags.map((t) => badge(t, "tag"))),
        h("td", {}, s.datacenter),
        traffic(s) || (metrics ? h("td", {}) : null))),
      { id: "services-table" }));
  };
  for (const input of [search, status, proxies]) input.addEventListener("input", draw);
  pollMetrics(signal, (doc) => { metrics = doc; if (all.length) draw(); });
  await watch("/v1/catalog/services", signal, async (catalog) => {
    all = await loadServices(catalog, signal);
    onError(null);
    draw();
  }, onError);
}
