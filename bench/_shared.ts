/**
 * Pieces every benchmark shares: a server subprocess, the events it is fed, the
 * closed-loop load, redis-server command stats, and the results file.
 */
import v8 from "node:v8";
import { fileURLToPath } from "node:url";

/** A `bench/server.ts` process. */
export interface ServerProcess {
  /** Its process id. */
  pid: number;
  /** Its port on 127.0.0.1. */
  port: number;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** Stops it and waits for it to exit. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startServer}. */
export interface StartServerOptions {
  /** Its environment. @default {this process's} */
  env?: Record<string, string>;
  /** The script to run. @default {`bench/server.ts`} */
  script?: URL;
  /** More `deno run` flags (e.g. `--cpu-prof`). */
  denoArgs?: string[];
}

/**
 * Starts `<script> <mode>` (default `bench/server.ts`) and waits for its
 * `listening <port>` line.
 */
export async function startServer(
  mode: string,
  options: StartServerOptions = {},
): Promise<ServerProcess> {
  const script = options.script ?? new URL("./server.ts", import.meta.url);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", ...options.denoArgs ?? [], fileURLToPath(script), mode],
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Raw bytes: only the lines up to `listening` are decoded, so the load generator spends no time
  // on the server's request log lines.
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!/listening (\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Server ${mode} exited before listening`);
    text += decoder.decode(value, { stream: true });
  }
  const port = Number(/listening (\d+)/.exec(text)![1]);
  // Keep draining stdout so the child never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  return {
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
    },
  };
}

let sequence = 0;
const COUNTRIES = Array.from({ length: 20 }, (_, i) => `C${i}`);
const RUN = crypto.randomUUID().slice(0, 8);
const ID = "#ID#";

function event(now: number, id: string, n: number) {
  return {
    id,
    ts: now - (n % 1000),
    country: COUNTRIES[n % COUNTRIES.length],
    amount: (n % 197) + 0.5,
    user: `u${n % 5000}`,
  };
}

/** Batch texts with `#ID#` where each id's unique part goes, per size, rebuilt every second. */
const templates = new Map<number, { text: string; builtAt: number }>();

/**
 * JSON text of `size` events for the `bench` stream of `bench/config.json`:
 * unique ids (also across processes), times within the last second, 20
 * countries, 5000 users, one amount in two ≥ 100 (the `big` field of the set
 * transform). Made from a template refreshed every second, so that the load
 * generator spends little time per request (it shares the machine with the
 * servers it measures).
 */
export function makeBatch(size: number): string {
  const now = Date.now();
  let template = templates.get(size);
  if (!template || now - template.builtAt > 1000) {
    const events = [];
    for (let i = 0; i < size; i++) events.push(event(now, `${ID}-${i}`, sequence + i));
    template = { text: JSON.stringify(events), builtAt: now };
    templates.set(size, template);
  }
  sequence += size;
  return template.text.replaceAll(ID, `${RUN}-${sequence}`);
}

/** JSON text of one event object (not an array), as a single-event client sends it. */
export function makeEvent(): string {
  sequence += 1;
  return JSON.stringify(event(Date.now(), `${RUN}-${sequence}`, sequence));
}

/** What a closed-loop load run saw. */
export interface LoadResult {
  /** Requests answered with the expected status. */
  requests: number;
  /** Events in those requests. */
  events: number;
  /** Requests answered otherwise, or failed. */
  errors: number;
  /** First status other than the expected one, for the error message. */
  firstError?: string;
  /** Wall time of the run (s). */
  seconds: number;
  /** Latency of each answered request (ms), sorted. */
  latencies: number[];
}

/** Options for {@linkcode closedLoop}. */
export interface ClosedLoopOptions {
  /** Concurrent clients, each sending its next request when the last was answered. */
  clients: number;
  /** How long to run (s). */
  seconds: number;
  /** Events per request. */
  batch: number;
  /** Extra request headers (e.g. `Authorization`). */
  headers?: Record<string, string>;
  /** Headers of one request, added to `headers` (e.g. a fresh `Idempotency-Key`). */
  headersOf?: () => Record<string, string>;
  /** Pause (ms) of a client between an answer and its next request, for a load below saturation. @default {0} */
  pauseMs?: number;
  /** The status a request must get to count. @default {202} */
  status?: number;
  /** The body of one request. @default a `makeBatch(batch)` array, or one event for batch 1 */
  body?: () => string;
}

/**
 * Closed-loop load: `clients` concurrent clients POST batches to `url` for
 * `seconds`. Every benchmark that ingests over HTTP uses this one loop.
 */
export async function closedLoop(url: string, options: ClosedLoopOptions): Promise<LoadResult> {
  const { clients, seconds, batch, status = 202 } = options;
  const body = options.body ?? (() => batch === 1 ? makeEvent() : makeBatch(batch));
  const deadline = performance.now() + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  async function client() {
    while (performance.now() < deadline) {
      const sent = performance.now();
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            ...options.headers,
            ...options.headersOf?.(),
          },
          body: body(),
        });
        const text = await res.text();
        if (res.status === status) latencies.push(performance.now() - sent);
        else {
          errors += 1;
          firstError ??= `status ${res.status}: ${text.slice(0, 200)}`;
        }
      } catch (error) {
        errors += 1;
        firstError ??= String(error);
      }
      if (options.pauseMs) await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
    }
  }
  await Promise.all(Array.from({ length: clients }, client));
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    events: latencies.length * batch,
    errors,
    firstError,
    seconds: (performance.now() - started) / 1000,
    latencies,
  };
}

