/**
 * Redis commands one sweep costs (the `INFO commandstats` delta, every command the server ran,
 * those of scripts included) with 1, 100 and 1,000 idle streams, and with 1,000 of which 10 get
 * an event before each sweep; and with 1,000 idle streams and one webhook endpoint (of
 * `alert.fired` only, so nothing is delivered): the dispatch's share of a sweep; and with 1,000 idle
 * streams each swept by a new store (a process that has not swept them, as an isolate started for
 * Deno Deploy's cron run).
 *
 * Each stream is the one of probe 15's defect 7 (processing time, a tumbling 1m count grouped by
 * `g` and a sliding 10m / 1m sum), fed one event 20 minutes ago: every window of it is closed by
 * the first sweep, its panes still live. A sweep runs `sweepOnce` (no webhook endpoints) on a
 * `RedisStore` through the Upstash REST bridge, as `src/main.ts` does. Sweeps: one to close the
 * backlog (not counted), then `--sweeps` counted.
 *
 * `deno task bench:sweep-idle [--port 7630] [--sweeps 3]`
 */
import { parseArgs } from "node:util";
import { Redis } from "@upstash/redis";
import { compileConfig } from "../src/config/mod.ts";
import { sweepOnce } from "../src/fanout/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { webhooksFromEnv } from "../src/env.ts";
import { RedisStore } from "../src/store/redis/store.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { commandStats, commandStatsDelta } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "7630" },
    sweeps: { type: "string", default: "3" },
  },
});
const SWEEPS = Number(flags.sweeps);

const definition = {
  counters: {
    c: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
    s: { window: { sliding: "10m", precision: "1m" }, aggregate: { sum: "v" } },
  },
};

async function run(
  streamCount: number,
  busy: number,
  endpoint: boolean,
  fresh: boolean,
): Promise<Record<string, number>> {
  const server = await startRedisServer({ port: Number(flags.port) });
  const bridge = await startUpstashBridge({ redisUrl: server.url, token: "bench-token" });
  try {
    const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
    const store = new RedisStore(redis);
    const names = Array.from({ length: streamCount }, (_, i) => `s${String(i).padStart(4, "0")}`);
    const streams = compileConfig({
      streams: Object.fromEntries(names.map((name) => [name, definition])),
    });
    const vars = new Map([
      ["UPSTASH_REDIS_REST_URL", bridge.url],
      ["UPSTASH_REDIS_REST_TOKEN", bridge.token],
      ["EDGESTREAM_WEBHOOK_ALLOW", "127.0.0.1"],
    ]);
    const webhooks = endpoint
      ? webhooksFromEnv({ get: (name) => vars.get(name) }, { store, streams })
      : undefined;
    await webhooks?.createEndpoint({ url: "http://127.0.0.1:9/hook", eventTypes: ["alert.fired"] });
    const consumers = webhooks ? [webhooks] : [];
    const past = Date.now() - 20 * 60_000;
    for (const stream of streams.values()) {
      await ingestItems(stream, [{ ok: true, value: { g: "a", v: 1 } }], {
        store,
        nowMs: past,
      });
    }
    await sweepOnce(streams.values(), store, { consumers });
    let total = new Map<string, { calls: number; usec: number }>();
    for (let i = 0; i < SWEEPS; i++) {
      for (const name of names.slice(0, busy)) {
        await ingestItems(streams.get(name)!, [{ ok: true, value: { g: "b", v: 2 } }], {
          store,
          nowMs: Date.now(),
        });
      }
      const before = await commandStats(server.port);
      // A process that has not swept yet (an isolate started for a cron run) knows only Redis.
      await sweepOnce(streams.values(), fresh ? new RedisStore(redis) : store, { consumers });
      const delta = commandStatsDelta(before, await commandStats(server.port));
      // The INFO call itself is counted in the second snapshot: left out.
      const info = delta.get("info");
      if (info) info.calls -= 1;
      for (const [name, stat] of delta) {
        const sum = total.get(name) ?? { calls: 0, usec: 0 };
        total.set(name, { calls: sum.calls + stat.calls, usec: sum.usec + stat.usec });
      }
    }
    total = new Map([...total].filter(([, stat]) => stat.calls > 0));
    const perSweep: Record<string, number> = {};
    let all = 0;
    for (const [name, stat] of total) {
      perSweep[name] = Math.round(stat.calls / SWEEPS * 10) / 10;
      all += stat.calls;
    }
    perSweep.total = Math.round(all / SWEEPS * 10) / 10;
    await webhooks?.close();
    return perSweep;
  } finally {
    await bridge.close();
    await server.stop();
  }
}

const runs: [number, number, boolean, boolean][] = [
  [1, 0, false, false],
  [100, 0, false, false],
  [1000, 0, false, false],
  [1000, 10, false, false],
  [1000, 0, true, false],
  [1000, 0, false, true],
];
for (const [count, busy, endpoint, fresh] of runs) {
  const perSweep = await run(count, busy, endpoint, fresh);
  const what = `${endpoint ? ", 1 endpoint" : ""}${fresh ? ", each sweep by a new process" : ""}`;
  console.log(
    `${count} streams, ${busy} busy${what}: ${perSweep.total} commands a sweep`,
    JSON.stringify(perSweep),
  );
}
