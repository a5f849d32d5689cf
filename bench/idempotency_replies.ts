/**
 * What an `Idempotency-Key` costs Redis per request, against the same request without one: the
 * Redis commands the apply script ran (`INFO commandstats`, which do not depend on the machine's
 * load), redis-server's µs in `evalsha` (which do), and the memory a stored reply takes
 * (`used_memory` delta over the requests: the reply, and from the bound on a stream's replies
 * on, its index).
 *
 * Single-event requests of the `bench` stream of `bench/config.json` (4 counters, dedupe), each
 * with a fresh key (or none), applied one after another through `RedisStore` on redis-server
 * behind the Upstash REST bridge; rounds alternate without and with keys.
 *
 * `deno task bench:idempotency [--requests 2000] [--rounds 2]`
 */
import { parseArgs } from "node:util";
import { Redis } from "@upstash/redis";
import { createClient } from "redis";
import { compileConfig } from "../src/config/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { RedisStore } from "../src/store/redis/store.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { loadAverageText, machineInfo, table, writeResults } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "2000" },
    rounds: { type: "string", default: "2" },
  },
});
const requests = Number(flags.requests);
const rounds = Number(flags.rounds);

const config = JSON.parse(await Deno.readTextFile(new URL("./config.json", import.meta.url)));
const stream = compileConfig(config).get("bench")!;
const server = await startRedisServer();
const token = crypto.randomUUID();
const bridge = await startUpstashBridge({ redisUrl: server.url, token });
const direct = createClient({ url: server.url });
await direct.connect();
const store = new RedisStore(new Redis({ url: bridge.url, token, enableTelemetry: false }));
const now = Date.now();

/** Commands other than the script's own call, evalsha calls and µs, and used_memory. */
async function sample(): Promise<{ commands: number; calls: number; us: number; memory: number }> {
  const stats = await direct.sendCommand(["INFO", "commandstats"]) as string;
  const memory = await direct.sendCommand(["INFO", "memory"]) as string;
  let commands = 0, calls = 0, us = 0;
  for (const [, name, count, usec] of stats.matchAll(/^cmdstat_(\w+):calls=(\d+),usec=(\d+)/gm)) {
    if (name === "evalsha" || name === "eval") {
      calls += Number(count);
      us += Number(usec);
    } else if (name !== "info" && name !== "config") {
      commands += Number(count);
    }
  }
  return { commands, calls, us, memory: Number(/used_memory:(\d+)/.exec(memory)![1]) };
}

let next = 0;
async function round(keyed: boolean): Promise<Record<string, number>> {
  await direct.sendCommand(["CONFIG", "RESETSTAT"]);
  const before = await sample();
  for (let i = 0; i < requests; i++) {
    const n = next++;
    const body = [{ id: `e${n}`, ts: now, country: "de", amount: 1, user: `u${n % 50}` }];
    await ingestItems(stream, body.map((value) => ({ ok: true as const, value })), {
      store,
      nowMs: now,
      ...(keyed ? { idempotency: { key: `k-${n}`, body: JSON.stringify(body) } } : {}),
    });
  }
  const after = await sample();
  const calls = after.calls - before.calls;
  return {
    commandsPerRequest: (after.commands - before.commands) / calls,
    evalshaUsPerRequest: (after.us - before.us) / calls,
    memoryBytesPerRequest: (after.memory - before.memory) / requests,
  };
}

try {
  const machine = await machineInfo();
  console.log(loadAverageText(machine));
  await round(false); // warm-up: the script loaded, the stream's keys made
  const runs: { keyed: boolean; figures: Record<string, number> }[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const keyed of [false, true]) runs.push({ keyed, figures: await round(keyed) });
  }
  console.log(table(
    ["requests", "Redis commands/request", "evalsha µs/request", "used_memory bytes/request"],
    runs.map(({ keyed, figures }) => [
      keyed ? "with a fresh Idempotency-Key" : "without a key",
      figures.commandsPerRequest.toFixed(2),
      figures.evalshaUsPerRequest.toFixed(1),
      figures.memoryBytesPerRequest.toFixed(0),
    ]),
    [0],
  ));
  console.log(`results: ${await writeResults("idempotency_replies", { machine, requests, runs })}`);
} finally {
  await direct.quit();
  await bridge.close();
  await server.stop();
}
