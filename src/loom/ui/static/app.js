// The UI's shell: hash routes (#/services, #/service/NAME, ...), the token login, one error
// line, and the page in <main>. A page runs until the route changes (its AbortSignal fires,
// which ends its blocking queries).

import { ApiError, get, setToken, token } from "./api.js";
import { replace } from "./dom.js";
import config from "./pages/config.js";
import explain from "./pages/explain.js";
import intentions from "./pages/intentions.js";
import nodes from "./pages/nodes.js";
import service from "./pages/service.js";
import services from "./pages/services.js";
import topology from "./pages/topology.js";

const PAGES = { services, service, intentions, explain, topology, nodes, config };
let current = null;

export function showError(err) {
  const box = document.getElementById("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  const text = err instanceof ApiError && err.status === 403
    ? `${err.message} (log in with a token that may read this)` : String(err.message || err);
  box.textContent = text;
  box.hidden = false;
}

function route() {
  const raw = location.hash.replace(/^#\/?/, "") || "services";
  const [pathPart, query = ""] = raw.split("?");
  const [page, ...rest] = pathPart.split("/");
  return { page: PAGES[page] ? page : "services", arg: rest.map(decodeURIComponent).join("/"),
           params: new URLSearchParams(query) };
}

async function render() {
  if (current) current.abort();
  current = new AbortController();
  const { page, arg, params } = route();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (page === "service" && a.dataset.page === "services"));
  }
  showError(null);
  const view = document.getElementById("view");
  replace(view);
  view.dataset.page = page;
  try {
    await PAGES[page](view, { signal: current.signal, arg, params, onError: showError });
  } catch (err) {
    if (!current.signal.aborted) showError(err);
  }
}

function loginState() {
  const on = Boolean(token());
  document.getElementById("token").hidden = on;
  document.getElementById("login-button").hidden = on;
  document.getElementById("logout-button").hidden = !on;
}

function start() {
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    setToken(input.value.trim());
    input.value = "";
    loginState();
    render();
  });
  document.getElementById("logout-button").addEventListener("click", () => {
    setToken("");
    loginState();
    render();
  });
  window.addEventListener("hashchange", render);
  loginState();
  get("/v1/catalog/datacenters").then(
    (dcs) => { document.getElementById("dc").textContent = (dcs || []).join(", "); },
    () => {});
  render();
}

start();
