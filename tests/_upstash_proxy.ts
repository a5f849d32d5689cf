/**
 * A counting HTTP proxy in front of an Upstash REST endpoint (the bridge): it records every
 * request a client makes, so tests and benchmarks can count store round trips and billed Redis
 * commands, and it can lose a reply on demand.
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
  let requests: ProxiedRequest[] = [];
  const losses: Array<(commands: unknown[][]) => boolean> = [];

  async function handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    const body = await request.text();
    const commands = commandsOf(path, body);
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
      bytes: new TextEncoder().encode(body).length,
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
