// Topology: who may and who does talk to whom. Nodes are services; an edge is an explicit
// upstream (solid) or an intention between two named services (dashed when no sidecar dials
// it); green when the pair is allowed, red when denied (/v1/connect/intentions/check). Drawn
// as inline SVG on a circle; an edge links to its explanation. With a metrics provider, edges
// also come from observed traffic (dotted when neither an upstream nor an intention names
// them) and each edge with traffic is labelled with its request rate, errors and p99.

import { get, q, watchMany } from "../api.js";
import { h, replace, svg } from "../dom.js";
import { describe, pollMetrics } from "../metrics.js";
import { isProxy, loadServices, sidecarsOf, transparentSources, upstreamEdges } from "../model.js";

const W = 860;
const H = 520;
const R = 26;

export default async function topology(el, { signal, onError }) {
  const box = h("div", { id: "topology" }, h("p", { class: "muted" }, "Loading…"));
  el.append(h("h1", {}, "Topology"),
    h("p", { class: "legend" },
      h("span", { class: "key allowed" }, "allowed"), h("span", { class: "key denied" }, "denied"),
      " solid: an explicit upstream; dashed: an intention only; dotted: observed traffic only.",
      " Click an edge to explain it."),
    box);
  let mesh = null; // the latest catalog and intentions, as loaded
  let metrics = null;
  let checks = new Map(); // "src>dst" -> allowed, cleared whenever the mesh changes
  let drawing = Promise.resolve();
  const render = () => {
    drawing = drawing.then(async () => {
      if (!mesh) return;
      const { all, intentions } = mesh;
      const edges = new Map();
      for (const e of upstreamEdges(all)) edges.set(`${e.source}>${e.destination}`, { ...e, upstream: true });
      for (const i of intentions || []) {
        if (i.SourceName === "*" || i.DestinationName === "*") continue;
        const key = `${i.SourceName}>${i.DestinationName}`;
        if (!edges.has(key)) edges.set(key, { source: i.SourceName, destination: i.DestinationName, upstream: false });
      }
      for (const m of metrics ? metrics.Edges : []) {
        const key = `${m.Source}>${m.Destination}`;
        if (!edges.has(key)) edges.set(key, { source: m.Source, destination: m.Destination, upstream: false, observedOnly: true });
        edges.get(key).traffic = m;
      }
      const list = [...edges.values()];
      await Promise.all(list.map(async (e) => {
        const key = `${e.source}>${e.destination}`;
        if (!checks.has(key)) {
          const r = await get(`/v1/connect/intentions/check?${q({ source: e.source, destination: e.destination })}`, signal)
            .catch(() => null);
          checks.set(key, r ? r.Allowed : null);
        }
        e.allowed = checks.get(key);
      }));
      replace(box, draw(all.filter((s) => !isProxy(s)), list, all));
    }).catch(onError);
    return drawing;
  };
  pollMetrics(signal, (doc) => { metrics = doc; render(); });
  await watchMany(["/v1/catalog/services", "/v1/connect/intentions"], signal, async ([catalog, intentions]) => {
    mesh = { all: await loadServices(catalog, signal), intentions };
    checks = new Map();
    onError(null);
    await render();
  }, onError);
}

function draw(services, edges, all) {
  if (!services.length) return h("p", { class: "muted empty" }, "No services registered.");
  const names = [...new Set([...services.map((s) => s.name), ...edges.flatMap((e) => [e.source, e.destination])])].sort();
  const pos = new Map();
  const cx = W / 2;
  const cy = H / 2;
  const radius = Math.min(W, H) / 2 - 70;
  names.forEach((n, k) => {
    const a = (2 * Math.PI * k) / names.length - Math.PI / 2;
    pos.set(n, names.length === 1 ? [cx, cy] : [cx + radius * Math.cos(a), cy + radius * Math.sin(a)]);
  });
  const transparent = transparentSources(all);
  const meshed = new Set(services.filter((s) => sidecarsOf(all, s.name).length).map((s) => s.name));
  const defs = svg("defs", {}, ["allowed", "denied", "unknown"].map((k) => svg("marker", {
    id: `arrow-${k}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrow ${k}` }))));
  const lines = edges.map((e) => {
    const [x1, y1] = pos.get(e.source);
    const [x2, y2] = pos.get(e.destination);
    const d = Math.hypot(x2 - x1, y2 - y1) || 1;
    const [ux, uy] = [(x2 - x1) / d, (y2 - y1) / d];
    const kind = e.allowed === null ? "unknown" : e.allowed ? "allowed" : "denied";
    return svg("a", { href: `#/explain?${q({ source: e.source, destination: e.destination })}` },
      svg("g", { class: `edge ${kind}${e.upstream ? " upstream" : e.observedOnly ? " observed-only" : " intention-only"}${e.traffic ? " observed" : ""}`,
                 "data-source": e.source, "data-destination": e.destination, "data-allowed": String(e.allowed),
                 "data-rate": e.traffic ? String(e.traffic.RequestRate) : undefined },
        svg("title", {}, `${e.source} ⇒ ${e.destination}: ${kind}${e.upstream ? ` (upstream at ${e.bind})` : e.observedOnly ? " (observed traffic)" : " (intention, no upstream)"}${e.traffic ? `; ${describe(e.traffic)}` : ""}`),
        svg("line", { x1: x1 + ux * R, y1: y1 + uy * R, x2: x2 - ux * (R + 2), y2: y2 - uy * (R + 2),
                      "marker-end": `url(#arrow-${kind})` }),
        // The label sits beside the middle of the edge, on its left (so A->B and B->A differ).
        e.traffic ? svg("text", { x: (x1 + x2) / 2 - uy * 12, y: (y1 + y2) / 2 + ux * 12, "text-anchor": "middle",
                                  class: "traffic" }, describe(e.traffic)) : null));
  });
  const nodes = names.map((n) => {
    const [x, y] = pos.get(n);
    const s = services.find((v) => v.name === n);
    return svg("a", { href: `#/service/${encodeURIComponent(n)}` },
      svg("g", { class: `node status-${s ? s.status : "unknown"}${meshed.has(n) ? " meshed" : ""}`, "data-service": n },
        svg("title", {}, `${n}${s ? `: ${s.instances} instance(s), ${s.status}` : " (not registered)"}${transparent.has(n) ? ", transparent proxy" : ""}`),
        svg("circle", { cx: x, cy: y, r: R }),
        // Labels sit on the outer side of the circle, away from the edges inside it.
        svg("text", { x, y: y < H / 2 - 1 ? y - R - 8 : y + R + 16, "text-anchor": "middle" }, n),
        transparent.has(n) ? svg("text", { x, y: y + 4, "text-anchor": "middle", class: "tp" }, "tproxy") : null));
  });
  return svg("svg", { id: "topology-graph", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                      "aria-label": "service topology" }, defs, lines, nodes);
}
