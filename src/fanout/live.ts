/**
 * Live subscriptions: a hub that publishes running window values
 * (`window.updated`) to a stream's result log, tails the logs of the streams
 * someone subscribed to and hands every new result to the local subscribers
 * that asked for it.
 *
 * Results travel through the store's log, not through this process, so a
 * subscriber connected to one instance sees what any instance that shares
 * the store produced (Redis); with the memory store it is all in-process.
 * For the same reason a subscriber can resume after a log id it saw: the
 * entries after it are replayed, then the tail takes over; and a subscriber
 * whose connection has its bound waiting is sent nothing more, then what
 * followed from the log at its own pace, until it is back with the tail.
 *
 * A window's value is published only when it changed since this hub last
 * published it, so one batch yields one `window.updated` per window and group
 * it changed, and an unchanged value is not repeated.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type CompiledStream, counterIdentities, type StreamCatalog } from "../config/mod.ts";
import type { AppliedBatch, IngestObserver } from "./types.ts";
import {
  cellUpdatesOf,
  compareLogIds,
  isStoreDown,
  type LogEntry,
  type LogRecord,
  OTHER_GROUP,
  parseLogId,
  type Store,
} from "../store/types.ts";
import {
  detached,
  type LiveTransport,
  OutageLog,
  recordLiveSubscribers,
  withinPeriod,
} from "../telemetry/mod.ts";
import { readWindowsInTurn } from "../query/mod.ts";
import {
  type CompiledExpression,
  RequestPatternBudget,
  withRequestPatterns,
} from "../transform/mod.ts";
import { aggregateValue, windowsOfPane } from "../window/mod.ts";
import { type PayloadType, type PublicPayload, publicPayload } from "./payload.ts";

const logger = getLogger(["edgestream", "live"]);

/** The event records a batch may have gone without: type, the outcome it logs, `logged`'s flag. */
const MISSABLE = [
  ["event.processed", "applied", "processed"],
  ["event.late", "late", "late"],
] as const;

/** What one subscriber asked for. */
export interface Subscription {
  /** Stream name. */
  stream: string;
  /** Kinds of result wanted. */
  types: ReadonlySet<PayloadType>;
  /** Only results of this counter (results without a counter, `event.*`, still pass). */
  counter?: string;
  /** CEL filter over the message as `payload`; a message passes when it returns true. */
  filter?: CompiledExpression;
}

/** Where the hub hands a subscriber's messages. */
export interface LiveSink {
  /** Called once, before any message, with where in the stream's result log the messages start. */
  open?(start: SubscriptionStart): void;
  /**
   * Takes one message, with the id of its entry in the stream's result log,
   * without waiting. Called only while {@linkcode LiveSink.ready} says true,
   * so what a sink buffers stays within its bound plus one message.
   */
  send(payload: PublicPayload, id: string): void;
  /** Ends the subscription from the server side (the hub is closing, or a resume broke off). */
  close(reason: string): void;
  /**
   * Settles once the sink's connection closed after {@linkcode LiveSink.close}.
   * {@linkcode LiveHub.close} waits for it, so a stopping server shuts its listener down only
   * after the subscriber got the close (else Deno's shutdown may close a WebSocket first, with a
   * reason of its own). @default {none: nothing to wait for}
   */
  closed?(): Promise<void>;
  /**
   * Whether it takes another message now: false while what waits to be sent is at its bound.
   * The hub then sends it nothing more and reads what follows from the log for it, at its pace,
   * once this says true again. @default {always true}
   */
  ready?(): boolean;
  /**
   * Settles once {@linkcode LiveSink.ready} says true again, or the sink ended (it may settle
   * early: the hub asks `ready` again). A subscriber behind then costs no timer wake-ups while it
   * waits; without it the hub asks `ready` every few ms (a WebSocket's `bufferedAmount` has no
   * event saying it fell). @default {none: asked again every 5 ms}
   */
  drained?(): Promise<void>;
  /**
   * Ends the subscription for falling behind: it took nothing for
   * {@linkcode LiveHubOptions.stalledMs}, or the log was trimmed past what it had read (`reason`
   * says which). @default {close}
   */
  drop?(reason: string): void;
  /** How the subscriber is connected, for `edgestream.live.subscribers`. @default {none: not counted} */
  transport?: LiveTransport;
}

/** Where a subscription starts in its stream's result log. */
export interface SubscriptionStart {
  /**
   * The log id the messages follow: each message comes from an entry after
   * it, and every later entry the subscription matches is sent. `0-0` while
   * the log never had an entry: resuming after it misses nothing.
   */
  afterId: string | null;
  /**
   * Only when {@linkcode SubscribeOptions.afterId} was given: true when the
   * messages after it are replayed from the log, false when they cannot be
   * (then `afterId` is the log's current end and `reason` says why).
   */
  resumed?: boolean;
  /** Why the subscription could not resume. */
  reason?: string;
}

/** Options for {@linkcode LiveHub.subscribe}. */
export interface SubscribeOptions {
  /**
   * Resume after this result log id (as given to {@linkcode LiveSink.send}):
   * the entries after it are replayed from the log, then live ones follow,
   * none twice and none missing. Possible while the id is neither older
   * than the oldest entry the log still holds nor newer than its newest;
   * otherwise the subscription starts at the log's end and
   * {@linkcode SubscriptionStart.reason} says why.
   */
  afterId?: string;
  /** Ends the subscription when aborted, also while it is being set up or replayed. */
  signal?: AbortSignal;
}

/** Options for {@linkcode LiveHub}. */
export interface LiveHubOptions {
  /** How often (ms) the result log of a stream with subscribers is read. @default {150} */
  pollMs?: number;
  /** Most log entries read at once. @default {500} */
  readLimit?: number;
  /**
   * Least time (ms) between two `window.updated` publications of a stream,
   * so at most 1000 / this per counter and group; the value published is the
   * latest. @default {250}
   */
  updateIntervalMs?: number;
  /**
   * Most windows per stream whose last published value is remembered, so an
   * unchanged value is not published again; past it the least recently
   * published are forgotten (and published again on their next update).
   * @default {10000}
   */
  maxRememberedWindows?: number;
  /**
   * Whether other instances share the store (Redis): the hub then tells them
   * through the store what its subscribers want, and publishes what theirs
   * want, so a subscriber on one instance sees results of events ingested on
   * any. @default {false}
   */
  shared?: boolean;
  /** How long (ms) a signalled demand lasts; renewed at a third of it. @default {10000} */
  demandTtlMs?: number;
  /**
   * How long (ms) a subscriber that is behind (its sink not ready) may take nothing before it is
   * dropped. @default {10000}
   */
  stalledMs?: number;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
}

