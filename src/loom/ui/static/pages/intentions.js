// Intentions in precedence order (as the API lists them), and a form to create, edit and
// delete them: allow, deny, or L7 permissions (path exact/prefix/regex, methods). After a
// save the pair is explained at once, so the user sees the effect.

import { del, get, put, q, watch } from "../api.js";
import { badge, h, replace, table } from "../dom.js";
import { intentionLabel } from "../model.js";

const PATH_KINDS = ["PathPrefix", "PathExact", "PathRegex"];

export default async function intentions(el, { signal, onError }) {
  const list = h("div", { id: "intentions" }, h("p", { class: "muted" }, "Loading…"));
  const form = editor(onError);
  el.append(h("h1", {}, "Intentions"), form.el, h("h2", {}, "By precedence"), list);
  get("/v1/catalog/services", signal).then((names) => form.suggest(Object.keys(names || {})), () => {});
  await watch("/v1/connect/intentions", signal, (items) => {
    onError(null);
    if (!items.length) {
      replace(list, h("p", { class: "muted empty" }, "No intentions: the default policy decides every connection."));
      return;
    }
    replace(list, table(["Precedence", "Source", "Destination", "Action", "Description", ""],
      items.map((i) => h("tr", { "data-source": i.SourceName, "data-destination": i.DestinationName },
        h("td", {}, String(i.Precedence)),
        h("td", {}, ref(i.SourceNS, i.SourceName)),
        h("td", {}, ref(i.DestinationNS, i.DestinationName)),
        h("td", {}, badge(intentionLabel(i), i.Action || "l7")),
        h("td", {}, i.Description || ""),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "edit", onclick: () => form.load(i) }, "Edit"),
          h("button", { type: "button", class: "delete", onclick: async () => {
            try {
              await del(`/v1/connect/intentions/exact?${q(pair(i))}`);
              form.say(`Deleted ${i.SourceName} => ${i.DestinationName}.`);
            } catch (err) { onError(err); }
          } }, "Delete")))),
      { id: "intentions-table" }));
  }, onError);
}

function ref(ns, name) {
  return ns && ns !== "default" ? `${ns}/${name}` : name;
}

function pair(i) {
  return { source: `${i.SourceNS || "default"}/${i.SourceName}`,
           destination: `${i.DestinationNS || "default"}/${i.DestinationName}` };
}

function editor(onError) {
  const names = h("datalist", { id: "service-names" });
  const source = h("input", { id: "intention-source", list: "service-names", placeholder: "source (or *)", required: true });
  const destination = h("input", { id: "intention-destination", list: "service-names", placeholder: "destination (or *)", required: true });
  const action = h("select", { id: "intention-action" },
    [["allow", "allow"], ["deny", "deny"], ["l7", "L7 permissions"]].map(([v, t]) => h("option", { value: v }, t)));
  const description = h("input", { id: "intention-description", placeholder: "description" });
  const perms = h("div", { id: "permissions", hidden: true });
  const addPerm = h("button", { type: "button", id: "add-permission", onclick: () => perms.append(permission()) }, "Add permission");
  const result = h("p", { id: "intention-result", class: "muted" });
  action.addEventListener("change", () => {
    perms.hidden = addPerm.hidden = action.value !== "l7";
    if (action.value === "l7" && !perms.children.length) perms.append(permission());
  });
  addPerm.hidden = true;
  const el = h("form", { id: "intention-form", class: "card", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { Description: description.value };
    if (action.value === "l7") body.Permissions = [...perms.children].map(readPermission);
    else body.Action = action.value;
    const which = { source: source.value.trim(), destination: destination.value.trim() };
    try {
      await put(`/v1/connect/intentions/exact?${q(which)}`, body);
      onError(null);
      say(`Saved ${which.source} => ${which.destination}.`);
      if (!which.source.includes("*") && !which.destination.includes("*")) {
        const e = await get(`/v1/loom/intentions/explain?${q(which)}`).catch(() => null);
        if (e) say(`Saved ${which.source} => ${which.destination}: connections are now ${e.Allowed ? "allowed" : "denied"} (${e.Reason}).`);
      }
    } catch (err) { onError(err); }
  } },
  h("h2", {}, "Create or edit"), names,
  h("div", { class: "row" }, source, h("span", {}, "⇒"), destination, action, description,
    h("button", { type: "submit", id: "intention-save" }, "Save")),
  perms, addPerm, result);
  function say(text) { result.textContent = text; }
  return {
    el, say,
    suggest(list) { replace(names, list.map((n) => h("option", { value: n }))); },
    load(i) {
      source.value = ref(i.SourceNS, i.SourceName);
      destination.value = ref(i.DestinationNS, i.DestinationName);
      description.value = i.Description || "";
      action.value = i.Action || "l7";
      replace(perms, (i.Permissions || []).map(permission));
      perms.hidden = addPerm.hidden = action.value !== "l7";
      el.scrollIntoView();
    },
  };
}

function permission(p) {
  const http = (p && p.HTTP) || {};
  const kind = PATH_KINDS.find((k) => http[k]) || "PathPrefix";
  const row = h("div", { class: "permission row" },
    h("select", { class: "perm-action" }, ["allow", "deny"].map((v) => h("option", { value: v }, v))),
    h("select", { class: "perm-path-kind" }, PATH_KINDS.map((k) => h("option", { value: k }, k))),
    h("input", { class: "perm-path", placeholder: "/path", value: http[kind] || "" }),
    h("input", { class: "perm-methods", placeholder: "methods, e.g. GET,POST", value: (http.Methods || []).join(",") }),
    h("button", { type: "button", onclick: () => row.remove() }, "Remove"));
  row.querySelector(".perm-action").value = (p && p.Action) || "allow";
  row.querySelector(".perm-path-kind").value = kind;
  return row;
}

function readPermission(row) {
  const http = {};
  const path = row.querySelector(".perm-path").value.trim();
  if (path) http[row.querySelector(".perm-path-kind").value] = path;
  const methods = row.querySelector(".perm-methods").value.split(",").map((m) => m.trim().toUpperCase()).filter(Boolean);
  if (methods.length) http.Methods = methods;
  return { Action: row.querySelector(".perm-action").value, HTTP: http };
}
