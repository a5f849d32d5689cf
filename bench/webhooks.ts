/**
 * Webhook benchmark over real HTTP on loopback, in two parts:
 *
 * 1. Alert latency: under a steady background ingest load, single probe
 *    events each make an alert fire for a fresh group; measured from the
 *    ingest reply (in this process) to the receiver (also in this process)
 *    getting the signed `alert.fired`: p50, p99, max.
 * 2. Throughput: deliveries/s to one fast endpoint (`event.processed`, one
 *    event per delivery, default per-endpoint concurrency cap of 8).
 *
 * The edgestream server runs in its own process (memory store, then the Redis
 * store through the Upstash bridge in a third process); this process is the
 * load generator and the receiver, which verifies every signature with
 * `npm:standardwebhooks`.
 *
 * `deno task bench:webhooks [seconds] [background-events-per-second]`
 */
import { Webhook } from "standardwebhooks";
import { createApp } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { sweepOnce } from "../src/fanout/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { storeFromEnv, webhooksFromEnv } from "../src/env.ts";
import { isRedisServerInstalled, startRedisServer } from "../tools/redis_server.ts";
import {
  machineInfo,
  serveForBench,
  type ServerProcess,
  startBridge,
  startServer,
  writeResults,
} from "./_shared.ts";

const SECONDS = Number(Deno.args[0] === "serve" ? 0 : Deno.args[0] ?? 10);
const BACKGROUND_RATE = Number(Deno.args[1] ?? 10_000);
const PROBES_PER_SECOND = 50;
const THROUGHPUT_EVENTS = 20_000;

const CONFIG = {
  streams: {
    probe: {
      counters: {
        hits: {
          window: { tumbling: "1m" },
          groupBy: ["key"],
          aggregate: "count",
          maxGroups: 1_000_000,
        },
      },
      alerts: [{ name: "hit", counter: "hits", when: "value >= 1.0" }],
    },
    bulk: {
      counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

/** Server mode: the app with webhooks, as `src/main.ts` builds it, on a free port. */
async function serve(): Promise<void> {
  const streams = compileConfig(CONFIG);
  const store = storeFromEnv(Deno.env);
  const webhooks = webhooksFromEnv(Deno.env, { store, streams });
  const app = createApp({ streams, store, keys: await KeyRing.parse(""), webhooks });
  setInterval(() => {
    sweepOnce(streams.values(), store, { consumers: [webhooks] }).catch((error) =>
      console.error(`sweep failed: ${error}`)
    );
  }, 5_000);
  serveForBench(app.fetch);
}

/** Starts this file in server mode in its own process; resolves once it listens. */
function startWebhookServer(env: Record<string, string>): Promise<ServerProcess> {
  return startServer("serve", { env: env, script: new URL(import.meta.url) });
}

/** The receiver: records arrival times of probe alerts and counts deliveries. */
class BenchReceiver {
  arrivals = new Map<string, number>();
  events = 0;
  invalid = 0;
  secrets = new Map<string, Webhook>();
  #eventsWaiter: { count: number; resolve: () => void } | null = null;
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (request) => this.#handle(request),
    );
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.#server.addr.port}${path}`;
  }

  async #handle(request: Request): Promise<Response> {
    const body = await request.text();
    const at = performance.now();
    const path = new URL(request.url).pathname;
    try {
      this.secrets.get(path)!.verify(body, Object.fromEntries(request.headers));
    } catch {
      this.invalid += 1;
    }
    const payload = JSON.parse(body);
    if (payload.type === "alert.fired") {
      const key = payload.data.group.key as string;
      if (!this.arrivals.has(key)) this.arrivals.set(key, at);
    } else if (payload.type === "event.processed") {
      this.events += 1;
      if (this.#eventsWaiter && this.events >= this.#eventsWaiter.count) {
        this.#eventsWaiter.resolve();
        this.#eventsWaiter = null;
      }
    }
    return new Response(null, { status: 204 });
  }

  waitForEvents(count: number): Promise<void> {
    if (this.events >= count) return Promise.resolve();
    return new Promise((resolve) => this.#eventsWaiter = { count, resolve });
  }

  close(): Promise<void> {
    return this.#server.shutdown();
  }
}

async function post(url: string, body: unknown): Promise<Response> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res;
}

async function register(base: string, receiver: BenchReceiver, input: Record<string, unknown>) {
  const res = await fetch(`${base}/v1/webhooks`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(input),
  });
  const body = await res.json();
  if (res.status !== 201) throw new Error(`Registration failed: ${JSON.stringify(body)}`);
  receiver.secrets.set(new URL(input.url as string).pathname, new Webhook(body.secret));
  return body.id as string;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let runId = 0;