/** Counts of a {@linkcode LiveHub}, for monitoring and tests. */
export interface LiveHubStats {
  /** Local subscribers. */
  subscribers: number;
  /** Streams whose log is being tailed. */
  tails: number;
  /** `window.updated` records published. */
  updatesPublished: number;
  /** Windows whose last published value is remembered, over all streams. */
  remembered: number;
  /** Local subscribers behind the tail, read the log at their own pace. */
  behind: number;
}

/** Whether a message is one `subscription` asked for. A filter that fails to evaluate does not match. */
export function matchesSubscription(subscription: Subscription, payload: PublicPayload): boolean {
  if (!subscription.types.has(payload.type)) return false;
  if (
    subscription.counter !== undefined && payload.data.counter !== undefined &&
    payload.data.counter !== subscription.counter
  ) {
    return false;
  }
  if (!subscription.filter) return true;
  try {
    return subscription.filter({ payload }) === true;
  } catch {
    return false;
  }
}

/**
 * The period (ms) within which compiling the `matches()` patterns a subscription's filter takes
 * from its messages may cost `MAX_REQUEST_PATTERN_COMPILE`, as a request's on ingest (each pattern
 * its instructions and `PATTERN_COMPILE_OVERHEAD`; one still kept compiled, among the most recently
 * used 16,384 instructions' worth of patterns taken from events, a cache shared with ingest, costs
 * nothing; one dropped and used again is compiled and charged again). Without it a filter such as
 * `payload.data.event.text.matches(payload.data.event.p)` compiles a pattern per message: 1,000
 * messages, each with its own pattern of about 4,000 instructions, took one subscriber's filter
 * 11–16 s of CPU in the process serving it, each evaluation within its own budget; with it,
 * 0.5–1.9 s before the subscription ended (more as a loaded machine's evaluations spread over more
 * seconds).
 */
export const FILTER_PATTERN_PERIOD_MS = 1_000;

/**
 * Why a subscription is ended when the patterns its filter takes from messages pass
 * `maxCost` within {@linkcode FILTER_PATTERN_PERIOD_MS}: short enough for a WebSocket close
 * reason (123 bytes).
 */
export function filterPatternBudgetMessage(maxCost: number): string {
  return `Filter's matches() patterns taken from messages cost over ${maxCost} a second to compile; resume after the last id`;
}

/** Whether `id` has the form of a result log id, `<ms>-<seq>`. */
function isLogId(id: string): boolean {
  const match = /^(\d{1,16})-(\d{1,16})$/.exec(id);
  return match !== null && Number.isSafeInteger(Number(match[1])) &&
    Number.isSafeInteger(Number(match[2]));
}

function compareIds(a: string, b: string): number {
  return compareLogIds(parseLogId(a), parseLogId(b));
}

interface Subscriber {
  subscription: Subscription;
  sink: LiveSink;
  /** Whether the tail hands it new entries; false until it is set up (and replayed). */
  joined: boolean;
  /** Entries up to this id were replayed to it; the tail skips them. */
  replayedTo: string | null;
  /**
   * While its sink is not ready: the log id through which it has every message, and when (ms) it
   * last took one. The tail skips it; {@linkcode LiveHub.#catchUp} reads the log for it.
   */
  behind: { after: string; progressAt: number } | null;
  /** While it waits for its sink to drain: ends the wait (it was removed). */
  wake?: () => void;
  /**
   * With a filter: what compiling the patterns it takes from messages may still cost, and since
   * when (ms) (see {@linkcode FILTER_PATTERN_PERIOD_MS}).
   */
  patterns?: { budget: RequestPatternBudget; sinceMs: number };
}

/** What handing a message to a subscriber came to. */
type Offered = "sent" | "skipped" | "full";

/**
 * How long (ms) a subscriber behind waits before its sink is asked again whether it is ready, when
 * the sink cannot say when it is ({@linkcode LiveSink.drained}).
 */
const BEHIND_WAIT_MS = 5;

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Tail {
  stream: CompiledStream;
  subscribers: Set<Subscriber>;
  cursor: string | null;
  stopped: boolean;
  timer?: ReturnType<typeof setTimeout>;
  /** The poll in progress, awaited on close. */
  polling?: Promise<void>;
  /** Settles once the cursor sits at the log's end. */
  ready: Promise<void>;
  failing: boolean;
  /** The store unavailable to its reads: said when that starts, once a minute, when it ends. */
  outage: OutageLog;
  /** When (ms) this instance's demand for the stream was last signalled to the store. */
  signalledAt: number;
  /** The types that signal named. */
  signalled: ReadonlySet<string>;
}

interface PendingUpdates {
  stream: CompiledStream;
  /** Counter index → group → panes touched since the last publication. */
  touched: Map<number, Map<string, Set<number>>>;
  timer?: ReturnType<typeof setTimeout>;
  flushing?: Promise<void>;
  /**
   * `<counter key>:<start>:<group>` → the value last published for that window, least recently
   * published first (see {@linkcode counterKeysOf}: the same under every definition that keeps
   * the counter as it was).
   */
  published: Map<string, PublishedValue>;
  /** A lower bound (ms) of the stream's watermark, from the batches seen. */
  watermarkMs: number;
  /** Its publications' failures: the store unavailable said as an outage. */
  outage: OutageLog;
}

/** Each compiled stream's counter keys, by place (see {@linkcode counterKeysOf}). */
const counterKeys = new WeakMap<CompiledStream, string[]>();

/**
 * The key of each of a stream's counters, by place, for the values published: its name and what
 * identifies its data (window, aggregate, group-by). A `PUT` that adds or removes a counter moves
 * the others' places but not their keys, so batches of the old and the new definition arriving in
 * turn do not publish again the windows whose values did not change.
 */
