/**
 * The handler a user would write instead of edgestream, for the same `bench` stream of
 * `bench/config.json`: Hono, a bearer key compared as a string, zod, and one `@upstash/redis`
 * command per event (dedupe: `SET id NX EX 600`) and per counter and event (`HINCRBY`,
 * `HINCRBYFLOAT`, `PFADD` on the pane's key), auto-pipelined. It keeps the same panes as
 * edgestream (1 min, 5 min) but sets no expiry on them (which would cost more commands), checks
 * no lateness and keeps no watermark, log or stats: a lower bound of what such a peer costs.
 */
import { Hono } from "hono";
import { Redis } from "@upstash/redis";
import { z } from "zod";

const Event = z.object({
  id: z.string(),
  ts: z.number().optional(),
  country: z.string(),
  amount: z.number(),
  user: z.string().optional(),
  test: z.boolean().optional(),
});
const Body = z.union([Event, z.array(Event).max(1000)]);

const MINUTE = 60_000;
const FIVE_MINUTES = 5 * MINUTE;

/** The naive peer's app on `redis` (give it `enableAutoPipelining: true`), requiring `key`. */
export function naivePeerApp(redis: Redis, key: string): Hono {
  const app = new Hono();
  app.post("/v1/streams/:stream/events", async (c) => {
    if (c.req.header("Authorization") !== `Bearer ${key}`) {
      return c.json({ error: { code: "unauthorized", message: "Wrong key" } }, 401);
    }
    const parsed = Body.safeParse(await c.req.json());
    if (!parsed.success) {
      return c.json({ error: { code: "invalid_event", message: parsed.error.message } }, 400);
    }
    const events = (Array.isArray(parsed.data) ? parsed.data : [parsed.data])
      .filter((event) => !event.test);
    const fresh = await Promise.all(
      events.map((event) => redis.set(`d:${event.id}`, 1, { nx: true, ex: 600 })),
    );
    const writes: Promise<unknown>[] = [];
    events.forEach((event, i) => {
      if (fresh[i] === null) return;
      const ts = event.ts ?? Date.now();
      const minute = ts - ts % MINUTE;
      const pane = ts - ts % FIVE_MINUTES;
      const big = String(event.amount >= 100);
      writes.push(
        redis.hincrby(`c:count_per_minute:${minute}`, event.country, 1),
        redis.hincrbyfloat(`c:revenue_hourly:${pane}`, event.country, event.amount),
        redis.hincrby(`c:big_last_10m:${minute}`, big, 1),
        redis.pfadd(`c:users_hourly:${pane}`, event.user ?? "null"),
      );
    });
    await Promise.all(writes);
    const accepted = fresh.filter((value) => value !== null).length;
    return c.json({ accepted, duplicates: events.length - accepted }, 202);
  });
  return app;
}
