// Nodes: each node of the catalog with its address, datacenter, and the instances on it.

import { get, watch } from "../api.js";
import { badge, h, replace, table } from "../dom.js";
import { loadServices } from "../model.js";

export default async function nodes(el, { signal, onError }) {
  const body = h("div", { id: "nodes" }, h("p", { class: "muted" }, "Loading…"));
  el.append(h("h1", {}, "Nodes"), body);
  await watch("/v1/catalog/nodes", signal, async (list) => {
    const catalog = await get("/v1/catalog/services", signal);
    const services = await loadServices(catalog, signal);
    onError(null);
    if (!list.length) { replace(body, h("p", { class: "muted empty" }, "No nodes.")); return; }
    replace(body, table(["Node", "Address", "Datacenter", "Instances", "Meta"], list.map((n) => {
      const here = services.flatMap((s) => s.entries.filter((e) => e.Node.Node === n.Node)
        .map((e) => ({ id: e.Service.ID, status: statusOf(e) })));
      return h("tr", { "data-node": n.Node },
        h("td", {}, n.Node), h("td", {}, n.Address), h("td", {}, n.Datacenter),
        h("td", {}, here.length ? here.map((x) => badge(x.id, x.status)) : "none"),
        h("td", {}, Object.entries(n.NodeMeta || n.Meta || {}).map(([k, v]) => badge(`${k}=${v}`, "tag"))));
    }), { id: "nodes-table" }));
  }, onError);
}


function statusOf(entry) {
  const s = (entry.Checks || []).map((c) => c.Status);
  return s.includes("critical") ? "critical" : s.includes("warning") ? "warning" : "passing";
}
