import assert from "node:assert/strict";
import { CloseBudget } from "../../src/fanout/_close_budget.ts";
import { WINDOWS_PER_SWEEP } from "../../src/fanout/sweep.ts";
import { SESSIONS_PER_WINDOW } from "../../src/store/types.ts";

Deno.test("CloseBudget: the whole budget before anything closed, what the busiest counter left after", () => {
  const budget = new CloseBudget(WINDOWS_PER_SWEEP);
  assert.equal(budget.limit, 100);
  for (let i = 0; i < 30; i++) budget.take("per_minute", false);
  for (let i = 0; i < 10; i++) budget.take("per_hour", false);
  assert.equal(budget.limit, 70);
  // Another counter's closes count for the limit only once they are the most.
  for (let i = 0; i < 45; i++) budget.take("per_hour", false);
  assert.equal(budget.limit, 45);
});

Deno.test("CloseBudget counts sessions in tenths of a window, rounded up: a session counter gets ten times the windows in sessions", () => {
  assert.equal(SESSIONS_PER_WINDOW, 10);
  const budget = new CloseBudget(100);
  budget.take("visits", true);
  assert.equal(budget.limit, 99, "one session begins a window's worth");
  for (let i = 1; i < 10; i++) budget.take("visits", true);
  assert.equal(budget.limit, 99);
  budget.take("visits", true);
  assert.equal(budget.limit, 98);
  // At 990 the next call may close 10 more (limit 1 × 10): at most 1,000 in the sweep; past 990,
  // none.
  for (let i = 11; i < 990; i++) budget.take("visits", true);
  assert.equal(budget.limit, 1);
  budget.take("visits", true);
  assert.equal(budget.limit, 0);
  // Windows and sessions of different counters: the busiest in sessions wins.
  const mixed = new CloseBudget(100);
  for (let i = 0; i < 3; i++) mixed.take("per_minute", false);
  for (let i = 0; i < 25; i++) mixed.take("visits", true);
  assert.equal(mixed.limit, 97);
  for (let i = 0; i < 10; i++) mixed.take("visits", true);
  assert.equal(mixed.limit, 96);
});

Deno.test("CloseBudget.limitOf() is what the busiest of the named counters left: a counter that used its budget limits no other", () => {
  const budget = new CloseBudget(100);
  for (let i = 0; i < 100; i++) budget.take("per_minute", false);
  for (let i = 0; i < 30; i++) budget.take("per_hour", false);
  for (let i = 0; i < 15; i++) budget.take("visits", true);
  assert.equal(budget.limit, 0);
  assert.equal(budget.limitOf(["per_minute", "per_hour"]), 0);
  assert.equal(budget.limitOf(["per_hour", "visits"]), 70);
  assert.equal(budget.limitOf(["visits"]), 98);
  assert.equal(budget.limitOf(["untouched"]), 100);
});
