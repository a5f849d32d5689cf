/**
 * The ingest pipeline shared by every transport (HTTP, WebSocket):
 * validate → event time → dedupe id → transform → counter updates → one
 * atomic store apply. The reply is built only after the store has applied
 * the batch, so nothing acknowledged is lost.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createHash } from "node:crypto";
import { type CompiledStream, formatDuration, MAX_DURATION_MS } from "../config/mod.ts";
import type { AppliedBatch, IngestObserver, LogDemand } from "../fanout/types.ts";
import type { GroupCommitter } from "./group_commit.ts";
import type { RejectedCounts } from "./rejected_counts.ts";
import type {
  BatchEvent,
  BatchRequest,
  BatchUpdates,
  RateLimitClaim,
  Store,
  StoreBatch,
} from "../store/types.ts";
import { attachIngestSpan, detached } from "../telemetry/mod.ts";
import {
  patternBudgetCutMessage,
  RequestPatternBudget,
  type TransformCallOptions,
  TransformError,
} from "../transform/mod.ts";
import type { Event, FieldError } from "../validate/mod.ts";
import {
  checkBudgetCutMessage,
  eventValidator,
  listedErrors,
  MAX_EPOCH_MS,
  quoteInput,
  RequestCheckBudget,
} from "../validate/mod.ts";
import {
  assignWindows,
  type CompiledCounter,
  eventTimeError,
  eventTimeMs,
  readField,
  writeCounterCell,
} from "../window/mod.ts";

const logger = getLogger(["edgestream", "ingest"]);

/**
 * One item of a body: a parsed value, or why it could not be read. {@linkcode ingestItems} may
 * change the value (a transform's `set` writes into it): parse it anew for another call.
 */
export type BodyItem = { ok: true; value: unknown; line?: number } | {
  ok: false;
  error: FieldError;
  line?: number;
};

/** One refused event in a reply. */
export interface Rejection {
  /** Position of the event among the request's events, from 0. */
  index: number;
  /**
   * The event's line in an NDJSON body, from 1, blank lines counted (as a line that is not JSON
   * names it): `index` skips blank lines, so it alone would not find the line.
   */
  line?: number;
  /** What is wrong with it. */
  errors: FieldError[];
}

/** The reply to an ingest request. */
export interface IngestReply {
  /** Events acknowledged: applied, duplicate, late or filtered out. */
  accepted: number;
  /** Of those, events whose dedupe id was already seen. */
  duplicates: number;
  /** Of those, events past the lateness bound (not counted in windows). */
  late: number;
  /** Of those, events a transform filter dropped. */
  filtered: number;
  /** Events refused, with reasons. Nothing of them was stored. */
  rejected: Rejection[];
  /**
   * Only on a replay whose `rejected` was shortened when stored: how many rejected events of the
   * first reply it leaves out (it lists the first ones, as many as fit in
   * {@linkcode MAX_STORED_REJECTED_CHARS} characters of JSON, the first always). The first reply
   * had `rejected.length + rejectedOmitted` rejected events.
   */
  rejectedOmitted?: number;
  /**
   * True when this is the stored reply of an earlier request with the same
   * `Idempotency-Key` (nothing was applied now; see `rejectedOmitted`).
   */
  replayed?: boolean;
}

/** How many events `reply` refused: those it lists and, on a shortened replay, those it left out. */
export function rejectedCountOf(reply: Pick<IngestReply, "rejected" | "rejectedOmitted">): number {
  return reply.rejected.length + (reply.rejectedOmitted ?? 0);
}

/**
 * An ingest reply's counts as its span (`IngestScope.answered`) and log line have them: `rejected`
 * as a count ({@linkcode rejectedCountOf}), `replayed` only on a replay. A type literal, not an
 * interface, so that it is also a log line's `Record<string, unknown>`.
 */
export type IngestReplyCounts = {
  accepted: number;
  duplicates: number;
  late: number;
  filtered: number;
  rejected: number;
  replayed?: true;
};

