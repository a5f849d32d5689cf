/**
 * Where the apply script's fixed cost per call goes: redis-server µs (`INFO commandstats` of
 * `evalsha`) of the real apply script on single events of the `bench` stream (4 counters, panes
 * existing), against scripts run with the same KEYS and ARGV that stop early:
 * - `return 1`: the bare EVALSHA with these arguments;
 * - `prelude`: the apply script's prelude and helper closures, ARGV[1] decoded, then return;
 * - `prelude + decode ARGV[2]` (the per-event updates), `prelude + encode reply`;
 * - `20 × HGET`, `20 × PEXPIRE`, `20 × ZADD`: what one `redis.call` of each costs.
 * Then the apply script cut before each of its sections (each cut runs on a second redis-server
 * with the arguments of every real call, so its caches are as cold as between real calls).
 *
 * `--batch 100` does the same with batches of 100 events.
 *
 * Talks to redis-server directly (no bridge, no HTTP): only server time is measured.
 *
 * `deno task bench:apply-overhead [--calls 2000] [--rounds 3] [--batch 1]`
 */
import { parseArgs } from "node:util";
import { createClient } from "redis";
import { compileConfig } from "../src/config/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { APPLY_FIELDS, APPLY_SCRIPT } from "../src/store/redis/_scripts.ts";
import { type RedisClient, RedisStore } from "../src/store/redis/store.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import {
  commandStats,
  commandStatsDelta,
  loadAverageText,
  machineInfo,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    calls: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
    batch: { type: "string", default: "1" },
  },
});
const CALLS = Number(flags.calls);
const ROUNDS = Number(flags.rounds);

const config = JSON.parse(await Deno.readTextFile(new URL("./config.json", import.meta.url)));
const stream = compileConfig({ streams: { bench: config.streams.bench } }).get("bench")!;

const redis = await startRedisServer();
const client = createClient({ url: redis.url });
await client.connect();

let captured: { keys: string[]; args: string[] } | undefined;
/** The part of `@upstash/redis` the store calls, on the direct client; it keeps the last ARGV. */
const adapter = {
  async evalsha(sha: string, keys: string[], args: string[]) {
    captured = { keys, args };
    return await client.evalSha(sha, { keys, arguments: args });
  },
  async eval(script: string, keys: string[], args: string[]) {
    captured = { keys, args };
    return await client.eval(script, { keys, arguments: args });
  },
} as unknown as RedisClient;
const store = new RedisStore(adapter, { prefix: "ovh" });

let sequence = 0;
/** Events as `bench/_shared.ts` makes them: 20 countries, 5000 users, one amount in two ≥ 100. */
function events(size: number) {
  return Array.from({ length: size }, () => {
    sequence += 1;
    return {
      ok: true as const,
      value: {
        id: `e${sequence}`,
        ts: Date.now(),
        country: `c${sequence % 20}`,
        amount: sequence % 200,
        user: `u${Math.floor(Math.random() * 5000)}`,
      },
    };
  });
}

async function applyOnce(size: number): Promise<void> {
  await ingestItems(stream, events(size), { store, nowMs: Date.now() });
}

async function evalshaUsec(run: () => Promise<void>): Promise<{ usec: number; inner: number }> {
  const before = await commandStats(redis.port);
  await run();
  const delta = commandStatsDelta(before, await commandStats(redis.port));
  const evalsha = delta.get("evalsha") ?? { calls: 0, usec: 0 };
  let inner = 0;
  for (const [name, stat] of delta) if (name !== "evalsha" && name !== "info") inner += stat.calls;
  return { usec: evalsha.usec / evalsha.calls, inner: inner / evalsha.calls };
}

const BATCH = Number(flags.batch);
for (let i = 0; i < 50; i++) await applyOnce(BATCH); // panes, ids and stats exist; script loaded
const { keys, args: sent } = captured!;
// Without its token: that call's reply is stored under it, and the variants that run the
// script's start would find it and return there.
// (ARGV[1] is an array of APPLY_FIELDS: false at the token's place is none.)
const header = JSON.parse(sent[0]) as unknown[];
header[APPLY_FIELDS.indexOf("tk")] = false;
const args = [JSON.stringify(header), ...sent.slice(1)];
const prelude = APPLY_SCRIPT.slice(0, APPLY_SCRIPT.indexOf("\nlocal now, lateness, idle"));
const repeat = (n: number, line: string) => Array.from({ length: n }, () => line).join("\n");
const variants: [string, string, string[]?][] = [
  ["return 1", "return 1"],
  ["return 1, without ARGV[2]", "return 1", args.slice(0, 1)],
  ["decode ARGV[2]", "local a = cjson.decode(ARGV[2])\nreturn 1"],
  ["decode ARGV[1]", "local a = cjson.decode(ARGV[1])\nreturn 1"],
  ["prelude", prelude + "\nreturn 1"],
  ["prelude, ARGV[1] not decoded", prelude.replace("cjson.decode(ARGV[1])", "{}") + "\nreturn 1"],
  ["prelude + decode ARGV[2]", prelude + "\nlocal a = cjson.decode(ARGV[2])\nreturn 1"],
  [
    "prelude + encode reply",
    prelude +
    // ARGV[1] is an array of APPLY_FIELDS: `now` at its place.
    `\nreturn cjson.encode({ o = "0", wm = num(args[${
      APPLY_FIELDS.indexOf("now") + 1
    }]), d = {}, r = { { 0, 0, 0 } }, v = 0 })`,
  ],
  ["20 × HGET", repeat(20, 'redis.call("HGET", KEYS[1] .. "stats", "wm")') + "\nreturn 1"],
  ["20 × PEXPIRE", repeat(20, 'redis.call("PEXPIRE", KEYS[1] .. "stats", 3600000)') + "\nreturn 1"],
  [
    "20 × ZADD",
    repeat(20, 'redis.call("ZADD", KEYS[1] .. "zz", 5, "member")') + "\nreturn 1",
  ],
];