function counterKeysOf(stream: CompiledStream): string[] {
  let keys = counterKeys.get(stream);
  if (keys === undefined) {
    const identities = counterIdentities(stream);
    keys = stream.counters.map((counter) =>
      JSON.stringify([counter.name, identities[counter.name]])
    );
    counterKeys.set(stream, keys);
  }
  return keys;
}

interface PublishedValue {
  /** The public value and whether it is approximate, as JSON. */
  value: string;
  /** End (ms) of the window: once the watermark passes it plus the lateness, it is final. */
  endMs: number;
}

/**
 * Publishes running window values and fans a stream's results out to live
 * subscribers. Also the {@linkcode LogDemand} that asks ingest to log
 * `event.processed` / `event.late` only while a subscriber wants them.
 *
 * @example
 * ```ts
 * import { compileConfig } from "../config/mod.ts";
 * import { MemoryStore } from "../store/mod.ts";
 * import { LiveHub } from "./live.ts";
 *
 * const streams = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * });
 * const store = new MemoryStore();
 * // With a store that other instances share, pass { shared: true }.
 * const live = new LiveHub(streams, store);
 * const stop = await live.subscribe(
 *   { stream: "orders", types: new Set(["window.updated"]) },
 *   { send: (payload) => console.log(payload), close: () => {} },
 * );
 * ```
 */
export class LiveHub {
  #streams: StreamCatalog;
  #store: Store;
  #pollMs: number;
  #readLimit: number;
  #updateIntervalMs: number;
  #maxRememberedWindows: number;
  #shared: boolean;
  #demandTtlMs: number;
  #now: () => number;
  /**
   * Stream → the types other instances' subscribers want, from the last apply's reply, and since
   * when (ms) that reply is known, taken as such for the demand's TTL (not when the clock is before
   * it: stepped back). A stream's entry past that is dropped when read and by
   * `#pruneRemoteDemand`, so streams gone (deleted) are not kept.
   */
  #remoteDemand = new Map<string, { at: number; types: Set<string> }>();
  /** When (ms) `#remoteDemand` was last swept of expired streams. */
  #prunedMs = -Infinity;
  #tails = new Map<string, Tail>();
  /** Stream → type → number of subscribers wanting it. */
  #demand = new Map<string, Map<PayloadType, number>>();
  #pending = new Map<string, PendingUpdates>();
  /** Subscriptions being set up (replays), awaited on close. */
  #settingUp = new Set<Promise<void>>();
  #updatesPublished = 0;
  #closed = false;
  #stalledMs: number;
  /** Subscribers behind, each read the log for by one loop, awaited on close. */
  #catchingUp = new Map<Subscriber, Promise<void>>();

  constructor(
    streams: StreamCatalog,
    store: Store,
    options: LiveHubOptions = {},
  ) {
    this.#streams = streams;
    this.#store = store;
    this.#pollMs = options.pollMs ?? 150;
    this.#readLimit = options.readLimit ?? 500;
    this.#updateIntervalMs = options.updateIntervalMs ?? 250;
    this.#maxRememberedWindows = options.maxRememberedWindows ?? 10_000;
    this.#shared = options.shared ?? false;
    this.#demandTtlMs = options.demandTtlMs ?? 10_000;
    this.#now = options.now ?? Date.now;
    this.#stalledMs = options.stalledMs ?? 10_000;
  }

  /** The options it runs with, defaults filled in (the clock left out). */
  get settings(): Required<Omit<LiveHubOptions, "now">> {
    return {
      stalledMs: this.#stalledMs,
      pollMs: this.#pollMs,
      readLimit: this.#readLimit,
      updateIntervalMs: this.#updateIntervalMs,
      maxRememberedWindows: this.#maxRememberedWindows,
      shared: this.#shared,
      demandTtlMs: this.#demandTtlMs,
    };
  }