/** The `p` quantile (0–1) of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

/** The median of values (the upper one of an even count). */
export function median(values: readonly number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}

/** A text table; columns in `left` are left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][], left: number[]): string {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => row[i].length))
  );
  const line = (cells: string[]) =>
    cells.map((cell, i) => left.includes(i) ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))
      .join("  ").trimEnd();
  return [line(header), widths.map((width) => "-".repeat(width)).join("  "), ...rows.map(line)]
    .join("\n");
}

/** Per-command totals of a redis-server (`INFO commandstats`). */
export type CommandStats = Map<string, { calls: number; usec: number }>;

/** Reads `INFO commandstats` of the redis-server on `port` through `redis-cli`. */
export async function commandStats(port: number): Promise<CommandStats> {
  const output = await new Deno.Command("redis-cli", {
    args: ["-p", String(port), "INFO", "commandstats"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const stats: CommandStats = new Map();
  for (const line of new TextDecoder().decode(output.stdout).split("\n")) {
    const match = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
    if (match) stats.set(match[1], { calls: Number(match[2]), usec: Number(match[3]) });
  }
  return stats;
}

/** CPU seconds (user + system) of a redis-server's main thread, from `INFO cpu`. */
export async function redisCpuSeconds(port: number): Promise<number> {
  const output = await new Deno.Command("redis-cli", {
    args: ["-p", String(port), "INFO", "cpu"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const read = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(text)?.[1] ?? 0);
  return read("used_cpu_user_main_thread") + read("used_cpu_sys_main_thread");
}

/** What changed between two {@linkcode commandStats} readings. */
export function commandStatsDelta(before: CommandStats, after: CommandStats): CommandStats {
  const delta: CommandStats = new Map();
  for (const [name, now] of after) {
    const then = before.get(name) ?? { calls: 0, usec: 0 };
    if (now.calls > then.calls) {
      delta.set(name, { calls: now.calls - then.calls, usec: now.usec - then.usec });
    }
  }
  return delta;
}

/**
 * Serves `handler` on a free port of 127.0.0.1 and prints the `listening <port>` line that
 * {@linkcode startServer} waits for: the child's side of it.
 */
export function serveForBench(handler: Deno.ServeHandler): Deno.HttpServer {
  return Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen: ({ port }) => console.log(`listening ${port}`),
  }, handler);
}

/**
 * Starts the Upstash REST bridge (`bench/server.ts bridge`) to the redis-server at `redisUrl`,
 * answering requests that carry `token`.
 */
export function startBridge(redisUrl: string, token: string): Promise<ServerProcess> {
  return startServer("bridge", {
    env: {
      BENCH_REDIS_URL: redisUrl,
      UPSTASH_REDIS_REST_TOKEN: token,
    },
  });
}

/** Starts the counting Upstash proxy (`bench/_proxy_server.ts`) in front of `targetUrl`. */
export function startProxy(targetUrl: string): Promise<ServerProcess> {
  return startServer("proxy", {
    env: { BENCH_TARGET_URL: targetUrl },
    script: new URL("./_proxy_server.ts", import.meta.url),
  });
}

/** The CPUs this process may run on, in order (Linux's `/proc/self/status`; none elsewhere). */
export function allowedCpus(): number[] {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1] ?? "";
    return list.split(",").flatMap((range) => {
      const [from, to = from] = range.split("-").map(Number);
      return Array.from({ length: to - from + 1 }, (_, i) => from + i);
    });
  } catch {
    return [];
  }
}

/** The machine a benchmark ran on, written with its results. */
export interface MachineInfo {
  /** CPU model from /proc/cpuinfo. */
  cpu: string;
  /** Logical cores. */
  cores: number;
  /** Deno, V8 and TypeScript versions. */
  deno: typeof Deno.version;
  /** Load averages (1, 5, 15 min) when the run started. */
  loadAverage: number[];
  /** Operating system. */
  os: string;
  /** redis-server's version line, when it is installed. */
  redis?: string;
}

/** Describes this machine now (call it when the run starts, for the load average). */
export async function machineInfo(): Promise<MachineInfo> {
  let cpu = "unknown";
  try {
    const text = await Deno.readTextFile("/proc/cpuinfo");
    cpu = /^model name\s*:\s*(.+)$/m.exec(text)?.[1] ?? cpu;
  } catch { /* not Linux */ }
  let redis: string | undefined;
  try {
    const output = await new Deno.Command("redis-server", { args: ["--version"], stdout: "piped" })
      .output();
    redis = new TextDecoder().decode(output.stdout).trim();
  } catch { /* not installed */ }
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    deno: Deno.version,
    loadAverage: Deno.loadavg(),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    redis,
  };
}

