// Request rate, error rate and p99 from the server's metrics endpoint (/v1/loom/ui/metrics),
// which queries the metrics provider (loom server --ui-metrics-provider prometheus). The
// browser never talks to Prometheus: the server asks fixed queries and filters by ACLs.
// Polled (the endpoint has no index to block on); null when no provider is configured.

import { get } from "./api.js";

const EVERY_MS = 10000;

export async function pollMetrics(signal, onChange) {
  while (!signal.aborted) {
    let doc = null;
    try {
      doc = await get("/v1/loom/ui/metrics", signal);
    } catch (err) {
      if (signal.aborted) return;
      doc = { Provider: "", error: err.message, Services: {}, Edges: [] };
    }
    onChange(doc && (doc.Provider || doc.error) ? doc : null);
    await new Promise((resolve) => {
      const t = setTimeout(resolve, EVERY_MS);
      signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }
}

// "1.5 req/s · 0% errors · p99 4 ms" (p99 left out when unknown, e.g. a TCP edge).
export function describe(stats) {
  if (!stats) return "no traffic";
  const rate = stats.RequestRate >= 10 ? stats.RequestRate.toFixed(0) : stats.RequestRate.toFixed(2);
  const errors = `${(stats.ErrorRate * 100).toFixed(stats.ErrorRate && stats.ErrorRate < 0.1 ? 1 : 0)}% errors`;
  const p99 = stats.P99Ms === null || stats.P99Ms === undefined ? "" : ` · p99 ${stats.P99Ms.toFixed(stats.P99Ms < 10 ? 1 : 0)} ms`;
  return `${rate} req/s · ${errors}${p99}`;
}
