/**
 * Alerts: a stream's `alerts` entries evaluated over window values. Those with
 * `evaluate: "live"` (the default) are evaluated early, right after ingest, for
 * the windows and groups a batch touched ({@linkcode AlertWatcher}, off the
 * request path); all of them by the sweep over the final values of the windows
 * it closes. The store's `fireAlerts` makes each (alert, window, group) fire
 * once across instances.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CompiledAlert, CompiledStream, StreamCatalog } from "../config/mod.ts";
import type { AppliedBatch } from "./types.ts";
import type { AlertFiring, Store } from "../store/types.ts";
import { readWindowsInTurn } from "../query/mod.ts";
import { cellUpdatesOf, OTHER_GROUP } from "../store/types.ts";
import { recordAlertsFired, WarningLimit, withinPeriod } from "../telemetry/mod.ts";
import { notBoolReason } from "../transform/mod.ts";
import type { AggregateState, CompiledCounter } from "../window/mod.ts";
import { aggregateValue, decodeGroup, windowsOfPane } from "../window/mod.ts";

const logger = getLogger(["edgestream", "alerts"]);

/** The value of one group in one window, as alerts see it. */
export interface AlertInput {
  /** Window start (ms). */
  start: number;
  /** Window end (ms, exclusive). */
  end: number;
  /** Group key. */
  group: string;
  /** Merged state of the window for the group. */
  state: AggregateState;
}

/**
 * How long (ms) the "already fired" marker of an alert on `counter` lives:
 * twice the counter's pane lifetime, so that the sweep's evaluation of the
 * closed window still finds the marker of an early firing.
 */
export function alertMarkerTtlMs(counter: CompiledCounter): number {
  return counter.meta.ttlMs * 2;
}

/** Least time (ms) between two warnings about one alert's failing `when`. */
const WHEN_WARNING_EVERY_MS = 60_000;

/** Warnings about failing `when`s, per alert. */
const whenWarnings = new WarningLimit<CompiledAlert>(WHEN_WARNING_EVERY_MS);

function warnFailedWhen(
  stream: string,
  alert: CompiledAlert,
  failure: { error: unknown; value: unknown },
): void {
  if (!whenWarnings.due(alert)) return;
  const { error, value } = failure;
  const fields = {
    stream,
    alert: alert.name,
    when: alert.source,
    counter: alert.counter.name,
    error: error instanceof Error ? error.message : String(error),
  };
  if (value === null) {
    // A window with no value yet (a max of events that lacked the field): routine, so say how.
    logger.warn(
      "Alert {alert} of stream {stream}: its condition {when} failed on a window of counter {counter} whose value is null, so it did not fire there (test value != null first): {error}",
      fields,
    );
  } else {
    logger.warn(
      "Alert {alert} of stream {stream}: its condition {when} failed on a window of counter {counter}, so it did not fire there: {error}",
      fields,
    );
  }
}

/**
 * The firings of the stream's alerts on `counter` whose `when` is true for a
 * row of final values (the values so far are judged by the `live` alerts alone,
 * {@linkcode CompiledStream.liveAlerts}, in {@linkcode AlertWatcher}). An expression that fails
 * to evaluate (e.g. `value > 1.0` while the value is null, or `value.p99` of
 * a count) or gives no bool (`value` alone) counts as false, and a warning
 * says so (naming the stream and the alert) at most once a minute per alert.
 *
 * @example
 * ```ts
 * import { compileConfig } from "../config/mod.ts";
 * import { emptyState } from "../store/mod.ts";
 * import { evaluateAlerts } from "./alerts.ts";
 *
 * const stream = compileConfig({
 *   streams: {
 *     orders: {
 *       counters: { n: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" } },
 *       alerts: [{ name: "busy", counter: "n", when: "value > 100.0" }],
 *     },
 *   },
 * }).get("orders")!;
 * const state = { ...emptyState(), count: 120 };
 * const firings = evaluateAlerts(stream, stream.counters[0], [
 *   { start: 0, end: 60_000, group: '["DE"]', state },
 * ]);
 * ```
 */
export function evaluateAlerts(
  stream: Pick<CompiledStream, "name" | "alerts">,
  counter: CompiledCounter,
  rows: readonly AlertInput[],
): AlertFiring[] {
  const watching = stream.alerts.filter((alert) => alert.counter.name === counter.name);
  return firingsOf(stream.name, counter, watching, rows);
}

/**
 * The firings of `watching` (alerts of the stream named `streamName` on `counter`) whose `when` is
 * true for a row: see {@linkcode evaluateAlerts}.
 */
