/**
 * Run by `store_test.ts` and `tracing_test.ts` with the OpenTelemetry export
 * on: store calls through an {@linkcode InstrumentedStore} that answer, fail
 * with the store unreachable (a Redis store on a port where nothing listens)
 * and fail otherwise (a batch whose requests do not cover its events); and
 * one apply that serves the requests of two ingest spans, inside the second.
 */
import { Redis } from "@upstash/redis";
import { generationKey, MemoryStore, RedisStore, type StoreBatch } from "../../src/store/mod.ts";
import { attachIngestSpan, InstrumentedStore, traceIngest } from "../../src/telemetry/mod.ts";

function batch(requests: StoreBatch["requests"], events = 2, stream = "s"): StoreBatch {
  return {
    stream,
    nowMs: Date.now(),
    latenessMs: 0,
    dedupeTtlMs: 0,
    counters: [],
    events: Array.from({ length: events }, () => ({ timeMs: Date.now() })),
    requests,
  };
}

const memory = new InstrumentedStore(new MemoryStore());
await memory.ping();
await memory.stats("s", []);

// A group-commit batch: the first request comes from another ingest span.
const first = await traceIngest({ stream: "s", transport: "http" }, () => {
  const request = { events: 1, filtered: 0 };
  attachIngestSpan(request);
  return Promise.resolve(request);
});
await traceIngest({ stream: "s", transport: "ws" }, async () => {
  const second = { events: 1, filtered: 0 };
  attachIngestSpan(second);
  await memory.applyBatch(batch([first, second]));
});

// Under a generation's key (a stream created at run time): the span names the stream.
await memory.applyBatch(batch([{ events: 5, filtered: 0 }], 2, generationKey("s", 2))).then(
  () => {
    throw new Error("A batch whose requests do not cover its events must fail");
  },
  (error) => console.log(`refused: ${error.message}`),
);

const unreachable = new InstrumentedStore(
  new RedisStore(
    new Redis({
      url: "http://127.0.0.1:1",
      token: "t",
      enableTelemetry: false,
      retry: { retries: 0 },
    }),
    { timeoutMs: 5_000 },
  ),
);
await unreachable.ping().then(
  () => {
    throw new Error("A Redis store on a closed port must be unavailable");
  },
  (error) => console.log(`unavailable: ${error.name}: ${error.message}`),
);
// An apply on Redis: Deno's span of the Upstash fetch sits beneath the apply span.
await traceIngest({ stream: "redis", transport: "http" }, async () => {
  const request = { events: 1, filtered: 0 };
  attachIngestSpan(request);
  await unreachable.applyBatch({ ...batch([request], 1), stream: "redis" }).catch(() => {});
});