  /** Counts for monitoring and tests. */
  get stats(): LiveHubStats {
    let subscribers = 0;
    for (const tail of this.#tails.values()) subscribers += tail.subscribers.size;
    let remembered = 0;
    for (const pending of this.#pending.values()) remembered += pending.published.size;
    return {
      subscribers,
      tails: this.#tails.size,
      updatesPublished: this.#updatesPublished,
      remembered,
      behind: this.#catchingUp.size,
    };
  }

  /**
   * How many streams the hub keeps state for, per structure; each is bounded by the streams
   * subscribed to or ingested into recently, not by every name seen.
   */
  get retained(): { remoteDemand: number; pending: number; tails: number; demand: number } {
    return {
      remoteDemand: this.#remoteDemand.size,
      pending: this.#pending.size,
      tails: this.#tails.size,
      demand: this.#demand.size,
    };
  }

  /** What other instances' subscribers of `stream` want, while known; an expired entry is dropped. */
  #remoteDemandOf(stream: string): Set<string> | undefined {
    const known = this.#remoteDemand.get(stream);
    if (known === undefined) return undefined;
    if (this.#known(known.at, this.#now())) return known.types;
    this.#remoteDemand.delete(stream);
    return undefined;
  }

  /** Whether remote demand learnt `at` (ms) is still taken as known `now`. */
  #known(at: number, now: number): boolean {
    return withinPeriod(now, at, this.#demandTtlMs);
  }

  /**
   * Drops every stream's remote demand that expired, and the pending updates nobody wants any
   * more, at most once per demand TTL.
   */
  #pruneRemoteDemand(): void {
    const now = this.#now();
    // A clock before the last sweep (stepped back) does not put the next one off by the step.
    if (withinPeriod(now, this.#prunedMs, this.#demandTtlMs)) return;
    this.#prunedMs = now;
    for (const [stream, known] of this.#remoteDemand) {
      if (!this.#known(known.at, now)) this.#remoteDemand.delete(stream);
    }
    // Updates pending for a stream only others wanted, whose demand expired since.
    for (const pending of [...this.#pending.values()]) this.#forgetIdle(pending);
  }

  /**
   * Whether a subscriber, on this instance or (shared store) on another,
   * wants results of `type` from `stream` ({@linkcode LogDemand}).
   */
  wants(stream: string, type: PayloadType): boolean {
    if ((this.#demand.get(stream)?.get(type) ?? 0) > 0) return true;
    return this.#remoteDemandOf(stream)?.has(type) ?? false;
  }

  /**
   * Whether a subscriber on another instance may want events of `type`, which this one cannot
   * tell: it knows what they want from the replies of its recent applies only (none of the
   * stream within the demand's TTL). The store then logs them only if its demand says so, so the
   * first batch after a quiet spell reaches them, and costs nothing when nobody subscribes.
   */
  mayWant(stream: string, type: "event.processed" | "event.late"): boolean {
    if (!this.#shared || this.wants(stream, type)) return false;
    return this.#remoteDemandOf(stream) === undefined;
  }

  /**
   * Logs the events of a batch that a subscriber on another instance wants though the batch went
   * to the store without them: this instance took the demand of its last reply as known, and the
   * subscriber came since. Its next batches go with them; this one is logged after it.
   */
  #logMissed(batch: AppliedBatch): void {
    const records: LogRecord[] = [];
    for (const [type, outcome, logged] of MISSABLE) {
      if (batch.logged?.[logged] || !batch.demand.includes(type)) continue;
      batch.events.forEach((event, index) => {
        if (batch.outcomes[index] === outcome && event.value !== undefined) {
          records.push({ type, timeMs: event.timeMs, event: event.value });
        }
      });
    }
    if (records.length === 0) return;
    const stream = batch.stream.name;
    this.#store.appendLog(stream, records).catch((error) => {
      logger.error("Cannot log the events of a batch for live subscribers of {stream}: {error}", {
        stream,
        error,
      });
    });
  }

  /**
   * The ingest observer that publishes `window.updated` for the windows a batch touched; idle for
   * a stream nobody here subscribed to and nothing is pending of, unless the store is shared (each
   * batch then says what subscribers elsewhere want).
   */
  readonly observer: IngestObserver = Object.assign(
    (batch: AppliedBatch) => this.#observe(batch),
    { idle: (stream: CompiledStream) => this.#idleFor(stream.name) },
  );

  /** Whether {@linkcode observer} would do nothing with a batch of `stream` now. */
  #idleFor(stream: string): boolean {
    if (this.#shared) return false;
    return this.#closed || (!this.wants(stream, "window.updated") && !this.#pending.has(stream));
  }

  /**
   * Adds a subscriber. Resolves, with the function that removes it, once the
   * hub tails the stream's log from its current end (or, resuming, once the
   * missed entries were replayed); rejects with what the store threw when the
   * log cannot be read (or, on a shared store, the demand cannot be signalled),
   * also when the stream is tailed already but its last read failed. So a
   * caller that subscribes before answering its client can answer a store
   * outage with an error. Once subscribed, an outage ends nothing: the tail
   * reads again every poll and hands on what it missed once the store answers.
   * `sink.open` is called before the first message (and before this resolves).
   */
  async subscribe(
    subscription: Subscription,
    sink: LiveSink,
    options: SubscribeOptions = {},
  ): Promise<() => void> {
    const stream = this.#streams.get(subscription.stream);
    if (!stream) throw new Error(`Cannot subscribe to stream '${subscription.stream}': unknown`);
    if (this.#closed) throw new Error("Cannot subscribe: the live hub is closed");
    const subscriber: Subscriber = {
      subscription,
      sink,
      joined: false,
      replayedTo: null,
      behind: null,
    };
    let tail = this.#tails.get(stream.name);
    if (!tail) {
      tail = this.#startTail(stream);
      this.#tails.set(stream.name, tail);
    }
    tail.subscribers.add(subscriber);
    this.#count(subscription, 1);
    if (sink.transport) recordLiveSubscribers(sink.transport, 1);
    tail.signalledAt = 0; // what is wanted may have grown: signal on the next poll
    const unsubscribe = () => this.#unsubscribe(tail, subscriber);
    const { afterId, signal } = options;
    signal?.addEventListener("abort", unsubscribe, { once: true });
    if (signal?.aborted) unsubscribe();
    const setup = (async () => {
      await tail.ready;
      // The tail cannot read the log now (it retries each poll): a new subscriber is told what
      // the store throws, as when the tail starts, rather than wait unseen for it to answer.
      if (tail.failing) await this.#store.lastLogId(stream.name);
      // A type the stream's subscribers here did not want yet: other instances learn of it before
      // this one joins, so what they apply from then on is logged (or, applied without it, logged
      // right after: see #logMissed).
      if ([...subscription.types].some((type) => !tail.signalled.has(type))) {
        await this.#signal(tail);
      }
      if (afterId === undefined) this.#join(tail, subscriber, { afterId: tail.cursor });
      else await this.#resume(tail, subscriber, afterId);
    })();
    this.#settingUp.add(setup);
    try {
      await setup;
    } catch (error) {
      unsubscribe();
      throw error;
    } finally {
      this.#settingUp.delete(setup);
    }
    return unsubscribe;
  }

  /**
   * Stops every tail and timer, ends every subscription and waits for work in progress and for
   * the subscribers' connections to close (see {@linkcode LiveSink.closed}).
   */
  async close(): Promise<void> {
    this.#closed = true;
    const waits: Array<Promise<unknown>> = [];
    for (const tail of [...this.#tails.values()]) {
      for (const subscriber of [...tail.subscribers]) {
        this.#unsubscribe(tail, subscriber);
        subscriber.sink.close("Server is shutting down");
        if (subscriber.sink.closed) waits.push(subscriber.sink.closed());
      }
      waits.push(tail.ready.catch(() => {}));
      if (tail.polling) waits.push(tail.polling);
    }
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      if (pending.flushing) waits.push(pending.flushing);
    }
    this.#pending.clear();
    for (const setup of this.#settingUp) waits.push(setup.catch(() => {}));
    waits.push(...this.#catchingUp.values());
    await Promise.all(waits);
  }

  #count(subscription: Subscription, delta: number): void {
    let byType = this.#demand.get(subscription.stream);
    if (!byType) {
      byType = new Map();
      this.#demand.set(subscription.stream, byType);
    }
    for (const type of subscription.types) {
      const count = (byType.get(type) ?? 0) + delta;
      if (count > 0) byType.set(type, count);
      else byType.delete(type);
    }
    // A stream nobody subscribes to any more is not kept (API streams come and go).
    if (byType.size === 0) this.#demand.delete(subscription.stream);
  }

  #unsubscribe(tail: Tail, subscriber: Subscriber): void {
    if (!tail.subscribers.delete(subscriber)) return;
    subscriber.wake?.();
    this.#count(subscriber.subscription, -1);
    if (subscriber.sink.transport) recordLiveSubscribers(subscriber.sink.transport, -1);
    if (tail.subscribers.size > 0) return;
    tail.stopped = true;
    clearTimeout(tail.timer);
    if (this.#tails.get(tail.stream.name) === tail) this.#tails.delete(tail.stream.name);
    // The last subscriber gone (the stream may be deleted: nothing more is ingested into it).
    const pending = this.#pending.get(tail.stream.name);
    if (pending) this.#forgetIdle(pending);
  }

  /** Starts handing the tail's new entries to a subscriber, after telling its sink where it starts. */
  #join(tail: Tail, subscriber: Subscriber, start: SubscriptionStart): void {
    if (!tail.subscribers.has(subscriber)) return;
    subscriber.sink.open?.(start);
    subscriber.joined = true;
  }

  /**
   * Replays the entries after `afterId` to a subscriber, then joins it to the
   * tail where the replay ended; or, when the log no longer holds what came
   * after `afterId`, joins it at the tail's cursor and says why.
   */
  async #resume(tail: Tail, subscriber: Subscriber, afterId: string): Promise<void> {
    const stream = tail.stream.name;
    if (!isLogId(afterId)) {
      this.#join(tail, subscriber, {
        afterId: tail.cursor,
        resumed: false,
        reason: `Cannot resume after '${afterId.slice(0, 64)}': not a result log id (<ms>-<seq>)`,
      });
      return;
    }
    let cursor = afterId;
    let replaying = false;
    while (true) {
      const entries = await this.#store.readLog(stream, cursor, this.#readLimit);
      // Read after the page: if nothing after the cursor was trimmed by then, the page missed
      // nothing.
      const lost = await this.#lostAfter(stream, cursor);
      if (!tail.subscribers.has(subscriber)) return;
      if (!replaying) {
        const reason = lost.trimmed
          ? `Cannot resume after '${afterId}': the result log of stream '${stream}' ${lost.trimmed}`
          : compareIds(afterId, lost.lastId) > 0
          ? `Cannot resume after '${afterId}': the result log of stream '${stream}' ends at '${lost.lastId}'`
          : lost.neverHad
          ? `Cannot resume after '${afterId}': the result log of stream '${stream}' ${lost.neverHad}`
          : null;
        if (reason !== null) {
          this.#join(tail, subscriber, { afterId: tail.cursor, resumed: false, reason });
          return;
        }
        subscriber.sink.open?.({ afterId, resumed: true });
        replaying = true;
      } else if (lost.trimmed) {
        this.#unsubscribe(tail, subscriber);
        subscriber.sink.close(
          `Cannot resume after '${afterId}': the result log of stream '${stream}' was trimmed past '${cursor}' during the replay`,
        );
        return;
      }
      // The tail hands out entries after its cursor; the replay covers the rest.
      let reachedTail = false;
      for (const entry of entries) {
        if (tail.cursor === null || compareIds(entry.id, tail.cursor) > 0) {
          reachedTail = true;
          break;
        }
        const payload = publicPayload(this.#current(tail), entry);
        if (this.#offer(tail, subscriber, payload, entry.id) === "full") {
          // The replay goes on at the subscriber's pace.
          subscriber.joined = true;
          this.#fallBehind(tail, subscriber, cursor);
          return;
        }
        cursor = entry.id;
        if (!tail.subscribers.has(subscriber)) return;
      }
      if (reachedTail || tail.cursor === null || compareIds(cursor, tail.cursor) >= 0) {
        // `afterId` may be past the tail's cursor: the tail must not send what preceded it.
        subscriber.replayedTo = cursor;
        subscriber.joined = true;
        return;
      }
    }
  }

  /**
   * Whether entries of a stream's log after `id` were trimmed (then how to say so), and the id of
   * the newest entry the log ever had; `neverHad` says why `id`, between what was trimmed and the
   * oldest entry held, was never this log's (a log deleted since had it). A store that cannot tell
   * what it trimmed is judged by its oldest entry: one after `id` may follow trimmed ones.
   * `neverHad` shows only when the store reports the exact trimmed id (the memory store, or Redis
   * with nothing trimmed); on a trimmed Redis log an id of a deleted log is refused as `trimmed`.
   */
  async #lostAfter(
    stream: string,
    id: string,
  ): Promise<{ trimmed: string | null; lastId: string; neverHad?: string }> {
    const position = await this.#store.logPosition(stream);
    if (position.trimmedThrough !== null) {
      const trimmed = compareIds(position.trimmedThrough, id) > 0;
      // After what was trimmed (`0-0` when nothing was) and before the oldest entry held: no id of
      // this log, but of one deleted since, whose entries after it are gone with it.
      const neverHad = compareIds(id, position.trimmedThrough) > 0 && position.firstId !== null &&
        compareIds(id, position.firstId) < 0;
      return {
        trimmed: trimmed ? `was trimmed through '${position.trimmedThrough}'` : null,
        lastId: position.lastId,
        ...(neverHad
          ? {
            neverHad:
              `starts at '${position.firstId}' and never had that id (its stream deleted and created again, or the store's log lost)`,
          }
          : {}),
      };
    }
    const [oldest] = await this.#store.readLog(stream, null, 1);
    return {
      trimmed: oldest === undefined
        ? (compareIds(position.lastId, id) > 0 ? "is empty" : null)
        : compareIds(oldest.id, id) > 0
        ? `now starts at '${oldest.id}'`
        : null,
      lastId: position.lastId,
    };
  }

  /**
   * Hands a message to a subscriber, unless it does not match or the sink is not ready. A filter
   * whose patterns taken from messages pass their budget ends the subscription, naming it (see
   * {@linkcode FILTER_PATTERN_PERIOD_MS}): the message is not sent, nor any after it.
   */
  #offer(tail: Tail, subscriber: Subscriber, payload: PublicPayload | null, id: string): Offered {
    if (!payload) return "skipped";
    const budget = this.#filterPatterns(subscriber);
    const matched = budget === undefined
      ? matchesSubscription(subscriber.subscription, payload)
      : withRequestPatterns(budget, matchesSubscription, subscriber.subscription, payload);
    if (budget?.cut) {
      this.#drop(tail, subscriber, filterPatternBudgetMessage(budget.maxCost));
      return "skipped";
    }
    if (!matched) return "skipped";
    if (subscriber.sink.ready?.() === false) return "full";
    try {
      subscriber.sink.send(payload, id);
    } catch (error) {
      logger.error("Live subscriber failed: {error}", { error });
    }
    return "sent";
  }

  /** A subscriber's budget for the patterns its filter takes from messages, renewed each period. */
  #filterPatterns(subscriber: Subscriber): RequestPatternBudget | undefined {
    if (!subscriber.subscription.filter) return undefined;
    const now = this.#now();
    const held = subscriber.patterns;
    if (held && withinPeriod(now, held.sinceMs, FILTER_PATTERN_PERIOD_MS)) return held.budget;
    const budget = new RequestPatternBudget();
    subscriber.patterns = { budget, sinceMs: now };
    return budget;
  }

  /**
   * Stops the tail handing a subscriber entries (it has every message through `after`) and reads
   * the log for it at its pace, until it reaches the tail's cursor.
   */
  #fallBehind(tail: Tail, subscriber: Subscriber, after: string): void {
    subscriber.behind = { after, progressAt: this.#now() };
    if (this.#catchingUp.has(subscriber)) return;
    const loop = this.#catchUp(tail, subscriber)
      .catch((error) => logger.error("Live subscriber failed: {error}", { error }))
      .finally(() => this.#catchingUp.delete(subscriber));
    this.#catchingUp.set(subscriber, loop);
  }

  /** Drops a subscriber that fell behind for good. */
  #drop(tail: Tail, subscriber: Subscriber, reason: string): void {
    this.#unsubscribe(tail, subscriber);
    const sink = subscriber.sink;
    if (sink.drop) sink.drop(reason);
    else sink.close(reason);
  }

  /**
   * Reads the log for a subscriber behind, a page at a time, handing it what it takes while its
   * sink is ready, until it has everything through the tail's cursor: then the tail takes over.
   * Drops it when it took nothing for `stalledMs`, or when the log was trimmed past it.
   */
  async #catchUp(tail: Tail, subscriber: Subscriber): Promise<void> {
    const stream = tail.stream.name;
    while (tail.subscribers.has(subscriber) && subscriber.behind !== null) {
      const behind = subscriber.behind;
      if (tail.cursor !== null && compareIds(behind.after, tail.cursor) >= 0) {
        subscriber.behind = null;
        return;
      }
      if (subscriber.sink.ready?.() === false) {
        const now = this.#now();
        // A clock before the last progress (the wall clock stepped back) counts from now: else
        // the subscriber would be kept until the clock passed that time again, an hour for a
        // step of an hour, rather than for stalledMs.
        if (now < behind.progressAt) behind.progressAt = now;
        const stalled = now - behind.progressAt;
        if (stalled >= this.#stalledMs) {
          this.#drop(
            tail,
            subscriber,
            `Subscriber too slow: it read nothing of what was waiting to be sent for ${stalled} ms`,
          );
          return;
        }
        await this.#untilReady(subscriber, this.#stalledMs - stalled);
        continue;
      }
      let entries: LogEntry[];
      let lost: { trimmed: string | null };
      try {
        entries = await this.#store.readLog(stream, behind.after, this.#readLimit);
        lost = await this.#lostAfter(stream, behind.after);
      } catch {
        // The store unreachable: not the subscriber's fault; the tail logs the outage.
        behind.progressAt = this.#now();
        await wait(this.#pollMs);
        continue;
      }
      if (!tail.subscribers.has(subscriber)) return;
      if (lost.trimmed) {
        this.#drop(
          tail,
          subscriber,
          `Subscriber too slow: the result log of stream '${stream}' ${lost.trimmed}, past '${behind.after}' that it had read up to`,
        );
        return;
      }
      if (entries.length === 0) {
        // Nothing after it though the tail is further: its log was deleted (the stream deleted,
        // the key expired) and what it had not read is gone.
        this.#drop(
          tail,
          subscriber,
          `Subscriber too slow: the result log of stream '${stream}' no longer holds what followed '${behind.after}'`,
        );
        return;
      }
      for (const entry of entries) {
        if (tail.cursor === null || compareIds(entry.id, tail.cursor) > 0) break;
        const offered = this.#offer(
          tail,
          subscriber,
          publicPayload(this.#current(tail), entry),
          entry.id,
        );
        if (offered === "full") break;
        behind.after = entry.id;
        if (offered === "sent") behind.progressAt = this.#now();
        if (!tail.subscribers.has(subscriber)) return;
      }
      // A page the subscriber took whole and that did not reach the tail: the next one at once.
      // One it did not: a sink that says when it drains waits for that at the loop's start.
      if (!subscriber.sink.drained && subscriber.sink.ready?.() === false) {
        await wait(BEHIND_WAIT_MS);
      }
    }
  }

  /**
   * Waits, for a subscriber behind whose sink is not ready, until the sink drains, the subscriber
   * is removed, or `stallLeftMs` pass (then it may be dropped as stalled): one timer for the whole
   * wait. A sink that cannot say when it drains is asked again after {@linkcode BEHIND_WAIT_MS}.
   */
  async #untilReady(subscriber: Subscriber, stallLeftMs: number): Promise<void> {
    if (!subscriber.sink.drained) {
      await wait(BEHIND_WAIT_MS);
      return;
    }
    const woken = Promise.withResolvers<void>();
    subscriber.wake = woken.resolve;
    const timer = setTimeout(woken.resolve, Math.max(1, stallLeftMs));
    let drained = false;
    try {
      await Promise.race([
        subscriber.sink.drained().then(() => drained = true),
        woken.promise,
      ]);
    } finally {
      clearTimeout(timer);
      subscriber.wake = undefined;
    }
    // A sink that says it drained yet is not ready is asked again after BEHIND_WAIT_MS, as one
    // that cannot say, not at once in a loop of settled promises that no timer would break.
    if (drained && subscriber.sink.ready?.() === false) await wait(BEHIND_WAIT_MS);
  }

