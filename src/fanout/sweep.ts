/**
 * The sweep: periodic work that is not tied to a request. It closes windows
 * that became final, fires the alerts their final values make true and then
 * lets the fan-out consumers (webhooks) dispatch the result log into stored
 * deliveries; every instance may run it, the store makes sure each window
 * closes (and each alert fires) exactly once.
 *
 * A sweep resolves once that work is durable. What the consumers then do in
 * the background (webhook sends, which a slow receiver can stretch to the
 * request timeout) does not hold it up; a caller whose isolate may stop as
 * soon as it returns (Deno Deploy's cron handler) waits for the sends itself
 * (`WebhookService.settle()`). Sends cut short are not lost: deliveries are
 * stored, and one whose attempt was not recorded is due again when its
 * claim's lease ends.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CompiledStream } from "../config/mod.ts";
import {
  type AlertFiring,
  type ClosedWindow,
  type ClosedWindows,
  type CloseOptions,
  type CounterMeta,
  isStoreDown,
  SESSIONS_PER_WINDOW,
  type Store,
} from "../store/types.ts";
import { OutageLog, recordWindowsClosed } from "../telemetry/mod.ts";
import { countFirings, evaluateAlerts } from "./alerts.ts";
import { CloseBudget } from "./_close_budget.ts";

const logger = getLogger(["edgestream", "sweep"]);

/** What one sweep did, per stream. */
export interface SweepReport<Queued = unknown> {
  /** Windows closed by this sweep, with their final values. */
  closed: Array<ClosedWindow & { stream: string }>;
  /** Alerts the closed windows' final values fired (new firings only). */
  fired: Array<AlertFiring & { stream: string }>;
  /** What each fan-out consumer's sweep queued, when there are consumers. */
  fanout?: Queued[];
  /**
   * Streams whose sweep failed, with the error: the other streams and the consumers still ran,
   * so one stream (a broken key, a call of its refused as too large, say) holds up no other's
   * windows and deliveries. A store that cannot be reached fails the whole sweep instead
   * (`StoreUnavailableError`, thrown; see {@linkcode isStoreDown}).
   */
  failed: Array<{ stream: string; error: unknown }>;
  /**
   * Errors of fan-out consumers whose sweep failed other than by the store being unreachable (a
   * webhook key Redis refuses, say), one a consumer; absent when none did. The windows were
   * closed and the alerts fired all the same: they are reported, not lost with the error.
   */
  fanoutFailed?: unknown[];
}

/** Fan-out work that runs after windows are closed (e.g. the webhook service). */
export interface SweepConsumer<Queued = unknown> {
  /**
   * Runs its periodic work up to where it is durable (webhooks: deliveries
   * stored), starts the rest in the background and says what it queued.
   */
  sweep(): Promise<Queued>;
  /** Runs before any window is closed (webhooks: holds the result logs for dispatch). */
  prepare?(): Promise<void>;
}

/** Options for {@linkcode sweepOnce}. */
export interface SweepOptions<Queued = unknown> {
  /** Run after closing windows and firing alerts, in order. @default {[]} */
  consumers?: readonly SweepConsumer<Queued>[];
}

/** Runs one sweep over every stream. */
export async function sweepOnce<Queued = unknown>(
  streams: Iterable<CompiledStream>,
  store: Store,
  options: SweepOptions<Queued> = {},
): Promise<SweepReport<Queued>> {
  const report: SweepReport<Queued> = { closed: [], fired: [], failed: [] };
  const consumers = options.consumers ?? [];
  for (const consumer of consumers) await consumer.prepare?.();
  for (const stream of streams) {
    if (stream.counters.length === 0) continue;
    try {
      await sweepStream(stream, store, report);
    } catch (error) {
      // The store unreachable fails every stream alike (each after its deadline): stop here. A
      // call refused as too large is this stream's own: the others still close.
      if (isStoreDown(error)) throw error;
      report.failed.push({ stream: stream.name, error });
    }
  }
  if (consumers.length === 0) return report;
  const fanout: Queued[] = [];
  const fanoutFailed: unknown[] = [];
  for (const consumer of consumers) {
    try {
      fanout.push(await consumer.sweep());
    } catch (error) {
      // Unreachable fails the whole sweep (503), as for the streams. Anything else is the
      // consumer's own (a call refused as too large included): what this sweep closed (each
      // window once, never again) is still reported.
      if (isStoreDown(error)) throw error;
      logger.error("Sweep fan-out failed after the windows closed: {error}", { error });
      fanoutFailed.push(error);
    }
  }
  return { ...report, fanout, ...(fanoutFailed.length > 0 ? { fanoutFailed } : {}) };
}

