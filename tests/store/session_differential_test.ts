/**
 * Differential check of session counters on both stores (review15): random batches of events
 * (extending and merging sessions, late ones), sweeps, reads, and real pauses (with the sweep
 * running, longer than the sessions' ttl, so the keep-alive matters; or without it, shorter than
 * ttl/2, or long enough that everything expires) through a MemoryStore and a RedisStore on a real
 * redis-server, in lockstep: every ingest reply, close and read must be equal, and no session may
 * close twice. DIFF_RUNS (default 6) for longer hunts (40 runs took 2 min 36 s here).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { readSessionRows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { Store } from "../../src/store/types.ts";
import { redisTest, restClient } from "../_redis.ts";

const GAP = 300;
const LATENESS = 200;
// ttl = gap + lateness + retention = 1,500 ms of wall time.
const TTL = 1_500;
// A gap shorter than a second keeps the real pauses short: taken as a stream stored or deployed
// before such gaps were refused is (a definition sent now is refused).
const compiled = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: `${LATENESS}ms` },
      counters: {
        n: {
          window: { session: `${GAP}ms` },
          groupBy: ["g"],
          aggregate: "count",
          retention: "1s",
        },
        top: {
          window: { session: `${GAP}ms` },
          groupBy: ["g"],
          aggregate: { max: "v" },
          retention: "1s",
        },
        users: {
          window: { session: `${GAP}ms` },
          groupBy: ["g"],
          aggregate: { distinct: "u" },
          retention: "1s",
        },
      },
    },
  },
}, { shortWindows: true });
const stream = compiled.get("s")!;
assert.equal(stream.counterMetas[0].ttlMs, TTL);

const E = Date.parse("2026-01-01T00:00:00Z");

type Op =
  | { kind: "batch"; advance: number; events: { dt: number; g: string; u: string; v: number }[] }
  | { kind: "sweep" }
  | { kind: "read" }
  | { kind: "quiet"; ms: number }
  | { kind: "pause"; ms: number }
  | { kind: "expireAll" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("batch" as const),
      advance: fc.integer({ min: 0, max: 700 }),
      events: fc.array(
        fc.record({
          dt: fc.integer({ min: -700, max: 400 }),
          g: fc.constantFrom("a", "b", "c"),
          u: fc.constantFrom("x", "y", "z"),
          v: fc.integer({ min: -5, max: 5 }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
  },
  { weight: 4, arbitrary: fc.constant({ kind: "sweep" as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: "read" as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("quiet" as const),
      ms: fc.integer({ min: 0, max: 250 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("pause" as const),
      ms: fc.integer({ min: 1_700, max: 3_200 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "expireAll" as const }) },
);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sweep(store: Store) {
  return store.closeWindows("s", stream.counterMetas, { latenessMs: LATENESS });
}

async function closedRows(store: Store) {
  return (await sweep(store)).map((window) =>
    JSON.stringify([
      window.counter,
      window.start - E,
      window.end - E,
      window.groups.map((group) => [
        group.group,
        group.state.count,
        window.counter === "top" ? group.state.max : null,
        window.counter === "users" ? group.state.distinct : null,
      ]),
    ])
  ).sort();
}

async function reads(store: Store) {
  const out: unknown[] = [];
  for (const counter of stream.counters) {
    const rows = await readSessionRows(stream, counter, { store, nowMs: Date.now() });
    out.push(
      counter.name,
      rows.map((row) => [row.start, row.end, row.group.g, row.value, row.final]),
    );
  }
  return out;
}

redisTest(
  "sessions: memory and Redis agree on random batches, sweeps, reads and pauses",
  async (fixture) => {
    const redis = restClient(fixture);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 4, maxLength: 16 }), async (ops) => {
        run += 1;
        await redis.flushall();
        const memory = new MemoryStore();
        const onRedis = new RedisStore(redis);
        const stores: [string, Store][] = [["memory", memory], ["redis", onRedis]];
        const closedOnce = new Map<string, Set<string>>([["memory", new Set()], [
          "redis",
          new Set(),
        ]]);
        let cursor = E + 1_000;
        const trace: string[] = [];
        const step = async (
          label: string,
          each: (store: Store, which: string) => Promise<unknown>,
        ) => {
          const results: unknown[] = [];
          for (const [which, store] of stores) results.push(await each(store, which));
          trace.push(`${label}: ${JSON.stringify(results[0])}`);
          assert.deepEqual(
            results[1],
            results[0],
            `run ${run}: ${label}\n${trace.join("\n")}`,
          );
        };
        const closeStep = () =>
          step("sweep", async (store, which) => {
            const rows = await closedRows(store);
            for (const row of rows) {
              const [counter, start, , groups] = JSON.parse(row);
              const id = `${counter}|${start}|${groups[0][0]}`;
              assert.ok(!closedOnce.get(which)!.has(id), `${which} closed ${id} twice`);
              closedOnce.get(which)!.add(id);
            }
            return rows;
          });
        for (const op of ops) {
          switch (op.kind) {
            case "batch": {
              cursor += op.advance;
              const items = op.events.map((event) => ({
                ok: true as const,
                value: { t: cursor + event.dt, g: event.g, u: event.u, v: event.v },
              }));
              await step(`batch ${JSON.stringify(items.map((i) => i.value))}`, async (store) => {
                const reply = await ingestItems(stream, items, { store, nowMs: Date.now() });
                return [reply.accepted, reply.late, reply.rejected.length];
              });
              break;
            }
            case "sweep":
              await closeStep();
              break;
            case "read":
              await step("read", (store) => reads(store));
              break;
            case "quiet":
              await sleep(op.ms);
              break;
            case "pause": {
              const until = Date.now() + op.ms;
              while (Date.now() < until) {
                await closeStep();
                await sleep(200);
              }
              break;
            }
            case "expireAll":
              await sleep(TTL * 2 + 200);
              break;
          }
        }
        await closeStep();
        await step("read", (store) => reads(store));
        // Everything due closes once the watermark moves far on.
        cursor += 10_000;
        await step("final batch", async (store) => {
          const reply = await ingestItems(stream, [{
            ok: true,
            value: { t: cursor, g: "z", u: "x", v: 0 },
          }], {
            store,
            nowMs: Date.now(),
          });
          return [reply.accepted, reply.late];
        });
        await closeStep();
        await step("read", (store) => reads(store));
        await step(
          "log",
          async (store) =>
            (await store.readLog("s", null, 10_000)).filter((e) =>
              e.record.type === "window.closed"
            ).length,
        );
      }),
      { numRuns: Number(Deno.env.get("DIFF_RUNS") ?? 6), endOnFailure: true },
    );
  },
);
