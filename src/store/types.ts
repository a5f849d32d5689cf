/** The storage interface every store implements, and the batch it applies. */
import type { AggregateKind, AggregateState } from "./aggregate_state.ts";

/** What the store needs to know about one counter of a stream. */
export interface CounterMeta {
  /** Counter name, unique within its stream. */
  name: string;
  /** Aggregate kind; decides what a pane keeps. */
  aggregate: AggregateKind;
  /** Most groups a pane may hold; further groups count into {@linkcode OTHER_GROUP}. */
  maxGroups: number;
  /** How long (ms) a pane lives after its last write (window size + lateness + retention). */
  ttlMs: number;
  /** Window size (ms). */
  sizeMs: number;
  /** Distance (ms) between window starts. */
  hopMs: number;
  /** Relative accuracy of a quantiles counter's sketch. @default {DEFAULT_ACCURACY} */
  accuracy?: number;
  /**
   * Set for session counters: updates carry the event time as their `pane`,
   * and the store keeps per group the sessions of events less than `gapMs`
   * apart, at most `maxSessions` open at once per counter (`maxGroups` does
   * not apply).
   */
  session?: { gapMs: number; maxSessions: number };
}

/** How many sessions a close takes per window of its `limit` (a window holds many groups). */
export const SESSIONS_PER_WINDOW = 10;

/**
 * The value an alert fired on: a number, null (no value), or for a quantiles
 * counter its summary object (`{count, min, max, p50, …, approximate}`).
 */
export type AlertValue = number | null | { [key: string]: number | boolean | null };

/** Group key that events beyond a pane's `maxGroups` count into. */
export const OTHER_GROUP = "__other__";

/**
 * Group key of the row {@linkcode ReadOptions.top} adds for a distinct
 * counter: the union of every group but the top ones. NUL first, so no group
 * key (JSON text) can equal it.
 */
export const REST_GROUP = "\u0000rest";

/**
 * Entries a stream's result log keeps (for SSE resumes) however far its dispatch is: older ones
 * are trimmed once dispatched (by Redis: about this many when no dispatch holds the log).
 */
export const MAX_LOG_ENTRIES = 100_000;

/**
 * Hard bound on the entries of a stream's result log while its webhook dispatch holds it (see
 * {@linkcode Store.markDispatched}): room for one close of the most groups a stream may have
 * (1,000,000) beside {@linkcode MAX_LOG_ENTRIES}. Past it the oldest are trimmed even when not
 * dispatched yet, and counted (`markDispatched` returns them).
 */
export const MAX_LOG_BACKLOG = 1_200_000;

/**
 * Default bound on a stream's stored `Idempotency-Key` replies, 128 MiB a stream, each counted as
 * its key's and body's hashes, its reply and 128 bytes more: the memory store's
 * `maxReplyBytes` and the Redis store's. Past it a store forgets the stream's oldest replies
 * before their TTL, counting them in {@linkcode StreamStats.repliesForgotten}.
 */
export const DEFAULT_MAX_REPLY_BYTES = 134_217_728;

/**
 * A store's `maxReplyBytes` option (both stores' constructors), {@linkcode DEFAULT_MAX_REPLY_BYTES}
 * when absent.
 *
 * @throws {RangeError} When it is not a positive safe integer.
 */
export function checkMaxReplyBytes(value: number = DEFAULT_MAX_REPLY_BYTES): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`maxReplyBytes must be a positive integer, got ${value}`);
  }
  return value;
}

/**
 * The warning both stores log once per stream (and process) when its bound first forgets a reply:
 * a LogTape message with the `stream` and `maxReplyBytes` properties.
 */
export const REPLIES_FORGOTTEN_WARNING =
  "Stream '{stream}' forgets Idempotency-Key replies before their idempotencyTtl, as it holds at most {maxReplyBytes} bytes of them: a request sent again with a forgotten key applies again (stats.repliesForgotten counts them)";

/** The bounds of a stream's result log (see {@linkcode MAX_LOG_ENTRIES}, {@linkcode MAX_LOG_BACKLOG}). */
export interface LogBounds {
  /** Entries kept whatever was dispatched. @default {MAX_LOG_ENTRIES} */
  retain?: number;
  /** Most entries while a dispatch holds the log. @default {MAX_LOG_BACKLOG} */
  max?: number;
}

/** The bounds of a store's result logs, defaults filled in (see {@linkcode Store.logBounds}). */
export type ResultLogBounds = Readonly<Required<LogBounds>>;

/** The bounds of a result log, defaults filled in and checked: `[retain, max]`. */
export function logBounds(bounds: LogBounds = {}): [number, number] {
  const retain = bounds.retain ?? MAX_LOG_ENTRIES;
  const max = bounds.max ?? Math.max(MAX_LOG_BACKLOG, retain);
  if (!Number.isSafeInteger(retain) || retain < 1 || !Number.isSafeInteger(max) || max < retain) {
    throw new RangeError(
      `log bounds must be integers with 1 <= retain <= max, got ${retain} and ${max}`,
    );
  }
  return [retain, max];
}

/**
 * One update of one event to one counter's pane. The batch carries them as
 * {@linkcode BatchUpdates} columns; {@linkcode cellUpdatesOf} makes these of one event.
 */
