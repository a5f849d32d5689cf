/**
 * Ingest over WebSocket (`GET /v1/streams/{stream}/ws`): each text frame
 * carries what an HTTP ingest body carries, runs through the same
 * {@linkcode ingestItems} and is answered, in order, once the store applied
 * it.
 *
 * Frames: one event, an array of events, or NDJSON lines; optionally wrapped
 * as `{"seq": n, "idempotencyKey": "…", "events": [...]}` (an object whose
 * only keys are `seq`, `idempotencyKey` and `events`; the key works as HTTP's
 * `Idempotency-Key`, over the frame's events; an envelope is a frame of its own, and NDJSON with
 * one as a line is refused). Replies:
 * - `{"type": "ack", "seq", "accepted", "duplicates", "late", "filtered", "rejected"}`; a replay
 *   of a frame's `idempotencyKey` adds `"replayed": true`, and `rejectedOmitted` when its stored
 *   `rejected` was shortened
 * - `{"type": "error", "seq", "retryable", "error": {"code", "message", "requestId"}}` for
 *   a frame that cannot be read or whose key was reused with other events
 *   (`retryable: false`), or one not counted because the store is
 *   unavailable (`details.outcome` says whether it may have applied), its key
 *   is in flight, the rate limit is reached (`details.retryAfterMs`: the whole ms until it
 *   fits), or the connection is closing for
 *   a protocol error (`retryable: true`: resend the frame; event ids or its
 *   `idempotencyKey` keep a resend from counting twice). `requestId` is the
 *   upgrade request's `X-Request-Id`, as in HTTP error bodies.
 *
 * `seq` is the frame's own `seq`, else its number on the connection (1, 2, …).
 *
 * Back pressure: a client may have `maxFramesInFlight` frames unacknowledged.
 * A Deno WebSocket cannot stop reading its socket, so frames past that window
 * are held, unread, until acks catch up, up to `maxFramesQueued` in all; one
 * more is a protocol error (1008, below). A connection therefore never holds
 * more than `maxFramesQueued` frames of at most `maxFrameBytes` each.
 *
 * Bounds: a key (a run-time key by its id, publishable ones too; an environment key by its
 * digest; in open mode a client address) holds at most `slots.perKey` connections on this
 * process, the process at most `slots.perProcess` (`connection_slots.ts`, a pool apart from the
 * live subscriptions'). One more is refused before the upgrade (429 `too_many_ingest_sockets`,
 * 503 `ingest_sockets_full`); a connection's place is freed by its close event, however it ends,
 * or at once when the upgrade fails.
 *
 * Close codes: 1003 binary frame, 1009 frame over `maxFrameBytes` (one over 64 MiB, Deno's own
 * bound, or a text frame that is not UTF-8, has Deno end the connection: no close frame, as a
 * dropped connection), 1008 bad or
 * missing key (before any frame is read; its connection dropped if the client has not answered
 * the close frame after `refusedCloseMs`) or too many frames in flight, 1001
 * no answer to the idle ping or the server shutting down, 1011 a bug in the
 * server. A client that has not answered any other close frame of the server `closeGraceMs`
 * after it was sent has its connection dropped, freeing its place.
 *
 * What happens to the frames a connection holds when it ends:
 * - A protocol error (1003, 1009, 1008 too many frames) answers every frame
 *   read before the bad one, in order, and only then closes: the frame the
 *   store is applying is answered as usual (ack, or error); each frame not yet
 *   started is not applied and gets `{"type": "error", "retryable": true,
 *   "error": {"code": "connection_closing"}}`. The bad frame and any after it
 *   are dropped: not applied, not answered. So after such a
 *   close, the frames without an answer, and those answered `retryable: true`,
 *   were not counted and may be sent again.
 * - The server shutting down (see `open_connections.ts`) ends the connection
 *   the same way, with 1001: every frame read is answered, then it closes;
 *   frames that arrive meanwhile are dropped unanswered.
 * - The client closing first, a missed pong (1001) or a dropped connection
 *   leave no one to answer: frames not yet started are dropped, not applied;
 *   the one frame the store is applying, if any, still completes and may be
 *   counted with no ack. The same holds for 1011. Resend every frame without
 *   an answer (event ids dedupe the one that counted); to end without doubt,
 *   wait for the last answer before closing.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Context } from "hono";
import { WSContext, type WSEvents, type WSReadyState } from "hono/ws";
import { type CompiledStream, lookUpStream } from "../config/mod.ts";
import {
  authorize,
  HOW_TO_SEND_FROM_BROWSER,
  type KeyRing,
  listedTo,
  noteKeyInQuery,
  presentedKey,
  slotHolder,
} from "./auth.ts";
import { originOf, rateLimitsFor, refuseOrigin } from "./browser.ts";
import { ApiError, apiErrorOf, type ErrorCode, noEventsAccepted, streamMissing } from "./errors.ts";
import { upgradeAsksForWebSocket } from "./_header_list.ts";
import { closeWithin, RefusedSockets } from "./_drop_socket.ts";
import { deferredOriginRefusal } from "./origin.ts";
import { requestIdOf } from "./request_id.ts";
import { logFrame } from "./request_log.ts";
import type { HeldConnection, OpenConnections } from "./open_connections.ts";
import {
  type ConnectionSlot,
  ConnectionSlots,
  SlotLimitError,
  type SlotLimits,
} from "./connection_slots.ts";
import { type Store, StreamChangedError } from "../store/types.ts";
import {
  activeSpanLinks,
  type IngestScope,
  type IngestSpanOptions,
  recordIngestSocketRefused,
  traceIngest,
} from "../telemetry/mod.ts";
import {
  BodyError,
  type BodyLimits,
  DEFAULT_LIMITS,
  ENVELOPE_KEYS,
  eventsOfJson,
  hasEnvelopeShape,
  parseEvents,
  utf8Length,
  withoutByteOrderMark,
} from "./body.ts";
import {
  type BodyItem,
  idempotencyKeyProblem,
  type IngestContext,
  ingestCountsOf,
  ingestItems,
  type IngestRateLimit,
  type IngestReply,
} from "../ingest/mod.ts";
import { quoteInput } from "../telemetry/logging.ts";

/** A frame read by {@linkcode readFrame}: its events, or why it cannot be read. */
export type Frame =
  | {
    ok: true;
    seq?: number;
    items: BodyItem[];
    /** The envelope's `idempotencyKey`, with its events' JSON text to tell a retry from a reuse. */
    idempotency?: { key: string; body: string };
  }
  | { ok: false; seq?: number; error: { code: ErrorCode; message: string; details?: unknown } };

