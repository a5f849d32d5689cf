/**
 * What one sweep asks Redis when `sessions` open sessions (one counter, default 100,000, its
 * default maxSessions) were written in one burst and now come due for the keep-alive together:
 * the commands the close script ran (`INFO commandstats`) and its time in `SLOWLOG` (µs; wall
 * time of a loaded machine, the counts are the figure to compare). review15, 100,000 sessions:
 * 400,008 commands and 4.35 s (e013dc5) before the keep-alive was bounded, 4,008 and 18.9 ms
 * after (the full test suite running beside both).
 *
 * `deno run --allow-all bench/session_keepalive.ts [sessions]`
 */
import { Redis } from "@upstash/redis";
import { compileConfig } from "../src/config/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { RedisStore } from "../src/store/redis/store.ts";
import { withDirect, withRedis } from "../tests/_redis.ts";

const SESSIONS = Number(Deno.args[0] ?? 100_000);
const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: {
        n: { window: { session: "1h" }, groupBy: ["g"], aggregate: "count", retention: "1h" },
      },
    },
  },
}).get("s")!;
const fixture = await withRedis();
if (fixture === null) throw new Error("redis-server is not installed");
try {
  const redis = new Redis({
    url: fixture.restUrl,
    token: fixture.restToken,
    enableTelemetry: false,
  });
  const store = new RedisStore(redis);
  const E = Date.parse("2026-01-01T00:00:00Z");
  // Written 90 minutes ago by the scripts' clock (ttl is 2 h): less than ttl/2 of life left.
  const then = Date.now() - 90 * 60_000;
  for (let i = 0; i < SESSIONS; i += 1000) {
    const items = [];
    for (let j = i; j < Math.min(SESSIONS, i + 1000); j++) {
      items.push({ ok: true as const, value: { t: E, g: `g${j}` } });
    }
    await ingestItems(stream, items, { store, nowMs: then });
  }
  const send = (...args: string[]) => withDirect(fixture.redisUrl, (direct) => direct(...args));
  await send("CONFIG", "RESETSTAT");
  await send("SLOWLOG", "RESET");
  await send("CONFIG", "SET", "slowlog-log-slower-than", "0");
  await store.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
  const slow = await send("SLOWLOG", "GET", "100") as unknown[][];
  const script = slow.find((entry) => String((entry[3] as string[])[0]).toLowerCase() === "eval");
  const info = String(await send("INFO", "commandstats"));
  const calls = [...info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)]
    .filter((match) => !["config", "slowlog", "info", "evalsha", "eval", "set"].includes(match[1]));
  const total = calls.reduce((sum, match) => sum + Number(match[2]), 0);
  console.log(
    `${SESSIONS} sessions due: one sweep ran ${total} commands (${
      calls.map((match) => `${match[1]} ${match[2]}`).join(", ")
    }), script ${script?.[2] ?? "?"} µs`,
  );
} finally {
  await fixture.stop();
}
