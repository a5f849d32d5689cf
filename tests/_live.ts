/**
 * Test harness for the live endpoints: the app served by `Deno.serve` on a
 * free port, and WebSocket clients (Deno's own and `npm:ws`) whose messages
 * are read one at a time.
 *
 * @module
 */
// @ts-types="@types/ws"
import NodeWebSocket from "ws";
import { createApp } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { LiveHub, type LiveHubOptions } from "../src/fanout/live.ts";
import { KeyRing, type KeyRingOptions } from "../src/http/auth.ts";
import type { LiveRouteOptions } from "../src/http/live_routes.ts";
import { serveError } from "../src/http/listener.ts";
import { OpenConnections } from "../src/http/open_connections.ts";
import type { OriginSettings } from "../src/http/origin.ts";
import { type IngestSocketStats, ingestSocketStats } from "../src/http/ingest_socket.ts";
import { RejectedCounts } from "../src/ingest/mod.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import type { Store } from "../src/store/types.ts";
import { KEYS, NOW, TEST_CONFIG } from "./_fixtures.ts";

/** Options for {@linkcode startServer}. */
export interface ServerOptions {
  /** Turn auth on with {@linkcode KEYS}. @default {false} */
  auth?: boolean;
  /** @default {a fresh MemoryStore on the fixed clock} */
  store?: Store;
  /** @default {TEST_CONFIG} */
  config?: unknown;
  /** @default {() => NOW} */
  now?: () => number;
  /** Hub settings. @default {pollMs 20, updateIntervalMs 100} */
  hub?: LiveHubOptions;
  /** Endpoint settings. */
  liveRoutes?: LiveRouteOptions;
  /** Allowed hosts and origins. @default {none} */
  origins?: OriginSettings;
  /** The key ring's run-time key store, clock and cache. @default {its defaults} */
  keyRing?: KeyRingOptions;
}

/** A running server. */
export interface TestServer {
  /** `http://127.0.0.1:<port>`. */
  base: string;
  /** `ws://127.0.0.1:<port>` + path. */
  wsUrl(path: string): string;
  store: Store;
  live: LiveHub;
  /** Counts of the WebSocket ingest connections. */
  socketStats: IngestSocketStats;
  /** The held connections, closed by a shutdown. */
  connections: OpenConnections;
  /** Where the rejected events of requests that accepted none wait: `flush()` counts them now. */
  rejectedCounts: RejectedCounts;
  /** Stops the hub and the server. */
  close(): Promise<void>;
}

/** Serves the app on a free port. */
export async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const now = options.now ?? (() => NOW);
  const store = options.store ?? new MemoryStore({ now });
  const streams = compileConfig(options.config ?? TEST_CONFIG);
  const live = new LiveHub(streams, store, { pollMs: 20, updateIntervalMs: 100, ...options.hub });
  const socketStats = ingestSocketStats();
  const connections = new OpenConnections();
  const keys = await KeyRing.parse(
    options.auth ? `admin:${KEYS.admin},ingest:${KEYS.ingest},read:${KEYS.read}` : "",
    options.keyRing,
  );
  let rejectedCounts!: RejectedCounts;
  const app = createApp({
    streams,
    store,
    keys,
    now,
    live,
    rejectedCounts: (target, now) => rejectedCounts = new RejectedCounts(target, { now }),
    origins: options.origins,
    connections,
    liveRoutes: {
      ...options.liveRoutes,
      socket: { ...options.liveRoutes?.socket, stats: socketStats },
    },
  });
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen: ({ port }) => listening.resolve(port),
    // As main.ts serves: a response cut on purpose logs nothing, anything else one line.
    onError: serveError,
  }, app.fetch);
  const port = await listening.promise;
  return {
    base: `http://127.0.0.1:${port}`,
    wsUrl: (path) => `ws://127.0.0.1:${port}${path}`,
    store,
    live,
    socketStats,
    connections,
    rejectedCounts,
    async close() {
      await live.close();
      await server.shutdown();
    },
  };
}

/** How a WebSocket closed. */
export interface Closed {
  code: number;
  reason: string;
}

/** Messages of a WebSocket, read in order. */
export class Inbox {
  #messages: unknown[] = [];
  #waiting: Array<(message: unknown) => void> = [];
  #closed = Promise.withResolvers<Closed>();
  #isClosed = false;

  /** Settles when the socket closed. */
  get closed(): Promise<Closed> {
    return this.#closed.promise;
  }