/** The counts of `reply` ({@linkcode IngestReplyCounts}), one object for its span and log line. */
export function ingestCountsOf(reply: IngestReply): IngestReplyCounts {
  const counts: IngestReplyCounts = {
    accepted: reply.accepted,
    duplicates: reply.duplicates,
    late: reply.late,
    filtered: reply.filtered,
    rejected: rejectedCountOf(reply),
  };
  if (reply.replayed) counts.replayed = true;
  return counts;
}

/** Longest dedupe id accepted. */
export const MAX_ID_LENGTH = 256;

/**
 * An event ready for the store, why it was refused, or null when a filter dropped it. Plain
 * values rather than a tagged result: the hot path makes one object fewer per event.
 */
type Prepared = BatchEvent | FieldError[] | null;

function fieldError(path: string, message: string): FieldError[] {
  return [{ path, message }];
}

/** A stream schema's validator: see `eventValidator`. */
type Validator = (value: unknown, budget?: RequestCheckBudget) => Event | FieldError[];

/** Each stream schema's validator, made once rather than per request. */
const validators = new WeakMap<CompiledStream["schema"], Validator>();

function validatorOf(schema: CompiledStream["schema"]): Validator {
  let validate = validators.get(schema);
  if (validate === undefined) {
    // Its errors past MAX_EVENT_ERRORS counted, not worded (see rejection).
    validate = eventValidator(schema, { maxErrors: MAX_EVENT_ERRORS });
    validators.set(schema, validate);
  }
  return validate;
}

/** The earliest time (ms) a `Date` holds, as every time the API writes is one. */
const EARLIEST_MS = -MAX_EPOCH_MS;

/**
 * The counter of `stream` (a window counter) that would hold an event at `timeMs` in a window
 * starting before {@linkcode EARLIEST_MS}, or undefined. Such a window's start is no date: a close
 * of it failed where it is written (the admin sweep's reply, a `window.closed` payload). Only the
 * first year of the Date range is asked about.
 */
function counterBeforeDates(stream: CompiledStream, timeMs: number): CompiledCounter | undefined {
  // Durations are at most MAX_DURATION_MS: a window is no longer.
  if (timeMs >= EARLIEST_MS + MAX_DURATION_MS) return undefined;
  return stream.counters.find((counter) =>
    counter.window.kind !== "session" && assignWindows(timeMs, counter.window)[0] < EARLIEST_MS
  );
}