/**
 * Most windows a sweep closes per counter (of a session counter, `SESSIONS_PER_WINDOW`
 * times as many sessions): a backlog (a backfill, say) closes over several sweeps.
 */
export const WINDOWS_PER_SWEEP = 100;

/**
 * Closes one stream's final windows and fires their alerts, adding both to `report`. The store
 * closes a bounded number of cells a call (`CLOSE_CELLS_PER_CALL`): while it says more are
 * due, the sweep calls again, letting other work run in between, up to
 * {@linkcode WINDOWS_PER_SWEEP} windows per counter (a window closed over several calls counts once).
 * A call's `limit` is what the busiest counter in it left, so once nothing more is due within it,
 * the counters that closed as many as it let them and have budget left are called again without
 * the others: a counter that used its budget holds up no other (one with windows past the cells
 * of a call closed none while another counter of its stream took its 100).
 */
async function sweepStream(
  stream: CompiledStream,
  store: Store,
  report: SweepReport<unknown>,
): Promise<void> {
  const listed = new Map<string, ClosedWindow & { stream: string }>();
  const budget = new CloseBudget(WINDOWS_PER_SWEEP);
  let counters = stream.counterMetas;
  for (let call = 0;; call++) {
    if (call > 0) await nextTurn();
    const limit = budget.limitOf(counters.map((counter) => counter.name));
    // The version of the definition whose lateness and idle these are: a later one that kept
    // final may still take events into windows they call due, so the store then closes nothing.
    // A config stream whose record another deployment replaced closes by the later-closing terms
    // of both, as of that record's version (see CompiledStream.closeTerms).
    const { latenessMs, idleMs, definitionVersion } = stream.closeTerms ?? stream;
    const options = { latenessMs, idleMs, limit, definitionVersion };
    const windows = await closeOnce(stream, counters, store, report, options);
    const atLimit = countersAtLimit(counters, windows, limit);
    for (const window of windows) {
      const session = stream.counterMetas.find((meta) => meta.name === window.counter)?.session;
      // A window closed over several calls is listed once, with the groups of each.
      const key = `${window.counter}|${window.start}`;
      const known = session ? undefined : listed.get(key);
      if (known) {
        known.groups.push(...window.groups);
        continue;
      }
      const entry = { ...window, groups: [...window.groups], stream: stream.name };
      report.closed.push(entry);
      // Counted by the call that claimed it: one another sweep (or instance) started is not
      // counted again here.
      if (!window.continued) {
        recordWindowsClosed(1, { stream: stream.name, counter: window.counter });
      }
      if (!session) listed.set(key, entry);
      budget.take(window.counter, session !== undefined);
    }
    // A call that closed nothing (another instance moved on what its peek listed) leaves the rest
    // to the next sweep rather than peek again at once.
    if (windows.more && windows.length > 0) continue;
    if (windows.more) return;
    // Nothing more is due within this call's limit: a counter the limit stopped may have more.
    counters = counters.filter((counter) =>
      atLimit.has(counter.name) && budget.limitOf([counter.name]) > 0
    );
    if (counters.length === 0) return;
  }
}

