/**
 * The embedded store: everything in this process's memory. The default for a
 * laptop and for tests; state is lost on restart and not shared between
 * instances (use the Redis store for that).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  addValue,
  type AggregateKind,
  type AggregateState,
  emptyState,
  mergeState,
  normalizeState,
} from "../aggregate_state.ts";
import { DEFAULT_ACCURACY, sketchBin } from "../sketch.ts";
import {
  type AlertFiring,
  type ApplyResult,
  type BatchEvent,
  type BatchRequest,
  batchRequests,
  type BatchUpdates,
  checkMaxReplyBytes,
  CLOSE_CELLS_PER_CALL,
  type ClosedWindows,
  type CloseOptions,
  compareGroupKeys,
  compareLogIds,
  type CounterMeta,
  type EventOutcome,
  type FiredAlerts,
  type FireOptions,
  type LogBounds,
  logBounds,
  type LogEntry,
  type LogPosition,
  type LogRecord,
  OTHER_GROUP,
  parseLogId,
  type ReadOptions,
  type ReadStats,
  REPLIES_FORGOTTEN_WARNING,
  type RequestResult,
  REST_GROUP,
  type ResultLogBounds,
  type SessionRange,
  SESSIONS_PER_WINDOW,
  type SessionValues,
  type Store,
  type StoreBatch,
  StreamChangedError,
  type StreamStats,
  type TimeRange,
  type WindowRead,
  type WindowValues,
} from "../types.ts";
import { DedupeIds } from "./_dedupe_ids.ts";
import type { MemoryDefinitionStore } from "./definition_store.ts";
import { finalThrough, splitGenerationKey } from "../definitions.ts";
import { SessionTable } from "./_sessions.ts";
import { refillFrom } from "./_refill_from.ts";
import { BinaryHeap } from "./_binary_heap.ts";

const logger = getLogger(["edgestream", "store"]);

interface Cell {
  state: AggregateState;
  values?: Set<string>;
  /** A sum's batch in progress (see {@linkcode addToSum}): its number (a number, so a cell keeps
   * nothing of a past batch alive). */
  batch?: number;
  /** The sum before that batch. */
  base?: number;
  /** The group whose values the batch added first, and their sum so far. */
  source?: string;
  partial?: number;
  /** Other groups' sums (only groups past maxGroups share a cell), in the order first added. */
  more?: Map<string, number>;
}

interface Pane {
  expiresAt: number;
  groups: Map<string, Cell>;
}

/**
 * A counter's panes while a batch is applied, with the pane the last update went to and, in
 * that pane, the group the last update counted under its own key and its cell.
 */
interface CounterPanes {
  /** The batch's number in this store (see {@linkcode addToSum}). */
  batch: number;
  panes: Map<number, Pane>;
  lastStart: number;
  last: Pane | undefined;
  lastGroup: string | undefined;
  lastCell: Cell | undefined;
}

/**
 * A batch's updates of session counters, kept until its events are judged: per counter and
 * group (in the order the batch first names them), the updates in event order.
 */
type SessionUpdates = Map<
  string,
  { counter: CounterMeta; updates: Array<{ pane: number; group: string; value?: number | string }> }
>;

/** What the events of one batch are applied with: one object for the whole batch. */
interface ApplyingBatch {
  batch: StoreBatch;
  now: number;
  panesByCounter: Array<CounterPanes>;
  batchNumber: number;
  /** The batch's session counter updates, made at the first (undefined while none). */
  sessionUpdates: SessionUpdates | undefined;
}

interface StreamState {
  watermark: number | null;
  /**
   * The latest end (a session's: end + gap) of a window or session a close claimed, or
   * -Infinity: an event before it is late whatever the lateness is now, so a raised lateness
   * re-opens nothing that closed (see {@linkcode StreamStats.closedThrough}).
   */
  closedThrough: number;
  /** See {@linkcode StreamStats.definitionVersion}; 0 when none was written. */
  definitionVersion: number;
  accepted: number;
  applied: number;
  duplicates: number;
  late: number;
  filtered: number;
  rejected: number;
  overflow: Map<string, number>;
  /** Dedupe ids, as fingerprints in two TTL-wide time buckets, bounded by `maxDedupeIds`. */
  ids: DedupeIds;
  /** The dedupe TTL of the last batch (0: none), so a sweep can drop old ids of an idle stream. */
  dedupeTtlMs: number;
  /** Whether the warning that the bound forgot ids early was logged. */
  warnedForgotten: boolean;
  panes: Map<string, Map<number, Pane>>;
  /** Per counter: windows holding data and not yet closed, start → end. */
  open: Map<string, Map<number, number>>;
  /** Per counter: the window a close claimed and has not logged every group of yet. */
  closing: Map<string, ClosingWindow>;
  /** Per session counter: its sessions. */
  sessions: Map<string, SessionTable>;
  /**
   * Result log, oldest first: about its `retain` newest entries, and while a dispatch holds it
   * (`dispatched`), also those after that, up to about its hard bound `max`.
   */
  log: LogEntry[];
  /** Id the webhook dispatch took the log through (see `Store.markDispatched`); null: no hold. */
  dispatched: string | null;
  /** Entries the hard bound trimmed undispatched, not yet returned by `markDispatched`. */
  logLost: number;
  /** The log-id clock of the stream's name, shared by its incarnations (see {@linkcode LogClock}). */
  logClock: LogClock;
  /** Id of the newest entry the log ever had; `0-0` while it had none. */
  lastLogId: string;
  /** Id of the newest entry trimmed from `log`; `0-0` while none was. */
  logTrimmedThrough: string;
  /**
   * Alert firings already claimed, key → expiry, and the counter, window start and life of the
   * firing (renewed with an open window's panes, see keepOpen).
   */
  fired: Map<string, FiredMarker>;
  /** Result types live subscribers want, type → expiry. */
  demand: Map<string, number>;
  /** Stored replies by idempotency key hash, in the order they expire (at one TTL). */
  replies: Map<string, StoredReply>;
  /** What {@linkcode replySize} counts for the replies held, bounded by `maxReplyBytes`. */
  replyBytes: number;
  /**
   * Stored replies the bound forgot before their TTL ({@linkcode StreamStats.repliesForgotten});
   * the first one is warned of.
   */
  repliesForgotten: number;
  /** Rate-limit token buckets by key. */
  buckets: Map<string, { tokens: number; updatedMs: number; fullAt: number }>;
}

/**
 * The newest log id given out under a stream's name, shared by its incarnations (generations), as
 * a Redis log continues after the log of the name's previous incarnation: a stream deleted and
 * created again within that id's millisecond, or after the clock stepped back, gets ids after the
 * old log's, not the same ones again. Ids are what webhook message ids and the dispatch cursor are
 * made of: met again, the new incarnation's results would be taken for ones delivered already.
 */
interface LogClock {
  ms: number;
  seq: number;
  /** Incarnations the store holds that use it: with none, it goes once the clock passed it. */
  users: number;
}

/** A reply kept for an idempotency key. */
interface StoredReply {
  bodyHash: string;
  reply: string;
  duplicates: number;
  late: number;
  expiresAt: number;
}

