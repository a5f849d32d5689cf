/**
 * The live endpoints: WebSocket ingest (`GET /v1/streams/{stream}/ws`) and
 * subscriptions (`GET /v1/streams/{stream}/subscribe`, as a WebSocket or, with
 * `Accept: text/event-stream`, as Server-Sent Events).
 *
 * Browsers cannot set headers on a WebSocket or an `EventSource`, so these
 * endpoints also take the key as a `token` query parameter or as the
 * WebSocket subprotocol `bearer.<key>`.
 *
 * Over SSE, each result carries its result log id as the event `id`, so an
 * `EventSource` that reconnects (sending `Last-Event-ID`) gets what it missed
 * replayed from the log, or a `subscribed` message saying why it cannot; over a
 * WebSocket the id is the message's `id` field, and `?after=<id>` resumes. Every
 * message is written in order without awaiting, and a subscriber the server
 * ends gets a final `closed` event with the reason.
 *
 * @module
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { type SSEStreamingApi, streamSSE } from "hono/streaming";
import type { WSContext } from "hono/ws";
import { type CompiledStream, counterIdentities, type StreamCatalog } from "../config/mod.ts";
import type {
  LiveHub,
  LiveSink,
  SubscribeOptions,
  Subscription,
  SubscriptionStart,
} from "../fanout/live.ts";
import { PAYLOAD_TYPES, type PayloadType, type PublicPayload } from "../fanout/payload.ts";
import {
  closeReason,
  type IngestSocketDeps,
  ingestSocketHandler,
  type IngestSocketOptions,
  refuseUpgradeByHead,
  upgradeSocket,
  upgradeToRefuse,
} from "./ingest_socket.ts";
import {
  compileExpression,
  ExpressionError,
  MAX_EXPRESSION_LENGTH,
  MAX_REQUEST_PATTERN_COMPILE,
} from "../transform/mod.ts";
import {
  authorize,
  HOW_TO_SEND_FROM_BROWSER,
  type KeyRing,
  noteKeyInQuery,
  presentedKey,
  refuseForeignRead,
  rememberGrant,
  requireScopeForOtherMethods,
  scopeError,
  slotHolder,
} from "./auth.ts";
import {
  type ConnectionSlot,
  ConnectionSlots,
  SlotLimitError,
  type SlotLimits,
} from "./connection_slots.ts";
import { recordLiveRefused } from "../telemetry/mod.ts";
import { quoteInput } from "../telemetry/logging.ts";
import { findCounter, findServedStream } from "./stream_routes.ts";
import { ApiError } from "./errors.ts";
import { utf8Length } from "./body.ts";
import { ResponseCutError } from "./listener.ts";
import { closeWithin, DEFAULT_MAX_REFUSED_SOCKETS, RefusedSockets } from "./_drop_socket.ts";
import { acceptsEventStream, upgradeAsksForWebSocket } from "./_header_list.ts";
import {
  errorsFor,
  headersOf,
  ingestSocketLimitResponse,
  nameText,
  subscriptionLimitResponse,
} from "./_openapi.ts";

/** Options for the live endpoints. */
export interface LiveRouteOptions {
  /** WebSocket ingest settings (its refused sockets are {@linkcode refusedSockets}, shared). */
  socket?: Omit<IngestSocketOptions, "refusedSockets">;
  /**
   * Bytes a subscriber may have waiting to be sent: at it, the hub sends it nothing more until
   * it reads, then what followed from the log (see `LiveHubOptions.stalledMs` for when it is
   * dropped). @default {1048576}
   */
  maxBufferedBytes?: number;
  /**
   * Seconds without traffic before a subscriber WebSocket that answers no ping is closed (Deno
   * pings at half of it); `0` turns it off. @default {30}
   */
  idleTimeoutSeconds?: number;
  /**
   * How often (ms) an SSE subscription gets the comment line `: keep-alive` (not while what was
   * sent before is unread), so proxies keep it open. @default {15000}
   */
  heartbeatMs?: number;
  /**
   * How often (ms) a subscription's key and stream are checked again, so one whose key is
   * deleted or expires (within this plus the key cache's 2 s) or whose stream is deleted is
   * closed. @default {1000}
   */
  keyCheckMs?: number;
  /**
   * How long (ms) a WebSocket refused for its key (upgraded to be closed with 1008) waits for its
   * client to answer the close frame before its connection is dropped: it holds no place, so
   * nothing else bounds it. @default {5000}
   */
  refusedCloseMs?: number;
  /**
   * How long (ms) a WebSocket subscription the server closes (dropped, too slow, its key revoked,
   * its stream deleted, a shutdown) waits for its client to answer the close frame before its
   * connection is dropped, freeing its place: long enough for a slow reader to read what waits
   * before the close frame and answer it. @default {10000}
   */
  closeGraceMs?: number;
  /**
   * Most live subscriptions per key (in open mode per client address) and per process; past
   * them a subscription is refused (429 `too_many_subscriptions`, 503 `subscriptions_full`).
   * @default {{ perKey: 100, perProcess: 10000 }}
   */
  subscriptions?: SlotLimits;
  /**
   * The WebSockets refused for their key (upgraded to be closed with 1008) held at once, of
   * subscriptions and of WebSocket ingest together; at its bound a refusal is answered before the
   * upgrade (401, 403). @default {one of 1000 for these routes}
   */
  refusedSockets?: RefusedSockets;
}

/** The subscription settings of {@linkcode LiveRouteOptions}, their defaults filled in. */
export type SubscriptionSettings = Required<
  Pick<
    LiveRouteOptions,
    | "maxBufferedBytes"
    | "idleTimeoutSeconds"
    | "heartbeatMs"
    | "keyCheckMs"
    | "refusedCloseMs"
    | "closeGraceMs"
  >
