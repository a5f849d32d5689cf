import assert from "node:assert/strict";
import { SessionTable } from "../../../src/store/memory/_sessions.ts";
import type { CounterMeta } from "../../../src/store/types.ts";

function sessionCounter(maxSessions: number, ttlMs: number): CounterMeta {
  return {
    name: "visits",
    aggregate: "count",
    maxGroups: 1000,
    ttlMs,
    sizeMs: 0,
    hopMs: 0,
    session: { gapMs: 1000, maxSessions },
  };
}

Deno.test("admits() on a full table whose open sessions expire one a millisecond looks at 2 open sessions' lives to find the expired one (expiryChecks), not all 2,000", () => {
  // 2,000 open sessions, the counter's maxSessions, one opened a millisecond, so once full one
  // expires each millisecond: every new group's admit finds one expired. Looking at every open
  // session's life for it is 2,000 an admit; from the front of an expiry order, the expired one
  // and the next. expiryChecks counts only that search (not the admitted group's own sessions).
  const n = 2_000;
  const counter = sessionCounter(n, n);
  const table = new SessionTable("count");
  for (let i = 0; i < n; i++) table.add(counter, { pane: 0, group: `g${i}` }, i);
  assert.equal(table.expiryChecks, 0);
  for (let k = 0; k < 200; k++) {
    const now = n + k;
    assert.ok(table.admits(counter, `new${k}`, { firstMs: 0, lastMs: 0 }, now), `admit ${k}`);
    table.add(counter, { pane: 0, group: `new${k}` }, now);
    assert.equal(table.expiryChecks, 2 * (k + 1), `lives looked at by admit ${k}`);
  }
});

Deno.test("admits() on a full table looks at every open session's life once to find the expired ones (expiryChecks) after a life given out of order, then from the front again", () => {
  // A lowered ttl gives "late" an earlier end than the sessions before it: the expiry order is
  // broken, so the next admit looks at every open session once and orders them again.
  const table = new SessionTable("count");
  const long = sessionCounter(4, 1_000);
  const short = sessionCounter(4, 100);
  for (let i = 0; i < 3; i++) table.add(long, { pane: 0, group: `g${i}` }, i);
  table.add(short, { pane: 0, group: "late" }, 3);
  const run = { firstMs: 0, lastMs: 0 };
  assert.equal(table.admits(long, "a", run, 103), true);
  assert.equal(table.expiryChecks, 4);
  table.add(long, { pane: 0, group: "a" }, 103);
  assert.equal(table.admits(long, "b", run, 1_000), true);
  assert.equal(table.expiryChecks, 6);
});

Deno.test("an expired open session leaves room whatever order the lives were given in", () => {
  // A lowered ttl (a PUT lowering retention) gives a later session an earlier end than older
  // ones: it still leaves room once expired, before they do.
  const table = new SessionTable("count");
  const long = sessionCounter(3, 10_000);
  const short = sessionCounter(3, 100);
  table.add(long, { pane: 0, group: "a" }, 0);
  table.add(long, { pane: 0, group: "b" }, 1);
  table.add(short, { pane: 0, group: "c" }, 2);
  const run = { firstMs: 0, lastMs: 0 };
  assert.equal(table.admits(short, "d", run, 50), false);
  assert.equal(table.admits(short, "d", run, 102), true);
  table.add(short, { pane: 0, group: "d" }, 102);
  assert.equal(table.admits(short, "e", run, 150), false);
  assert.equal(table.admits(long, "e", run, 202), true);
  table.add(long, { pane: 0, group: "e" }, 202);
  // Kept open by a write: "a" lives on, so no room until "b" expires.
  table.add(long, { pane: 0, group: "a" }, 5_000);
  assert.equal(table.admits(long, "f", run, 10_000), false);
  assert.equal(table.admits(long, "f", run, 10_001), true);
  assert.deepEqual(
    table.read({ fromMs: -1, toMs: 1, open: true }, 10_001).map((s) => s.group).sort(),
    ["a", "e"],
  );
});
