/**
 * The page's polls: a task run now and again some time after each run ends. A task that throws
 * or rejects (a bug: the tasks show their own read failures) is logged to the console and run
 * again as usual, not left as an unhandled rejection.
 *
 * @module
 */

/** Runs `task`, logging what it throws; resolves to its answer (undefined when it threw). */
async function runLogged(task) {
  try {
    return await task();
  } catch (error) {
    console.error("dashboard: a poll failed; it runs again as usual:", error);
    return undefined;
  }
}

/**
 * Runs `task` now and then `everyMs` after each run ends, until the page goes
 * or the task answers `false` (asking again cannot change its answer).
 */
export function every(everyMs, task) {
  async function run() {
    if (await runLogged(task) !== false) setTimeout(run, everyMs);
  }
  run();
}

/**
 * As {@linkcode every}, without an end, and returns `wake()`: run the task now (or, when it is
 * running, again as soon as it ends) instead of waiting for the rest of `everyMs`.
 */
export function everyUntilWoken(everyMs, task) {
  let timer = null;
  let running = false;
  let woken = false;
  async function run() {
    timer = null;
    running = true;
    woken = false;
    await runLogged(task);
    running = false;
    timer = setTimeout(run, woken ? 0 : everyMs);
  }
  run();
  return function wake() {
    if (running) woken = true;
    else if (timer !== null) {
      clearTimeout(timer);
      run();
    }
  };
}
