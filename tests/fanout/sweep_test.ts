/**
 * How a failed sweep is logged: the store unavailable (the next sweep tries again) at warning, as
 * a request's 503 is; anything else (a defect, bad data) at error.
 */
import assert from "node:assert/strict";
import { logSweepError, sweepOnce, WINDOWS_PER_SWEEP } from "../../src/fanout/sweep.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { StoreRequestTooLargeError, StoreUnavailableError } from "../../src/store/types.ts";
import { collectingLogs, messageOf } from "../_logs.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import type { Endpoint } from "../../src/store/deliveries.ts";
import { MemoryDeliveryStore } from "../../src/store/memory/delivery_store.ts";
import { MemoryDefinitionStore } from "../../src/store/memory/definition_store.ts";
import { setup } from "./webhooks/_setup.ts";

Deno.test("logSweepError() logs an unavailable store at warning and anything else at error, naming the stream", async () => {
  const records = await collectingLogs(async (records) => {
    logSweepError(new StoreUnavailableError("Redis is unavailable (closeWindows): OOM"), "orders");
    logSweepError(new StoreUnavailableError("Redis did not answer"));
    logSweepError(new Error("Redis refused closeWindows: ERR bad"), "orders");
    logSweepError(new TypeError("boom"));
    return await Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["warning", "Sweep of stream 'orders' failed"],
    ["warning", "Sweep failed"],
    ["error", "Sweep of stream 'orders' failed"],
    ["error", "Sweep failed"],
  ]);
});

Deno.test("a sweep's webhook hold and a definitions poll log an unavailable store at warning, anything else at error", async () => {
  class FailingDeliveries extends MemoryDeliveryStore {
    error: Error = new Error("unset");
    override listEndpointsVersioned(): Promise<{ endpoints: Endpoint[]; version: string }> {
      return Promise.reject(this.error);
    }
  }
  class FailingDefinitions extends MemoryDefinitionStore {
    error: Error = new Error("unset");
    override versions(): Promise<Map<string, number>> {
      return Promise.reject(this.error);
    }
  }
  const deliveries = new FailingDeliveries();
  const definitions = new FailingDefinitions();
  const { webhooks, close } = await setup({ deliveries });
  const registry = new StreamRegistry(compileConfig({ streams: {} }), { definitions, pollMs: 5 });
  const levels = async () => {
    // A sweep's first step: the endpoint list (stale in a new service), then the holds.
    await webhooks.prepare();
    // One poll of the stream definitions, then no more.
    registry.startPolling();
    await new Promise((resolve) => setTimeout(resolve, 20));
    registry.stop();
  };
  try {
    const records = await collectingLogs(async (records) => {
      for (
        const error of [
          new StoreUnavailableError("Redis is unavailable (getEndpoints): OOM"),
          new Error("Redis refused getEndpoints: ERR bad"),
        ]
      ) {
        deliveries.error = error;
        definitions.error = error;
        await levels();
      }
      return [...records];
    });
    const seen = new Set(
      records.map((record) => `${record.level} ${messageOf(record).split(": ")[0]}`),
    );
    assert.deepEqual([...seen].sort(), [
      "error Cannot hold the result logs for webhook dispatch",
      "error Cannot poll stream definitions",
      "warning Cannot hold the result logs for webhook dispatch",
      "warning Cannot poll stream definitions",
    ]);
  } finally {
    registry.stop();
    await close();
  }
});

