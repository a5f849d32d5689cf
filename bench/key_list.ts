/**
 * Redis time a page of `GET /v1/keys` costs: the first page of a listing (no cursor, which also
 * checks every key's id against the index) and a later page (with a cursor, which compares the
 * counts only), with `--keys` run-time keys stored. Measured as the `usec` that `INFO
 * commandstats` gives the page script's `EVALSHA` (or `EVAL`), so the figure is redis-server's own
 * time, not the client's round trip; and as the main thread's CPU time (`INFO cpu`) over all the
 * rounds of a kind, divided by the rounds, which a machine busy with other work inflates far less
 * than the first (a script descheduled midway counts its wait), though somewhat: runs at load 8.5
 * read 6.8 ms a first page and 0.30 ms a later one, at load 21–26 9.2–10.1 and 0.35–0.39 ms.
 * README's "API keys at run time" quotes the range.
 *
 * `deno task bench:key-list [--port 7660] [--keys 10000] [--limit 100] [--rounds 20]`
 */
import { parseArgs } from "node:util";
import { Redis } from "@upstash/redis";
import { RedisKeyStore } from "../src/store/redis/key_store.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { commandStats, commandStatsDelta, median, redisCpuSeconds } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "7660" },
    keys: { type: "string", default: "10000" },
    limit: { type: "string", default: "100" },
    rounds: { type: "string", default: "20" },
  },
});
const KEYS = Number(flags.keys);
const LIMIT = Number(flags.limit);
const ROUNDS = Number(flags.rounds);

/** Redis's own time (µs) of the scripts `call` ran: their EVALSHA and EVAL entries. */
async function scriptUsec(port: number, call: () => Promise<unknown>): Promise<number> {
  const before = await commandStats(port);
  await call();
  const delta = commandStatsDelta(before, await commandStats(port));
  return (delta.get("evalsha")?.usec ?? 0) + (delta.get("eval")?.usec ?? 0);
}

const server = await startRedisServer({ port: Number(flags.port) });
const bridge = await startUpstashBridge({ redisUrl: server.url, token: "bench-token" });
try {
  const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
  const store = new RedisKeyStore(redis, { maxKeys: Math.max(KEYS, 1) });
  const t0 = Date.now() - KEYS;
  for (let i = 0; i < KEYS; i++) {
    const hex = i.toString(16).padStart(16, "0");
    await store.createKey({
      id: `key_${hex}`,
      type: "secret",
      hash: hex.padStart(64, "0"),
      prefix: "sk_abcd",
      scopes: ["ingest"],
      description: `producer ${i}`,
      createdAt: t0 + i,
    });
  }
  // A first listing once, so that no measured page rebuilds the index.
  const first = await store.pageKeys({ limit: LIMIT });
  if (first.items.length !== Math.min(LIMIT, KEYS)) throw new Error("Unexpected first page");
  const cursor = first.nextCursor;
  /** The page's median EVALSHA time and its mean CPU time (ms), each from `ROUNDS` calls. */
  const measure = async (call: () => Promise<unknown>) => {
    const usec: number[] = [];
    for (let round = 0; round < ROUNDS; round++) usec.push(await scriptUsec(server.port, call));
    // Apart from the INFO commandstats calls, whose own CPU would count.
    const before = await redisCpuSeconds(server.port);
    for (let round = 0; round < ROUNDS; round++) await call();
    const cpu = (await redisCpuSeconds(server.port) - before) / ROUNDS;
    return `${(median(usec) / 1000).toFixed(2)} ms (EVALSHA, median), ${
      (cpu * 1000).toFixed(2)
    } ms of CPU (mean)`;
  };
  const firstPage = await measure(() => store.pageKeys({ limit: LIMIT }));
  const laterPage = cursor === null
    ? "none (one page holds every key)"
    : await measure(() => store.pageKeys({ limit: LIMIT, cursor }));
  console.log(`${KEYS} keys, pages of ${LIMIT}, ${ROUNDS} rounds: redis-server's time of`);
  console.log(`  the first page: ${firstPage}`);
  console.log(`  a later page:   ${laterPage}`);
} finally {
  await bridge.close();
  await server.stop();
}