function firingsOf(
  streamName: string,
  counter: CompiledCounter,
  watching: readonly CompiledAlert[],
  rows: readonly AlertInput[],
): AlertFiring[] {
  const firings: AlertFiring[] = [];
  if (watching.length === 0) return firings;
  for (const row of rows) {
    const value = aggregateValue(counter.aggregate, row.state);
    const variables = {
      value,
      group: decodeGroup(counter.groupBy, row.group),
      window: {
        counter: counter.name,
        start: new Date(row.start).toISOString(),
        end: new Date(row.end).toISOString(),
      },
    };
    for (const alert of watching) {
      let result: unknown;
      try {
        result = alert.when(variables);
      } catch (error) {
        warnFailedWhen(streamName, alert, { error, value });
        continue;
      }
      // A result that is no bool (`value` alone, a number) fails too: it cannot say "fire".
      const notBool = notBoolReason("The condition", result);
      if (notBool !== null) {
        warnFailedWhen(streamName, alert, { error: new Error(notBool), value });
        continue;
      }
      if (!result) continue;
      const firing: AlertFiring = {
        alert: alert.name,
        counter: counter.name,
        start: row.start,
        end: row.end,
        group: row.group,
        value,
        ttlMs: alertMarkerTtlMs(counter),
      };
      // A quantiles value says so inside it; a distinct count's estimate only in the state.
      if (row.state.approximate && typeof value === "number") firing.approximate = true;
      firings.push(firing);
    }
  }
  return firings;
}

/**
 * Counts firings that were new (as `Store.fireAlerts` returns them) in
 * `edgestream.alerts.fired`, per alert; each fires once across instances.
 */
export function countFirings(stream: string, fired: readonly AlertFiring[]): void {
  const byAlert = new Map<string, number>();
  for (const firing of fired) byAlert.set(firing.alert, (byAlert.get(firing.alert) ?? 0) + 1);
  for (const [alert, count] of byAlert) recordAlertsFired(count, { stream, alert });
}

/** Identifies a firing: each (alert, window, group) of a stream fires once. */
function firedKey(stream: string, firing: AlertFiring): string {
  return JSON.stringify([stream, firing.alert, firing.counter, firing.start, firing.group]);
}

/**
 * What tells which incarnation of a stream is served now (a `StreamRegistry`, by its
 * `outlived`): a stream deleted, or deleted and created again, since a batch was applied is
 * another incarnation, or none. Streams without `outlived` (a plain map) are never deleted.
 */
export type ServedIncarnations = Pick<StreamCatalog, "has" | "outlived">;

/** Options for {@linkcode AlertWatcher}. */
export interface AlertWatcherOptions {
  /**
   * The served streams: a batch's check whose stream was deleted (or deleted and created again)
   * since the batch was applied fires nothing, so no `alert.fired` is logged for a stream whose
   * DELETE answered already, nor into the log of the one created again. @default {none: every
   * check fires}
   */
  served?: ServedIncarnations;
  /** Clock (ms) for forgetting what fired. @default {Date.now} */
  now?: () => number;
  /** Most firings remembered as fired, to skip asking the store again. @default {10000} */
  maxRemembered?: number;
  /**
   * Most evaluations waiting for the store at once; a batch observed while they all wait is
   * evaluated in the next. @default {2}
   */
  concurrency?: number;
  /** Told about firings that were new (to wake up their delivery). */
  onFired?: (stream: string, fired: AlertFiring[]) => void;
  /** Told about failures (the store was unavailable); the sweep evaluates again at close. */
  onError?: (error: unknown) => void;
}

/** Windows and groups touched since the last evaluation, per counter index. */
type Touched = Map<number, Map<number, Set<string>>>;

/**
 * A firing the store answered for: asked at `sinceMs` (ms), remembered for `ttlMs` (the store's
 * own memory of it), under the stream definition it fired under: a stream deleted and created
 * again is another one, whose alerts fire anew.
 */
interface FiredAnswer {
  sinceMs: number;
  ttlMs: number;
  stream: CompiledStream;
}

/**
 * Evaluates alerts right after ingest for the windows and groups a batch
 * touched. {@linkcode AlertWatcher.observe} is an `IngestObserver`: it only
 * records what was touched; the reads, the evaluation and `fireAlerts` run
 * later, in at most `concurrency` drains at a time, each taking every batch
 * that arrived before it started.
 */
export class AlertWatcher {
  #store: Store;
  #served: ServedIncarnations | undefined;
  #onFired: (stream: string, fired: AlertFiring[]) => void;
  #onError: (error: unknown) => void;
  /**
   * By definition, not by name: a batch's counter places are its definition's, and a PUT that
   * adds or removes a counter moves the others' places, so batches of the old and the new
   * definition waiting together are each evaluated by their own.
   */
  #pending = new Map<CompiledStream, Touched>();
  #draining = new Set<Promise<void>>();
  #concurrency: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #now: () => number;
  #maxRemembered: number;
  /** Firings known to have fired (here or elsewhere) → when the store said so, and for how long. */
  #fired = new Map<string, FiredAnswer>();

  constructor(store: Store, options: AlertWatcherOptions = {}) {
    this.#store = store;
    this.#served = options.served;
    this.#now = options.now ?? Date.now;
    this.#maxRemembered = options.maxRemembered ?? 10_000;
    this.#concurrency = options.concurrency ?? 2;
    this.#onFired = options.onFired ?? (() => {});
    this.#onError = options.onError ??
      ((error) => logger.error("Alert evaluation failed: {error}", { error }));
    this.observe = this.observe.bind(this);
  }

