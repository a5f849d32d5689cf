/**
 * `src/main.ts` (or `deploy/main.ts`) as a child process, as a user starts
 * it: `deno run --cached-only` with the machine's environment (certificates,
 * proxies) plus the given variables, on port 0, its port read from its
 * "listening on" line; and what either one's probes answer while it starts
 * ({@linkcode probesWhileStarting}), in a child process or in this one.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/**
 * The permission flags of `deno task start`, read from deno.json: tests run
 * the server with what users run it with, so a permission it lacks fails
 * here too.
 */
export const START_FLAGS: readonly string[] = (() => {
  const words: string[] = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks.start
    .split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.indexOf("src/main.ts"));
})();

/** Variables of the machine's environment that would change the server; given ones win. */
const CLEARED = [
  "EDGESTREAM_KEYS",
  "EDGESTREAM_CONFIG",
  "EDGESTREAM_PREFIX",
  "EDGESTREAM_SWEEP_EVERY",
  "EDGESTREAM_SHUTDOWN",
  "EDGESTREAM_WEBHOOK_ALLOW",
  "UPSTASH_REDIS_REST_URL",
  "UPSTASH_REDIS_REST_TOKEN",
];

/** Options for {@linkcode startServerProcess}. */
export interface ServerProcessOptions {
  /**
   * Entry point, from the repository root. Another than `src/main.ts` (that
   * is, `deploy/main.ts`) listens where `DENO_SERVE_ADDRESS` says: 127.0.0.1,
   * port 0. @default {"src/main.ts"}
   */
  entry?: string;
  /**
   * The process's open-file limit (`ulimit -n`, soft and hard), set by the shell that starts it.
   * @default {the test process's own}
   */
  openFileLimit?: number;
  /**
   * The `deno` arguments in place of `run --cached-only <start flags> <entry>`: another way
   * users run it, such as `deno task dev`'s watcher (`devArgs()` of tools/dev.ts).
   * @default {as `deno task start` runs it}
   */
  denoArgs?: readonly string[];
}

/** A running `src/main.ts`. */
export interface ServerProcess {
  /** Name in failure messages. */
  name: string;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** The port it listens on. */
  port: number;
  /** Everything it printed so far. */
  output(): string;
  /** Settles when it exited, with its status. */
  status: Promise<Deno.CommandStatus>;
  /** Sends a signal (nothing once it exited). */
  signal(signal: Deno.Signal): void;
  /**
   * SIGTERM (unless it exited) and waits for the exit and its output; SIGKILL
   * after `graceMs`: a `main.ts` with `OTEL_DENO=true` was seen staying alive
   * in Deno's own exit after a clean stop (denoland/deno#33157), which must
   * not hang the whole run. @default {20_000}
   */
  stop(graceMs?: number): Promise<Deno.CommandStatus>;
}

/**
 * Starts `src/main.ts` with `vars` over the machine's environment, listening
 * on 127.0.0.1 port 0; resolves once it prints its address.
 */
export async function startServerProcess(
  name: string,
  vars: Record<string, string>,
  options: ServerProcessOptions = {},
): Promise<ServerProcess> {
  const env: Record<string, string> = { ...Deno.env.toObject() };
  for (const variable of CLEARED) delete env[variable];
  const entry = options.entry ?? "src/main.ts";
  Object.assign(env, { NO_COLOR: "1", PORT: "0", HOST: "127.0.0.1" }, vars);
  if (entry !== "src/main.ts") env.DENO_SERVE_ADDRESS = "tcp:127.0.0.1:0";
  const run = [
    Deno.execPath(),
    ...options.denoArgs ?? ["run", "--cached-only", ...START_FLAGS, entry],
  ];
  const limit = options.openFileLimit;
  const [command, ...args] = limit === undefined
    ? run
    : ["/bin/sh", "-c", `ulimit -n ${Math.trunc(limit)} && exec "$@"`, "sh", ...run];
  const child = new Deno.Command(command, {
    args,
    cwd: ROOT,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let printed = "";
  const listening = Promise.withResolvers<number>();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      printed += text;
      // Ours says "listening on", Deno.serve's default "Listening on".
      const match = /listening on http:\/\/[^\s]*:(\d+)/i.exec(printed);
      if (match) listening.resolve(Number(match[1]));
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const status = child.status.then(async (status) => {
    await drained;
    return status;
  });
  let exited = false;
  status.then(() => exited = true);
  const signal = (signal: Deno.Signal) => {
    if (exited) return;
    try {
      child.kill(signal);
    } catch {
      // Exited meanwhile.
    }
  };

  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    listening.promise,
    status.then(() => "exited" as const),
    new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), 30_000)),
  ]);
  clearTimeout(timer);
  if (typeof outcome !== "number") {
    signal("SIGKILL");
    await status;
    throw new Error(`Server ${name} ${outcome} before listening:\n${printed}`);
  }
  return {
    name,
    url: `http://127.0.0.1:${outcome}`,
    port: outcome,
    output: () => printed,
    status,
    signal,
    async stop(graceMs = 20_000) {
      signal("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stopped = await Promise.race([
        status.then(() => true),
        new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), graceMs)),
      ]);
      clearTimeout(timer);
      if (!stopped) signal("SIGKILL");
      return await status;
    },
  };
}

/**
 * A copy of what the server and `deno task dev` run (`src/`, `tools/`, `examples/`, `deno.json`,
 * `deno.lock`) in a new temporary folder under a folder named with a space (`my projects/`), as a
 * checkout may be; returns its path. The caller removes `dirname` of it.
 */
export async function checkoutWithSpace(): Promise<string> {
  const parent = await Deno.makeTempDir({ prefix: "edgestream-checkout-" });
  const copy = `${parent}/my projects/edgestream`;
  await Deno.mkdir(copy, { recursive: true });
  const { success, stderr } = await new Deno.Command("cp", {
    args: ["-R", "src", "tools", "examples", "deno.json", "deno.lock", copy],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`Cannot copy the checkout: ${new TextDecoder().decode(stderr)}`);
  return copy;
}

/** A listener that takes connections and never answers them, for a store that hangs. */
export interface SilentListener {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** Closes the listener and the connections it took. */
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1 and holds every connection unanswered: a "Redis" REST endpoint that is
 * reachable and never replies, so each call waits for the store's deadline.
 */
export function silentListener(): SilentListener {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${listener.addr.port}`,
    async close() {
      listener.close();
      for (const conn of held) conn.close();
      await accepting;
    },
  };
}

/**
 * How long (ms) a probe asked before the server is ready may take: far more than one answered at
 * once needs on a loaded machine, so that only a probe held until ready fails.
 */
export const PROBE_WAIT_MS = 5_000;

/**
 * Asks `/healthz` and `/readyz` of the server at `base` while its webhook endpoints are still
 * loading, as `src/main.ts` and `deploy/main.ts` both answer then: `/healthz` 200 and `/readyz`
 * 503 `starting` with `Retry-After: 1`, each at once (a probe that waits for the loading times
 * out after {@linkcode PROBE_WAIT_MS}). Gives `/readyz`'s body.
 */
export async function probesWhileStarting(base: string): Promise<Record<string, unknown>> {
  const health = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(PROBE_WAIT_MS) });
  assert.equal(health.status, 200);
  await health.body?.cancel();
  const ready = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(PROBE_WAIT_MS) });
  assert.equal(ready.status, 503);
  assert.equal(ready.headers.get("Retry-After"), "1");
  const body = await ready.json();
  assert.equal(body.status, "starting");
  return body;
}