>;

/** Fills in the defaults of a subscription's settings, as the live routes do. */
export function subscriptionSettings(options: LiveRouteOptions = {}): SubscriptionSettings {
  return {
    maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
    idleTimeoutSeconds: options.idleTimeoutSeconds ?? 30,
    heartbeatMs: options.heartbeatMs ?? 15_000,
    keyCheckMs: options.keyCheckMs ?? 1_000,
    refusedCloseMs: options.refusedCloseMs ?? 5_000,
    closeGraceMs: options.closeGraceMs ?? 10_000,
  };
}

/** What {@linkcode registerLiveRoutes} needs. */
export interface LiveRouteDeps extends IngestSocketDeps {
  /** The hub subscriptions attach to. */
  live: LiveHub;
  /** Settings. */
  options?: LiveRouteOptions;
}

/** Types a subscription gets when it names none. */
export const DEFAULT_SUBSCRIPTION_TYPES: readonly PayloadType[] = [
  "window.updated",
  "window.closed",
  "alert.fired",
];

/** Query of a subscription request. */
export interface SubscriptionQuery {
  /** Comma-separated types. */
  types?: string;
  /** Counter name. */
  counter?: string;
  /** CEL expression over `payload`. */
  filter?: string;
}

/** Reads a subscription's query; throws 400 for an unknown type or counter, or a bad filter. */
export function parseSubscription(stream: CompiledStream, query: SubscriptionQuery): Subscription {
  const named = (query.types ?? "").split(",").map((item) => item.trim()).filter(Boolean);
  let types: Set<PayloadType>;
  // A list naming no type (`types=`, `types=,`) is the default, not a subscription to nothing.
  if (named.length === 0) {
    types = new Set(DEFAULT_SUBSCRIPTION_TYPES);
  } else {
    types = new Set();
    for (const type of named) {
      if (!PAYLOAD_TYPES.includes(type as PayloadType)) {
        throw new ApiError(
          400,
          "invalid_query",
          `Query parameter 'types' has an unknown type '${quoteInput(type)}'; known: ${
            PAYLOAD_TYPES.join(", ")
          }`,
        );
      }
      types.add(type as PayloadType);
    }
  }
  const subscription: Subscription = { stream: stream.name, types };
  if (query.counter !== undefined) {
    subscription.counter = findCounter(stream, query.counter, "query").name;
  }
  if (query.filter !== undefined) {
    try {
      subscription.filter = compileExpression(query.filter, ["payload"], { returns: "bool" });
    } catch (error) {
      if (!(error instanceof ExpressionError)) throw error;
      throw new ApiError(
        400,
        "invalid_query",
        `Query parameter 'filter' is invalid: ${error.message}`,
      );
    }
  }
  return subscription;
}

/**
 * The first message of every subscription, sent once results flow; when
 * resuming was asked for, it says whether the missed results follow.
 */
function subscribedMessage(subscription: Subscription, start?: SubscriptionStart) {
  return {
    type: "subscribed",
    stream: subscription.stream,
    types: [...subscription.types],
    counter: subscription.counter ?? null,
    ...(start?.resumed === undefined ? {} : { resumed: start.resumed }),
    ...(start?.reason === undefined ? {} : { reason: start.reason }),
  };
}

/** What a subscription needs to check that it may go on. */
interface KeyCheck {
  keys: KeyRing;
  key: string | undefined;
  stream: string;
  everyMs: number;
  /** The streams served, and the generation of the one followed when it began. */
  streams: StreamCatalog;
  generation: number;
  /** The counter followed (`?counter=`), with its window, aggregate and groupBy when it began. */
  counter?: { name: string; identity: string };
}

/** The generation of a stream's data; 0 for a catalog that does not keep generations. */
function generationOf(streams: StreamCatalog, name: string): number {
  return streams.generationOf?.(name) ?? 0;
}

/**
 * Checks a subscription every `check.everyMs` while it lasts; calls `ended` once with why, when
 * its key no longer grants `read` on the stream (deleted, expired) or its stream is gone (deleted,
 * or deleted and created again: another stream's results), or the counter it follows was removed
 * or changed by a new definition of the stream (its results would never come, or be another
 * counter's). Returns the stop.
 */
function watchSubscription(check: KeyCheck, ended: (reason: string) => void): () => void {
  let checking = false;
  const timer = setInterval(async () => {
    if (checking) return;
    checking = true;
    try {
      let reason = streamGone(check);
      if (reason === undefined && !check.keys.open) {
        const denied = await scopeError(check.keys, check.key, "read", { stream: check.stream });
        if (denied) reason = `Key no longer valid: ${denied.message}`;
      }
      if (reason !== undefined) {
        clearInterval(timer);
        ended(reason);
      }
    } catch {
      // The key store unreachable: the key stands until it answers.
    } finally {
      checking = false;
    }
  }, check.everyMs);
  return () => clearInterval(timer);
}

/**
 * Why a subscription must end for its stream, as this instance serves it now: the stream deleted
 * (or deleted and created again), or the counter it follows removed or redefined; else undefined.
 */
function streamGone(check: KeyCheck): string | undefined {
  if (!check.streams.has(check.stream)) {
    return check.streams.definedElsewhere?.(check.stream)
      ? `Stream '${check.stream}' is now defined in another deployment's config file, and not served here`
      : `Stream '${check.stream}' was deleted`;
  }
  if (generationOf(check.streams, check.stream) !== check.generation) {
    return `Stream '${check.stream}' was deleted and created again: subscribe again`;
  }
  return check.counter === undefined
    ? undefined
    : counterGone(check.streams.get(check.stream), check.counter);
}

