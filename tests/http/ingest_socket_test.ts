import assert from "node:assert/strict";
import { Hono } from "hono";
import {
  closeReason,
  ingestSocketSettings,
  OPEN_WITHIN_MS,
  readFrame,
  upgradeSocket,
} from "../../src/http/ingest_socket.ts";
import { DEFAULT_LIMITS } from "../../src/http/body.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { type Store, StoreUnavailableError } from "../../src/store/types.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { REQUEST_CHECK_BUDGET_MESSAGE } from "../../src/validate/mod.ts";
import {
  MAX_REQUEST_PATTERN_COMPILE,
  patternBudgetCutMessage,
  requestPatternBudgetMessage,
} from "../../src/transform/mod.ts";
import { redisTest, restClient } from "../_redis.ts";
import { collectingLogs, jsonLines, messageOf, writtenLogs } from "../_logs.ts";
import { at, changedOnFirstApply, KEYS, NOW, postEvents, testApp } from "../_fixtures.ts";
import {
  closeCodeIn,
  type Closed,
  denoClient,
  eventually,
  type Inbox,
  type NodeClient,
  nodeClient,
  rawSocketSending,
  rawStatus,
  rawUpgrade,
  readAllFor,
  silentUpgrade,
  startServer,
  type TestServer,
  within,
} from "../_live.ts";
import { emptyItems, HUNDRED_PROPERTIES } from "../validate/_hundred_properties.ts";

const WS_PATH = "/v1/streams/orders/ws";

