/**
 * A background task failing while the store is unavailable: said when the outage starts, once a
 * minute while it lasts, and when the task works again; each time one line of text, no stack.
 */
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { StoreRequestTooLargeError, StoreUnavailableError } from "../../src/store/types.ts";
import { OutageLog } from "../../src/telemetry/outage_log.ts";
import { startRedisServer } from "../../tools/redis_server.ts";
import { startUpstashBridge } from "../../tools/upstash_bridge.ts";
import { collectingLogs, messageOf, writtenLogs } from "../_logs.ts";
import { redisServerInstalled } from "../_redis.ts";
import { startServerProcess } from "../_server_process.ts";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const logger = getLogger(["edgestream", "test"]);

function unavailable(): StoreUnavailableError {
  return new StoreUnavailableError("Redis is unavailable (definitionVersions): refused", {
    cause: new TypeError("connect ECONNREFUSED 127.0.0.1:6379"),
  });
}

Deno.test("OutageLog says an outage when it starts, once a minute while it lasts and when it ends", async () => {
  let now = Date.UTC(2026, 0, 1, 10, 0, 0);
  const outage = new OutageLog(logger, {
    failed: "Cannot poll stream definitions: {error}",
    recovered: "Stream definitions polled again",
    now: () => now,
  });
  const records = await collectingLogs((records) => {
    outage.success(); // no outage yet: nothing to say
    // A poll every 2 s for 2 minutes and 1 s: 61 failures.
    for (let i = 0; i <= 60; i++) {
      outage.failure(unavailable());
      now += 2_000;
    }
    outage.success();
    outage.success();
    return Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record)]), [
    [
      "warning",
      "Cannot poll stream definitions: StoreUnavailableError: Redis is unavailable (definitionVersions): refused; caused by TypeError: connect ECONNREFUSED 127.0.0.1:6379",
    ],
    [
      "warning",
      "Cannot poll stream definitions: StoreUnavailableError: Redis is unavailable (definitionVersions): refused; caused by TypeError: connect ECONNREFUSED 127.0.0.1:6379 (31 failures since 2026-01-01T10:00:00.000Z)",
    ],
    [
      "warning",
      "Cannot poll stream definitions: StoreUnavailableError: Redis is unavailable (definitionVersions): refused; caused by TypeError: connect ECONNREFUSED 127.0.0.1:6379 (61 failures since 2026-01-01T10:00:00.000Z)",
    ],
    ["info", "Stream definitions polled again after 61 failures since 2026-01-01T10:00:00.000Z"],
  ]);
  assert.deepEqual(records[1].properties.failures, 31);
  assert.deepEqual(records[3].properties.failingSince, "2026-01-01T10:00:00.000Z");
});

Deno.test("OutageLog says a lasting outage again at once after the clock stepped back, then once a minute from there", async () => {
  let now = Date.UTC(2026, 0, 1, 10, 0, 0);
  const outage = new OutageLog(logger, { failed: "Sweep failed: {error}", now: () => now });
  const records = await collectingLogs((records) => {
    outage.failure(unavailable());
    now += 30_000;
    outage.failure(unavailable()); // within the minute: not said
    now -= 3_600_000; // NTP steps the clock an hour back
    outage.failure(unavailable()); // said: not an hour of silence
    now += 30_000;
    outage.failure(unavailable());
    now += 30_000;
    outage.failure(unavailable());
    return Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => record.properties.failures), [undefined, 3, 5]);
});

Deno.test("OutageLog logs another outage anew, and any other failure at error each time with its stack", async () => {
  let now = 0;
  const outage = new OutageLog(logger, {
    failed: "Sweep failed: {error}",
    recovered: "Sweeps run again",
    now: () => now,
  });
  const records = await collectingLogs((records) => {
    outage.failure(unavailable());
    outage.success();
    now += 1_000;
    outage.failure(unavailable());
    outage.failure(new TypeError("boom"));
    outage.failure(new TypeError("boom"));
    return Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["warning", "Sweep failed"],
    ["info", "Sweeps run again after 1 failure since 1970-01-01T00:00:00.000Z"],
    ["warning", "Sweep failed"],
    ["error", "Sweep failed"],
    ["error", "Sweep failed"],
  ]);
  assert.ok(records[3].properties.error instanceof TypeError);
});