/** Options for {@linkcode MemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock (ms) used for expiry. @default {Date.now} */
  now?: () => number;
  /**
   * Most cells a close call merges (see {@linkcode CLOSE_CELLS_PER_CALL}).
   * @default {CLOSE_CELLS_PER_CALL}
   */
  closeCells?: number;
  /** How often (ms of the clock) expired panes are swept. @default {1000} */
  sweepEveryMs?: number;
  /**
   * Most dedupe ids a stream holds (both time buckets together, 11–21
   * bytes each). Past it the older bucket is forgotten before the TTL, so
   * memory stays bounded at any rate and at least the newest half stay;
   * stats count the forgotten ids in `dedupeForgotten`. At least 2.
   * @default {10000000}
   */
  maxDedupeIds?: number;
  /**
   * Stream definitions whose versions `applyBatch` reports, as the Redis
   * store reads them in its apply; their writes keep final in this store's data what they are
   * asked to (`DefinitionWriteOptions.keepFinal`). @default {none: version 0}
   */
  definitions?: MemoryDefinitionStore;
  /**
   * Whether the stream definitions the callers keep are `definitions` (as the Redis store's
   * option, with the same default): a batch or a close whose caller recorded its stream
   * ({@linkcode StoreBatch.recorded}, {@linkcode CloseOptions.recorded}) is then refused when
   * `definitions` has no record of it. Off unless asked (as `storesFromEnv` asks it), as a caller
   * that keeps its definitions elsewhere (`storeFromEnv`) has no records in `definitions`, and every
   * batch it recorded would be refused. @default {false}
   */
  definitionsHere?: boolean;
  /** Bounds of each stream's result log. @default {MAX_LOG_ENTRIES and MAX_LOG_BACKLOG} */
  log?: LogBounds;
  /**
   * Most bytes (as {@linkcode replySize} counts them: characters of the hashes and the reply's
   * JSON, not UTF-8 bytes) of `Idempotency-Key` replies each stream holds. Past it the stream's
   * oldest are forgotten before their TTL (a request sent again with one of their keys applies
   * again, with a warning logged once per stream), so a stream's replies stay bounded however many
   * keys clients send; the process holds up to this much for each stream.
   * @default {134217728}
   */
  maxReplyBytes?: number;
}

/** Default of {@linkcode MemoryStoreOptions.maxReplyBytes}: 128 MiB a stream. */
export { DEFAULT_MAX_REPLY_BYTES } from "../types.ts";

/** About what a stored reply takes: its key, body hash and reply text, and the entry around them. */
function replySize(keyHash: string, stored: StoredReply): number {
  return 128 + keyHash.length + stored.bodyHash.length + stored.reply.length;
}

/** Default of {@linkcode MemoryStoreOptions.maxDedupeIds}. */
const DEFAULT_MAX_DEDUPE_IDS = 10_000_000;

/** The types of `log` that the stream's live demand lists now. */
function wantedLog(
  stream: StreamState,
  log: NonNullable<StoreBatch["log"]>,
  now: number,
): StoreBatch["log"] {
  const wanted = (type: string) => (stream.demand.get(type) ?? 0) > now;
  return {
    processed: log.processed === true && wanted("event.processed"),
    late: log.late === true && wanted("event.late"),
  };
}