  /** Messages received and not read yet. */
  get unread(): number {
    return this.#messages.length;
  }

  push(text: string): void {
    const message = JSON.parse(text);
    const waiter = this.#waiting.shift();
    if (waiter) waiter(message);
    else this.#messages.push(message);
  }

  close(closed: Closed): void {
    this.#isClosed = true;
    this.#closed.resolve(closed);
  }

  /** The next message; rejects after `timeoutMs` or when the socket closes first. */
  // deno-lint-ignore no-explicit-any
  next(timeoutMs = 5_000): Promise<any> {
    if (this.#messages.length > 0) return Promise.resolve(this.#messages.shift());
    if (this.#isClosed) return Promise.reject(new Error("Socket closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.splice(this.#waiting.indexOf(deliver), 1);
        reject(new Error(`No message within ${timeoutMs} ms`));
      }, timeoutMs);
      const deliver = (message: unknown) => {
        clearTimeout(timer);
        resolve(message);
      };
      this.#waiting.push(deliver);
      this.#closed.promise.then((closed) => {
        if (!this.#waiting.includes(deliver)) return;
        this.#waiting.splice(this.#waiting.indexOf(deliver), 1);
        clearTimeout(timer);
        reject(new Error(`Socket closed: ${closed.code} ${closed.reason}`));
      });
    });
  }

  /** Reads messages until one satisfies `test`; returns it and the ones skipped. */
  // deno-lint-ignore no-explicit-any
  async until(test: (message: any) => boolean, timeoutMs = 5_000): Promise<any[]> {
    const seen = [];
    while (true) {
      const message = await this.next(timeoutMs);
      seen.push(message);
      if (test(message)) return seen;
    }
  }
}

/** A Deno WebSocket client. */
export interface DenoClient {
  socket: WebSocket;
  inbox: Inbox;
  /** Closes (if open) and waits for the close to finish. */
  close(): Promise<Closed>;
}

/** Opens Deno's WebSocket; resolves once open (or closed, for a refused one). */
export async function denoClient(url: string, protocols?: string[]): Promise<DenoClient> {
  const socket = new WebSocket(url, protocols);
  const inbox = new Inbox();
  const opened = Promise.withResolvers<void>();
  socket.onopen = () => opened.resolve();
  socket.onmessage = (event) => inbox.push(event.data);
  socket.onerror = () => {};
  socket.onclose = (event) => {
    inbox.close({ code: event.code, reason: event.reason });
    opened.resolve();
  };
  await opened.promise;
  return {
    socket,
    inbox,
    close() {
      if (socket.readyState === WebSocket.OPEN) socket.close(1000);
      return inbox.closed;
    },
  };
}

/** An `npm:ws` client. */
export interface NodeClient {
  socket: NodeWebSocket;
  inbox: Inbox;
  /** Closes (if open) and waits for the close to finish. */
  close(): Promise<Closed>;
}

/** Opens an `npm:ws` client (custom headers, subprotocols, pongs); resolves once open or closed. */
export async function nodeClient(
  url: string,
  options: { headers?: Record<string, string>; protocols?: string[]; autoPong?: boolean } = {},
): Promise<NodeClient & { status?: number }> {
  const socket = new NodeWebSocket(url, options.protocols ?? [], {
    headers: options.headers,
    autoPong: options.autoPong ?? true,
  });
  const inbox = new Inbox();
  const opened = Promise.withResolvers<number | undefined>();
  socket.on("open", () => opened.resolve(undefined));
  socket.on("message", (data) => inbox.push(String(data)));
  socket.on("error", () => {});
  socket.on("unexpected-response", (_request, response) => {
    opened.resolve(response.statusCode);
    response.resume();
    socket.terminate();
  });
  socket.on("close", (code, reason) => {
    inbox.close({ code, reason: String(reason) });
    opened.resolve(undefined);
  });
  const status = await opened.promise;
  return {
    socket,
    inbox,
    status,
    close() {
      if (socket.readyState === NodeWebSocket.OPEN) socket.close(1000);
      return inbox.closed;
    },
  };
}

/** One Server-Sent Event as {@linkcode SseReader} reads it. */
export interface SseEvent {
  /** The `event:` field, `message` when absent. */
  event: string;
  /** The `data:` lines, parsed as JSON. */
  // deno-lint-ignore no-explicit-any
  data: any;
  /** The `id:` field, when sent. */
  id?: string;
}