Deno.test("sweeps every 5 s keep up with 1 s windows of a steady stream, while 10 ms ones close later and later, their panes held (why windows are at least 1s)", async () => {
  // 10 ms windows are refused now; a stream stored or deployed before is served so.
  const streams = compileConfig({
    streams: {
      s: {
        time: { field: "t", lateness: "0s" },
        counters: {
          second: { window: { tumbling: "1s" }, aggregate: "count", retention: "10s" },
          tiny: { window: { tumbling: "10ms" }, aggregate: "count", retention: "10s" },
        },
      },
    },
  }, { shortWindows: true });
  const stream = streams.get("s")!;
  let now = Date.parse("2026-01-01T00:00:00Z");
  const store = new MemoryStore({ now: () => now });
  const lags: Record<string, number[]> = { second: [], tiny: [] };
  const panes: Record<string, number[]> = { second: [], tiny: [] };
  for (let sweep = 0; sweep < 6; sweep++) {
    // 5 s of events, one every 10 ms, then a sweep (EDGESTREAM_SWEEP_EVERY's default).
    const events = [];
    for (let t = now; t < now + 5_000; t += 10) events.push({ ok: true as const, value: { t } });
    now += 5_000;
    for (let i = 0; i < events.length; i += 100) {
      await ingestItems(stream, events.slice(i, i + 100), { store, nowMs: now });
    }
    const report = await sweepOnce(streams.values(), store);
    for (const [index, counter] of ["second", "tiny"].entries()) {
      const closed = report.closed.filter((window) => window.counter === counter);
      assert.ok(closed.length <= WINDOWS_PER_SWEEP);
      lags[counter].push(now - Math.max(...closed.map((window) => window.end)));
      const held = await store.panes("s", stream.counterMetas[index], {
        fromMs: 0,
        toMs: Number.MAX_SAFE_INTEGER,
      });
      panes[counter].push(held.length);
    }
  }
  // The last window of 1 s closes at every sweep; its panes go once closed and past retention
  // (10 s), so as many are held after every sweep from the third on.
  assert.deepEqual(lags.second, [1_000, 1_000, 1_000, 1_000, 1_000, 1_000]);
  assert.deepEqual(panes.second, [5, 10, 15, 16, 16, 16]);
  // 500 windows of 10 ms a sweep, 100 closed: 4 s more behind at every sweep; past retention the
  // panes of the 400 left open stay held, 400 more after every sweep.
  assert.deepEqual(lags.tiny, [4_000, 8_000, 12_000, 16_000, 20_000, 24_000]);
  assert.deepEqual(panes.tiny, [500, 1_000, 1_500, 1_900, 2_300, 2_700]);
});

Deno.test("sweepOnce() still reports the windows it closed when a fan-out consumer fails other than by the store being unreachable", async () => {
  const streams = compileConfig({
    streams: {
      s: {
        time: { field: "t", lateness: "0s" },
        counters: { n: { window: { tumbling: "1s" }, aggregate: "count" } },
      },
    },
  });
  const now = Date.parse("2026-01-01T00:00:10Z");
  const store = new MemoryStore({ now: () => now });
  const events = [{ t: now - 5_000 }, { t: now }].map((value) => ({ ok: true as const, value }));
  await ingestItems(streams.get("s")!, events, { store, nowMs: now });
  const broken = new Error("Redis refused getEndpoints: WRONGTYPE Operation against a key");
  const records = await collectingLogs(async (records) => {
    const report = await sweepOnce(streams.values(), store, {
      consumers: [{ sweep: () => Promise.reject(broken) }, { sweep: () => Promise.resolve(2) }],
    });
    assert.deepEqual(report.closed.map((window) => window.start), [now - 5_000]);
    assert.deepEqual(report.fanout, [2]);
    assert.deepEqual(report.fanoutFailed, [broken]);
    // Closed once: the next sweep has nothing to report of it.
    assert.deepEqual((await sweepOnce(streams.values(), store)).closed, []);
    return [...records];
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["error", "Sweep fan-out failed after the windows closed"],
  ]);
  // The store unreachable still fails the whole sweep.
  await assert.rejects(
    sweepOnce(streams.values(), store, {
      consumers: [{ sweep: () => Promise.reject(new StoreUnavailableError("down")) }],
    }),
    StoreUnavailableError,
  );
});

Deno.test("sweepOnce() lists a stream whose close the store refuses as too large in failed and still closes the other streams and runs the consumers", async () => {
  const counters = { n: { window: { tumbling: "1s" }, aggregate: "count" } };
  const time = { field: "t", lateness: "0s" };
  const streams = compileConfig({
    streams: { a: { time, counters }, b: { time, counters }, c: { time, counters } },
  });
  const now = Date.parse("2026-01-01T00:00:10Z");
  const tooLarge = new StoreRequestTooLargeError("ERR max request size exceeded");
  class RefusingA extends MemoryStore {
    override closeWindows(...args: Parameters<MemoryStore["closeWindows"]>) {
      return args[0] === "a" ? Promise.reject(tooLarge) : super.closeWindows(...args);
    }
  }
  const store = new RefusingA({ now: () => now });
  for (const name of ["a", "b", "c"]) {
    const events = [{ t: now - 5_000 }, { t: now }].map((value) => ({ ok: true as const, value }));
    await ingestItems(streams.get(name)!, events, { store, nowMs: now });
  }
  const fanoutRefused = new StoreRequestTooLargeError("ERR max request size exceeded");
  const records = await collectingLogs(async (records) => {
    // Before, the refusal of stream a's close aborted the sweep: b and c closed nothing.
    const report = await sweepOnce(streams.values(), store, {
      consumers: [{ sweep: () => Promise.reject(fanoutRefused) }, {
        sweep: () => Promise.resolve(1),
      }],
    });
    assert.deepEqual(report.closed.map((window) => [window.stream, window.start]), [
      ["b", now - 5_000],
      ["c", now - 5_000],
    ]);
    assert.deepEqual(report.failed, [{ stream: "a", error: tooLarge }]);
    assert.deepEqual(report.fanout, [1]);
    assert.deepEqual(report.fanoutFailed, [fanoutRefused]);
    logSweepError(tooLarge, "a");
    return [...records];
  });
  // No outage: said at error, as what someone must act on.
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["error", "Sweep fan-out failed after the windows closed"],
    ["error", "Sweep of stream 'a' failed"],
  ]);
});