export interface CellUpdate {
  /** Index of the counter in {@linkcode StoreBatch.counters}. */
  counter: number;
  /** Start (ms) of the pane. */
  pane: number;
  /** Group key (JSON array of the group values). */
  group: string;
  /** Numeric value (sum, min, max, avg), canonical text (distinct), or absent (count). */
  value?: number | string;
}

/** One valid, transformed event as the store sees it. */
export interface BatchEvent {
  /** Dedupe id, when the stream dedupes and the event has one. */
  id?: string;
  /** Event time (ms). */
  timeMs: number;
  /** The transformed event as JSON text, when the batch logs events. */
  payload?: string;
  /**
   * The transformed event, for work after the apply (logging it for a subscriber the batch did
   * not know of); never sent to the store.
   */
  value?: unknown;
}

/**
 * The counter updates of a batch's events as columns rather than a {@linkcode CellUpdate} object
 * per event and counter: entry `e * counters.length + c` is event `e`'s update to counter `c`
 * (`e` its index in {@linkcode StoreBatch.events}), the same fields as a `CellUpdate`'s. An
 * event does not update a counter whose entry has no group.
 */
export interface BatchUpdates {
  /** {@linkcode CellUpdate.pane} of each entry (any number where there is no update). */
  panes: number[];
  /** {@linkcode CellUpdate.group} of each entry; undefined where there is no update. */
  groups: (string | undefined)[];
  /** {@linkcode CellUpdate.value} of each entry. */
  values: (number | string | undefined)[];
}

/** The updates of event `e` in `columns` of a stream of `width` counters, as objects. */
export function cellUpdatesOf(
  columns: BatchUpdates | undefined,
  width: number,
  e: number,
): CellUpdate[] {
  const updates: CellUpdate[] = [];
  if (columns === undefined) return updates;
  for (let counter = 0; counter < width; counter++) {
    const at = e * width + counter;
    const group = columns.groups[at];
    if (group === undefined) continue;
    const value = columns.values[at];
    updates.push(
      value === undefined
        ? { counter, pane: columns.panes[at], group }
        : { counter, pane: columns.panes[at], group, value },
    );
  }
  return updates;
}

/** An event with its updates as objects, at most one per counter. */
export type EventWithCellUpdates = BatchEvent & { updates: CellUpdate[] };

/** A batch whose events carry their updates as objects (tests build them so: {@linkcode fromCellUpdates}). */
export type BatchOfCellUpdates = Omit<StoreBatch, "events" | "updates"> & {
  events: EventWithCellUpdates[];
};

/** `batch` with its events' updates as columns, as the pipeline makes them. */
export function fromCellUpdates(batch: BatchOfCellUpdates): StoreBatch {
  const width = batch.counters.length;
  const size = batch.events.length * width;
  const updates: BatchUpdates = {
    panes: new Array(size).fill(0),
    groups: new Array(size).fill(undefined),
    values: new Array(size).fill(undefined),
  };
  const events = batch.events.map(({ updates: cells, ...event }, e) => {
    for (const update of cells) {
      const at = e * width + update.counter;
      updates.panes[at] = update.pane;
      updates.groups[at] = update.group;
      updates.values[at] = update.value;
    }
    return event;
  });
  return { ...batch, events, updates };
}

/**
 * An `Idempotency-Key` claim of one request: the first request with a key
 * applies and stores its reply; the same key again within `ttlMs` applies
 * nothing and gets that reply back. Keys and bodies are stored as hashes.
 */
export interface IdempotencyClaim {
  /** Hash of the key (hex); the key itself is never stored. */
  keyHash: string;
  /** Hash of what was sent; the same key with another body is a conflict. */
  bodyHash: string;
  /** How long (ms) the reply is kept. */
  ttlMs: number;
  /**
   * The reply to store, as JSON text, without the counts only the store
   * knows (duplicates, late): {@linkcode RequestResult} carries those.
   */
  reply: string;
}

/**
 * A rate limit a request must fit in: a token bucket of `limit` tokens that
 * refills over `windowMs`. The request takes `cost` tokens or is refused
 * whole. Buckets are per stream (they live in the stream's hash slot).
 */
export interface RateLimitClaim {
  /** Bucket name within the stream (e.g. an API key's id). */
  key: string;
  /** Tokens a full bucket holds. */
  limit: number;
  /** Time (ms) to refill an empty bucket. */
  windowMs: number;
  /** Tokens this request takes (e.g. its event count). */
  cost: number;
}

/**
 * One client request of a batch. Requests take the batch's events in order:
 * the first `events` events belong to the first request, and so on. Each is
 * applied, replayed or refused on its own; what one request sends never
 * makes the others fail.
 */
export interface BatchRequest {
  /** How many of the batch's events are this request's (the next ones in order). */
  events: number;
  /** Events of this request the transforms filtered out (counted in stats when applied). */
  filtered: number;
  /**
   * Events of this request refused before the store (schema, time, transform
   * errors); counted in stats when it applies, so a replay counts none. @default {0}
   */
  rejected?: number;
  /** Its `Idempotency-Key`, when it sent one. */
  idempotency?: IdempotencyClaim;
  /**
   * The rate limits it must fit in (e.g. the stream's and its key's): it is
   * admitted only when every bucket holds its cost, and then takes the cost
   * from each; a refused request takes nothing. @default {none}
   */
  rateLimits?: RateLimitClaim[];
}

