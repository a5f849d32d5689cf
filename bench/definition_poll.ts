/**
 * What an instance's poll of the stream definition index costs with many streams: every
 * instance polls every 2 s. A poll that reads the whole index (the first, one every 30 s, and
 * one after a change) against one that finds the index's change mark where it left it: reply
 * bytes from the Upstash REST endpoint (what Upstash bills as bandwidth), wall time per poll
 * from this process, and redis-server µs per poll (`INFO commandstats`, `evalsha`).
 *
 * redis-server runs in its own process, the Upstash REST bridge in this one (its time counts in
 * the wall time per poll).
 *
 * `deno task bench:poll [--streams 2000,12000] [--polls 100]`
 */
import { parseArgs } from "node:util";
import { Redis } from "@upstash/redis";
import { RedisDefinitionStore } from "../src/store/mod.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
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
    streams: { type: "string", default: "2000,12000" },
    polls: { type: "string", default: "100" },
  },
});
const POLLS = Number(flags.polls);
const machine = await machineInfo();

/** A `fetch` that adds the length of every reply body to `counted.bytes`. */
const counted = { bytes: 0 };
const realFetch = globalThis.fetch;
const countingFetch: typeof fetch = async (input, init) => {
  const reply = await realFetch(input, init);
  const body = await reply.arrayBuffer();
  counted.bytes += body.byteLength;
  return new Response(body, { status: reply.status, headers: reply.headers });
};

interface Row {
  streams: number;
  poll: "whole" | "unchanged";
  replyBytes: number;
  msPerPoll: number;
  redisUsPerPoll: number;
}
const rows: Row[] = [];
for (const streams of flags.streams.split(",").map(Number)) {
  const server = await startRedisServer();
  const token = crypto.randomUUID();
  const bridge = await startUpstashBridge({ redisUrl: server.url, token });
  try {
    const redis = new Redis({ url: bridge.url, token, enableTelemetry: false });
    const store = new RedisDefinitionStore(redis);
    for (let i = 0; i < streams; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, streams - i) }, (_, j) =>
          store.write(`stream_${i + j}`, {
            source: "api",
            generation: 1,
            definition: {},
            counters: {},
            deleted: false,
          }, 0)),
      );
    }
    const { mark } = await store.versionsSince();
    for (const [poll, since] of [["whole", undefined], ["unchanged", mark]] as const) {
      for (let i = 0; i < 5; i++) await store.versionsSince(since);
      const before = await commandStats(server.port);
      counted.bytes = 0;
      globalThis.fetch = countingFetch;
      const started = performance.now();
      try {
        for (let i = 0; i < POLLS; i++) await store.versionsSince(since);
      } finally {
        globalThis.fetch = realFetch;
      }
      const ms = (performance.now() - started) / POLLS;
      const evalsha = commandStatsDelta(before, await commandStats(server.port)).get("evalsha");
      rows.push({
        streams,
        poll,
        replyBytes: Math.round(counted.bytes / POLLS),
        msPerPoll: ms,
        redisUsPerPoll: (evalsha?.usec ?? 0) / POLLS,
      });
    }
  } finally {
    await bridge.close();
    await server.stop();
  }
}

console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average at start ${
    loadAverageText(machine)
  }`,
);
console.log(`definition index poll, ${POLLS} polls each:`);
console.log(table(
  ["streams", "poll", "reply bytes", "ms per poll", "redis µs per poll"],
  rows.map((row) => [
    String(row.streams),
    row.poll,
    String(row.replyBytes),
    row.msPerPoll.toFixed(2),
    row.redisUsPerPoll.toFixed(1),
  ]),
  [1],
));
console.log(`results: ${await writeResults("definition_poll", { machine, polls: POLLS, rows })}`);
