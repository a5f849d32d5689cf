/**
 * A counting HTTP proxy in front of an Upstash REST endpoint (the bridge): it records every
 * request a client makes, so tests and benchmarks can count store round trips and billed Redis
 * commands, and it can lose a reply on demand. And {@linkcode startDroppingProxy}, one at the TCP
 * level that can close a connection with no reply at all.
 *
 * @example
 * ```ts
 * const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
 * const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
 * await redis.ping();
 * proxy.take(); // [{ path: "/pipeline", commands: [["ping"]], status: 200 }]
 * await proxy.close();
 * ```
 *
 * @module
 */

/** One HTTP request the proxy forwarded. */
export interface ProxiedRequest {
  /** Endpoint: `/`, `/pipeline` or `/multi-exec`. */
  path: string;
  /** The commands in the body, as sent (command name first). */
  commands: unknown[][];
  /** Size of the request body, in bytes. */
  bytes: number;
  /** Status the upstream answered with. */
  status: number;
  /** Whether the proxy dropped the reply instead of passing it on. */
  replyLost: boolean;
}

/** Options for {@linkcode startUpstashProxy}. */
export interface UpstashProxyOptions {
  /** Base URL of the Upstash REST endpoint to forward to. */
  targetUrl: string;
  /**
   * Refuses a request whose body is larger (bytes), as Upstash refuses one over its max request
   * size: HTTP 400 `{"error": "ERR max request size exceeded"}`, nothing forwarded. The request is
   * still recorded, with status 400. @default {Infinity}
   */
  maxRequestBytes?: number;
}

/** A running proxy started by {@linkcode startUpstashProxy}. */
export interface UpstashProxy {
  /** Base URL to give the client as `url`. */
  readonly url: string;
  /** Returns the requests forwarded since the last call, oldest first, and forgets them. */
  take(): ProxiedRequest[];
  /**
   * Forwards the next request whose commands match, then drops its reply: the commands ran,
   * but the client sees the connection fail.
   */
  loseNextReply(match: (commands: unknown[][]) => boolean): void;
  /** Stops the proxy. */
  close(): Promise<void>;
}

/**
 * Billed Redis commands of one request, as Upstash counts them: one for `POST /`, one per
 * command of a `/pipeline` or `/multi-exec` body.
 */
export function billedCommands(request: ProxiedRequest): number {
  return request.commands.length;
}

/** Lower-case names of the commands of a request, e.g. `["evalsha"]`. */
export function commandNames(request: ProxiedRequest): string[] {
  return request.commands.map((command) => String(command[0]).toLowerCase());
}

/** Starts the proxy on a free loopback port. */
export function startUpstashProxy(options: UpstashProxyOptions): Promise<UpstashProxy> {
  const target = options.targetUrl.replace(/\/$/, "");
  const maxRequestBytes = options.maxRequestBytes ?? Infinity;
  let requests: ProxiedRequest[] = [];
  const losses: Array<(commands: unknown[][]) => boolean> = [];

  async function handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    const body = await request.text();
    const commands = commandsOf(path, body);
    const bytes = new TextEncoder().encode(body).length;
    if (bytes > maxRequestBytes) {
      requests.push({ path, commands, bytes, status: 400, replyLost: false });
      return Response.json({ error: "ERR max request size exceeded" }, { status: 400 });
    }
    const headers = new Headers(request.headers);
    headers.delete("host");
    headers.delete("content-length");
    const upstream = await fetch(`${target}${path}`, {
      method: request.method,
      headers,
      body: request.method === "GET" || request.method === "HEAD" ? undefined : body,
    });
    const reply = await upstream.arrayBuffer();
    const lossIndex = losses.findIndex((match) => match(commands));
    const replyLost = lossIndex >= 0;
    if (replyLost) losses.splice(lossIndex, 1);
    requests.push({
      path,
      commands,
      bytes,
      status: upstream.status,
      replyLost,
    });
    if (replyLost) {
      // Headers go out, then the body fails: the client's read of the reply throws.
      return new Response(
        new ReadableStream({
          start(controller) {
            controller.error(new Error("Reply lost on purpose by the test proxy"));
          },
        }),
        { status: upstream.status, headers: { "content-type": "application/json" } },
      );
    }
    return new Response(reply, { status: upstream.status, headers: upstream.headers });
  }

  return new Promise((resolve) => {
    const server = Deno.serve({
      port: 0,
      hostname: "127.0.0.1",
      onListen({ port }) {
        resolve({
          url: `http://127.0.0.1:${port}`,
          take() {
            const taken = requests;
            requests = [];
            return taken;
          },
          loseNextReply(match) {
            losses.push(match);
          },
          close: () => server.shutdown(),
        });
      },
    }, handle);
  });
}

function commandsOf(path: string, body: string): unknown[][] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  if (path === "/") return [parsed];
  return parsed.filter((item): item is unknown[] => Array.isArray(item));
}