/** What happened to one request of a batch. */
export type RequestResult =
  | {
    /** Its events went through dedupe, lateness and the counters. */
    status: "applied";
    /** Of its events, how many were duplicates. */
    duplicates: number;
    /** Of its events, how many were late. */
    late: number;
  }
  | {
    /** An earlier request with the same key and body applied; nothing was applied now. */
    status: "replayed";
    /** The earlier request's stored reply ({@linkcode IdempotencyClaim.reply}). */
    reply: string;
    /** The earlier request's duplicates. */
    duplicates: number;
    /** The earlier request's late events. */
    late: number;
  }
  | {
    /** The key was used with another body; nothing was applied. */
    status: "conflict";
  }
  | {
    /** An earlier request of the same batch has the same key; nothing was applied. */
    status: "in_flight";
  }
  | {
    /** A rate limit had fewer tokens than the request costs; nothing was applied. */
    status: "rate_limited";
    /** When (ms from now) the bucket holds enough tokens. */
    retryAfterMs: number;
    /** Index in {@linkcode BatchRequest.rateLimits} of the bucket that refused it. */
    claim: number;
    /** Whole tokens that bucket holds now. */
    remaining: number;
  };

/** Everything one or more ingest requests ask the store to apply in one atomic step. */
export interface StoreBatch {
  /** Stream name. */
  stream: string;
  /** Receive time (ms), used for dedupe and pane expiry. */
  nowMs: number;
  /**
   * Whether the caller recorded the stream's definition (or read its
   * record) before: a store that holds the definitions (a Redis store's
   * `definitionsHere`, a memory store made with its definition store) then
   * refuses the batch with {@linkcode StreamChangedError} of version 0 when
   * the record is missing (a Redis restored from before the stream was
   * created, say). @default {false}
   */
  recorded?: boolean;
  /**
   * The version of the stream's definition the caller serves (see `definitions.ts`). When the
   * stored record's is later (the caller has not reloaded it yet, and its reads still judge by
   * `latenessMs`), what that definition calls final after the batch, the watermark less
   * `latenessMs`, stays final ({@linkcode StreamStats.closedThrough}), as the write of the record
   * kept final what the definition it replaced called so. When an API write of the record after
   * it added counters (see `DefinitionWriteOptions.addedCounters`), a store holding the
   * definitions refuses the batch with {@linkcode StreamChangedError}, writing nothing: it lacks
   * them. @default {none: nothing kept, nothing refused}
   */
  definitionVersion?: number;
  /** Events this far (ms) behind the watermark are late. */
  latenessMs: number;
  /**
   * When set, the watermark is first raised to at least `nowMs - idleMs`, so
   * it follows the clock while no newer events arrive.
   */
  idleMs?: number | null;
  /** How long (ms) a dedupe id is remembered; 0 when the stream does not dedupe. */
  dedupeTtlMs: number;
  /** The stream's counters, indexed by {@linkcode CellUpdate.counter}. */
  counters: CounterMeta[];
  /** Events in arrival order. */
  events: BatchEvent[];
  /** The events' counter updates. @default {none: no event updates a counter} */
  updates?: BatchUpdates;
  /**
   * The requests the events belong to, in order (their `events` counts add
   * up to `events.length`). @default {one request of all events, with `filtered`}
   */
  requests?: BatchRequest[];
  /** Events the transforms filtered out (counted in stats only), when `requests` is not given. */
  filtered?: number;
  /**
   * Which events go to the stream's result log in the same atomic step
   * (`event.processed` for applied events, `event.late` for late ones); they
   * need {@linkcode BatchEvent.payload}. @default {none}
   */
  log?: {
    processed?: boolean;
    late?: boolean;
    /**
     * Log the types above only when the store's live demand (subscribers on
     * any instance, see `signalDemand`) lists them: set when this instance
     * cannot tell whether a subscriber elsewhere wants them.
     */
    ifWanted?: boolean;
  };
}

/** A result in a stream's durable log, in the store's own compact form. */
export type LogRecord =
  | {
    type: "window.closed";
    counter: string;
    start: number;
    end: number;
    group: string;
    state: AggregateState;
  }
  | {
    type: "alert.fired";
    alert: string;
    counter: string;
    start: number;
    end: number;
    group: string;
    value: AlertValue;
    /** The value is an estimate (a distinct count from a HyperLogLog): as the window's state says. */
    approximate?: true;
  }
  | { type: "event.processed" | "event.late"; timeMs: number; event: unknown }
  | {
    type: "window.updated";
    counter: string;
    start: number;
    end: number;
    group: string;
    state: AggregateState;
  };

/** One entry of a stream's result log. */
export interface LogEntry {
  /** Position in the log: `<ms>-<seq>`, increasing; pass it back as `afterId`. */
  id: string;
  /** When it was written (ms). */
  timeMs: number;
  /** What happened. */
  record: LogRecord;
}

