/**
 * A `Store` that records every call in `edgestream.store.calls` and
 * `edgestream.store.duration` (attributes `operation`, the method, and
 * `result`: `ok`, `unavailable` for a {@linkcode StoreUnavailableError}, the
 * 503 case, or `refused` for any other error, the 500 case), and traces each
 * apply as a child span of the request it serves. The wiring wraps the
 * configured store in it, so `store/` stays free of telemetry.
 *
 * Only `applyBatch` gets a span: the other calls also run from timers (live
 * tails poll the result log every 150 ms), where a span would start a trace
 * of its own for every poll.
 *
 * @module
 */
import {
  type AlertFiring,
  type ApplyResult,
  type ClosedWindows,
  type CloseOptions,
  type CounterMeta,
  type FiredAlerts,
  type FireOptions,
  type LogEntry,
  type LogPosition,
  type LogRecord,
  type ReadOptions,
  type ResultLogBounds,
  type SessionRange,
  type SessionValues,
  type Store,
  type StoreBatch,
  StoreUnavailableError,
  type StreamStats,
  type TimeRange,
  type WindowRead,
  type WindowValues,
} from "../store/types.ts";
import { splitGenerationKey } from "../store/definitions.ts";
import { metering, recordStoreCall, type StoreResult } from "./metrics.ts";
import { requestLinks, traceStoreCall, tracing } from "./tracing.ts";

/** Options for {@linkcode InstrumentedStore}. */
export interface InstrumentedStoreOptions {
  /** Monotonic clock (ms) durations are measured with. @default {performance.now} */
  clock?: () => number;
}

/** How a failed store call counts. */
export function storeResultOf(error: unknown): StoreResult {
  return error instanceof StoreUnavailableError ? "unavailable" : "refused";
}

/**
 * Wraps a store so its calls are measured and its applies traced; answers
 * and errors pass through unchanged.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "../store/mod.ts";
 * import { InstrumentedStore } from "./store.ts";
 *
 * const store = new InstrumentedStore(new MemoryStore());
 * await store.ping(); // counted as {operation: "ping", result: "ok"}
 * ```
 */
export class InstrumentedStore implements Store {
  /** The wrapped store's kind. */
  readonly kind: string;
  #store: Store;
  #clock: () => number;

  constructor(store: Store, options: InstrumentedStoreOptions = {}) {
    this.#store = store;
    this.kind = store.kind;
    this.#clock = options.clock ?? (() => performance.now());
  }

  /** The wrapped store's log bounds. */
  get logBounds(): ResultLogBounds {
    return this.#store.logBounds;
  }

  async #measure<T>(operation: string, call: () => Promise<T>): Promise<T> {
    if (!metering()) return await call();
    const started = this.#clock();
    let result: StoreResult = "ok";
    try {
      return await call();
    } catch (error) {
      result = storeResultOf(error);
      throw error;
    } finally {
      recordStoreCall((this.#clock() - started) / 1000, { operation, result });
    }
  }

  applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    // No tracer: no span, and no attributes or links to build for one; no meter either: the
    // call as it is.
    if (!tracing()) {
      return metering()
        ? this.#measure("applyBatch", () => this.#store.applyBatch(batch))
        : this.#store.applyBatch(batch);
    }
    return traceStoreCall(
      "applyBatch",
      () => this.#measure("applyBatch", () => this.#store.applyBatch(batch)),
      {
        attributes: {
          // The stream's name, without the generation the registry's store adds.
          "edgestream.stream": splitGenerationKey(batch.stream).stream,
          "edgestream.batch.events": batch.events.length,
          "edgestream.batch.requests": batch.requests?.length ?? 1,
        },
        links: requestLinks(batch.requests),
      },
    );
  }

  panes(stream: string, counter: CounterMeta, range: TimeRange): Promise<number[]> {
    return this.#measure("panes", () => this.#store.panes(stream, counter, range));
  }

  readWindows(
    stream: string,
    counter: CounterMeta,
    windows: WindowRead[],
    options?: ReadOptions,
  ): Promise<WindowValues> {
    return this.#measure(
      "readWindows",
      () => this.#store.readWindows(stream, counter, windows, options),
    );
  }

  readSessions(stream: string, counter: CounterMeta, range: SessionRange): Promise<SessionValues> {
    return this.#measure("readSessions", () => this.#store.readSessions(stream, counter, range));
  }

  closeWindows(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
  ): Promise<ClosedWindows> {
    return this.#measure("closeWindows", () => this.#store.closeWindows(stream, counters, options));
  }

  keepFinal(stream: string, throughMs: number): Promise<void> {
    return this.#measure("keepFinal", () => this.#store.keepFinal(stream, throughMs));
  }

  fireAlerts(
    stream: string,
    firings: AlertFiring[],
    options?: FireOptions,
  ): Promise<FiredAlerts> {
    return this.#measure("fireAlerts", () => this.#store.fireAlerts(stream, firings, options));
  }

  appendLog(stream: string, records: LogRecord[]): Promise<void> {
    return this.#measure("appendLog", () => this.#store.appendLog(stream, records));
  }

  readLog(stream: string, afterId: string | null, limit: number): Promise<LogEntry[]> {
    return this.#measure("readLog", () => this.#store.readLog(stream, afterId, limit));
  }

  lastLogId(stream: string): Promise<string | null> {
    return this.#measure("lastLogId", () => this.#store.lastLogId(stream));
  }

  logPosition(stream: string): Promise<LogPosition> {
    return this.#measure("logPosition", () => this.#store.logPosition(stream));
  }

  markDispatched(stream: string, throughId: string | null): Promise<number> {
    return this.#measure("markDispatched", () => this.#store.markDispatched(stream, throughId));
  }

  signalDemand(stream: string, types: readonly string[], ttlMs: number): Promise<void> {
    return this.#measure("signalDemand", () => this.#store.signalDemand(stream, types, ttlMs));
  }

  stats(stream: string, counters: CounterMeta[]): Promise<StreamStats> {
    return this.#measure("stats", () => this.#store.stats(stream, counters));
  }

  ping(): Promise<void> {
    return this.#measure("ping", () => this.#store.ping());
  }

  close(): Promise<void> {
    return this.#store.close();
  }
}