type Envelope = { seq?: unknown; events?: unknown; idempotencyKey?: unknown };

/**
 * Whether a frame's JSON is the envelope, one event, or an envelope that
 * cannot be read (the problem). An object is the envelope when it has
 * `events` and no other keys than `seq` and `idempotencyKey`. One that has
 * `events` with `seq` or `idempotencyKey` and another key, or
 * `idempotencyKey` without `events`, is refused rather than counted as one
 * event (its events would be lost unseen); an event with such fields goes in
 * an array.
 */
function envelopeKind(value: unknown): "event" | "envelope" | { problem: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "event";
  const has = (key: string) => Object.hasOwn(value, key);
  if (!has("events")) {
    return has("idempotencyKey")
      ? {
        problem:
          "Frame has 'idempotencyKey' but no 'events': the envelope is {seq?, idempotencyKey?, events}; send an event with such a field in an array",
      }
      : "event";
  }
  if (hasEnvelopeShape(value)) return "envelope";
  const other = Object.keys(value).find((key) => !ENVELOPE_KEYS.has(key))!;
  if (!has("seq") && !has("idempotencyKey")) return "event";
  return {
    problem: `Frame envelope has a field '${
      other.slice(0, 64)
    }' it does not take: the envelope is {seq?, idempotencyKey?, events}; send an event with such fields in an array`,
  };
}

/**
 * Refuses NDJSON whose line is an envelope (or a broken one): it would count as one event and its
 * events be lost unseen, as a frame that is such an object would; an envelope is a frame of its own.
 */
function refuseEnvelopeLines(items: readonly BodyItem[]): void {
  for (const [index, item] of items.entries()) {
    if (!item.ok || envelopeKind(item.value) === "event") continue;
    throw new ApiError(
      400,
      "invalid_body",
      `Frame line ${
        item.line ?? index + 1
      } has an envelope's fields (seq, idempotencyKey, events): an envelope is a frame of its own, not an NDJSON line; send an event with such fields in an array`,
    );
  }
}

/** A frame field's value as a problem shows it: JSON, but a number as itself (1e400: Infinity, not null). */
function shownValue(value: unknown): string {
  return typeof value === "number" ? String(value) : JSON.stringify(value);
}

/**
 * What tells an envelope's events from others for its `idempotencyKey`: their JSON, which a
 * resend with another `seq` or other whitespace keeps, and where a number out of a double's range
 * (`1e400`, read as Infinity) is written as null; so when one is there, which of the nulls were
 * such numbers follows, or a frame whose event had `1e400` (refused) and its resend with `null`
 * there (accepted) would count as the same events, and the resend be answered the first ack
 * without being applied.
 */
function eventsIdentity(events: unknown): string {
  const json = JSON.stringify(events) ?? "";
  // Such a number is written as null: without one, nothing was.
  if (!json.includes("null")) return json;
  // Every value written as null, in one fixed order: `0` null, `+`/`-` an infinity. Two values of
  // the same JSON have their nulls at the same places, so the marks tell them apart. A loop, not
  // recursion: a frame may nest as deep as JSON.parse reads (far past the stack).
  let marks = "";
  let infinite = false;
  const pending: unknown[] = [events];
  while (pending.length > 0) {
    const value = pending.pop();
    if (value === null) marks += "0";
    else if (typeof value === "number" && !Number.isFinite(value)) {
      marks += value > 0 ? "+" : "-";
      infinite = true;
    } else if (typeof value === "object") {
      for (const item of Object.values(value as object)) pending.push(item);
    }
  }
  // JSON.stringify writes no line break, so the marks after one cannot be confused with it.
  return infinite ? `${json}\n${marks}` : json;
}

/**
 * Reads one text frame: JSON (one event, an array, or the `{"seq", "events"}`
 * envelope) or, when it is not JSON and has several lines, NDJSON. Limits as
 * for HTTP bodies, and as there a leading byte order mark is not part of it.
 */