/** Where a stream's result log stands ({@linkcode Store.logPosition}). */
export interface LogPosition {
  /** Id of the newest entry the log ever had, also when trimmed or empty; `0-0` when it never had one. */
  lastId: string;
  /**
   * An id at or after the newest entry trimmed from the log and before the oldest it holds: `0-0`
   * when none was trimmed. The memory store gives the trimmed entry's id; Redis, which keeps no
   * id of what `XTRIM` removed, the id just before its oldest entry. Null when the store cannot
   * tell (a Redis before 7.0, without `entries-added`): then only ids at or after the oldest
   * entry held are known to miss nothing.
   */
  trimmedThrough: string | null;
  /**
   * Id of the oldest entry the log holds; null when it holds none or the store cannot tell. An id
   * after {@linkcode trimmedThrough} and before it was never this log's: one of a log deleted
   * since (its stream deleted and created again, a memory store restarted).
   */
  firstId: string | null;
}

/** An alert that became true for one window and group. */
export interface AlertFiring {
  /** Alert name, unique within the stream. */
  alert: string;
  /** Counter the alert watches. */
  counter: string;
  /** Window start (ms). */
  start: number;
  /** Window end (ms). */
  end: number;
  /** Group key. */
  group: string;
  /** The value that made it true. */
  value: AlertValue;
  /** The value is an estimate (the window's state is: a distinct count from a HyperLogLog). */
  approximate?: true;
  /** How long (ms) the "already fired" marker lives (window size + lateness + retention). */
  ttlMs: number;
}

/**
 * What happened to each event of a batch; `skipped` when its request was not
 * applied (replayed, conflict, in flight or rate limited).
 */
export type EventOutcome = "applied" | "duplicate" | "late" | "skipped";

/** Result of {@linkcode Store.applyBatch}. */
export interface ApplyResult {
  /** One outcome per event of the batch, in order. */
  outcomes: EventOutcome[];
  /** One result per request of the batch (one when the batch gave no `requests`). */
  requests: RequestResult[];
  /** Stream watermark (ms) after the batch, or null when no event was ever seen. */
  watermark: number | null;
  /**
   * Result types some instance's live subscribers want from this stream right
   * now (see {@linkcode Store.signalDemand}), read in the same step.
   */
  demand: string[];
  /**
   * The version of the stream's stored definition (see `definitions.ts`),
   * read in the same step; 0 when it has none (or the store keeps no
   * definitions). An instance holding an older version reloads it. A record
   * that says the batch's generation (see `generationKey`) was deleted, or
   * names another, makes the store refuse the batch, writing nothing, with
   * {@linkcode StreamChangedError}.
   */
  definitionVersion?: number;
}

/** Counters and watermark of one stream, summed over all instances. */
export interface StreamStats {
  /** Max event time seen (ms), or null. */
  watermark: number | null;
  /** Events acknowledged (applied, duplicate, late or filtered). */
  accepted: number;
  /** Events applied to counters. */
  applied: number;
  /** Events acknowledged as duplicates. */
  duplicates: number;
  /** Events that arrived past the lateness bound. */
  late: number;
  /** Events dropped by a filter. */
  filtered: number;
  /**
   * Events refused (schema, time, transform errors): a request's, in the step that applies it
   * (see {@linkcode BatchRequest.rejected}); one that accepted none is a request of no event.
   */
  rejected: number;
  /** Per counter: updates that went into the `__other__` group. */
  overflow: Record<string, number>;
  /**
   * Dedupe ids forgotten before their TTL because the store's bound on held
   * ids was reached (the memory store's `maxDedupeIds`; always 0 on Redis,
   * which keeps every id for its TTL).
   */
  dedupeForgotten: number;
  /**
   * Idempotency-Key replies forgotten before their `idempotencyTtl` because the store's bound on
   * a stream's stored replies was reached (the stores' `maxReplyBytes`, default
   * {@linkcode DEFAULT_MAX_REPLY_BYTES}): a request sent again with such a key applies again.
   */
  repliesForgotten: number;
  /**
   * The latest end of a window a close claimed (of a session: its end plus the gap), or what
   * {@linkcode Store.keepFinal} kept final when later, when either was: an event before it is
   * late whatever the lateness is now, so a raised lateness never re-opens a window or session
   * that closed or read as final. Never later than the watermark less a lateness in force when it
   * was set, so it changes nothing while the lateness stays or is lowered.
   */
  closedThrough?: number;
  /**
   * The version of the latest definition write that kept final what the definitions it replaced
   * called so (`DefinitionWriteOptions.keepFinal`: a raised lateness, a longer `idle` or none),
   * stored in the same atomic step as the write by a definition store that holds the data. A
   * read holding a stream of an earlier version (see `closedBefore`), or a close by one
   * ({@linkcode CloseOptions.definitionVersion}), would judge by a lateness the store no longer
   * holds.
   */
  definitionVersion?: number;
}

/** One window (or pane set) to read. */
export interface WindowRead {
  /** Window start (ms), reported back in {@linkcode WindowValue.start}. */
  start: number;
  /** Starts of the panes the window is made of. */
  panes: number[];
}

