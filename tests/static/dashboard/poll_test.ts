/**
 * The dashboard's polls (static/dashboard/poll.js) on a fake clock: a task that throws or rejects
 * is logged and run again as usual, never an unhandled rejection.
 */
import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { every, everyUntilWoken } from "../../../static/dashboard/poll.js";

/** `console.error`'s calls until `restore()`, which puts it back. */
function capturingErrors(): { logged: unknown[][]; restore(): void } {
  const original = console.error;
  const logged: unknown[][] = [];
  console.error = (...args: unknown[]) => logged.push(args);
  return { logged, restore: () => console.error = original };
}

/** Rejections nobody handled, seen until `restore()` (which lets Deno see them again). */
function catchingUnhandled(): { seen: unknown[]; restore(): void } {
  const seen: unknown[] = [];
  const listener = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    seen.push(event.reason);
  };
  globalThis.addEventListener("unhandledrejection", listener);
  return { seen, restore: () => globalThis.removeEventListener("unhandledrejection", listener) };
}

Deno.test("every() and everyUntilWoken() log a task that throws or rejects and run it again as usual, leaving no unhandled rejection", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const errors = capturingErrors();
  const unhandled = catchingUnhandled();
  try {
    const runs: Record<string, number[]> = { throws: [], rejects: [], woken: [] };
    every(1_000, () => {
      runs.throws.push(clock.now);
      throw new Error("thrown");
    });
    every(1_000, () => {
      runs.rejects.push(clock.now);
      return Promise.reject(new Error("rejected"));
    });
    const wake = everyUntilWoken(2_000, () => {
      runs.woken.push(clock.now);
      throw new Error("woken and thrown");
    });
    await clock.tickAsync(2_500);
    wake();
    await clock.tickAsync(0);
    clock.uninstall();
    // Deno tells of a rejection nobody handled after a turn of its event loop.
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(unhandled.seen, []);
    assert.deepEqual(runs, {
      throws: [0, 1_000, 2_000],
      rejects: [0, 1_000, 2_000],
      woken: [0, 2_000, 2_500],
    });
    assert.equal(errors.logged.length, 9);
    const reasons = errors.logged.map((args) => (args.at(-1) as Error).message);
    assert.deepEqual(new Set(reasons), new Set(["thrown", "rejected", "woken and thrown"]));
  } finally {
    clock.uninstall();
    errors.restore();
    unhandled.restore();
  }
});

Deno.test("every() stops when its task answers false, and not when it answers anything else", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  try {
    const runs: number[] = [];
    const answers: unknown[] = [undefined, true, null, false];
    every(500, () => {
      runs.push(clock.now);
      return Promise.resolve(answers.shift());
    });
    await clock.tickAsync(10_000);
    assert.deepEqual(runs, [0, 500, 1_000, 1_500]);
  } finally {
    clock.uninstall();
  }
});
