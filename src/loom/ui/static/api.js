// The HTTP API as the UI uses it: the token from sessionStorage as X-Consul-Token, JSON in and
// out, and blocking queries (?index=N&wait=...) so that pages follow changes without reloads.

const TOKEN_KEY = "loom.token";
const WAIT = "60s";

export class ApiError extends Error {
  constructor(status, text) {
    super(text.trim() || `HTTP ${status}`);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(secret) {
  if (secret) sessionStorage.setItem(TOKEN_KEY, secret);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function request(method, path, body, signal) {
  const headers = {};
  if (token()) headers["X-Consul-Token"] = token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  if (!resp.ok) throw new ApiError(resp.status, text);
  return { data: text ? JSON.parse(text) : null, index: resp.headers.get("X-Consul-Index") };
}

export async function get(path, signal) {
  return (await request("GET", path, undefined, signal)).data;
}

export function put(path, body) {
  return request("PUT", path, body === undefined ? {} : body);
}

export function del(path) {
  return request("DELETE", path);
}

export function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") s.set(k, v);
  return s.toString();
}

// Calls onChange(data) now and after every change of `path`'s data, until `signal` aborts.
// A failed query is reported through onError and retried with a growing pause.
export async function watch(path, signal, onChange, onError) {
  let index = 0;
  let pause = 500;
  const sep = path.includes("?") ? "&" : "?";
  while (!signal.aborted) {
    try {
      const url = index ? `${path}${sep}index=${index}&wait=${WAIT}` : path;
      const { data, index: next } = await request("GET", url, undefined, signal);
      pause = 500;
      const changed = !index || String(next) !== String(index);
      index = Number(next) || 0;
      if (changed) await onChange(data);
      if (!index) await sleep(2000, signal); // no index: an endpoint that does not block
    } catch (err) {
      if (signal.aborted) return;
      if (onError) onError(err);
      await sleep(pause, signal);
      pause = Math.min(pause * 2, 10000);
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Watches several paths at once; onChange(results) gets the latest answer of each (in the
// order of `paths`) once all have answered, then again whenever any of them changes.
export function watchMany(paths, signal, onChange, onError) {
  const latest = new Array(paths.length);
  const seen = new Array(paths.length).fill(false);
  let running = Promise.resolve();
  const changed = (n, data) => {
    latest[n] = data;
    seen[n] = true;
    if (seen.every(Boolean)) running = running.then(() => onChange([...latest])).catch(onError);
    return running;
  };
  return Promise.all(paths.map((p, n) => watch(p, signal, (data) => changed(n, data), onError)));
}