function prepare(
  stream: CompiledStream,
  value: unknown,
  context: {
    nowMs: number;
    withPayload: boolean;
    validate: Validator;
    /** The request's budget of schema checks, shared by its events in order. */
    budget: RequestCheckBudget;
    /**
     * How its transform runs: in place (events here are the pipeline's own, parsed from the body),
     * with the request's budget for compiling patterns taken from its events, shared in order.
     */
    transform: TransformCallOptions & { patterns: RequestPatternBudget };
    /** Where its counter updates go, from entry `at` on (written also when it is refused). */
    updates: BatchUpdates;
    at: number;
  },
): Prepared {
  const { nowMs, withPayload } = context;
  const event = context.validate(value, context.budget);
  if (Array.isArray(event)) return event;

  const rawTime = stream.timeField === undefined ? undefined : readField(event, stream.timeField);
  const timeMs = eventTimeMs(rawTime, nowMs);
  if (timeMs === null) return fieldError(stream.timeField!, eventTimeError(rawTime));
  if (timeMs > nowMs + stream.maxFutureMs) {
    return fieldError(
      stream.timeField!,
      `Event time ${
        new Date(timeMs).toISOString()
      } is too far in the future: more than the stream's time.maxFuture (${
        formatDuration(stream.maxFutureMs)
      }) ahead of the clock`,
    );
  }

  const early = counterBeforeDates(stream, timeMs);
  if (early !== undefined) {
    const time = new Date(timeMs).toISOString();
    const earliest = new Date(EARLIEST_MS).toISOString();
    return fieldError(
      stream.timeField!,
      `Event time ${time} is too early: counter '${early.name}' would hold it in a window starting before ${earliest}, the earliest time edgestream can write`,
    );
  }

  let id: string | undefined;
  if (stream.dedupe) {
    const raw = readField(event, stream.dedupe.field);
    if (typeof raw === "string" || typeof raw === "number") {
      id = String(raw);
      if (!id.isWellFormed()) {
        return fieldError(
          stream.dedupe.field,
          "Dedupe id must be well-formed Unicode (it has a lone surrogate)",
        );
      }
      if (id.length > MAX_ID_LENGTH) {
        return fieldError(
          stream.dedupe.field,
          `Dedupe id is ${id.length} characters; at most ${MAX_ID_LENGTH} are allowed`,
        );
      }
    } else if (raw !== undefined && raw !== null) {
      return fieldError(
        stream.dedupe.field,
        `Dedupe id must be a string or a number, got ${typeof raw}`,
      );
    }
  }

  let transformed;
  try {
    transformed = stream.transform(event, context.transform);
  } catch (error) {
    if (error instanceof TransformError) return fieldError(error.path, error.message);
    throw error;
  }
  if (transformed === null) return null;

  let errors: FieldError[] | undefined;
  let at = context.at;
  for (const counter of stream.counters) {
    const error = writeCounterCell(counter, transformed, timeMs, context.updates, at++);
    if (error !== null) (errors ??= []).push(error);
  }
  // As many as counters (64): listed as the validator lists its own (see rejection).
  if (errors) return listedErrors(errors, MAX_EVENT_ERRORS);
  const prepared: BatchEvent = { id, timeMs, value: transformed };
  if (withPayload) prepared.payload = JSON.stringify(transformed);
  return prepared;
}

/** What the fan-out consumers ask of an ingest: which events to log, and who to tell. */
export interface IngestFanout {
  /**
   * Which events go to the stream's durable result log with the batch
   * (`event.processed`, `event.late`). @default {none}
   */
  log?: StoreBatch["log"];
  /** Told about every applied batch. */
  observers?: readonly IngestObserver[];
}

/** What one process shares between its ingest requests (HTTP and WebSocket). */
export interface IngestContext extends IngestFanout {
  /**
   * Idempotency keys (`<stream>\0<key>`) of requests in progress on this
   * process: a second request with one of them is refused as in flight.
   */
  inFlight?: Set<string>;
  /**
   * Shares store applies between concurrent requests of a stream (see
   * `group_commit.ts`); it must apply to the same store as `store`.
   * @default {none: each request is its own apply}
   */
  groupCommit?: GroupCommitter;
  /**
   * Where the rejected events of a request that accepted none are counted, for the stream's
   * `stats.rejected` about a second later (see `rejected_counts.ts`); it must apply to the same
   * store as `store`. @default {none: they are not counted}
   */
  rejectedCounts?: RejectedCounts;
}

/** Options for {@linkcode ingestItems}. */
export interface IngestOptions extends IngestContext {
  /** Where the batch is applied. */
  store: Store;
  /** Receive time (ms): event time defaults to it, lateness is measured from it. */
  nowMs: number;
  /**
   * The request's `Idempotency-Key` and what it sent (its body, or frame
   * text), to tell a retry (same body) from a reuse of the key.
   */
  idempotency?: { key: string; body: string | Uint8Array };
  /**
   * The rate limits the request must fit in (the stream's, its key's); it
   * costs one token per accepted event in each. @default {none}
   */
  rateLimits?: readonly IngestRateLimit[];
}

/** The fan-out consumers whose wishes decide a stream's {@linkcode IngestFanout}. */
export interface FanoutConsumers {
  /** Consumers that may want `event.processed` / `event.late` in the result log. */
  demand: readonly LogDemand[];
  /** Told about every applied batch. */
  observers: readonly IngestObserver[];
}

