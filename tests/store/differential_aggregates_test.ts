/**
 * Differential check of the aggregates `differential_changes_test.ts` does not draw: min, max, avg
 * and quantiles over tumbling, hopping and sliding windows, a pane cap (`maxGroups`) that
 * overflows into `__other__`, and the reads that rank or filter groups (`top`, `by`, `q`,
 * `group.<field>`, `…/current`). Random batches (late events, duplicates, out of order) and sweeps
 * go through the memory store and the Redis store; every reply, close and read must agree.
 *
 * Knobs: DIFF_RUNS (default 40), DIFF_SEED / DIFF_PATH to replay a failure.
 */
import fc from "fast-check";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { currentWindow, listTopWindows, listWindows } from "../../src/query/mod.ts";
import type { Store } from "../../src/store/types.ts";
import { redisTest, restClient } from "../_redis.ts";
import { assertStoresAgree, closedShape, differentialParameters } from "./_differential.ts";

const stream: CompiledStream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "30s" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        lo: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { min: "v" }, maxGroups: 2 },
        hi: { window: { hopping: "2m", every: "1m" }, groupBy: ["g"], aggregate: { max: "v" } },
        mean: {
          window: { sliding: "3m", precision: "1m" },
          groupBy: ["g"],
          aggregate: { avg: "v" },
        },
        lat: {
          window: { hopping: "3m", every: "1m" },
          groupBy: ["g"],
          aggregate: { quantiles: "v", accuracy: 0.02 },
        },
        latCap: {
          window: { tumbling: "1m" },
          groupBy: ["g", "h"],
          aggregate: { quantiles: "v" },
          maxGroups: 2,
        },
        users: {
          window: { sliding: "2m", precision: "1m" },
          groupBy: ["h"],
          aggregate: { distinct: "u" },
          maxGroups: 2,
        },
        // A step that does not divide the size: 1-minute panes, windows every 2 minutes.
        odd: {
          window: { hopping: "3m", every: "2m" },
          groupBy: ["h"],
          aggregate: { distinct: "g" },
        },
        oddSum: { window: { hopping: "3m", every: "2m" }, aggregate: { sum: "v" } },
        total: {
          window: { tumbling: "1m" },
          groupBy: ["g"],
          aggregate: { sum: "v" },
          maxGroups: 1,
        },
      },
    },
  },
}).get("s")!;

type Ev = {
  id: number;
  dt: number;
  g: string;
  h: number | null;
  v: number | null;
  u: number | null;
};
type Op =
  | { kind: "ingest"; events: Ev[] }
  | { kind: "tick"; ms: number }
  | { kind: "sweep" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("ingest" as const),
      events: fc.array(
        fc.record({
          id: fc.integer({ min: 0, max: 40 }),
          dt: fc.integer({ min: -200_000, max: 20_000 }),
          g: fc.constantFrom("a", "b", "c"),
          h: fc.constantFrom(1, 2, 3, null),
          v: fc.oneof(
            fc.constant(null),
            fc.integer({ min: -50, max: 50 }),
            fc.double({ min: -1e6, max: 1e6, noNaN: true }),
          ),
          u: fc.oneof(fc.integer({ min: 0, max: 6 }), fc.constant(null), fc.constant(-1)),
        }),
        { minLength: 1, maxLength: 8 },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("tick" as const),
      ms: fc.integer({ min: 0, max: 120_000 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("sweep" as const) }) },
);

async function reads(store: Store, nowMs: number) {
  const out: Record<string, unknown> = {};
  const context = { store, nowMs };
  for (const counter of stream.counters) {
    const quantiles = counter.aggregate.kind === "quantiles" ? [0, 0.3, 0.99, 1] : undefined;
    const rows = await listWindows(stream, counter, context, { limit: 1000, quantiles });
    const filtered = await listWindows(stream, counter, context, {
      limit: 1000,
      groups: { g: "b" },
    });
    const top = await listTopWindows(stream, counter, context, {
      top: 1,
      limit: 20,
      by: counter.aggregate.kind === "quantiles" ? 0.9 : undefined,
    });
    const current = await currentWindow(stream, counter, context, { top: 1 });
    const currentAll = await currentWindow(stream, counter, context, { quantiles });
    const value = { rows, filtered, top, current, currentAll };
    // Distinct values on Redis carry `approximate: true` (HyperLogLog, documented); with at most
    // seven values per window the estimate is exact, so only the flag is dropped.
    out[counter.name] = counter.aggregate.kind === "distinct"
      ? JSON.parse(JSON.stringify(value, (key, v) => key === "approximate" ? undefined : v))
      : value;
  }
  return out;
}

async function play(store: Store, ops: Op[], clock: { now: number }): Promise<unknown[]> {
  const trace: unknown[] = [];
  const warm: Op = { kind: "ingest", events: [{ id: 99, dt: 0, g: "a", h: 1, v: 1, u: 0 }] };
  for (const op of [warm, ...ops]) {
    if (op.kind === "tick") clock.now += op.ms;
    else if (op.kind === "sweep") {
      const closed = await store.closeWindows(stream.name, stream.counterMetas, {
        latenessMs: stream.latenessMs,
        idleMs: stream.idleMs,
      });
      trace.push(["sweep", clock.now, closedShape(closed)]);
    } else {
      const events = op.events.map((e) => ({
        id: `i${e.id}`,
        t: clock.now + e.dt,
        g: e.g,
        h: e.h,
        v: e.v,
        // -1: no field at all; null: a JSON null.
        ...(e.u === -1 ? {} : { u: e.u === null ? null : `u${e.u}` }),
      }));
      const reply = await ingestItems(
        stream,
        events.map((value) => ({ ok: true as const, value })),
        { store, nowMs: clock.now },
      );
      trace.push(["ingest", clock.now, reply]);
    }
    trace.push(["read", clock.now, await reads(store, clock.now)]);
  }
  trace.push(["stats", await store.stats(stream.name, stream.counterMetas)]);
  return trace;
}

redisTest(
  "memory and Redis agree on min, max, avg, quantiles, top, q and group filters over capped panes",
  async (fixture) => {
    const redis = restClient(fixture);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        run += 1;
        await assertStoresAgree(redis, `a${run}`, (store, clock) => play(store, ops, clock));
      }),
      differentialParameters(40),
    );
  },
);