/**
 * Why the hub dropped a subscriber: its stream's end when that is why (a subscriber behind whose
 * stream was deleted finds the result log gone before the next check would say so), else the
 * hub's `reason`.
 */
function dropReason(check: KeyCheck, reason: string): string {
  return streamGone(check) ?? reason;
}

/** Why a subscription to `counter` must end, or undefined while the stream still has it unchanged. */
function counterGone(
  stream: CompiledStream | undefined,
  counter: { name: string; identity: string },
): string | undefined {
  if (stream === undefined) return undefined;
  const identity = counterIdentities(stream)[counter.name];
  if (identity === undefined) {
    return `Counter '${counter.name}' was removed from stream '${stream.name}'`;
  }
  if (identity !== counter.identity) {
    return `Counter '${counter.name}' of stream '${stream.name}' was redefined: subscribe again`;
  }
  return undefined;
}

/**
 * Adds the subscriber to the hub before anything is answered: what the store threw (a 503 with
 * `Retry-After`), or 503 `shutting_down` when the hub closed meanwhile, is the answer.
 */
async function subscribeFirst(
  deps: LiveRouteDeps,
  subscription: Subscription,
  sink: LiveSink,
  options: SubscribeOptions & {
    signal: AbortSignal;
    slot: ConnectionSlot;
    /** Gives the slot back when aborted. @default {signal: when the subscription ends} */
    freed?: AbortSignal;
  },
): Promise<void> {
  // Its slot is given back when the subscription ends (or its connection, `freed`), however it ends.
  const freed = options.freed ?? options.signal;
  if (freed.aborted) options.slot.release();
  freed.addEventListener("abort", () => options.slot.release(), { once: true });
  try {
    await deps.live.subscribe(subscription, sink, options);
  } catch (error) {
    options.slot.release();
    deps.connections?.refuseWhileClosing();
    throw error;
  }
}

/**
 * Subscribes over a WebSocket. The subscription is made before the upgrade, so a store that
 * cannot be read answers `503` (with `Retry-After`) instead of a socket opened only to be closed;
 * what it yields before the socket opens waits, in order, and is sent on open.
 */
async function subscribeOverSocket(
  c: Context,
  deps: LiveRouteDeps,
  setup: {
    subscription: Subscription;
    protocol?: string;
    keyCheck: KeyCheck;
    slot: ConnectionSlot;
    /** The result log id to resume after (`?after=`). */
    afterId?: string;
  },
): Promise<Response> {
  const upgradeOptions = {
    protocol: setup.protocol,
    idleTimeout: subscriptionSettings(deps.options).idleTimeoutSeconds,
  };
  const subscription = setup.subscription;
  const { maxBufferedBytes, closeGraceMs } = subscriptionSettings(deps.options);
  const stop = new AbortController();
  let socket: WSContext<WebSocket> | undefined;
  /** Messages yielded before the socket opened, and their bytes. */
  const waiting: string[] = [];
  let waitingBytes = 0;
  /** The close asked for before the socket opened. */
  let closing: [code: number, reason: string] | undefined;
  /** Settles once the socket closed (its close event). */
  const closed = Promise.withResolvers<void>();
  /**
   * Closes the socket after what waits for it; a client that has not answered the close frame
   * `closeGraceMs` later (one that reads nothing) has its connection dropped, freeing its place.
   */
  function closeSocket(opened: WSContext<WebSocket>, code: number, reason: string): void {
    if (opened.readyState >= 2) return;
    closeWithin(opened.raw!, { code, reason: closeReason(reason), graceMs: closeGraceMs });
  }
  function close(code: number, reason: string): void {
    stop.abort();
    if (socket) closeSocket(socket, code, reason);
    else closing ??= [code, reason];
  }
  function send(text: string): void {
    // Ended (closed, dropped, unsubscribed): nothing more is sent.
    if (closing || stop.signal.aborted) return;
    if (socket) {
      socket.send(text);
      return;
    }
    // Bounded by `ready` below: the hub sends nothing more once the limit is reached.
    waiting.push(text);
    waitingBytes += utf8Length(text);
  }
  const sink: LiveSink = {
    open(start) {
      // A WebSocket has no event ids: each message carries its log id as `id`.
      send(JSON.stringify({ ...subscribedMessage(subscription, start), id: start.afterId }));
    },
    send(payload: PublicPayload, id: string) {
      send(JSON.stringify({ ...payload, id }));
    },
    // No `drained`: Deno's WebSocket fires no event when `bufferedAmount` falls (the socket's
    // writes are not exposed as promises), so while this subscriber is behind the hub asks
    // `ready` every 5 ms; a timer here polling it would cost the same wake-ups.
    ready() {
      const buffered = socket ? socket.raw?.bufferedAmount ?? 0 : waitingBytes;
      return buffered < maxBufferedBytes;
    },
    close(reason) {
      close(1001, reason);
    },
    // A socket not open yet has nothing to wait for: it closes as it opens.
    closed: () => socket ? closed.promise : Promise.resolve(),
    drop(reason) {
      close(1008, dropReason(setup.keyCheck, reason));
    },
    transport: "ws",
  };
  // Its place is held until its connection ends, not only its subscription: a client that reads
  // nothing keeps a closed socket open (Deno waits for its close frame, up to `closeGraceMs`) with
  // what was queued for it, and a place freed at the close would let it open more without bound.
  const connectionEnded = new AbortController();
  await subscribeFirst(deps, subscription, sink, {
    afterId: setup.afterId,
    signal: stop.signal,
    slot: setup.slot,
    freed: connectionEnded.signal,
  });
  let unwatch: (() => void) | undefined;
  try {
    return await upgradeSocket(c, {
      onOpen(_event, opened: WSContext<WebSocket>) {
        socket = opened;
        for (const text of waiting.splice(0)) opened.send(text);
        waitingBytes = 0;
        if (closing) {
          closeSocket(opened, closing[0], closing[1]);
          return;
        }
        unwatch = watchSubscription(setup.keyCheck, (reason) => close(1008, reason));
      },
      onMessage(event) {
        // A subscription reads nothing from its client: a short message (a library's text
        // heartbeat) is let be, a longer one ends it, so a client cannot keep this server reading
        // and dropping frames of up to Deno's 64 MiB each on a connection it holds. Text is
        // measured as its UTF-8, counted without encoding it (no copy of up to 64 MiB).
        const bytes = typeof event.data === "string"
          ? utf8Length(event.data)
          : event.data instanceof ArrayBuffer
          ? event.data.byteLength
          : event.data instanceof Blob
          ? event.data.size
          : 0;
        if (bytes > MAX_SUBSCRIBER_MESSAGE_BYTES) {
          close(
            1009,
            `A subscription takes no messages; one of ${bytes} bytes is past the ${MAX_SUBSCRIBER_MESSAGE_BYTES} let be`,
          );
        }
      },
      onClose() {
        unwatch?.();
        stop.abort();
        connectionEnded.abort();
        closed.resolve();
      },
    }, upgradeOptions);
  } catch (error) {
    // Not upgraded: no close event will come.
    stop.abort();
    connectionEnded.abort();
    throw error;
  }
}

