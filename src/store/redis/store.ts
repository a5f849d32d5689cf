/**
 * The Redis store: shared state for many instances through `@upstash/redis`.
 * One ingest request is one EVALSHA (EVAL on NOSCRIPT) of an atomic Lua
 * script, whatever the batch size and the number of counters.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import type { Redis } from "@upstash/redis";
import type { AggregateState } from "../aggregate_state.ts";
import { LOG_POSITION_SCRIPT } from "./_log_position.ts";
import { DEFAULT_ACCURACY, sketchBin, type SketchBins } from "../sketch.ts";
import { asArray, fromJson, REDIS_CALL_TIMEOUT_MS, RedisCalls } from "./call.ts";
import { dataKeyPrefix, definitionKey } from "./definition_store.ts";
import { splitGenerationKey } from "../definitions.ts";
import {
  APPEND_SCRIPT,
  APPLY_SCRIPT,
  type ApplyField,
  applyFields,
  CLOSE_SCRIPT,
  DEFAULT_STATS_TTL_MS,
  DEMAND_SCRIPT,
  FIRE_SCRIPT,
  KEEP_FINAL_SCRIPT,
  MARK_SCRIPT,
  PANES_SCRIPT,
  READ_SCRIPT,
  SESSION_READ,
  STREAM_KEYS,
  withLogBounds,
} from "./_scripts.ts";
import { sessionApplyArgs, sessionCloseArgs, sessionRuns } from "./_session_scripts.ts";
import {
  type AlertFiring,
  type ApplyResult,
  batchRequests,
  type CellUpdate,
  cellUpdatesOf,
  checkMaxReplyBytes,
  CLOSE_CELLS_PER_CALL,
  type ClosedWindows,
  type CloseOptions,
  compareGroupKeys,
  type CounterMeta,
  DEFAULT_MAX_REPLY_BYTES,
  type EventOutcome,
  type FiredAlerts,
  type FireOptions,
  type LogBounds,
  logBounds,
  type LogEntry,
  type LogPosition,
  type LogRecord,
  MAX_LOG_BACKLOG,
  MAX_LOG_ENTRIES,
  parseLogId,
  type ReadOptions,
  type ReadStats,
  REPLIES_FORGOTTEN_WARNING,
  type RequestResult,
  type ResultLogBounds,
  type SessionRange,
  type SessionValues,
  type Store,
  type StoreBatch,
  StreamChangedError,
  type StreamStats,
  type TimeRange,
  type WindowRead,
  type WindowValues,
} from "../types.ts";

/**
 * The part of the `@upstash/redis` client the store uses: `pipeline` only to send again alone a
 * read whose Redis error the client could not parse (see {@linkcode RedisCalls.read}).
 */
export type RedisClient =
  & Pick<Redis, "evalsha" | "eval" | "hgetall" | "hmget" | "xrange" | "xrevrange" | "ping">
  & Partial<Pick<Redis, "pipeline">>;

/**
 * What a stream's last close left to do (see {@linkcode RedisStore.closeWindows}): the stats it
 * left (watermark, `applied`, `cl`), which an applied batch changes (and `cl` a keep-final raise
 * without one), and when the clock makes something due without one.
 */
interface QuietStream {
  /** The close's counters and options, as JSON: other ones ask anew. */
  asked: string;
  watermark: number | null;
  applied: number | null;
  /**
   * The stats' `cl` (`StreamStats.closedThrough`): its cutoff, raised without a batch by
   * {@linkcode RedisStore.keepFinal}, a definition write that keeps final, or an apply of an
   * older definition whose events were all late or duplicates.
   */
  closedThrough: number | null;
  /** When (ms, the store's clock) a close has something to do again: Infinity for never. */
  dueMs: number;
}

/**
 * Streams whose last close a store remembers by default ({@linkcode RedisStoreOptions.quietKept}):
 * far more than a deployment serves (`EDGESTREAM_STREAMS_MAX`, default 1,000, plus its config
 * file's), so only churn forgets.
 */
export const QUIET_KEPT = 20_000;

/** What the setup check runs as a script, so that it fails where scripting is refused. */
export const PING_SCRIPT = 'return "PONG"';

/**
 * What `ping` runs: a script, so that it fails where scripting is refused, that writes (KEYS[1],
 * for a second), so that it fails where writes are refused too (a Redis at its `maxmemory` under
 * `noeviction`, a read-only replica or token), as every apply would.
 */
export const READY_SCRIPT = 'redis.call("SET", KEYS[1], "1", "PX", 1000)\nreturn "PONG"';

/** A stream this process applied a batch to since its last close here: the next one runs. */
const CHANGED: QuietStream = {
  asked: "",
  watermark: null,
  applied: null,
  closedThrough: null,
  dueMs: -Infinity,
};

/**
 * A short digest of a close's counters and options, as text no client reads back as a number
 * (`@upstash/redis` parses number-like replies): `h` and 16 base64url characters of its SHA-256.
 */
function askedHash(text: string): string {
  return "h" + createHash("sha256").update(text).digest("base64url").slice(0, 16);
}

/**
 * A definition version as the scripts write it (the stats' `dv`, the record's `a`): digits without
 * a leading zero, within 2^53 (the scripts' isVersionText, which checks `a` and `dv`, is the same).
 */
const VERSION_TEXT = /^[1-9]\d{0,14}$/;

/** A stats field as a number (absent or empty: null), whether the client parsed it or not. */
function statsNumber(value: unknown): number | null {
  // A field Redis does not hold, as a script passes on HMGET's answer for it: Lua false.
  if (value === null || value === undefined || value === "" || value === false) return null;
  return Number(value);
}