/** What to log and whom to tell when ingesting into `stream`, given the consumers. */
export function ingestFanoutFor(stream: string, consumers: FanoutConsumers): IngestFanout {
  const processed = consumers.demand.some((item) => item.wants(stream, "event.processed"));
  const late = consumers.demand.some((item) => item.wants(stream, "event.late"));
  if (processed || late) return { log: { processed, late }, observers: consumers.observers };
  // Nobody here wants them, and whether a subscriber elsewhere does is not known: the store logs
  // them if its demand says so.
  const mayProcessed = consumers.demand.some((item) =>
    item.mayWant?.(stream, "event.processed") ?? false
  );
  const mayLate = consumers.demand.some((item) => item.mayWant?.(stream, "event.late") ?? false);
  return {
    log: mayProcessed || mayLate
      ? { processed: mayProcessed, late: mayLate, ifWanted: true }
      : undefined,
    observers: consumers.observers,
  };
}

/**
 * Most errors a rejected event lists, in the reply and in a stored one; past them one more entry
 * says how many were left out. A schema can find an error in every item of an array: an 800 KB
 * body had a reply of 32 MB.
 */
export const MAX_EVENT_ERRORS = 10;

/**
 * Most characters the JSON of a stored idempotent reply's rejected events takes (a first one that
 * alone is past it is kept shortened within it). The reply is kept for the stream's `idempotencyTtl`
 * (24 h by default) and a stream's limits bound requests, not bytes: at 64 KiB a reply, 100
 * requests a second made Redis hold over 500 GB a day. At 4 KiB the replay of the usual request, with
 * a few rejected events, is still the first reply whole.
 */
export const MAX_STORED_REJECTED_CHARS = 4_096;

/**
 * The JSON text of a stored reply (`{accepted, filtered, rejected}`, as `JSON.stringify` writes
 * it), whose `rejected` lists the first rejected events in order (each already with at most
 * {@linkcode MAX_EVENT_ERRORS} errors), as many as {@linkcode MAX_STORED_REJECTED_CHARS} of JSON
 * allow, and the first one always (shortened within that if it alone is past it, see
 * {@linkcode shortenedWithin}): `rejected`'s JSON is never longer; when some are left out,
 * `rejectedOmitted` says how many. Each event kept is turned into JSON once: the text measured is
 * the text stored. A release that knows no `rejectedOmitted` replays it as it is, one more field.
 */
function storedReply(accepted: number, filtered: number, rejected: readonly Rejection[]): string {
  const kept: string[] = [];
  // The JSON of the array: its brackets, and a comma between two items.
  let chars = 1;
  for (const rejection of rejected) {
    const text = JSON.stringify(rejection);
    if (chars + text.length + 1 > MAX_STORED_REJECTED_CHARS) {
      // The first is kept always, shortened if it alone is past the bound (paths nested deep under
      // long keys): a replay that listed no rejection would say that none was rejected.
      if (kept.length === 0) kept.push(shortenedWithin(rejection, MAX_STORED_REJECTED_CHARS - 2));
      break;
    }
    chars += text.length + 1;
    kept.push(text);
  }
  // The counts are whole numbers: their JSON is their decimal text.
  const omitted = rejected.length - kept.length;
  return `{"accepted":${accepted},"filtered":${filtered},"rejected":[${kept.join(",")}]${
    omitted > 0 ? `,"rejectedOmitted":${omitted}` : ""
  }}`;
}

/**
 * The JSON of `rejection` within `budget` characters: each error's path and message quoted within
 * 256 characters as client input is anywhere, or, when that is still past `budget`, each within an
 * equal share of what the rest of its JSON leaves (a quoted character may take 6 characters of
 * JSON, `\u0001`: 11 errors quoted within 256 took near 30,000). A path or message within its share
 * stays whole, as the count that ends a long list of errors does; one past it keeps its first
 * characters and `…` (see {@linkcode quotedWithin}). For the at most
 * {@linkcode MAX_EVENT_ERRORS} errors and that count a rejection lists, a share is over 150
 * characters, room for far more than the 3 of JSON the smallest cut, `…` alone, takes.
 */