/** One close call of a stream, its alerts fired first (see {@linkcode sweepStream}). */
async function closeOnce(
  stream: CompiledStream,
  counters: CounterMeta[],
  store: Store,
  report: SweepReport<unknown>,
  options: CloseOptions,
): Promise<ClosedWindows> {
  const alerted = new Set<string>();
  // Each close call: its counters and how far it may close (none: as far as is due).
  let calls: Array<{ counters: CounterMeta[]; through?: number; throughSession?: SessionAt }> = [{
    counters,
  }];
  let cut = false;
  // What the peek listed, bounding what the closes take of a window closed over several calls.
  let listed: CloseOptions["listed"];
  if (stream.alerts.length > 0) {
    // Alerts on final values fire before their windows close, so a crash in
    // between only repeats the evaluation (fireAlerts keeps it once).
    const due = await store.closeWindows(stream.name, counters, {
      ...options,
      peek: true,
    });
    // Refused (the incarnation gone): the close would be refused too, and ask the store again.
    if (due.gone) return due;
    for (const firing of await fireOnFinal(stream, store, due)) {
      report.fired.push({ ...firing, stream: stream.name });
    }
    for (const window of due) for (const key of closedKeys(window)) alerted.add(key);
    // A peek that judged nothing (no batch applied yet, a later definition, skipped as nothing was
    // due) lists nothing: a close would claim whatever a batch of another instance made due in
    // between, its alerts never judged. Nothing closes; the next sweep's peek sees it.
    if (due.cutoff === undefined) return due;
    calls = peekBounds(counters, due, {
      cutoff: due.cutoff,
      limit: options.limit ?? WINDOWS_PER_SWEEP,
    });
    cut = due.more === true;
    listed = listedOf(due, counters);
  }
  // No further than the peek judged (see CloseOptions.through): a window that became due after it,
  // or past where the peek stopped, is closed by a later call, once its alerts are fired. Counters
  // the peek stopped at differently close in calls of their own, so that one counter's backlog
  // holds back no other counter (an extra call only when the peek was cut).
  const windows: ClosedWindows = [];
  for (const call of calls) {
    const closed = await store.closeWindows(stream.name, call.counters, {
      ...options,
      ...(call.through === undefined ? {} : { through: call.through }),
      ...(call.throughSession === undefined ? {} : { throughSession: call.throughSession }),
      ...(listed === undefined ? {} : { listed }),
    });
    windows.push(...closed);
    if (closed.more) windows.more = true;
    if (closed.laterDefinition !== undefined) windows.laterDefinition = closed.laterDefinition;
    if (closed.gone) {
      windows.gone = true;
      if (closed.recordMissing) windows.recordMissing = true;
    }
    // Refused: every call again would be refused too.
    if (closed.gone || closed.laterDefinition !== undefined) break;
  }
  // What the peek stopped short of (counters it reached none of, a window held back) waits for the
  // next call, which the sweep makes at once.
  if (cut && !windows.gone && windows.laterDefinition === undefined) windows.more = true;
  if (stream.alerts.length === 0) return windows;
  // Windows (or groups of them) the peek did not list: the bounds above keep the closes to what it
  // listed (`through`, `throughSession`, `listed`, which also holds a window the peek listed in
  // part that would fit whole into its own call to its listed groups), so this is a fallback.
  // Their alerts are judged here, after the close.
  const late = windows.flatMap((window) => {
    const groups = window.groups.filter((group) => !alerted.has(closedKey(window, group.group)));
    return groups.length === 0 ? [] : [{ ...window, groups }];
  });
  if (late.length === 0) return windows;
  for (const firing of await fireOnFinal(stream, store, late)) {
    report.fired.push({ ...firing, stream: stream.name });
  }
  return windows;
}