/** Writes all of `bytes` (one `write` may take only part of them). */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** A running proxy started by {@linkcode startDroppingProxy}. */
export interface DroppingProxy {
  /** Base URL to give the client as `url`. */
  readonly url: string;
  /** Requests whose connection it closed so far. */
  readonly dropped: number;
  /** Requests it read so far. */
  readonly received: number;
  /**
   * Forwards the next request whose commands match and waits for its reply, then closes the
   * connection before a byte of that reply: the commands ran, but no HTTP response ever came.
   * With `thenRefuse`, it also stops listening then, so connections after it are refused; with
   * `holdMs`, it keeps the connection open that long first, answering nothing.
   */
  dropNextConnection(
    match: (commands: unknown[][]) => boolean,
    options?: { thenRefuse?: boolean; holdMs?: number },
  ): void;
  /** Stops the proxy and closes its connections. */
  close(): Promise<void>;
}

/**
 * A proxy at the TCP level in front of an Upstash REST endpoint, for what an HTTP server cannot
 * do: close a connection with no response at all (a connection lost after the request went out,
 * before the reply's status line). It speaks just enough HTTP/1.1 for a `fetch` client: one
 * request at a time per connection, bodies with a Content-Length.
 */
export function startDroppingProxy(options: UpstashProxyOptions): DroppingProxy {
  const target = options.targetUrl.replace(/\/$/, "");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections = new Set<Deno.Conn>();
  const drops: Array<{
    match: (commands: unknown[][]) => boolean;
    thenRefuse: boolean;
    holdMs: number;
  }> = [];
  let dropped = 0;
  let received = 0;
  /** Connections held open (`holdMs`), each let go at its end or when the proxy closes. */
  const holds = new Map<ReturnType<typeof setTimeout>, () => void>();
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  async function serve(conn: Deno.Conn): Promise<void> {
    let buffer = new Uint8Array(0);
    const fill = async (): Promise<boolean> => {
      const chunk = new Uint8Array(64 * 1024);
      const read = await conn.read(chunk);
      if (read === null) return false;
      const joined = new Uint8Array(buffer.length + read);
      joined.set(buffer);
      joined.set(chunk.subarray(0, read), buffer.length);
      buffer = joined;
      return true;
    };
    while (true) {
      let end: number;
      while ((end = decoder.decode(buffer).indexOf("\r\n\r\n")) < 0) {
        if (!await fill()) return;
      }
      const head = decoder.decode(buffer.subarray(0, end)).split("\r\n");
      const [method, path] = head[0].split(" ");
      const headers = new Headers();
      for (const line of head.slice(1)) {
        const colon = line.indexOf(":");
        headers.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
      const length = Number(headers.get("content-length") ?? "0");
      while (buffer.length < end + 4 + length) {
        if (!await fill()) return;
      }
      const body = decoder.decode(buffer.subarray(end + 4, end + 4 + length));
      received += 1;
      buffer = buffer.slice(end + 4 + length);
      // Every header but the connection's own (the client asks e.g. `Upstash-Encoding: base64`).
      for (const name of ["host", "content-length", "connection", "keep-alive"]) {
        headers.delete(name);
      }
      const upstream = await fetch(`${target}${path}`, {
        method,
        headers,
        body: method === "GET" || method === "HEAD" ? undefined : body,
      });
      const reply = new Uint8Array(await upstream.arrayBuffer());
      const drop = drops.findIndex(({ match }) => match(commandsOf(path, body)));
      if (drop >= 0) {
        const [{ thenRefuse, holdMs }] = drops.splice(drop, 1);
        if (holdMs > 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              holds.delete(timer);
              resolve();
            }, holdMs);
            holds.set(timer, () => {
              clearTimeout(timer);
              resolve();
            });
          });
        }
        dropped += 1;
        if (thenRefuse) stopListening();
        return; // closed by the caller, nothing written
      }
      await writeAll(
        conn,
        encoder.encode(
          `HTTP/1.1 ${upstream.status} ${upstream.statusText || "OK"}\r\n` +
            `content-type: application/json\r\ncontent-length: ${reply.length}\r\n\r\n`,
        ),
      );
      await writeAll(conn, reply);
    }
  }

  let listening = true;
  const stopListening = () => {
    if (listening) listener.close();
    listening = false;
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      connections.add(conn);
      serve(conn).catch(() => {}).finally(() => {
        connections.delete(conn);
        try {
          conn.close();
        } catch { /* closed already */ }
      });
    }
  })();

  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}`,
    get dropped() {
      return dropped;
    },
    get received() {
      return received;
    },
    dropNextConnection(match, options = {}) {
      drops.push({
        match,
        thenRefuse: options.thenRefuse ?? false,
        holdMs: options.holdMs ?? 0,
      });
    },
    async close() {
      for (const letGo of holds.values()) letGo();
      holds.clear();
      stopListening();
      await accepting.catch(() => {});
      for (const conn of connections) {
        try {
          conn.close();
        } catch { /* closed already */ }
      }
    },
  };
}
