// Explain: pick a source and a destination (and a method and path for L7 intentions); the
// server's explain endpoint answers with the decision, the intention behind it, its
// precedence, the default policy, the source's upstream and the destination's Envoy RBAC.
// The answer follows changes (it is asked again whenever the mesh changes).

import { get, q, watchMany } from "../api.js";
import { badge, h, replace, table } from "../dom.js";
import { isProxy, loadServices } from "../model.js";

export default async function explain(el, { signal, params, onError }) {
  const source = h("select", { id: "explain-source", "aria-label": "source" });
  const destination = h("select", { id: "explain-destination", "aria-label": "destination" });
  const method = h("input", { id: "explain-method", placeholder: "method (L7)", value: params.get("method") || "" });
  const path = h("input", { id: "explain-path", placeholder: "path (L7)", value: params.get("path") || "" });
  const out = h("div", { id: "explanation" });
  const form = h("form", { id: "explain-form", class: "card", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/explain?${q({ source: source.value, destination: destination.value, method: method.value.trim(), path: path.value.trim() })}`;
  } }, h("div", { class: "row" }, source, h("span", {}, "⇒"), destination, method, path,
    h("button", { type: "submit", id: "explain-button" }, "Explain")));
  el.append(h("h1", {}, "Why is it allowed or denied?"), form, out);
  const asked = { source: params.get("source") || "", destination: params.get("destination") || "",
                  method: params.get("method") || "", path: params.get("path") || "" };
  await watchMany(["/v1/catalog/services", "/v1/connect/intentions"], signal, async ([catalog]) => {
    const names = (await loadServices(catalog, signal)).filter((s) => !isProxy(s)).map((s) => s.name);
    for (const [select, want] of [[source, asked.source], [destination, asked.destination]]) {
      const keep = select.value || want;
      replace(select, names.map((n) => h("option", { value: n }, n)));
      if (want && !names.includes(want)) select.append(h("option", { value: want }, want));
      if (keep) select.value = keep;
    }
    if (!asked.source || !asked.destination) return;
    const e = await get(`/v1/loom/intentions/explain?${q(asked)}`, signal);
    onError(null);
    replace(out, render(e));
  }, onError);
}

function render(e) {
  const i = e.Intention;
  const request = e.Request ? ` ${e.Request.Method || "GET"} ${e.Request.Path || "/"}` : "";
  return h("div", { class: `verdict ${e.Allowed ? "allowed" : "denied"}`, "data-allowed": String(e.Allowed) },
    h("h2", { id: "verdict" }, `${e.Source} ⇒ ${e.Destination}${request}: `,
      badge(e.Allowed ? "ALLOWED" : "DENIED", e.Allowed ? "passing" : "critical")),
    h("p", { id: "reason" }, e.Reason),
    h("dl", {},
      h("dt", {}, "Decided by"),
      h("dd", { id: "decided-by" }, i
        ? `intention ${i.SourceName} ⇒ ${i.DestinationName} (${i.Action || `${i.Permissions} L7 permissions`}), precedence ${i.Precedence}, ${e.Layer}`
        : `the default policy (${e.DefaultPolicy})`),
      h("dt", {}, "Default policy"), h("dd", {}, e.DefaultPolicy)),
    h("h3", {}, "Source's sidecar: is the destination an upstream?"),
    e.Upstreams.length ? table(["Proxy", "Route"], e.Upstreams.map((u) => h("tr", {},
      h("td", {}, u.Proxy), h("td", {}, u.Kind ? `${u.Kind}${u.Address ? ` at ${u.Address}` : ""}` : "none")))) :
      h("p", { class: "muted" }, "The source has no sidecar."),
    h("h3", {}, "Destination's sidecar: what its generated Envoy RBAC says"),
    e.Rbac.length ? table(["Proxy", "Filter", "Source", "Policy", "Agrees"], e.Rbac.map((v) => h("tr", {},
      h("td", {}, v.Proxy), h("td", {}, v.Filter),
      h("td", {}, badge(v.Allowed ? "admitted" : "rejected", v.Allowed ? "passing" : "critical")),
      h("td", {}, v.Policy || "none"), h("td", {}, v.Agrees ? "yes" : "NO (a translator bug)")))) :
      h("p", { class: "muted" }, "The destination has no sidecar."),
    e.Notes.length ? h("ul", { class: "notes" }, e.Notes.map((n) => h("li", {}, n))) : null);
}