  /**
   * The stream's definition as served now: a tail outlives changes made at run
   * time, and a counter added since must reach its subscribers.
   */
  #current(tail: Tail): CompiledStream {
    return this.#streams.get(tail.stream.name) ?? tail.stream;
  }

  #startTail(stream: CompiledStream): Tail {
    const tail: Tail = {
      stream,
      subscribers: new Set(),
      cursor: null,
      stopped: false,
      ready: Promise.resolve(),
      failing: false,
      outage: new OutageLog(logger, {
        failed: "Cannot read the result log of stream {stream} for live subscribers: {error}",
        recovered: "The result log of stream {stream} is read for live subscribers again",
      }),
      signalledAt: 0,
      signalled: new Set(),
    };
    // Other instances learn of the demand first, so they publish what arrives next
    // (a microtask later, once subscribe() has added the subscriber).
    tail.ready = Promise.resolve().then(() => this.#signal(tail))
      .then(() => this.#store.lastLogId(stream.name)).then((id) => {
        // An empty log starts at `0-0`: a subscriber that resumes after it misses nothing.
        tail.cursor = id ?? "0-0";
        this.#schedule(tail, this.#pollMs);
      }, (error) => {
        // Forget the tail so the next subscriber tries again.
        if (this.#tails.get(stream.name) === tail) this.#tails.delete(stream.name);
        tail.stopped = true;
        throw error;
      });
    return tail;
  }

  #schedule(tail: Tail, delayMs: number): void {
    if (tail.stopped) return;
    // The tail serves every subscriber of the stream, for as long as any stays: not the request
    // of the one whose subscription started it (its trace, its requestId in log lines).
    tail.timer = detached(() =>
      setTimeout(() => {
        tail.timer = undefined;
        tail.polling = this.#poll(tail).finally(() => tail.polling = undefined);
      }, delayMs)
    );
  }

  /** Tells instances sharing the store what this instance's subscribers of a stream want. */
  async #signal(tail: Tail): Promise<void> {
    if (!this.#shared) return;
    const types = new Set<string>();
    for (const subscriber of tail.subscribers) {
      for (const type of subscriber.subscription.types) types.add(type);
    }
    for (const [type, count] of this.#demand.get(tail.stream.name) ?? []) {
      if (count > 0) types.add(type);
    }
    tail.signalledAt = this.#now();
    try {
      await this.#store.signalDemand(tail.stream.name, [...types], this.#demandTtlMs);
    } catch (error) {
      // Not signalled: the next poll tries again, so the demand is back as soon as the store
      // answers (not a third of its lifetime after this attempt).
      tail.signalledAt = 0;
      throw error;
    }
    tail.signalled = types;
  }

  async #poll(tail: Tail): Promise<void> {
    let full = false;
    try {
      // A clock before the last signal (stepped back) signals again: else the demand stored
      // with the TTL would lapse meanwhile, and other instances stop logging what is wanted here.
      if (!withinPeriod(this.#now(), tail.signalledAt, this.#demandTtlMs / 3)) {
        await this.#signal(tail);
      }
      const entries = await this.#store.readLog(tail.stream.name, tail.cursor, this.#readLimit);
      tail.failing = false;
      tail.outage.success({ stream: tail.stream.name });
      full = entries.length === this.#readLimit;
      for (const entry of entries) {
        if (tail.stopped) return;
        const before = tail.cursor ?? "0-0";
        tail.cursor = entry.id;
        const payload = publicPayload(this.#current(tail), entry);
        if (!payload) continue;
        for (const subscriber of [...tail.subscribers]) {
          if (!subscriber.joined || subscriber.behind !== null) continue;
          if (subscriber.replayedTo !== null) {
            if (compareIds(entry.id, subscriber.replayedTo) <= 0) continue;
            subscriber.replayedTo = null;
          }
          if (this.#offer(tail, subscriber, payload, entry.id) === "full") {
            this.#fallBehind(tail, subscriber, before);
          }
        }
      }
    } catch (error) {
      // Said once a failing streak, or for the store unavailable as an outage (once a minute): a
      // read refused as too large is refused again each poll, and said once, as anything else.
      if (isStoreDown(error) || !tail.failing) {
        tail.outage.failure(error, { stream: tail.stream.name });
      }
      tail.failing = true;
    }
    this.#schedule(tail, full ? 0 : this.#pollMs);
  }

  #observe(batch: AppliedBatch): void {
    const name = batch.stream.name;
    if (this.#shared) {
      this.#pruneRemoteDemand();
      // The store reported, with this batch, what subscribers anywhere want now.
      this.#remoteDemand.set(name, { at: this.#now(), types: new Set(batch.demand) });
      this.#logMissed(batch);
    }
    if (this.#closed) return;
    if (!this.wants(name, "window.updated")) {
      // Values change unseen while nobody listens; the next subscriber must not
      // miss a window because it happens to be back at a value published before.
      const idle = this.#pending.get(name);
      if (idle) {
        idle.published.clear();
        this.#forgetIdle(idle);
      }
      return;
    }
    let pending = this.#pending.get(name);
    if (!pending) {
      pending = {
        stream: batch.stream,
        touched: new Map(),
        published: new Map(),
        outage: new OutageLog(logger, {
          failed: "Cannot publish window.updated for stream {stream}: {error}",
          recovered: "window.updated of stream {stream} published again",
        }),
        watermarkMs: -Infinity,
      };
      this.#pending.set(name, pending);
    } else if (pending.stream !== batch.stream) this.#redefine(pending, batch.stream);
    const touched = pending.touched;
    const idleMs = batch.stream.idleMs;
    if (idleMs !== null) pending.watermarkMs = Math.max(pending.watermarkMs, batch.nowMs - idleMs);
    batch.events.forEach((event, index) => {
      if (batch.outcomes[index] !== "applied") return;
      // The watermark is the largest event time the store has seen, so at least this.
      pending.watermarkMs = Math.max(pending.watermarkMs, event.timeMs);
      for (const update of cellUpdatesOf(batch.updates, batch.stream.counters.length, index)) {
        // Sessions have no fixed windows to publish; they are published when they close.
        if (batch.stream.counters[update.counter].window.kind === "session") continue;
        let groups = touched.get(update.counter);
        if (!groups) {
          groups = new Map();
          touched.set(update.counter, groups);
        }
        let panes = groups.get(update.group);
        if (!panes) {
          panes = new Set();
          groups.set(update.group, panes);
        }
        panes.add(update.pane);
      }
    });
    // Leading edge: publish right away, then at most once per interval.
    if (touched.size > 0 && pending.timer === undefined && pending.flushing === undefined) {
      pending.timer = setTimeout(() => this.#flush(pending), 0);
    }
  }

  #flush(pending: PendingUpdates): void {
    pending.timer = undefined;
    if (pending.touched.size === 0) this.#forgetIdle(pending);
    if (pending.touched.size === 0 || this.#closed) return;
    const touched = pending.touched;
    pending.touched = new Map();
    pending.flushing = this.#publish(pending, touched)
      .then(
        () => pending.outage.success({ stream: pending.stream.name }),
        (error) => pending.outage.failure(error, { stream: pending.stream.name }),
      )
      .finally(() => {
        pending.flushing = undefined;
        if (!this.#closed) {
          pending.timer = setTimeout(() => this.#flush(pending), this.#updateIntervalMs);
        }
      });
  }

  /**
   * Reads the current values of the touched windows and appends those that
   * changed since they were last published to the log.
   */
  async #publish(
    pending: PendingUpdates,
    touched: Map<number, Map<string, Set<number>>>,
  ): Promise<void> {
    const stream = pending.stream;
    const keys = counterKeysOf(stream);
    const perCounter = await Promise.all([...touched].map(async ([index, groups]) => {
      const counter = stream.counters[index];
      const startsByGroup = new Map<string, Set<number>>();
      const starts = new Set<number>();
      for (const [group, panes] of groups) {
        const groupStarts = new Set<number>();
        for (const pane of panes) {
          for (const start of windowsOfPane(pane, counter.window)) {
            groupStarts.add(start);
            starts.add(start);
          }
        }
        startsByGroup.set(group, groupStarts);
      }
      // A few windows a store read (see the alerts'): an event of a sliding 1d counter of 1m
      // panes is in 1,440 windows of 1,440 panes, which one Redis script would merge for seconds.
      const values = await readWindowsInTurn(
        this.#store,
        stream.name,
        counter,
        [...starts],
      );
      const changes: Array<{ key: string; published: PublishedValue; record: LogRecord }> = [];
      for (const value of values) {
        // Events past maxGroups count into __other__, which nobody names.
        if (value.group !== OTHER_GROUP && !startsByGroup.get(value.group)?.has(value.start)) {
          continue;
        }
        const key = `${keys[index]}:${value.start}:${value.group}`;
        const end = value.start + counter.window.sizeMs;
        const published = {
          value: JSON.stringify([
            aggregateValue(counter.aggregate, value.state),
            value.state.approximate,
          ]),
          endMs: end,
        };
        if (pending.published.get(key)?.value === published.value) continue;
        changes.push({
          key,
          published,
          record: {
            type: "window.updated",
            counter: counter.name,
            start: value.start,
            end,
            group: value.group,
            state: value.state,
          },
        });
      }
      return changes;
    }));
    const changes = perCounter.flat();
    this.#forgetFinal(pending);
    if (changes.length === 0) return;
    await this.#store.appendLog(stream.name, changes.map((change) => change.record));
    this.#updatesPublished += changes.length;
    // The stream deleted and created again while this was logged (into the old incarnation's
    // log): what the new one publishes starts afresh, so none of this is remembered for it.
    if (pending.stream !== stream && !this.#sameIncarnation(stream, pending.stream)) return;
    // Remembered only once logged: a failed append publishes them again next time.
    for (const { key, published } of changes) {
      pending.published.delete(key); // re-inserted last: the map stays in publication order
      pending.published.set(key, published);
    }
    for (const key of pending.published.keys()) {
      if (pending.published.size <= this.#maxRememberedWindows) break;
      pending.published.delete(key);
    }
  }

  /**
   * Moves a stream's pending updates to its new definition (a `PUT` at run time, or the stream
   * created again): counters added or removed move the others' places, by which the windows
   * touched are kept, so they are kept by counter name again. What was published is kept by
   * counter key, the same in both definitions for a counter kept as it was, unless the stream was
   * created again: the new incarnation's values are published afresh.
   */
  #redefine(pending: PendingUpdates, stream: CompiledStream): void {
    const places = new Map(stream.counters.map((counter, index) => [counter.name, index]));
    const touched = new Map<number, Map<string, Set<number>>>();
    for (const [index, groups] of pending.touched) {
      const place = places.get(pending.stream.counters[index].name);
      if (place !== undefined) touched.set(place, groups);
    }
    pending.touched = touched;
    if (!this.#sameIncarnation(pending.stream, stream)) pending.published.clear();
    pending.stream = stream;
  }

  /**
   * Whether two definitions of a stream are of one incarnation (a `PUT` between them, not a
   * `DELETE`), as the registry serving them says; streams served without one are never created
   * again.
   */
  #sameIncarnation(before: CompiledStream, after: CompiledStream): boolean {
    const generationOfBatch = this.#streams.generationOfBatch?.bind(this.#streams);
    if (generationOfBatch === undefined) return true;
    return generationOfBatch({ stream: before.name, counters: before.counterMetas }) ===
      generationOfBatch({ stream: after.name, counters: after.counterMetas });
  }

  /**
   * Forgets a stream's pending updates once nothing is left to publish and nobody wants them: a
   * stream deleted, or no longer subscribed to, keeps nothing. The next subscriber starts afresh,
   * as it would once values changed unseen.
   */
  #forgetIdle(pending: PendingUpdates): void {
    const name = pending.stream.name;
    if (pending.timer !== undefined || pending.flushing !== undefined) return;
    if (pending.touched.size > 0 || this.wants(name, "window.updated")) return;
    if (this.#pending.get(name) === pending) this.#pending.delete(name);
  }

  /** Forgets the values of windows that became final: they never change again. */
  #forgetFinal(pending: PendingUpdates): void {
    const finalBefore = pending.watermarkMs - pending.stream.latenessMs;
    for (const [key, published] of pending.published) {
      if (published.endMs < finalBefore) pending.published.delete(key);
    }
  }
}