const UTF8 = new TextEncoder();

/**
 * Largest message (bytes) a WebSocket subscriber may send, ignored (a text heartbeat some client
 * libraries send); a longer one closes the subscription with 1009.
 */
export const MAX_SUBSCRIBER_MESSAGE_BYTES = 1024;

/** The SSE comment that keeps an idle subscription's connection open. */
const KEEP_ALIVE = UTF8.encode(": keep-alive\n\n");

/** One Server-Sent Event; `data` is JSON text and `id` a log id, neither with line breaks. */
function sseMessage(event: string, data: string, id?: string | null): string {
  return `event: ${event}\ndata: ${data}\n${id ? `id: ${id}\n` : ""}\n`;
}

/**
 * Subscribes over Server-Sent Events. The subscription is made before the answer, so a store
 * that cannot be read answers `503` (with `Retry-After`) instead of a 200 whose only event is
 * `closed`; what it yields meanwhile waits, in order, and is the stream's start.
 */
async function subscribeOverSse(
  c: Context,
  deps: LiveRouteDeps,
  setup: {
    subscription: Subscription;
    keyCheck: KeyCheck;
    slot: ConnectionSlot;
    /** The result log id to resume after (`?after=`), when no `Last-Event-ID` is sent. */
    afterId?: string;
  },
): Promise<Response> {
  const { subscription } = setup;
  const { maxBufferedBytes, heartbeatMs } = subscriptionSettings(deps.options);
  // EventSource sends it when it reconnects after a message that had an id: newer than the
  // `?after=` of the URL it keeps.
  const lastEventId = c.req.header("Last-Event-ID")?.trim() || setup.afterId;
  const ended = Promise.withResolvers<void>();
  const stop = new AbortController();
  let sse: SSEStreamingApi | undefined;
  /** Messages written before the stream began. */
  const waiting: Uint8Array[] = [];
  let waitingBytes = 0;
  let ending = false;
  /** Settled once fewer than `maxBufferedBytes` wait (or the stream ends): the hub waits on it. */
  let drained: PromiseWithResolvers<void> | undefined;
  function settleDrained(): void {
    drained?.resolve();
    drained = undefined;
  }
  /**
   * Sends bytes down the response. A write settles once the response's reader pulled them (the
   * stream's transform runs at a read), so `waitingBytes` is what the client has not read yet.
   */
  function writeBytes(stream: SSEStreamingApi, bytes: Uint8Array): void {
    stream.write(bytes).finally(() => {
      waitingBytes -= bytes.length;
      bytesRead += bytes.length;
      if (waitingBytes < maxBufferedBytes) settleDrained();
      if (waitingBytes === 0) allRead?.resolve();
    });
  }
  /** Bytes the client read so far, and, after the end, settled once it read all that waits. */
  let bytesRead = 0;
  let allRead: PromiseWithResolvers<void> | undefined;
  /**
   * After the end, what waits (the `closed` event last) is the client's to read; one that reads
   * none of it for `graceMs` has its response cut: the body errors, so Deno drops the connection
   * and lets go of what waited for it, rather than holding both for as long as the client keeps
   * the connection open (its place was freed at the end). A body that closed instead would keep
   * the connection, Deno still trying to write what it holds.
   */
  async function finish(stream: SSEStreamingApi, graceMs: number): Promise<void> {
    while (waitingBytes > 0 && !stream.aborted) {
      const readBefore = bytesRead;
      allRead = Promise.withResolvers();
      const timer = setTimeout(() => allRead?.resolve(), graceMs);
      await allRead.promise;
      clearTimeout(timer);
      if (waitingBytes > 0 && bytesRead === readBefore) {
        body.cut(
          new ResponseCutError(
            `Subscriber read nothing for ${graceMs} ms after its subscription ended`,
          ),
        );
        stream.abort();
      }
    }
  }
  function write(event: string, data: string, id?: string | null): void {
    const bytes = UTF8.encode(sseMessage(event, data, id));
    waitingBytes += bytes.length;
    if (!sse) {
      waiting.push(bytes);
      return;
    }
    // write() hands the bytes to the stream before its first await, so messages
    // queue in call order and the final `closed` lands ahead of the stream's end.
    writeBytes(sse, bytes);
  }
  function end(reason: string): void {
    if (ending) return;
    ending = true;
    settleDrained();
    // Queued behind what is waiting: a reader that catches up learns why.
    write("closed", JSON.stringify({ type: "closed", reason }));
    stop.abort();
    ended.resolve();
  }
  const sink: LiveSink = {
    open(start) {
      // The id of where the messages start: reconnecting with it misses nothing.
      write("subscribed", JSON.stringify(subscribedMessage(subscription, start)), start.afterId);
    },
    send(payload, id) {
      if (ending) return;
      write(payload.type, JSON.stringify(payload), id);
    },
    // The hub sends nothing more while this many bytes wait, and reads the log for it later.
    ready: () => waitingBytes < maxBufferedBytes,
    // ...and waits for the client's reads to bring it under, with no timer.
    drained() {
      if (ending || waitingBytes < maxBufferedBytes) return Promise.resolve();
      drained ??= Promise.withResolvers();
      return drained.promise;
    },
    close: end,
    drop: (reason) => end(dropReason(setup.keyCheck, reason)),
    transport: "sse",
  };
  // A client gone while the subscription is set up (a replay may take a while) ends it.
  const gone = () => stop.abort();
  c.req.raw.signal.addEventListener("abort", gone, { once: true });
  try {
    await subscribeFirst(deps, subscription, sink, {
      afterId: lastEventId,
      signal: stop.signal,
      slot: setup.slot,
    });
  } finally {
    c.req.raw.signal.removeEventListener("abort", gone);
  }
  const response = streamSSE(c, async (stream) => {
    sse = stream;
    for (const bytes of waiting.splice(0)) writeBytes(stream, bytes);
    stream.onAbort(() => {
      ending = true;
      settleDrained();
      stop.abort();
      ended.resolve();
    });
    if (stop.signal.aborted) ended.resolve();
    // Counted as waiting like any message: one a client has not read skips the next, so a client
    // that reads nothing has at most one queued.
    const heartbeat = setInterval(() => {
      if (waitingBytes !== 0) return;
      waitingBytes += KEEP_ALIVE.length;
      writeBytes(stream, KEEP_ALIVE);
    }, heartbeatMs);
    const unwatch = watchSubscription(setup.keyCheck, end);
    try {
      await ended.promise;
    } finally {
      clearInterval(heartbeat);
      unwatch();
      stop.abort();
    }
    await finish(stream, deps.live.settings.stalledMs);
  });
  // Set before the callback above gets past its first await, the only place it is used.
  const body = cuttable(response.body!);
  return new Response(body.stream, response);
}

