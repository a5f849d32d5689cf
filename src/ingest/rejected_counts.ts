/**
 * The rejected events of requests that accepted none (`400 no_events_accepted`, a WebSocket frame
 * so answered), counted in their stream's `stats.rejected` off the request's path: the request is
 * answered at once, whatever the store does, and the counts wait here, per stream and per process,
 * for one apply of no event that carries them all, at most once per `intervalMs` per stream.
 *
 * So the count lags the request by up to about `intervalMs` (more while the store is slow). A
 * stopping server applies what is pending once its requests and WebSocket frames were answered
 * ({@linkcode RejectedCounts.flush}, within the stop's bound: `shutdown.ts`); a count is lost when
 * that bound ends first, when its apply fails (the timer's failures logged once until an apply
 * succeeds again; {@linkcode RejectedCounts.flush} logs every count it loses), and
 * when its stream was deleted or changed meanwhile (the store refuses its apply with
 * `StreamChangedError`: it belonged to a definition no longer served).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CompiledStream } from "../config/mod.ts";
import { type Store, StreamChangedError } from "../store/types.ts";

const logger = getLogger(["edgestream", "ingest"]);

/** Default of {@linkcode RejectedCountsOptions.intervalMs}. */
export const DEFAULT_REJECTED_FLUSH_MS = 1_000;

/** Options for {@linkcode RejectedCounts}. */
export interface RejectedCountsOptions {
  /** The clock of the applies' receive time. @default {Date.now} */
  now?: () => number;
  /** Least time between two applies of one stream's counts, in ms. @default {1000} */
  intervalMs?: number;
}

/** A count an apply lost without a line of its own. */
interface Unlogged {
  stream: string;
  count: number;
  reason: string;
}

interface Pending {
  count: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Resolves to what it lost unlogged, if anything. */
  running: Promise<Unlogged | undefined> | undefined;
}

/**
 * Rejected counts waiting for their apply, one entry per compiled stream (a stream created again
 * is another entry: its counts never land on the other).
 */
export class RejectedCounts {
  #target: Pick<Store, "applyBatch">;
  #now: () => number;
  #intervalMs: number;
  #pending = new Map<CompiledStream, Pending>();
  #failing = false;
  #applies = 0;

  /** `target` is the store, or the group committer of the store, that ingest applies to. */
  constructor(target: Pick<Store, "applyBatch">, options: RejectedCountsOptions = {}) {
    this.#target = target;
    this.#now = options.now ?? Date.now;
    this.#intervalMs = options.intervalMs ?? DEFAULT_REJECTED_FLUSH_MS;
  }

  /** Applies made so far (for tests and benchmarks). */
  get applies(): number {
    return this.#applies;
  }

  /** Counts `count` rejected events of `stream`, applied within about `intervalMs`. */
  add(stream: CompiledStream, count: number): void {
    if (count <= 0) return;
    let entry = this.#pending.get(stream);
    if (!entry) {
      entry = { count: 0, timer: undefined, running: undefined };
      this.#pending.set(stream, entry);
    }
    entry.count += count;
    // A running apply schedules the next one when it ends.
    if (entry.timer === undefined && entry.running === undefined) this.#schedule(stream, entry);
  }

  /** Whether a count waits for its apply or is being applied (a stopping server's work). */
  get waiting(): boolean {
    return this.#pending.size > 0;
  }

  /**
   * Applies every pending count now and waits for those applies (a stopping server, tests); never
   * rejects. What it cannot apply is always logged, in one warning naming the streams and the total
   * lost, even while the timer's failures go unlogged (after the first, until an apply succeeds):
   * a stop with the store failing since before it loses no count unsaid.
   */
  async flush(): Promise<void> {
    const lost: Unlogged[] = [];
    do {
      const waits: Promise<Unlogged | undefined>[] = [];
      for (const [stream, entry] of this.#pending) {
        if (entry.running) waits.push(entry.running);
        else if (entry.count > 0) {
          clearTimeout(entry.timer);
          entry.timer = undefined;
          waits.push(this.#apply(stream, entry, true));
        }
      }
      for (const unlogged of await Promise.all(waits)) if (unlogged) lost.push(unlogged);
      // Counts added while those ran go in another round.
    } while ([...this.#pending.values()].some((entry) => entry.count > 0));
    if (lost.length === 0) return;
    const streams = [...new Set(lost.map((item) => item.stream))];
    logger.warn(
      "Cannot count {total} rejected events (requests that accepted none) of stream(s) {streams} on flush, so they are lost: {reason}",
      {
        total: lost.reduce((sum, item) => sum + item.count, 0),
        streams: streams.join(", "),
        reason: lost[lost.length - 1].reason,
      },
    );
  }

  #schedule(stream: CompiledStream, entry: Pending): void {
    const timer = setTimeout(() => {
      entry.timer = undefined;
      void this.#apply(stream, entry, false);
    }, this.#intervalMs);
    // A pending count never keeps the process alive: a stopping server flushes it (shutdown.ts).
    Deno.unrefTimer(timer);
    entry.timer = timer;
  }

  /**
   * Applies `entry`'s count; a failure is logged here unless `quiet` (the caller logs it) or one is
   * already logged, and resolves to what was lost unlogged.
   */
  #apply(stream: CompiledStream, entry: Pending, quiet: boolean): Promise<Unlogged | undefined> {
    const count = entry.count;
    entry.count = 0;
    this.#applies += 1;
    const running = this.#target.applyBatch({
      stream: stream.name,
      nowMs: this.#now(),
      latenessMs: stream.latenessMs,
      idleMs: stream.idleMs,
      dedupeTtlMs: stream.dedupe?.ttlMs ?? 0,
      counters: stream.counterMetas,
      events: [],
      updates: { panes: [], groups: [], values: [] },
      requests: [{ events: 0, filtered: 0, rejected: count }],
    }).then(
      (): Unlogged | undefined => {
        this.#failing = false;
        return undefined;
      },
      (error) => {
        // Deleted or changed meanwhile: what is pending belongs to a definition no longer served.
        if (error instanceof StreamChangedError) {
          entry.count = 0;
          return undefined;
        }
        const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        const wasFailing = this.#failing;
        this.#failing = true;
        if (quiet || wasFailing) return { stream: stream.name, count, reason };
        // One line, without a stack, until an apply succeeds again.
        logger.warn(
          "Cannot count {count} rejected events of stream {stream} (requests that accepted none), so they are lost: {reason} (further failures unlogged until an apply succeeds)",
          {
            count,
            stream: stream.name,
            reason,
          },
        );
        return undefined;
      },
    ).finally(() => {
      entry.running = undefined;
      if (entry.count > 0) this.#schedule(stream, entry);
      else this.#pending.delete(stream);
    });
    entry.running = running;
    return running;
  }
}