/** How many of the first `most` entries of a log are at or before `id` (binary search). */
function entriesThrough(log: readonly LogEntry[], id: string, most: number): number {
  const through = parseLogId(id);
  let low = 0;
  let high = Math.min(most, log.length);
  while (low < high) {
    const mid = (low + high) >> 1;
    if (compareLogIds(parseLogId(log[mid].id), through) <= 0) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** A {@linkcode Store} held in process memory, bounded by pane TTLs and `maxGroups`. */
export class MemoryStore implements Store {
  readonly kind = "memory";
  readonly logBounds: ResultLogBounds;
  #streams = new Map<string, StreamState>();
  /** Per stream name: its {@linkcode LogClock}. */
  #logClocks = new Map<string, LogClock>();
  /** Names whose log-id clock no incarnation held uses (the sweep drops it once passed). */
  #unusedClocks = new Set<string>();
  #now: () => number;
  #sweepEveryMs: number;
  #closeCells: number;
  #maxDedupeIds: number;
  #maxReplyBytes: number;
  /** Fingerprint seed, random so ids that crowd one slot cannot be precomputed. */
  #dedupeSeed = crypto.getRandomValues(new Uint32Array(1))[0];
  #nextSweep = 0;
  /** Batches applied, numbering them for the sums in progress (see {@linkcode addToSum}). */
  #batches = 0;
  #definitions: MemoryDefinitionStore | undefined;
  #definitionsHere: boolean;
  #logRetain: number;
  #logMax: number;

  constructor(options: MemoryStoreOptions = {}) {
    [this.#logRetain, this.#logMax] = logBounds(options.log);
    this.logBounds = { retain: this.#logRetain, max: this.#logMax };
    this.#now = options.now ?? Date.now;
    this.#sweepEveryMs = options.sweepEveryMs ?? 1_000;
    this.#closeCells = Math.max(1, options.closeCells ?? CLOSE_CELLS_PER_CALL);
    const maxDedupeIds = options.maxDedupeIds ?? DEFAULT_MAX_DEDUPE_IDS;
    if (!Number.isSafeInteger(maxDedupeIds) || maxDedupeIds < 2) {
      throw new RangeError(`maxDedupeIds must be an integer of at least 2, got ${maxDedupeIds}`);
    }
    this.#maxDedupeIds = maxDedupeIds;
    this.#maxReplyBytes = checkMaxReplyBytes(options.maxReplyBytes);
    this.#definitions = options.definitions;
    this.#definitionsHere = options.definitionsHere ?? false;
    this.#definitions?.holdData({
      keepFinal: (key, keep, version) => {
        const state = this.#stream(key);
        if (state.watermark !== null) this.#keepFinal(state, finalThrough(state.watermark, keep));
        state.definitionVersion = version;
      },
      watermark: (key) => this.#streams.get(key)?.watermark ?? null,
    });
  }

  /** The log-id clock of the name of `key` (a {@linkcode generationKey}), counting one more user. */
  #logClock(key: string): LogClock {
    const name = splitGenerationKey(key).stream;
    let clock = this.#logClocks.get(name);
    if (!clock) {
      clock = { ms: 0, seq: 0, users: 0 };
      this.#logClocks.set(name, clock);
    }
    clock.users += 1;
    return clock;
  }

  /** Most dedupe ids a stream holds ({@linkcode MemoryStoreOptions.maxDedupeIds}, default filled in). */
  get maxDedupeIds(): number {
    return this.#maxDedupeIds;
  }

  #stream(name: string): StreamState {
    let state = this.#streams.get(name);
    if (!state) {
      state = {
        watermark: null,
        closedThrough: -Infinity,
        definitionVersion: 0,
        accepted: 0,
        applied: 0,
        duplicates: 0,
        late: 0,
        filtered: 0,
        rejected: 0,
        overflow: new Map(),
        ids: new DedupeIds({ maxIds: this.#maxDedupeIds, seed: this.#dedupeSeed }),
        dedupeTtlMs: 0,
        warnedForgotten: false,
        panes: new Map(),
        open: new Map(),
        closing: new Map(),
        sessions: new Map(),
        log: [],
        dispatched: null,
        logLost: 0,
        logClock: this.#logClock(name),
        lastLogId: "0-0",
        logTrimmedThrough: "0-0",
        fired: new Map(),
        demand: new Map(),
        replies: new Map(),
        replyBytes: 0,
        repliesForgotten: 0,
        buckets: new Map(),
      };
      this.#streams.set(name, state);
    }
    return state;
  }

  applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    try {
      return Promise.resolve(this.#apply(batch));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #apply(given: StoreBatch): ApplyResult {
    if (this.#definitions) {
      // As the Redis store: nothing applied to a generation its record says is gone (or that the
      // caller recorded and has none).
      const name = splitGenerationKey(given.stream).stream;
      // Or built on a definition older than an API write that added counters: it lacks them.
      if (
        this.#outlived(given.stream, given.recorded) ||
        this.#definitions.addedCountersSince(name, given.definitionVersion)
      ) {
        throw new StreamChangedError(name, this.#definitions.versionOf(name));
      }
    }
    const now = given.nowMs;
    const requests = batchRequests(given);
    this.#sweep(now);
    const stream = this.#stream(given.stream);
    // Logged only if subscribers asked for them (the caller could not tell), as the Redis store.
    const batch = given.log?.ifWanted
      ? { ...given, log: wantedLog(stream, given.log, now) }
      : given;
    const dedupe = batch.dedupeTtlMs > 0;
    if (dedupe) stream.ids.rotateTo(now, batch.dedupeTtlMs);
    // Dedupe turned off (a new definition): the ids held are read no more.
    else if (stream.dedupeTtlMs > 0) {
      stream.ids = new DedupeIds({ maxIds: this.#maxDedupeIds, seed: this.#dedupeSeed });
    }
    stream.dedupeTtlMs = batch.dedupeTtlMs;
    raiseToClock(stream, now, batch.idleMs);
    // One entry an event (the requests cover every event: see batchRequests), sized at once
    // rather than grown by `push`.
    const outcomes: EventOutcome[] = new Array(batch.events.length);
    const results: RequestResult[] = [];
    const panesByCounter: Array<CounterPanes> = [];
    // One object for the whole batch, not one per event.
    this.#batches += 1;
    // Made at a session counter's first update (most batches have none).
    const applying: ApplyingBatch = {
      batch,
      now,
      panesByCounter,
      batchNumber: this.#batches,
      sessionUpdates: undefined,
    };
    // Idempotency keys of the batch's requests, made at the first (most batches have none).
    const admitting: { now: number; keysInBatch?: Set<string> } = { now };
    const replies: [string, StoredReply][] = [];
    let next = 0;
    for (const request of requests) {
      // One request (every batch without group commit) takes the whole list: no copy of it.
      const events = requests.length === 1
        ? batch.events
        : batch.events.slice(next, next + request.events);
      const first = next;
      next += request.events;
      const verdict = this.#admit(stream, request, admitting);
      if (verdict) {
        results.push(verdict);
        for (let i = 0; i < events.length; i++) outcomes[first + i] = "skipped";
        continue;
      }
      let duplicates = 0;
      let late = 0;
      // Every id of the request is looked up first, in one tight loop: the lookups of a large
      // table miss the cache, and a loop doing nothing else lets the CPU overlap those misses.
      const held = dedupe ? stream.ids.seenAll(events) : undefined;
      for (let i = 0; i < events.length; i++) {
        if (held?.[i] === 1) {
          stream.duplicates += 1;
          duplicates += 1;
          outcomes[first + i] = "duplicate";
          continue;
        }
        const outcome = this.#applyEvent(stream, events[i], first + i, applying);
        outcomes[first + i] = outcome;
        if (outcome === "late") late += 1;
      }
      stream.accepted += request.events + request.filtered;
      stream.filtered += request.filtered;
      stream.rejected += request.rejected ?? 0;
      const claim = request.idempotency;
      if (claim) {
        // Kept once the whole batch is applied, as Redis does: the same key
        // twice in one batch is in flight, not a replay.
        replies.push([claim.keyHash, {
          bodyHash: claim.bodyHash,
          reply: claim.reply,
          duplicates,
          late,
          expiresAt: now + claim.ttlMs,
        }]);
      }
      results.push({ status: "applied", duplicates, late });
    }
    if (applying.sessionUpdates) this.#applySessions(stream, applying.sessionUpdates, now);
    for (const [keyHash, stored] of replies) {
      // Taken out first, so the map's order stays the order replies expire in (a key whose reply
      // expired unswept would otherwise keep its old place).
      const before = stream.replies.get(keyHash);
      if (before) stream.replyBytes -= replySize(keyHash, before);
      stream.replies.delete(keyHash);
      stream.replies.set(keyHash, stored);
      stream.replyBytes += replySize(keyHash, stored);
    }
    if (stream.replyBytes > this.#maxReplyBytes) this.#forgetReplies(stream, batch.stream, now);
    if (stream.ids.forgotten > 0 && !stream.warnedForgotten) {
      stream.warnedForgotten = true;
      // Once per stream: the count in stats says how many since.
      logger.warn(
        "Stream '{stream}' forgets dedupe ids before their ttl, as it holds at most maxDedupeIds (EDGESTREAM_MEMORY_DEDUPE_MAX) = {maxDedupeIds} ids; stats.dedupeForgotten counts them",
        // The stream's name, not its data's key (`orders#2` under a generation).
        { stream: splitGenerationKey(batch.stream).stream, maxDedupeIds: this.#maxDedupeIds },
      );
    }
    const demand = stream.demand.size === 0
      ? []
      : [...stream.demand].filter(([, expiresAt]) => expiresAt > now).map(([type]) => type);
    const definitionVersion =
      this.#definitions?.versionOf(splitGenerationKey(batch.stream).stream) ?? 0;
    // Applied by an instance still on an older definition (see StoreBatch.definitionVersion).
    if (
      batch.definitionVersion !== undefined && definitionVersion > batch.definitionVersion &&
      stream.watermark !== null
    ) {
      this.#keepFinal(stream, stream.watermark - batch.latenessMs);
    }
    return { outcomes, requests: results, watermark: stream.watermark, demand, definitionVersion };
  }

  /**
   * Forgets `stream`'s oldest stored replies until they fit in `maxReplyBytes` (see
   * {@linkcode MemoryStoreOptions.maxReplyBytes}), counting them in its stats' `repliesForgotten`
   * and warning once per stream. One that expired (not swept yet) goes uncounted, as on Redis.
   */
  #forgetReplies(stream: StreamState, key: string, now: number): void {
    const before = stream.repliesForgotten;
    for (const [keyHash, stored] of stream.replies) {
      if (stream.replyBytes <= this.#maxReplyBytes) break;
      stream.replies.delete(keyHash);
      stream.replyBytes -= replySize(keyHash, stored);
      if (stored.expiresAt > now) stream.repliesForgotten += 1;
    }
    if (before > 0 || stream.repliesForgotten === before) return;
    logger.warn(
      REPLIES_FORGOTTEN_WARNING,
      { stream: splitGenerationKey(key).stream, maxReplyBytes: this.#maxReplyBytes },
    );
  }

  /**
   * Why a request is not applied (its stored reply, a conflict, a key
   * already in this batch, the rate limit), or undefined to apply it. Takes
   * the request's tokens when it is admitted.
   */
  #admit(
    stream: StreamState,
    request: BatchRequest,
    context: { now: number; keysInBatch?: Set<string> },
  ): RequestResult | undefined {
    const now = context.now;
    const claim = request.idempotency;
    if (claim) {
      const keysInBatch = context.keysInBatch ??= new Set();
      const stored = stream.replies.get(claim.keyHash);
      if (stored && stored.expiresAt > now) {
        if (stored.bodyHash !== claim.bodyHash) return { status: "conflict" };
        return {
          status: "replayed",
          reply: stored.reply,
          duplicates: stored.duplicates,
          late: stored.late,
        };
      }
      if (keysInBatch.has(claim.keyHash)) return { status: "in_flight" };
      keysInBatch.add(claim.keyHash);
    }
    // Every bucket is refilled and checked before any is charged, so a
    // request one bucket refuses takes nothing from the others.
    const claims = request.rateLimits;
    if (claims === undefined || claims.length === 0) return undefined;
    const levels = claims.map((limit) => {
      const bucket = stream.buckets.get(limit.key);
      const perMs = limit.limit / limit.windowMs;
      const updatedMs = bucket?.updatedMs ?? now;
      // None for a clock behind the bucket's update (stepped back): it never takes tokens away.
      const refill = perMs * Math.max(0, now - updatedMs);
      return {
        perMs,
        tokens: Math.min(limit.limit, bucket ? bucket.tokens + refill : limit.limit),
        // Where it refills from next: that update when it is ahead of now by at most the bucket's
        // window, else now (see refillFrom).
        from: refillFrom(now, updatedMs, limit.windowMs),
      };
    });
    // Of the buckets short of the cost, the one that takes longest to hold it: the request fits
    // only then, so that is the wait it is told.
    let refused = -1;
    let longest = -1;
    claims.forEach((limit, index) => {
      const { tokens, perMs, from } = levels[index];
      const wait = (limit.cost - tokens) / perMs + (from - now);
      if (tokens < limit.cost && wait > longest) {
        refused = index;
        longest = wait;
      }
    });
    claims.forEach((limit, index) => {
      const { tokens, perMs, from } = levels[index];
      const left = refused >= 0 ? tokens : tokens - limit.cost;
      stream.buckets.set(limit.key, {
        tokens: left,
        updatedMs: from,
        fullAt: from + (limit.limit - left) / perMs,
      });
    });
    if (refused >= 0) {
      const { tokens } = levels[refused];
      return {
        status: "rate_limited",
        retryAfterMs: Math.ceil(longest),
        claim: refused,
        remaining: Math.floor(tokens),
      };
    }
    return undefined;
  }

  /** Lateness, counters and log of event `e` of the batch, of an admitted request (not a duplicate). */
  #applyEvent(
    stream: StreamState,
    event: BatchEvent,
    e: number,
    context: ApplyingBatch,
  ): EventOutcome {
    const { batch, now, panesByCounter } = context;
    if (
      event.timeMs < stream.closedThrough ||
      (stream.watermark !== null && event.timeMs < stream.watermark - batch.latenessMs)
    ) {
      stream.late += 1;
      if (batch.log?.late) this.#appendEvent(stream, now, "event.late", event);
      return "late";
    }
    if (stream.watermark === null || event.timeMs > stream.watermark) {
      stream.watermark = event.timeMs;
    }
    const columns = batch.updates;
    const width = batch.counters.length;
    for (let index = 0, at = e * width; columns !== undefined && index < width; index++, at++) {
      const group = columns.groups[at];
      if (group === undefined) continue;
      const counter = batch.counters[index];
      panesByCounter[index] ??= {
        batch: context.batchNumber,
        panes: this.#panesOf(stream, counter.name),
        lastStart: NaN,
        last: undefined,
        lastGroup: undefined,
        lastCell: undefined,
      };
      this.#applyUpdate(stream, counter, panesByCounter[index], columns, at, context);
    }
    stream.applied += 1;
    if (batch.log?.processed) this.#appendEvent(stream, now, "event.processed", event);
    return "applied";
  }

  #panesOf(stream: StreamState, counter: string): Map<number, Pane> {
    let panes = stream.panes.get(counter);
    if (!panes) {
      panes = new Map();
      stream.panes.set(counter, panes);
    }
    return panes;
  }

  #applyUpdate(
    stream: StreamState,
    counter: CounterMeta,
    counterPanes: CounterPanes,
    columns: BatchUpdates,
    at: number,
    // The batch's own object: its session updates map is made on it at the first.
    context: ApplyingBatch,
  ): void {
    // Numbers read here rather than passed in: a double (a pane start, the clock) passed to a
    // call is boxed, one object each time.
    const now = context.now;
    const start = columns.panes[at];
    const key = columns.groups[at]!;
    const value = columns.values[at];
    if (counter.session) {
      const runKey = `${counter.name}\u0000${key}`;
      const sessionUpdates = context.sessionUpdates ??= new Map();
      let run = sessionUpdates.get(runKey);
      if (!run) {
        run = { counter, updates: [] };
        sessionUpdates.set(runKey, run);
      }
      run.updates.push({ pane: start, group: key, value });
      return;
    }
    // Most events of a batch fall in the pane the one before used: no map lookup for them.
    let pane = counterPanes.lastStart === start ? counterPanes.last : counterPanes.panes.get(start);
    if (!pane || pane.expiresAt <= now) {
      pane = { expiresAt: 0, groups: new Map() };
      counterPanes.panes.set(start, pane);
      this.#openWindows(stream, counter, start);
    }
    if (pane !== counterPanes.last) {
      // The batch's clock and the counter's ttl are fixed: one write per pane and batch does.
      pane.expiresAt = now + counter.ttlMs;
      counterPanes.lastGroup = undefined;
    }
    counterPanes.lastStart = start;
    counterPanes.last = pane;
    let group = key;
    // Runs of one group (a counter without groupBy, a field of few values) skip the map lookup.
    let cell = group === counterPanes.lastGroup ? counterPanes.lastCell : pane.groups.get(group);
    if (!cell && pane.groups.size >= counter.maxGroups) {
      group = OTHER_GROUP;
      cell = pane.groups.get(group);
      stream.overflow.set(counter.name, (stream.overflow.get(counter.name) ?? 0) + 1);
    }
    if (!cell) {
      cell = { state: emptyState() };
      if (counter.aggregate === "distinct") cell.values = new Set();
      pane.groups.set(group, cell);
    }
    // Only a group counted under its own key: one past `maxGroups` counts its overflow each time.
    counterPanes.lastGroup = group === key ? group : undefined;
    counterPanes.lastCell = cell;
    if (counter.aggregate === "distinct") {
      cell.state.count += 1;
      cell.values!.add(String(value));
      cell.state.distinct = cell.values!.size;
    } else {
      const sumBefore = cell.state.sum;
      addValue(cell.state, typeof value === "number" ? value : undefined);
      if (
        (counter.aggregate === "sum" || counter.aggregate === "avg") && typeof value === "number"
      ) {
        addToSum(cell, counterPanes.batch, key, value, sumBefore);
      }
      if (counter.aggregate === "quantiles" && typeof value === "number") {
        const bins = cell.state.bins ??= {};
        const bin = sketchBin(value, counter.accuracy ?? DEFAULT_ACCURACY);
        bins[bin] = (bins[bin] ?? 0) + 1;
      }
    }
  }

  /**
   * Adds a batch's session updates as the Redis store does: group by group, in the order the
   * batch first names them, each group's in time order (ties in event order), in runs of events
   * less than the gap apart. Which events past `maxSessions` are dropped then depends on the
   * batch's groups and times alone, the same on both stores.
   */
  #applySessions(stream: StreamState, sessionUpdates: SessionUpdates, now: number): void {
    for (const { counter, updates } of sessionUpdates.values()) {
      const table = this.#sessionsOf(stream, counter);
      const gapMs = counter.session!.gapMs;
      updates.sort((a, b) => a.pane - b.pane);
      // Runs of events less than the gap apart, each taken or dropped whole (see admits).
      for (let first = 0, last = 0; first < updates.length; first = last = last + 1) {
        while (last + 1 < updates.length && updates[last + 1].pane - updates[last].pane < gapMs) {
          last += 1;
        }
        const run = { firstMs: updates[first].pane, lastMs: updates[last].pane };
        if (!table.admits(counter, updates[first].group, run, now)) {
          const dropped = last - first + 1;
          stream.overflow.set(counter.name, (stream.overflow.get(counter.name) ?? 0) + dropped);
          continue;
        }
        for (let i = first; i <= last; i++) table.add(counter, updates[i], now);
      }
    }
  }

  #sessionsOf(stream: StreamState, counter: CounterMeta): SessionTable {
    let table = stream.sessions.get(counter.name);
    if (!table) {
      table = new SessionTable(counter.aggregate);
      stream.sessions.set(counter.name, table);
    }
    return table;
  }

  #openWindows(stream: StreamState, counter: CounterMeta, pane: number): void {
    let open = stream.open.get(counter.name);
    if (!open) {
      open = new Map();
      stream.open.set(counter.name, open);
    }
    const newest = Math.floor(pane / counter.hopMs) * counter.hopMs;
    for (let start = newest; start + counter.sizeMs > pane; start -= counter.hopMs) {
      if (!open.has(start)) open.set(start, start + counter.sizeMs);
    }
  }

  closeWindows(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
  ): Promise<ClosedWindows> {
    const state = this.#streams.get(stream);
    const closed: ClosedWindows = [];
    // An incarnation its record says is deleted, or deleted and created again, or one recorded
    // without a record, closes nothing (as on Redis): a sweep of an instance that has not heard of
    // the deletion yet would log results of a stream whose DELETE answered already.
    if (this.#outlived(stream, options.recorded)) {
      closed.gone = true;
      if (this.#definitions?.versionOf(splitGenerationKey(stream).stream) === 0) {
        closed.recordMissing = true;
      }
      return Promise.resolve(closed);
    }
    // No watermark (no batch applied): an idle stream's clock floor is not set by a sweep; its
    // first batch raises to it (as on Redis).
    if (!state || state.watermark === null) return Promise.resolve(closed);
    // A later definition kept final (one that raised the lateness or lengthened idle): the
    // caller's may call due what that one still takes events into. Nothing moves, not even the
    // idle floor; the caller loads it.
    if (
      options.definitionVersion !== undefined &&
      state.definitionVersion > options.definitionVersion
    ) {
      closed.laterDefinition = state.definitionVersion;
      return Promise.resolve(closed);
    }
    // The caller's clock for all of it, as on Redis: the idle floor, the lives it gives and the
    // log's time.
    const now = options.nowMs ?? this.#now();
    raiseToClock(state, now, options.idleMs);
    // What reads call final (config/final.ts closedBefore): the watermark less the lateness, or
    // closedThrough when later (kept final by a definition that raised the lateness, a batch of an
    // instance on an older one, keepFinal), so window.closed comes when a read says final.
    const cutoff = Math.max(state.watermark - options.latenessMs, state.closedThrough);
    if (options.peek) closed.cutoff = cutoff;
    // No end past `through` (the cutoff the caller's peek reported) is closed: see
    // CloseOptions.through.
    const closeTo = Math.min(cutoff, options.through ?? Infinity);
    const limit = options.limit ?? 100;
    const peek = options.peek ?? false;
    let budget = this.#closeCells;
    const log = (record: LogRecord) => this.#append(state, now, record, false);
    // Window counters first, then session counters, each in the order given, as the Redis close
    // script takes them: the closes (and their log records) come in one order on both stores.
    const ordered = [
      ...counters.filter((counter) => !counter.session),
      ...counters.filter((counter) => counter.session),
    ];
    for (const counter of ordered) {
      const sessions = counter.session ? state.sessions.get(counter.name) : undefined;
      if (sessions) {
        const most = limit * SESSIONS_PER_WINDOW;
        if (!options.peek) sessions.keepOpen(counter, now);
        const last = options.through === undefined || options.throughSession === undefined
          ? undefined
          : { due: options.through, ...options.throughSession };
        for (const session of sessions.due(counter, closeTo, { now, limit: most, last })) {
          const { start, end, group, state: value } = sessions.valueOf(session);
          closed.push({ counter: counter.name, start, end, groups: [{ group, state: value }] });
          if (peek) continue;
          sessions.close(session, now + counter.ttlMs);
          state.closedThrough = Math.max(state.closedThrough, end + counter.session!.gapMs);
          log({ type: "window.closed", counter: counter.name, start, end, group, state: value });
        }
        continue;
      }
      const open = state.open.get(counter.name);
      const panes = state.panes.get(counter.name) ?? new Map<number, Pane>();
      if (!peek && open) {
        keepOpen(counter, panes, open, now);
        keepMarkers(state.fired, counter.name, open, now);
      }
      // A window an earlier call started closing goes on first: it is claimed already.
      const started = state.closing.get(counter.name);
      if (started && budget <= 0) {
        closed.more = true;
        continue;
      }
      if (started) {
        const step = closeStep(counter.aggregate, panes, started, budget, now, {
          peek,
          listed: listedGroups(options, counter.name, started.start),
        });
        budget -= step.cells;
        const { start, end } = started;
        // (None taken: none listed, see CloseOptions.listed; not listed, as on Redis.)
        if (step.groups.length > 0) {
          closed.push({ counter: counter.name, start, end, groups: step.groups, continued: true });
        }
        if (!peek) {
          for (const { group, state: value } of step.groups) {
            log({ type: "window.closed", counter: counter.name, start, end, group, state: value });
          }
          if (step.done) state.closing.delete(counter.name);
        }
        if (!step.done) {
          closed.more = true;
          continue;
        }
      }
      if (!open || limit <= 0) continue;
      const due = [...open].filter(([, end]) => end <= closeTo)
        .sort((a, b) => a[0] - b[0]).slice(0, limit);
      for (const [start, end] of due) {
        if (budget <= 0) {
          closed.more = true;
          break;
        }
        const inWindow = [...panes.keys()].filter((pane) => pane >= start && pane < end)
          .sort((a, b) => a - b);
        let cells = 0;
        for (const pane of inWindow) cells += panes.get(pane)!.groups.size;
        let groups: Array<{ group: string; state: AggregateState }>;
        let done = true;
        // A window the peek listed in part closes a part at a time, its listed groups only: whole,
        // it would close groups whose alerts were not judged.
        const only = namedWindow(options, counter.name, start)
          ? listedGroups(options, counter.name, start)
          : undefined;
        // The peek listed groups of this window, which takes no more writes once due: as many as its
        // cells (never fewer than its groups) are all of them, as on Redis, where that spares reads.
        if (
          cells <= budget && (!only || only.size >= cells || allListed(panes, inWindow, only, now))
        ) {
          groups = mergePanes(counter.aggregate, panes, inWindow, now);
          budget -= cells;
        } else {
          // Too big for what this call has left: claimed now and closed a part at a time.
          const job: ClosingWindow = { start, end, panes: inWindow, pane: 0, done: new Set() };
          const step = closeStep(counter.aggregate, panes, job, budget, now, {
            peek,
            listed: listedGroups(options, counter.name, start),
          });
          budget -= step.cells;
          groups = step.groups;
          done = step.done;
          if (!peek && !done) state.closing.set(counter.name, job);
        }
        closed.push({ counter: counter.name, start, end, groups });
        if (!peek) {
          open.delete(start);
          state.closedThrough = Math.max(state.closedThrough, end);
          for (const { group, state: value } of groups) {
            log({ type: "window.closed", counter: counter.name, start, end, group, state: value });
          }
        }
        if (!done) {
          closed.more = true;
          break;
        }
      }
    }
    this.#trimLog(state);
    return Promise.resolve(closed);
  }

  keepFinal(stream: string, throughMs: number): Promise<void> {
    const state = this.#streams.get(stream);
    if (state) this.#keepFinal(state, throughMs);
    return Promise.resolve();
  }

  /**
   * Raises a stream's `closedThrough` to `throughMs` when it has a watermark: what
   * {@linkcode keepFinal} and a definition write that keeps final (`holdData`) do alike.
   */
  #keepFinal(state: StreamState, throughMs: number): void {
    if (state.watermark !== null) state.closedThrough = Math.max(state.closedThrough, throughMs);
  }

  /** Logs an event the batch carries the payload of, as late or as processed. */
  #appendEvent(
    stream: StreamState,
    nowMs: number,
    type: "event.late" | "event.processed",
    event: BatchEvent,
  ): void {
    if (event.payload === undefined) return;
    this.#append(stream, nowMs, { type, timeMs: event.timeMs, event: JSON.parse(event.payload) });
  }

  /** Appends to the log; `trim` false leaves the cap to a {@linkcode #trimLog} after a run of them. */
  #append(stream: StreamState, nowMs: number, record: LogRecord, trim = true): void {
    const clock = stream.logClock;
    if (nowMs > clock.ms) {
      clock.ms = nowMs;
      clock.seq = 0;
    } else {
      clock.seq += 1;
    }
    stream.lastLogId = `${clock.ms}-${clock.seq}`;
    stream.log.push({ id: stream.lastLogId, timeMs: clock.ms, record });
    if (trim) this.#trimLog(stream);
  }

  /**
   * Trims a stream's log to its bound (its `retain` newest entries; while a dispatch holds it,
   * its hard bound `max`, counting what that trims undispatched) once it is 1/64 over it, so a
   * close of many windows moves the array now and then, not at every entry.
   */
  #trimLog(stream: StreamState): void {
    const log = stream.log;
    const bound = stream.dispatched === null ? this.#logRetain : this.#logMax;
    if (log.length <= bound + Math.ceil(bound / 64)) return;
    const over = log.length - bound;
    if (stream.dispatched !== null) {
      stream.logLost += over - entriesThrough(log, stream.dispatched, over);
    }
    stream.logTrimmedThrough = log[over - 1].id;
    log.splice(0, over);
  }

  markDispatched(stream: string, throughId: string | null): Promise<number> {
    // A hold is kept before the log has any entry; a release needs none.
    const state = throughId === null ? this.#streams.get(stream) : this.#stream(stream);
    if (!state) return Promise.resolve(0);
    if (throughId === null) {
      state.dispatched = null;
      this.#trimLog(state);
    } else {
      if (
        state.dispatched === null ||
        compareLogIds(parseLogId(throughId), parseLogId(state.dispatched)) > 0
      ) state.dispatched = throughId;
      // Dispatched entries beyond the newest `retain` go.
      const excess = state.log.length - this.#logRetain;
      const trimmed = excess > 0 ? entriesThrough(state.log, state.dispatched, excess) : 0;
      if (trimmed > 0) {
        state.logTrimmedThrough = state.log[trimmed - 1].id;
        state.log.splice(0, trimmed);
      }
    }
    const lost = state.logLost;
    state.logLost = 0;
    return Promise.resolve(lost);
  }

  fireAlerts(
    stream: string,
    firings: AlertFiring[],
    // The incarnation is `stream`'s own (a generation key): the counters add nothing here.
    _options?: FireOptions,
  ): Promise<FiredAlerts> {
    const fired: FiredAlerts = [];
    // An incarnation its record says is deleted, or created again, fires nothing and says gone (as
    // it closes nothing): its firing would be logged where no instance reads.
    if (this.#outlived(stream)) {
      fired.gone = true;
      return Promise.resolve(fired);
    }
    const state = this.#stream(stream);
    const now = this.#now();
    for (const firing of firings) {
      const key = JSON.stringify([firing.alert, firing.counter, firing.start, firing.group]);
      const marker = state.fired.get(key);
      if (marker !== undefined && marker.expiresAt > now) continue;
      state.fired.set(key, {
        expiresAt: now + firing.ttlMs,
        counter: firing.counter,
        start: firing.start,
        ttlMs: firing.ttlMs,
      });
      const { ttlMs: _, ...record } = firing;
      this.#append(state, now, { type: "alert.fired", ...record });
      fired.push(firing);
    }
    return Promise.resolve(fired);
  }

  appendLog(stream: string, records: LogRecord[]): Promise<void> {
    const state = this.#stream(stream);
    const now = this.#now();
    for (const record of records) this.#append(state, now, record);
    return Promise.resolve();
  }

  readLog(stream: string, afterId: string | null, limit: number): Promise<LogEntry[]> {
    const log = this.#streams.get(stream)?.log ?? [];
    const from = afterId === null ? 0 : entriesThrough(log, afterId, log.length);
    return Promise.resolve(log.slice(from, from + limit));
  }

  signalDemand(stream: string, types: readonly string[], ttlMs: number): Promise<void> {
    const state = this.#stream(stream);
    const expiresAt = this.#now() + ttlMs;
    for (const type of types) state.demand.set(type, expiresAt);
    return Promise.resolve();
  }

  /** Stream names whose log-id clock the store keeps (see {@linkcode LogClock}); for diagnostics and tests. */
  get logClocks(): number {
    return this.#logClocks.size;
  }

  /** Dedupe ids `stream` holds now (both TTL buckets); for diagnostics and tests. */
  heldIds(stream: string): number {
    return this.#streams.get(stream)?.ids.size ?? 0;
  }

  lastLogId(stream: string): Promise<string | null> {
    return Promise.resolve(this.#streams.get(stream)?.log.at(-1)?.id ?? null);
  }

  logPosition(stream: string): Promise<LogPosition> {
    const state = this.#streams.get(stream);
    return Promise.resolve({
      lastId: state?.lastLogId ?? "0-0",
      trimmedThrough: state?.logTrimmedThrough ?? "0-0",
      firstId: state?.log[0]?.id ?? null,
    });
  }

  /**
   * Whether the definitions say the incarnation kept under `name` is no longer read, or, when the
   * caller `recorded` the stream ({@linkcode StoreBatch.recorded}) and keeps its records there
   * (`definitionsHere`), have no record of it: as the Redis store's scripts ask it (their
   * definitionGone).
   */
  #outlived(name: string, recorded = false): boolean {
    if (!this.#definitions) return false;
    const { stream, generation } = splitGenerationKey(name);
    return this.#definitions.outlives(stream, generation) ||
      (recorded && this.#definitionsHere && this.#definitions.versionOf(stream) === 0);
  }

  #sweep(now: number): void {
    if (now < this.#nextSweep) return;
    this.#nextSweep = now + this.#sweepEveryMs;
    for (const [name, stream] of this.#streams) {
      // An incarnation its record says is deleted or created again is read no more (an apply to
      // it is refused): its ids, panes, log and stats go, else every create–delete keeps ~10 KB.
      if (this.#outlived(name)) {
        this.#streams.delete(name);
        if (--stream.logClock.users === 0) this.#unusedClocks.add(splitGenerationKey(name).stream);
        continue;
      }
      // Ids past their TTL go even from a stream that gets no more batches (one deleted, say).
      if (stream.dedupeTtlMs > 0) stream.ids.rotateTo(now, stream.dedupeTtlMs);
      for (const [key, marker] of stream.fired) {
        if (marker.expiresAt <= now) stream.fired.delete(key);
      }
      // Oldest first, up to the first one still kept: the sweep costs what expired, not what is
      // held. (After the stream's idempotency TTL shrinks, a reply behind longer-kept ones waits
      // for them; a reply read is checked for expiry anyway.)
      for (const [key, stored] of stream.replies) {
        if (stored.expiresAt > now) break;
        stream.replies.delete(key);
        stream.replyBytes -= replySize(key, stored);
      }
      // A full bucket is the same as no bucket.
      for (const [key, bucket] of stream.buckets) {
        if (bucket.fullAt <= now) stream.buckets.delete(key);
      }
      for (const sessions of stream.sessions.values()) sessions.sweep(now);
      for (const panes of stream.panes.values()) {
        for (const [start, pane] of panes) {
          if (pane.expiresAt <= now) panes.delete(start);
        }
      }
    }
    // A log-id clock no incarnation uses is needed only while the clock has not passed it: a
    // log started later starts after it anyway.
    for (const name of this.#unusedClocks) {
      const clock = this.#logClocks.get(name);
      if (clock === undefined || clock.users > 0) {
        this.#unusedClocks.delete(name);
      } else if (clock.ms < now) {
        this.#logClocks.delete(name);
        this.#unusedClocks.delete(name);
      }
    }
  }

  panes(stream: string, counter: CounterMeta, { fromMs, toMs }: TimeRange): Promise<number[]> {
    const now = this.#now();
    const panes = this.#streams.get(stream)?.panes.get(counter.name);
    const starts: number[] = [];
    for (const [start, pane] of panes ?? []) {
      if (start >= fromMs && start < toMs && pane.expiresAt > now) starts.push(start);
    }
    return Promise.resolve(starts.sort((a, b) => a - b));
  }

  readWindows(
    stream: string,
    counter: CounterMeta,
    windows: WindowRead[],
    options: ReadOptions = {},
  ): Promise<WindowValues> {
    const now = this.#now();
    const panes = this.#streams.get(stream)?.panes.get(counter.name);
    // Read in the same synchronous step as the values: no batch comes between.
    const out: WindowValues = options.stats
      ? Object.assign([], { stats: this.#readStats(stream) })
      : [];
    if (!panes) return Promise.resolve(out);
    const page = options.page;
    if (page) {
      for (const [i, window] of windows.entries()) {
        const left = page.limit - out.length;
        if (left <= 0) break;
        const after = i === 0 ? page.after : undefined;
        for (const [group, cell] of mergePage(panes, window.panes, now, after, left)) {
          out.push({
            start: window.start,
            group,
            state: normalizeState(counter.aggregate, cell.state),
          });
        }
      }
      return Promise.resolve(out);
    }
    for (const window of windows) {
      const cells = mergeCells(panes, window.panes, now);
      for (const [group, cell] of cells) {
        out.push({
          start: window.start,
          group,
          state: normalizeState(counter.aggregate, cell.state),
        });
      }
      const top = options.top;
      if (counter.aggregate === "distinct" && top !== undefined && cells.size > top) {
        out.push({ start: window.start, group: REST_GROUP, state: restOf(cells, top) });
      }
    }
    return Promise.resolve(out);
  }

  readSessions(stream: string, counter: CounterMeta, range: SessionRange): Promise<SessionValues> {
    const sessions = this.#streams.get(stream)?.sessions.get(counter.name);
    const values: SessionValues = sessions?.read(range, this.#now()) ?? [];
    if (range.stats) values.stats = this.#readStats(stream);
    return Promise.resolve(values);
  }

  /** The stats fields a read judges finality by ({@linkcode ReadOptions.stats}). */
  #readStats(stream: string): ReadStats {
    const state = this.#streams.get(stream);
    return {
      watermark: state?.watermark ?? null,
      ...(state && state.closedThrough > -Infinity ? { closedThrough: state.closedThrough } : {}),
      ...(state && state.definitionVersion > 0
        ? { definitionVersion: state.definitionVersion }
        : {}),
    };
  }

  stats(stream: string, counters: CounterMeta[]): Promise<StreamStats> {
    const state = this.#streams.get(stream);
    const overflow: Record<string, number> = {};
    for (const counter of counters) overflow[counter.name] = state?.overflow.get(counter.name) ?? 0;
    const { watermark, ...final } = this.#readStats(stream);
    return Promise.resolve({
      watermark,
      accepted: state?.accepted ?? 0,
      applied: state?.applied ?? 0,
      duplicates: state?.duplicates ?? 0,
      late: state?.late ?? 0,
      filtered: state?.filtered ?? 0,
      rejected: state?.rejected ?? 0,
      overflow,
      dedupeForgotten: state?.ids.forgotten ?? 0,
      repliesForgotten: state?.repliesForgotten ?? 0,
      ...final,
    });
  }

  ping(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#streams.clear();
    this.#logClocks.clear();
    this.#unusedClocks.clear();
    return Promise.resolve();
  }
}

/**
 * Sets a cell's sum as the Redis store adds a batch: per group the batch names (only groups past
 * maxGroups share a cell), the sum of its values from 0 in event order, added to the cell's sum
 * before the batch in the order the groups came. In doubles, so both stores hold the same sum to
 * the last bit (one value at a time would round at other places: (0.1 + 0.2) + 0.3 is not
 * 0.1 + (0.2 + 0.3)). `batch`: the batch's number; `sumBefore`: the cell's sum before this value.
 */
function addToSum(
  cell: Cell,
  batch: number,
  source: string,
  value: number,
  sumBefore: number,
): void {
  if (cell.batch !== batch) {
    cell.batch = batch;
    cell.base = sumBefore;
    cell.source = source;
    cell.partial = 0;
    cell.more = undefined;
  }
  if (source === cell.source) {
    cell.partial! += value;
  } else {
    cell.more ??= new Map();
    cell.more.set(source, (cell.more.get(source) ?? 0) + value);
  }
  let sum = cell.base! + cell.partial!;
  if (cell.more) { for (const partial of cell.more.values()) sum += partial; }
  cell.state.sum = sum;
}

/**
 * A window closed over several calls: its panes (ascending), the pane whose groups are being
 * walked (index), that pane's groups as they were when the walk reached it and how far it got,
 * and the groups logged so far (a group in several panes is logged at the first).
 */
interface ClosingWindow {
  start: number;
  end: number;
  panes: number[];
  pane: number;
  groups?: string[];
  next?: number;
  done: Set<string>;
}

/** The groups `options.listed` lists of a window (see CloseOptions.listed); none: no bound. */
function listedGroups(
  options: CloseOptions,
  counter: string,
  start: number,
): ReadonlySet<string> | undefined {
  if (options.listed === undefined) return undefined;
  // Own members only: a counter may be named `constructor` or `toString`.
  const windows = Object.hasOwn(options.listed, counter) ? options.listed[counter] : undefined;
  const window = windows?.find((item) => item.start === start);
  return new Set(window?.groups);
}

/** Whether `options.listed` names the window of `counter` starting at `start`. */
function namedWindow(options: CloseOptions, counter: string, start: number): boolean {
  if (options.listed === undefined || !Object.hasOwn(options.listed, counter)) return false;
  return options.listed[counter].some((item) => item.start === start);
}

/** Whether every group of the live panes `inWindow` is in `listed`. */
function allListed(
  panes: Map<number, Pane>,
  inWindow: number[],
  listed: ReadonlySet<string>,
  now: number,
): boolean {
  for (const start of inWindow) {
    const pane = panes.get(start);
    if (!pane || pane.expiresAt <= now) continue;
    for (const group of pane.groups.keys()) if (!listed.has(group)) return false;
  }
  return true;
}

/**
 * The next groups of a window closed over several calls, merging at most `budget` cells (a group
 * costs one per pane of the window; at least one group a call, unless `listed` names it not), in
 * the order of its panes and each pane's groups, stopping at the first group not in `listed` when
 * given. Moves `job` on unless `peek` (which reports what the close would).
 */
function closeStep(
  kind: AggregateKind,
  panes: Map<number, Pane>,
  job: ClosingWindow,
  budget: number,
  now: number,
  { peek, listed }: { peek: boolean; listed?: ReadonlySet<string> },
): { groups: Array<{ group: string; state: AggregateState }>; cells: number; done: boolean } {
  const per = Math.max(1, job.panes.length);
  const groups: Array<{ group: string; state: AggregateState }> = [];
  let cells = 0;
  let { pane: index, groups: names, next = 0 } = job;
  const taken = new Set<string>();
  let stopped = false;
  while (index < job.panes.length) {
    const pane = panes.get(job.panes[index]);
    names ??= pane && pane.expiresAt > now ? [...pane.groups.keys()] : [];
    while (next < names.length && (cells === 0 || cells + per <= budget)) {
      const group = names[next];
      if (job.done.has(group) || taken.has(group)) {
        next += 1;
        continue;
      }
      if (listed && !listed.has(group)) {
        stopped = true;
        break;
      }
      next += 1;
      taken.add(group);
      groups.push({ group, state: mergeGroup(kind, panes, job.panes, group, now) });
      cells += per;
    }
    if (stopped || next < names.length) break;
    index += 1;
    names = undefined;
    next = 0;
  }
  if (!peek) {
    Object.assign(job, { pane: index, groups: names, next });
    for (const group of taken) job.done.add(group);
  }
  return { groups, cells, done: index >= job.panes.length };
}

/** One group's state merged over the live panes among `starts`. */
function mergeGroup(
  kind: AggregateKind,
  panes: Map<number, Pane>,
  starts: readonly number[],
  group: string,
  now: number,
): AggregateState {
  const into: Cell = { state: emptyState() };
  for (const start of starts) {
    const pane = panes.get(start);
    const cell = pane && pane.expiresAt > now ? pane.groups.get(group) : undefined;
    if (cell) mergeCellInto(into, cell);
  }
  return normalizeState(kind, into.state);
}

/** Adds `cell` to `into` (distinct: its values too). */
function mergeCellInto(into: Cell, cell: Cell): void {
  mergeState(into.state, cell.state);
  if (cell.values) {
    into.values ??= new Set();
    for (const value of cell.values) into.values.add(value);
    into.state.distinct = into.values.size;
  }
}

/** Merges the live panes among `starts` into one state per group. */
function mergePanes(
  kind: AggregateKind,
  panes: Map<number, Pane>,
  starts: Iterable<number>,
  now: number,
): Array<{ group: string; state: AggregateState }> {
  return [...mergeCells(panes, starts, now)].map(([group, cell]) => ({
    group,
    state: normalizeState(kind, cell.state),
  }));
}

/** A distinct counter's groups but the `top` with the most values, as one state (a set union). */
function restOf(cells: Map<string, Cell>, top: number): AggregateState {
  const ranked = [...cells].sort(([a, left], [b, right]) =>
    right.state.distinct - left.state.distinct || compareGroupKeys(a, b)
  );
  const union = new Set<string>();
  const state = emptyState();
  for (const [, cell] of ranked.slice(top)) {
    state.count += cell.state.count;
    for (const value of cell.values ?? []) union.add(value);
  }
  state.distinct = union.size;
  return state;
}

/** Merges the live panes among `starts` into one cell per group (distinct: with its values). */
function mergeCells(
  panes: Map<number, Pane>,
  starts: Iterable<number>,
  now: number,
): Map<string, Cell> {
  const merged = new Map<string, Cell>();
  for (const start of starts) {
    const pane = panes.get(start);
    if (!pane || pane.expiresAt <= now) continue;
    for (const [group, cell] of pane.groups) {
      let into = merged.get(group);
      if (!into) {
        into = { state: emptyState() };
        if (cell.values) into.values = new Set();
        merged.set(group, into);
      }
      mergeCellInto(into, cell);
    }
  }
  return merged;
}

/**
 * {@linkcode mergeCells} of only the first `limit` groups after `after` in group key order
 * ({@linkcode compareGroupKeys}), in that order: one pass over the panes' group keys keeps the
 * smallest `limit` in a heap (no sort of them all), and only those are merged.
 */
function mergePage(
  panes: Map<number, Pane>,
  starts: Iterable<number>,
  now: number,
  after: string | undefined,
  limit: number,
): Map<string, Cell> {
  const live: Pane[] = [];
  for (const start of starts) {
    const pane = panes.get(start);
    if (pane && pane.expiresAt > now) live.push(pane);
  }
  // A group in several panes is offered once.
  const seen = live.length > 1 ? new Set<string>() : undefined;
  const heap = new SmallestKeys(limit);
  for (const pane of live) {
    for (const group of pane.groups.keys()) {
      if (seen) {
        if (seen.has(group)) continue;
        seen.add(group);
      }
      if (after === undefined || compareGroupKeys(group, after) > 0) heap.offer(group);
    }
  }
  const merged = new Map<string, Cell>();
  for (const group of heap.sorted()) {
    const into: Cell = { state: emptyState() };
    for (const pane of live) {
      const cell = pane.groups.get(group);
      if (cell) mergeCellInto(into, cell);
    }
    merged.set(group, into);
  }
  return merged;
}

/** The `size` smallest group keys offered ({@linkcode compareGroupKeys}), in a max-heap. */
class SmallestKeys {
  readonly #size: number;
  readonly #heap = new BinaryHeap<string>(keyAfter);

  constructor(size: number) {
    this.#size = size;
  }

  offer(key: string): void {
    const heap = this.#heap;
    if (heap.size < this.#size) {
      heap.push(key);
      return;
    }
    if (this.#size === 0 || compareGroupKeys(key, heap.peek()!) >= 0) return;
    heap.replaceTop(key);
  }

  /** The keys held, smallest first. */
  sorted(): string[] {
    return [...this.#heap.entries()].sort(compareGroupKeys);
  }
}

/** Whether group key `a` comes after `b`: the order of {@linkcode SmallestKeys}' max-heap. */
function keyAfter(a: string, b: string): boolean {
  return compareGroupKeys(a, b) > 0;
}

/**
 * Gives the live panes of a counter's windows not closed yet (those a close is about to close too)
 * the life a write would, `ttlMs` from `now`, as the Redis store's close does: an open window's
 * data outlives a pause of its producer (whose watermark then stands still) as long as the sweep
 * runs more often than the ttl, and a window's data lives at least the ttl after it closed.
 */
function keepOpen(
  counter: CounterMeta,
  panes: Map<number, Pane>,
  open: Map<number, number>,
  now: number,
): void {
  if (open.size === 0) return;
  // Windows close in the order of their ends: a pane whose last window ends before the first open
  // one is in no open window (the closed panes, most of them, cost no lookup).
  let firstEnd = Infinity;
  for (const end of open.values()) if (end < firstEnd) firstEnd = end;
  const life = now + counter.ttlMs;
  for (const [paneStart, pane] of panes) {
    if (pane.expiresAt <= now || pane.expiresAt >= life) continue;
    const newest = Math.floor(paneStart / counter.hopMs) * counter.hopMs;
    if (newest + counter.sizeMs < firstEnd) continue;
    for (let start = newest; start + counter.sizeMs > paneStart; start -= counter.hopMs) {
      if (open.has(start)) {
        pane.expiresAt = life;
        break;
      }
    }
  }
}

/** What {@linkcode MemoryStore.fireAlerts} keeps of a firing it claimed. */
interface FiredMarker {
  expiresAt: number;
  counter: string;
  start: number;
  ttlMs: number;
}

/**
 * Gives the alert markers of a counter's windows not closed yet their life again from `now`, as
 * {@linkcode keepOpen} does their panes: an alert that fired early in a window left open by a
 * producer's pause is still marked when the window closes, and does not fire again then.
 */
function keepMarkers(
  fired: Map<string, FiredMarker>,
  counter: string,
  open: Map<number, number>,
  now: number,
): void {
  for (const marker of fired.values()) {
    if (marker.counter !== counter || marker.expiresAt <= now || !open.has(marker.start)) continue;
    marker.expiresAt = Math.max(marker.expiresAt, now + marker.ttlMs);
  }
}

/** Raises a stream's watermark to `nowMs - idleMs` when that is later (idle streams follow the clock). */
function raiseToClock(stream: StreamState, nowMs: number, idleMs: number | null | undefined): void {
  if (idleMs === null || idleMs === undefined) return;
  const floor = nowMs - idleMs;
  if (stream.watermark === null || floor > stream.watermark) stream.watermark = floor;
}