/** A memory store whose applyBatch can fail (store down) or wait (slow store). */
function controlledStore() {
  const inner = new MemoryStore({ now: () => NOW });
  const control = { down: false, gate: null as PromiseWithResolvers<void> | null, applies: 0 };
  const store = new Proxy(inner, {
    get(target, property) {
      if (property === "applyBatch") {
        return async (...args: Parameters<Store["applyBatch"]>) => {
          if (control.down) {
            throw new StoreUnavailableError(
              "Redis is unavailable (applyBatch): connection refused",
              { outcome: "not_applied" },
            );
          }
          if (control.gate) await control.gate.promise;
          control.applies += 1;
          return await target.applyBatch(...args);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
  return { store, control };
}

async function stats(base: string) {
  const res = await fetch(`${base}/v1/streams/orders`);
  return (await res.json()).stats;
}

async function windows(base: string, counter: string) {
  const res = await fetch(`${base}/v1/streams/orders/counters/${counter}`);
  return (await res.json()).windows;
}

const BATCHES = [
  [
    { id: "a", ts: at(5), country: "DE", amount: 10 },
    { id: "b", ts: at(6), country: "FR", amount: 2.5 },
    { id: "a", ts: at(5), country: "DE", amount: 10 },
  ],
  [
    { id: "c", ts: at(70), country: "DE", amount: "lots" },
    { id: "d", ts: at(71), country: "DE", amount: 1, test: true },
    { id: "e", ts: at(72), country: "US", amount: 4 },
  ],
  [{ id: "f", ts: at(200), country: "DE", amount: 1 }],
  [{ id: "g", ts: at(1), country: "DE", amount: 1 }, { id: "b", ts: at(6), country: "FR" }],
];

Deno.test("WebSocket ingest acks frames in order with the counts HTTP ingest gives", async () => {
  const server = await startServer();
  const { app } = await testApp();
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    for (const batch of BATCHES) client.socket.send(JSON.stringify(batch));
    const acks = [];
    for (let i = 0; i < BATCHES.length; i++) acks.push(await client.inbox.next());
    assert.deepEqual(acks.map((ack) => [ack.type, ack.seq]), [
      ["ack", 1],
      ["ack", 2],
      ["ack", 3],
      ["ack", 4],
    ]);
    for (const [index, batch] of BATCHES.entries()) {
      const res = await postEvents(app, batch);
      const { type: _, seq: __, ...ack } = acks[index];
      assert.deepEqual(ack, await res.json(), `frame ${index + 1}`);
    }
    // One frame of each kind of outcome, so the comparison covers them all.
    assert.deepEqual(
      acks.map((ack) => [ack.duplicates, ack.filtered, ack.rejected.length, ack.late]),
      [
        [1, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 1],
      ],
    );
    const viaHttp = await app.request("/v1/streams/orders/counters/sum_1m");
    assert.deepEqual(await windows(server.base, "sum_1m"), (await viaHttp.json()).windows);
    const httpStats = (await (await app.request("/v1/streams/orders")).json()).stats;
    assert.deepEqual(await stats(server.base), httpStats);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest gives each frame its own budget of schema checks: each frame of 9 events of 260,000 checks is cut after 8", async () => {
  // Each item checked against 100 optional properties: an event of 2,600 empty items takes
  // 260,000 checks beyond its values, within one event's bound (262,144).
  const server = await startServer({
    config: {
      streams: {
        parts: {
          schema: HUNDRED_PROPERTIES,
          counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
  });
  const client = await denoClient(server.wsUrl("/v1/streams/parts/ws"));
  try {
    const event = emptyItems(2_600);
    const frame = JSON.stringify(Array.from({ length: 9 }, () => event));
    client.socket.send(frame);
    client.socket.send(frame);
    const cut = [{ path: "", message: REQUEST_CHECK_BUDGET_MESSAGE }];
    for (const seq of [1, 2]) {
      const ack = await client.inbox.next();
      assert.deepEqual(
        [ack.type, ack.seq, ack.accepted, ack.rejected],
        ["ack", seq, 8, [{ index: 8, errors: cut }]],
      );
    }
    const res = await fetch(`${server.base}/v1/streams/parts/counters/count_1m`);
    assert.deepEqual((await res.json()).windows.map((row: { value: number }) => row.value), [16]);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest retried on a changed stream is judged again with a budget of its own: 5 events of 260,000 checks, all 5 applied on the retry", async () => {
  // The first apply finds the stream changed (nothing applied): the frame runs once more.
  const { store, applies } = changedOnFirstApply("parts");
  const server = await startServer({
    store,
    config: {
      streams: {
        parts: {
          schema: HUNDRED_PROPERTIES,
          counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
  });
  const client = await denoClient(server.wsUrl("/v1/streams/parts/ws"));
  try {
    const event = emptyItems(2_600);
    client.socket.send(JSON.stringify(Array.from({ length: 5 }, () => event)));
    const ack = await client.inbox.next();
    assert.equal(applies(), 2);
    // Continuing the first pass's budget (5 × 260,000 of 2,097,152 spent), the retry would cut
    // the fourth event: a frame within the budget refused for the race.
    assert.deepEqual([ack.type, ack.accepted, ack.rejected], ["ack", 5, []]);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest gives each frame its own budget for compiling the patterns its events give matches(): each frame of 34 events of their own 4,000-instruction pattern is cut after 32", async () => {
  const server = await startServer({
    config: {
      streams: {
        texts: {
          transform: [{ filter: "event.text.matches(event.p)" }],
          counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
  });
  const client = await denoClient(server.wsUrl("/v1/streams/texts/ws"));
  try {
    // 3,996 instructions and 32 more each: 32 fit in MAX_REQUEST_PATTERN_COMPILE (131,072). A
    // prefix of this test's own: compiled patterns are kept between requests.
    const frame = (seq: number) =>
      JSON.stringify(Array.from({ length: 34 }, (_, index) => ({
        text: "hello",
        p: `^(?:hello|ws${seq}${String(index).padStart(3, "0")}.{0,1000}.{0,990})`,
      })));
    client.socket.send(frame(1));
    client.socket.send(frame(2));
    const message = requestPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE);
    for (const seq of [1, 2]) {
      const ack = await client.inbox.next();
      assert.deepEqual([ack.type, ack.seq, ack.accepted], ["ack", seq, 32]);
      assert.deepEqual(ack.rejected, [
        {
          index: 32,
          errors: [{ path: "transform[0].filter", message: `Expression failed: ${message}` }],
        },
        { index: 33, errors: [{ path: "", message: patternBudgetCutMessage(32) }] },
      ]);
    }
    const res = await fetch(`${server.base}/v1/streams/texts/counters/count_1m`);
    assert.deepEqual((await res.json()).windows.map((row: { value: number }) => row.value), [64]);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest echoes an envelope's seq and numbers other frames by position", async () => {
  const server = await startServer();
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    const send = (frame: unknown) =>
      client.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    send({ seq: 42, events: [{ id: "a", ts: at(1), country: "DE" }] });
    send([{ id: "b", ts: at(2), country: "DE" }]);
    send(
      [{ id: "c", ts: at(3), country: "DE" }, { id: "d", ts: at(4), country: "FR" }]
        .map((event) => JSON.stringify(event)).join("\n"),
    );
    // An envelope's events may be one event object, as a body may (README).
    send({ seq: 7, events: { id: "e", ts: at(5), country: "DE" } });
    // An event with an 'events' field next to others is an event, not an envelope.
    send({ id: "f", ts: at(6), country: "DE", events: [1, 2] });
    const acks = [];
    for (let i = 0; i < 5; i++) acks.push(await client.inbox.next());
    assert.deepEqual(acks.map((ack) => [ack.type, ack.seq, ack.accepted]), [
      ["ack", 42, 1],
      ["ack", 2, 1],
      ["ack", 3, 2],
      ["ack", 7, 1],
      ["ack", 5, 1],
    ]);
    assert.equal((await stats(server.base)).applied, 6);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest numbers a frame without seq by its position, also when an envelope's seq took that number; answers stay in frame order", async () => {
  const server = await startServer();
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    client.socket.send(JSON.stringify({ seq: 2, events: [{ id: "a", ts: at(1), country: "DE" }] }));
    client.socket.send(JSON.stringify([{ id: "b", ts: at(2), country: "DE" }]));
    client.socket.send(JSON.stringify({ seq: 2, events: [{ id: "c", ts: at(3), country: "DE" }] }));
    const acks = [];
    for (let i = 0; i < 3; i++) acks.push(await client.inbox.next());
    // The second frame is answered as seq 2, as the first: only the order tells them apart.
    assert.deepEqual(acks.map((ack) => [ack.type, ack.seq, ack.accepted]), [
      ["ack", 2, 1],
      ["ack", 2, 1],
      ["ack", 2, 1],
    ]);
    assert.equal((await stats(server.base)).applied, 3);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest refuses NDJSON whose line is an envelope (invalid_body) instead of counting it as one event", async () => {
  const server = await startServer();
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    const envelopes = [
      { seq: 1, events: [{ id: "a", ts: at(1), country: "DE" }] },
      { seq: 2, events: [{ id: "b", ts: at(2), country: "DE" }] },
    ];
    client.socket.send(envelopes.map((envelope) => JSON.stringify(envelope)).join("\n"));
    client.socket.send(
      [{ id: "c", ts: at(3), country: "DE" }, { idempotencyKey: "k", events: [] }]
        .map((line) => JSON.stringify(line)).join("\n"),
    );
    const replies = [await client.inbox.next(), await client.inbox.next()];
    assert.deepEqual(
      replies.map((reply) => [reply.type, reply.seq, reply.error?.code, reply.retryable]),
      [["error", 1, "invalid_body", false], ["error", 2, "invalid_body", false]],
    );
    assert.match(replies[0].error.message, /^Frame line 1 has an envelope's fields/);
    assert.match(replies[1].error.message, /^Frame line 2 has an envelope's fields/);
    // Nothing of either frame counted; an event with such fields still goes in an array.
    client.socket.send(JSON.stringify([{ ...envelopes[0], id: "d", ts: at(4), country: "DE" }]));
    assert.deepEqual(
      [(await client.inbox.next()).accepted, (await stats(server.base)).applied],
      [1, 1],
    );
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest answers bad frames with an error and keeps the connection open", async () => {
  const server = await startServer();
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    const frames = [
      "{not json",
      JSON.stringify({ seq: -1, events: [] }),
      JSON.stringify({ seq: 9, events: [] }),
      '"just text"',
      "   ",
      JSON.stringify({ seq: 10, events: Array.from({ length: 1001 }, () => ({ id: "x" })) }),
    ];
    for (const frame of frames) client.socket.send(frame);
    const replies = [];
    for (let i = 0; i < frames.length; i++) replies.push(await client.inbox.next());
    assert.deepEqual(
      replies.map((reply) => [reply.type, reply.seq, reply.error.code, reply.retryable]),
      [
        ["error", 1, "invalid_json", false],
        ["error", 2, "invalid_seq", false],
        ["error", 9, "empty_batch", false],
        ["error", 4, "invalid_body", false],
        ["error", 5, "empty_body", false],
        ["error", 10, "too_many_events", false],
      ],
    );
    assert.match(replies[1].error.message, /Frame 'seq' must be a non-negative integer, got -1/);
    assert.deepEqual(replies[5].error.details, { maxEvents: 1000 }, "what to split the frame by");
    client.socket.send(JSON.stringify([{ id: "ok", ts: at(1), country: "DE" }]));
    const ack = await client.inbox.next();
    assert.deepEqual([ack.type, ack.seq, ack.accepted], ["ack", 7, 1]);
    assert.equal(client.socket.readyState, WebSocket.OPEN);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest refuses an unknown stream (404) and a plain GET (426) before upgrading", async () => {
  const server = await startServer();
  try {
    const unknown = await nodeClient(server.wsUrl("/v1/streams/nope/ws"));
    assert.equal(unknown.status, 404);
    await unknown.inbox.closed;
    const plain = await fetch(`${server.base}${WS_PATH}`);
    assert.equal(plain.status, 426);
    assert.equal((await plain.json()).error.code, "upgrade_required");
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest refused for its key drops the connection after refusedCloseMs (5 s by default, as the README says) when the client never answers the close frame", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "is upgraded to be closed with 1008, as above, and takes no place of these bounds: a client that has not answered that close frame 5 s later has its connection dropped by the server";
  assert.ok(readme.includes(claim), claim);
  assert.equal(ingestSocketSettings(DEFAULT_LIMITS).refusedCloseMs, 5_000);
  const server = await startServer({ auth: true, liveRoutes: { socket: { refusedCloseMs: 100 } } });
  try {
    // No key, and a key without `ingest`: upgraded, sent the close frame, then never answering it.
    for (const query of ["", `?token=${KEYS.read}`]) {
      const { closed, status, code, reason } = await silentUpgrade(
        server,
        rawUpgrade(`${WS_PATH}${query}`),
      );
      assert.ok(closed, `still open: ${status} ${code} ${reason}`);
      assert.match(status, /^HTTP\/1\.1 101 /);
      assert.equal(code, 1008);
      assert.match(reason, query ? /lacks the 'ingest' scope/ : /^Missing API key/);
    }
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest closes with 1008 before reading a frame when the key is refused", async () => {
  const server = await startServer({ auth: true });
  try {
    const cases: Array<[string, string | undefined, RegExp]> = [
      ["invalid", "not-a-key-0123456789", /^Invalid API key$/],
      ["read scope", KEYS.read, /lacks the 'ingest' scope/],
      ["missing", undefined, /^Missing API key/],
    ];
    for (const [label, key, reason] of cases) {
      const url = server.wsUrl(key ? `${WS_PATH}?token=${key}` : WS_PATH);
      const client = await denoClient(url);
      if (client.socket.readyState === WebSocket.OPEN) {
        client.socket.send(JSON.stringify([{ id: label, ts: at(1), country: "DE" }]));
      }
      const closed = await client.inbox.closed;
      assert.equal(closed.code, 1008, label);
      assert.match(closed.reason, reason, label);
      assert.equal(client.inbox.unread, 0, label);
    }
    assert.equal((await server.store.stats("orders", [])).accepted, 0);
    assert.equal(server.socketStats.connections, 0);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest takes the key from the header, the token parameter or a bearer subprotocol", async () => {
  const server = await startServer({ auth: true });
  const event = (id: string) => JSON.stringify({ id, ts: at(1), country: "DE" });
  try {
    const byHeader = await nodeClient(server.wsUrl(WS_PATH), {
      headers: { Authorization: `Bearer ${KEYS.ingest}` },
    });
    const byToken = await denoClient(server.wsUrl(`${WS_PATH}?token=${KEYS.ingest}`));
    const byProtocol = await denoClient(server.wsUrl(WS_PATH), [`bearer.${KEYS.ingest}`]);
    // npm:ws joins protocols with "," where browsers and Deno use ", ", which Deno's server needs.
    const byProtocolWithName = await denoClient(server.wsUrl(WS_PATH), [
      "edgestream",
      `bearer.${KEYS.admin}`,
    ]);
    const commaJoined = await nodeClient(server.wsUrl(WS_PATH), {
      protocols: ["edgestream", `bearer.${KEYS.ingest}`],
    });
    assert.equal(commaJoined.status, 400);
    await commaJoined.inbox.closed;
    // The answer names an offered protocol (browsers require it), the key only when nothing else.
    assert.equal(byProtocol.socket.protocol, `bearer.${KEYS.ingest}`);
    assert.equal(byProtocolWithName.socket.protocol, "edgestream");
    byHeader.socket.send(event("h"));
    byToken.socket.send(event("t"));
    byProtocol.socket.send(event("p"));
    byProtocolWithName.socket.send(event("n"));
    for (const client of [byHeader, byToken, byProtocol, byProtocolWithName]) {
      const ack = await client.inbox.next();
      assert.equal(ack.type, "ack");
      assert.equal(ack.accepted, 1, JSON.stringify(ack));
    }
    assert.equal(server.socketStats.connections, 4);
    await Promise.all([byHeader, byToken, byProtocol, byProtocolWithName].map((c) => c.close()));
    await eventually(() => server.socketStats.connections === 0);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest closes on a binary frame (1003) and on a frame over 1 MiB (1009)", async () => {
  const server = await startServer();
  try {
    const binary = await denoClient(server.wsUrl(WS_PATH));
    binary.socket.send(new Uint8Array([123, 125]));
    const closedBinary = await binary.inbox.closed;
    assert.equal(closedBinary.code, 1003);
    assert.match(closedBinary.reason, /Binary frames are not supported/);

    const big = await denoClient(server.wsUrl(WS_PATH));
    const padding = "x".repeat(1024 * 1024);
    big.socket.send(JSON.stringify({ id: "big", ts: at(1), country: "DE", padding }));
    const closedBig = await big.inbox.closed;
    assert.equal(closedBig.code, 1009);
    assert.match(closedBig.reason, /^Frame is 10\d{5} bytes; the limit is 1048576 bytes$/);

    // Just under the limit is read (and its one event refused as too large, as over HTTP).
    const under = await denoClient(server.wsUrl(WS_PATH));
    under.socket.send(JSON.stringify([{ id: "u", padding: "y".repeat(1024 * 1024 - 100) }]));
    const reply = await under.inbox.next();
    assert.equal(reply.type, "ack");
    assert.match(reply.rejected[0].errors[0].message, /the limit is 65536 bytes/);
    await under.close();
    assert.equal((await server.store.stats("orders", [])).accepted, 0);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest: a frame over 64 MiB (Deno's own bound on a message) ends the connection with no close frame, not 1009; its place is freed", async () => {
  const server = await startServer();
  try {
    const client = await nodeClient(server.wsUrl(WS_PATH));
    client.socket.send(eventFrame("before"));
    assert.equal((await client.inbox.next()).type, "ack");
    client.socket.send("[" + "x".repeat(64 * 1024 * 1024) + "]");
    const closed = await client.inbox.closed;
    // No close frame came: npm:ws reports 1006 (abnormal closure), with no reason.
    assert.deepEqual(closed, { code: 1006, reason: "" });
    await eventually(() =>
      server.socketStats.connections === 0 && server.socketStats.slotsHeld === 0
    );
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest: a text frame that is not UTF-8 ends the connection with no close frame (Deno's own check), as a dropped connection", async () => {
  const server = await startServer();
  try {
    const client = await nodeClient(server.wsUrl(WS_PATH));
    client.socket.send(eventFrame("before"));
    assert.equal((await client.inbox.next()).type, "ack");
    client.socket.send(new Uint8Array([0x7b, 0x22, 0x69, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), {
      binary: false,
    });
    client.socket.send(eventFrame("after"));
    const closed = await within(client.inbox.closed, 5_000);
    assert.deepEqual(closed, { code: 1006, reason: "" });
    assert.equal(client.inbox.unread, 0);
    await eventually(() =>
      server.socketStats.connections === 0 && server.socketStats.slotsHeld === 0
    );
    assert.equal((await stats(server.base)).accepted, 1);
  } finally {
    await server.close();
  }
});

/** Every message a socket got before it closed, and how it closed. */
async function answersUntilClosed(
  client: { inbox: Inbox },
  // deno-lint-ignore no-explicit-any
): Promise<{ answers: any[]; closed: Closed }> {
  const answers = [];
  const closed = await client.inbox.closed;
  while (client.inbox.unread > 0) answers.push(await client.inbox.next());
  return { answers, closed };
}

/** One event per frame, each with its own id, so an ack's `accepted` is what the store counts. */
function eventFrame(id: string): string {
  return JSON.stringify([{ id, ts: at(1), country: "DE" }]);
}

Deno.test("WebSocket ingest answers every text frame before a binary one, in order, then closes 1003; what it acked is what the store counted", async () => {
  const server = await startServer();
  try {
    const client = await denoClient(server.wsUrl(WS_PATH));
    for (const id of ["t1", "t2", "t3", "t4"]) client.socket.send(eventFrame(id));
    client.socket.send(new Uint8Array([123, 125]));
    const { answers, closed } = await answersUntilClosed(client);
    assert.equal(closed.code, 1003);
    assert.match(closed.reason, /^Binary frames are not supported/);
    assert.deepEqual(answers.map((answer) => answer.seq), [1, 2, 3, 4]);
    const acked = answers.filter((answer) => answer.type === "ack");
    // Frames are applied in order: the acks come first, then the frames not applied.
    assert.deepEqual(answers.slice(0, acked.length), acked);
    for (const answer of answers.slice(acked.length)) {
      assert.deepEqual([answer.type, answer.error.code, answer.retryable], [
        "error",
        "connection_closing",
        true,
      ]);
    }
    const counted = await stats(server.base);
    assert.equal(counted.accepted, acked.reduce((sum, ack) => sum + ack.accepted, 0));
    assert.equal(counted.accepted, acked.length);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest on a protocol error acks the frame being applied, answers the held ones retryable without applying them, and discards later ones", async () => {
  const cases: Array<[number, string | Uint8Array, RegExp]> = [
    [1003, new Uint8Array([123, 125]), /^Binary frames are not supported/],
    [1009, eventFrame("x".repeat(3000)), /^Frame is 30\d\d bytes; the limit is 2000 bytes$/],
  ];
  for (const [code, badFrame, reason] of cases) {
    const { store, control } = controlledStore();
    const server = await startServer({ store, liveRoutes: { socket: { maxFrameBytes: 2000 } } });
    control.gate = Promise.withResolvers<void>();
    try {
      const client = await denoClient(server.wsUrl(WS_PATH));
      client.socket.send(eventFrame("p1"));
      client.socket.send(JSON.stringify({ seq: 41, events: [{ id: "p2", ts: at(1) }] }));
      client.socket.send(eventFrame("p3"));
      client.socket.send(badFrame);
      client.socket.send(eventFrame("after"));
      await eventually(() => server.socketStats.closing === 1);
      assert.equal(client.inbox.unread, 0, `${code}: answers wait for the frame being applied`);
      control.gate.resolve();
      control.gate = null;
      const { answers, closed } = await answersUntilClosed(client);
      assert.equal(closed.code, code);
      assert.match(closed.reason, reason);
      assert.deepEqual(
        answers.map((answer) => [answer.type, answer.seq, answer.error?.code, answer.retryable]),
        [
          ["ack", 1, undefined, undefined],
          ["error", 41, "connection_closing", true],
          ["error", 3, "connection_closing", true],
        ],
        `${code}`,
      );
      assert.equal(answers[0].accepted, 1);
      assert.equal(
        answers[1].error.message,
        `Frame 41 was not applied: the connection closes with ${code}; send it again`,
      );
      assert.equal(control.applies, 1, `${code}`);
      assert.equal((await stats(server.base)).accepted, 1, `${code}`);
      assert.deepEqual([server.socketStats.framesQueued, server.socketStats.closing], [0, 0]);
    } finally {
      control.gate?.resolve();
      await server.close();
    }
  }
});

Deno.test("WebSocket ingest on shutdown acks the frame being applied, answers the held ones retryable, closes 1001, and refuses new upgrades with 503", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({ store });
  control.gate = Promise.withResolvers<void>();
  try {
    const client = await denoClient(server.wsUrl(WS_PATH));
    const idle = await denoClient(server.wsUrl(WS_PATH));
    for (const id of ["s1", "s2", "s3"]) client.socket.send(eventFrame(id));
    await eventually(() => server.socketStats.framesQueued === 3);
    const closing = server.connections.close("Server is shutting down");
    let closed = false;
    closing.then(() => closed = true);
    assert.deepEqual(await within(idle.inbox.closed, 5_000), {
      code: 1001,
      reason: "Server is shutting down",
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(client.inbox.unread, 0, "answers wait for the frame being applied");
    assert.equal(closed, false, "close() waits for the frame being applied");

    const upgrade = await fetch(`${server.base}${WS_PATH}`, {
      headers: { Upgrade: "websocket", Connection: "Upgrade" },
    });
    assert.equal(upgrade.status, 503);
    assert.equal(upgrade.headers.get("retry-after"), "1");
    assert.equal((await upgrade.json()).error.code, "shutting_down");
    const subscribe = await fetch(`${server.base}/v1/streams/orders/subscribe`, {
      headers: { Accept: "text/event-stream" },
    });
    assert.equal(subscribe.status, 503);
    assert.equal(subscribe.headers.get("retry-after"), "1");
    assert.equal((await subscribe.json()).error.code, "shutting_down");
    const posting = fetch(`${server.base}/v1/streams/orders/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ id: "http", ts: at(1), country: "DE" }]),
    });
    control.gate.resolve();
    control.gate = null;
    assert.equal((await (await posting).json()).accepted, 1, "plain HTTP is still served");

    const { answers, closed: how } = await within(answersUntilClosed(client), 5_000);
    await closing;
    assert.deepEqual(how, { code: 1001, reason: "Server is shutting down" });
    assert.deepEqual(
      answers.map((answer) => [answer.type, answer.seq, answer.error?.code, answer.retryable]),
      [
        ["ack", 1, undefined, undefined],
        ["error", 2, "connection_closing", true],
        ["error", 3, "connection_closing", true],
      ],
    );
    assert.equal((await stats(server.base)).accepted, 2, "the acked frame and the HTTP event");
    assert.deepEqual(
      [server.socketStats.framesQueued, server.socketStats.closing, server.connections.size],
      [0, 0, 0],
    );
  } finally {
    control.gate?.resolve();
    await server.close();
  }
});

Deno.test("WebSocket ingest on shutdown holds a connection whose socket closed while its frame is being applied until the store answered: that frame may count", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({ store });
  control.gate = Promise.withResolvers<void>();
  try {
    const client = await nodeClient(server.wsUrl(WS_PATH));
    client.socket.send(eventFrame("applying"));
    client.socket.send(eventFrame("held"));
    await eventually(() => server.socketStats.framesQueued === 2);
    const closing = server.connections.close("Server is shutting down");
    let closed = false;
    closing.then(() => closed = true);
    // The socket ends (the listener's shutdown closes it, or the client drops) while the store
    // is still applying the first frame.
    client.socket.terminate();
    await eventually(() => server.socketStats.connections === 0);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(closed, false, "close() waits for the frame being applied");
    assert.equal(server.connections.size, 1, "a stop sees the connection's work in flight");
    control.gate.resolve();
    control.gate = null;
    await within(closing, 5_000);
    assert.equal(server.connections.size, 0);
    assert.equal(control.applies, 1, "the held frame is not applied");
    // Applied with its ack cut: the stop is told, to exit 1.
    assert.equal(server.connections.answersCut, 1);
  } finally {
    control.gate?.resolve();
    await server.close();
  }
});

Deno.test("WebSocket ingest: when the client closes first, misses a pong or drops, only the frame being applied counts, with no answer", async () => {
  const ways: Array<[string, number, (client: NodeClient) => Promise<Closed>]> = [
    ["client close", 1000, (client) => client.close()],
    ["missed pong", 1001, (client) => client.inbox.closed],
    ["dropped connection", 1006, (client) => {
      client.socket.terminate();
      return client.inbox.closed;
    }],
  ];
  for (const [way, code, end] of ways) {
    const { store, control } = controlledStore();
    const server = await startServer({
      store,
      liveRoutes: { socket: { idleTimeoutSeconds: 0.2 } },
    });
    control.gate = Promise.withResolvers<void>();
    try {
      const client = await nodeClient(server.wsUrl(WS_PATH), { autoPong: way !== "missed pong" });
      for (const id of ["q1", "q2", "q3"]) client.socket.send(eventFrame(id));
      await eventually(() => server.socketStats.framesQueued === 3);
      assert.equal((await end(client)).code, code, way);
      await eventually(() => server.socketStats.connections === 0);
      assert.equal(server.socketStats.framesQueued, 0, way);
      control.gate.resolve();
      control.gate = null;
      await eventually(() => control.applies === 1);
      // Read back over HTTP, after the frames behind it would have been applied.
      assert.equal((await stats(server.base)).accepted, 1, way);
      assert.equal(control.applies, 1, way);
      assert.equal(client.inbox.unread, 0, way);
    } finally {
      control.gate?.resolve();
      await server.close();
    }
  }
});

Deno.test("WebSocket ingest: store unavailable gives a retryable error and counts nothing; a resend dedupes", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({ store });
  const client = await denoClient(server.wsUrl(WS_PATH));
  const frame = JSON.stringify({
    seq: 1,
    events: [{ id: "r1", ts: at(1), country: "DE" }, { id: "r2", ts: at(2), country: "FR" }],
  });
  try {
    control.down = true;
    client.socket.send(frame);
    const error = await client.inbox.next();
    assert.deepEqual(error, {
      type: "error",
      seq: 1,
      retryable: true,
      error: {
        code: "store_unavailable",
        message: "Redis is unavailable (applyBatch): connection refused; nothing was applied",
        details: { outcome: "not_applied" },
        requestId: error.error.requestId,
      },
    });
    assert.equal(typeof error.error.requestId, "string");
    assert.equal((await stats(server.base)).accepted, 0);
    assert.equal(client.socket.readyState, WebSocket.OPEN);

    control.down = false;
    client.socket.send(frame);
    const ack = await client.inbox.next();
    assert.deepEqual([ack.type, ack.seq, ack.accepted, ack.duplicates], ["ack", 1, 2, 0]);
    client.socket.send(frame);
    const again = await client.inbox.next();
    assert.deepEqual([again.accepted, again.duplicates], [2, 2]);
    const counted = await stats(server.base);
    assert.deepEqual([counted.applied, counted.duplicates], [2, 2]);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest back pressure: a flooding client is answered for what it sent, then closed, and the server never holds more than its bound", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({
    store,
    liveRoutes: { socket: { maxFramesInFlight: 4, maxFramesQueued: 8 } },
  });
  control.gate = Promise.withResolvers<void>();
  const frame = JSON.stringify([{ id: "x", ts: at(1), country: "DE", padding: "z".repeat(1000) }]);
  try {
    const flooder = await nodeClient(server.wsUrl(WS_PATH));
    let peakBytes = 0;
    // Paced a little, so the server reads every frame before its close (no TCP reset from unread ones).
    for (let i = 0; i < 30 && flooder.socket.readyState === 1; i++) {
      flooder.socket.send(frame);
      await new Promise((resolve) => setTimeout(resolve, 1));
      peakBytes = Math.max(peakBytes, server.socketStats.bytesQueued);
    }
    // The ninth frame was one too many; the first is still in the store's hands.
    await eventually(() => server.socketStats.closing === 1);
    assert.equal(server.socketStats.peakFramesQueued, 8);
    assert.ok(peakBytes <= 8 * frame.length, `${peakBytes} bytes held`);
    control.gate.resolve();
    control.gate = null;
    const { answers, closed } = await answersUntilClosed(flooder);
    assert.equal(closed.code, 1008);
    assert.match(
      closed.reason,
      /^Too many frames in flight: 8 unacknowledged; wait for acks, at most 4$/,
    );
    assert.deepEqual(answers.map((answer) => [answer.type, answer.seq, answer.retryable]), [
      ["ack", 1, undefined],
      ...[2, 3, 4, 5, 6, 7, 8].map((seq) => ["error", seq, true]),
    ]);
    assert.equal(
      answers[1].error.message,
      "Frame 2 was not applied: the connection closes with 1008; send it again",
    );
    // Of the flood, only the frame already in the store's hands was applied.
    assert.equal(control.applies, 1);
    assert.equal((await stats(server.base)).accepted, 1);
    assert.deepEqual(
      [server.socketStats.framesQueued, server.socketStats.bytesQueued, server.socketStats.closing],
      [0, 0, 0],
    );
  } finally {
    control.gate?.resolve();
    await server.close();
  }
});

Deno.test("WebSocket ingest: a client flooding without pause still sees its answers and the 1008 close", async () => {
  const server = await startServer();
  // 60 frames of about 60 KB at once: the last ones arrive after the close would go out.
  const frame = (seq: number) =>
    JSON.stringify({
      seq,
      events: Array.from(
        { length: 500 },
        (_, i) => ({ id: `${seq}.${i}`, ts: at(1), country: "DE" }),
      ),
    });
  try {
    const flooder = await denoClient(server.wsUrl(WS_PATH));
    for (let seq = 1; seq <= 60; seq++) flooder.socket.send(frame(seq));
    const { answers, closed } = await within(answersUntilClosed(flooder), 10_000);
    assert.equal(closed.code, 1008, `closed ${closed.code} ${closed.reason}`);
    // The README's bounds: 8 unacknowledged, held unread up to 16 in all.
    assert.equal(
      closed.reason,
      "Too many frames in flight: 16 unacknowledged; wait for acks, at most 8",
    );
    // Every frame read before the one too many is answered, in order.
    assert.ok(answers.length >= 16, `${answers.length} answers`);
    assert.deepEqual(
      answers.map((answer) => answer.seq),
      Array.from({ length: answers.length }, (_, i) => i + 1),
    );
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest: a client that keeps its window gets every ack, with at most the window queued", async () => {
  const server = await startServer({ liveRoutes: { socket: { maxFramesInFlight: 8 } } });
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    const frames = 200;
    let sent = 0;
    let acked = 0;
    while (acked < frames) {
      while (sent < frames && sent - acked < 8) {
        sent += 1;
        client.socket.send(JSON.stringify({ seq: sent, events: [{ id: `w${sent}`, ts: at(1) }] }));
      }
      const ack = await client.inbox.next();
      acked += 1;
      assert.deepEqual([ack.type, ack.seq], ["ack", acked]);
    }
    assert.ok(server.socketStats.peakFramesQueued <= 8, `${server.socketStats.peakFramesQueued}`);
    assert.equal((await stats(server.base)).applied, frames);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("WebSocket ingest pings idle connections after half the idle timeout and closes the ones that do not answer after it", async () => {
  // The README's "Deno sends it after 15 s without traffic and closes at 30 s without a pong",
  // at a 0.2 s timeout (lower bounds only: a loaded machine may be late, never early).
  const server = await startServer({ liveRoutes: { socket: { idleTimeoutSeconds: 0.2 } } });
  try {
    const opened = performance.now();
    const silent = await nodeClient(server.wsUrl(WS_PATH), { autoPong: false });
    const alive = await nodeClient(server.wsUrl(WS_PATH));
    let pings = 0;
    let firstPingMs = 0;
    alive.socket.on("ping", () => {
      if (pings === 0) firstPingMs = performance.now() - opened;
      pings += 1;
    });
    const closed = await silent.inbox.closed;
    const closedMs = performance.now() - opened;
    assert.equal(closed.code, 1001);
    assert.ok(closedMs >= 190, `closed after ${closedMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.ok(pings >= 2, `${pings} pings`);
    assert.ok(firstPingMs >= 90, `first ping after ${firstPingMs} ms`);
    assert.equal(alive.socket.readyState, 1);
    alive.socket.send(JSON.stringify({ id: "still", ts: at(1) }));
    assert.equal((await alive.inbox.next()).accepted, 1);
    await alive.close();
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest's defaults are the README's: 1 MiB of answers unread for 10 s closes, 30 s idle, a 100 ms linger", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  // What the handler resolves from the options the entry points give it (only the slots).
  const settings = ingestSocketSettings(DEFAULT_LIMITS, {
    slots: { perKey: 100, perProcess: 10_000 },
  });
  assert.match(
    readme,
    /while\s+over\s+1\s+MiB\s+of\s+them\s+wait\s+to\s+be\s+sent,\s+no\s+further\s+frame\s+is\s+applied/,
  );
  assert.equal(settings.maxBufferedBytes, 1024 * 1024);
  assert.match(readme, /after\s+10\s+s\s+so,\s+the\s+connection\s+is\s+closed/);
  assert.equal(settings.maxUnreadMs, 10_000);
  assert.match(readme, /closes\s+at\s+30\s+s\s+without\s+a\s+pong/);
  assert.equal(settings.idleTimeoutSeconds, 30);
  assert.match(
    readme,
    /it\s+lingers\s+100\s+ms,\s+reading\s+and\s+dropping\s+what\s+the\s+client\s+still\s+sends/,
  );
  assert.equal(settings.closeLingerMs, 100);
});

Deno.test("WebSocket ingest lingers closeLingerMs after the last answer to a protocol error, dropping what the client still sends, then closes", async () => {
  // Long: the client's later frames and its own close come while the server still lingers.
  const lingering = await startServer({ liveRoutes: { socket: { closeLingerMs: 60_000 } } });
  try {
    const client = await denoClient(lingering.wsUrl(WS_PATH));
    client.socket.send(eventFrame("before"));
    client.socket.send(new Uint8Array([1]));
    assert.deepEqual(
      [(await client.inbox.next()).type, client.socket.readyState],
      ["ack", WebSocket.OPEN],
    );
    await eventually(() => lingering.socketStats.closing === 1);
    // Past the default 100 ms the connection still lingers, open.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(client.socket.readyState, WebSocket.OPEN);
    for (const id of ["late1", "late2", "late3"]) client.socket.send(eventFrame(id));
    // The server reads the client's close after those frames: by then it dropped them.
    assert.equal((await client.close()).code, 1000);
    await eventually(() => lingering.socketStats.connections === 0);
    assert.equal(client.inbox.unread, 0);
    assert.equal((await stats(lingering.base)).accepted, 1);
    assert.equal(lingering.socketStats.closing, 0);
  } finally {
    await lingering.close();
  }
  // Short: the linger ends with the close frame, the protocol error's code and reason.
  const brief = await startServer({ liveRoutes: { socket: { closeLingerMs: 10 } } });
  try {
    const client = await denoClient(brief.wsUrl(WS_PATH));
    client.socket.send(eventFrame("before"));
    client.socket.send(new Uint8Array([1]));
    const { answers, closed } = await within(answersUntilClosed(client), 10_000);
    assert.equal(closed.code, 1003);
    assert.match(closed.reason, /^Binary frames are not supported/);
    assert.deepEqual(answers.map((answer) => answer.type), ["ack"]);
  } finally {
    await brief.close();
  }
});

Deno.test("closeReason() cuts a reason to 123 bytes on a character boundary, never between the halves of a surrogate pair", () => {
  for (const pad of ["", "x", "xx", "é"]) {
    const text = `${pad}${"😀".repeat(40)}`;
    const reason = closeReason(text);
    assert.ok(new TextEncoder().encode(reason).length <= 123, pad);
    assert.ok(text.startsWith(reason), pad);
    assert.doesNotMatch(reason, /[\uD800-\uDBFF]$/, `no half character at the end (pad '${pad}')`);
  }
  assert.equal(closeReason("Server is shutting down"), "Server is shutting down");
});

Deno.test("readFrame() tells NDJSON, one event, a batch and the seq envelope apart", () => {
  const ndjson = readFrame('{"a":1}\n\n{"a":2}\n');
  assert.deepEqual(ndjson, {
    ok: true,
    items: [{ ok: true, value: { a: 1 }, line: 1 }, { ok: true, value: { a: 2 }, line: 3 }],
  });
  const badLine = readFrame('{"a":1}\n{oops');
  assert.equal(badLine.ok && badLine.items[1].ok, false);
  assert.deepEqual(readFrame('{"a":1}'), { ok: true, items: [{ ok: true, value: { a: 1 } }] });
  assert.deepEqual(readFrame('{"seq":3,"events":[{"a":1}]}'), {
    ok: true,
    seq: 3,
    items: [{ ok: true, value: { a: 1 } }],
  });
  assert.deepEqual(readFrame('{"events":[{"a":1}]}'), {
    ok: true,
    seq: undefined,
    items: [{ ok: true, value: { a: 1 } }],
  });
  const badSeq = readFrame('{"seq":"3","events":[{"a":1}]}');
  assert.equal(badSeq.ok, false);
  assert.equal(!badSeq.ok && badSeq.error.code, "invalid_seq");
  const notJson = readFrame("{oops");
  assert.equal(!notJson.ok && notJson.error.code, "invalid_json");
});

Deno.test("WebSocket ingest reads a frame that starts with a byte order mark as HTTP ingest reads such a body: the mark is not part of it", async () => {
  const server = await startServer();
  const { app } = await testApp();
  const client = await denoClient(server.wsUrl(WS_PATH));
  try {
    const event = JSON.stringify({ id: "bom", ts: at(5), country: "DE", amount: 1 });
    const bodies = [
      `\uFEFF${event}`,
      `\uFEFF[${event}]`,
      // A second mark is text, refused by both at the same place.
      `\uFEFF\uFEFF${event}`,
    ];
    for (const body of bodies) {
      client.socket.send(body);
      const { type: _, seq: __, retryable: ___, ...frameAnswer } = await client.inbox.next();
      const res = await postEvents(app, new TextEncoder().encode(body), { raw: true });
      const httpAnswer = await res.json();
      delete frameAnswer.error?.requestId;
      delete httpAnswer.error?.requestId;
      assert.deepEqual(frameAnswer, httpAnswer, JSON.stringify(body));
    }
    client.socket.send(`\uFEFF{"seq": 7, "events": [${event}]}`);
    const enveloped = await client.inbox.next();
    assert.deepEqual([enveloped.type, enveloped.seq, enveloped.duplicates], ["ack", 7, 1]);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("readFrame() names a seq or idempotencyKey of 1e400 (read as Infinity) as such, not as JSON's null", () => {
  assert.deepEqual(readFrame('{"seq": 1e400, "events": [{}]}'), {
    ok: false,
    error: {
      code: "invalid_seq",
      message: "Frame 'seq' must be a non-negative integer, got Infinity",
    },
    seq: undefined,
  });
  assert.deepEqual(readFrame('{"idempotencyKey": -1e400, "events": [{}]}'), {
    ok: false,
    error: {
      code: "invalid_idempotency_key",
      message: "Frame 'idempotencyKey' must be a string, got -Infinity",
    },
    seq: undefined,
  });
});

Deno.test("readFrame() refuses an envelope with a field it does not take, or an idempotencyKey without events, instead of counting it as one event", () => {
  const events = [{ a: 1 }, { a: 2 }, { a: 3 }];
  for (
    const [frame, seq] of [
      [{ seq: 1, events, sentAt: "2026-01-01T00:00:00Z" }, 1],
      [{ idempotencyKey: "k1", events, source: "app" }, undefined],
      [{ seq: 3, idempotencyKey: "zz" }, 3],
      [{ idempotencyKey: "zz" }, undefined],
    ] as const
  ) {
    const read = readFrame(JSON.stringify(frame));
    assert.equal(read.ok, false, JSON.stringify(frame));
    assert.equal(read.seq, seq);
    assert.equal(!read.ok && read.error.code, "invalid_body");
    assert.match(
      !read.ok ? read.error.message : "",
      /the envelope is \{seq\?, idempotencyKey\?, events\}/,
    );
  }
  const named = readFrame(JSON.stringify({ seq: 1, events, sentAt: "now" }));
  assert.match(!named.ok ? named.error.message : "", /has a field 'sentAt' it does not take/);
  // Still one event each: an object with `events` but neither `seq` nor `idempotencyKey`, one with
  // `seq` but no `events`, and any object in an array.
  for (
    const event of [
      { events: ["x"], user: "u1" },
      { seq: 5, temperature: 21 },
      { seq: 1, events, sentAt: "now" },
    ]
  ) {
    assert.deepEqual(readFrame(JSON.stringify([event])), {
      ok: true,
      items: [{ ok: true, value: event }],
    });
  }
  assert.deepEqual(readFrame(JSON.stringify({ events: ["x"], user: "u1" })), {
    ok: true,
    items: [{ ok: true, value: { events: ["x"], user: "u1" } }],
  });
  assert.deepEqual(readFrame(JSON.stringify({ seq: 5, temperature: 21 })), {
    ok: true,
    items: [{ ok: true, value: { seq: 5, temperature: 21 } }],
  });
});

Deno.test("/openapi.json documents the WebSocket ingest and subscribe endpoints", async () => {
  const { app } = await testApp();
  const doc = await (await app.request("/openapi.json")).json();
  assert.ok(doc.paths["/v1/streams/{stream}/ws"].get);
  assert.ok(doc.paths["/v1/streams/{stream}/subscribe"].get.parameters.some((
    parameter: { name: string },
  ) => parameter.name === "filter"));
});

Deno.test("/openapi.json and the README list every close code WebSocket ingest closes with, 1011 (a server error) too", async () => {
  const source = await Deno.readTextFile(
    new URL("../../src/http/ingest_socket.ts", import.meta.url),
  );
  const closedWith = new Set(
    [...source.matchAll(/(?:#fail|close)\(\s*(1\d{3})\b|\bcode: (1\d{3})\b/g)].map((match) =>
      Number(match[1] ?? match[2])
    ),
  );
  assert.ok(closedWith.has(1011) && closedWith.has(1003), [...closedWith].join());
  const codesIn = (text: string) => new Set([...text.matchAll(/\b1\d{3}\b/g)].map(Number));
  const { app } = await testApp();
  const doc = await (await app.request("/openapi.json")).json();
  const description: string = doc.paths["/v1/streams/{stream}/ws"].get.description;
  const listed = description.split("\n\n").find((part) => part.startsWith("Close codes:"))!;
  assert.deepEqual([...codesIn(listed)].sort(), [...closedWith].sort());
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const start = readme.indexOf("Keep at most 8 frames unacknowledged.");
  const section = readme.slice(start, readme.indexOf("Connections are bounded", start));
  for (const code of closedWith) assert.ok(codesIn(section).has(code), `README misses ${code}`);
  assert.match(
    section.replaceAll("\n", " "),
    /or the server closes with 1011 \(an error in the server, a bug, which it logs\), no answers follow/,
  );
});

Deno.test("WebSocket ingest: a frame's idempotencyKey replays its first ack and refuses other events", async () => {
  const server = await startServer({});
  const client = await denoClient(server.wsUrl(WS_PATH));
  const events = [{ id: "w1", ts: at(1), country: "DE" }, { id: "w2", ts: at(2), country: "FR" }];
  try {
    client.socket.send(JSON.stringify({ seq: 1, idempotencyKey: "frame-1", events }));
    const ack = await client.inbox.next();
    assert.deepEqual([ack.type, ack.seq, ack.accepted, ack.replayed], [
      "ack",
      1,
      ack.accepted,
      undefined,
    ]);
    client.socket.send(JSON.stringify({ seq: 2, idempotencyKey: "frame-1", events }));
    const replay = await client.inbox.next();
    assert.deepEqual({ ...replay, seq: 1 }, { ...ack, replayed: true });
    client.socket.send(JSON.stringify({ seq: 3, idempotencyKey: "frame-1", events: [events[1]] }));
    const reused = await client.inbox.next();
    assert.deepEqual([reused.type, reused.seq, reused.retryable, reused.error.code], [
      "error",
      3,
      false,
      "idempotency_key_reused",
    ]);
    client.socket.send(JSON.stringify({ seq: 4, idempotencyKey: "has space", events }));
    const bad = await client.inbox.next();
    assert.deepEqual([bad.type, bad.retryable, bad.error.code], [
      "error",
      false,
      "invalid_idempotency_key",
    ]);
    assert.equal((await stats(server.base)).accepted, 2);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest: a replayed ack whose stored rejections were shortened lists the first ones and 'rejectedOmitted'", async () => {
  const server = await startServer({});
  const client = await denoClient(server.wsUrl(WS_PATH));
  // 150 events without their required id: more rejections than a stored reply lists.
  const events = [
    { id: "w1", ts: at(1) },
    ...Array.from({ length: 150 }, () => ({ ts: at(1) })),
  ];
  try {
    client.socket.send(JSON.stringify({ seq: 1, idempotencyKey: "many", events }));
    const ack = await client.inbox.next();
    assert.deepEqual([ack.type, ack.rejected.length, "rejectedOmitted" in ack], [
      "ack",
      150,
      false,
    ]);
    client.socket.send(JSON.stringify({ seq: 2, idempotencyKey: "many", events }));
    const replay = await client.inbox.next();
    const kept = replay.rejected.length;
    assert.ok(kept > 0 && kept < 150, `${kept} kept`);
    assert.deepEqual(replay, {
      ...ack,
      seq: 2,
      rejected: ack.rejected.slice(0, kept),
      rejectedOmitted: 150 - kept,
      replayed: true,
    });
    // /openapi.json says what an ack carries: every field of this one, named in its paragraph.
    const { app } = await testApp();
    const doc = await (await app.request("/openapi.json")).json();
    const description: string = doc.paths["/v1/streams/{stream}/ws"].get.description;
    const acks = description.split("\n\n").find((part) => part.includes('{"type": "ack"'))!;
    for (const field of Object.keys(replay)) {
      assert.ok(acks.includes(`"${field}"`) || acks.includes(`\`${field}\``), `ack field ${field}`);
    }
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest: a frame's idempotencyKey resent with null where its event had 1e400 is refused as other events, not answered the first ack unapplied", async () => {
  const server = await startServer({});
  const client = await denoClient(server.wsUrl(WS_PATH));
  // JSON.stringify writes 1e400 (Infinity) as null: the two frames' events have the same JSON.
  const frame = (extra: string, seq: number) =>
    `{"seq": ${seq}, "idempotencyKey": "inf-1", "events": [{"id": "i1", "ts": "${
      at(1)
    }", "country": "DE"}, {"id": "i2", "ts": "${at(2)}", "country": "DE", "extra": ${extra}}]}`;
  try {
    client.socket.send(frame("1e400", 1));
    const first = await client.inbox.next();
    assert.deepEqual([first.type, first.accepted, first.rejected.length], ["ack", 1, 1]);
    // The same events again (another seq, other spacing): the first ack, nothing applied.
    client.socket.send(frame("1e400", 2).replaceAll(", ", ","));
    const replay = await client.inbox.next();
    assert.deepEqual([replay.type, replay.replayed], ["ack", true]);
    client.socket.send(frame("null", 3));
    const reused = await client.inbox.next();
    assert.deepEqual([reused.type, reused.seq, reused.retryable, reused.error?.code], [
      "error",
      3,
      false,
      "idempotency_key_reused",
    ]);
    assert.equal((await stats(server.base)).accepted, 1);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest error frames carry the upgrade request's X-Request-Id, or a new id", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({ store });
  try {
    for (
      const [down, frame, code] of [
        [false, "{not json", "invalid_json"],
        [true, JSON.stringify({ id: "w1", ts: at(1) }), "store_unavailable"],
      ] as const
    ) {
      control.down = down;
      const client = await nodeClient(server.wsUrl(WS_PATH), {
        headers: { "X-Request-Id": "ws-client-1" },
      });
      client.socket.send(frame);
      const reply = await client.inbox.next();
      assert.deepEqual([reply.type, reply.error.code], ["error", code]);
      assert.equal(reply.error.requestId, "ws-client-1");
      await client.close();

      const fresh = await nodeClient(server.wsUrl(WS_PATH), {
        headers: { "X-Request-Id": "not a valid id" },
      });
      fresh.socket.send(frame);
      assert.match(
        (await fresh.inbox.next()).error.requestId,
        /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
      );
      await fresh.close();
    }
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest answers a frame over the stream's rate limit with a retryable rate_limited error, one past its burst with a final too_many_events, and counts none of them", async () => {
  const config = {
    streams: {
      limited: {
        limits: { eventsPerSecond: 1, burst: 3 },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  };
  const server = await startServer({ config });
  const client = await denoClient(server.wsUrl("/v1/streams/limited/ws"));
  try {
    client.socket.send(JSON.stringify([{}, {}]));
    client.socket.send(JSON.stringify([{}, {}]));
    client.socket.send(JSON.stringify([{}]));
    // Past the burst: no wait makes it fit, so it is not retryable.
    client.socket.send(JSON.stringify([{}, {}, {}, {}]));
    const [first, second, third, fourth] = [
      await client.inbox.next(),
      await client.inbox.next(),
      await client.inbox.next(),
      await client.inbox.next(),
    ];
    assert.equal(first.type, "ack");
    assert.equal(second.type, "error");
    assert.equal(second.retryable, true);
    assert.equal(second.error.code, "rate_limited");
    assert.match(second.error.message, /refused whole/);
    assert.equal(third.type, "ack");
    assert.deepEqual(
      [fourth.type, fourth.retryable, fourth.error.code, fourth.error.details],
      ["error", false, "too_many_events", { maxEvents: 3 }],
    );
    const stats = await server.store.stats(
      "limited",
      compileConfig(config).get("limited")!.counterMetas,
    );
    assert.equal(stats.accepted, 3);
  } finally {
    await client.close();
    await server.close();
  }
});

/** The fields of an error frame these tests read. */
interface RefusedFrame {
  type: string;
  seq: number;
  retryable: boolean;
  error: { code: string; message: string; details?: { retryAfterMs: number } };
}

/**
 * Sends two frames of 2 events to a stream of burst 3 at 1 event/s: the second finds 1 token (and
 * what refilled since) and is refused. Returns its error frame and the ms of the message's "retry in".
 */
async function refusedFrame(store: Store): Promise<{ frame: RefusedFrame; messageMs: number }> {
  const config = {
    streams: {
      limited: {
        limits: { eventsPerSecond: 1, burst: 3 },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  };
  const server = await startServer({ config, store });
  const client = await denoClient(server.wsUrl("/v1/streams/limited/ws"));
  try {
    client.socket.send(JSON.stringify([{}, {}]));
    client.socket.send(JSON.stringify({ seq: 9, events: [{}, {}] }));
    assert.equal((await client.inbox.next()).type, "ack");
    const frame = await client.inbox.next() as RefusedFrame;
    assert.deepEqual([frame.type, frame.seq, frame.retryable, frame.error.code], [
      "error",
      9,
      true,
      "rate_limited",
    ]);
    const messageMs = Number(/retry in (\d+) ms/.exec(frame.error.message)?.[1]);
    return { frame, messageMs };
  } finally {
    await client.close();
    await server.close();
  }
}

Deno.test("WebSocket ingest gives a rate_limited frame the wait in whole ms as error.details.retryAfterMs (memory store)", async () => {
  // The store's clock stands still: 1 token held, 1 more at 1 event/s is exactly 1000 ms.
  const { frame, messageMs } = await refusedFrame(new MemoryStore({ now: () => NOW }));
  assert.deepEqual(frame.error.details, { retryAfterMs: 1000 });
  assert.equal(messageMs, 1000);
});

redisTest(
  "WebSocket ingest gives a rate_limited frame the wait in whole ms as error.details.retryAfterMs (Redis store)",
  async (fixture) => {
    // Redis refills by its own clock: 1 token held, less than 1000 ms to the next, as it says.
    const { frame, messageMs } = await refusedFrame(new RedisStore(restClient(fixture)));
    const retryAfterMs = frame.error.details?.retryAfterMs ?? NaN;
    assert.ok(Number.isInteger(retryAfterMs), `whole ms: ${retryAfterMs}`);
    assert.ok(
      retryAfterMs > 0 && retryAfterMs <= 1000,
      `within the bucket's 1000 ms: ${retryAfterMs}`,
    );
    assert.equal(retryAfterMs, messageMs);
  },
);

/** Creates a run-time key on `server` with the admin key. */
async function createKey(server: TestServer, body: object): Promise<{ id: string; key: string }> {
  const res = await fetch(`${server.base}/v1/keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201);
  return await res.json();
}

Deno.test("WebSocket ingest holds a publishable key to its origins and a deleted key stops an open socket", async () => {
  const shop = "https://shop.example";
  const other = "https://other.example";
  const server = await startServer({ auth: true, origins: { allowedOrigins: [shop, other] } });
  const admin = { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" };
  const create = (body: object) => createKey(server, body);
  try {
    const pk = await create({ type: "publishable", streams: ["orders"], origins: [shop] });
    const elsewhere = await nodeClient(server.wsUrl(WS_PATH), {
      headers: { Origin: other },
      protocols: [`bearer.${pk.key}`],
    });
    assert.equal(elsewhere.status, 403, "the page is allowed, but not for this key");
    const fromShop = await nodeClient(server.wsUrl(WS_PATH), {
      headers: { Origin: shop },
      protocols: [`bearer.${pk.key}`],
    });
    assert.equal(fromShop.status, undefined);
    await fromShop.close();

    const sk = await create({ scopes: ["ingest"] });
    const client = await denoClient(server.wsUrl(WS_PATH), [`bearer.${sk.key}`]);
    try {
      client.socket.send(JSON.stringify({ country: "DE", amount: 1 }));
      assert.equal((await client.inbox.next()).type, "ack");
      const deleted = await fetch(`${server.base}/v1/keys/${sk.id}`, {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(deleted.status, 204);
      client.socket.send(JSON.stringify({ country: "DE", amount: 2 }));
      const refused = await client.inbox.next();
      assert.equal(refused.type, "error");
      assert.equal(refused.error.code, "unauthorized");
    } finally {
      await client.close();
    }
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest: a frame after the connection's key expired gets unauthorized, saying so, and counts nothing", async () => {
  let clock = NOW;
  const server = await startServer({ auth: true, keyRing: { now: () => clock } });
  try {
    const sk = await createKey(server, {
      scopes: ["ingest"],
      expiresAt: new Date(NOW + 60_000).toISOString(),
    });
    const client = await denoClient(server.wsUrl(WS_PATH), [`bearer.${sk.key}`]);
    try {
      client.socket.send(JSON.stringify({ id: "x1", country: "DE", amount: 1 }));
      assert.equal((await client.inbox.next()).type, "ack");
      clock = NOW + 60_000;
      client.socket.send(JSON.stringify({ id: "x2", country: "DE", amount: 2 }));
      const refused = await client.inbox.next();
      assert.deepEqual([refused.type, refused.seq, refused.retryable, refused.error.code], [
        "error",
        2,
        false,
        "unauthorized",
      ]);
      assert.match(refused.error.message, new RegExp(`^API key '${sk.id}' expired at `));
      assert.equal((await server.store.stats("orders", [])).accepted, 1);
    } finally {
      await client.close();
    }
  } finally {
    await server.close();
  }
});

Deno.test("a publishable key opens a WebSocket from the origins it lists (or with no Origin), with no server-wide allowed origins", async () => {
  const shop = "https://shop.example";
  const server = await startServer({ auth: true });
  try {
    const { key: pk } = await createKey(server, {
      type: "publishable",
      streams: ["orders"],
      origins: [shop],
    });
    const fromShop = await nodeClient(server.wsUrl(WS_PATH), {
      headers: { Origin: shop },
      protocols: [`bearer.${pk}`],
    });
    assert.equal(fromShop.status, undefined, "upgraded");
    fromShop.socket.send(JSON.stringify({ country: "DE", amount: 1 }));
    assert.equal((await fromShop.inbox.next()).type, "ack");
    await fromShop.close();
    // A client that sends no Origin (not a browser: curl, a script) is no page to refuse, as on
    // HTTP ingest: anyone may read the key from the page and send with it.
    const noOrigin = await nodeClient(server.wsUrl(WS_PATH), { protocols: [`bearer.${pk}`] });
    assert.equal(noOrigin.status, undefined, "upgraded without an Origin");
    noOrigin.socket.send(
      JSON.stringify({ id: "no-origin-1", ts: at(1), country: "DE", amount: 2 }),
    );
    const ack = await noOrigin.inbox.next();
    assert.equal(ack.type, "ack");
    assert.equal(ack.accepted, 1, JSON.stringify(ack));
    await noOrigin.close();
    // Elsewhere, and a key that lists no origins, and no key: refused before upgrading.
    for (
      const [origin, protocols] of [
        ["https://other.example", [`bearer.${pk}`]],
        [shop, [`bearer.${KEYS.ingest}`]],
        [shop, []],
      ] as const
    ) {
      const refused = await nodeClient(server.wsUrl(WS_PATH), {
        headers: { Origin: origin },
        protocols: [...protocols],
      });
      assert.equal(refused.status, 403, `${origin} ${protocols}`);
    }
  } finally {
    await server.close();
  }
});

Deno.test("a secret key's origins admit its WebSocket ingest and its fetch from them; the keyless preflight grants any origin, the POST refuses another", async () => {
  const shop = "https://shop.example";
  const server = await startServer({ auth: true });
  try {
    const { key: sk } = await createKey(server, {
      scopes: ["ingest"],
      streams: ["orders"],
      origins: [shop],
    });
    assert.match(sk, /^sk_/);
    const fromShop = await nodeClient(server.wsUrl(WS_PATH), {
      headers: { Origin: shop },
      protocols: [`bearer.${sk}`],
    });
    assert.equal(fromShop.status, undefined, "upgraded");
    fromShop.socket.send(JSON.stringify({ country: "DE", amount: 1 }));
    assert.equal((await fromShop.inbox.next()).type, "ack");
    await fromShop.close();
    const elsewhere = await nodeClient(server.wsUrl(WS_PATH), {
      headers: { Origin: "https://other.example" },
      protocols: [`bearer.${sk}`],
    });
    assert.equal(elsewhere.status, 403);
    // What a page's fetch with the key in Authorization sends first: no key, so it cannot tell
    // one origin from another (nor whether the stream exists) and grants whichever asks.
    for (const origin of [shop, "https://other.example"]) {
      const preflight = await fetch(`${server.base}/v1/streams/orders/events`, {
        method: "OPTIONS",
        headers: {
          Origin: origin,
          "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "authorization, content-type",
        },
      });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get("Access-Control-Allow-Origin"), origin);
      await preflight.body?.cancel();
    }
    // The POST then carries the key, whose origins admit the shop's page only.
    const post = (origin: string) =>
      fetch(`${server.base}/v1/streams/orders/events`, {
        method: "POST",
        headers: {
          Origin: origin,
          Authorization: `Bearer ${sk}`,
          "Content-Type": "application/json",
        },
        body: JSON.stringify({ id: "fetch-1", country: "DE", amount: 1 }),
      });
    const admitted = await post(shop);
    assert.equal(admitted.status, 202);
    assert.equal(admitted.headers.get("Access-Control-Allow-Origin"), shop);
    await admitted.body?.cancel();
    const other = await post("https://other.example");
    assert.equal(other.status, 403);
    assert.equal((await other.json()).error.code, "origin_not_allowed");
    // Refused, but readable: the page learns why (browser.ts).
    assert.equal(other.headers.get("Access-Control-Allow-Origin"), "https://other.example");
  } finally {
    await server.close();
  }
});

Deno.test("a WebSocket ingest client that does not read its answers gets no more frames applied, then 1008", async () => {
  const server = await startServer({
    liveRoutes: { socket: { maxBufferedBytes: 64 * 1024, maxUnreadMs: 500 } },
  });
  const client = await nodeClient(server.wsUrl(WS_PATH));
  try {
    client.socket.pause();
    // Each answer lists 1,000 rejections (~90 KB) for a 2 KB frame.
    const frame = JSON.stringify(Array.from({ length: 1_000 }, () => 1));
    // A client that ignores its answers: a frame every 50 ms, whatever came back.
    let sent = 0;
    while (server.socketStats.closing === 0 && server.socketStats.connections > 0) {
      assert.ok(sent < 100, "the server never gave up on the client");
      client.socket.send(frame);
      sent += 1;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Counted off the frames' path: counted now.
    await server.rejectedCounts.flush();
    const applied = (await stats(server.base)).rejected;
    // The server stopped applying frames past the bound and closes: the close frame comes once
    // the client reads what waits before it.
    client.socket.resume();
    const closed = await within(client.inbox.closed, 10_000);
    await eventually(() => server.socketStats.connections === 0);
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /^Client too slow: answers waiting to be sent stayed over 65536/);
    // Frames were applied only while their answers were taken: by the client, or by the sockets'
    // buffers in the kernel (48 answers here, some 4 MB, before Deno's own `bufferedAmount`
    // grows), never every frame sent. (Each frame's rejections count in the stats, though it
    // accepted none.)
    assert.ok(
      applied > 0 && applied < sent * 1_000,
      `${applied} of ${sent * 1_000} events applied`,
    );
    await server.rejectedCounts.flush();
    assert.equal((await stats(server.base)).rejected, applied, "none after the close");
  } finally {
    client.socket.terminate();
    await server.close();
  }
});

/** Waits until `server` holds no place and no connection; the time (`performance.now`) it saw so. */
async function placeFreed(server: TestServer): Promise<number> {
  await eventually(
    () => server.socketStats.slotsHeld === 0 && server.socketStats.connections === 0,
    10_000,
  );
  return performance.now();
}

/**
 * That a place seen freed at `freedMs` was held for the grace after `beforeCloseMs`, a time
 * before the server sent its close frame (both `performance.now`). No sleep decides it: a slow
 * machine only makes the place seen freed later, so a server that keeps the grace never fails
 * this, and one that frees the place early fails it unless its test is stalled for the rest of the
 * grace.
 */
function assertFreedAfterGrace(freedMs: number, beforeCloseMs: number, graceMs: number): void {
  // 1 ms for a timer's ms rounding.
  assert.ok(
    freedMs - beforeCloseMs >= graceMs - 1,
    `the place was freed ${
      Math.round(freedMs - beforeCloseMs)
    } ms after the close frame, before the grace of ${graceMs} ms`,
  );
}

Deno.test("README: a WebSocket ingest client closed for unread answers that still reads nothing has its connection dropped, and its place freed, closeGraceMs (10 s by default) after the close frame", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "a client that reads nothing gets that frame only after its unread answers, and the server drops the connection of a client that has not answered the close frame 10 s after it was sent: its place is freed then";
  assert.ok(readme.includes(claim), claim);
  assert.equal(ingestSocketSettings(DEFAULT_LIMITS).closeGraceMs, 10_000);
  const server = await startServer({
    liveRoutes: {
      // A linger long enough that the loop below sees the connection closing.
      socket: {
        maxBufferedBytes: 64 * 1024,
        maxUnreadMs: 300,
        closeLingerMs: 1_000,
        closeGraceMs: 1_000,
        slots: { perKey: 1 },
      },
    },
  });
  const client = await nodeClient(server.wsUrl(WS_PATH));
  try {
    client.socket.pause();
    const frame = JSON.stringify(Array.from({ length: 1_000 }, () => 1));
    // A frame whenever the server holds none, until it stops applying them (its answers wait
    // unread) and closes: one frame held at most, so the close is for the answers left unread.
    for (let sent = 0; server.socketStats.closing === 0;) {
      assert.ok(sent < 200, "the server never stopped applying frames");
      if (server.socketStats.framesQueued === 0) {
        client.socket.send(frame);
        sent += 1;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // The close frame is sent once the linger ends (the connection stops counting as closing),
    // and the grace starts then: after the last time it was seen closing.
    let lingering = performance.now();
    await eventually(() => {
      if (server.socketStats.closing === 0) return true;
      lingering = performance.now();
      return false;
    }, 10_000);
    // The client, which never answers the close frame, still holds its place: one more upgrade
    // on its key is refused.
    assert.equal(server.socketStats.slotsHeld, 1, "the place was freed with the close frame");
    assert.equal(server.socketStats.connections, 1);
    assert.match(await rawStatus(server.base, rawUpgrade(WS_PATH)), /^HTTP\/1\.1 429 /);
    // Closed by the server; the client reads nothing, so it never answers the close frame: its
    // connection is dropped after the grace, and its place is free for another.
    assertFreedAfterGrace(await placeFreed(server), lingering, 1_000);
    assert.match(await rawStatus(server.base, rawUpgrade(WS_PATH)), /^HTTP\/1\.1 101 /);
  } finally {
    client.socket.terminate();
    await server.close();
  }
});

Deno.test("a raw WebSocket ingest client closed for a binary frame that never answers the close frame keeps its place until closeGraceMs after it, then has its connection ended and its place freed", async () => {
  const server = await startServer({
    liveRoutes: { socket: { closeGraceMs: 1_000, slots: { perKey: 1 } } },
  });
  try {
    // Before the frame the server closes for: its grace starts after this.
    const sent = performance.now();
    const { conn, head, rest } = await rawSocketSending(server, WS_PATH, {
      opcode: 2,
      payload: new Uint8Array([1, 2, 3]),
    });
    try {
      assert.match(head, /^HTTP\/1\.1 101 /);
      // The client reads what comes but answers nothing: the close frame waits unanswered.
      let received = new Uint8Array(rest);
      while (Number.isNaN(closeCodeIn(received))) {
        const buffer = new Uint8Array(4096);
        const read = await within(conn.read(buffer), 10_000);
        assert.ok(read !== null, "the connection ended before a close frame");
        received = new Uint8Array([...received, ...buffer.subarray(0, read)]);
      }
      assert.equal(closeCodeIn(received), 1003);
      // Once the close frame is sent, its place is still held: one more is refused.
      assert.equal(server.socketStats.slotsHeld, 1, "the place was freed with the close frame");
      assert.equal(server.socketStats.connections, 1);
      assert.match(await rawStatus(server.base, rawUpgrade(WS_PATH)), /^HTTP\/1\.1 429 /);
      // Then the server drops the connection, and its place is free, not before the grace.
      assertFreedAfterGrace(await placeFreed(server), sent, 1_000);
      const { closed } = await readAllFor(conn, 10_000);
      assert.ok(closed, "the connection is still open");
      assert.match(await rawStatus(server.base, rawUpgrade(WS_PATH)), /^HTTP\/1\.1 101 /);
    } finally {
      conn.close();
    }
  } finally {
    await server.close();
  }
});

Deno.test("a frame error is retryable for exactly the codes the README's WebSocket section lists", async () => {
  const { RETRYABLE_CODES } = await import("../../src/http/ingest_socket.ts");
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(
    readme.indexOf("`retryable: true` means"),
    readme.indexOf("Send it again; ids or its"),
  );
  const listed = [...section.matchAll(/`([a-z_]+)`/g)].map((match) => match[1])
    .filter((code) => code !== "outcome");
  // The store unavailable is said in words, its code is `store_unavailable`; closing is
  // `connection_closing`, answered by the connection itself.
  assert.deepEqual(
    [...RETRYABLE_CODES].sort(),
    [...new Set([...listed, "store_unavailable"])].filter((code) => code !== "connection_closing")
      .sort(),
  );
});

Deno.test("/openapi.json's WebSocket ingest says retryable for exactly the retryable codes, and that a store unavailable may have counted", async () => {
  const { RETRYABLE_CODES } = await import("../../src/http/ingest_socket.ts");
  const { app } = await testApp();
  const doc = await (await app.request("/openapi.json")).json();
  const description: string = doc.paths["/v1/streams/{stream}/ws"].get.description;
  const start = description.indexOf("`retryable: true` means");
  assert.ok(start >= 0, description);
  const sentence = description.slice(start, description.indexOf(": resend", start));
  const listed = [...sentence.matchAll(/`([a-z_]+)`/g)].map((match) => match[1]);
  // As the README: the store unavailable is said in words (its code is `store_unavailable`).
  assert.deepEqual(
    [...new Set([...listed, "store_unavailable"])].sort(),
    [...RETRYABLE_CODES, "connection_closing"].sort(),
  );
  // A frame the store was applying when it stopped answering may have counted (outcome unknown):
  // the document must not promise otherwise.
  assert.doesNotMatch(sentence, /means nothing was counted/);
  assert.match(sentence, /details\.outcome/);
});

Deno.test("a cross-origin WebSocket ingest upgrade with no valid key is refused 403 before it upgrades", async () => {
  const server = await startServer({ auth: true });
  try {
    for (const protocols of [[], ["bearer.sk_notAKeyNotAKeyNotAKey0123456789"]]) {
      const client = await nodeClient(server.wsUrl(WS_PATH), {
        headers: { Origin: "https://other.example" },
        protocols,
      });
      assert.equal(client.status, 403, JSON.stringify(protocols));
    }
  } finally {
    await server.close();
  }
});

Deno.test("a cross-origin WebSocket ingest upgrade to a stream name that is no name is the name check's 400 once its key is verified, as HTTP ingest's POST, not a 403 telling to list the origin", async () => {
  const server = await startServer({ auth: true });
  try {
    for (const name of ["a.b", "a%20b", "x".repeat(65)]) {
      const path = `/v1/streams/${name}/ws`;
      const keyed = await nodeClient(server.wsUrl(path), {
        headers: { Origin: "https://other.example" },
        protocols: [`bearer.${KEYS.ingest}`],
      });
      assert.equal(keyed.status, 400, name);
      // The body says why, as the route's name check says it to a request without Origin.
      const res = await fetch(`${server.base}${path}`, {
        headers: {
          Upgrade: "websocket",
          Connection: "Upgrade",
          "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
          Authorization: `Bearer ${KEYS.ingest}`,
          Origin: "https://other.example",
        },
      });
      assert.equal(res.status, 400, name);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_request");
      assert.match(error.message, /^Invalid path parameter stream: Names are 1-64 characters/);
      // Without a valid key, refused 403 before the upgrade, as for a name.
      const keyless = await nodeClient(server.wsUrl(path), {
        headers: { Origin: "https://other.example" },
      });
      assert.equal(keyless.status, 403, name);
    }
  } finally {
    await server.close();
  }
});

Deno.test("a WebSocket ingest upgrade to a stream name that is no name with a key limited to streams is the name check's 400 before the upgrade, from a page on any origin or none", async () => {
  const server = await startServer({ auth: true });
  try {
    const limited = await createKey(server, { scopes: ["ingest"], streams: ["orders"] });
    for (const name of ["a.b", "x".repeat(65)]) {
      const path = `/v1/streams/${name}/ws`;
      for (const headers of [{ Origin: "https://other.example" }, {}] as Record<string, string>[]) {
        const client = await nodeClient(server.wsUrl(path), {
          headers,
          protocols: [`bearer.${limited.key}`],
        });
        assert.equal(client.status, 400, `${name} ${JSON.stringify(headers)}`);
        await client.close();
      }
      const res = await fetch(`${server.base}${path}`, {
        headers: {
          Upgrade: "websocket",
          Connection: "Upgrade",
          "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
          Authorization: `Bearer ${limited.key}`,
          Origin: "https://other.example",
        },
      });
      assert.equal(res.status, 400, name);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_request");
      assert.match(error.message, /^Invalid path parameter stream: Names are 1-64 characters/);
    }
  } finally {
    await server.close();
  }
});

/** A WebSocket upgrade of `WS_PATH`, as a client sends it, read as plain HTTP. */
function upgradeRequest(server: TestServer, headers: Record<string, string>) {
  return fetch(`${server.base}${WS_PATH}`, {
    headers: {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
      ...headers,
    },
  });
}

/** Opens an ingest socket with `key` and has one frame acknowledged on it. */
async function ingestSocket(server: TestServer, key: string) {
  const client = await denoClient(server.wsUrl(WS_PATH), [`bearer.${key}`]);
  client.socket.send(JSON.stringify({ country: "DE", amount: 1 }));
  const reply = await client.inbox.next();
  assert.equal(reply.type, "ack", JSON.stringify(reply));
  return client;
}

/** Waits until an upgrade with `key` is taken again, and returns that socket. */
async function reopened(server: TestServer, key: string) {
  let client: Awaited<ReturnType<typeof ingestSocket>> | undefined;
  await eventually(async () => {
    const probe = await nodeClient(server.wsUrl(WS_PATH), { protocols: [`bearer.${key}`] });
    await probe.close();
    if (probe.status !== undefined) return false;
    client = await ingestSocket(server, key);
    return true;
  });
  return client!;
}

Deno.test("WebSocket ingest is bounded per key: one more is 429 too_many_ingest_sockets before the upgrade; another key is not; a closed one frees its place", async () => {
  const server = await startServer({
    auth: true,
    liveRoutes: { socket: { slots: { perKey: 2, perProcess: 100 } } },
  });
  try {
    const first = await ingestSocket(server, KEYS.ingest);
    const second = await ingestSocket(server, KEYS.ingest);

    // A real client is refused at the handshake: no socket opened.
    const refused = await nodeClient(server.wsUrl(WS_PATH), {
      protocols: [`bearer.${KEYS.ingest}`],
    });
    assert.equal(refused.status, 429);
    const response = await upgradeRequest(server, { Authorization: `Bearer ${KEYS.ingest}` });
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("Retry-After"), "5");
    const body = await response.json();
    assert.equal(body.error.code, "too_many_ingest_sockets");
    assert.deepEqual(body.error.details, { limit: "key", max: 2 });
    assert.match(
      body.error.message,
      /^Too many WebSocket ingest connections: this API key has 2 open on this server; the limit is 2/,
    );
    assert.doesNotMatch(
      body.error.message,
      new RegExp(KEYS.ingest),
      "the key's text is not echoed",
    );
    assert.equal(server.socketStats.slotsHeld, 2);

    // Another key has places of its own.
    const other = await ingestSocket(server, KEYS.admin);
    await other.close();

    // The client closing one frees its place.
    await first.close();
    const again = await reopened(server, KEYS.ingest);
    assert.equal(
      (await nodeClient(server.wsUrl(WS_PATH), { protocols: [`bearer.${KEYS.ingest}`] })).status,
      429,
    );
    await again.close();
    await second.close();
    await eventually(() => server.socketStats.slotsHeld === 0);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest is bounded per process: 503 ingest_sockets_full with Retry-After, whatever the key; a denied key takes no place", async () => {
  const server = await startServer({
    auth: true,
    liveRoutes: { socket: { slots: { perKey: 10, perProcess: 2 } } },
  });
  try {
    const first = await ingestSocket(server, KEYS.ingest);
    const second = await ingestSocket(server, KEYS.admin);
    for (const key of [KEYS.ingest, KEYS.admin]) {
      const refused = await nodeClient(server.wsUrl(WS_PATH), { protocols: [`bearer.${key}`] });
      assert.equal(refused.status, 503);
      const response = await upgradeRequest(server, { Authorization: `Bearer ${key}` });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get("Retry-After"), "5");
      const body = await response.json();
      assert.equal(body.error.code, "ingest_sockets_full");
      assert.deepEqual(body.error.details, { limit: "process", max: 2 });
    }
    // A key without the ingest scope is upgraded to be told why (1008), holding no place.
    const denied = await denoClient(server.wsUrl(WS_PATH), [`bearer.${KEYS.read}`]);
    assert.equal((await denied.inbox.closed).code, 1008);
    assert.equal(server.socketStats.slotsHeld, 2);
    // Live subscriptions are a pool of their own: a full ingest pool refuses none.
    const subscriber = await denoClient(server.wsUrl("/v1/streams/orders/subscribe"), [
      `bearer.${KEYS.read}`,
    ]);
    assert.equal((await subscriber.inbox.next()).type, "subscribed");
    await subscriber.close();
    await second.close();
    const again = await reopened(server, KEYS.ingest);
    await again.close();
    await first.close();
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest frees a connection's place however it ends: a server close for a protocol error, an upgrade that fails, a shutdown", async () => {
  const server = await startServer({
    auth: true,
    liveRoutes: { socket: { slots: { perKey: 1, perProcess: 100 } } },
  });
  try {
    // Closed by the server for a binary frame (1003).
    const binary = await ingestSocket(server, KEYS.ingest);
    binary.socket.send(new Uint8Array([123, 125]));
    assert.equal((await binary.inbox.closed).code, 1003);
    const afterProtocolError = await reopened(server, KEYS.ingest);
    await afterProtocolError.close();
    await eventually(() => server.socketStats.slotsHeld === 0);

    // Authorized, then refused by Deno's handshake (400): never upgraded, no close event to wait for.
    for (let attempt = 0; attempt < 3; attempt++) {
      const failed = await upgradeRequest(server, {
        "Sec-WebSocket-Protocol": `edgestream,bearer.${KEYS.ingest}`,
      });
      assert.equal(failed.status, 400);
      assert.equal((await failed.json()).error.code, "invalid_upgrade");
      assert.equal(server.socketStats.slotsHeld, 0);
    }

    // The server shutting down closes the open one (1001), which gives its place back.
    const open = await ingestSocket(server, KEYS.ingest);
    assert.equal(server.socketStats.slotsHeld, 1);
    const closing = server.connections.close("Server is shutting down");
    assert.equal((await open.inbox.closed).code, 1001);
    await closing;
    await eventually(() => server.socketStats.slotsHeld === 0);
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest bounds a publishable key per key, from any page, and in open mode each client address", async () => {
  const shop = "https://shop.example";
  const server = await startServer({
    auth: true,
    origins: { allowedOrigins: [shop] },
    liveRoutes: { socket: { slots: { perKey: 1, perProcess: 100 } } },
  });
  try {
    const pk = await createKey(server, {
      type: "publishable",
      streams: ["orders"],
      origins: [shop],
    });
    const page = { headers: { Origin: shop }, protocols: [`bearer.${pk.key}`] };
    const first = await nodeClient(server.wsUrl(WS_PATH), page);
    assert.equal(first.status, undefined);
    const response = await upgradeRequest(server, {
      Origin: shop,
      "Sec-WebSocket-Protocol": `bearer.${pk.key}`,
    });
    assert.equal(response.status, 429);
    const body = await response.json();
    assert.equal(body.error.code, "too_many_ingest_sockets");
    assert.match(body.error.message, new RegExp(`API key '${pk.id}' has 1 open`));
    await first.close();
  } finally {
    await server.close();
  }
  const open = await startServer({ liveRoutes: { socket: { slots: { perKey: 1 } } } });
  try {
    const first = await denoClient(open.wsUrl(WS_PATH));
    const response = await upgradeRequest(open, {});
    assert.equal(response.status, 429);
    assert.match((await response.json()).error.message, /client address 127\.0\.0\.1 has 1 open/);
    await first.close();
  } finally {
    await open.close();
  }
});

Deno.test("both WebSocket routes upgrade whatever the case of the Upgrade header (RFC 6455) and with empty list elements in it (RFC 9110 §5.6.1.2), not 500 or 426", async () => {
  const server = await startServer();
  try {
    for (const path of ["/v1/streams/orders/ws", "/v1/streams/orders/subscribe"]) {
      for (
        const upgrade of ["websocket", "WebSocket", "WEBSOCKET", "websocket, ", ", , WebSocket"]
      ) {
        const request = rawUpgrade(path, { upgrade });
        assert.equal(
          await rawStatus(server.base, request),
          "HTTP/1.1 101 Switching Protocols",
          `${path} ${upgrade}`,
        );
      }
    }
    await eventually(() => server.live.stats.subscribers === 0);
  } finally {
    await server.close();
  }
});

Deno.test("readFrame() says where a frame or its NDJSON line stops being JSON, quoting none of its text", () => {
  const one = readFrame('{"id":"a","token":s3cr3t-value-12345}');
  assert.deepEqual(one, {
    ok: false,
    seq: undefined,
    error: {
      code: "invalid_json",
      message: "Body is not valid JSON: Unexpected character at line 1, column 19",
    },
  });
  const lines = readFrame('{"a":1}\n{"token":s3cr3t-value-12345}');
  assert.ok(lines.ok);
  assert.deepEqual(lines.items[1], {
    ok: false,
    error: { path: "", message: "Line 2 is not valid JSON: Unexpected character at column 10" },
    line: 2,
  });
});

Deno.test({
  name:
    "upgradeSocket() ends a WebSocket whose client left before the 101 was written (Deno gives it no event): onClose frees what its handler holds",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const closes: number[] = [];
  let upgraded!: () => void;
  const handed = new Promise<void>((resolve) => upgraded = resolve);
  const app = new Hono();
  app.get("/", async (c) => {
    // Slow before the upgrade (a key looked up in Redis, say): the client is gone meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const response = upgradeSocket(
      c,
      {
        onClose(event) {
          closes.push((event as CloseEvent).code);
        },
      },
      { openWithinMs: 300 },
    );
    upgraded();
    return response;
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(
      new TextEncoder().encode(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      ),
    );
    conn.close();
    await handed;
    await eventually(() => closes.length === 1);
    assert.deepEqual(closes, [1006]);
    // As the README says, 10 s by default.
    const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
      .replace(/\s+/g, " ");
    const claim =
      "one whose client left before the upgrade's `101` was written (Deno then tells nothing of it) frees it 10 s after the upgrade";
    assert.ok(readme.includes(claim), claim);
    assert.equal(OPEN_WITHIN_MS, 10_000);
  } finally {
    // Deno's own shutdown waits without bound for the upgrade it never finished (src/main.ts
    // bounds its stop by EDGESTREAM_SHUTDOWN): not waited for here, nor sanitized.
    void server.shutdown();
  }
});

Deno.test("WebSocket ingest logs each answered frame as HTTP ingest logs a request: the counts, or the error and its cause, level by status, without the frame's text", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({ store });
  try {
    await collectingLogs(async (records) => {
      const client = await denoClient(server.wsUrl(WS_PATH));
      const private_ = "private-amount-4f1c";
      client.socket.send(
        JSON.stringify({ seq: 5, events: [{ id: "w1", ts: at(1), country: "DE" }] }),
      );
      client.socket.send(
        JSON.stringify([{ id: "w2", ts: at(2), country: "DE", amount: private_ }]),
      );
      client.socket.send(`[{"id": "w3", "note": "${private_}"`);
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push(await client.inbox.next());
      control.down = true;
      client.socket.send(eventFrame("w4"));
      answers.push(await client.inbox.next());
      await client.close();
      assert.deepEqual(answers.map((answer) => [answer.type, answer.seq]), [
        ["ack", 5],
        ["ack", 2],
        ["error", 3],
        ["error", 4],
      ]);
      const requestId = answers[3].error.requestId;
      assert.match(requestId, /^[0-9a-f-]{36}$/);
      const lines = records.filter((record) => messageOf(record).startsWith("WS "));
      assert.deepEqual(lines.map((record) => [record.category.join("."), record.level]), [
        ["edgestream.http", "info"],
        ["edgestream.http", "info"],
        ["edgestream.http", "info"],
        ["edgestream.http", "warning"],
      ]);
      assert.match(messageOf(lines[0]), /^WS \/v1\/streams\/orders\/ws frame 5 202 [\d.]+ ms$/);
      const common = { transport: "ws", path: WS_PATH, requestId, stream: "orders" };
      const { durationMs, ...first } = lines[0].properties;
      assert.equal(typeof durationMs, "number");
      assert.deepEqual(first, {
        ...common,
        frame: 5,
        status: 202,
        accepted: 1,
        duplicates: 0,
        late: 0,
        filtered: 0,
        rejected: 0,
      });
      // No event accepted: the 400 HTTP answers such a request, with the counts and its error.
      assert.deepEqual({ ...lines[1].properties, durationMs: 0 }, {
        ...common,
        frame: 2,
        status: 400,
        durationMs: 0,
        accepted: 0,
        duplicates: 0,
        late: 0,
        filtered: 0,
        rejected: 1,
        error: { code: "no_events_accepted", message: "No event was accepted; see 'rejected'" },
      });
      assert.deepEqual(
        [lines[2].properties.status, lines[2].properties.error],
        [400, { code: answers[2].error.code, message: answers[2].error.message }],
      );
      assert.deepEqual(
        [lines[3].properties.frame, lines[3].properties.status, lines[3].properties.error],
        [4, 503, { code: "store_unavailable", message: answers[3].error.message }],
      );
      assert.match(
        String(lines[3].properties.cause),
        /^StoreUnavailableError: Redis is unavailable \(applyBatch\): connection refused/,
      );
      assert.ok(!JSON.stringify(lines.map((record) => record.properties)).includes(private_));
    });
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest writes a frame's line through configureLogging's sink as a request's, made whole: in the upgrade's log context, which it carries, its fields in the line's own order", async () => {
  const server = await startServer();
  try {
    await writtenLogs(async (lines) => {
      const client = await denoClient(server.wsUrl(WS_PATH));
      client.socket.send(eventFrame("c1"));
      const answer = await client.inbox.next();
      await client.close();
      assert.equal(answer.type, "ack");
      const [upgrade, frame] = jsonLines(lines, "edgestream.http");
      assert.match(frame.message, /^WS \/v1\/streams\/orders\/ws frame 1 202 [\d.]+ ms$/);
      assert.equal(frame.requestId, upgrade.requestId);
      // Through LogTape's own call the context's `requestId` would come first, before `transport`.
      assert.deepEqual(Object.keys(frame), [
        "@timestamp",
        "level",
        "logger",
        "message",
        "transport",
        "path",
        "frame",
        "status",
        "durationMs",
        "requestId",
        "stream",
        "accepted",
        "duplicates",
        "late",
        "filtered",
        "rejected",
      ]);
    });
  } finally {
    await server.close();
  }
});

Deno.test("WebSocket ingest logs the frames a closing connection answers connection_closing, each a line of status 503 at warning", async () => {
  const { store, control } = controlledStore();
  const server = await startServer({ store });
  control.gate = Promise.withResolvers<void>();
  try {
    await collectingLogs(async (records) => {
      const client = await denoClient(server.wsUrl(WS_PATH));
      for (const id of ["s1", "s2", "s3"]) client.socket.send(eventFrame(id));
      await eventually(() => server.socketStats.framesQueued === 3);
      const closing = server.connections.close("Server is shutting down");
      control.gate!.resolve();
      control.gate = null;
      const { answers } = await within(answersUntilClosed(client), 5_000);
      await closing;
      assert.deepEqual(answers.map((answer) => [answer.seq, answer.error?.code]), [
        [1, undefined],
        [2, "connection_closing"],
        [3, "connection_closing"],
      ]);
      const lines = records.filter((record) => messageOf(record).startsWith("WS "));
      assert.deepEqual(
        lines.map((record) => [
          record.level,
          record.properties.frame,
          record.properties.status,
          (record.properties.error as { code?: string } | undefined)?.code,
        ]),
        [
          ["info", 1, 202, undefined],
          ["warning", 2, 503, "connection_closing"],
          ["warning", 3, 503, "connection_closing"],
        ],
      );
      assert.equal(
        (lines[1].properties.error as { message: string }).message,
        "Frame 2 was not applied: the connection closes with 1001; send it again",
      );
    });
  } finally {
    control.gate?.resolve();
    await server.close();
  }
});

Deno.test("WebSocket ingest logs a frame that failed on a bug at error, with the error itself and its stack, as HTTP logs a 500", async () => {
  const inner = new MemoryStore({ now: () => NOW });
  const store = new Proxy(inner, {
    get(target, property) {
      if (property === "applyBatch") return () => Promise.reject(new TypeError("apply bug"));
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
  const server = await startServer({ store });
  try {
    await collectingLogs(async (records) => {
      const client = await denoClient(server.wsUrl(WS_PATH));
      client.socket.send(eventFrame("b1"));
      const answer = await client.inbox.next();
      await client.close();
      assert.deepEqual([answer.type, answer.error.code], ["error", "internal_error"]);
      const lines = records.filter((record) => messageOf(record).startsWith("WS "));
      assert.deepEqual(lines.map((record) => [record.level, record.properties.status]), [
        ["error", 500],
      ]);
      assert.deepEqual(lines[0].properties.error, {
        code: "internal_error",
        message: "Internal server error",
      });
      const cause = lines[0].properties.cause as Error;
      assert.ok(cause instanceof TypeError && cause.message === "apply bug" && cause.stack);
    });
  } finally {
    await server.close();
  }
});