export function readFrame(frameText: string, limits: BodyLimits = {}): Frame {
  const text = withoutByteOrderMark(frameText);
  let seq: number | undefined;
  try {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      const lines = text.split("\n").filter((line) => line.trim() !== "");
      // parseEvents refuses what is neither, with the HTTP body's messages.
      const items = parseEvents(text, lines.length > 1 ? "ndjson" : "json", limits);
      refuseEnvelopeLines(items);
      return { ok: true, items };
    }
    const kind = envelopeKind(value);
    if (kind === "event") return { ok: true, items: eventsOfJson(value, text, limits) };
    const envelope = value as Envelope;
    if (envelope.seq !== undefined) {
      if (
        typeof envelope.seq !== "number" || !Number.isSafeInteger(envelope.seq) || envelope.seq < 0
      ) {
        throw new ApiError(
          400,
          "invalid_seq",
          `Frame 'seq' must be a non-negative integer, got ${shownValue(envelope.seq)}`,
        );
      }
      seq = envelope.seq;
    }
    if (kind !== "envelope") throw new ApiError(400, "invalid_body", kind.problem);
    let idempotency: { key: string; body: string } | undefined;
    if (envelope.idempotencyKey !== undefined) {
      const key = envelope.idempotencyKey;
      const problem = typeof key === "string"
        ? idempotencyKeyProblem(key)
        : `Frame 'idempotencyKey' must be a string, got ${shownValue(key)}`;
      if (problem) throw new ApiError(400, "invalid_idempotency_key", problem);
      idempotency = { key: key as string, body: eventsIdentity(envelope.events) };
    }
    const events = envelope.events;
    const eventsText = Array.isArray(events) ? text : JSON.stringify(events) ?? "";
    const items = eventsOfJson(events, eventsText, limits);
    return idempotency ? { ok: true, seq, items, idempotency } : { ok: true, seq, items };
  } catch (error) {
    if (error instanceof BodyError || error instanceof ApiError) {
      const { code, message, details } = error;
      return {
        ok: false,
        seq,
        error: details === undefined ? { code, message } : { code, message, details },
      };
    }
    throw error;
  }
}

/** A reply to one frame. */
export type FrameReply =
  | ({ type: "ack"; seq: number } & IngestReply)
  | {
    type: "error";
    seq: number;
    retryable: boolean;
    error: { code: ErrorCode; message: string; details?: unknown; requestId?: string };
  };

/** Counts of the WebSocket ingest connections, for monitoring and tests. */
export interface IngestSocketStats {
  /** Open, authorized connections. */
  connections: number;
  /** Frames received and not yet answered, over all connections. */
  framesQueued: number;
  /** Their size in bytes. */
  bytesQueued: number;
  /** Most frames ever queued on one connection. */
  peakFramesQueued: number;
  /**
   * Connections closing for a protocol error or a shutdown, answering the
   * frames they hold before they close.
   */
  closing: number;
  /**
   * Places taken in the bounds per key and per process (`slots`): connections open or being
   * upgraded, a denied key's not counted.
   */
  slotsHeld: number;
}

/** Zeroed {@linkcode IngestSocketStats}. */
export function ingestSocketStats(): IngestSocketStats {
  return {
    connections: 0,
    framesQueued: 0,
    bytesQueued: 0,
    peakFramesQueued: 0,
    closing: 0,
    slotsHeld: 0,
  };
}

/** Options for {@linkcode ingestSocketHandler}. */
export interface IngestSocketOptions {
  /** Frames a client may send before it waits for acks. @default {8} */
  maxFramesInFlight?: number;
  /**
   * Frames a connection holds at most (in flight plus held past the window);
   * one more closes it with 1008. @default {2 * maxFramesInFlight}
   */
  maxFramesQueued?: number;
  /** Largest frame in bytes; a larger one closes with 1009. @default {limits.maxBodyBytes} */
  maxFrameBytes?: number;
  /**
   * Seconds without traffic after which a client that answers no ping is
   * closed (1001); Deno pings at half of it. `0` turns pings off.
   * @default {30}
   */
  idleTimeoutSeconds?: number;
  /** Counts to keep up to date. @default {a private one} */
  stats?: IngestSocketStats;
  /**
   * Bytes of answers waiting to be sent past which no further frame is applied until the
   * client reads them. @default {1048576}
   */
  maxBufferedBytes?: number;
  /** How long (ms) the answers may stay unread past `maxBufferedBytes` before a 1008 close. @default {10000} */
  maxUnreadMs?: number;
  /**
   * How long (ms) a connection closing for a protocol error or a shutdown lingers between its last
   * answer and its close frame, reading and dropping what the client still sends. @default {100}
   */
  closeLingerMs?: number;
  /**
   * How long (ms) a connection refused for its key (upgraded to be closed with 1008) waits for its
   * client to answer the close frame before it is dropped: it holds no place, so nothing else
   * bounds it. @default {5000}
   */
  refusedCloseMs?: number;
  /**
   * How long (ms) a connection the server closes (a protocol error, answers left unread, a
   * shutdown, an internal error) waits for its client to answer the close frame before its
   * connection is dropped, freeing its place: long enough for a slow reader to read what waits
   * before the close frame and answer it. @default {10000}
   */
  closeGraceMs?: number;
  /**
   * Most connections per key (in open mode per client address) and per process; past them an
   * upgrade is refused (429 `too_many_ingest_sockets`, 503 `ingest_sockets_full`).
   * @default {{ perKey: 100, perProcess: 10000 }}
   */
  slots?: SlotLimits;
  /**
   * The refused connections (upgraded to be closed with 1008) held at once; at its bound a refusal
   * is answered before the upgrade (401, 403). Through the live routes, the one subscriptions use
   * too (`LiveRouteOptions.refusedSockets`).
   * @default {one of 1000}
   */
  refusedSockets?: RefusedSockets;
}

/** What {@linkcode ingestSocketHandler} needs from the app. */
export interface IngestSocketDeps {
  /** Compiled streams by name. */
  streams: ReadonlyMap<string, CompiledStream>;
  /** Where state lives. */
  store: Store;
  /** API keys; an empty ring means open development mode. */
  keys: KeyRing;
  /** Clock (ms). */
  now: () => number;
  /** Body limits, applied per frame. */
  limits: Required<BodyLimits>;
  /** Ingest options for a stream, as HTTP ingest gets them. */
  ingestOptions(stream: string): IngestContext;
  /**
   * Where connections are held for a shutdown; once it closes, upgrades are
   * refused (503). @default {a private one}
   */
  connections?: OpenConnections;
}

