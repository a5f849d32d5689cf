/**
 * The harness of the memory-vs-Redis differential checks (`differential_changes_test.ts`,
 * `differential_aggregates_test.ts`): the same steps through both stores, their traces compared.
 */
import assert from "node:assert/strict";
import type fc from "fast-check";
import type { Redis } from "@upstash/redis";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { ClosedWindow, Store } from "../../src/store/types.ts";

/** Where each store's clock starts. */
export const T0 = Date.parse("2026-01-01T00:00:00Z");

/**
 * What a sweep closed, in an order and form both stores give alike: each window's counter, ends
 * and groups, with every group's state (count, sum, min, max, distinct and its buckets, sorted).
 */
export function closedShape(windows: ClosedWindow[]) {
  return windows.map((w) => ({
    counter: w.counter,
    start: w.start,
    end: w.end,
    groups: w.groups.map((g) => [
      g.group,
      g.state.count,
      g.state.sum,
      g.state.min,
      g.state.max,
      g.state.distinct,
      // Bucket order is no part of the state: the stores may list them apart.
      g.state.bins && Object.entries(g.state.bins).sort(([a], [b]) => a.localeCompare(b)),
    ]).sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
  })).sort((a, b) =>
    a.counter.localeCompare(b.counter) || a.start - b.start || a.end - b.end ||
    JSON.stringify(a.groups).localeCompare(JSON.stringify(b.groups))
  );
}

/**
 * fast-check's parameters: DIFF_RUNS runs (default `runs`), or the failure DIFF_SEED and
 * DIFF_PATH name replayed.
 */
export function differentialParameters(runs: number): fc.Parameters<unknown> {
  return {
    numRuns: Number(Deno.env.get("DIFF_RUNS") ?? runs),
    ...(Deno.env.get("DIFF_SEED")
      ? { seed: Number(Deno.env.get("DIFF_SEED")), path: Deno.env.get("DIFF_PATH") }
      : {}),
  };
}

/**
 * Plays the same steps through a MemoryStore and a RedisStore (keys under `prefix`), each with
 * its own clock from {@linkcode T0} that `play` moves, and asserts that their traces are equal,
 * showing where they first part.
 */
export async function assertStoresAgree(
  redis: Redis,
  prefix: string,
  play: (store: Store, clock: { now: number }) => Promise<unknown[]>,
): Promise<void> {
  const a = { now: T0 };
  const b = { now: T0 };
  const memory = new MemoryStore({ now: () => a.now });
  const shared = new RedisStore(redis, { prefix, now: () => b.now });
  const ta = await play(memory, a);
  const tb = await play(shared, b);
  // The diff only on a mismatch: it walks every step of both.
  if (JSON.stringify(ta) !== JSON.stringify(tb)) assert.fail(firstDiff(ta, tb));
}

/**
 * The first step at which two traces differ, and 400 characters of each before where they do (a
 * step one trace lacks, past its end, reads `undefined`).
 */
function firstDiff(a: unknown[], b: unknown[]): string {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const [x, y] = [String(JSON.stringify(a[i])), String(JSON.stringify(b[i]))];
    if (x === y) continue;
    let at = 0;
    while (at < Math.min(x.length, y.length) && x[at] === y[at]) at++;
    const from = Math.max(0, at - 400);
    return `step ${i} at ${at}:\n memory …${x.slice(from, at + 200)}\n redis  …${
      y.slice(from, at + 200)
    }`;
  }
  return "same";
}