/** Options for {@linkcode RedisStore}. */
export interface RedisStoreOptions {
  /** Key prefix. @default {"es"} */
  prefix?: string;
  /** A call that takes longer fails with {@linkcode StoreUnavailableError}. @default {5000} */
  timeoutMs?: number;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
  /**
   * How long (ms) a stream's stats live after its last write. Must match the
   * `RedisDefinitionStore`'s `statsTtlMs` under the same prefix (both default to
   * {@linkcode DEFAULT_STATS_TTL_MS}), which gives a stats hash a definition write makes.
   * @default {30 days}
   */
  statsTtlMs?: number;
  /**
   * Whether the stream definitions live in this Redis under the same prefix (a
   * `RedisDefinitionStore` beside this store, as `storesFromEnv` makes them): an apply of a
   * batch whose caller recorded its stream ({@linkcode StoreBatch.recorded}) then refuses it when
   * the record is missing (a Redis restored from a snapshot taken before the stream was created,
   * say) with {@linkcode StreamChangedError} of version 0, writing nothing; a close whose caller
   * recorded it ({@linkcode CloseOptions.recorded}) closes nothing and says `gone`. Off unless
   * asked, as the memory store's option: a store beside definitions kept elsewhere would refuse
   * every batch its caller recorded. @default {false}
   */
  definitionsHere?: boolean;
  /** Bounds of each stream's result log. @default {MAX_LOG_ENTRIES and MAX_LOG_BACKLOG} */
  log?: LogBounds;
  /**
   * Most cells a close script merges (see {@linkcode CLOSE_CELLS_PER_CALL}).
   * @default {CLOSE_CELLS_PER_CALL}
   */
  closeCells?: number;
  /**
   * Most streams whose last close (or a batch applied since) this store remembers, to skip the
   * close script of a stream with nothing to do (see {@linkcode RedisStore.closeWindows}); past
   * it the oldest note is forgotten, and that stream's next close reads the note its last close
   * left in the stats (one `HMGET`), running the script when a batch was applied since.
   * @default {QUIET_KEPT}
   */
  quietKept?: number;
  /**
   * Most bytes of `Idempotency-Key` replies each stream holds, counted as the memory store's
   * `maxReplyBytes` counts them (in bytes here): past it the apply that keeps a reply forgets the
   * stream's oldest before their TTL (a request sent again with one of their keys applies again;
   * counted in the stream's `stats.repliesForgotten`, a warning logged once per stream by each
   * process). Instances sharing a Redis should agree: each keeps to its own at its applies.
   * Replies stored by a release before this bound are not counted; they expire by their TTL.
   * @default {DEFAULT_MAX_REPLY_BYTES}
   */
  maxReplyBytes?: number;
}

const logger = getLogger(["edgestream", "store"]);

/** Relative error of HyperLogLog estimates in Redis (standard error 0.81%). */
export const HLL_STANDARD_ERROR = 0.0081;

const OUTCOMES: EventOutcome[] = ["applied", "duplicate", "late", "skipped"];

/** A request's result as the apply script replies it (see APPLY_SCRIPT). */
type ScriptResult = [number, ...(string | number)[]];

function requestResult(result: ScriptResult): RequestResult {
  switch (result[0]) {
    case 0:
      return { status: "applied", duplicates: Number(result[1]), late: Number(result[2]) };
    case 1:
      return {
        status: "replayed",
        reply: String(result[1]),
        duplicates: Number(result[2]),
        late: Number(result[3]),
      };
    case 2:
      return { status: "conflict" };
    case 3:
      return {
        status: "rate_limited",
        retryAfterMs: Number(result[1]),
        claim: Number(result[2] ?? 0),
        remaining: Number(result[3] ?? 0),
      };
    default:
      return { status: "in_flight" };
  }
}

type MergedRow = [
  group: string,
  count: string,
  sum: string,
  minOrMax: string,
  distinct: string,
  max?: string,
  bins?: string[],
];

function toState(kind: CounterMeta["aggregate"], row: MergedRow): AggregateState {
  const extreme = row[3] === "" ? null : Number(row[3]);
  if (kind === "quantiles") {
    const bins: SketchBins = {};
    const flat = asArray<string>(row[6] ?? []);
    for (let i = 0; i < flat.length; i += 2) bins[flat[i]] = Number(flat[i + 1]);
    return {
      count: Number(row[1]),
      sum: 0,
      min: extreme,
      max: row[5] === undefined || row[5] === "" ? null : Number(row[5]),
      distinct: 0,
      approximate: true,
      bins,
    };
  }
  return {
    count: Number(row[1]),
    sum: Number(row[2]),
    min: kind === "min" ? extreme : null,
    max: kind === "max" ? extreme : null,
    distinct: Number(row[4]),
    approximate: kind === "distinct",
  };
}

/**
 * One pre-aggregated cell: `[counter, pane, group, count, sum, min|false, max|false, values]`,
 * and for a quantiles counter its bucket counts.
 */
type Cell =
  | [number, number, string, number, number, number | false, number | false, string[]]
  | [
    number,
    number,
    string,
    number,
    number,
    number | false,
    number | false,
    string[],
    SketchBins,
  ];

/** The bucket of a quantiles counter's update, or undefined for other counters. */
function binOf(batch: StoreBatch, update: CellUpdate): string | undefined {
  const counter = batch.counters[update.counter];
  if (counter.aggregate !== "quantiles" || typeof update.value !== "number") return undefined;
  return sketchBin(update.value, counter.accuracy ?? DEFAULT_ACCURACY);
}

/** A cell's key in {@linkcode preAggregate}'s index. */
function cellKey(update: CellUpdate): string {
  return `${update.counter}|${update.pane}|${update.group}`;
}

/**
 * Merges a batch's updates into cells as if every event applies, so the
 * script's common case adds one cell per counter, pane and group. Also gives,
 * per event and update, its cell's position in `cells` (`indexes`) and its
 * quantiles bucket (`bins`, when a counter is a quantiles one), so the
 * per-event updates need not work them out again.
 */
