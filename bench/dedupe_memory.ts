/**
 * Memory per held dedupe id in the memory store: the fingerprint table it
 * uses (`DedupeIds`) against the approach it replaced (the id strings in a
 * `Set<string>`), for the same ids in the same run, plus the whole
 * `MemoryStore` holding them through `applyBatch`. Each figure is the growth
 * of V8's used heap plus external memory (typed-array buffers live there)
 * between two full collections, divided by the ids held.
 *
 * Ids are 36-character UUID-like strings, each a fresh flat string as a
 * parsed JSON body gives, from a seeded generator so every part sees the
 * same ids.
 *
 * `deno task bench:dedupe [ids]` (default 1,000,000; needs `--v8-flags=--expose-gc`, which the
 * task passes)
 */
import { DedupeIds } from "../src/store/memory/_dedupe_ids.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import type { StoreBatch } from "../src/store/types.ts";
import { machineInfo, writeResults } from "./_shared.ts";

const machine = await machineInfo();
const IDS = Number(Deno.args[0] ?? 1_000_000);
const BATCH = 1_000;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("Run with --v8-flags=--expose-gc (deno task bench:dedupe)");

function collect(): number {
  for (let i = 0; i < 4; i++) gc!();
  const usage = Deno.memoryUsage();
  return usage.heapUsed + usage.external;
}

/** A seeded generator of UUID-like ids (mulberry32), so each part sees the same sequence. */
function idSource(): () => string {
  let state = 0x9e3779b9;
  const codes = new Array<number>(36);
  const hex = "0123456789abcdef";
  return () => {
    for (let i = 0; i < 36; i++) {
      if (i === 8 || i === 13 || i === 18 || i === 23) {
        codes[i] = 45; // "-"
        continue;
      }
      state = (state + 0x6d2b79f5) | 0;
      let t = Math.imul(state ^ (state >>> 15), 1 | state);
      t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
      codes[i] = hex.charCodeAt(((t ^ (t >>> 14)) >>> 0) & 15);
    }
    return String.fromCharCode(...codes);
  };
}

interface Measured {
  name: string;
  bytesPerId: number;
  nsPerId: number;
}

/** Builds a structure holding IDS ids, keeps it alive, and reports its growth per id. */
async function measure(
  name: string,
  build: (nextId: () => string) => Promise<unknown> | unknown,
): Promise<Measured> {
  const before = collect();
  const started = performance.now();
  const held = await build(idSource());
  const elapsed = performance.now() - started;
  const after = collect();
  // Keep `held` alive until after the measurement.
  if (held === undefined) throw new Error(`${name} built nothing`);
  return { name, bytesPerId: (after - before) / IDS, nsPerId: (elapsed * 1e6) / IDS };
}

const set = await measure("Set<string> (before)", (nextId) => {
  const ids = new Set<string>();
  for (let i = 0; i < IDS; i++) ids.add(nextId());
  if (ids.size !== IDS) throw new Error(`Expected ${IDS} distinct ids, got ${ids.size}`);
  return ids;
});

const table = await measure("DedupeIds (fingerprints)", (nextId) => {
  const ids = new DedupeIds({ maxIds: IDS * 2 });
  ids.rotateTo(0, 3_600_000);
  for (let i = 0; i < IDS; i++) ids.seen(nextId());
  if (ids.size !== IDS) throw new Error(`Expected ${IDS} held ids, got ${ids.size}`);
  return ids;
});

const store = await measure("MemoryStore.applyBatch", async (nextId) => {
  const memory = new MemoryStore({ now: () => 0, maxDedupeIds: IDS * 2 });
  for (let offset = 0; offset < IDS; offset += BATCH) {
    const batch: StoreBatch = {
      stream: "bench",
      nowMs: 0,
      latenessMs: 0,
      dedupeTtlMs: 3_600_000,
      counters: [],
      filtered: 0,
      events: Array.from(
        { length: Math.min(BATCH, IDS - offset) },
        () => ({ id: nextId(), timeMs: 0, updates: [] }),
      ),
    };
    await memory.applyBatch(batch);
  }
  const stats = await memory.stats("bench", []);
  if (stats.applied !== IDS) throw new Error(`Expected ${IDS} applied, got ${stats.applied}`);
  return memory;
});

console.log(`${IDS.toLocaleString("en")} held dedupe ids (36-character strings)`);
for (const result of [set, table, store]) {
  console.log(
    `${result.name.padEnd(26)} ${result.bytesPerId.toFixed(1).padStart(7)} bytes/id ${
      result.nsPerId.toFixed(0).padStart(6)
    } ns/id (incl. id generation)`,
  );
}
console.log(
  `ratio Set<string> / DedupeIds: ${(set.bytesPerId / table.bytesPerId).toFixed(1)}x less memory`,
);
const path = await writeResults("dedupe", {
  bench: "dedupe",
  machine,
  ids: IDS,
  rows: [set, table, store].map(({ name, bytesPerId, nsPerId }) => ({ name, bytesPerId, nsPerId })),
});
console.log(`\nresults: ${path}`);