/** The load averages (1, 5, 15 min) of `machine`, two decimals each, for its summary line. */
export function loadAverageText(machine: MachineInfo): string {
  return machine.loadAverage.map((value) => value.toFixed(2)).join(" ");
}

/**
 * Writes `bench/results/<name>-<timestamp>.json` with the machine and the
 * results; returns its path.
 */
export async function writeResults(
  name: string,
  data: Record<string, unknown>,
): Promise<string> {
  const directory = new URL("./results/", import.meta.url);
  await Deno.mkdir(directory, { recursive: true });
  const stamp = new Date().toISOString().replaceAll(":", "-").replace(/\.\d+Z$/, "Z");
  const path = fileURLToPath(new URL(`${name}-${stamp}.json`, directory));
  await Deno.writeTextFile(path, JSON.stringify(data, null, 2) + "\n");
  return path;
}

/** Heap bytes this process allocated so far (V8 reports it; Node's types do not list it yet). */
export function allocatedBytes(): number {
  return (v8.getHeapStatistics() as unknown as { total_allocated_bytes: number })
    .total_allocated_bytes;
}

/** CPU seconds a process has used so far, all threads (Linux `/proc/<pid>/stat`, in ticks of 10 ms). */
export function processCpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * The environment of a server on the `bench` config (`bench/config.json`) that admits `key` for
 * ingest: this process's (certificates, proxies, the package cache) with port 0 on loopback.
 */
export function benchServerEnv(key: string): Record<string, string> {
  return {
    ...Deno.env.toObject(),
    PORT: "0",
    HOST: "127.0.0.1",
    EDGESTREAM_CONFIG: fileURLToPath(new URL("./config.json", import.meta.url)),
    EDGESTREAM_KEYS: `ingest:${key}`,
  };
}
