// The mesh as the pages draw it, read from the public API only: every service with its
// instances and checks (/v1/health/service/NAME), proxies with their upstreams, intentions.

import { get } from "./api.js";

export const PROXY_KINDS = ["connect-proxy", "mesh-gateway", "ingress-gateway", "terminating-gateway"];

// catalog: the answer of /v1/catalog/services ({name: tags}).
export async function loadServices(catalog, signal) {
  const names = Object.keys(catalog || {}).sort();
  const entries = await Promise.all(names.map(
    (n) => get(`/v1/health/service/${encodeURIComponent(n)}`, signal).catch(() => [])));
  return names.map((name, i) => summarise(name, catalog[name] || [], entries[i]));
}

export function summarise(name, tags, entries) {
  const counts = { passing: 0, warning: 0, critical: 0 };
  for (const e of entries) for (const c of e.Checks || []) {
    if (c.Status in counts) counts[c.Status] += 1;
  }
  const first = entries[0] ? entries[0].Service : {};
  const status = counts.critical ? "critical" : counts.warning ? "warning" : "passing";
  return {
    name, tags, entries, counts, status,
    kind: first.Kind || "",
    namespace: first.Namespace || "default",
    datacenter: entries[0] ? entries[0].Node.Datacenter : "",
    instances: entries.length,
    proxy: first.Proxy || null,
  };
}

export function isProxy(svc) {
  return PROXY_KINDS.includes(svc.kind);
}

// Sidecars of `name`: the proxies whose destination it is.
export function sidecarsOf(services, name) {
  return services.filter((s) => isProxy(s) && s.entries.some(
    (e) => e.Service.Proxy && e.Service.Proxy.DestinationServiceName === name));
}

// Every explicit upstream edge: {source, destination, bind} from the proxies' registrations.
export function upstreamEdges(services) {
  const out = [];
  const seen = new Set();
  for (const s of services.filter(isProxy)) for (const e of s.entries) {
    const p = e.Service.Proxy || {};
    for (const u of p.Upstreams || []) {
      if ((u.DestinationType || "service") !== "service") continue;
      const key = `${p.DestinationServiceName}>${u.DestinationName}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({
        source: p.DestinationServiceName, destination: u.DestinationName,
        bind: `${u.LocalBindAddress || "127.0.0.1"}:${u.LocalBindPort}`,
      });
    }
  }
  return out;
}

export function transparentSources(services) {
  const out = new Set();
  for (const s of services.filter(isProxy)) for (const e of s.entries) {
    const p = e.Service.Proxy || {};
    if (p.Mode === "transparent") out.add(p.DestinationServiceName);
  }
  return out;
}

export function intentionLabel(i) {
  if (i.Action) return i.Action;
  const n = (i.Permissions || []).length;
  return `L7 (${n} permission${n === 1 ? "" : "s"})`;
}