function preAggregate(batch: StoreBatch, updatesOf: readonly CellUpdate[][]): {
  cells: Cell[];
  indexes: number[][];
  bins: (string | undefined)[][] | undefined;
} {
  const cells: (Cell & { distinct?: Set<string>; bins?: SketchBins })[] = [];
  const indexOf = new Map<string, number>();
  const anyQuantiles = batch.counters.some((counter) => counter.aggregate === "quantiles");
  const indexes: number[][] = [];
  const bins: (string | undefined)[][] | undefined = anyQuantiles ? [] : undefined;
  for (const updates of updatesOf) {
    const eventIndexes: number[] = [];
    const eventBins: (string | undefined)[] = [];
    for (const update of updates) {
      const key = cellKey(update);
      let index = indexOf.get(key);
      if (index === undefined) {
        index = cells.length;
        indexOf.set(key, index);
        cells.push([update.counter, update.pane, update.group, 0, 0, false, false, []]);
      }
      const cell = cells[index];
      eventIndexes.push(index);
      cell[3] += 1;
      const bin = anyQuantiles ? binOf(batch, update) : undefined;
      eventBins.push(bin);
      if (bin !== undefined) {
        cell.bins ??= {};
        cell.bins[bin] = (cell.bins[bin] ?? 0) + 1;
      }
      const value = update.value;
      if (typeof value === "number") {
        cell[4] += value;
        if (cell[5] === false || value < cell[5]) cell[5] = value;
        if (cell[6] === false || value > cell[6]) cell[6] = value;
      } else if (typeof value === "string") {
        cell.distinct ??= new Set();
        if (!cell.distinct.has(value)) {
          cell.distinct.add(value);
          cell[7].push(value);
        }
      }
    }
    indexes.push(eventIndexes);
    bins?.push(eventBins);
  }
  return {
    cells: cells.map((cell) =>
      cell.bins ? [...cell.slice(0, 8), cell.bins] as Cell : cell.slice(0, 8) as Cell
    ),
    indexes,
    bins,
  };
}

/**
 * Cuts each cell after the last field the script reads for its counter's kind (a count reads
 * only its count), so the script decodes less, and gives its pane start as the text the script
 * names keys with (`%.17g`, which for a safe integer is its decimal digits). Session runs stay
 * as they are.
 */
function trimCells(cells: unknown[], counters: readonly CounterMeta[]): unknown[] {
  return cells.map((input) => {
    const cell = input as Cell;
    const counter = counters[cell[0]];
    if (counter.session) return cell;
    const out: unknown[] = cell.slice(0, fieldsRead(counter.aggregate));
    // -0 stays a number: %.17g writes it "-0", String() "0".
    if (Number.isSafeInteger(cell[1]) && !Object.is(cell[1], -0)) out[1] = String(cell[1]);
    // A distinct cell's one value bare, not in an array (cjson grows each array from empty): the
    // script takes a text as one value, told from an array by its length (so never an empty one).
    if (counter.aggregate === "distinct" && cell[7].length === 1 && cell[7][0] !== "") {
      out[7] = cell[7][0];
    }
    return out;
  });
}

/**
 * A single event's cells as the apply script takes them in `one` (see APPLY_SCRIPT): per counter,
 * in order, `false` when the event adds to none of its cells, else its pane (as
 * {@linkcode trimCells} gives it), its group and, but for a count, the event's value (`false` for
 * none). Its count (1) and its counter's position are not sent, nor a cell's array of its own:
 * each JSON value, and each array grown from empty, is work for the script's decoding on every
 * call (~19k of ~61k instructions for four counters' cells). Undefined where that says too little:
 * session or quantiles counters, two cells of one counter, a distinct counter's empty text (sent
 * in an array by trimCells).
 */
function singleEventCells(
  cells: readonly Cell[],
  counters: readonly CounterMeta[],
): unknown[] | undefined {
  const byCounter: (Cell | undefined)[] = new Array(counters.length);
  for (const cell of cells) {
    const counter = counters[cell[0]];
    if (counter.session || counter.aggregate === "quantiles") return undefined;
    if (byCounter[cell[0]] !== undefined || cell[3] !== 1) return undefined;
    byCounter[cell[0]] = cell;
  }
  const one: unknown[] = [];
  for (let i = 0; i < counters.length; i++) {
    const cell = byCounter[i];
    if (cell === undefined) {
      one.push(false);
      continue;
    }
    // -0 stays a number: %.17g writes it "-0", String() "0" (as in trimCells).
    const pane = Number.isSafeInteger(cell[1]) && !Object.is(cell[1], -0)
      ? String(cell[1])
      : cell[1];
    switch (counters[i].aggregate) {
      case "count":
        one.push(pane, cell[2]);
        break;
      case "sum":
      case "avg":
        one.push(pane, cell[2], cell[4]);
        break;
      case "min":
      case "max":
        // One value: its min and its max (false, with a sum of 0, for none).
        if (cell[5] !== cell[6] || (cell[5] === false && cell[4] !== 0)) return undefined;
        one.push(pane, cell[2], cell[5]);
        break;
      case "distinct":
        // One text, never empty (the script tells a text from an array by its length), or none.
        if (cell[7].length > 1 || cell[7][0] === "") return undefined;
        one.push(pane, cell[2], cell[7].length === 1 ? cell[7][0] : false);
        break;
      default:
        return undefined;
    }
  }
  return one;
}

/** How many of a cell's fields the apply script reads for a counter of this kind. */
function fieldsRead(kind: CounterMeta["aggregate"]): number {
  switch (kind) {
    case "count":
      return 4;
    case "sum":
    case "avg":
      return 5;
    case "min":
    case "max":
      return 7;
    default:
      return 9;
  }
}

