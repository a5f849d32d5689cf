import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { publicPayload } from "../../src/fanout/payload.ts";
import type { LogRecord } from "../../src/store/types.ts";
import { at, TEST_CONFIG } from "../_fixtures.ts";

const orders = compileConfig(TEST_CONFIG).get("orders")!;
const state = { count: 3, sum: 7.5, min: null, max: null, distinct: 2, approximate: false };
const entry = (record: LogRecord) => ({ id: "1-0", timeMs: Date.parse(at(70)), record });

Deno.test("publicPayload() gives window results in the webhook shape with decoded group and value", () => {
  assert.deepEqual(
    publicPayload(
      orders,
      entry({
        type: "window.closed",
        counter: "sum_1m",
        start: Date.parse(at(0)),
        end: Date.parse(at(60)),
        group: '["DE"]',
        state,
      }),
    ),
    {
      type: "window.closed",
      timestamp: at(70),
      data: {
        stream: "orders",
        counter: "sum_1m",
        aggregate: "sum",
        group: { country: "DE" },
        start: at(0),
        end: at(60),
        value: 7.5,
      },
    },
  );
  const distinct = publicPayload(
    orders,
    entry({
      type: "window.updated",
      counter: "customers_sliding",
      start: Date.parse(at(0)),
      end: Date.parse(at(180)),
      group: "[]",
      state: { ...state, approximate: true },
    }),
  );
  assert.deepEqual(distinct?.data, {
    stream: "orders",
    counter: "customers_sliding",
    aggregate: "distinct",
    group: {},
    start: at(0),
    end: at(180),
    value: 2,
    approximate: true,
  });
});

Deno.test("publicPayload() gives alerts and events their own data, and null for a counter gone from the config", () => {
  assert.deepEqual(
    publicPayload(
      orders,
      entry({
        type: "alert.fired",
        alert: "big",
        counter: "count_1m",
        start: Date.parse(at(0)),
        end: Date.parse(at(60)),
        group: '["FR"]',
        value: 12,
      }),
    )?.data,
    {
      alert: "big",
      stream: "orders",
      counter: "count_1m",
      aggregate: "count",
      group: { country: "FR" },
      start: at(0),
      end: at(60),
      value: 12,
    },
  );
  // A distinct count from a HyperLogLog: marked as the window's results are.
  assert.deepEqual(
    publicPayload(
      orders,
      entry({
        type: "alert.fired",
        alert: "crowd",
        counter: "customers_sliding",
        start: Date.parse(at(0)),
        end: Date.parse(at(180)),
        group: "[]",
        value: 2,
        approximate: true,
      }),
    )?.data,
    {
      alert: "crowd",
      stream: "orders",
      counter: "customers_sliding",
      aggregate: "distinct",
      group: {},
      start: at(0),
      end: at(180),
      value: 2,
      approximate: true,
    },
  );
  assert.deepEqual(
    publicPayload(
      orders,
      entry({ type: "event.late", timeMs: Date.parse(at(1)), event: { id: "x" } }),
    ),
    {
      type: "event.late",
      timestamp: at(70),
      data: { stream: "orders", time: at(1), event: { id: "x" } },
    },
  );
  assert.equal(
    publicPayload(
      orders,
      entry({ type: "window.closed", counter: "gone", start: 0, end: 1, group: "[]", state }),
    ),
    null,
  );
});

Deno.test("publicPayload() reads a result of a counter the stream no longer has by its formerCounters (its definition record's), partial by its bound", () => {
  const removed = {
    ...orders,
    formerCounters: [{
      name: "gone",
      window: { kind: "tumbling" as const, sizeMs: 60_000 },
      groupBy: ["country"],
      aggregate: { kind: "sum" as const, field: "amount" },
      partialBefore: Date.parse(at(30)),
    }],
  };
  const closed = (start: number) =>
    publicPayload(
      removed,
      entry({
        type: "window.closed",
        counter: "gone",
        start: Date.parse(at(start)),
        end: Date.parse(at(start + 60)),
        group: '["DE"]',
        state,
      }),
    )?.data;
  assert.deepEqual(closed(0), {
    stream: "orders",
    counter: "gone",
    aggregate: "sum",
    group: { country: "DE" },
    start: at(0),
    end: at(60),
    value: 7.5,
    partial: true,
  });
  assert.equal(closed(60)?.partial, undefined);
  // A counter it has wins over a former one of the same name.
  assert.equal(
    publicPayload(
      { ...removed, formerCounters: [{ ...removed.formerCounters[0], name: "sum_1m" }] },
      entry({ type: "window.closed", counter: "sum_1m", start: 0, end: 1, group: '["DE"]', state }),
    )?.data.partial,
    undefined,
  );
});

Deno.test("publicPayload() marks window.updated, window.closed and alert.fired of a window its counter missed events of as partial, and no other", () => {
  // sum_1m added to the stream once its watermark was at 60 s: windows starting before miss events.
  const added = {
    ...orders,
    counters: orders.counters.map((counter) =>
      counter.name === "sum_1m" ? { ...counter, partialBefore: Date.parse(at(60)) + 1 } : counter
    ),
  };
  const window = (type: "window.updated" | "window.closed", startS: number) =>
    entry({
      type,
      counter: "sum_1m",
      start: Date.parse(at(startS)),
      end: Date.parse(at(startS + 60)),
      group: '["DE"]',
      state,
    });
  const fired = (startS: number) =>
    entry({
      type: "alert.fired",
      alert: "big",
      counter: "sum_1m",
      start: Date.parse(at(startS)),
      end: Date.parse(at(startS + 60)),
      group: '["DE"]',
      value: 7.5,
    });
  for (const record of [window("window.updated", 60), window("window.closed", 0), fired(60)]) {
    const data = publicPayload(added, record)?.data as Record<string, unknown>;
    assert.equal(data.partial, true, record.record.type);
  }
  for (const record of [window("window.updated", 120), window("window.closed", 120), fired(120)]) {
    const data = publicPayload(added, record)?.data as Record<string, unknown>;
    assert.equal("partial" in data, false, record.record.type);
  }
  // The same windows of the stream as it was created: never partial.
  assert.equal("partial" in (publicPayload(orders, fired(0))!.data as object), false);
});