/** Reads Server-Sent Events from a response body. */
export class SseReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  #ended = false;

  constructor(response: Response) {
    this.#reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event as `{event, data, id}` (data parsed as JSON, id when sent); skips comments. */
  async next(timeoutMs = 5_000): Promise<SseEvent> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`No event within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      while (true) {
        const end = this.#buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = this.#buffer.slice(0, end);
          this.#buffer = this.#buffer.slice(end + 2);
          const lines = block.split("\n").filter((line) => !line.startsWith(":"));
          if (lines.length === 0) continue;
          const event = lines.find((line) => line.startsWith("event: "))?.slice(7) ?? "message";
          const data = lines.filter((line) => line.startsWith("data: ")).map((line) =>
            line.slice(6)
          )
            .join("\n");
          const id = lines.find((line) => line.startsWith("id: "))?.slice(4);
          return { event, data: JSON.parse(data), ...(id === undefined ? {} : { id }) };
        }
        const { value, done } = await Promise.race([this.#reader.read(), timeout]);
        if (done) {
          this.#ended = true;
          throw new Error("Event stream ended");
        }
        this.#buffer += value;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads every event until the server ends the stream; rejects after `timeoutMs` without one. */
  async rest(timeoutMs = 5_000): Promise<SseEvent[]> {
    const events: SseEvent[] = [];
    while (true) {
      try {
        events.push(await this.next(timeoutMs));
      } catch (error) {
        if (this.#ended) return events;
        throw error;
      }
    }
  }

  /** Stops reading. */
  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }
}

/** Waits until `test()` holds, polling every 10 ms; throws after `timeoutMs`. */
export async function eventually(
  test: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`Condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** {@linkcode within}'s promise did not settle in time. */
export class NotSettledError extends Error {
  constructor(ms: number) {
    super(`Not settled within ${ms} ms`);
    this.name = "NotSettledError";
  }
}

/** Resolves like `promise`, or rejects after `ms`, so a socket that never closes fails the test. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new NotSettledError(ms)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The status line of a raw HTTP/1.1 request sent to `server` (fetch sends no `Upgrade`). */
export async function rawStatus(base: string, request: string): Promise<string> {
  const { hostname, port } = new URL(base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(new TextEncoder().encode(request));
    const buffer = new Uint8Array(4096);
    const read = await conn.read(buffer);
    return new TextDecoder().decode(buffer.subarray(0, read ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

/** A raw WebSocket handshake request for {@linkcode rawStatus}. */
export function rawUpgrade(
  path: string,
  options: { method?: string; upgrade?: string } = {},
): string {
  return `${options.method ?? "GET"} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
    `Upgrade: ${options.upgrade ?? "websocket"}\r\nConnection: Upgrade\r\n` +
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
}

/**
 * Sends the raw WebSocket upgrade of `path` (see {@linkcode rawUpgrade}) to `base` from a raw TCP
 * client that answers nothing, and reads the answer's status line and its body (by its
 * `Content-Length`, in bytes; none for a 101), decoded as UTF-8. The connection is the caller's to
 * close.
 */
export async function rawUpgradeAnswer(
  base: string,
  path: string,
): Promise<{ conn: Deno.Conn; status: string; body: string }> {
  const { hostname, port } = new URL(base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(new TextEncoder().encode(rawUpgrade(path)));
    let bytes = new Uint8Array(0);
    const buffer = new Uint8Array(4096);
    // Latin-1 keeps one character per byte, so lengths in the head's text are lengths in bytes.
    const latin1 = new TextDecoder("latin1");
    const complete = () => {
      const end = latin1.decode(bytes).indexOf("\r\n\r\n");
      if (end < 0) return false;
      const head = latin1.decode(bytes.subarray(0, end));
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      return bytes.length >= end + 4 + length;
    };
    while (!complete()) {
      const read = await within(conn.read(buffer), 10_000);
      if (read === null) break;
      const grown = new Uint8Array(bytes.length + read);
      grown.set(bytes);
      grown.set(buffer.subarray(0, read), bytes.length);
      bytes = grown;
    }
    const text = latin1.decode(bytes);
    const end = text.indexOf("\r\n\r\n");
    return {
      conn,
      status: text.slice(0, text.indexOf("\r\n")),
      body: end < 0 ? "" : new TextDecoder().decode(bytes.subarray(end + 4)),
    };
  } catch (error) {
    conn.close();
    throw error;
  }
}

/**
 * Reads `conn` for `ms` at most, handing each chunk to `take` (a view of a buffer of `bufferBytes`
 * reused for the next read): true when the connection ended (EOF, or reset), false when time ran
 * out first.
 */
export async function readChunksFor(
  conn: Deno.Conn,
  ms: number,
  take: (chunk: Uint8Array) => void,
  bufferBytes = 4096,
): Promise<boolean> {
  const buffer = new Uint8Array(bufferBytes);
  const deadline = performance.now() + ms;
  for (;;) {
    let read: number | null;
    try {
      read = await within(conn.read(buffer), Math.max(1, deadline - performance.now()));
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) return true;
      if (error instanceof NotSettledError) return false;
      throw error;
    }
    if (read === null) return true;
    take(buffer.subarray(0, read));
  }
}

/** Every byte the connection delivers until it ends (EOF, or reset), or for `ms` at most. */
export async function readAllFor(
  conn: Deno.Conn,
  ms: number,
): Promise<{ bytes: Uint8Array; closed: boolean }> {
  const chunks: Uint8Array[] = [];
  const closed = await readChunksFor(conn, ms, (chunk) => chunks.push(chunk.slice()));
  const bytes = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return { bytes, closed };
}

/**
 * Sends the WebSocket upgrade `request` (a raw head, see {@linkcode rawUpgrade}) from a raw TCP
 * client that then never answers anything, and reads for up to `ms` what the server sends: whether
 * it ended the connection, the answer's status line, and the close frame's code and reason.
 */
export async function silentUpgrade(
  server: TestServer,
  request: string,
  ms = 10_000,
): Promise<{ closed: boolean; status: string; code: number; reason: string }> {
  const { hostname, port } = new URL(server.base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    await conn.write(new TextEncoder().encode(request));
    const { bytes, closed } = await readAllFor(conn, ms);
    const text = new TextDecoder().decode(bytes);
    // The close frame follows the head: FIN and opcode 8, a short length, the code, the reason.
    const frames = bytes.subarray(text.indexOf("\r\n\r\n") + 4);
    return {
      closed,
      status: text.slice(0, text.indexOf("\r\n")),
      code: closeCodeIn(frames),
      reason: new TextDecoder().decode(frames.subarray(4, 2 + (frames[1] & 0x7f))),
    };
  } finally {
    conn.close();
  }
}

/**
 * A raw TCP WebSocket client: sends the handshake for `path`, reads the server's answer head
 * (and whatever came with it), then sends `frame` (masked, as a client's must be) and reads
 * nothing more: the connection is the caller's to read or close.
 */
export async function rawSocketSending(
  server: TestServer,
  path: string,
  frame: { opcode: number; payload: Uint8Array },
): Promise<{ conn: Deno.Conn; head: string; rest: Uint8Array }> {
  const { hostname, port } = new URL(server.base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(new TextEncoder().encode(rawUpgrade(path)));
  let received = new Uint8Array(0);
  let head = "";
  const buffer = new Uint8Array(4096);
  while (!head.includes("\r\n\r\n")) {
    const read = await within(conn.read(buffer), 10_000);
    if (read === null) break;
    received = new Uint8Array([...received, ...buffer.subarray(0, read)]);
    head = new TextDecoder("latin1").decode(received);
  }
  const rest = received.subarray(head.indexOf("\r\n\r\n") + 4);
  const { payload } = frame;
  const length = payload.length < 126
    ? [0x80 | payload.length]
    : [0x80 | 126, payload.length >> 8, payload.length & 0xff];
  // A zero mask leaves the payload as it is.
  const bytes = new Uint8Array([0x80 | frame.opcode, ...length, 0, 0, 0, 0, ...payload]);
  await conn.write(bytes);
  return { conn, head: head.slice(0, head.indexOf("\r\n")), rest };
}

/** The code of the close frame among the (unmasked) server frames in `bytes`, or `NaN`. */
export function closeCodeIn(bytes: Uint8Array): number {
  for (let at = 0; at + 2 <= bytes.length;) {
    const opcode = bytes[at] & 0x0f;
    let length = bytes[at + 1] & 0x7f;
    let start = at + 2;
    if (length === 126) {
      length = bytes[at + 2] * 256 + bytes[at + 3];
      start = at + 4;
    } else if (length === 127) {
      length = Number(new DataView(bytes.buffer, bytes.byteOffset + at + 2, 8).getBigUint64(0));
      start = at + 10;
    }
    if (opcode === 8) return bytes[start] * 256 + bytes[start + 1];
    at = start + length;
  }
  return NaN;
}