/**
 * What the closes after `due` (a peek of `counters` with `limit`, which found due what ends by
 * `cutoff`) may claim, so that they claim no window the peek did not list: one call per bound, each
 * with its counters. A counter the peek cut short (one that listed as many windows as `limit` lets
 * it, or sessions as many as `limit * SESSIONS_PER_WINDOW`; or any it listed when the peek stopped
 * at its cells, `more`) has windows due past where it stopped, which a close bounded only by the
 * cutoff would claim unjudged once another sweep closed the listed ones in between. Its bound is
 * then the last end it listed, held below that one when an earlier one is listed and the cells cut:
 * the rest of a window the cells cut may be past the peek. A session counter's is the last session
 * it listed (its end + gap, as the close compares it, and its start and group: sessions of other
 * groups due with it may be past the peek, however many are due in that millisecond). Every other
 * counter is bounded by the cutoff alone, so that one counter's backlog holds back no other.
 * Stopped at its cells, the peek judged nothing of the counters it listed nothing of: the closes
 * leave them out.
 */
function peekBounds(
  counters: CounterMeta[],
  due: ClosedWindows,
  { cutoff, limit }: { cutoff: number; limit: number },
): Array<{ counters: CounterMeta[]; through: number; throughSession?: SessionAt }> {
  const gaps = new Map(counters.map((counter) => [counter.name, counter.session?.gapMs ?? 0]));
  // Of each counter listed: its last end (a session's end + gap) and the latest before that one.
  // A session counter's last session listed: the store lists them in the close order.
  const ends = new Map<string, { last: number; before: number; session?: SessionAt }>();
  for (const window of due) {
    const end = window.end + (gaps.get(window.counter) ?? 0);
    const listed = ends.get(window.counter) ?? { last: -Infinity, before: -Infinity };
    ends.set(window.counter, listed);
    if (end > listed.last) {
      listed.before = listed.last;
      listed.last = end;
    } else if (end < listed.last) listed.before = Math.max(listed.before, end);
    if (end === listed.last && window.groups.length > 0) {
      listed.session = { start: window.start, group: window.groups.at(-1)!.group };
    }
  }
  const atLimit = countersAtLimit(counters, due, limit);
  const calls = new Map<number, CounterMeta[]>();
  const sessionCalls: Array<
    { counters: CounterMeta[]; through: number; throughSession: SessionAt }
  > = [];
  for (const counter of counters) {
    const listed = ends.get(counter.name);
    let through = cutoff;
    if (listed && (due.more || atLimit.has(counter.name))) {
      if (counter.session && listed.session) {
        // Exactly through the last session listed: one call of its own.
        sessionCalls.push({
          counters: [counter],
          through: Math.min(cutoff, listed.last),
          throughSession: listed.session,
        });
        continue;
      }
      // A window counter's windows end one apart: only the cells cut one short.
      const below = due.more && listed.before > -Infinity;
      through = Math.min(cutoff, below ? listed.before : listed.last);
    } else if (!listed && due.more && ends.size > 0) continue;
    calls.set(through, [...calls.get(through) ?? [], counter]);
  }
  return [...[...calls].map(([through, counters]) => ({ counters, through })), ...sessionCalls];
}

/** A session by its start and group (see {@linkcode CloseOptions.throughSession}). */
type SessionAt = { start: number; group: string };

/**
 * What a peek listed, as {@linkcode CloseOptions.listed}: of each window counter of `counters`,
 * each window's start and groups (a session counter's close is bounded by `throughSession`).
 */
function listedOf(
  due: readonly ClosedWindow[],
  counters: CounterMeta[],
): NonNullable<CloseOptions["listed"]> {
  const sessions = new Set(counters.filter((c) => c.session).map((c) => c.name));
  // No prototype: a counter may be named `constructor` or `toString`.
  const listed: NonNullable<CloseOptions["listed"]> = Object.create(null);
  for (const window of due) {
    if (sessions.has(window.counter)) continue;
    (listed[window.counter] ??= []).push({
      start: window.start,
      groups: window.groups.map((group) => group.group),
    });
  }
  return listed;
}

/**
 * The names of `counters` that began closing (or, peeking, listed) in `windows` as many windows as
 * one call's `limit` lets them, or sessions as many as `limit * SESSIONS_PER_WINDOW`: a counter
 * whose windows a call may have stopped short of (a window continued from an earlier call is
 * not counted, as the limit does not count it).
 */