/** Options for {@linkcode Store.readWindows}. */
export interface ReadOptions {
  /**
   * For a distinct counter: also return, per window with more than `top`
   * groups, a row of group {@linkcode REST_GROUP} whose `distinct` counts the
   * union of the values of every group but the `top` with the most distinct
   * values (ties by group key in code point order), and whose `count` sums
   * theirs. Sets cannot be merged from counts, so the store does it. Other
   * counters ignore it. @default {no such row}
   */
  top?: number;
  /**
   * Read the windows as one page of a listing: in the order given, each window's groups in
   * {@linkcode compareGroupKeys} order; of the first window only the groups after `after`; at
   * most `limit` rows in all, and no window read past the one that filled them. Only the groups
   * of the page are merged; finding them costs a pass over the group keys of the panes of the
   * windows read (no sort of them all). Not with `top`. @default {every group of every window}
   */
  page?: ReadPage;
  /**
   * Also return the stream's {@linkcode ReadStats}, read in the same atomic step as the values
   * ({@linkcode WindowValues.stats}): no batch comes between them, so a window they call final
   * has every event they call on time. @default {false}
   */
  stats?: boolean;
}

/**
 * What a read needs of a stream's stats to say which of its values are final (see
 * {@linkcode ReadOptions.stats}).
 */
export type ReadStats = Pick<
  StreamStats,
  "watermark" | "closedThrough" | "definitionVersion"
>;

/** What {@linkcode Store.readWindows} returns: the values, and the stats when asked. */
export type WindowValues = WindowValue[] & {
  /** Present when {@linkcode ReadOptions.stats} asked for it. */
  stats?: ReadStats;
};

/** What {@linkcode Store.readSessions} returns: the sessions, and the stats when asked. */
export type SessionValues = SessionValue[] & {
  /** Present when {@linkcode SessionRange.stats} asked for it. */
  stats?: ReadStats;
};

/** See {@linkcode ReadOptions.page}. */
export interface ReadPage {
  /** A group key: the first window's groups up to and including it are skipped. */
  after?: string;
  /** Most rows. */
  limit: number;
}

/** State of one group in one window. */
export interface WindowValue {
  /** Window start (ms). */
  start: number;
  /** Group key (JSON array of the group values). */
  group: string;
  /** Merged state of the window's panes. */
  state: AggregateState;
}

/** One session of one group of a session counter. */
export interface SessionValue {
  /** Time (ms) of its first event. */
  start: number;
  /** Time (ms) of its last event (inclusive). */
  end: number;
  /** Group key (JSON array of the group values). */
  group: string;
  /** Merged state of its events. */
  state: AggregateState;
  /** True once a close claimed it (it can no longer change). */
  closed: boolean;
}

/** A window the store closed: final values of every group. */
export interface ClosedWindow {
  /** Counter name. */
  counter: string;
  /** Window start (ms). */
  start: number;
  /** Window end (ms, exclusive). */
  end: number;
  /** Final state per group. */
  groups: Array<{ group: string; state: AggregateState }>;
  /**
   * True when an earlier call (of any instance) claimed the window and this one returns more of
   * its groups (see {@linkcode CLOSE_CELLS_PER_CALL}); absent from the call that claimed it, so a
   * count of windows closed counts each window once.
   */
  continued?: boolean;
}

/** Options for {@linkcode Store.closeWindows}. */
export interface CloseOptions {
  /**
   * The stream's lateness (ms): windows with end <= watermark - lateness close, and those with
   * end <= {@linkcode StreamStats.closedThrough} whatever the lateness.
   */
  latenessMs: number;
  /**
   * Most windows closed per counter in one call; of a session counter, whose
   * windows are single sessions, {@linkcode SESSIONS_PER_WINDOW} times as
   * many sessions. @default {100}
   */
  limit?: number;
  /** As {@linkcode StoreBatch.idleMs}: the watermark is raised to at least `nowMs - idleMs` first. */
  idleMs?: number | null;
  /**
   * The clock (ms) of the close: for `idleMs`, and the life it gives what it keeps open and what
   * it closes. @default {the store's clock}
   */
  nowMs?: number;
  /**
   * The version of the stream's definition the caller serves, as
   * {@linkcode StoreBatch.definitionVersion}. When the stats say a later definition kept final in
   * its write ({@linkcode StreamStats.definitionVersion} past it: one that raised the lateness or
   * lengthened `idle`, so `latenessMs` may call due a window that one still takes events into), the
   * call closes (or peeks) nothing and says that version in
   * {@linkcode ClosedWindows.laterDefinition}; checked in the same atomic step as the close.
   * @default {none: closes by `latenessMs`}
   */
  definitionVersion?: number;
  /**
   * As {@linkcode StoreBatch.recorded}: the caller recorded the stream's definition (or read its
   * record) before, so a store that holds the definitions (a Redis store's `definitionsHere`, a
   * memory store made with its definition store) closes nothing when the record is missing and
   * says {@linkcode ClosedWindows.gone}. @default {false}
   */
  recorded?: boolean;
  /**
   * Closes no window that ends after it (ms), nor a session whose end + gap is past it, whatever
   * else is due. The sweep passes the {@linkcode ClosedWindows.cutoff} of its peek (lower where the
   * peek stopped at its limit or cells), so that its close claims only windows the peek saw, whose
   * alerts it fired first: one that became due in between (a batch of another instance raised the
   * watermark, or the clock of an idle stream moved) waits for the next sweep's peek rather than
   * close with its alerts never judged should the firing after the close fail. @default {none}
   */
  through?: number;
  /**
   * With {@linkcode through}: of the sessions whose end + gap is `through`, closes only those up
   * to this one (its start and group) in the close order (decimal text of the start, then group),
   * for each session counter of the call. The sweep passes the last session its peek listed of a
   * session counter it stopped at its limit, so that its close claims none past it where more than
   * the limit end in the same millisecond and another instance closed the listed ones in between.
   * @default {none}
   */
  throughSession?: { start: number; group: string };
  /**
   * The windows the caller's peek listed, by counter, each by its start with the groups listed:
   * of a window closed over several calls (one an earlier call claimed, or one this call starts
   * with more cells than it has left, or one listed here with only some of its groups, however
   * few its cells), the call closes only groups listed for it, stopping at the first other one its
   * walk reaches, which waits for a later call (none of a window not listed).
   * The groups listed are taken to be the window's own, as a peek lists them: a window listed with
   * at least as many groups as its cells (a group counts one a pane it is in) is listed whole.
   * The sweep passes what its peek listed, so that another instance moving such a close on
   * between its peek and its close leaves no group closed with its alerts not judged.
   * @default {none: as far as the cells allow}
   */
  listed?: Record<string, Array<{ start: number; groups: string[] }>>;
  /**
   * Only report the windows that are due, with their final values, without
   * claiming or logging them (work that must happen before a window closes,
   * such as alerts, can then run first and be retried). @default {false}
   */
  peek?: boolean;
}