const logger = getLogger(["edgestream", "http", "ws"]);

/**
 * Errors after which the same frame may succeed if sent again: the store unavailable, its
 * Idempotency-Key still in flight, a rate limit that refills (not one whose burst the frame
 * passes: that is `too_many_events`).
 */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set([
  "store_unavailable",
  "stream_changed",
  "key_lookup_busy",
  "idempotency_key_in_flight",
  "rate_limited",
  "stream_lookup_busy",
]);

/** Longest close reason a WebSocket close frame carries, in bytes. */
const MAX_REASON_BYTES = 123;

/** Cuts a close reason to the 123 bytes a close frame can carry. */
export function closeReason(text: string): string {
  let reason = text;
  while (utf8Length(reason) > MAX_REASON_BYTES) reason = reason.slice(0, -1);
  // A cut between the halves of a surrogate pair would leave half a character, sent as U+FFFD.
  if (reason.length < text.length && /[\uD800-\uDBFF]$/.test(reason)) reason = reason.slice(0, -1);
  return reason;
}

/** The settings of {@linkcode ingestSocketHandler}: its options with their defaults filled in. */
export type IngestSocketSettings = Required<Omit<IngestSocketOptions, "slots" | "refusedSockets">>;

/** Fills in the defaults of `options`, as {@linkcode ingestSocketHandler} does. */
export function ingestSocketSettings(
  limits: BodyLimits,
  options: IngestSocketOptions = {},
): IngestSocketSettings {
  const maxFramesInFlight = options.maxFramesInFlight ?? 8;
  return {
    stats: options.stats ?? ingestSocketStats(),
    maxFramesInFlight,
    maxFramesQueued: options.maxFramesQueued ?? 2 * maxFramesInFlight,
    maxFrameBytes: options.maxFrameBytes ?? limits.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes,
    maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
    maxUnreadMs: options.maxUnreadMs ?? 10_000,
    closeLingerMs: options.closeLingerMs ?? 100,
    refusedCloseMs: options.refusedCloseMs ?? 5_000,
    closeGraceMs: options.closeGraceMs ?? 10_000,
    idleTimeoutSeconds: options.idleTimeoutSeconds ?? 30,
  };
}

interface QueuedFrame {
  text: string;
  bytes: number;
  number: number;
}

/**
 * Where a frame goes: the stream as served now and the rate limits it must fit
 * in (the stream's, the key's). Asked per frame, with the key checked again
 * (its verdict is cached), so a key deleted or a stream deleted or changed at
 * run time applies to open sockets too.
 */
interface FrameTarget {
  stream: CompiledStream;
  rateLimits: readonly IngestRateLimit[];
}

/** One WebSocket ingest connection: reads frames in order, one at a time. */
class IngestConnection implements HeldConnection {
  #deps: IngestSocketDeps;
  #target: () => Promise<FrameTarget>;
  #stream: CompiledStream;
  #requestId: string | undefined;
  #path: string;
  #socket: WSContext;
  #stats: IngestSocketStats;
  #maxFramesQueued: number;
  #maxFramesInFlight: number;
  #maxFrameBytes: number;
  #maxBufferedBytes: number;
  #maxUnreadMs: number;
  #queue: QueuedFrame[] = [];
  #received = 0;
  #draining = false;
  /** The drain in progress (a frame the store may be applying), if any. */
  #drained: Promise<void> = Promise.resolve();
  /** How long (ms) a closing connection lingers after its last answer (`closeLingerMs`). */
  #closeLingerMs: number;
  /** How long (ms) the client may take to answer the close frame before it is dropped. */
  #closeGraceMs: number;
  /** The close a protocol error asked for, sent once every frame held is answered. */
  #closing: { code: number; reason: string; lingerMs: number } | undefined;
  #lingering: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #ended = Promise.withResolvers<void>();
  #upgrade: IngestSpanOptions["links"];

  constructor(
    deps: IngestSocketDeps,
    stream: CompiledStream,
    socket: WSContext,
    settings: IngestSocketSettings & {
      /** The upgrade request's id, for error frames and log lines. */
      requestId?: string;
      /** The upgrade request's path, for each frame's log line. */
      path?: string;
      /** A link to the upgrade request's span, which each frame's own trace carries. */
      upgrade?: IngestSpanOptions["links"];
      /** Where each frame goes, asked again per frame (see {@linkcode FrameTarget}). */
      target: () => Promise<FrameTarget>;
    },
  ) {
    this.#target = settings.target;
    this.#deps = deps;
    this.#stream = stream;
    this.#requestId = settings.requestId;
    this.#path = settings.path ?? "";
    this.#upgrade = settings.upgrade ?? [];
    this.#socket = socket;
    this.#stats = settings.stats;
    this.#maxFramesInFlight = settings.maxFramesInFlight;
    this.#maxFramesQueued = settings.maxFramesQueued;
    this.#maxFrameBytes = settings.maxFrameBytes;
    this.#maxBufferedBytes = settings.maxBufferedBytes;
    this.#maxUnreadMs = settings.maxUnreadMs;
    this.#closeLingerMs = settings.closeLingerMs;
    this.#closeGraceMs = settings.closeGraceMs;
  }