  /** Records the windows and groups a batch touched; never throws, never waits. */
  observe(batch: AppliedBatch): void {
    // Alerts with `evaluate: "close"`, and a session counter's, see only final values: the sweep
    // judges them.
    const watched = batch.stream.liveAlerts;
    if (this.#closed || watched.size === 0) return;
    let touched = this.#pending.get(batch.stream);
    batch.events.forEach((_event, i) => {
      if (batch.outcomes[i] !== "applied") return;
      for (const update of cellUpdatesOf(batch.updates, batch.stream.counters.length, i)) {
        if (!watched.has(update.counter)) continue;
        const counter = batch.stream.counters[update.counter];
        if (!touched) {
          touched = new Map();
          this.#pending.set(batch.stream, touched);
        }
        let windows = touched.get(update.counter);
        if (!windows) {
          windows = new Map();
          touched.set(update.counter, windows);
        }
        for (const start of windowsOfPane(update.pane, counter.window)) {
          let groups = windows.get(start);
          if (!groups) {
            groups = new Set([OTHER_GROUP]);
            windows.set(start, groups);
          }
          groups.add(update.group);
        }
      }
    });
    if (this.#pending.size > 0) this.#schedule();
  }

  // A batch observed while a drain waits for the store starts another drain, up to the
  // concurrency: its alert need not wait for the evaluation of earlier batches.
  #schedule(): void {
    if (this.#draining.size >= this.#concurrency || this.#timer !== undefined) return;
    // A timer, not a microtask: the evaluation must not delay the ingest reply.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const drain: Promise<void> = this.#drain().finally(() => {
        this.#draining.delete(drain);
        if (this.#pending.size > 0 && !this.#closed) this.#schedule();
      });
      this.#draining.add(drain);
    }, 0);
  }

  async #drain(): Promise<void> {
    while (this.#pending.size > 0) {
      const work = [...this.#pending];
      this.#pending.clear();
      for (const [stream, touched] of work) {
        try {
          await this.#evaluate(stream, touched);
        } catch (error) {
          this.#onError(error);
        }
      }
    }
  }

  async #evaluate(stream: CompiledStream, touched: Touched): Promise<void> {
    const firings: AlertFiring[] = [];
    for (const [index, windows] of touched) {
      const counter = stream.counters[index];
      // A few windows a store read, as a page reads them: an event of a sliding 1d counter of 1m
      // panes touches 1,440 windows of 1,440 panes each, which one Redis script would merge while
      // Redis answers nobody else (seconds), for every batch.
      const values = await readWindowsInTurn(this.#store, stream.name, counter, [
        ...windows.keys(),
      ]);
      const rows = values
        .filter((value) => windows.get(value.start)?.has(value.group))
        .map((value) => ({ ...value, end: value.start + counter.window.sizeMs }));
      firings.push(...firingsOf(stream.name, counter, stream.liveAlerts.get(index) ?? [], rows));
    }
    // A firing the store answered for already cannot fire again: asking once more would only
    // add a round trip before the next evaluation (of a new firing) starts.
    const nowMs = this.#now();
    const unknown = firings.filter((firing) => {
      const known = this.#fired.get(firedKey(stream.name, firing));
      // Not when the clock is before the answer (stepped back): else the firing would stay
      // known as fired, the store not asked, for the length of the step.
      return known === undefined || !withinPeriod(nowMs, known.sinceMs, known.ttlMs) ||
        known.stream !== stream;
    });
    if (unknown.length === 0) return;
    // Last thing before the store: a DELETE may have answered while the windows were read.
    if (this.#gone(stream)) {
      logger.debug(
        "Alert check of stream {stream} dropped: the stream was deleted (or created again) since its batch was applied",
        { stream: stream.name },
      );
      return;
    }
    const fired = await this.#store.fireAlerts(stream.name, unknown, {
      counters: stream.counterMetas,
    });
    for (const firing of unknown) {
      this.#remember(firedKey(stream.name, firing), {
        sinceMs: nowMs,
        ttlMs: firing.ttlMs,
        stream,
      });
    }
    countFirings(stream.name, fired);
    if (fired.length > 0) this.#onFired(stream.name, fired);
  }

  /** Whether `stream`'s incarnation is no longer served (deleted, or deleted and created again). */
  #gone(stream: CompiledStream): boolean {
    const served = this.#served;
    if (served?.outlived === undefined) return false;
    return !served.has(stream.name) ||
      served.outlived({ stream: stream.name, counters: stream.counterMetas });
  }

  #remember(key: string, known: FiredAnswer): void {
    this.#fired.delete(key);
    this.#fired.set(key, known);
    // Oldest first: the map keeps insertion order.
    for (const oldest of this.#fired.keys()) {
      if (this.#fired.size <= this.#maxRemembered) break;
      this.#fired.delete(oldest);
    }
  }

  /** Resolves when everything observed so far has been evaluated. */
  async idle(): Promise<void> {
    while (this.#draining.size > 0 || this.#timer !== undefined) {
      if (this.#draining.size > 0) await Promise.all(this.#draining);
      else await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }

  /** Stops evaluating; waits for a running evaluation. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#pending.clear();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await Promise.all(this.#draining);
  }
}