/** Whether no id is in the list twice (`false`, no id, may be). */
function distinctIds(ids: readonly (string | false)[]): boolean {
  if (ids.length < 2) return true;
  const seen = new Set<string>();
  for (const id of ids) {
    if (id === false) continue;
    if (seen.has(id)) return false;
    seen.add(id);
  }
  return true;
}

/** A {@linkcode Store} in Redis, shared by every instance that uses the same prefix. */
export class RedisStore implements Store {
  readonly kind = "redis";
  readonly logBounds: ResultLogBounds;
  #redis: RedisClient;
  #prefix: string;
  #definitionsHere: boolean;
  #statsTtlMs: number;
  #now: () => number;
  #calls: RedisCalls;
  /** Scripts with the log bounds of the options (none when they are the defaults). */
  #bounded: Map<string, string> | null = null;
  #logBounds: [number, number];
  #closeCells: number;
  /** Per stream (generation key): what its last close here left to do; see #remember. */
  #quiet = new Map<string, QuietStream>();
  #quietKept: number;
  #maxReplyBytes: number;
  /** Streams (generation keys) whose forgotten replies this process warned of. */
  #warnedReplies = new Set<string>();

  constructor(redis: RedisClient, options: RedisStoreOptions = {}) {
    this.#redis = redis;
    this.#logBounds = logBounds(options.log);
    this.logBounds = { retain: this.#logBounds[0], max: this.#logBounds[1] };
    if (this.#logBounds[0] !== MAX_LOG_ENTRIES || this.#logBounds[1] !== MAX_LOG_BACKLOG) {
      this.#bounded = new Map();
    }
    this.#prefix = options.prefix ?? "es";
    this.#definitionsHere = options.definitionsHere ?? false;
    this.#calls = new RedisCalls(redis, options.timeoutMs ?? REDIS_CALL_TIMEOUT_MS);
    this.#statsTtlMs = options.statsTtlMs ?? DEFAULT_STATS_TTL_MS;
    this.#now = options.now ?? Date.now;
    this.#closeCells = Math.max(1, options.closeCells ?? CLOSE_CELLS_PER_CALL);
    this.#quietKept = Math.max(1, options.quietKept ?? QUIET_KEPT);
    this.#maxReplyBytes = checkMaxReplyBytes(options.maxReplyBytes);
  }

  /**
   * The hash-tagged key prefix of a stream (a {@linkcode generationKey}):
   * `es:{orders}:`, and `es:{orders}:g2:` for its generation 2.
   */
  keyPrefix(stream: string): string {
    return dataKeyPrefix(this.#prefix, stream);
  }

  /**
   * What a script that checks the stream's definition record is called with: its keys, the
   * data's prefix and the record beside it (same slot), and the stream's name and the
   * generation `stream` (a {@linkcode generationKey}) names, which the record must say is served.
   */
  #recordKeys(stream: string): { keys: [string, string]; name: string; generation: number } {
    const { stream: name, generation } = splitGenerationKey(stream);
    return { keys: [this.keyPrefix(stream), definitionKey(this.#prefix, name)], name, generation };
  }

  /** A key of a stream the store reads outside scripts: one of {@linkcode STREAM_KEYS}. */
  #key(stream: string, name: string): string {
    return this.keyPrefix(stream) + name;
  }

  #call<T>(what: string, run: () => Promise<T>): Promise<T> {
    return this.#calls.call(what, run);
  }

  /** The stream's stats fields `fields` (one HMGET; see {@linkcode RedisCalls.read}). */
  #hmget(stream: string, ...fields: string[]): Promise<Record<string, unknown> | null> {
    const key = this.#key(stream, STREAM_KEYS.stats);
    return this.#calls.read(
      () => this.#redis.hmget<Record<string, unknown>>(key, ...fields),
      (pipeline) => pipeline.hmget(key, ...fields),
    );
  }