  receive(data: unknown): void {
    // Frames after a protocol error go unanswered, or a client could keep a closing connection open.
    if (this.#closed || this.#closing) return;
    if (typeof data !== "string") {
      this.#fail(1003, "Binary frames are not supported: send JSON text");
      return;
    }
    // UTF-8 takes at least one byte per UTF-16 unit and at most three.
    const bytes = data.length * 3 <= this.#maxFrameBytes ? 0 : utf8Length(data);
    if (bytes > this.#maxFrameBytes) {
      this.#fail(1009, `Frame is ${bytes} bytes; the limit is ${this.#maxFrameBytes} bytes`);
      return;
    }
    if (this.#queue.length >= this.#maxFramesQueued) {
      this.#fail(
        1008,
        `Too many frames in flight: ${this.#queue.length} unacknowledged; wait for acks, at most ${this.#maxFramesInFlight}`,
      );
      return;
    }
    this.#received += 1;
    this.#queue.push({ text: data, bytes: data.length, number: this.#received });
    this.#stats.framesQueued += 1;
    this.#stats.bytesQueued += data.length;
    this.#stats.peakFramesQueued = Math.max(this.#stats.peakFramesQueued, this.#queue.length);
    if (!this.#draining) {
      this.#drained = this.#drain().catch((error) => {
        // A bug, not bad input (bad frames get error acks): log it and end this connection only.
        this.#logFailure(error);
        this.close(1011, "Internal error");
      });
    }
  }

  /**
   * Closes for a protocol error once every frame already read is answered: a
   * frame applied with no ack would be counted twice when the client resends it.
   */
  #fail(code: number, reason: string, lingerMs = this.#closeLingerMs): void {
    this.#closing = { code, reason, lingerMs };
    this.#stats.closing += 1;
    // A drain in progress answers the rest of the queue and then closes.
    if (!this.#draining) this.#closeAnswered();
  }

  /** Closes as `#closing` says, once every frame read is answered. */
  #closeAnswered(): void {
    const { code, reason, lingerMs } = this.#closing!;
    if (lingerMs === 0) this.close(code, reason);
    else this.#lingering ??= setTimeout(() => this.close(code, reason), lingerMs);
  }

  /**
   * Answers every frame already read, as for a protocol error, then closes
   * with 1001; resolves once the socket closed (the client saw the close
   * frame, or the connection dropped). Between the last answer and the close
   * it lingers a moment, reading and dropping the frames the client sent
   * before it saw those answers: Deno closes the TCP connection right after
   * the close frame, and frames arriving after that would reset the
   * connection, making the client lose the close frame unread.
   */
  shutDown(reason: string): Promise<void> {
    if (!this.#closed && !this.#closing) this.#fail(1001, reason);
    return this.#ended.promise;
  }

  /**
   * Told by the socket's close event: ends the connection, if not yet. Resolves (as
   * {@linkcode shutDown} does) once the frame the store is applying, if any, is done: it may
   * count, so a stop must not take the connection for ended before (the listener's shutdown
   * closes a socket whose frame waits on a slow store).
   */
  socketClosed(): Promise<void> {
    this.close();
    this.#drained.then(() => this.#ended.resolve());
    return this.#ended.promise;
  }

  /** Ends the connection now; frames still held are dropped, not applied. */
  close(code?: number, reason?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#lingering);
    if (this.#closing) this.#stats.closing -= 1;
    for (const frame of this.#queue) this.#release(frame);
    this.#queue = [];
    if (code !== undefined && this.#socket.readyState < 2) {
      // Sent after the answers already queued. A client that does not answer it (one that reads
      // nothing) would keep the connection, and its place, as long as it likes: dropped after a
      // grace.
      const raw = this.#socket.raw as WebSocket | undefined;
      const closing = { code, reason: closeReason(reason ?? ""), graceMs: this.#closeGraceMs };
      if (raw) closeWithin(raw, closing);
      else this.#socket.close(closing.code, closing.reason);
    }
  }

  #release(frame: QueuedFrame): void {
    this.#stats.framesQueued -= 1;
    this.#stats.bytesQueued -= frame.bytes;
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        // A client that does not read its answers gets no more frames applied until it does: an
        // answer can be far larger than its frame (one rejection per event), and a frame counts
        // as answered once its answer is queued, so the window alone would not bound them.
        if (
          !this.#closing && this.#buffered() > this.#maxBufferedBytes &&
          !(await this.#answersRead())
        ) {
          this.#fail(
            1008,
            `Client too slow: answers waiting to be sent stayed over ${this.#maxBufferedBytes} bytes for ${this.#maxUnreadMs} ms; read them`,
          );
        }
        if (this.#closed) break;
        const frame = this.#queue[0];
        const applying = !this.#closing;
        const reply = applying
          ? await this.#handle(frame)
          : this.#notApplied(frame, this.#closing!.code);
        // The client is gone: nothing can reach it, so the frames after this one are not applied.
        if (this.#closed) {
          // This one may count with no ack: a stop under way reports it.
          if (applying && reply.type === "ack") this.#deps.connections?.noteAnswerCut();
          break;
        }
        this.#queue.shift();
        this.#release(frame);
        if (this.#socket.readyState === 1) this.#socket.send(JSON.stringify(reply));
      }
    } finally {
      this.#draining = false;
    }
    if (this.#closing) this.#closeAnswered();
  }

  /** Bytes of answers waiting to be sent. */
  #buffered(): number {
    return (this.#socket.raw as WebSocket | undefined)?.bufferedAmount ?? 0;
  }

  /**
   * Waits while the answers waiting to be sent are over `maxBufferedBytes`; false when they stay
   * so for `maxUnreadMs`.
   */
  async #answersRead(): Promise<boolean> {
    const deadline = Date.now() + this.#maxUnreadMs;
    while (this.#buffered() > this.#maxBufferedBytes) {
      // Closing (a shutdown, say): the frames held are answered without being applied anyway.
      if (this.#closing) return true;
      if (this.#closed || Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return true;
  }

  #logFailure(error: unknown): void {
    logger.error("WebSocket ingest failed on stream {stream}: {error}", {
      stream: this.#stream.name,
      requestId: this.#requestId,
      error,
    });
  }

  /** An error frame, with the connection's request id. */
  #errorReply(
    seq: number,
    retryable: boolean,
    error: { code: ErrorCode; message: string; details?: unknown },
  ): FrameReply {
    const body: Extract<FrameReply, { type: "error" }>["error"] = {
      code: error.code,
      message: error.message,
    };
    if (error.details !== undefined) body.details = error.details;
    if (this.#requestId !== undefined) body.requestId = this.#requestId;
    return { type: "error", seq, retryable, error: body };
  }

  /**
   * The answer to a frame held when a protocol error arrived: not applied, safe to resend. Logged
   * as every answered frame is, `503` (what HTTP answers a request a stopping server refuses).
   */
  #notApplied(frame: QueuedFrame, code: number): FrameReply {
    const started = performance.now();
    // Read for its own seq only, which the client matches answers by.
    const seq = readFrame(frame.text, this.#deps.limits).seq ?? frame.number;
    const error = new ApiError(
      503,
      "connection_closing",
      `Frame ${seq} was not applied: the connection closes with ${code}; send it again`,
    );
    this.#logFrame(seq, started, { status: 503, error });
    return this.#errorReply(seq, true, error);
  }

  /** Answers one frame, traced as one ingest request. */
  #handle(frame: QueuedFrame): Promise<FrameReply> {
    // Each frame a trace of its own, linked to the upgrade: a connection open for hours would
    // otherwise grow one trace without end.
    return traceIngest(
      { stream: this.#stream.name, transport: "ws" },
      (scope) => this.#answer(frame, scope),
      { root: true, links: this.#upgrade },
    );
  }

  /** Logs the line of a frame answered `status`, as HTTP ingest logs a request's. */
  #logFrame(
    seq: number,
    started: number,
    answer: { status: number; counts?: Record<string, unknown>; error?: unknown },
  ): void {
    logFrame({
      path: this.#path,
      frame: seq,
      durationMs: performance.now() - started,
      requestId: this.#requestId,
      stream: this.#stream.name,
      ...answer,
    });
  }

  async #answer(frame: QueuedFrame, scope: IngestScope): Promise<FrameReply> {
    const started = performance.now();
    const read = readFrame(frame.text, this.#deps.limits);
    const seq = read.seq ?? frame.number;
    if (!read.ok) {
      const refused = new ApiError(400, read.error.code, read.error.message);
      scope.failed(refused);
      this.#logFrame(seq, started, { status: 400, error: refused });
      return this.#errorReply(seq, false, read.error);
    }
    try {
      const ingest = async (items: typeof read.items) => {
        const target = await this.#target();
        this.#stream = target.stream;
        return await ingestItems(target.stream, items, {
          ...this.#deps.ingestOptions(target.stream.name),
          store: this.#deps.store,
          nowMs: this.#deps.now(),
          idempotency: read.idempotency,
          rateLimits: target.rateLimits,
        });
      };
      const reply = await ingest(read.items).catch((error) => {
        if (!(error instanceof StreamChangedError)) throw error;
        // Deleted, created again or given new counters meanwhile, nothing applied: once more on
        // the stream served now (not found when deleted), from the frame's text as it came.
        const again = readFrame(frame.text, this.#deps.limits);
        return ingest(again.ok ? again.items : read.items);
      });
      // The counts HTTP ingest's span and line have: `rejected` as a count.
      const counts = ingestCountsOf(reply);
      scope.answered(counts);
      // A frame that accepted no event is what HTTP answers 400 `no_events_accepted`.
      this.#logFrame(
        seq,
        started,
        reply.accepted === 0
          ? { status: 400, counts, error: noEventsAccepted() }
          : { status: 202, counts },
      );
      return { type: "ack", seq, ...reply };
    } catch (error) {
      scope.failed(error);
      const api = apiErrorOf(error, { ingest: true });
      if (api && !(api.status === 500)) {
        // Unavailable, in flight or rate limited: the same frame may succeed later.
        const retryable = RETRYABLE_CODES.has(api.code);
        this.#logFrame(seq, started, { status: api.status, error });
        // A rate limit's wait is in its details (`retryAfterMs`), as in the HTTP 429's body.
        return this.#errorReply(seq, retryable, api);
      }
      this.#logFrame(seq, started, { status: 500, error });
      return this.#errorReply(seq, false, {
        code: "internal_error",
        message: "Internal server error",
      });
    }
  }
}

/**
 * The handler of `GET /v1/streams/{stream}/ws`. Refuses a request without
 * `Upgrade: websocket` (426) and an unknown stream (404) before upgrading; a
 * missing, unknown or under-scoped key (header, `token` query parameter or
 * `bearer.<key>` subprotocol; scope `ingest`) upgrades and closes with 1008
 * so that browsers can read why, and drops the connection if its client has
 * not answered the close frame after `refusedCloseMs`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { compileConfig } from "../config/mod.ts";
 * import { MemoryStore } from "../store/mod.ts";
 * import { KeyRing } from "./auth.ts";
 * import { DEFAULT_LIMITS } from "./body.ts";
 * import { ingestSocketHandler } from "./ingest_socket.ts";
 *
 * const deps = {
 *   streams: compileConfig({
 *     streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 *   }),
 *   store: new MemoryStore(),
 *   keys: await KeyRing.parse(""),
 *   now: Date.now,
 *   limits: DEFAULT_LIMITS,
 *   ingestOptions: () => ({}),
 * };
 * const app = new Hono();
 * app.get("/v1/streams/:stream/ws", ingestSocketHandler(deps, { maxFramesInFlight: 8 }));
 * ```
 */
export function ingestSocketHandler(
  deps: IngestSocketDeps,
  options: IngestSocketOptions = {},
): (c: Context) => Promise<Response> {
  const settings = ingestSocketSettings(deps.limits, options);
  const idleTimeout = settings.idleTimeoutSeconds;
  const connections = deps.connections;
  const slots = new ConnectionSlots("ingest_socket", options.slots);
  const refusedSockets = options.refusedSockets ?? new RefusedSockets();
  // The stats read the pool's count after each change rather than keep one of their own.
  const takeSlot = ([holder, named]: [string, string]): ConnectionSlot => {
    const taken = slots.take(holder, named);
    settings.stats.slotsHeld = slots.held();
    return {
      release() {
        taken.release();
        settings.stats.slotsHeld = slots.held();
      },
    };
  };

  return async function (c) {
    requireUpgrade(c);
    connections?.refuseWhileClosing();
    const requestId = requestIdOf(c);
    const presented = presentedKey(c.req.raw);
    if (presented.inQuery) noteKeyInQuery(c);
    const name = c.req.param("stream") ?? "";
    const { grant, error: refused } = await authorize(deps.keys, presented.key, "ingest", {
      howToSend: HOW_TO_SEND_FROM_BROWSER,
      stream: name,
      authorization: c.req.header("Authorization"),
    });
    // A key limited to streams is told a path's stream is no name once it is verified: that is
    // the route's 400 before the upgrade, from any page, as a key for all streams is told it (and
    // HTTP ingest), not a refused key's close (or a foreign page's 403 telling to list it).
    if (refused?.status === 400) throw refused;
    const denied = refused;
    if (denied) {
      // No key to admit a foreign page: refused before upgrading, as on every other route.
      const refusal = deferredOriginRefusal(c.req.raw);
      if (refusal) throw refusal;
      // Upgraded to be closed with the reason (browsers read no refused upgrade's status): the
      // request's log line still says why. It holds no place of the bound below.
      c.error = denied;
      return upgradeToRefuse(c, denied, {
        sockets: refusedSockets,
        graceMs: settings.refusedCloseMs,
        upgrade: { protocol: presented.protocol, idleTimeout },
      });
    }
    const stream = await lookUpStream(deps.streams, name);
    // As for HTTP ingest: a publishable key works only from its pages, and a page's origin is
    // admitted by the key's or the stream's `origins` too.
    // Read now: an upgraded request's headers are gone, and each frame asks again.
    const origin = originOf(c.req.raw);
    await refuseOrigin(deps, { origin, grant, stream: name });
    if (!stream) throw streamMissing(deps.streams, name, { listed: listedTo(grant) });
    // Refused before the upgrade when a bound is reached.
    let slot: ConnectionSlot;
    try {
      slot = takeSlot(slotHolder(c, deps.keys, presented.key, grant));
    } catch (error) {
      if (error instanceof SlotLimitError) recordIngestSocketRefused(error.limit);
      throw error;
    }
    const upgrade = activeSpanLinks();
    let connection: IngestConnection | undefined;
    try {
      return await upgradeSocket(c, {
        onOpen(_event, socket) {
          connection = new IngestConnection(deps, stream, socket, {
            ...settings,
            requestId,
            path: c.req.path,
            upgrade,
            async target() {
              const again = await authorize(deps.keys, presented.key, "ingest", { stream: name });
              if (again.error) throw again.error;
              const current = deps.streams.get(name);
              if (!current) {
                throw streamMissing(deps.streams, name, {
                  listed: listedTo(again.grant),
                });
              }
              // A page admitted by the stream's `origins` is admitted by them as they are now: a
              // PUT that removes its origin refuses its frames, as HTTP ingest from it.
              if (origin) await refuseOrigin(deps, { origin, grant: again.grant, stream: name });
              return { stream: current, rateLimits: rateLimitsFor(current, again.grant) };
            },
          });
          settings.stats.connections += 1;
          // Upgraded just as the shutdown began: end it before any frame is read.
          if (connections && !connections.add(connection)) {
            connection.shutDown("Server is shutting down");
          }
        },
        onMessage(event) {
          connection?.receive(event.data);
        },
        onClose() {
          // However it ends (either side closing, a protocol error, a shutdown, a dropped
          // connection), its place is free again.
          slot.release();
          if (!connection) return;
          const ending = connection;
          // Held (for a stop to wait on) until the frame the store is applying is done.
          ending.socketClosed().then(() => connections?.delete(ending));
          connection = undefined;
          settings.stats.connections -= 1;
        },
      }, { protocol: presented.protocol, idleTimeout });
    } catch (error) {
      // Not upgraded (Deno refused the handshake): no close event will free it.
      slot.release();
      throw error;
    }
  };
}

/** Options for {@linkcode upgradeSocket}: Deno's upgrade options, and how long it may take to open. */
export interface UpgradeSocketOptions extends Deno.UpgradeWebSocketOptions {
  /**
   * How long (ms) after the upgrade a socket that has not opened is counted as ended.
   * @default {OPEN_WITHIN_MS}
   */
  openWithinMs?: number;
}

/**
 * Upgrades the request to a WebSocket whose events go to `events`, as Hono's `upgradeWebSocket`
 * for Deno does, but for two things: the `Upgrade` header is taken in any case (RFC 6455; Hono's
 * compares it to lower-case `websocket` and answers `WebSocket` with a 500; {@linkcode
 * requireUpgrade} checks it), and a request Deno refuses to upgrade (such as a subprotocol list it
 * cannot parse) is answered 400 instead of 500. And its `onClose` comes however the connection
 * ends, also when the client left before the `101` was written: Deno then gives the socket no event
 * at all (it stays `CONNECTING`), so one that has not opened `options.openWithinMs` after the
 * upgrade is ended then (`onClose` with code 1006), freeing what its handler holds (a slot, a
 * refused socket's place); should it open later, it is closed at once.
 */
export function upgradeSocket(
  c: Context,
  events: WSEvents<WebSocket>,
  options: UpgradeSocketOptions = {},
): Response {
  const { openWithinMs = OPEN_WITHIN_MS, ...upgradeOptions } = options;
  let upgraded: { response: Response; socket: WebSocket };
  try {
    upgraded = Deno.upgradeWebSocket(c.req.raw, upgradeOptions);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    // Deno reads the offered subprotocols split by ", " only (npm `ws` joins them with ",").
    const offered = c.req.header("Sec-WebSocket-Protocol") ?? "";
    const hint = /,(?! )/.test(offered)
      ? ": separate subprotocols with ', ' (a comma and a space), or send the key in an 'Authorization: Bearer <key>' header"
      : "";
    throw new ApiError(
      400,
      "invalid_upgrade",
      `Cannot upgrade to a WebSocket: ${error.message}${hint}`,
    );
  }
  const { response, socket } = upgraded;
  const context = new WSContext<WebSocket>({
    send: (source) => socket.send(source),
    close: (code, reason) => socket.close(code, reason),
    raw: socket,
    get readyState() {
      return socket.readyState as WSReadyState;
    },
    get protocol() {
      return socket.protocol;
    },
    url: socket.url ? new URL(socket.url) : null,
  });
  let ended = false;
  const end = (event: CloseEvent) => {
    if (ended) return;
    ended = true;
    clearTimeout(unopened);
    events.onClose?.(event, context);
  };
  const unopened = setTimeout(() => {
    if (socket.readyState !== WebSocket.CONNECTING) return;
    end(new CloseEvent("close", { code: NEVER_OPENED, wasClean: false }));
  }, openWithinMs);
  // No process is kept running for it alone.
  Deno.unrefTimer(unopened);
  socket.onopen = (event) => {
    clearTimeout(unopened);
    // Ended as never opened: what its handler held is free already; closed, and dropped if its
    // client does not answer, as any socket the server closes.
    if (ended) closeWithin(socket, { code: 1001, reason: "", graceMs: openWithinMs });
    else events.onOpen?.(event, context);
  };
  socket.onmessage = (event) => events.onMessage?.(event, context);
  socket.onclose = (event) => end(event);
  socket.onerror = (event) => events.onError?.(event, context);
  return response;
}

/**
 * How long (ms) an upgraded WebSocket may take to open (its `101` written) before
 * {@linkcode upgradeSocket} counts it as ended: writing the `101` takes no time, so only a client
 * gone before it waits this long.
 */
export const OPEN_WITHIN_MS = 10_000;

/**
 * The code of the close event {@linkcode upgradeSocket} gives a socket that never opened: 1006, as
 * a connection lost without a close frame. Only its handler sees it; no client is sent it.
 */
const NEVER_OPENED = 1006;

/**
 * Upgrades the request only to close its WebSocket with 1008 and `denied`'s message, which
 * browsers can read where they cannot read a refused upgrade's status. The socket holds a place
 * of `sockets` until its connection ends: its client answering the close frame, or dropped
 * `graceMs` after it was sent. With every place held, `denied` is thrown instead (its 401 or 403,
 * before any upgrade): no more connections are left waiting on clients that never answer.
 */
export function upgradeToRefuse(
  c: Context,
  denied: ApiError,
  options: { sockets: RefusedSockets; graceMs: number; upgrade: Deno.UpgradeWebSocketOptions },
): Response {
  const place = options.sockets.take();
  if (!place) throw denied;
  try {
    return upgradeSocket(c, {
      onOpen(_event, socket) {
        closeWithin(socket.raw!, {
          code: 1008,
          reason: closeReason(denied.message),
          graceMs: options.graceMs,
        });
      },
      onClose() {
        place.release();
      },
    }, options.upgrade);
  } catch (error) {
    // Not upgraded (Deno refused the handshake): no close event will free it.
    place.release();
    throw error;
  }
}

/** Throws 426 unless the request asks for a WebSocket upgrade, 400 if it asks with `HEAD`. */
export function requireUpgrade(c: Context): void {
  if (!upgradeAsksForWebSocket(c.req.header("Upgrade"))) {
    throw new ApiError(
      426,
      "upgrade_required",
      `${quoteInput(c.req.path)} is a WebSocket endpoint: send 'Upgrade: websocket'`,
      { headers: { Upgrade: "websocket" } },
    );
  }
  refuseUpgradeByHead(c);
}

/**
 * Throws 400 `invalid_upgrade` for a WebSocket upgrade asked with `HEAD`: the handshake is a
 * `GET` (RFC 6455), and Deno would otherwise switch protocols for it.
 */
export function refuseUpgradeByHead(c: Context): void {
  if (c.req.method === "HEAD") {
    throw new ApiError(
      400,
      "invalid_upgrade",
      "Cannot upgrade to a WebSocket: the upgrade request is a GET, not HEAD",
    );
  }
}
