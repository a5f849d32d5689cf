/**
 * Session counters end to end through the API: sessions listed by start,
 * the open ones as `current`, each closed session delivered once as
 * `window.closed` with its start, end, group and value, and alerts on
 * sessions fired only at close. On the memory store, and on two instances
 * sharing one Redis.
 */
import assert from "node:assert/strict";
import { RedisDeliveryStore } from "../../../src/store/mod.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { type RedisFixture, redisTest, restClient } from "../../_redis.ts";
import { Receiver } from "./_receiver.ts";
import { at, call, type Clock, ingest, register, type Setup, setup, sweep, T0 } from "./_setup.ts";

const CONFIG = {
  streams: {
    visits: {
      time: { field: "ts", lateness: "30s" },
      counters: {
        visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
        spent: { window: { session: "30s" }, groupBy: ["user"], aggregate: { sum: "amount" } },
      },
      alerts: [{ name: "long_visit", counter: "visit", when: "value >= 3.0" }],
    },
  },
};

function redisInstance(fixture: RedisFixture, clock: Clock): Promise<Setup> {
  const redis = restClient(fixture);
  const now = () => clock.now;
  return setup({
    config: CONFIG,
    clock,
    store: new RedisStore(redis, { now }),
    deliveries: new RedisDeliveryStore(redis, { now }),
  });
}

/** Runs the scenario on one or more instances sharing their stores (and the clock). */
async function scenario(instances: Setup[]) {
  const [a, b = a] = instances;
  const receiver = await Receiver.start(() => a.clock.now);
  try {
    const { secret } = await register(a.app, {
      url: receiver.url(),
      eventTypes: ["window.closed", "alert.fired"],
    });
    receiver.secrets = [secret];
    const none = await call(a.app, "GET", "/v1/streams/visits/counters/visit/current");
    const now = new Date(a.clock.now).toISOString();
    assert.deepEqual([none.body.start, none.body.end, none.body.windows], [now, now, []]);
    await ingest(a.app, [
      { ts: at(1), user: "u1", amount: 5 },
      { ts: at(5), user: "u2", amount: 0 },
      { ts: at(40), user: "u1", amount: 1 },
    ], "visits");
    // 19 s after u1's first event and 20 s before its second: one session of all three.
    await ingest(b.app, [{ ts: at(20), user: "u1", amount: 2 }], "visits");
    await Promise.all(instances.map((instance) => instance.webhooks.idle()));
    assert.equal(receiver.received.length, 0, "no alert on a session before it closes");

    const listed = await call(b.app, "GET", "/v1/streams/visits/counters/visit");
    assert.equal(listed.status, 200, listed.text);
    assert.deepEqual(listed.body.windows, [
      { start: at(5), end: at(5), group: { user: "u2" }, value: 1, final: false },
      { start: at(1), end: at(40), group: { user: "u1" }, value: 3, final: false },
    ]);
    const current = await call(a.app, "GET", "/v1/streams/visits/counters/spent/current");
    assert.equal(current.status, 200, current.text);
    assert.deepEqual(
      [
        current.body.start,
        current.body.end,
        current.body.windows.map((row: { value: number }) => row.value),
      ],
      [at(1), at(70), [0, 8]],
    );

    // u2's session (ends at 5 s) is final at 5 + 30 + 30 s; u1's (ends at 40 s) at 100 s.
    await ingest(a.app, [{ ts: at(70), user: "tick" }], "visits");
    await Promise.all(instances.map((instance) => sweep(instance.app)));
    await ingest(a.app, [{ ts: at(100), user: "tick" }], "visits");
    await Promise.all(instances.map((instance) => sweep(instance.app)));
    await Promise.all(instances.map((instance) => sweep(instance.app)));
    await Promise.all(instances.map((instance) => instance.webhooks.idle()));

    const summary = receiver.received.map((item) => {
      const data = item.payload.data;
      return [
        item.payload.type,
        data.alert ?? data.counter,
        data.group.user,
        data.start,
        data.end,
        data.value,
      ];
    }).sort((x, y) => JSON.stringify(x) < JSON.stringify(y) ? -1 : 1);
    assert.deepEqual(summary, [
      ["alert.fired", "long_visit", "u1", at(1), at(40), 3],
      ["window.closed", "spent", "u1", at(1), at(40), 8],
      ["window.closed", "spent", "u2", at(5), at(5), 0],
      ["window.closed", "visit", "u1", at(1), at(40), 3],
      ["window.closed", "visit", "u2", at(5), at(5), 1],
    ]);
    assert.equal(new Set(receiver.received.map((item) => item.id)).size, receiver.received.length);
    for (const item of receiver.received) assert.deepEqual(item.verifiedWith, [secret]);
    const after = await call(a.app, "GET", "/v1/streams/visits/counters/visit");
    assert.deepEqual(
      after.body.windows.map((row: { group: { user: string }; final: boolean }) => [
        row.group.user,
        row.final,
      ]),
      [["tick", false], ["tick", false], ["u2", true], ["u1", true]],
    );
  } finally {
    await receiver.close();
  }
}

Deno.test("session counters: listed by start, closed once to webhooks, alerts only at close (memory)", async () => {
  const instance = await setup({ config: CONFIG, startMs: T0 + 600_000 });
  try {
    await scenario([instance]);
  } finally {
    await instance.close();
  }
});

redisTest(
  "session counters: two instances on one Redis deliver each closed session once",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const instances = [await redisInstance(fixture, clock), await redisInstance(fixture, clock)];
    try {
      await scenario(instances);
    } finally {
      for (const instance of instances) await instance.close();
    }
  },
);

Deno.test("?top on a session counter is a 400 naming the counter: sessions are listed by start", async () => {
  const ctx = await setup({ config: CONFIG });
  try {
    for (const path of ["", "/current"]) {
      const res = await call(ctx.app, "GET", `/v1/streams/visits/counters/visit${path}?top=3`);
      assert.equal(res.status, 400);
      assert.equal(res.body.error.code, "invalid_query");
      assert.match(res.body.error.message, /counter 'visit' has session windows/);
    }
  } finally {
    await ctx.close();
  }
});

Deno.test("a session counter is not paged: cursor on its list, limit or cursor on …/current are 400 invalid_query naming why", async () => {
  const ctx = await setup({ config: CONFIG });
  try {
    const cursor = "WzAsbnVsbCwyXQ"; // [0,null,2], a window counter's cursor.
    const cases: [string, RegExp][] = [
      [
        `?cursor=${cursor}`,
        /'cursor' pages a window counter's rows without 'top', not a session counter/,
      ],
      [
        "/current?limit=2",
        /page the groups of a window counter's current window, not of a session counter/,
      ],
      [`/current?cursor=${cursor}`, /not of a session counter/],
    ];
    for (const [path, message] of cases) {
      const res = await call(ctx.app, "GET", `/v1/streams/visits/counters/visit${path}`);
      assert.equal(res.status, 400, path);
      assert.equal(res.body.error.code, "invalid_query", path);
      assert.match(res.body.error.message, message, path);
    }
    // limit on the list is its bound, as for windows.
    const listed = await call(ctx.app, "GET", "/v1/streams/visits/counters/visit?limit=2");
    assert.equal(listed.status, 200);
  } finally {
    await ctx.close();
  }
});