/**
 * What one {@linkcode Store.closeWindows} call closed: whole windows, or the next groups of a
 * window closed over several calls (see {@linkcode CLOSE_CELLS_PER_CALL}), each group of a window
 * in exactly one call.
 */
export type ClosedWindows = ClosedWindow[] & {
  /** The call stopped at its cells: a call again closes more (absent: nothing more was due). */
  more?: boolean;
  /**
   * A peek's: the end (ms) through which it found windows due: the watermark (raised by `idleMs`)
   * less the lateness, or {@linkcode StreamStats.closedThrough} when later; what a close given it
   * as {@linkcode CloseOptions.through} closes at most. Absent on a close, and on a peek that
   * judged nothing: no batch applied yet, a later definition, the incarnation gone, or (on Redis)
   * the stats unchanged since a close that left nothing due, so the peek was skipped.
   */
  cutoff?: number;
  /**
   * The stats' {@linkcode StreamStats.definitionVersion} when it is later than the caller's
   * {@linkcode CloseOptions.definitionVersion}: the call closed nothing (the caller loads it).
   */
  laterDefinition?: number;
  /**
   * The definition record says the incarnation closed was deleted, or deleted and created again
   * (another generation), since the caller read it, or is missing though the caller recorded it
   * ({@linkcode CloseOptions.recorded}): the call closed nothing, and every call again closes
   * nothing (the caller reads the record again, as for an apply refused so).
   */
  gone?: boolean;
  /**
   * With {@linkcode gone}: the record is missing, not deleted nor of another generation (as a
   * {@linkcode StreamChangedError} of version 0 says for an apply).
   */
  recordMissing?: boolean;
};

/**
 * Most cells (a group in one pane of a window) one close call merges, unless the store is built
 * with another (its `closeCells` option): a window with more is claimed by the call that starts it
 * and closed over several calls, each logging the next groups (each once), and the call says so in
 * {@linkcode ClosedWindows.more}. Tens of ms of one Redis script (a few hundred on a loaded
 * machine), so a large window closes over several calls and holds up no one for long.
 */
export const CLOSE_CELLS_PER_CALL = 2_000;

/** A span of time, `fromMs` inclusive, `toMs` exclusive. */
export interface TimeRange {
  /** Earliest start included (ms). */
  fromMs: number;
  /** Starts before this (ms). */
  toMs: number;
}

/** Which sessions {@linkcode Store.readSessions} reads. */
export interface SessionRange extends TimeRange {
  /** Most sessions read (the newest starts, ties by group key). @default {all} */
  limit?: number;
  /**
   * Only the open sessions (not closed by a close yet): at most the counter's `maxSessions`,
   * however many closed ones are retained. @default {false}
   */
  open?: boolean;
  /** Also return the stream's stats, read in the same atomic step ({@linkcode ReadOptions.stats}). @default {false} */
  stats?: boolean;
}

/**
 * What one {@linkcode Store.fireAlerts} call fired: the firings that were new, in the order given.
 * `gone` is a property of this array alone: `map`, `filter`, a spread (`[...fired]`) and the like
 * make a plain array without it, so read it before (or carry it over).
 */
export type FiredAlerts = AlertFiring[] & {
  /**
   * The definition record says the incarnation fired on was deleted, or deleted and created again
   * (another generation), since the caller read it: the call fired (and logged) nothing, and every
   * call again fires nothing (the caller reads the record again, as for a close that says
   * {@linkcode ClosedWindows.gone}).
   */
  gone?: boolean;
};

/** Options of {@linkcode Store.fireAlerts}. */
export interface FireOptions {
  /** The counters of the definition the firings were evaluated by (see `fireAlerts`). */
  counters?: readonly CounterMeta[];
}

