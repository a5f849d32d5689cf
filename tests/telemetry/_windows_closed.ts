/**
 * Run by `windows_closed_test.ts` with the OpenTelemetry export on: one window of 6 groups on a
 * store that closes 2 cells a call, so its close goes over 3 calls. The first sweep claims it and
 * fails after its first call (the store unreachable); the next sweep closes the rest.
 */
import { compileConfig } from "../../src/config/mod.ts";
import { sweepOnce } from "../../src/fanout/sweep.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { type Store, StoreUnavailableError } from "../../src/store/types.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 600_000;
const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: { n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
    },
  },
}).get("s")!;
const store = new MemoryStore({ now: () => NOW, closeCells: 2 });
const events = ["a", "b", "c", "d", "e", "f"].map((g) => ({ t: T0 + 1_000, g }));
// Makes the first minute's window due.
events.push({ t: T0 + 5 * 60_000, g: "a" });
await ingestItems(stream, events.map((value) => ({ ok: true as const, value })), {
  store,
  nowMs: NOW,
});

let calls = 0;
const failing = new Proxy(store, {
  get(target, property) {
    if (property !== "closeWindows") return Reflect.get(target, property).bind(target);
    return (...args: Parameters<Store["closeWindows"]>) => {
      calls += 1;
      if (calls > 1) throw new StoreUnavailableError("Redis is unavailable (closeWindows): test");
      return target.closeWindows(...args);
    };
  },
});
const failed = await sweepOnce([stream], failing).then(() => false, () => true);
if (!failed) throw new Error("the first sweep did not fail");
const second = await sweepOnce([stream], store);
if (second.closed.length !== 1 || !second.closed[0].continued) {
  throw new Error(`the second sweep did not finish the window: ${JSON.stringify(second.closed)}`);
}
if ((await sweepOnce([stream], store)).closed.length !== 0) throw new Error("closed again");
// Long enough for an export (OTEL_METRIC_EXPORT_INTERVAL is 300 ms).
await new Promise((resolve) => setTimeout(resolve, 1_000));
