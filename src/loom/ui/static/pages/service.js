// One service: instances with their checks and outputs, its sidecars, upstreams and
// downstreams, the intentions that apply to it, its config entries, DNS names and VIPs.

import { get, q, watchMany } from "../api.js";
import { badge, h, replace, table } from "../dom.js";
import { intentionLabel, loadServices, sidecarsOf, upstreamEdges } from "../model.js";

const ENTRY_KINDS = ["service-defaults", "service-intentions", "service-resolver", "external-service"];

export default async function service(el, { signal, arg: name, onError }) {
  const body = h("div", { id: "service-detail" }, h("p", { class: "muted" }, "Loading…"));
  el.append(h("p", {}, h("a", { href: "#/services" }, "← Services")),
    h("h1", {}, name), body);
  await watchMany(["/v1/catalog/services", "/v1/connect/intentions"], signal, async ([catalog]) => {
    const all = await loadServices(catalog, signal);
    const [inbound, outbound, entries] = await Promise.all([
      get(`/v1/connect/intentions/match?${q({ by: "destination", name })}`, signal).catch(() => ({})),
      get(`/v1/connect/intentions/match?${q({ by: "source", name })}`, signal).catch(() => ({})),
      Promise.all(ENTRY_KINDS.map((kind) => get(`/v1/config/${kind}/${encodeURIComponent(name)}`, signal)
        .catch(() => null))),
    ]);
    onError(null);
    const flat = (m) => Object.values(m || {}).flat();
    replace(body, ...sections(name, all, flat(inbound), flat(outbound), entries.filter(Boolean)));
  }, onError);
}

function sections(name, all, inbound, outbound, entries) {
  const svc = all.find((s) => s.name === name);
  if (!svc) return [h("p", { class: "muted empty" }, `No instance of ${name} is registered.`)];
  const sidecars = sidecarsOf(all, name);
  const edges = upstreamEdges(all);
  const ns = svc.namespace;
  const dns = [`${name}.service.consul`, `${name}.service.${svc.datacenter}.consul`];
  if (ns !== "default") dns.push(`${name}.service.${ns}.ns.consul`);
  if (sidecars.length) dns.push(`${name}.virtual.consul`);
  const vips = new Set();
  for (const e of svc.entries) {
    for (const [tag, t] of Object.entries(e.Service.TaggedAddresses || {})) {
      if (tag.includes("virtual")) vips.add(`${t.Address} (${tag})`);
    }
  }
  return [
    h("section", {}, h("h2", {}, `Instances (${svc.instances})`), table(
      ["ID", "Node", "Address", "Checks"],
      svc.entries.map((e) => h("tr", { "data-instance": e.Service.ID },
        h("td", {}, e.Service.ID),
        h("td", {}, e.Node.Node),
        h("td", {}, `${e.Service.Address || e.Node.Address}:${e.Service.Port}`),
        h("td", {}, (e.Checks || []).length ? h("ul", { class: "checks" }, e.Checks.map((c) =>
          h("li", {}, badge(c.Status), " ", c.Name || c.CheckID,
            c.Output ? h("pre", { class: "output" }, c.Output) : null))) : "no checks"))))),
    h("section", {}, h("h2", {}, "Sidecar"), sidecars.length
      ? table(["Proxy", "Mode", "Port", "Health"], sidecars.flatMap((s) => s.entries.map((e) =>
        h("tr", {}, h("td", {}, h("a", { href: `#/service/${encodeURIComponent(s.name)}` }, e.Service.ID)),
          h("td", {}, (e.Service.Proxy || {}).Mode || "direct"),
          h("td", {}, String(e.Service.Port)), h("td", {}, badge(s.status))))))
      : h("p", { class: "muted" }, "No sidecar: this service is not in the mesh.")),
    h("section", {}, h("h2", {}, "Upstreams"), list(edges.filter((e) => e.source === name),
      (e) => [link(e.destination), ` at ${e.bind}`, " ", explainLink(name, e.destination)], "No explicit upstreams.")),
    h("section", {}, h("h2", {}, "Downstreams"), list(edges.filter((e) => e.destination === name),
      (e) => [link(e.source), " ", explainLink(e.source, name)], "No service has it as an explicit upstream.")),
    h("section", { id: "intentions-in" }, h("h2", {}, "Intentions to it"),
      intentionTable(inbound, "No intention matches it as a destination: the default policy decides.")),
    h("section", { id: "intentions-out" }, h("h2", {}, "Intentions from it"),
      intentionTable(outbound, "No intention matches it as a source.")),
    h("section", {}, h("h2", {}, "Config entries"), entries.length
      ? entries.map((e) => h("details", {}, h("summary", {}, `${e.Kind}/${e.Name}`),
        h("pre", {}, JSON.stringify(e, null, 2))))
      : h("p", { class: "muted" }, "None.")),
    h("section", {}, h("h2", {}, "DNS names and virtual IPs"),
      h("ul", { id: "dns-names" }, dns.map((d) => h("li", {}, h("code", {}, d))),
        [...vips].map((v) => h("li", {}, "VIP ", h("code", {}, v))))),
  ];
}

function link(name) {
  return h("a", { href: `#/service/${encodeURIComponent(name)}` }, name);
}

function explainLink(source, destination) {
  return h("a", { class: "explain-link", href: `#/explain?${q({ source, destination })}` }, "explain");
}

function list(items, item, empty) {
  return items.length ? h("ul", {}, items.map((x) => h("li", {}, item(x)))) : h("p", { class: "muted" }, empty);
}

function intentionTable(items, empty) {
  return items.length ? table(["Precedence", "Source", "Destination", "Action"],
    items.map((i) => h("tr", {}, h("td", {}, String(i.Precedence)), h("td", {}, i.SourceName),
      h("td", {}, i.DestinationName), h("td", {}, badge(intentionLabel(i), i.Action || "l7")))))
    : h("p", { class: "muted" }, empty);
}