  #script(script: string, stream: string, ...argv: unknown[]): Promise<unknown> {
    return this.#calls.script(this.#text(script), [this.keyPrefix(stream)], argv);
  }

  /**
   * How long (ms) a stream's stats must live after a write, when longer than `statsTtlMs`: the
   * longest TTL of its counters' data, so its watermark and closed-through time (what says a window
   * is final, and an event late) outlive the windows they judge. Undefined when none is longer.
   */
  #statsLife(counters: readonly CounterMeta[]): number | undefined {
    let life = this.#statsTtlMs;
    for (const counter of counters) if (counter.ttlMs > life) life = counter.ttlMs;
    return life > this.#statsTtlMs ? life : undefined;
  }

  /** `script` with this store's log bounds. */
  #text(script: string): string {
    if (this.#bounded === null) return script;
    let text = this.#bounded.get(script);
    if (text === undefined) {
      text = withLogBounds(script, ...this.#logBounds);
      this.#bounded.set(script, text);
    }
    return text;
  }

  async applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    // What the stream's last close left to do may change: its next close here runs the script.
    if (this.#quiet.get(batch.stream) !== CHANGED) this.#remember(batch.stream, CHANGED);
    // The script's arguments are made from each event's updates as objects.
    const width = batch.counters.length;
    const updatesOf = batch.events.map((_, e) => cellUpdatesOf(batch.updates, width, e));
    const logging = batch.events.some((event) => event.payload !== undefined);
    const sess = sessionApplyArgs(batch.counters);
    const { cells, indexes, bins } = preAggregate(batch, updatesOf);
    const times = batch.events.map((event) => event.timeMs);
    const tmin = times.length > 0 ? times.reduce((a, b) => Math.min(a, b)) : undefined;
    const tmax = times.length > 0 ? times.reduce((a, b) => Math.max(a, b)) : undefined;
    // An event's dedupe id, or false for none: the script takes any value that is not false as an
    // id (it tells no type, ~0.5k instructions a call of type() in its per-event loops).
    const ids = batch.events.map((event) => typeof event.id === "string" ? event.id : false);
    const requests = batchRequests(batch);
    const { keys, name, generation } = this.#recordKeys(batch.stream);
    // What the script would take when absent (false, 0, one plain request of every event) is
    // left out: each JSON value is work for the script's decoding on every call.
    const plain = requests.length === 1 && !requests[0].filtered && !requests[0].rejected &&
      !requests[0].idempotency && !requests[0].rateLimits?.length;
    // A single event's cells in short (see singleEventCells), when they can be.
    const one = batch.events.length === 1 && sess === undefined
      ? singleEventCells(cells, batch.counters)
      : undefined;
    // Typed by the script's field names: a field it does not take (misspelled, or missing from
    // APPLY_FIELDS) fails the type check rather than being dropped by applyFields.
    const header: { [name in ApplyField]?: unknown } = {
      // One token per call (not per try): a try sent again returns the first one's reply.
      tk: crypto.randomUUID(),
      now: batch.nowMs,
      late: batch.latenessMs,
      dv: batch.definitionVersion,
      idle: batch.idleMs ?? undefined,
      dttl: batch.dedupeTtlMs,
      reqs: plain ? undefined : requests.map((request) => ({
        n: request.events,
        f: request.filtered || undefined,
        x: request.rejected || undefined,
        ik: request.idempotency?.keyHash,
        ib: request.idempotency?.bodyHash,
        ir: request.idempotency?.reply,
        it: request.idempotency?.ttlMs,
        rls: request.rateLimits?.map((claim) => [
          claim.key,
          claim.limit,
          claim.windowMs,
          claim.cost,
        ]),
      })),
      // The generation the batch was built for: the definition record (KEYS[2]) must name it.
      gen: generation || undefined,
      // The record must exist (recorded, and the definitions live here): else nothing applies.
      rec: (this.#definitionsHere && batch.recorded) || undefined,
      statsTtl: this.#statsTtlMs === DEFAULT_STATS_TTL_MS ? undefined : this.#statsTtlMs,
      sl: this.#statsLife(batch.counters),
      logp: batch.log?.processed || undefined,
      logl: batch.log?.late || undefined,
      logw: batch.log?.ifWanted || undefined,
      // Then, last, the limits, asked by the script only when a group or a pane is new: JSON text
      // it decodes only then (in this array rather than a field of its own: see the script).
      counters: [
        ...batch.counters.flatMap((c) => [c.name, c.aggregate, c.ttlMs]),
        JSON.stringify(batch.counters.flatMap((c) => [c.maxGroups, c.hopMs, c.sizeMs])),
      ],
      // A single event's id bare, as `id` (cjson grows each array from empty: a table less to
      // decode; told by a field, not by its type, which the script would ask on every call).
      ids: ids.length === 1 ? undefined : ids,
      id: ids.length === 1 ? ids[0] : undefined,
      // No id twice in the batch: the script need not remember the new ones for later events
      // (nor be told so for fewer than two).
      uq: (ids.length > 1 && distinctIds(ids)) || undefined,
      tmin: tmin === tmax ? undefined : tmin,
      tmax,
      payloads: logging ? batch.events.map((event) => event.payload ?? false) : undefined,
      sess,
      // The bound on the stream's stored replies, read by the script only when it keeps one.
      rmax: this.#maxReplyBytes === DEFAULT_MAX_REPLY_BYTES || plain
        ? undefined
        : this.#maxReplyBytes,
      cells: one === undefined
        ? trimCells(sessionRuns(cells, batch.counters), batch.counters)
        : undefined,
      one,
    };
    // With session counters, whose cells sessionRuns merges, each update in full; else the
    // index of its cell in `cells` (which then are preAggregate's, in its order) and its value.
    const perEvent = updatesOf.map((updates, e) =>
      updates.map((u, i) => {
        const bin = bins?.[e][i];
        if (sess) {
          if (u.value === undefined) return [u.counter, u.pane, u.group];
          return bin === undefined
            ? [u.counter, u.pane, u.group, u.value]
            : [u.counter, u.pane, u.group, u.value, bin];
        }
        const index = indexes[e][i];
        if (u.value === undefined) return index;
        return bin === undefined ? [index, u.value] : [index, u.value, bin];
      })
    );
    const fields = applyFields(header);
    const reply = await this.#call("applyBatch", async () =>
      fromJson<
        {
          o: string | number;
          wm: string | number;
          d: unknown;
          r: unknown;
          v?: number;
          gone?: 1;
          f?: number;
        }
      >(
        await this.#calls.script(
          this.#text(APPLY_SCRIPT),
          keys,
          // One event's time is tmax, and its updates add nothing when it is not applied: the
          // script is not sent them (each argument is a Lua string Redis makes for every call).
          batch.events.length > 1 ? [fields, perEvent, times] : [fields],
        ),
      ));
    if (reply.gone) throw new StreamChangedError(name, Number(reply.v ?? 0));
    if (reply.f && !this.#warnedReplies.has(batch.stream)) {
      this.#warnedReplies.add(batch.stream);
      // Once per stream and process: the count in stats says how many since.
      logger.warn(
        REPLIES_FORGOTTEN_WARNING,
        { stream: name, maxReplyBytes: this.#maxReplyBytes },
      );
    }
    // A client with automatic deserialization may turn "000" into 0: pad back.
    const digits = String(reply.o).padStart(batch.events.length, "0");
    return {
      outcomes: [...digits].map((digit) => OUTCOMES[Number(digit)]),
      requests: asArray<ScriptResult>(reply.r).map(requestResult),
      watermark: reply.wm === "" ? null : Number(reply.wm),
      demand: asArray<string>(reply.d),
      definitionVersion: Number(reply.v ?? 0),
    };
  }

  panes(stream: string, counter: CounterMeta, { fromMs, toMs }: TimeRange): Promise<number[]> {
    return this.#call("panes", async () => {
      // Redis keeps only those in the range: the index of live panes holds all the counter keeps.
      const texts = asArray<string>(
        fromJson(
          await this.#script(PANES_SCRIPT, stream, {
            name: counter.name,
            from: fromMs,
            to: toMs,
            now: this.#now(),
          }),
        ),
      );
      return texts.map(Number).sort((a, b) => a - b);
    });
  }

  readWindows(
    stream: string,
    counter: CounterMeta,
    windows: WindowRead[],
    options: ReadOptions = {},
  ): Promise<WindowValues> {
    if (windows.length === 0 && !options.stats) return Promise.resolve([]);
    return this.#call("readWindows", async () => {
      const reply = readReply(
        await this.#script(READ_SCRIPT, stream, {
          name: counter.name,
          kind: counter.aggregate,
          top: options.top ?? false,
          page: options.page ?? false,
          windows: windows.map((window) => [window.start, window.panes]),
          ...(options.stats ? { stats: true } : {}),
        }),
      );
      const values: WindowValues = asArray<[string, ...MergedRow]>(reply.rows).map((
        [start, ...merged],
      ) => ({
        start: Number(start),
        group: merged[0],
        state: toState(counter.aggregate, merged as MergedRow),
      }));
      if (reply.stats) values.stats = reply.stats;
      return values;
    });
  }

  readSessions(stream: string, counter: CounterMeta, range: SessionRange): Promise<SessionValues> {
    return this.#call("readSessions", async () => {
      const reply = readReply(
        await this.#script(SESSION_READ, stream, {
          name: counter.name,
          kind: counter.aggregate,
          from: range.fromMs,
          to: range.toMs,
          limit: range.limit ?? false,
          open: range.open ?? false,
          ...(range.stats ? { stats: true } : {}),
          now: this.#now(),
        }),
      );
      const rows = asArray<[string, string, string, string, string, string, string, number]>(
        reply.rows,
      );
      const sessions = rows.map(([start, end, group, count, sum, minOrMax, distinct, closed]) => ({
        start: Number(start),
        end: Number(end),
        group,
        state: toState(counter.aggregate, [group, count, sum, minOrMax, distinct]),
        closed: Number(closed) === 1,
      }));
      // The script gives sessions that start together newest member first (but for the tail a
      // limit cut, which it takes by group key), and the open ones in no order (at most
      // maxSessions): ordered here, the open ones cut too.
      sessions.sort((a, b) => b.start - a.start || compareGroupKeys(a.group, b.group));
      const values: SessionValues = sessions.slice(0, range.limit ?? sessions.length);
      if (reply.stats) values.stats = reply.stats;
      return values;
    });
  }

  /**
   * Closes a stream's final windows and sessions. A stream whose last close here left nothing to
   * do until a time not come yet (a window's end, a pane's or session's keep-alive, a closed
   * session's expiry) costs one `HMGET` of its stats rather than the close script, as long as no
   * batch was applied to it since and nothing kept more final (its watermark, `applied` and `cl`
   * are as that close left them). A peek skipped so lists nothing and gives no
   * {@linkcode ClosedWindows.cutoff}: nothing is due, and a sweep closes nothing after it.
   */
  async closeWindows(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
  ): Promise<ClosedWindows> {
    const windowCounters = counters.filter((counter) => !counter.session);
    const now = options.nowMs ?? this.#now();
    const idle = options.idleMs ?? false;
    // Session counters have no panes nor windows to ask: in `sess` only.
    const asked = {
      late: options.latenessMs,
      idle,
      counters: windowCounters.map((c) => [c.name, c.aggregate, c.hopMs, c.sizeMs, c.ttlMs]),
      sess: sessionCloseArgs(counters),
    };
    const askedText = JSON.stringify(asked);
    const quiet = this.#quiet.get(stream);
    if (quiet === undefined) {
      // Not closed by this process yet: what the last close of any process left in the stats.
      if (await this.#quietInStats(stream, askedText, now)) return [];
    } else if (quiet.asked === askedText && now < quiet.dueMs) {
      if (await this.#unchanged(stream, quiet)) return [];
    }
    // A peek (the sweep's, before a close of a stream with alerts) leaves the note to the close.
    if (!options.peek) this.#quiet.delete(stream);
    const closed = await this.#close(stream, counters, options, {
      ...asked,
      qk: askedHash(askedText),
    }, now);
    if (!options.peek && closed.quiet !== undefined) {
      this.#remember(stream, { ...closed.quiet, asked: askedText });
    }
    return closed.windows;
  }

  /** Whether the stream's stats are as its last close left them (one HMGET). */
  #unchanged(stream: string, quiet: QuietStream): Promise<boolean> {
    return this.#call("closeWindows", async () => {
      const stats = await this.#hmget(stream, "wm", "applied", "cl");
      return statsNumber(stats?.wm) === quiet.watermark &&
        statsNumber(stats?.applied) === quiet.applied &&
        statsNumber(stats?.cl) === quiet.closedThrough;
    });
  }

  /**
   * Notes what a stream's last close left to do. Streams deleted (or created again, a new
   * generation key) leave their notes behind, so past `quietKept` the oldest noted is forgotten: a
   * forgotten stream's next close reads the note the close left in its stats (one HMGET), and runs
   * the script when a batch was applied since (the stats' `applied` is not the note's).
   */
  #remember(stream: string, quiet: QuietStream): void {
    this.#quiet.delete(stream);
    if (this.#quiet.size >= this.#quietKept) this.#quiet.delete(this.#quiet.keys().next().value!);
    this.#quiet.set(stream, quiet);
  }

  /**
   * Whether the stats say the stream has nothing to do now (one HMGET): no batch was ever applied
   * (no watermark), or the last close (of any process, with these counters and options) left
   * nothing to do before a time not come yet, and no batch was applied nor `cl` raised since. Then
   * this process knows it too.
   */
  #quietInStats(stream: string, askedText: string, now: number): Promise<boolean> {
    return this.#call("closeWindows", async () => {
      const stats = await this.#hmget(
        stream,
        "wm",
        "applied",
        "cl",
        "qn",
        "qa",
        "qw",
        "qc",
        "qk",
      );
      const watermark = statsNumber(stats?.wm);
      if (watermark === null) return true;
      const applied = statsNumber(stats?.applied);
      const closedThrough = statsNumber(stats?.cl);
      const due = statsNumber(stats?.qn);
      if (
        due === null || String(stats?.qk ?? "") !== askedHash(askedText) ||
        statsNumber(stats?.qw) !== watermark || statsNumber(stats?.qa) !== applied ||
        statsNumber(stats?.qc) !== closedThrough
      ) return false;
      const dueMs = due === -1 ? Infinity : due;
      if (now >= dueMs) return false;
      this.#remember(stream, { asked: askedText, watermark, applied, closedThrough, dueMs });
      return true;
    });
  }

  #close(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
    asked: object,
    now: number,
  ): Promise<{ windows: ClosedWindows; quiet?: Omit<QuietStream, "asked"> }> {
    // The definition record beside the data (same slot), as for an apply: a generation it says is
    // deleted, or replaced by another, closes nothing.
    const { keys, generation } = this.#recordKeys(stream);
    return this.#call("closeWindows", async () => {
      const reply = fromJson<
        {
          w?: unknown;
          m?: number;
          n?: number;
          a?: unknown;
          wm?: unknown;
          cl?: unknown;
          c?: unknown;
          v?: number;
          gone?: number;
        }
      >(
        await this.#calls.script(this.#text(CLOSE_SCRIPT), keys, [{
          ...asked,
          now,
          peek: options.peek ?? false,
          // A peek writes nothing: only a close is kept for a send of it again.
          tk: options.peek ? false : crypto.randomUUID(),
          limit: options.limit ?? 100,
          cells: this.#closeCells,
          logTtl: this.#statsTtlMs,
          sl: this.#statsLife(counters),
          dv: options.definitionVersion,
          th: options.through,
          ls: options.listed,
          ts: options.throughSession &&
            [options.throughSession.start, options.throughSession.group],
          gen: generation || undefined,
          // As for an apply: the record must exist (recorded, and the definitions live here).
          rec: (this.#definitionsHere && options.recorded) || undefined,
        }]),
      );
      const kinds = new Map(counters.map((c) => [c.name, c.aggregate]));
      const closed: ClosedWindows = asArray<[string, string, string, unknown, number?]>(reply.w)
        .map(([counter, start, end, rows, continued]) => ({
          counter,
          start: Number(start),
          end: Number(end),
          groups: asArray<MergedRow>(rows).map((row) => ({
            group: row[0],
            state: toState(kinds.get(counter)!, row),
          })),
          ...(continued === 1 ? { continued: true } : {}),
        }));
      if (reply.m === 1) closed.more = true;
      const cutoff = statsNumber(reply.c);
      if (options.peek && cutoff !== null) closed.cutoff = cutoff;
      if (typeof reply.v === "number") closed.laterDefinition = reply.v;
      if (reply.gone === 1 || reply.gone === 2) closed.gone = true;
      if (reply.gone === 2) closed.recordMissing = true;
      if (typeof reply.n !== "number") return { windows: closed };
      return {
        windows: closed,
        quiet: {
          watermark: statsNumber(reply.wm),
          applied: statsNumber(reply.a),
          closedThrough: statsNumber(reply.cl),
          dueMs: reply.n === -1 ? Infinity : reply.n,
        },
      };
    });
  }

  fireAlerts(
    stream: string,
    firings: AlertFiring[],
    // The incarnation is `stream`'s own (a generation key): the counters add nothing here.
    _options?: FireOptions,
  ): Promise<FiredAlerts> {
    if (firings.length === 0) return Promise.resolve([]);
    // The definition record beside the data (same slot), as for a close: a generation it says is
    // deleted, or replaced by another, fires nothing and says gone.
    const { keys, generation } = this.#recordKeys(stream);
    return this.#call("fireAlerts", async () => {
      const reply = fromJson<number[] | { gone?: number }>(
        await this.#calls.script(this.#text(FIRE_SCRIPT), keys, [{
          gen: generation || undefined,
          logTtl: this.#statsTtlMs,
          tk: crypto.randomUUID(),
          firings: firings.map((f) => [
            f.alert,
            f.counter,
            f.start,
            f.end,
            f.group,
            // A quantiles counter's value goes as its JSON text, logged as it is.
            typeof f.value === "object" && f.value !== null
              ? JSON.stringify(f.value)
              : f.value ?? false,
            f.ttlMs,
            f.approximate === true,
          ]),
        }]),
      );
      if (!Array.isArray(reply)) {
        const none: FiredAlerts = [];
        if (reply?.gone === 1) none.gone = true;
        return none;
      }
      return reply.map((index) => firings[index - 1]);
    });
  }

  async appendLog(stream: string, records: LogRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.#call("appendLog", () =>
      this.#script(APPEND_SCRIPT, stream, {
        logTtl: this.#statsTtlMs,
        tk: crypto.randomUUID(),
        records: records.map((record) => JSON.stringify(record)),
      }));
  }

  readLog(stream: string, afterId: string | null, limit: number): Promise<LogEntry[]> {
    return this.#call("readLog", async () => {
      const key = this.#key(stream, STREAM_KEYS.log);
      const from = afterId === null ? "-" : `(${afterId}`;
      const entries = await this.#calls.read(
        () => this.#redis.xrange(key, from, "+", limit),
        (pipeline) => pipeline.xrange(key, from, "+", limit),
      );
      // The client returns {id: {field: value}} in log order; values may be parsed already.
      return Object.entries(entries ?? {}).map(([id, fields]) => ({
        id,
        timeMs: Number(id.split("-")[0]),
        record: fromJson<LogRecord>((fields as Record<string, unknown>).r),
      }));
    });
  }

  markDispatched(stream: string, throughId: string | null): Promise<number> {
    return this.#call("markDispatched", async () =>
      Number(
        await this.#script(MARK_SCRIPT, stream, {
          through: throughId ?? false,
          ttl: this.#statsTtlMs,
          tk: crypto.randomUUID(),
        }),
      ));
  }

  async keepFinal(stream: string, throughMs: number): Promise<void> {
    await this.#call(
      "keepFinal",
      () => this.#script(KEEP_FINAL_SCRIPT, stream, { through: throughMs }),
    );
  }

  async signalDemand(stream: string, types: readonly string[], ttlMs: number): Promise<void> {
    if (types.length === 0) return;
    await this.#call("signalDemand", () =>
      this.#script(DEMAND_SCRIPT, stream, {
        expiresAt: this.#now() + ttlMs,
        ttl: ttlMs,
        types,
      }));
  }

  lastLogId(stream: string): Promise<string | null> {
    return this.#call("lastLogId", async () => {
      const key = this.#key(stream, STREAM_KEYS.log);
      const entries = await this.#calls.read(
        () => this.#redis.xrevrange(key, "+", "-", 1),
        (pipeline) => pipeline.xrevrange(key, "+", "-", 1),
      );
      return Object.keys(entries ?? {})[0] ?? null;
    });
  }

  logPosition(stream: string): Promise<LogPosition> {
    return this.#call("logPosition", async () => {
      const [lastId, added, length, firstId] = (await this.#calls.script(
        LOG_POSITION_SCRIPT,
        [this.keyPrefix(stream)],
        [],
      ) as unknown[]).map(String);
      return {
        lastId,
        trimmedThrough: trimmedThrough(lastId, added, length, firstId),
        firstId: firstId === "" ? null : firstId,
      };
    });
  }

  stats(stream: string, counters: CounterMeta[]): Promise<StreamStats> {
    return this.#call("stats", async () => {
      const key = this.#key(stream, STREAM_KEYS.stats);
      const hash = (await this.#calls.read(
        () => this.#redis.hgetall<Record<string, string | number>>(key),
        (pipeline) => pipeline.hgetall(key),
      )) ?? {};
      const read = (field: string) => Number(hash[field] ?? 0);
      const overflow: Record<string, number> = {};
      for (const counter of counters) overflow[counter.name] = read(`overflow:${counter.name}`);
      const { watermark, ...final } = readStatsOf(hash.wm, hash.cl, hash.dv);
      return {
        watermark,
        accepted: read("accepted"),
        applied: read("applied"),
        duplicates: read("duplicates"),
        late: read("late"),
        filtered: read("filtered"),
        rejected: read("rejected"),
        overflow,
        dedupeForgotten: 0, // Redis keeps every id for its TTL: nothing is forgotten early
        repliesForgotten: read("repliesForgotten"),
        ...final,
      };
    });
  }

  /**
   * One command, as `PING` was, but a script that writes its own key (`<prefix>:{@ready}`, for a
   * second): every write of this store is a script, so a Redis that refuses scripting (an ACL
   * without `@scripting`) or writes (out of memory under `noeviction`) is not ready.
   */
  async ping(): Promise<void> {
    const key = `${this.#prefix}:{@ready}`;
    await this.#call("ping", () => this.#calls.script(READY_SCRIPT, [key], []));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The stats fields `wm`, `cl` and `dv` (absent or `""`: none) as {@linkcode ReadStats}. */
function readStatsOf(wm: unknown, cl: unknown, dv: unknown): ReadStats {
  return {
    watermark: wm === undefined || wm === "" ? null : Number(wm),
    ...(cl === undefined || cl === "" ? {} : { closedThrough: Number(cl) }),
    // A hint (only cl is final past it): text the scripts never write (not a version as the
    // definition write puts it) is taken as none, not as a later version (a reload loop). The stats
    // read's client has parsed the field as JSON first, so there text that JSON reads as a whole
    // number ("1e3", "3.0") still passes as one.
    ...(VERSION_TEXT.test(String(dv ?? "")) ? { definitionVersion: Number(dv) } : {}),
  };
}

/**
 * The reply of a read script (see `READ_REPLY_LUA`): its rows, and the stats when it was asked
 * for them (`{"r": rows, "s": [wm, cl, dv]}`).
 */
function readReply(reply: unknown): { rows: unknown; stats?: ReadStats } {
  const parsed = fromJson(reply);
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    return { rows: parsed };
  }
  const { r, s } = parsed as { r?: unknown; s?: unknown };
  // An empty array of rows comes back from cjson as `{}`: rows without stats.
  if (!Array.isArray(s)) return { rows: [] };
  return { rows: r, stats: readStatsOf(s[0], s[1], s[2]) };
}

/**
 * An id at or after the newest entry a Redis log trimmed, and before its oldest held: `0-0` when
 * it never lost an entry (`entries-added` equals its length), else the id just before its oldest
 * entry (Redis keeps no id of what `XTRIM` removed), or its last id when it holds none. Null when
 * this Redis does not report `entries-added`.
 */
function trimmedThrough(
  lastId: string,
  added: string,
  length: string,
  firstId: string,
): string | null {
  if (added === "") return null;
  if (Number(added) <= Number(length)) return "0-0";
  if (firstId === "") return lastId;
  const [ms, seq] = parseLogId(firstId);
  return seq > 0 ? `${ms}-${seq - 1}` : `${ms - 1}-${Number.MAX_SAFE_INTEGER}`;
}