/** Storage for stream state. Implementations must apply a batch atomically. */
export interface Store {
  /** Short name for logs and `/readyz` (`memory`, `redis`). */
  readonly kind: string;
  /** Bounds of each stream's result log (see {@linkcode markDispatched}). */
  readonly logBounds: ResultLogBounds;
  /**
   * Applies a batch atomically: per event in order, the dedupe check, the
   * lateness check against the watermark, the counter updates and stats.
   * Either all of it happens or, when the store fails, none of it.
   */
  applyBatch(batch: StoreBatch): Promise<ApplyResult>;
  /** Starts of the live panes of one counter with `fromMs <= start < toMs`, ascending. */
  panes(stream: string, counter: CounterMeta, range: TimeRange): Promise<number[]>;
  /**
   * Reads merged states for the given windows of one counter; with `stats`, the stream's
   * {@linkcode ReadStats} in the same atomic step (on Redis, the same script).
   */
  readWindows(
    stream: string,
    counter: CounterMeta,
    windows: WindowRead[],
    options?: ReadOptions,
  ): Promise<WindowValues>;
  /**
   * Reads the live sessions (open, and closed within their TTL) of a session
   * counter with `fromMs <= start < toMs`, newest start first and those that
   * start together by group key ({@linkcode compareGroupKeys}); at most
   * `limit` of them when given, and only the open ones (at most `maxSessions`) with `open`; with
   * `stats`, the stream's {@linkcode ReadStats} in the same atomic step.
   */
  readSessions(stream: string, counter: CounterMeta, range: SessionRange): Promise<SessionValues>;
  /**
   * Claims and returns the windows that became final (end <= the cutoff: watermark -
   * lateness, or {@linkcode StreamStats.closedThrough} when later, as reads judge final) and
   * were not closed before, and logs a `window.closed` record per group in the same atomic
   * step. Across all instances that share the store, each window and group is returned (and
   * logged) exactly once: a window of more than `cells` cells over several calls, the first
   * claiming it (its events are late from then on). Of a session counter, each session whose
   * end + gap <= the cutoff is returned once as a window of one group (`end` = its last event's
   * time).
   */
  closeWindows(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
  ): Promise<ClosedWindows>;
  /**
   * Keeps final what is final now: raises the stream's {@linkcode StreamStats.closedThrough} to
   * at least `throughMs`, so an event before it is late whatever the lateness is later (a
   * definition that raises the lateness re-opens no window or session a read called final).
   * Nothing for a stream without a watermark, which has nothing final.
   */
  keepFinal(stream: string, throughMs: number): Promise<void>;
  /**
   * Claims alert firings and logs the new ones as `alert.fired`, atomically:
   * each (alert, window, group) fires once across all instances. Returns the
   * firings that were new. A store that holds the definitions fires nothing, in the same atomic
   * step, for an incarnation (`stream` a generation key, see `generationKey`) its record says is
   * deleted, or deleted and created again, and says {@linkcode FiredAlerts.gone}, as
   * {@linkcode closeWindows} closes nothing of it and says {@linkcode ClosedWindows.gone}.
   * `options.counters`: the counters of the definition the firings were evaluated by, which a
   * store over stream names (the registry's) fires by, as it closes by them; a store given a
   * generation key has its incarnation already.
   */
  fireAlerts(
    stream: string,
    firings: AlertFiring[],
    options?: FireOptions,
  ): Promise<FiredAlerts>;
  /**
   * Appends records to a stream's result log (for results not tied to an
   * atomic step, such as `window.updated`). One round trip.
   */
  appendLog(stream: string, records: LogRecord[]): Promise<void>;
  /** Reads a stream's result log after `afterId` (exclusive; null = from the start), oldest first. */
  readLog(stream: string, afterId: string | null, limit: number): Promise<LogEntry[]>;
  /**
   * Id of the newest entry of a stream's result log, or null when it is empty:
   * where a reader that wants only what comes next starts.
   */
  lastLogId(stream: string): Promise<string | null>;
  /**
   * Where a stream's result log stands, for resuming after an id: the id of the newest entry it
   * ever had, and the newest it trimmed. A resume after `id` misses nothing while `id` is at or
   * before `lastId` and at or after `trimmedThrough`.
   */
  logPosition(stream: string): Promise<LogPosition>;
  /**
   * Records that the stream's webhook dispatch took its result log through `throughId` (never
   * moving back), or, with null, that no dispatch holds the log any more. While a dispatch holds
   * it, the log trims only entries at or before that id (keeping the newest
   * {@linkcode MAX_LOG_ENTRIES}), up to its hard bound {@linkcode MAX_LOG_BACKLOG}; without one,
   * it keeps the newest `MAX_LOG_ENTRIES`. Trims what this frees (a bounded amount a call) and
   * returns how many entries the hard bound trimmed undispatched since the last call returned
   * them (each counted once, across instances).
   */
  markDispatched(stream: string, throughId: string | null): Promise<number>;
  /**
   * Tells every instance sharing the store that a subscriber wants these
   * result types of a stream for the next `ttlMs`; {@linkcode ApplyResult.demand}
   * reports them back. Renew before the TTL runs out.
   */
  signalDemand(stream: string, types: readonly string[], ttlMs: number): Promise<void>;
  /** Stats and watermark of a stream. */
  stats(stream: string, counters: CounterMeta[]): Promise<StreamStats>;
  /** Checks the store is reachable. Throws {@linkcode StoreUnavailableError} if not. */
  ping(): Promise<void>;
  /** Releases resources. */
  close(): Promise<void>;
}