function countersAtLimit(
  counters: CounterMeta[],
  windows: readonly ClosedWindow[],
  limit: number,
): Set<string> {
  const begun = new Map<string, number>();
  for (const window of windows) {
    if (!window.continued) begun.set(window.counter, (begun.get(window.counter) ?? 0) + 1);
  }
  return new Set(
    counters.filter((counter) =>
      (begun.get(counter.name) ?? 0) >= limit * (counter.session ? SESSIONS_PER_WINDOW : 1)
    ).map((counter) => counter.name),
  );
}

/** Lets timers and I/O callbacks run (a store in this process closes between its own turns). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Logs a sweep's failure: of one stream (named), or of the whole run; at warning when the store is
 * unavailable (not for a call refused as too large).
 */
export function logSweepError(error: unknown, stream?: string): void {
  // The store unreachable or refusing for now is a warning, as a request's 503 is: the next sweep
  // tries again. Anything else is a defect or bad data, or a call refused as too large, which is
  // refused again each time until someone acts.
  const log = isStoreDown(error) ? logger.warn.bind(logger) : logger.error.bind(logger);
  if (stream === undefined) log("Sweep failed: {error}", { error });
  else log("Sweep of stream '{stream}' failed: {error}", { stream, error });
}

/**
 * The log of whole sweeps failing, for a caller that sweeps again and again (a timer, a cron
 * job): the store unavailable is said when the outage starts, at most once a minute while it
 * lasts, and when a sweep runs again (see {@linkcode OutageLog}); anything else at `error`.
 */
export function sweepOutageLog(): OutageLog {
  return new OutageLog(logger, { failed: "Sweep failed: {error}", recovered: "Sweeps run again" });
}

/** Options for {@linkcode startSweeping}. */
export interface SweepingOptions {
  /**
   * Told about a failed run (its error), and about each stream a run could not sweep.
   * @default {a failed run through {@linkcode sweepOutageLog}, a stream through {@linkcode logSweepError}}
   */
  onError?: (error: unknown, stream?: string) => void;
}

/**
 * Runs `sweep` every `everyMs` ms, never two at once: a tick while the last run still waits (a
 * slow store, up to its deadline) is skipped rather than stacking runs on it. `stop()` stops the
 * ticks and resolves once a running one is done.
 */
export function startSweeping(
  sweep: () => Promise<SweepReport<unknown>>,
  everyMs: number,
  options: SweepingOptions = {},
): { stop(): Promise<void> } {
  const outage = sweepOutageLog();
  const onError = options.onError ??
    ((error: unknown, stream?: string) =>
      stream === undefined ? outage.failure(error) : logSweepError(error, stream));
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = sweep().then(
      (report) => {
        outage.success();
        for (const { stream, error } of report.failed) onError(error, stream);
      },
      (error) => onError(error),
    ).finally(() => running = undefined);
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return running ?? Promise.resolve();
    },
  };
}

/** Identifies a closed window's group. */
function closedKey(window: ClosedWindow, group: string): string {
  return JSON.stringify([window.counter, window.start, window.end, group]);
}

/** A closed window's keys, one a group. */
function closedKeys(window: ClosedWindow): string[] {
  return window.groups.map((group) => closedKey(window, group.group));
}

/** Evaluates a stream's alerts over final window values and fires the true ones. */
async function fireOnFinal(
  stream: CompiledStream,
  store: Store,
  windows: readonly ClosedWindow[],
): Promise<AlertFiring[]> {
  const firings = windows.flatMap((window) => {
    const counter = stream.counters.find((item) => item.name === window.counter);
    if (!counter) return [];
    const rows = window.groups.map((group) => ({ ...group, start: window.start, end: window.end }));
    return evaluateAlerts(stream, counter, rows);
  });
  if (firings.length === 0) return [];
  const fired = await store.fireAlerts(stream.name, firings, { counters: stream.counterMetas });
  countFirings(stream.name, fired);
  return fired;
}