Deno.test("sweepOnce() closes up to WINDOWS_PER_SWEEP windows of every counter, also when another counter of the stream used its budget over several close calls", async () => {
  const streams = compileConfig({
    streams: {
      s: {
        time: { field: "t", lateness: "0s" },
        counters: {
          // 20 groups a window: past the 10 cells a call of this store, each closes over two calls.
          wide: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
          narrow: { window: { tumbling: "1m" }, aggregate: "count" },
        },
      },
    },
  });
  const start = Date.parse("2026-01-01T00:00:00Z");
  const store = new MemoryStore({ now: () => start + 200 * 60_000, closeCells: 10 });
  const events = [];
  for (let window = 0; window < 150; window++) {
    for (let g = 0; g < 20; g++) events.push({ t: start + window * 60_000, g });
  }
  events.push({ t: start + 200 * 60_000, g: 0 });
  for (let i = 0; i < events.length; i += 1_000) {
    const items = events.slice(i, i + 1_000).map((value) => ({ ok: true as const, value }));
    await ingestItems(streams.get("s")!, items, { store, nowMs: start + 200 * 60_000 });
  }
  const closedOf = (report: Awaited<ReturnType<typeof sweepOnce>>, counter: string) =>
    report.closed.filter((window) => window.counter === counter).map((window) =>
      (window.start - start) / 60_000
    );
  const first = await sweepOnce(streams.values(), store);
  const oldest = Array.from({ length: WINDOWS_PER_SWEEP }, (_, i) => i);
  assert.deepEqual(closedOf(first, "wide"), oldest);
  // Closed none before: the wide counter's 100 took every call's cells, then its spent budget
  // was the limit of every counter's call.
  assert.deepEqual(closedOf(first, "narrow"), oldest);
  assert.ok(first.closed.filter((w) => w.counter === "wide").every((w) => w.groups.length === 20));
  const rest = Array.from({ length: 50 }, (_, i) => 100 + i);
  const second = await sweepOnce(streams.values(), store);
  assert.deepEqual(closedOf(second, "wide"), rest);
  assert.deepEqual(closedOf(second, "narrow"), rest);
});

/** Stream `a` of 1 s windows, its alert `any` true of every window with an event; closes at once. */
function alertingStreams() {
  return compileConfig({
    streams: {
      a: {
        time: { field: "t", lateness: "0s" },
        counters: { n: { window: { tumbling: "1s" }, aggregate: "count" } },
        alerts: [{ name: "any", counter: "n", when: "value >= 1" }],
      },
    },
  });
}

Deno.test("sweepOnce() of a stream with alerts whose incarnation the store says is gone stops at the alert peek: no second close call, no alert", async () => {
  const streams = alertingStreams();
  const now = Date.parse("2026-01-01T00:00:10Z");
  const calls: boolean[] = [];
  class Gone extends MemoryStore {
    override closeWindows(...args: Parameters<MemoryStore["closeWindows"]>) {
      calls.push(args[2]?.peek === true);
      return Promise.resolve(Object.assign([], { gone: true as const }));
    }
  }
  const report = await sweepOnce(streams.values(), new Gone({ now: () => now }));
  assert.deepEqual(calls, [true]);
  assert.deepEqual([report.closed, report.fired, report.failed], [[], [], []]);
});

Deno.test("sweepOnce() fires an alert by the counters of the definition it evaluated, as it closes by them (a registry's store keys the firing to that incarnation)", async () => {
  const streams = alertingStreams();
  const stream = streams.get("a")!;
  const now = Date.parse("2026-01-01T00:00:10Z");
  const given: unknown[] = [];
  class Recording extends MemoryStore {
    override fireAlerts(...args: Parameters<MemoryStore["fireAlerts"]>) {
      given.push(args[2]?.counters);
      return super.fireAlerts(...args);
    }
  }
  const store = new Recording({ now: () => now });
  const items = [now - 5_000, now].map((t) => ({ ok: true as const, value: { t } }));
  await ingestItems(stream, items, { store, nowMs: now });
  const report = await sweepOnce(streams.values(), store);
  assert.equal(report.fired.length, 1);
  assert.deepEqual(given, [stream.counterMetas]);
});
