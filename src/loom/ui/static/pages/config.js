// Config entries by kind (each listed with its JSON), and the datacenters.

import { get, watch } from "../api.js";
import { h, replace } from "../dom.js";

const KINDS = ["proxy-defaults", "mesh", "service-defaults", "service-intentions", "service-resolver",
  "external-service"];

export default async function config(el, { signal, onError }) {
  const body = h("div", { id: "config" }, h("p", { class: "muted" }, "Loading…"));
  const dcs = h("p", { id: "datacenters" });
  el.append(h("h1", {}, "Config entries"), body, h("h2", {}, "Datacenters"), dcs);
  get("/v1/catalog/datacenters", signal).then((list) => { dcs.textContent = (list || []).join(", "); }, onError);
  // /v1/config/KIND blocks on the config tables: one watch (the first kind) wakes us for all.
  await watch(`/v1/config/${KINDS[0]}`, signal, async () => {
    const lists = await Promise.all(KINDS.map((k) => get(`/v1/config/${k}`, signal).catch(() => [])));
    onError(null);
    replace(body, KINDS.map((kind, n) => h("section", { "data-kind": kind },
      h("h2", {}, `${kind} (${lists[n].length})`),
      lists[n].length ? lists[n].map((e) => h("details", {}, h("summary", {}, e.Name),
        h("pre", {}, JSON.stringify(e, null, 2)))) : h("p", { class: "muted" }, "None."))));
  }, onError);
}