/** A response body that can be ended with an error ({@linkcode cuttable}). */
interface CuttableBody {
  stream: ReadableStream<Uint8Array>;
  /** Errors the body with `error`; its source is cancelled. */
  cut(error: Error): void;
}

/**
 * `source` as a body that can be errored from outside (Hono's stream can only be closed): Deno
 * drops the connection of a body that errors. It reads `source` only when its own reader reads,
 * so what it passes on has been taken by the connection.
 */
function cuttable(source: ReadableStream<Uint8Array>): CuttableBody {
  const reader = source.getReader();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({
    start(started) {
      controller = started;
    },
    async pull(pulling) {
      const { done, value } = await reader.read();
      try {
        if (done) pulling.close();
        else pulling.enqueue(value);
      } catch {
        // Cut while this read waited: the body is errored already.
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return {
    stream,
    cut(error) {
      controller.error(error);
      reader.cancel(error).catch(() => {});
    },
  };
}

/**
 * What both WebSocket routes document of a refusal for a key past the refused sockets' bound
 * ({@linkcode RefusedSockets}), in the same words: it is answered before the upgrade.
 */
const REFUSED_PAST_BOUND =
  `while the server holds ${DEFAULT_MAX_REFUSED_SOCKETS} such refused WebSockets (of ingest and subscriptions together), it is answered before the upgrade instead, as plain HTTP: 401 \`unauthorized\` or 403 \`forbidden\` with the error body (a browser's \`WebSocket\` is not shown it: it sees a failed connection).`;

const StreamParam = z.object({
  stream: nameText.openapi({ param: { name: "stream", in: "path" }, example: "orders" }),
});

const TokenQuery = z.string().optional().openapi({
  param: { deprecated: true },
  description:
    "Deprecated: the API key in the URL, which traces and proxy logs record. Send `Authorization: Bearer <key>`, or from a browser the WebSocket subprotocol `bearer.<key>` (or read SSE with `fetch`). Still accepted; edgestream's own logs never print it. A header or subprotocol holding another key: 400 `invalid_request`",
});

/** The query parameters of `GET /v1/streams/{stream}/subscribe`: those it takes, no others. */
const SubscribeQuery = z.object({
  types: z.string().optional().openapi({
    description: `Comma-separated, of: ${PAYLOAD_TYPES.join(", ")}. Default: ${
      DEFAULT_SUBSCRIPTION_TYPES.join(",")
    }`,
    example: "window.updated,window.closed",
  }),
  counter: z.string().optional().openapi({
    description:
      "Only this counter's results (`window.*`, `alert.fired`); events (`event.processed`, `event.late`) pass whatever it names",
  }),
  filter: z.string().max(MAX_EXPRESSION_LENGTH).optional().openapi({
    description:
      `CEL expression over the message as \`payload\`. Patterns its \`matches()\` calls take from messages may cost ${MAX_REQUEST_PATTERN_COMPILE} a second to compile; past that the subscription ends, its reason naming the bound`,
    example: "payload.data.value > 100",
  }),
  after: z.string().optional().openapi({
    description:
      "Resume after this result log id (a message's `id`); over SSE, `Last-Event-ID` wins",
    example: "1767225600000-0",
  }),
  token: TokenQuery,
});

/** The first message of a subscription ({@linkcode subscribedMessage}), as the document shows it. */
export const LiveSubscribedSchema = z.object({
  type: z.literal("subscribed"),
  stream: z.string(),
  types: z.array(z.enum(PAYLOAD_TYPES)).openapi({
    description: "The result types it gets, as asked (or the default)",
  }),
  counter: z.string().nullable().openapi({
    description:
      "Only this counter's results (`window.*`, `alert.fired`); events (`event.*`) pass whatever it names; null: all",
  }),
  resumed: z.boolean().optional().openapi({
    description:
      "Sent when resuming was asked for (`after`, `Last-Event-ID`): whether the missed results follow",
  }),
  reason: z.string().optional().openapi({
    description: "With `resumed: false`: why the subscription starts at the log's end",
  }),
  id: z.string().optional().openapi({
    description:
      "WebSocket only: the result log id the subscription starts after (`0-0` while the log never had an entry); SSE sends it as the event's `id`",
    example: "1767225600000-0",
  }),
}).openapi("LiveSubscribed", {
  description: "The first message of a live subscription (SSE: the `subscribed` event's data)",
});

/** The last SSE event of a subscription the server ends (WebSocket: the close code and reason). */
export const LiveClosedSchema = z.object({
  type: z.literal("closed"),
  reason: z.string().openapi({ example: "Server is shutting down" }),
}).openapi("LiveClosed", {
  description:
    "SSE only: the `closed` event that ends a subscription the server ends, with why (a WebSocket is closed with a code and this reason)",
});

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/**
 * The messages of a subscription, as JSON Schema: an extension (`x-messages`) of its `101` and
 * `200` answers, as OpenAPI 3.1 describes no WebSocket message and no SSE event.
 */
const LIVE_MESSAGES = {
  websocket: {
    description:
      "Each WebSocket text message: `subscribed` first, then results, each with its result log `id`",
    oneOf: [ref("LiveSubscribed"), {
      allOf: [ref("LivePayload"), {
        type: "object",
        required: ["id"],
        properties: { id: { type: "string", description: "Its result log id" } },
      }],
    }],
  },
  sse: {
    description:
      "The `data` of each SSE event (named by its `type`): `subscribed` first, then results, then `closed` if the server ends the subscription",
    oneOf: [ref("LiveSubscribed"), ref("LivePayload"), ref("LiveClosed")],
  },
};

function documentRoutes(app: OpenAPIHono): void {
  app.openAPIRegistry.register("LiveSubscribed", LiveSubscribedSchema);
  app.openAPIRegistry.register("LiveClosed", LiveClosedSchema);
  app.openAPIRegistry.registerPath({
    method: "get",
    path: "/v1/streams/{stream}/ws",
    operationId: "ingestOverWebSocket",
    tags: ["ingest"],
    summary: "Send events over a WebSocket, with acks",
    description: [
      'Upgrades to a WebSocket. Each text frame carries what `POST /v1/streams/{stream}/events` takes (one event, an array, or NDJSON lines), optionally as `{"seq": n, "idempotencyKey": "…", "events": [...]}` (an object with `events` and no other keys than those two; with `seq` or `idempotencyKey` and another key, or `idempotencyKey` without `events`, it is an error frame `invalid_body`, not one event; so is NDJSON with such an object or an envelope as a line).',
      'Each frame is answered in order, once the store applied it: `{"type": "ack", "seq", "accepted", "duplicates", "late", "filtered", "rejected"}` (the ack of a frame whose `idempotencyKey` was seen before is the first one as stored, with `"replayed": true`, and `rejectedOmitted`, the rejected events it leaves out, when its stored `rejected` was shortened, as a replayed HTTP reply), or `{"type": "error", "seq", "retryable", "error": {"code", "message", "requestId"}}` (`requestId`: the upgrade request\'s `X-Request-Id`; the connection stays open; `retryable: true` means the frame may succeed if sent again: the store was unavailable (`error.details.outcome` says whether it may have counted, as for an HTTP 503), its `idempotencyKey` is in flight (`idempotency_key_in_flight`), a rate limit refused it (`rate_limited`, with `error.details.retryAfterMs`: the wait in whole ms, rounded up), the connection is closing (`connection_closing`), or a look-up is busy or the stream changed meanwhile (`stream_lookup_busy`, `key_lookup_busy`, `stream_changed`); but for the store\'s, nothing was counted: resend; event ids or the frame\'s `idempotencyKey` keep it from counting twice).',
      "`seq` is the frame's own, else its number on the connection. Keep at most 8 frames unacknowledged; a client far past that is closed with 1008.",
      "Close codes: 1003 binary frame, 1009 frame over 1 MiB, 1008 missing/invalid key (a client that has not answered that close frame 5 s later has its connection dropped), too many frames in flight or answers left unread (over 1 MiB waiting for 10 s; no frame is applied meanwhile), 1001 no pong or the server shutting down (after answering every frame read, as below), 1011 an error in the server (a bug, logged; no answers follow, as when the client closes first). A client that has not answered any other close frame of the server 10 s after it was sent has its connection dropped. While the server shuts down, an upgrade gets 503 `shutting_down`.",
      "Before closing for a binary frame, an oversized frame or too many frames in flight, the server answers every frame read before it, in order: the one being applied with its ack, the later ones with `retryable: true` and code `connection_closing` (not counted); the bad frame and any after it are dropped. When the client closes first, misses a pong or the server closes with 1011, no answers follow: frames not yet started are not applied; the one being applied may count with no ack.",
      "Key: `Authorization: Bearer <key>` or subprotocol `bearer.<key>` (`?token=<key>` is deprecated). Scope: ingest. A refused key (missing, unknown, without `ingest`, or limited to other streams) is upgraded and closed with 1008 and the reason; " +
      REFUSED_PAST_BOUND,
      "Refused before upgrading: 400 `invalid_upgrade` when the upgrade cannot be made (e.g. subprotocols not separated by `, `), 400 `invalid_request` when the header, `?token=` and subprotocol hold two different keys, 403 `origin_not_allowed` from an `Origin` not allowed, 426 without `Upgrade: websocket`.",
      "Bounded: one key (a publishable key too, whoever uses it; in open mode, one client address) holds at most `EDGESTREAM_INGEST_SOCKETS_PER_KEY` (default 100) connections on a server, the server at most `EDGESTREAM_INGEST_SOCKETS_MAX` (default 10000). One more is refused before the upgrade: 429 `too_many_ingest_sockets` (the key's bound) or 503 `ingest_sockets_full` (the server's), with `Retry-After` and `details: {limit, max}`. A connection that ends, however it ends, frees its place.",
    ].join("\n\n"),
    // Its query, checked for every read by `apiQueryChecks` (query.ts).
    request: { params: StreamParam, query: z.object({ token: TokenQuery }) },
    responses: {
      101: { description: "Switching to the WebSocket protocol" },
      ...errorsFor(400, 401, 403, 404, 409, 426, 503),
      ...ingestSocketLimitResponse,
    },
  });
  app.openAPIRegistry.registerPath({
    method: "get",
    path: "/v1/streams/{stream}/subscribe",
    operationId: "subscribe",
    tags: ["live"],
    summary: "Follow a stream's results live (WebSocket or Server-Sent Events)",
    description: [
      "Upgrades to a WebSocket, or with `Accept: text/event-stream` answers with Server-Sent Events (for `EventSource`; the SSE event name is the message type).",
      'The first message is `{"type": "subscribed", "stream", "types", "counter"}`; then each result as `{"type", "timestamp", "data": {stream, counter, aggregate, group, start, end, value, ...}}`, the webhook payload shape. Over a WebSocket each message also has `id`, its result log id (see resuming). The `data` of a window has `approximate: true` when its value is an estimate, and `partial: true` when the window misses events: its counter was added to the stream (or added back) once events had been applied, and the window (a session: the session, or the gap before it) starts before the stream\'s watermark then.',
      "`window.updated` carries the running value of a window when it changed, at most 4 times a second per counter and group. A subscriber is sent nothing more while 1 MiB waits to be sent to it; what follows is sent from the result log as it reads, in order, none missing. One that read nothing for 10 s meanwhile, or that the log was trimmed past, is dropped: WebSocket close 1008, or a final SSE `closed` event, with the reason. So is one whose key is deleted or expires, whose stream is deleted, or whose `counter` a new definition of the stream removes or redefines.",
      'Resuming: each result carries its result log id (SSE: as the event `id`; WebSocket: as the message\'s `id` field), and `subscribed` the id the subscription starts after (`0-0` while the log never had an entry). Subscribing again with `?after=<id>` (or, over SSE, the header `Last-Event-ID`, which `EventSource` sends on reconnect and which wins over `after`) replays the missed results from the log, then continues live; `subscribed` then says `"resumed": true`, or `"resumed": false` with a `reason` when results after that id were trimmed from the log, the log never reached that id, or the id is of a log deleted since (the stream deleted and created again, a memory store restarted), and the subscription starts at the log\'s end.',
      "Key: `Authorization: Bearer <key>` or subprotocol `bearer.<key>` (`?token=<key>` is deprecated). Scope: read. A refused key (missing, unknown, without `read`, or limited to other streams) answers SSE with 401 `unauthorized` or 403 `forbidden`, and is upgraded and closed with 1008 and the reason over a WebSocket (a client that has not answered that close frame 5 s later has its connection dropped); " +
      REFUSED_PAST_BOUND,
      "When the server shuts down, a WebSocket subscriber is closed with 1001 and an SSE subscriber gets a final `closed` event; a new subscription meanwhile gets 503 `shutting_down`.",
      "A WebSocket subscription reads nothing from its client: a message of up to 1,024 bytes (a heartbeat) is ignored, a longer one closes it with 1009.",
      "Bounded: one key (in open mode, one client address) holds at most `EDGESTREAM_SUBSCRIPTIONS_PER_KEY` (default 100) subscriptions on a server, the server at most `EDGESTREAM_SUBSCRIPTIONS_MAX` (default 10000). One more is refused before the upgrade or the SSE 200: 429 `too_many_subscriptions` (the key's bound) or 503 `subscriptions_full` (the server's), with `Retry-After` and `details: {limit, max}`. A subscription that ends frees its place; over a WebSocket, once its connection ends (a client that has not answered the server's close frame 10 s after it was sent has its connection dropped).",
      "The subscription is set up in the store before anything is answered: a store that cannot be read (Redis unreachable) is a 503 `store_unavailable` with `Retry-After`, before the upgrade or the SSE 200. A subscription from before an outage stays open through it, is sent nothing while the store does not answer, then gets what the log received meanwhile.",
    ].join("\n\n"),
    request: {
      params: StreamParam,
      headers: z.object({
        "Last-Event-ID": z.string().optional().openapi({
          description: "SSE: resume after this result log id (`EventSource` sends it on reconnect)",
          example: "1767225600000-0",
        }),
      }),
      query: SubscribeQuery,
    },
    responses: {
      101: Object.assign({
        description:
          "Switching to the WebSocket protocol: messages as `x-messages` says (`LiveSubscribed`, then `LivePayload` with `id`)",
      }, { "x-messages": LIVE_MESSAGES.websocket }),
      200: Object.assign({
        description:
          "Server-Sent Events: a `subscribed` event (`LiveSubscribed`), then one per result, named by its type, its `data` a `LivePayload` and its `id` the result log's, and a final `closed` (`LiveClosed`) when the server ends it; `x-messages` gives the schema of each event's data",
        headers: headersOf("Cache-Control"),
        content: { "text/event-stream": { schema: { type: "string" as const } } },
      }, { "x-messages": LIVE_MESSAGES.sse }),
      ...errorsFor(400, 401, 403, 404, 406, 409, 503),
      ...subscriptionLimitResponse,
    },
  });
}

/**
 * Registers the WebSocket ingest and subscription endpoints, and documents
 * them in the app's OpenAPI registry.
 *
 * @example
 * ```ts
 * import { OpenAPIHono } from "@hono/zod-openapi";
 * import { compileConfig } from "../config/mod.ts";
 * import { LiveHub } from "../fanout/mod.ts";
 * import { MemoryStore } from "../store/mod.ts";
 * import { KeyRing } from "./auth.ts";
 * import { DEFAULT_LIMITS } from "./body.ts";
 * import { registerLiveRoutes } from "./live_routes.ts";
 *
 * const streams = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * });
 * const store = new MemoryStore();
 * const live = new LiveHub(streams, store);
 * const app = new OpenAPIHono();
 * registerLiveRoutes(app, {
 *   streams,
 *   store,
 *   keys: await KeyRing.parse(""),
 *   now: Date.now,
 *   limits: DEFAULT_LIMITS,
 *   live,
 *   ingestOptions: () => ({ observers: [live.observer] }),
 * });
 * ```
 */
export function registerLiveRoutes(app: OpenAPIHono, deps: LiveRouteDeps): void {
  // GET checks its key itself (header, subprotocol or ?token=); other methods need one for their 405.
  const taken = ["GET", "HEAD"];
  app.use("/v1/streams/:stream/ws", requireScopeForOtherMethods(deps.keys, "ingest", taken));
  app.use("/v1/streams/:stream/subscribe", requireScopeForOtherMethods(deps.keys, "read", taken));
  // One bound for the refused sockets of both routes, as for a process's file descriptors.
  const refusedSockets = deps.options?.refusedSockets ?? new RefusedSockets();
  app.get(
    "/v1/streams/:stream/ws",
    ingestSocketHandler(deps, { ...deps.options?.socket, refusedSockets }),
  );

  const slots = new ConnectionSlots("subscription", deps.options?.subscriptions);
  app.get("/v1/streams/:stream/subscribe", async (c) => {
    const overSocket = upgradeAsksForWebSocket(c.req.header("Upgrade"));
    if (overSocket) refuseUpgradeByHead(c);
    if (!overSocket && !acceptsEventStream(c.req.header("Accept"))) {
      throw new ApiError(
        406,
        "not_acceptable",
        "Subscribe with a WebSocket upgrade or with 'Accept: text/event-stream'",
      );
    }
    // The hub is closing with the server: a subscription now would end at once.
    deps.connections?.refuseWhileClosing();
    const presented = presentedKey(c.req.raw);
    if (presented.inQuery) noteKeyInQuery(c);
    const authorization = await authorize(deps.keys, presented.key, "read", {
      howToSend: HOW_TO_SEND_FROM_BROWSER,
      stream: c.req.param("stream"),
      authorization: c.req.header("Authorization"),
    });
    const denied = authorization.error ?? null;
    if (denied && !overSocket) throw denied;
    // Its origins admit pages to read the stream (cors.ts).
    if (authorization.grant) {
      rememberGrant(c, authorization.grant);
      // A page its key does not list: refused before anything is opened, readably (cors.ts); in
      // open mode too, as a subscription would stream to a page that reads none of it.
      refuseForeignRead(c, authorization.grant, { inOpenMode: true });
    }
    if (denied) {
      // Upgraded to be closed with the reason (browsers read no refused upgrade's status): the
      // request's log line still says why.
      c.error = denied;
      return upgradeToRefuse(c, denied, {
        sockets: refusedSockets,
        graceMs: subscriptionSettings(deps.options).refusedCloseMs,
        upgrade: {
          protocol: presented.protocol,
          idleTimeout: subscriptionSettings(deps.options).idleTimeoutSeconds,
        },
      });
    }
    const stream = await findServedStream(
      deps.streams,
      c.req.param("stream"),
      { grant: authorization.grant },
    );
    const subscription = parseSubscription(stream, {
      types: c.req.query("types"),
      counter: c.req.query("counter"),
      filter: c.req.query("filter"),
    });
    const keyCheck: KeyCheck = {
      keys: deps.keys,
      key: presented.key,
      stream: c.req.param("stream"),
      everyMs: subscriptionSettings(deps.options).keyCheckMs,
      streams: deps.streams,
      generation: generationOf(deps.streams, c.req.param("stream")),
    };
    if (subscription.counter !== undefined) {
      const name = subscription.counter;
      keyCheck.counter = { name, identity: counterIdentities(stream)[name] };
    }
    // Refused before the upgrade or the SSE 200 when a bound is reached.
    let slot: ConnectionSlot;
    try {
      slot = slots.take(...slotHolder(c, deps.keys, presented.key, authorization.grant));
    } catch (error) {
      if (error instanceof SlotLimitError) recordLiveRefused(error.limit);
      throw error;
    }
    const afterId = c.req.query("after")?.trim() || undefined;
    if (overSocket) {
      return await subscribeOverSocket(c, deps, {
        subscription,
        protocol: presented.protocol,
        keyCheck,
        slot,
        afterId,
      });
    }
    return await subscribeOverSse(c, deps, {
      subscription,
      keyCheck,
      slot,
      afterId,
    });
  });

  documentRoutes(app);
}