Deno.test("OutageLog logs a call the store refused as too large at error each time, not as an outage", async () => {
  const outage = new OutageLog(logger, {
    failed: "Webhook dispatch failed: {error}",
    recovered: "Webhook dispatches run again",
    now: () => 0,
  });
  const tooLarge = () =>
    new StoreRequestTooLargeError("Redis refused the call as too large (dispatch)", {
      cause: new Error("ERR max request size exceeded"),
    });
  const records = await collectingLogs((records) => {
    // Within a minute: an outage would be said once; a refusal is said each time.
    outage.failure(tooLarge(), { stream: "orders" });
    outage.failure(tooLarge(), { stream: "orders" });
    outage.success({ stream: "orders" }); // no outage began: nothing to say
    return Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["error", "Webhook dispatch failed"],
    ["error", "Webhook dispatch failed"],
  ]);
  // The error itself (its stack with it), as any other defect's, not its one line of text.
  assert.ok(records[0].properties.error instanceof StoreRequestTooLargeError);
  assert.equal(records[0].properties.stream, "orders");
});

Deno.test("an outage's JSON line holds the error as one line of text, without a stack", async () => {
  const lines = await writtenLogs((lines) => {
    new OutageLog(logger, { failed: "Sweep failed: {error}", recovered: "Sweeps run again" })
      .failure(unavailable());
    return [...lines];
  });
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0].text);
  assert.equal(line.level, "warning");
  assert.equal(
    line.error,
    "StoreUnavailableError: Redis is unavailable (definitionVersions): refused; caused by TypeError: connect ECONNREFUSED 127.0.0.1:6379",
  );
  assert.doesNotMatch(lines[0].text, /\\n\s*at |"stack"/);
  assert.ok(lines[0].text.length < 500, lines[0].text);
});

Deno.test({
  name:
    "src/main.ts with Redis gone: the sweep, the definitions poll and a live subscription's reads each say it once, then that they work again",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    let redis = await startRedisServer();
    const bridge = await startUpstashBridge({ redisUrl: redis.url, token: "outage-log-token" });
    const server = await startServerProcess("outage", {
      UPSTASH_REDIS_REST_URL: bridge.url,
      UPSTASH_REDIS_REST_TOKEN: bridge.token,
      EDGESTREAM_CONFIG: "examples/config.json",
      EDGESTREAM_SWEEP_EVERY: "100ms",
    });
    // deno-lint-ignore no-explicit-any
    const lines = (): any[] =>
      server.output().split("\n").filter((line) => line.startsWith("{")).map((line) =>
        JSON.parse(line)
      );
    const saying = (pattern: RegExp) => lines().filter((line) => pattern.test(line.message));
    const waitFor = async (pattern: RegExp) => {
      for (let i = 0; i < 200 && saying(pattern).length === 0; i++) await delay(50);
      assert.notEqual(saying(pattern).length, 0, `nothing matched ${pattern}: ${server.output()}`);
    };
    // A live subscriber: its stream's result log is read every poll.
    const live = await fetch(`${server.url}/v1/streams/orders/subscribe`, {
      headers: { Accept: "text/event-stream" },
    });
    try {
      assert.equal(live.status, 200);
      await redis.stop();
      // ~45 sweeps and 2–3 polls fail meanwhile.
      await waitFor(/^Cannot poll stream definitions/);
      await delay(4_500);
      const sweeps = saying(/^Sweep failed/);
      const polls = saying(/^Cannot poll stream definitions/);
      const reads = saying(/^Cannot read the result log of stream orders for live subscribers/);
      assert.equal(sweeps.length, 1, JSON.stringify(sweeps));
      assert.equal(polls.length, 1, JSON.stringify(polls));
      assert.equal(reads.length, 1, JSON.stringify(reads));
      for (const line of [...sweeps, ...polls, ...reads]) {
        assert.equal(line.level, "warning");
        assert.equal(typeof line.error, "string");
        assert.match(line.error, /^StoreUnavailableError: Redis is unavailable/);
        assert.doesNotMatch(JSON.stringify(line), /\\n\s*at |"stack"/);
      }
      redis = await startRedisServer({ port: redis.port });
      await waitFor(/^Sweeps run again after \d+ failures since /);
      await waitFor(/^Stream definitions polled again after \d+ failures? since /);
      await waitFor(
        /^The result log of stream orders is read for live subscribers again after \d+ failures? since /,
      );
      assert.equal(saying(/^Sweeps run again/)[0].level, "info");
    } finally {
      await live.body?.cancel();
      await server.stop();
      await bridge.close();
      await redis.stop();
    }
  },
});