function shortenedWithin(rejection: Rejection, budget: number): string {
  const text = JSON.stringify(withQuotes(rejection, (field) => quoteInput(field)));
  if (text.length <= budget) return text;
  // Each path and message, its quotation marks included, within its share: what they take in all
  // is at most what the rest leaves.
  const fields = 2 * rejection.errors.length;
  const rest = JSON.stringify(withQuotes(rejection, () => "")).length - 2 * fields;
  const share = Math.floor((budget - rest) / fields);
  return JSON.stringify(withQuotes(rejection, (field) => quotedWithin(field, share)));
}

/** `rejection` with each error's path and message as `quote` gives it. */
function withQuotes(rejection: Rejection, quote: (field: string) => string): Rejection {
  const errors = rejection.errors.map((error) => ({
    path: quote(error.path),
    message: quote(error.message),
  }));
  return { ...rejection, errors };
}

/**
 * `text` quoted with as many of its characters (code points, as `quoteInput` counts them) as keep
 * its JSON within `chars`: whole, or its first characters and `…` alone. No count: a path may
 * hold a key cut already with its own (`aaa… (302 characters)`), which a count of the path's
 * characters would be read as. The smallest cut, `…` alone, is 3 characters of JSON (`""` for an
 * empty text, 2), and {@linkcode shortenedWithin} gives each text over 150.
 */
function quotedWithin(text: string, chars: number): string {
  const quote = (max: number) => {
    const quoted = quoteInput(text, max);
    return quoted === text ? text : quoted.slice(0, quoted.lastIndexOf("… (") + 1);
  };
  const fits = (max: number) => JSON.stringify(quote(max)).length <= chars;
  // The JSON grows with `max` (each character takes at least one character of JSON, as much as
  // the `…` it takes the place of): the largest that fits, found by halving, each step one quote.
  // The quotation marks take two.
  let low = 0;
  let high = Math.max(0, Math.min(256, chars - 2));
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (fits(middle)) low = middle;
    else high = middle - 1;
  }
  return quote(low);
}

/** Why a request with an `Idempotency-Key` was not applied. */
export type IdempotencyProblem = "conflict" | "in_flight";

/** A request's `Idempotency-Key` was reused with another body, or is still being processed. */
export class IdempotencyError extends Error {
  /** `conflict`: the key came with another body; `in_flight`: the first request is not done. */
  readonly problem: IdempotencyProblem;

  constructor(problem: IdempotencyProblem, message: string) {
    super(message);
    this.name = "IdempotencyError";
    this.problem = problem;
  }
}

/** A rate limit of an ingest request: a store bucket with a name clients see. */
export interface IngestRateLimit extends Omit<RateLimitClaim, "cost"> {
  /** What clients call it (`stream`, `key`): the policy name in the `RateLimit` header fields. */
  name: string;
  /** What the limit is on, for the error message (`stream 'orders'`). */
  subject: string;
}

/**
 * The events a second `limit` refills: its `eventsPerSecond` as configured, which its bucket's
 * `windowMs` (burst × 1000 / rate) holds only up to a rounding error (7/s with a burst of 10 came
 * back as 6.999999999999999), so the error is cut at 12 significant digits.
 */
export function eventsPerSecondOf(limit: Pick<IngestRateLimit, "limit" | "windowMs">): number {
  return Number(((limit.limit * 1000) / limit.windowMs).toPrecision(12));
}

/**
 * The whole seconds `limit`'s bucket takes to refill from empty (the `w` of the `RateLimit-Policy`
 * field), at least 1: burst / rate rounded up, after cutting the rounding error of its `windowMs`
 * (a burst of 21 at 0.7/s is 30 s, not 31).
 */
export function refillSecondsOf(limit: Pick<IngestRateLimit, "windowMs">): number {
  return Math.max(1, Math.ceil(Number((limit.windowMs / 1000).toPrecision(12))));
}

