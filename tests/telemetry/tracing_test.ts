/**
 * Ingest and apply spans, in a child process with Deno's OpenTelemetry
 * export on: an apply that serves the requests of two ingest spans is a
 * child of the span it runs in and links to the other request's span (the
 * shape group commit needs).
 */
import assert from "node:assert/strict";
import { configure, getConfig, getLogger, reset, withContext } from "@logtape/logtape";
import { compileConfig } from "../../src/config/mod.ts";
import { AlertWatcher } from "../../src/fanout/alerts.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { detached } from "../../src/telemetry/tracing.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";
import { eventually, runWithOtel, startOtlpReceiver } from "./_otlp.ts";

const logger = getLogger(["edgestream", "test"]);

Deno.test("an apply serving requests of two ingest spans is a child of one and links to the other", async () => {
  const receiver = startOtlpReceiver();
  try {
    await runWithOtel(receiver, "tests/telemetry/_store_calls.ts");
    await eventually(() => {
      const spans = receiver.spans();
      const ingest = (transport: string) => {
        const found = spans.filter((span) =>
          span.name === "edgestream.ingest" && span.attributes["edgestream.stream"] === "s" &&
          span.attributes["edgestream.transport"] === transport
        );
        assert.equal(found.length, 1, `${transport}: ${JSON.stringify(spans)}`);
        return found[0];
      };
      const http = ingest("http");
      const ws = ingest("ws");
      assert.notEqual(http.traceId, ws.traceId, "two requests, two traces");
      const apply = spans.find((span) =>
        span.name === "edgestream.store.applyBatch" && span.parentSpanId === ws.spanId
      );
      assert.ok(apply, "the apply is a child of the span it runs in");
      assert.equal(apply.traceId, ws.traceId);
      assert.equal(apply.attributes["edgestream.batch.requests"], 2);
      // Every attribute the README lists, no other.
      assert.deepEqual(Object.keys(apply.attributes).sort(), [
        "edgestream.batch.events",
        "edgestream.batch.requests",
        "edgestream.store.operation",
        "edgestream.stream",
      ]);
      assert.equal(apply.attributes["edgestream.store.operation"], "applyBatch");
      assert.equal(apply.attributes["edgestream.stream"], "s");
      assert.deepEqual(apply.links, [{ traceId: http.traceId, spanId: http.spanId }]);
    });
  } finally {
    await receiver.close();
  }
});

Deno.test("group commit: a grouped apply is a child of its first request's span, not of the apply before it", async () => {
  const receiver = startOtlpReceiver();
  try {
    const output = await runWithOtel(receiver, "tests/telemetry/_group_commit_spans.ts");
    assert.match(output, /"applies":2/);
    await eventually(() => {
      const spans = receiver.spans();
      const ingest = (name: string) => {
        const found = spans.filter((span) =>
          span.name === "edgestream.ingest" && span.attributes["edgestream.stream"] === name
        );
        assert.equal(found.length, 1, `${name}: ${JSON.stringify(spans)}`);
        return found[0];
      };
      const [g1, g2, g3] = [ingest("g1"), ingest("g2"), ingest("g3")];
      const applies = spans.filter((span) => span.name === "edgestream.store.applyBatch");
      assert.equal(applies.length, 2);
      const alone = applies.find((span) => span.parentSpanId === g1.spanId);
      assert.ok(alone, "g1's apply is its child");
      assert.deepEqual(alone.links ?? [], []);
      // g2 came first of the two (receive order): the shared apply is its child, linked to g3.
      const shared = applies.find((span) => span !== alone);
      assert.ok(shared);
      assert.equal(shared.parentSpanId, g2.spanId);
      assert.equal(shared.traceId, g2.traceId);
      assert.equal(shared.attributes["edgestream.batch.requests"], 2);
      assert.deepEqual(shared.links, [{ traceId: g3.traceId, spanId: g3.spanId }]);
    });
  } finally {
    await receiver.close();
  }
});

Deno.test("detached() work runs outside the request's log context: an alert evaluation failing after an ingest's reply is not logged under that request's id", async () => {
  const T0 = Date.parse("2026-01-01T00:00:00Z");
  const stream = compileConfig({
    streams: {
      orders: {
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        alerts: [{ name: "busy", counter: "n", when: "value >= 1.0" }],
      },
    },
  }).get("orders")!;
  const store = new MemoryStore({ now: () => T0 });
  const failing = new Proxy(store, {
    get(target, property) {
      if (property === "readWindows") return () => Promise.reject(new Error("read refused"));
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const watcher = new AlertWatcher(failing);
  await writtenLogs(async (lines) => {
    await withContext({ requestId: "req-answered" }, async () => {
      await ingestItems(stream, [{ ok: true, value: { n: 1 } }], {
        store,
        nowMs: T0,
        observers: [watcher.observe],
      });
      logger.info("still serving the request");
    });
    await watcher.idle();
    const [failure] = jsonLines(lines, "edgestream.alerts");
    assert.match(failure?.message ?? "", /Alert evaluation failed/, JSON.stringify(lines));
    assert.equal(failure.requestId, undefined, "background work is no part of the request");
    const [serving] = jsonLines(lines, "edgestream.test");
    assert.equal(serving.requestId, "req-answered", "records logged while serving keep it");
  });
  await watcher.close();
});

Deno.test("detached() leaves a request's log context for its work and the timers it starts, with LogTape's storage or another", async () => {
  const seen = async (read: () => unknown) => {
    const timer = Promise.withResolvers<unknown>();
    const now = await withContext({ requestId: "req-1" }, () =>
      detached(() => {
        setTimeout(() => timer.resolve(read()), 0);
        return read();
      }));
    return { now, later: await timer.promise };
  };
  // configureLogging's storage, an AsyncLocalStorage: the work runs in the context of the
  // module's loading, where the storage holds no store at all (an empty context of the request's,
  // `run({}, …)`, would hold `{}`).
  await writtenLogs(async () => {
    const storage = getConfig()!.contextLocalStorage!;
    const { now, later } = await seen(() => storage.getStore());
    assert.equal(now, undefined);
    assert.equal(later, undefined);
  });
  // A storage of another kind: run with an empty context of its own.
  const held: Record<string, unknown>[] = [];
  const storage = {
    getStore: () => held.at(-1),
    run<T>(store: Record<string, unknown>, callback: () => T): T {
      held.push(store);
      try {
        return callback();
      } finally {
        held.pop();
      }
    },
  };
  await configure({
    reset: true,
    sinks: {},
    loggers: [{ category: ["logtape", "meta"], sinks: [], lowestLevel: "fatal" }],
    contextLocalStorage: storage,
  });
  try {
    const inside = await withContext(
      { requestId: "req-2" },
      () => detached(() => storage.getStore()),
    );
    assert.deepEqual(inside, {});
  } finally {
    await reset();
  }
});