/** What one store's run measured. */
interface Measured {
  store: string;
  probes: number;
  backgroundEventsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  notArrived: number;
  ingestFailures: number;
  deliveries: number;
  deliveriesPerSecond: number;
  invalidSignatures: number;
}

async function measure(label: string, env: Record<string, string>): Promise<Measured> {
  runId += 1;
  const receiver = new BenchReceiver();
  const server = await startWebhookServer({ ...env, EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1" });
  try {
    const base = server.url;
    await register(base, receiver, { url: receiver.url("/alerts"), eventTypes: ["alert.fired"] });

    // Part 1: steady background load on the probe stream, probes on fresh groups.
    const deadline = performance.now() + SECONDS * 1000;
    const batch = 50;
    const batchesPerSecond = BACKGROUND_RATE / batch;
    let background = 0;
    let failures = 0;
    const loadWorkers = Array.from({ length: 4 }, async (_, worker) => {
      const interval = 4_000 / batchesPerSecond;
      let next = performance.now();
      while (performance.now() < deadline) {
        const events = Array.from(
          { length: batch },
          (_, i) => ({ key: `bg${(worker * batch + i) % 40}` }),
        );
        const res = await post(`${base}/v1/streams/probe/events`, events);
        if (res.status === 202) background += batch;
        else failures += 1;
        next += interval;
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
      }
    });
    const replies = new Map<string, number>();
    const probing = (async () => {
      let n = 0;
      while (performance.now() < deadline) {
        const key = `r${runId}p${n++}`;
        const res = await post(`${base}/v1/streams/probe/events`, [{ key }]);
        if (res.status === 202) replies.set(key, performance.now());
        await sleep(1_000 / PROBES_PER_SECOND);
      }
    })();
    await Promise.all([...loadWorkers, probing]);
    await sleep(500);
    const latencies: number[] = [];
    let missing = 0;
    for (const [key, replied] of replies) {
      const arrived = receiver.arrivals.get(key);
      if (arrived === undefined) missing += 1;
      else latencies.push(arrived - replied);
    }
    latencies.sort((a, b) => a - b);
    console.log(
      `${label}: alert.fired latency after the ingest reply, ${latencies.length} probes under ${
        (background / SECONDS).toFixed(0)
      } background events/s: p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${
        percentile(latencies, 0.99).toFixed(1)
      } ms, max ${latencies.at(-1)!.toFixed(1)} ms${missing ? `, ${missing} not yet arrived` : ""}${
        failures ? `, ${failures} ingest failures` : ""
      }`,
    );

    // Part 2: deliveries/s to one fast endpoint.
    await register(base, receiver, {
      url: receiver.url("/events"),
      eventTypes: ["event.processed"],
      streams: ["bulk"],
    });
    const started = performance.now();
    const perBatch = 100;
    let sent = 0;
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (sent < THROUGHPUT_EVENTS) {
        sent += perBatch;
        const events = Array.from({ length: perBatch }, (_, i) => ({ n: sent + i }));
        await post(`${base}/v1/streams/bulk/events`, events);
      }
    }));
    const ingested = performance.now();
    await receiver.waitForEvents(THROUGHPUT_EVENTS);
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `${label}: ${THROUGHPUT_EVENTS} event.processed deliveries to one endpoint in ${
        seconds.toFixed(2)
      } s: ${(THROUGHPUT_EVENTS / seconds).toFixed(0)} deliveries/s (ingest took ${
        ((ingested - started) / 1000).toFixed(2)
      } s); signatures failing verification: ${receiver.invalid}`,
    );
    return {
      store: label,
      probes: latencies.length,
      backgroundEventsPerSecond: background / SECONDS,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      maxMs: latencies.at(-1)!,
      notArrived: missing,
      ingestFailures: failures,
      deliveries: THROUGHPUT_EVENTS,
      deliveriesPerSecond: THROUGHPUT_EVENTS / seconds,
      invalidSignatures: receiver.invalid,
    };
  } finally {
    await server.stop();
    await receiver.close();
  }
}

if (Deno.args[0] === "serve") {
  await serve();
} else {
  const machine = await machineInfo();
  const rows = [await measure("memory", {})];
  if (isRedisServerInstalled()) {
    const redis = await startRedisServer();
    const token = crypto.randomUUID();
    const bridge = await startBridge(redis.url, token);
    try {
      rows.push(
        await measure("redis", {
          UPSTASH_REDIS_REST_URL: bridge.url,
          UPSTASH_REDIS_REST_TOKEN: token,
          EDGESTREAM_PREFIX: "bench",
        }),
      );
    } finally {
      await bridge.stop();
      await redis.stop();
    }
  } else {
    console.log("redis-server is not installed: the Redis part is skipped");
  }
  console.log(`\nresults: ${await writeResults("webhooks", { bench: "webhooks", machine, rows })}`);
}