/** A request did not fit in its rate limit; nothing was applied. */
export class RateLimitedError extends Error {
  /** When (ms from now) it would fit. */
  readonly retryAfterMs: number;
  /** The limit that refused it, when known. */
  readonly limit?: IngestRateLimit;
  /** Whole tokens that limit holds now. */
  readonly remaining: number;
  /** The request has more events than that limit's burst: it fits at no time, only split. */
  readonly neverFits: boolean;

  constructor(
    message: string,
    retryAfterMs: number,
    options: { limit?: IngestRateLimit; remaining?: number; neverFits?: boolean } = {},
  ) {
    super(message);
    this.name = "RateLimitedError";
    this.retryAfterMs = retryAfterMs;
    this.limit = options.limit;
    this.remaining = options.remaining ?? 0;
    this.neverFits = options.neverFits ?? false;
  }
}

/**
 * Whether every observer is idle for a batch of `stream` applied now (see `IngestObserver.idle`).
 * Asked after the apply: one that gained work while it ran (a subscriber came) is told of it.
 */
function allIdle(observers: readonly IngestObserver[], stream: CompiledStream): boolean {
  for (const observer of observers) {
    if (!observer.idle?.(stream)) return false;
  }
  return true;
}

/** Tells each observer about an applied batch; one that throws is logged and the rest told. */
function notifyObservers(observers: readonly IngestObserver[], batch: AppliedBatch): void {
  // What they start (alerts, live, webhooks) runs outside this request's trace and log context
  // (one context for all of them: a request pays for one); a throw now, though, fails while the
  // request is served, and is logged with it.
  const failures = detached(() => {
    const thrown: unknown[] = [];
    for (const observer of observers) {
      try {
        observer(batch);
      } catch (error) {
        thrown.push(error);
      }
    }
    return thrown;
  });
  for (const error of failures) {
    logger.error("Ingest observer failed on stream {stream}: {error}", {
      stream: batch.stream.name,
      error,
    });
  }
}

/** Longest `Idempotency-Key` accepted, in characters. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

/** Why an `Idempotency-Key` is not acceptable, or null when it is. */
export function idempotencyKeyProblem(key: string): string | null {
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    return `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters, got ${key.length}`;
  }
  if (!/^[\x21-\x7e]+$/.test(key)) {
    return "Idempotency-Key must be printable ASCII without spaces";
  }
  return null;
}

/**
 * SHA-256 as lowercase hex. Synchronous `node:crypto`, not `crypto.subtle`: for a key and a
 * small body the asynchronous WebCrypto call costs ~25 µs each, more than the rest of a
 * single-event request.
 */
function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Runs a parsed body through the pipeline and applies it to the store in one
 * atomic step (shared with concurrent requests of the stream through
 * `groupCommit`, when given). The items' values are its own: a transform may change them.
 * Throws what the store throws (e.g. `StoreUnavailableError`, whose `outcome` says whether it
 * may have applied), an
 * {@linkcode IdempotencyError} or a {@linkcode RateLimitedError} (nothing
 * applied).
 *
 * With an idempotency key, the store keeps the reply for the stream's
 * `idempotencyTtl` when the request applied: the same key and body again get
 * that reply (`replayed: true`) and apply nothing; the same key with another
 * body is a conflict; and while a request with the key is still in progress
 * on this process (`inFlight`), another is refused as in flight.
 */
export function ingestItems(
  stream: CompiledStream,
  items: readonly BodyItem[],
  options: IngestOptions,
): Promise<IngestReply> {
  // Most requests have no key: no async frame of this function around the apply.
  if (options.idempotency === undefined) return ingestOnce(stream, items, options);
  return ingestOnceWithKey(stream, items, options, options.idempotency.key);
}

