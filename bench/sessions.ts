/**
 * Session counter benchmark: events/s of ingest (in process, through the
 * pipeline and the store, no HTTP) into the stream of `bench/sessions.json`
 * (three session counters by user and a per-minute count), on the memory
 * store and on Redis (a local redis-server behind the Upstash REST bridge,
 * in this process), and Redis server time per event (the `EVALSHA` time
 * Redis reports in `INFO commandstats`, divided by the events applied).
 *
 * Events: `users` users, each event 0.5–40 s after the stream's previous
 * one for its user (so sessions of 30 s gap open, extend and split), up to
 * 20 s out of order; batches of 100, four clients at once; a sweep's
 * `closeWindows` every 20 batches. The baseline, measured in the same run,
 * is the same stream with the three session windows made 1-minute tumbling
 * windows.
 *
 * `deno task bench:sessions [seconds-per-store] [users]`
 */
import { Redis } from "@upstash/redis";
import { compileConfig, type CompiledStream } from "../src/config/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { RedisStore } from "../src/store/redis/store.ts";
import type { Store } from "../src/store/types.ts";
import { withDirect, withRedis } from "../tests/_redis.ts";

const SECONDS = Number(Deno.args[0] ?? 5);
const USERS = Number(Deno.args[1] ?? 10_000);
const BATCH = 100;
const CLIENTS = 4;

const config = JSON.parse(await Deno.readTextFile(new URL("./sessions.json", import.meta.url)));
const sessions = compileConfig(config).get("visits")!;
for (const counter of Object.values(config.streams.visits.counters) as { window: object }[]) {
  if ("session" in counter.window) counter.window = { tumbling: "1m" };
}
const tumbling = compileConfig(config).get("visits")!;

/** A deterministic generator of event batches, moving event time forward. */
function batches() {
  let seed = 42;
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648;
  const last = new Float64Array(USERS);
  let clock = Date.parse("2026-01-01T00:00:00Z");
  return () => {
    const events = [];
    for (let i = 0; i < BATCH; i++) {
      const user = Math.floor(random() * USERS);
      const gap = 500 + random() * 39_500;
      last[user] = Math.max(last[user], clock - 20_000) + gap;
      clock = Math.max(clock, last[user] - 20_000);
      events.push({
        ok: true as const,
        value: {
          ts: Math.round(last[user] - random() * 20_000),
          user: `user${user}`,
          page: `/page/${Math.floor(random() * 50)}`,
          amount: Math.round(random() * 1000) / 10,
          country: ["DE", "FR", "IT", "ES"][user % 4],
        },
      });
    }
    return events;
  };
}

async function run(
  store: Store,
  stream: CompiledStream,
): Promise<{ events: number; seconds: number; late: number }> {
  const next = batches();
  const nowMs = Date.parse("2030-01-01T00:00:00Z");
  let events = 0;
  let late = 0;
  let sent = 0;
  const started = performance.now();
  const deadline = started + SECONDS * 1000;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (performance.now() < deadline) {
      const reply = await ingestItems(stream, next(), { store, nowMs });
      events += reply.accepted;
      late += reply.late;
      if (++sent % 20 === 0) {
        await store.closeWindows("visits", stream.counterMetas, {
          latenessMs: stream.latenessMs,
          limit: 1000,
        });
      }
    }
  }));
  return { events, seconds: (performance.now() - started) / 1000, late };
}

function rate(result: { events: number; seconds: number }): number {
  return Math.round(result.events / result.seconds);
}

const memoryBase = await run(new MemoryStore(), tumbling);
const memory = await run(new MemoryStore(), sessions);
console.log(
  `memory: sessions ${rate(memory)} events/s, tumbling baseline ${rate(memoryBase)} events/s ` +
    `(${(rate(memory) / rate(memoryBase)).toFixed(2)}×)`,
);

const fixture = await withRedis();
if (fixture === null) {
  console.log("redis: skipped, redis-server is not installed");
} else {
  try {
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
    });
    const measured = [];
    for (const [stream, prefix] of [[tumbling, "base"], [sessions, "sessions"]] as const) {
      await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
      const result = await run(new RedisStore(redis, { prefix }), stream);
      const stats = await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats"));
      const line = String(stats).split("\n").find((row) => row.startsWith("cmdstat_evalsha:")) ??
        "";
      const usec = Number(/usec=(\d+)/.exec(line)?.[1] ?? NaN);
      measured.push({ ...result, usecPerEvent: usec / result.events });
    }
    const [base, session] = measured;
    console.log(
      `redis:  sessions ${rate(session)} events/s, ${
        session.usecPerEvent.toFixed(1)
      } µs of Redis ` +
        `time per event; tumbling baseline ${rate(base)} events/s, ` +
        `${base.usecPerEvent.toFixed(1)} µs (${(rate(session) / rate(base)).toFixed(2)}×)`,
    );
  } finally {
    await fixture.stop();
  }
}