const machine = await machineInfo();
const rounds: Record<string, { usec: number; inner: number }>[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    const row: Record<string, { usec: number; inner: number }> = {};
    row[`apply script, ${BATCH} events`] = await evalshaUsec(async () => {
      for (let i = 0; i < CALLS; i++) await applyOnce(BATCH);
    });
    for (const [name, script, argv = args] of variants) {
      const sha = await client.scriptLoad(script);
      row[name] = await evalshaUsec(async () => {
        for (let i = 0; i < CALLS; i++) await client.evalSha(sha, { keys, arguments: argv });
      });
    }
    rounds.push(row);
  }
} finally {
  await client.quit();
}
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average at start ${
    loadAverageText(machine)
  }; ${CALLS} calls each, least of ${ROUNDS} rounds; ARGV ${
    args.map((arg) => arg.length).join(" + ")
  } bytes`,
);
console.log(table(
  ["script", "µs per call", "redis.call per call"],
  Object.keys(rounds[0]).map((name) => [
    name,
    Math.min(...rounds.map((row) => row[name].usec)).toFixed(1),
    rounds[0][name].inner.toFixed(1),
  ]),
  [0],
));

// Where the time goes inside the script: the apply script cut after each section, each run on a
// second redis-server with the arguments of every real call (so ids are fresh there too).
const CUTS = [
  "\nlocal P = KEYS[1]", // the bare call
  "\nlocal STATS_KEY", // + ARGV[1] decoded
  "\n-- The same call sent again", // + the helpers' closures
  "\n-- The session helpers", // + the token's GET (its reply's SET is in the last section)
  "\nlocal now, lateness, idle", // + the session helpers (made only for session counters)
  "\n-- The stats are read once", // + the counters' tables
  "\n-- Requests: each takes", // + the stats read
  "\nlocal outcomes = {}", // + admission
  "\n-- Admitted requests", // + dedupe lookups, outcomes
  "\n-- The cells to add", // + stored ids
  "\n-- The panes written, in the order", // + the cells (and sessions)
  "\n-- Panes new or due", // + the counters' writes
  "\n-- One digit per event", // + refreshes, stats write (the rest: the reply)
];
// A marker the script no longer has, or has out of order, would cut it somewhere else unseen.
CUTS.reduce((at, cut) => {
  const found = APPLY_SCRIPT.indexOf(cut);
  if (found < at) {
    throw new Error(
      `apply_overhead: the apply script has no '${cut.trim()}' after the previous cut`,
    );
  }
  return found;
}, -1);
const sectionRounds: Record<string, number>[] = [];
const second = await startRedisServer();
const direct = createClient({ url: redis.url });
const other = createClient({ url: second.url });
try {
  await direct.connect();
  await other.connect();
  const cuts = CUTS.map((cut) => ({
    name: cut.trim(),
    script: APPLY_SCRIPT.slice(0, APPLY_SCRIPT.indexOf(cut)) + "\nreturn 1",
  }));
  cuts.push({ name: "(whole script)", script: APPLY_SCRIPT });
  for (let round = 0; round < ROUNDS; round++) {
    const row: Record<string, number> = {};
    for (const cut of cuts) {
      const sha = await other.scriptLoad(cut.script);
      const realSha = await direct.scriptLoad(APPLY_SCRIPT);
      const viaBoth = {
        async evalsha(_sha: string, keys: string[], args: string[]) {
          await other.evalSha(sha, { keys, arguments: args });
          return await direct.evalSha(realSha, { keys, arguments: args });
        },
      } as unknown as RedisClient;
      const both = new RedisStore(viaBoth, { prefix: "cut" });
      const before = await commandStats(second.port);
      for (let i = 0; i < CALLS; i++) {
        await ingestItems(stream, events(BATCH), { store: both, nowMs: Date.now() });
      }
      const delta = commandStatsDelta(before, await commandStats(second.port)).get("evalsha")!;
      row[cut.name] = delta.usec / delta.calls;
    }
    sectionRounds.push(row);
  }
  console.log(`\nthe apply script cut before each line (µs per call, least of ${ROUNDS} rounds):`);
  console.log(table(
    ["cut before", "µs per call"],
    Object.keys(sectionRounds[0]).map((name) => [
      name,
      Math.min(...sectionRounds.map((row) => row[name])).toFixed(1),
    ]),
    [0],
  ));
} finally {
  await direct.quit();
  await other.quit();
  await second.stop();
  await redis.stop();
}
const path = await writeResults("apply_overhead", {
  bench: "apply_overhead",
  machine,
  calls: CALLS,
  batch: BATCH,
  scripts: Object.keys(rounds[0]).map((name) => ({
    name,
    usecPerCall: Math.min(...rounds.map((row) => row[name].usec)),
    redisCallsPerCall: rounds[0][name].inner,
  })),
  cuts: Object.keys(sectionRounds[0] ?? {}).map((name) => ({
    name,
    usecPerCall: Math.min(...sectionRounds.map((row) => row[name])),
  })),
});
console.log(`\nresults: ${path}`);