/** {@linkcode ingestItems} of a request with an `Idempotency-Key`: one at a time per key here. */
async function ingestOnceWithKey(
  stream: CompiledStream,
  items: readonly BodyItem[],
  options: IngestOptions,
  key: string,
): Promise<IngestReply> {
  const inFlightKey = `${stream.name}\u0000${key}`;
  if (options.inFlight?.has(inFlightKey)) {
    throw new IdempotencyError(
      "in_flight",
      `A request with Idempotency-Key '${key}' is still being processed; retry when it is done`,
    );
  }
  options.inFlight?.add(inFlightKey);
  try {
    return await ingestOnce(stream, items, options);
  } finally {
    options.inFlight?.delete(inFlightKey);
  }
}

/**
 * The error of a request the store refused for its rate limits: waiting for the bucket the
 * store names, or, when the request has more events than a limit's burst (it fits at no time,
 * whatever the store waits for), naming the smallest such burst.
 */
function rateLimited(
  limits: readonly IngestRateLimit[],
  cost: number,
  outcome: { claim: number; retryAfterMs: number; remaining: number },
): RateLimitedError {
  const { retryAfterMs, remaining } = outcome;
  const tooSmall = limits.filter((limit) => cost > limit.limit)
    .sort((a, b) => a.limit - b.limit)[0];
  const limit = tooSmall ?? limits[outcome.claim];
  const perSecond = limit ? eventsPerSecondOf(limit) : 0;
  const rule = limit
    ? `Rate limit of ${limit.subject} (${perSecond} events/s, burst ${limit.limit})`
    : "Rate limit";
  if (tooSmall) {
    return new RateLimitedError(
      `${rule} reached: this request's ${cost} events are more than its burst of ${limit.limit}, so it can never fit (nothing applied): send at most ${limit.limit} events per request`,
      retryAfterMs,
      // What that bucket holds is not known here: the store reported the one it waits for.
      { limit, neverFits: true },
    );
  }
  const reason = `it holds ${remaining} ${
    remaining === 1 ? "event" : "events"
  } now, fewer than this request's ${cost}; the request was refused whole (nothing applied): retry in ${retryAfterMs} ms`;
  return new RateLimitedError(`${rule} reached: ${reason}`, retryAfterMs, { limit, remaining });
}

/**
 * A {@linkcode Rejection}, with its `line` only when the body was NDJSON. Its errors list at most
 * {@linkcode MAX_EVENT_ERRORS} and then, past them, how many more it had: the validator ends its
 * list so (`maxErrors`, see {@linkcode validatorOf}), the counters' go through `listedErrors` (see
 * {@linkcode prepare}) as any other source of more than one error must, and every other refusal
 * has one error.
 */
function rejection(index: number, line: number | undefined, errors: FieldError[]): Rejection {
  return line === undefined ? { index, errors } : { index, line, errors };
}

