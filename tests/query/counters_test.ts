/**
 * Group filters of counter reads: what a read costs does not grow with the filter's text times
 * the groups it looks at.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { currentWindow, listWindows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/mod.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 30_000;

const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1h" },
      counters: {
        windows: {
          window: { tumbling: "1h" },
          groupBy: ["g"],
          aggregate: "count",
          maxGroups: 100_000,
        },
        sessions: { window: { session: "1h" }, groupBy: ["g"], aggregate: "count" },
      },
    },
  },
}).get("s")!;

Deno.test("a group filter's text is read once a read, not once for each group it is compared with", async () => {
  const store = new MemoryStore({ now: () => NOW });
  // 5,000 groups of array values ([0], [1], …) and 5,000 of strings.
  const events = Array.from({ length: 5000 }, (_, i) => [
    { t: T0 + 1000, g: [i] },
    { t: T0 + 1000, g: `s${i}` },
  ]).flat();
  for (let at = 0; at < events.length; at += 1000) {
    await ingestItems(
      stream,
      events.slice(at, at + 1000).map((value) => ({ ok: true as const, value })),
      { store, nowMs: NOW },
    );
  }
  // A filter of 60 KB: JSON text of an array, and a JSON string in double quotes. Parsing it for
  // every group of a window took seconds of the event loop (one parse per group, 5,000 of them).
  const filters = [
    `[${Array(15_000).fill(1).join(",")}]`,
    JSON.stringify("x".repeat(60_000)),
    "[ 4999 ]",
    '"s4999"',
  ];
  for (const counter of stream.counters) {
    for (const wanted of filters) {
      const started = performance.now();
      const rows = await listWindows(stream, counter, { store, nowMs: NOW }, {
        groups: { g: wanted },
      });
      const current = await currentWindow(stream, counter, { store, nowMs: NOW }, {
        groups: { g: wanted },
      });
      const elapsed = performance.now() - started;
      const expected = wanted === "[ 4999 ]" ? [[4999]] : wanted === '"s4999"' ? ["s4999"] : [];
      assert.deepEqual(rows.map((row) => row.group.g), expected, `${counter.name} ${wanted}`);
      assert.deepEqual(current.rows.map((row) => row.group.g), expected, counter.name);
      assert.ok(elapsed < 1000, `${counter.name}, ${wanted.slice(0, 10)}…: ${elapsed} ms`);
    }
  }
});