/**
 * Whether a failed store call applied anything: `not_applied` when the store
 * answered that it did not run it ("not now"; on Redis, rarely, the answer to a
 * send repeated after one that ran), `unknown` when it may have (a timeout, a
 * connection refused or lost).
 */
export type UnavailableOutcome = "not_applied" | "unknown";

/** The store cannot be reached or did not answer in time. */
export class StoreUnavailableError extends Error {
  /** Whether the call may have been applied. */
  readonly outcome: UnavailableOutcome;

  constructor(
    message: string,
    options: ErrorOptions & { outcome?: UnavailableOutcome } = {},
  ) {
    super(message, options);
    this.name = "StoreUnavailableError";
    this.outcome = options.outcome ?? "unknown";
  }
}

/**
 * The store refused a call as too large to take in one request (Upstash: `ERR max request size
 * exceeded`) and ran nothing of it: the same call sent again is refused again, a smaller one may
 * go through.
 */
export class StoreRequestTooLargeError extends StoreUnavailableError {
  constructor(message: string, options: ErrorOptions = {}) {
    super(message, { ...options, outcome: "not_applied" });
    this.name = "StoreRequestTooLargeError";
  }
}

/**
 * Whether `error` says the store is out of reach (a {@linkcode StoreUnavailableError}), not that
 * it refused one call as too large (a {@linkcode StoreRequestTooLargeError}: the store answered,
 * and refuses the same call again each time, so it is no outage, and other calls go through).
 *
 * @example
 * ```ts
 * import { isStoreDown, StoreRequestTooLargeError, StoreUnavailableError } from "./types.ts";
 *
 * isStoreDown(new StoreUnavailableError("Redis did not answer")); // true
 * isStoreDown(new StoreRequestTooLargeError("ERR max request size exceeded")); // false
 * isStoreDown(new Error("boom")); // false
 * ```
 */
export function isStoreDown(error: unknown): boolean {
  return error instanceof StoreUnavailableError && !(error instanceof StoreRequestTooLargeError);
}

/**
 * The store refused a call on what it found (on Redis, `WRONGTYPE`: a key of
 * another type, or a field holding text the call cannot add to, that
 * something else wrote there). The scripts that apply a batch, close windows
 * and fire alerts check every key they may write before their first write,
 * so one of those refused wrote nothing, and a batch refused for one of its
 * requests' keys may be applied again without it.
 */
export class StoreRefusedError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreRefusedError";
  }
}

/**
 * A batch built from a stream's definition that is no longer the stream's:
 * the stream was deleted, or deleted and created again (a new generation),
 * since. The store wrote nothing: the batch belongs to an incarnation no one
 * reads any more, so applying it would acknowledge events that count nowhere.
 * Or it was built on a definition older than one that added counters (see
 * {@linkcode StoreBatch.definitionVersion}): made again on the new one, they count its events.
 */
export class StreamChangedError extends Error {
  /** The stream's name. */
  readonly stream: string;
  /** The version of its definition the store holds (0 when unknown). */
  readonly version: number;

  constructor(stream: string, version: number, options?: ErrorOptions) {
    super(
      `Stream '${stream}' was deleted, created again or given new counters while this request was being applied; nothing was applied`,
      options,
    );
    this.name = "StreamChangedError";
    this.stream = stream;
    this.version = version;
  }
}

/** The requests of a batch: its own, or one request of all its events. */
export function batchRequests(batch: StoreBatch): BatchRequest[] {
  const requests = batch.requests ??
    [{ events: batch.events.length, filtered: batch.filtered ?? 0 }];
  let total = 0;
  for (const request of requests) {
    if (!Number.isSafeInteger(request.events) || request.events < 0) {
      throw new RangeError(`Batch request has ${request.events} events; expected a count`);
    }
    total += request.events;
  }
  if (total !== batch.events.length) {
    throw new RangeError(
      `Batch requests cover ${total} events, but the batch has ${batch.events.length}`,
    );
  }
  return requests;
}

/**
 * Orders group keys by code point (the byte order of their UTF-8, as Redis
 * compares them), so ties break the same way in every store.
 */
export function compareGroupKeys(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/**
 * A UTF-16 code unit's place in code point order at the first unit two strings differ in: the
 * surrogates (0xD800–0xDFFF, of code points above 0xFFFF) after every other unit, the units above
 * them moved down, so a compare of units costs no array of code points.
 */
function codePointRank(unit: number): number {
  return unit >= 0xe000 ? unit - 0x800 : unit >= 0xd800 ? unit + 0x2000 : unit;
}

/** Splits a log id `<ms>-<seq>` into numbers. */
export function parseLogId(id: string): [number, number] {
  const [ms, seq] = id.split("-");
  return [Number(ms), Number(seq ?? 0)];
}

/** Orders two parsed log ids. */
export function compareLogIds(a: [number, number], b: [number, number]): number {
  return a[0] - b[0] || a[1] - b[1];
}