async function ingestOnce(
  stream: CompiledStream,
  items: readonly BodyItem[],
  options: IngestOptions,
): Promise<IngestReply> {
  const { store, nowMs } = options;
  const withPayload = Boolean(options.log?.processed || options.log?.late);
  const rejected: Rejection[] = [];
  // Room for every item at once, cut to the events kept below: an array grown by `push` copies
  // itself four times on the way to 100 and leaves those copies to the collector.
  const events: BatchEvent[] = new Array(items.length);
  let kept = 0;
  let filtered = 0;
  const width = stream.counters.length;
  // Room for every item's entries at once: arrays grown entry by entry copy themselves as they go.
  const room = items.length * width;
  const updates: BatchUpdates = {
    panes: new Array(room),
    groups: new Array(room),
    values: new Array(room),
  };
  // One budget of schema checks for the request's events (an HTTP batch, a WebSocket frame), and
  // one of compiling the patterns they give matches(): past either the rest are refused, each
  // event's own bounds aside. A retry after `StreamChangedError` gets budgets of its own (at most
  // twice the work): continuing the first pass's would cut a request within them for a race with
  // an admin's change.
  const context = {
    nowMs,
    withPayload,
    validate: validatorOf(stream.schema),
    budget: new RequestCheckBudget(),
    transform: { inPlace: true, patterns: new RequestPatternBudget() },
    updates,
    at: 0,
  };
  // The index of the event that a budget cut the request at (refused with the budget's whole
  // message), or -1: each later one is refused unjudged with a short message naming it.
  let cutAt = -1;
  let cutMessage = checkBudgetCutMessage;
  for (let index = 0; index < items.length; index++) {
    const item = items[index];
    if (!item.ok) {
      rejected.push(rejection(index, item.line, [item.error]));
      continue;
    }
    if (cutAt >= 0) {
      rejected.push(
        rejection(index, item.line, [{ path: "", message: cutMessage(cutAt) }]),
      );
      continue;
    }
    // A refused event's entries are written over by the next event's, or cut below.
    context.at = kept * width;
    const prepared = prepare(stream, item.value, context);
    // Cut by this event (its schema checks, or a pattern its transform compiled): each later one is
    // refused with a short message naming it.
    if (context.budget.cut) cutAt = index;
    else if (context.transform.patterns.cut) {
      cutAt = index;
      cutMessage = patternBudgetCutMessage;
    }
    if (prepared === null) filtered += 1;
    else if (Array.isArray(prepared)) rejected.push(rejection(index, item.line, prepared));
    else events[kept++] = prepared;
  }
  if (kept < events.length) events.length = kept;
  const size = kept * width;
  if (size < room) {
    updates.panes.length = size;
    updates.groups.length = size;
    updates.values.length = size;
  }
  const accepted = events.length + filtered;
  const reply: IngestReply = { accepted, duplicates: 0, late: 0, filtered, rejected };
  if (accepted === 0) {
    // Counted later, off this request's path: its 400 never waits for, nor depends on, the store.
    if (rejected.length > 0) options.rejectedCounts?.add(stream, rejected.length);
    return reply;
  }

  const request: BatchRequest = { events: events.length, filtered, rejected: rejected.length };
  const idempotency = options.idempotency;
  if (idempotency) {
    request.idempotency = {
      keyHash: sha256Hex(idempotency.key),
      bodyHash: sha256Hex(idempotency.body),
      ttlMs: stream.idempotencyTtlMs,
      reply: storedReply(accepted, filtered, rejected),
    };
  }
  if (options.rateLimits?.length) {
    request.rateLimits = options.rateLimits.map(({ key, limit, windowMs }) => ({
      key,
      limit,
      windowMs,
      cost: accepted,
    }));
  }
  // An apply that serves this request with others links to its span.
  attachIngestSpan(request);
  const result = await (options.groupCommit ?? store).applyBatch({
    stream: stream.name,
    nowMs,
    latenessMs: stream.latenessMs,
    idleMs: stream.idleMs,
    dedupeTtlMs: stream.dedupe?.ttlMs ?? 0,
    counters: stream.counterMetas,
    events,
    updates,
    requests: [request],
    log: withPayload ? options.log : undefined,
  });
  const outcome = result.requests[0];
  switch (outcome.status) {
    case "replayed":
      return {
        ...(JSON.parse(outcome.reply) as Omit<IngestReply, "duplicates" | "late">),
        duplicates: outcome.duplicates,
        late: outcome.late,
        replayed: true,
      };
    case "conflict":
      throw new IdempotencyError(
        "conflict",
        `Idempotency-Key '${idempotency?.key}' was used with another body within the last ${
          formatDuration(stream.idempotencyTtlMs)
        }`,
      );
    case "in_flight":
      throw new IdempotencyError(
        "in_flight",
        `A request with Idempotency-Key '${idempotency?.key}' is still being processed`,
      );
    case "rate_limited":
      throw rateLimited(options.rateLimits ?? [], accepted, outcome);
  }
  if (options.observers?.length && !allIdle(options.observers, stream)) {
    const logged = { processed: options.log?.processed ?? false, late: options.log?.late ?? false };
    const batch = {
      stream,
      events,
      updates,
      outcomes: result.outcomes,
      nowMs,
      demand: result.demand,
      logged,
    };
    notifyObservers(options.observers, batch);
  }
  reply.duplicates = outcome.duplicates;
  reply.late = outcome.late;
  return reply;
}
