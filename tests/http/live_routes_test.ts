import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { Redis } from "@upstash/redis";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing, sha256, toHex } from "../../src/http/auth.ts";
import { ResponseCutError } from "../../src/http/listener.ts";
import { subscriptionSettings } from "../../src/http/live_routes.ts";
import { RefusedSockets } from "../../src/http/_drop_socket.ts";
import { MemoryKeyStore } from "../../src/store/memory/key_store.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { compareLogIds, parseLogId } from "../../src/store/types.ts";
import { filterPatternBudgetMessage, LiveHub } from "../../src/fanout/live.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { at, KEYS, NOW, TEST_CONFIG } from "../_fixtures.ts";
import {
  closeCodeIn,
  denoClient,
  eventually,
  nodeClient,
  rawSocketSending,
  rawUpgrade,
  rawUpgradeAnswer,
  readAllFor,
  readChunksFor,
  silentUpgrade,
  SseReader,
  startServer,
  type TestServer,
  within,
} from "../_live.ts";
import { redisTest, restClient } from "../_redis.ts";

const SUBSCRIBE = "/v1/streams/orders/subscribe";

async function post(server: TestServer, events: object[], key?: string) {
  const res = await fetch(`${server.base}/v1/streams/orders/events`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      ...(key ? { Authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify(events),
  });
  assert.equal(res.status, 202, await res.clone().text());
  await res.body?.cancel();
}

async function sweep(server: TestServer) {
  const res = await fetch(`${server.base}/v1/admin/sweep`, { method: "POST" });
  assert.equal(res.status, 200);
  return await res.json();
}

function openSse(server: TestServer, query: string, headers: Record<string, string> = {}) {
  return fetch(`${server.base}${SUBSCRIBE}${query}`, {
    headers: { Accept: "text/event-stream", ...headers },
  });
}

Deno.test("Subscribe over WebSocket: throttled window.updated ending at the final value, window.closed after a sweep", async () => {
  const server = await startServer({ hub: { updateIntervalMs: 100 } });
  const client = await denoClient(
    server.wsUrl(`${SUBSCRIBE}?types=window.updated,window.closed&counter=count_1m`),
  );
  try {
    assert.deepEqual(await client.inbox.next(), {
      type: "subscribed",
      stream: "orders",
      types: ["window.updated", "window.closed"],
      counter: "count_1m",
      id: "0-0",
    });
    for (let i = 0; i < 40; i++) {
      await post(server, [{ id: `e${i}`, ts: at(5), country: "DE" }]);
    }
    const updates = await client.inbox.until((message) => message.data.value === 40);
    assert.ok(updates.length < 20, `${updates.length} updates for 40 batches`);
    assert.ok(updates.every((message) => message.type === "window.updated"));
    assert.deepEqual(updates.at(-1).data.group, { country: "DE" });

    await post(server, [{ id: "late-mark", ts: at(100), country: "FR" }]);
    const closedReport = await sweep(server);
    assert.equal(closedReport.closed.length > 0, true);
    const seen = await client.inbox.until((message) => message.type === "window.closed");
    assert.deepEqual(seen.at(-1).data, {
      stream: "orders",
      counter: "count_1m",
      aggregate: "count",
      group: { country: "DE" },
      start: at(0),
      end: at(60),
      value: 40,
    });
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("Subscribe over SSE with plain fetch: results as events, event.processed only when asked", async () => {
  const server = await startServer();
  const all = await openSse(server, "");
  const processed = await openSse(server, "?types=event.processed");
  assert.equal(all.status, 200);
  assert.match(all.headers.get("Content-Type") ?? "", /^text\/event-stream/);
  const allReader = new SseReader(all);
  const processedReader = new SseReader(processed);
  try {
    const subscribed = await allReader.next();
    assert.equal(subscribed.event, "subscribed");
    // Without types: window.updated, window.closed and alert.fired.
    assert.deepEqual(subscribed.data.types, ["window.updated", "window.closed", "alert.fired"]);
    assert.deepEqual((await processedReader.next()).data.types, ["event.processed"]);
    await post(server, [{ id: "a", ts: at(5), country: "DE", amount: 2 }]);
    const event = await processedReader.next();
    assert.equal(event.event, "event.processed");
    assert.deepEqual(event.data.data.event, {
      id: "a",
      ts: at(5),
      country: "DE",
      amount: 2,
      doubled: 4,
    });

    await post(server, [{ id: "b", ts: at(100), country: "DE" }]);
    await sweep(server);
    const types = new Set<string>();
    while (!types.has("window.closed")) {
      const next = await allReader.next();
      assert.equal(next.event, next.data.type);
      types.add(next.event);
    }
    assert.deepEqual([...types].sort(), ["window.closed", "window.updated"]);
    // The default subscription never asked for events; the other one saw only events.
    const second = await processedReader.next();
    assert.deepEqual([second.event, second.data.data.event.id], ["event.processed", "b"]);
  } finally {
    await allReader.cancel();
    await processedReader.cancel();
    await server.close();
  }
});

Deno.test("Subscribe applies the counter and CEL filter parameters", async () => {
  const server = await startServer();
  const client = await denoClient(
    server.wsUrl(
      `${SUBSCRIBE}?types=window.updated&counter=sum_1m&filter=${
        encodeURIComponent("payload.data.value * 2 > 5")
      }`,
    ),
  );
  try {
    await client.inbox.next();
    await post(server, [
      { id: "a", ts: at(5), country: "DE", amount: 2 },
      { id: "b", ts: at(6), country: "FR", amount: 3 },
    ]);
    const message = await client.inbox.next();
    assert.deepEqual([message.data.counter, message.data.group, message.data.value], [
      "sum_1m",
      { country: "FR" },
      3,
    ]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(client.inbox.unread, 0);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("Subscribe takes a types list naming no type (types=, types=,) as the default types", async () => {
  const server = await startServer();
  try {
    for (const query of ["?types=", "?types=,", "?types=%20,%20,"]) {
      const client = await denoClient(server.wsUrl(`${SUBSCRIBE}${query}`));
      try {
        const subscribed = await client.inbox.next();
        assert.deepEqual(subscribed.types, [
          "window.updated",
          "window.closed",
          "alert.fired",
        ], query);
      } finally {
        await client.close();
      }
    }
  } finally {
    await server.close();
  }
});

Deno.test("Subscribe refuses bad parameters with a JSON error before upgrading", async () => {
  const server = await startServer();
  const L = `[${Array.from({ length: 300 }, (_, i) => i + 1).join(",")}]`;
  try {
    const cases: Array<[string, number, string, RegExp]> = [
      [
        "?filter=payload.data.value%20%3E",
        400,
        "invalid_query",
        /Query parameter 'filter' is invalid/,
      ],
      ["?filter=1%20%2B%201", 400, "invalid_query", /must return a bool, returns int/],
      [
        `?filter=${encodeURIComponent(`true || '${"y".repeat(4083)}' == ''`)}`,
        400,
        "invalid_query",
        /^Query parameter 'filter' is invalid: Expression is 4099 UTF-16 code units; the limit is 4096$/,
      ],
      [
        // The probe's filter: 3,352 characters, 300³ steps (seconds, holding the process).
        `?filter=${
          encodeURIComponent(
            `${L}.all(a, ${L}.all(b, ${L}.all(c, (string(a) + string(b) + string(c)).size() > 0)))`,
          )
        }`,
        400,
        "invalid_query",
        /its macros over literal lists may take more than 100000 steps, the budget of one evaluation$/,
      ],
      [
        // 15 patterns of 1,003 instructions, 40,003 with their classes' ranges: 0.35–1.2 s to
        // compile, per request.
        `?filter=${
          encodeURIComponent(
            Array.from(
              { length: 15 },
              (_, i) =>
                `payload.data.key.matches("^[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]{1000}|${i}")`,
            ).join("||"),
          )
        }`,
        400,
        "invalid_query",
        /its matches\(\) patterns would compile to 40005 instructions together, past the 16000 an expression may have \(a character class counts 1 more for each 32 ranges of characters it holds: \[\\p\{L\}\] is about 24\)$/,
      ],
      ["?types=window.updated,window.opened", 400, "invalid_query", /unknown type 'window.opened'/],
      ["?counter=nope", 400, "invalid_query", /has no counter 'nope'; it has: count_1m/],
    ];
    for (const [query, status, code, message] of cases) {
      const upgrade = await nodeClient(server.wsUrl(`${SUBSCRIBE}${query}`));
      assert.equal(upgrade.status, status, query);
      await upgrade.inbox.closed;
      const sse = await openSse(server, query);
      assert.equal(sse.status, status, query);
      const body = await sse.json();
      assert.equal(body.error.code, code, query);
      assert.match(body.error.message, message, query);
    }
    const missingStream = await fetch(`${server.base}/v1/streams/nope/subscribe`, {
      headers: { Accept: "text/event-stream" },
    });
    assert.equal(missingStream.status, 404);
    await missingStream.body?.cancel();
    const plain = await fetch(`${server.base}${SUBSCRIBE}`);
    assert.equal(plain.status, 406);
    assert.equal((await plain.json()).error.code, "not_acceptable");
    // Media types compare case-insensitively; q=0 is "not acceptable" (RFC 9110 §12.4.2).
    const upper = await openSse(server, "", { Accept: "TEXT/EVENT-STREAM" });
    assert.equal(upper.status, 200);
    assert.match(upper.headers.get("Content-Type") ?? "", /^text\/event-stream/);
    await upper.body?.cancel();
    for (const accept of ["text/event-stream;q=0", "*/*", "text/event-streams"]) {
      const refused = await openSse(server, "", { Accept: accept });
      assert.equal(refused.status, 406, accept);
      assert.equal((await refused.json()).error.code, "not_acceptable", accept);
    }
  } finally {
    await server.close();
  }
});

Deno.test("Subscribe needs the read scope: 401/403 for SSE, close 1008 for WebSocket; token works for both", async () => {
  const server = await startServer({ auth: true });
  try {
    const missing = await openSse(server, "");
    assert.equal(missing.status, 401);
    const hint = (await missing.json()).error.message;
    assert.match(hint, /subprotocol 'bearer\.<key>'/);
    assert.doesNotMatch(hint, /token=/, "the deprecated ?token= is not suggested");
    const wrongScope = await openSse(server, `?token=${KEYS.ingest}`);
    assert.equal(wrongScope.status, 403);
    await wrongScope.body?.cancel();
    const refused = await denoClient(server.wsUrl(`${SUBSCRIBE}?token=${KEYS.ingest}`));
    const closed = await refused.inbox.closed;
    assert.deepEqual(closed, { code: 1008, reason: "API key lacks the 'read' scope" });

    const sse = new SseReader(await openSse(server, `?token=${KEYS.read}`));
    assert.equal((await sse.next()).event, "subscribed");
    await sse.cancel();
    const socket = await denoClient(server.wsUrl(SUBSCRIBE), [`bearer.${KEYS.read}`]);
    assert.equal((await socket.inbox.next()).type, "subscribed");
    await socket.close();
  } finally {
    await server.close();
  }
});

Deno.test("A subscriber that stops reading is dropped with a reason and does not slow ingest", async () => {
  const server = await startServer({
    liveRoutes: { maxBufferedBytes: 64 * 1024 },
    hub: { stalledMs: 100 },
  });
  const slow = await nodeClient(server.wsUrl(`${SUBSCRIBE}?types=event.processed`));
  try {
    assert.equal((await slow.inbox.next()).type, "subscribed");
    slow.socket.pause();
    const padding = "p".repeat(4_000);
    const started = performance.now();
    for (let batch = 0; batch < 40; batch++) {
      await post(
        server,
        Array.from(
          { length: 100 },
          (_, i) => ({ id: `s${batch}-${i}`, ts: at(5), country: padding }),
        ),
      );
      // Give the hub time to hand messages to the socket between batches.
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const ingestMs = performance.now() - started;
    await eventually(() => server.live.stats.subscribers === 0);
    slow.socket.resume();
    const closed = await slow.inbox.closed;
    assert.equal(closed.code, 1008);
    assert.match(
      closed.reason,
      /^Subscriber too slow: it read nothing of what was waiting to be sent for \d+ ms$/,
    );
    assert.ok(ingestMs < 10_000, `${ingestMs} ms`);
  } finally {
    slow.socket.terminate();
    await slow.inbox.closed;
    await server.close();
  }
});

/** An SSE subscriber that stops reading: the server gives up on it at the limit. */
async function slowSseScenario(server: Awaited<ReturnType<typeof startServer>>) {
  const sse = new SseReader(await openSse(server, "?types=event.processed"));
  try {
    assert.equal((await sse.next()).event, "subscribed");
    // Nothing reads the response now; the batches fill the socket until the server gives up.
    const padding = "p".repeat(4_000);
    for (let batch = 0; server.live.stats.subscribers > 0; batch++) {
      assert.ok(batch < 200, "the subscriber was never dropped");
      await post(
        server,
        Array.from(
          { length: 100 },
          (_, i) => ({ id: `s${batch}-${i}`, ts: at(5), country: padding }),
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const rest = await sse.rest();
    assert.ok(rest.length > 1, `${rest.length} events`);
    assert.ok(rest.slice(0, -1).every((event) => event.event === "event.processed"));
    const last = rest.at(-1)!;
    assert.equal(last.event, "closed");
    assert.equal(last.data.type, "closed");
    assert.match(
      last.data.reason,
      /^Subscriber too slow: it read nothing of what was waiting to be sent for \d+ ms$/,
    );
  } finally {
    await sse.cancel().catch(() => {});
  }
}

Deno.test("A subscriber's defaults: dropped more than 1 MiB behind (the README's figure), caught up 500 log entries a read, idle WebSockets closed at 30 s", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  // What the routes resolve from the options the entry points give them (only the bounds).
  const settings = subscriptionSettings({ subscriptions: { perKey: 100, perProcess: 10_000 } });
  assert.match(readme, /A subscriber is never sent more than 1 MiB ahead of what it read/);
  assert.match(readme, /A subscriber that\s+read nothing for 10 s while 1 MiB waited is dropped/);
  assert.equal(settings.maxBufferedBytes, 1024 * 1024);
  const hub = new LiveHub(new Map(), new MemoryStore()).settings;
  assert.equal(hub.stalledMs, 10_000);
  // What followed for a subscriber behind is read "a page of 500 entries a store read".
  assert.match(readme, /a page of 500 entries a store read/);
  assert.equal(hub.readLimit, 500);
  // The README gives 30 s for WebSocket ingest; a subscriber's socket has the same default.
  assert.equal(settings.idleTimeoutSeconds, 30);
});

Deno.test("A subscriber WebSocket that answers no ping is closed 1001 after idleTimeoutSeconds; one that answers stays and gets results", async () => {
  const server = await startServer({ liveRoutes: { idleTimeoutSeconds: 0.2 } });
  const path = `${SUBSCRIBE}?types=event.processed`;
  const silent = await nodeClient(server.wsUrl(path), { autoPong: false });
  const alive = await nodeClient(server.wsUrl(path));
  try {
    assert.equal((await silent.inbox.next()).type, "subscribed");
    assert.equal((await alive.inbox.next()).type, "subscribed");
    const closed = await within(silent.inbox.closed, 10_000);
    assert.equal(closed.code, 1001);
    await eventually(() => server.live.stats.subscribers === 1);
    assert.equal(alive.socket.readyState, 1);
    await post(server, [{ id: "after-idle", ts: at(5), country: "DE" }]);
    assert.equal((await alive.inbox.next()).type, "event.processed");
  } finally {
    await alive.close();
    await server.close();
  }
});

Deno.test("README keep-alive: an SSE subscription gets a `: keep-alive` comment every heartbeatMs (15 s by default), a WebSocket one pings instead", async () => {
  // The README's prose, its line breaks as spaces.
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  for (
    const claim of [
      "Keep-alive: every 15 s, whether results were sent meanwhile or not, an SSE subscription is sent the comment line `: keep-alive` (skipped while what was sent before is still unread)",
      "A WebSocket subscription gets no such message: the server pings it instead",
      "a ping frame after 15 s in which nothing came from the client, and a close with 1001 when no pong came 15 s later",
    ]
  ) {
    assert.ok(readme.includes(claim), claim);
  }
  // The defaults the routes resolve from what the entry points give them (only the bounds): 15 s
  // between comments; a ping at half of the socket's 30 s idle timeout.
  const settings = subscriptionSettings({ subscriptions: { perKey: 100, perProcess: 10_000 } });
  assert.equal(settings.heartbeatMs, 15_000);
  assert.equal(settings.idleTimeoutSeconds / 2, 15);

  const server = await startServer({ liveRoutes: { heartbeatMs: 100, idleTimeoutSeconds: 0.4 } });
  const opened = Date.now();
  const sse = await openSse(server, "?types=event.processed");
  const socket = await nodeClient(server.wsUrl(`${SUBSCRIBE}?types=event.processed`));
  let pings = 0;
  socket.socket.on("ping", () => pings++);
  const reader = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
  try {
    assert.equal(sse.status, 200);
    assert.equal((await socket.inbox.next()).type, "subscribed");
    // The raw stream, as a proxy sees it: the subscribed event, then comments while nothing happens,
    // and a result among them.
    let text = "";
    const started = Date.now();
    let posted = false;
    while (Date.now() - started < 1_000) {
      const { value, done } = await within(reader.read(), 5_000);
      assert.ok(!done, text);
      text += value;
      if (!posted && Date.now() - started > 300) {
        posted = true;
        await post(server, [{ id: "between-comments", ts: at(5), country: "DE" }]);
      }
    }
    const blocks = text.split("\n\n").filter((block) => block !== "");
    assert.match(blocks[0], /^event: subscribed\n/);
    const comments = blocks.filter((block) => block === ": keep-alive");
    // One every 100 ms for a second: no more than the time allows (a loaded machine delays timers,
    // never adds them), and not much fewer.
    const most = Math.floor((Date.now() - opened) / 100);
    assert.ok(comments.length >= 4 && comments.length <= most, `${most}: ${text}`);
    const result = blocks.findIndex((block) => block.startsWith("event: event.processed\n"));
    assert.ok(result > 0, text);
    // Comments go on after a result: the interval is not reset by traffic.
    assert.ok(blocks.slice(result + 1).includes(": keep-alive"), text);
    assert.deepEqual(
      blocks.filter((block) => !block.startsWith("event: ") && block !== ": keep-alive"),
      [],
    );
    // The WebSocket subscriber got pings (answered by its library) and no keep-alive message.
    assert.ok(pings >= 1, `pings: ${pings}`);
    assert.equal(socket.socket.readyState, 1);
    assert.equal((await socket.inbox.next()).type, "event.processed");
  } finally {
    await reader.cancel().catch(() => {});
    await socket.close();
    await server.close();
  }
});

Deno.test("An SSE subscriber that stops reading is dropped with a final closed event giving the reason", async () => {
  const server = await startServer({
    liveRoutes: { maxBufferedBytes: 64 * 1024 },
    // Also how long after the drop the client may take to start reading before its response is
    // cut: at 100 ms a loaded machine (a post of 400 KB between the drop and the read) cut it.
    hub: { stalledMs: 1_000 },
  });
  try {
    await slowSseScenario(server);
  } finally {
    await server.close();
  }
});

Deno.test("An SSE subscriber behind costs no wake-ups while it reads nothing: the hub waits for its reads, then sends what followed, in order, none missing", async () => {
  const server = await startServer({
    liveRoutes: { maxBufferedBytes: 64 * 1024 },
    hub: { stalledMs: 60_000 },
  });
  // The hub's asks of the SSE sink whether it takes more, and the reads of the result log.
  let asks = 0;
  const subscribe = server.live.subscribe.bind(server.live);
  server.live.subscribe = (subscription, sink, options) =>
    subscribe(subscription, {
      ...sink,
      ready() {
        asks++;
        return sink.ready!();
      },
    }, options);
  let reads = 0;
  const store = server.store as MemoryStore;
  const readLog = store.readLog.bind(store);
  store.readLog = (...args) => {
    reads++;
    return readLog(...args);
  };
  const sse = new SseReader(await openSse(server, "?types=event.processed"));
  try {
    assert.equal((await sse.next()).event, "subscribed");
    // Nothing reads the response: batches fill the connection until the subscriber is behind
    // for good. Then ten polls of the tail (20 ms each) pass with its sink not asked once whether
    // it is ready (asked every 5 ms, it would be about forty times): the hub waits for reads.
    const padding = "p".repeat(4_000);
    let posted = 0;
    for (let batch = 0;; batch++) {
      assert.ok(batch < 100, "the sink was asked whether it is ready while nothing read");
      await post(
        server,
        Array.from(
          { length: 100 },
          (_, i) => ({ id: `s${batch}-${i}`, ts: at(5), country: padding }),
        ),
      );
      posted += 100;
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (server.live.stats.behind === 0) continue;
      const asked = asks;
      const readsBefore = reads;
      await eventually(() => reads >= readsBefore + 10);
      if (asks === asked && server.live.stats.behind === 1) break;
    }
    // It reads again: what followed comes from the log, every event once, in log order.
    const ids: string[] = [];
    while (ids.length < posted) {
      const event = await sse.next();
      assert.equal(event.event, "event.processed");
      ids.push(event.id!);
    }
    await eventually(() => server.live.stats.behind === 0);
    for (let i = 1; i < ids.length; i++) {
      assert.ok(compareLogIds(parseLogId(ids[i - 1]), parseLogId(ids[i])) < 0, ids[i]);
    }
    assert.equal(server.live.stats.subscribers, 1);
  } finally {
    await sse.cancel().catch(() => {});
    await server.close();
  }
});

redisTest(
  "An SSE subscriber that stops reading is dropped with a final closed event giving the reason (Redis store)",
  async (fixture) => {
    const redis = restClient(fixture);
    const server = await startServer({
      store: new RedisStore(redis),
      hub: { shared: true, stalledMs: 1_000 }, // as above: the read after the drop may wait on a loaded machine
      liveRoutes: { maxBufferedBytes: 64 * 1024 },
    });
    try {
      await slowSseScenario(server);
    } finally {
      await server.close();
    }
  },
);

Deno.test("A WebSocket subscriber's short messages (a heartbeat) are ignored; a longer one closes it 1009 with the README's reason, and its place is free", async () => {
  const server = await startServer();
  const path = `${SUBSCRIBE}?types=event.processed`;
  const socket = await denoClient(server.wsUrl(path));
  try {
    assert.equal((await socket.inbox.next()).type, "subscribed");
    socket.socket.send("ping");
    socket.socket.send("x".repeat(1_024));
    await post(server, [{ id: "after-ping", ts: at(5), country: "DE" }]);
    assert.equal((await socket.inbox.next()).type, "event.processed");
    // Before, every message was read and dropped, however large, and the subscription went on.
    socket.socket.send(new Uint8Array(1_025));
    assert.deepEqual(await within(socket.inbox.closed, 10_000), {
      code: 1009,
      reason: "A subscription takes no messages; one of 1025 bytes is past the 1024 let be",
    });
    await eventually(() => server.live.stats.subscribers === 0);
    const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
    assert.match(
      readme.replace(/\s+/g, " "),
      /a message of up to 1,024 bytes \(a text heartbeat some libraries send\) is ignored, a longer one closes the subscription with 1009 and the reason `A subscription takes no messages; one of <bytes> bytes is past the 1024 let be`/,
    );
  } finally {
    await socket.close();
    await server.close();
  }
});

Deno.test("A WebSocket subscriber's text message is held to 1,024 bytes of UTF-8, not 1,024 characters", async () => {
  const server = await startServer();
  const socket = await denoClient(server.wsUrl(`${SUBSCRIBE}?types=event.processed`));
  try {
    assert.equal((await socket.inbox.next()).type, "subscribed");
    // 512 UTF-16 units, 1,024 bytes: let be.
    socket.socket.send("\u{1F600}".repeat(256));
    await post(server, [{ id: "after-emoji", ts: at(5), country: "DE" }]);
    assert.equal((await socket.inbox.next()).type, "event.processed");
    // 342 characters, 1,026 bytes: past the bound.
    socket.socket.send("\u20AC".repeat(342));
    assert.deepEqual(await within(socket.inbox.closed, 10_000), {
      code: 1009,
      reason: "A subscription takes no messages; one of 1026 bytes is past the 1024 let be",
    });
  } finally {
    await socket.close();
    await server.close();
  }
});

Deno.test("SSE and WebSocket subscribers learn why the server ended their subscription", async () => {
  const server = await startServer();
  const sse = new SseReader(await openSse(server, ""));
  const socket = await denoClient(server.wsUrl(SUBSCRIBE));
  try {
    assert.equal((await sse.next()).event, "subscribed");
    assert.equal((await socket.inbox.next()).type, "subscribed");
    await server.live.close();
    assert.deepEqual(await sse.rest(), [
      { event: "closed", data: { type: "closed", reason: "Server is shutting down" } },
    ]);
    assert.deepEqual(await socket.inbox.closed, { code: 1001, reason: "Server is shutting down" });
  } finally {
    await sse.cancel().catch(() => {});
    await socket.close();
    await server.close();
  }
});

const CLOSED_COUNTS = "?types=window.closed&counter=count_1m";

/** Ids of the `window.closed` results of `count_1m` after `afterId`, from the store's log. */
async function loggedClosedIds(server: TestServer, afterId: string): Promise<string[]> {
  const entries = await server.store.readLog("orders", afterId, 1_000);
  return entries.filter((entry) =>
    entry.record.type === "window.closed" && entry.record.counter === "count_1m"
  ).map((entry) => entry.id);
}

/**
 * A client reads two results, disconnects, more results are produced, and it
 * reconnects with `Last-Event-ID`: it gets exactly what it missed, in order,
 * as a client connected all along saw it, then live results.
 */
async function resumeScenario(server: TestServer): Promise<void> {
  const reference = new SseReader(await openSse(server, CLOSED_COUNTS));
  const first = new SseReader(await openSse(server, CLOSED_COUNTS));
  let resumed: SseReader | undefined;
  try {
    // The log never had an entry: it starts after 0-0.
    assert.deepEqual(await reference.next(), {
      event: "subscribed",
      data: { type: "subscribed", stream: "orders", types: ["window.closed"], counter: "count_1m" },
      id: "0-0",
    });
    assert.equal((await first.next()).event, "subscribed");
    await post(server, [
      { id: "a", ts: at(5), country: "DE" },
      { id: "b", ts: at(6), country: "FR" },
      { id: "c", ts: at(7), country: "IT" },
      { id: "d", ts: at(100), country: "DE" },
    ]);
    await sweep(server); // closes minute 0: DE, FR, IT
    const read = [await first.next(), await first.next()];
    assert.deepEqual(read.map((event) => event.event), ["window.closed", "window.closed"]);
    assert.ok(read.every((event) => event.id !== undefined), JSON.stringify(read));
    await first.cancel();
    await eventually(() => server.live.stats.subscribers === 1);

    await post(server, [
      { id: "e", ts: at(130), country: "DE" },
      { id: "f", ts: at(131), country: "FR" },
      { id: "g", ts: at(250), country: "FR" },
    ]);
    await sweep(server); // closes minute 1 (DE) and minute 2 (DE, FR)
    const lastEventId = read[1].id!;
    const missed = await loggedClosedIds(server, lastEventId);
    assert.equal(missed.length, 4);
    const all = [];
    for (let i = 0; i < 6; i++) all.push(await reference.next());
    assert.deepEqual(all.slice(0, 2), read);

    resumed = new SseReader(await openSse(server, CLOSED_COUNTS, { "Last-Event-ID": lastEventId }));
    const hello = await resumed.next();
    assert.deepEqual(hello, {
      event: "subscribed",
      id: lastEventId,
      data: {
        type: "subscribed",
        stream: "orders",
        types: ["window.closed"],
        counter: "count_1m",
        resumed: true,
      },
    });
    const replayed = [];
    for (let i = 0; i < missed.length; i++) replayed.push(await resumed.next());
    assert.deepEqual(replayed.map((event) => event.id), missed);
    assert.deepEqual(replayed, all.slice(2));

    // Live results continue after the replay, once each.
    await post(server, [{ id: "h", ts: at(400), country: "IT" }]);
    await sweep(server); // closes minute 4 (FR)
    const live = await resumed.next();
    assert.deepEqual(live, await reference.next());
    assert.deepEqual([live.event, live.data.data.group, live.data.data.start], [
      "window.closed",
      { country: "FR" },
      at(240),
    ]);
    await assert.rejects(() => resumed!.next(300), /No event within/);
  } finally {
    await reference.cancel();
    await first.cancel().catch(() => {});
    await resumed?.cancel();
  }
}

Deno.test("SSE resumes after Last-Event-ID with exactly the missed results, then live ones (memory store)", async () => {
  const server = await startServer();
  try {
    await resumeScenario(server);
  } finally {
    await server.close();
  }
});

redisTest(
  "SSE resumes after Last-Event-ID with exactly the missed results, then live ones (Redis store)",
  async (fixture) => {
    const redis = restClient(fixture);
    const server = await startServer({ store: new RedisStore(redis), hub: { shared: true } });
    try {
      await resumeScenario(server);
    } finally {
      await server.close();
    }
  },
);

/**
 * The same over a WebSocket: each message carries its log id as `id`, and a
 * client that subscribes again with `?after=<id>` gets exactly what it missed,
 * in order, as a client connected all along saw it, then live results.
 */
async function socketResumeScenario(server: TestServer): Promise<void> {
  const reference = await denoClient(server.wsUrl(`${SUBSCRIBE}${CLOSED_COUNTS}`));
  const first = await denoClient(server.wsUrl(`${SUBSCRIBE}${CLOSED_COUNTS}`));
  let resumed: Awaited<ReturnType<typeof denoClient>> | undefined;
  try {
    assert.deepEqual(await reference.inbox.next(), {
      type: "subscribed",
      stream: "orders",
      types: ["window.closed"],
      counter: "count_1m",
      id: "0-0",
    });
    assert.equal((await first.inbox.next()).type, "subscribed");
    await post(server, [
      { id: "a", ts: at(5), country: "DE" },
      { id: "b", ts: at(6), country: "FR" },
      { id: "c", ts: at(7), country: "IT" },
      { id: "d", ts: at(100), country: "DE" },
    ]);
    await sweep(server); // closes minute 0: DE, FR, IT
    const read = [await first.inbox.next(), await first.inbox.next()];
    assert.deepEqual(read.map((message) => message.type), ["window.closed", "window.closed"]);
    const closedIds = await loggedClosedIds(server, "0-0");
    assert.deepEqual(read.map((message) => message.id), closedIds.slice(0, 2));
    await first.close();
    await eventually(() => server.live.stats.subscribers === 1);

    await post(server, [
      { id: "e", ts: at(130), country: "DE" },
      { id: "f", ts: at(131), country: "FR" },
      { id: "g", ts: at(250), country: "FR" },
    ]);
    await sweep(server); // closes minute 1 (DE) and minute 2 (DE, FR)
    const after = read[1].id;
    const missed = await loggedClosedIds(server, after);
    assert.equal(missed.length, 4);
    const all = [];
    for (let i = 0; i < 6; i++) all.push(await reference.inbox.next());
    assert.deepEqual(all.slice(0, 2), read);

    resumed = await denoClient(
      server.wsUrl(`${SUBSCRIBE}${CLOSED_COUNTS}&after=${encodeURIComponent(after)}`),
    );
    assert.deepEqual(await resumed.inbox.next(), {
      type: "subscribed",
      stream: "orders",
      types: ["window.closed"],
      counter: "count_1m",
      resumed: true,
      id: after,
    });
    const replayed = [];
    for (let i = 0; i < missed.length; i++) replayed.push(await resumed.inbox.next());
    assert.deepEqual(replayed.map((message) => message.id), missed);
    assert.deepEqual(replayed, all.slice(2));

    // Live results continue after the replay, once each.
    await post(server, [{ id: "h", ts: at(400), country: "IT" }]);
    await sweep(server); // closes minute 4 (FR)
    const live = await resumed.inbox.next();
    assert.deepEqual(live, await reference.inbox.next());
    assert.deepEqual([live.type, live.data.group, live.data.start], [
      "window.closed",
      { country: "FR" },
      at(240),
    ]);
    await assert.rejects(() => resumed!.inbox.next(300), /No message within/);
  } finally {
    await reference.close();
    await first.close();
    await resumed?.close();
  }
}

Deno.test("A WebSocket subscription resumes after ?after=<id> with exactly the missed results, then live ones (memory store)", async () => {
  const server = await startServer();
  try {
    await socketResumeScenario(server);
  } finally {
    await server.close();
  }
});

redisTest(
  "A WebSocket subscription resumes after ?after=<id> with exactly the missed results, then live ones (Redis store)",
  async (fixture) => {
    const redis = restClient(fixture);
    const server = await startServer({ store: new RedisStore(redis), hub: { shared: true } });
    try {
      await socketResumeScenario(server);
    } finally {
      await server.close();
    }
  },
);

Deno.test("SSE resumes after ?after=<id> when no Last-Event-ID is sent; Last-Event-ID wins over it", async () => {
  const server = await startServer();
  const readers: SseReader[] = [];
  try {
    await post(server, [
      { id: "a", ts: at(5), country: "DE" },
      { id: "b", ts: at(6), country: "FR" },
      { id: "c", ts: at(100), country: "DE" },
    ]);
    await sweep(server); // closes minute 0: DE, FR
    const [first, second] = await loggedClosedIds(server, "0-0");
    const byQuery = new SseReader(
      await openSse(server, `${CLOSED_COUNTS}&after=${encodeURIComponent(first)}`),
    );
    readers.push(byQuery);
    const hello = await byQuery.next();
    assert.deepEqual([hello.event, hello.id, hello.data.resumed], ["subscribed", first, true]);
    const next = await byQuery.next();
    assert.deepEqual([next.id, next.data.data.group], [second, { country: "FR" }]);

    // An EventSource keeps its URL and sends the newer Last-Event-ID on reconnect.
    const both = new SseReader(
      await openSse(server, `${CLOSED_COUNTS}&after=${encodeURIComponent(first)}`, {
        "Last-Event-ID": second,
      }),
    );
    readers.push(both);
    const again = await both.next();
    assert.deepEqual([again.event, again.id, again.data.resumed], ["subscribed", second, true]);
    await assert.rejects(() => both.next(300), /No event within/);
  } finally {
    for (const sse of readers) await sse.cancel();
    await server.close();
  }
});

/**
 * A subscriber that drops before its first result, on a log that never had an entry, resumes
 * after the id its `subscribed` carried (`0-0`) and gets every result logged since, once.
 */
async function emptyLogResumeScenario(server: TestServer): Promise<void> {
  const sse = new SseReader(await openSse(server, CLOSED_COUNTS));
  const hello = await sse.next();
  await sse.cancel();
  const socket = await denoClient(server.wsUrl(`${SUBSCRIBE}${CLOSED_COUNTS}`));
  const socketHello = await socket.inbox.next();
  await socket.close();
  assert.deepEqual([hello.event, hello.id, socketHello.type, socketHello.id], [
    "subscribed",
    "0-0",
    "subscribed",
    "0-0",
  ]);
  await post(server, [
    { id: "a", ts: at(5), country: "DE" },
    { id: "b", ts: at(100), country: "FR" },
  ]);
  await sweep(server); // closes minute 0 (DE)
  const logged = await loggedClosedIds(server, "0-0");
  assert.equal(logged.length, 1);
  const resumed = new SseReader(
    await openSse(server, CLOSED_COUNTS, { "Last-Event-ID": hello.id! }),
  );
  const resumedSocket = await denoClient(
    server.wsUrl(`${SUBSCRIBE}${CLOSED_COUNTS}&after=${socketHello.id}`),
  );
  try {
    const [sseStart, sseClosed] = [await resumed.next(), await resumed.next()];
    assert.deepEqual([sseStart.data.resumed, sseStart.id], [true, "0-0"]);
    assert.deepEqual([sseClosed.event, sseClosed.id, sseClosed.data.data.start], [
      "window.closed",
      logged[0],
      at(0),
    ]);
    const [wsStart, wsClosed] = [
      await resumedSocket.inbox.next(),
      await resumedSocket.inbox.next(),
    ];
    assert.deepEqual([wsStart.resumed, wsStart.id], [true, "0-0"]);
    assert.deepEqual([wsClosed.type, wsClosed.id, wsClosed.data.start], [
      "window.closed",
      logged[0],
      at(0),
    ]);
    // Live ones follow, none twice.
    await post(server, [{ id: "c", ts: at(200), country: "FR" }]);
    await sweep(server); // closes minute 1 (FR)
    assert.equal((await resumed.next()).data.data.start, at(60));
    assert.equal((await resumedSocket.inbox.next()).data.start, at(60));
  } finally {
    await resumed.cancel();
    await resumedSocket.close();
  }
}

Deno.test("A subscription begun on an empty log resumes after its 0-0, over SSE and WebSocket (memory store)", async () => {
  const server = await startServer();
  try {
    await emptyLogResumeScenario(server);
  } finally {
    await server.close();
  }
});

redisTest(
  "A subscription begun on an empty log resumes after its 0-0, over SSE and WebSocket (Redis store)",
  async (fixture) => {
    const redis = restClient(fixture);
    const server = await startServer({ store: new RedisStore(redis), hub: { shared: true } });
    try {
      await emptyLogResumeScenario(server);
    } finally {
      await server.close();
    }
  },
);

/**
 * A close of 5,000 groups of two counters (over 10,000 `window.closed`, ~4 MB: past the 1 MiB a
 * subscriber may have waiting, queued faster than a loopback reader takes it) reaches subscribers
 * that keep reading, SSE and WebSocket, each result once and in log order, without dropping them.
 */
Deno.test("Subscribers that keep reading get every result of a close of 5,000 groups (10,000 results) once, not dropped (memory store, default limits)", async () => {
  const server = await startServer();
  const sse = new SseReader(await openSse(server, "?types=window.closed"));
  const socket = await denoClient(server.wsUrl(`${SUBSCRIBE}?types=window.closed`));
  try {
    assert.equal((await sse.next()).event, "subscribed");
    assert.equal((await socket.inbox.next()).type, "subscribed");
    for (let minute = 0; minute < 5; minute++) {
      await post(
        server,
        Array.from({ length: 1_000 }, (_, i) => ({
          id: `m${minute}-${i}`,
          ts: at(minute * 60 + 5),
          country: `c${i}`,
          amount: 1,
        })),
      );
    }
    await post(server, [{ id: "flush", ts: at(400), country: "DE" }]);
    await sweep(server);
    const logged: string[] = [];
    for (let after = "0-0";;) {
      const page = await server.store.readLog("orders", after, 1_000);
      if (page.length === 0) break;
      after = page.at(-1)!.id;
      for (const entry of page) {
        const record = entry.record;
        if (record.type === "window.closed") logged.push(entry.id);
      }
    }
    assert.ok(logged.length >= 10_000, `${logged.length} results`);
    const sseIds: string[] = [];
    const socketIds: string[] = [];
    await Promise.all([
      (async () => {
        while (sseIds.length < logged.length) {
          const event = await sse.next(20_000);
          assert.equal(event.event, "window.closed", JSON.stringify(event.data));
          sseIds.push(event.id!);
        }
      })(),
      (async () => {
        while (socketIds.length < logged.length) {
          const message = await socket.inbox.next(20_000);
          assert.equal(message.type, "window.closed", JSON.stringify(message));
          socketIds.push(message.id);
        }
      })(),
    ]);
    assert.deepEqual(sseIds, logged);
    assert.deepEqual(socketIds, logged);
    assert.equal(server.live.stats.subscribers, 2);
    // Back with the tail: live results follow, after the last one logged before.
    await post(server, [{ id: "later", ts: at(500), country: "FR" }]);
    await sweep(server);
    const [nextSse, nextSocket] = [await sse.next(), await socket.inbox.next()];
    assert.deepEqual([nextSse.event, nextSocket.type], ["window.closed", "window.closed"]);
    assert.equal(nextSse.id, nextSocket.id);
    assert.ok(compareLogIds(parseLogId(nextSse.id!), parseLogId(logged.at(-1)!)) > 0);
  } finally {
    await sse.cancel();
    await socket.close();
    await server.close();
  }
});

Deno.test("SSE says when Last-Event-ID cannot be resumed from, and starts at the log's end", async () => {
  // A log that keeps its newest 2 entries (trimmed once past 3).
  const server = await startServer({
    store: new MemoryStore({ now: () => NOW, log: { retain: 2 } }),
  });
  const readers: SseReader[] = [];
  try {
    await post(server, [
      { id: "a", ts: at(5), country: "DE" },
      { id: "b", ts: at(100), country: "DE" },
    ]);
    await sweep(server);
    const filler = {
      type: "event.processed" as const,
      timeMs: NOW,
      event: { id: "filler", ts: at(100), country: "DE" },
    };
    await server.store.appendLog("orders", [filler, filler, filler, filler]);
    for (
      const [lastEventId, reason] of [
        ["garbage", "Cannot resume after 'garbage': not a result log id (<ms>-<seq>)"],
        [
          "1-0",
          `Cannot resume after '1-0': the result log of stream 'orders' was trimmed through '`,
        ],
      ]
    ) {
      const sse = new SseReader(
        await openSse(server, CLOSED_COUNTS, { "Last-Event-ID": lastEventId }),
      );
      readers.push(sse);
      const hello = await sse.next();
      assert.equal(hello.event, "subscribed");
      assert.equal(hello.data.resumed, false);
      assert.ok(hello.data.reason.startsWith(reason), hello.data.reason);
      // Where it starts instead: reconnecting with this id misses nothing.
      const end = await server.store.lastLogId("orders");
      assert.ok(end !== null);
      assert.equal(hello.id, end);
    }
    await post(server, [{ id: "c", ts: at(200), country: "FR" }]);
    await sweep(server); // closes minute 1 (DE)
    for (const sse of readers) {
      const next = await sse.next();
      assert.deepEqual([next.event, next.data.data.start], ["window.closed", at(60)]);
    }
  } finally {
    for (const sse of readers) await sse.cancel();
    await server.close();
  }
});

redisTest(
  "A subscriber on one instance gets the results of events ingested on another (shared Redis)",
  async (fixture) => {
    const redis = () => restClient(fixture);
    const a = await startServer({
      store: new RedisStore(redis()),
      hub: { shared: true, pollMs: 30 },
    });
    const b = await startServer({
      store: new RedisStore(redis()),
      hub: { shared: true, pollMs: 30 },
    });
    const client = await denoClient(
      b.wsUrl(`${SUBSCRIBE}?types=window.updated,window.closed&counter=count_1m`),
    );
    try {
      assert.equal((await client.inbox.next()).type, "subscribed");
      await post(a, [
        { id: "x1", ts: at(5), country: "DE" },
        { id: "x2", ts: at(6), country: "DE" },
      ]);
      const updates = await client.inbox.until((message) => message.data.value === 2);
      assert.equal(updates.at(-1).type, "window.updated");
      assert.deepEqual(updates.at(-1).data.group, { country: "DE" });
      await post(a, [{ id: "x3", ts: at(100), country: "FR" }]);
      await sweep(a);
      const closed = await client.inbox.until((message) => message.type === "window.closed");
      assert.deepEqual([closed.at(-1).data.start, closed.at(-1).data.value], [at(0), 2]);
    } finally {
      await client.close();
      await a.close();
      await b.close();
    }
  },
);

Deno.test("A subscription whose key is deleted or expires while it follows is closed: WebSocket 1008, SSE a final closed event", async () => {
  let clock = NOW;
  const keyStore = new MemoryKeyStore();
  const record = (id: string, secret: string, expiresAt?: number) => ({
    id,
    type: "secret" as const,
    hash: toHex(sha256(secret)),
    prefix: secret.slice(0, 7),
    scopes: ["read"],
    createdAt: NOW,
    ...(expiresAt === undefined ? {} : { expiresAt }),
  });
  const deleted = "sk_deleted_0123456789abcdef";
  const expiring = "sk_expiring_0123456789abcdef";
  await keyStore.createKey(record("key_0000000000000001", deleted));
  await keyStore.createKey(record("key_0000000000000002", expiring, NOW + 60_000));
  const server = await startServer({
    auth: true,
    now: () => clock,
    keyRing: { store: keyStore, now: () => clock, cacheTtlMs: 50 },
    liveRoutes: { keyCheckMs: 20 },
  });
  try {
    const opened = [];
    for (const key of [deleted, expiring]) {
      const socket = await nodeClient(server.wsUrl(SUBSCRIBE), {
        headers: { Authorization: `Bearer ${key}` },
      });
      assert.equal((await socket.inbox.next()).type, "subscribed");
      const sse = new SseReader(await openSse(server, "", { Authorization: `Bearer ${key}` }));
      assert.equal((await sse.next()).event, "subscribed");
      opened.push({ socket, sse });
    }
    // Still following a moment later: nothing changed.
    await new Promise((resolve) => setTimeout(resolve, 100));
    await keyStore.deleteKey("key_0000000000000001");
    clock = NOW + 60_000;
    for (const { socket, sse } of opened) {
      const closed = await within(socket.inbox.closed, 5_000);
      assert.equal(closed.code, 1008);
      assert.match(closed.reason, /^Key no longer valid/);
      const last = await sse.next();
      assert.equal(last.event, "closed");
      assert.match((last.data as { reason: string }).reason, /^Key no longer valid/);
    }
  } finally {
    await server.close();
  }
});

Deno.test("Subprotocols offered without a space after the comma get a 400 that says how to send them", async () => {
  const server = await startServer({ auth: true });
  try {
    const res = await fetch(`${server.base}${SUBSCRIBE}`, {
      headers: {
        Upgrade: "websocket",
        Connection: "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": `edgestream,bearer.${KEYS.read}`,
      },
    });
    const body = await res.json();
    assert.equal(res.status, 400);
    assert.equal(body.error.code, "invalid_upgrade");
    assert.match(body.error.message, /separate subprotocols with ', '.*Authorization: Bearer/);
    // The same list as a browser sends it (", ") is taken.
    const socket = await denoClient(server.wsUrl(SUBSCRIBE), ["edgestream", `bearer.${KEYS.read}`]);
    assert.equal((await socket.inbox.next()).type, "subscribed");
    await socket.close();
  } finally {
    await server.close();
  }
});

/** The headers of a WebSocket upgrade, sent with `fetch` to read a refused upgrade's answer. */
const UPGRADE_HEADERS = {
  Upgrade: "websocket",
  Connection: "Upgrade",
  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
  "Sec-WebSocket-Version": "13",
};

/** Asserts `res` is the 503 every route answers while the store is unreachable. */
async function assertStoreUnavailable(res: Response, what: string): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 503, `${what}: ${text.slice(0, 200)}`);
  assert.equal(res.headers.get("Retry-After"), "1", what);
  assert.match(res.headers.get("Content-Type") ?? "", /^application\/json/, what);
  assert.equal(res.headers.get("X-Request-Id") !== null, true, what);
  const body = JSON.parse(text);
  assert.equal(body.error.code, "store_unavailable", what);
  assert.match(body.error.message, /Redis is unavailable/, what);
  assert.ok(["unknown", "not_applied"].includes(body.error.details?.outcome), what);
  assert.equal(body.error.requestId, res.headers.get("X-Request-Id"), what);
}

redisTest(
  "With Redis unreachable, a new subscription is a 503 store_unavailable with Retry-After before the SSE answer or the upgrade; subscribers from before stay open",
  async (fixture) => {
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
      retry: { retries: 1, backoff: () => 50 }, // as src/env.ts makes it
    });
    const server = await startServer({
      store: new RedisStore(redis),
      hub: { shared: true },
      // Two held: a refused subscription that kept its place would make the next one a 429.
      liveRoutes: { subscriptions: { perKey: 3 } },
    });
    const socketBefore = await denoClient(server.wsUrl(SUBSCRIBE));
    const sseBefore = new SseReader(await openSse(server, ""));
    try {
      assert.equal((await socketBefore.inbox.next()).type, "subscribed");
      assert.equal((await sseBefore.next()).event, "subscribed");
      await fixture.stop(); // the bridge and Redis: every store call now fails

      // A stream nobody follows: the subscription's first store call is its answer.
      const other = "/v1/streams/open/subscribe";
      await assertStoreUnavailable(
        await fetch(`${server.base}${other}`, { headers: { Accept: "text/event-stream" } }),
        "SSE",
      );
      await assertStoreUnavailable(
        await fetch(`${server.base}${other}`, { headers: UPGRADE_HEADERS }),
        "WebSocket upgrade",
      );
      const refused = await nodeClient(server.wsUrl(other));
      assert.equal(refused.status, 503, "a WebSocket client sees the upgrade refused");
      await refused.close();

      // The followed stream: once its tail found the store gone, a new subscriber is refused too.
      let sse: Response | undefined;
      await eventually(async () => {
        sse = await openSse(server, "");
        if (sse.status === 503) return true;
        await sse.body?.cancel();
        return false;
      });
      await assertStoreUnavailable(sse!, "SSE on a followed stream");
      await assertStoreUnavailable(
        await fetch(`${server.base}${SUBSCRIBE}`, { headers: UPGRADE_HEADERS }),
        "WebSocket upgrade on a followed stream",
      );

      // Those subscribed before are neither closed nor sent anything: they wait for the store.
      assert.equal(server.live.stats.subscribers, 2);
      const state = await Promise.race([socketBefore.inbox.closed.then(() => "closed"), "open"]);
      assert.equal(state, "open");
      assert.equal(socketBefore.socket.readyState, WebSocket.OPEN);
    } finally {
      await socketBefore.close();
      await sseBefore.cancel().catch(() => {});
      await server.close();
    }
  },
);

/** A WebSocket upgrade request for a subscription, as a client sends it, read as plain HTTP. */
function upgradeRequest(server: TestServer, key: string) {
  return fetch(`${server.base}${SUBSCRIBE}`, {
    headers: { ...UPGRADE_HEADERS, "Sec-WebSocket-Protocol": `bearer.${key}` },
  });
}

/** Opens an SSE subscription with `key` and reads its `subscribed` event. */
async function subscribedSse(server: TestServer, key?: string): Promise<SseReader> {
  const response = await openSse(server, "", key ? { Authorization: `Bearer ${key}` } : {});
  if (response.status !== 200) assert.fail(`${response.status}: ${await response.text()}`);
  const sse = new SseReader(response);
  assert.equal((await sse.next()).event, "subscribed");
  return sse;
}

Deno.test("Subscriptions are bounded per key: one more is 429 too_many_subscriptions over SSE and before the WebSocket upgrade; a closed one frees its place", async () => {
  const server = await startServer({
    auth: true,
    liveRoutes: { subscriptions: { perKey: 2, perProcess: 100 } },
  });
  try {
    const sse = await subscribedSse(server, KEYS.read);
    const socket = await denoClient(server.wsUrl(SUBSCRIBE), [`bearer.${KEYS.read}`]);
    assert.equal((await socket.inbox.next()).type, "subscribed");

    const refused = await openSse(server, "", { Authorization: `Bearer ${KEYS.read}` });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("Retry-After"), "5");
    const body = await refused.json();
    assert.equal(body.error.code, "too_many_subscriptions");
    assert.deepEqual(body.error.details, { limit: "key", max: 2 });
    assert.match(body.error.message, /has 2 open on this server; the limit is 2/);
    assert.doesNotMatch(body.error.message, new RegExp(KEYS.read), "the key's text is not echoed");
    const notUpgraded = await upgradeRequest(server, KEYS.read);
    assert.equal(notUpgraded.status, 429);
    assert.equal(notUpgraded.headers.get("Retry-After"), "5");
    const notUpgradedBody = await notUpgraded.json();
    assert.equal(notUpgradedBody.error.code, "too_many_subscriptions");
    assert.deepEqual(notUpgradedBody.error.details, { limit: "key", max: 2 });

    // Another key has its own places.
    const other = await subscribedSse(server, KEYS.admin);
    await other.cancel();

    // Closing either kind of subscription frees its place.
    await sse.cancel();
    let again: SseReader | undefined;
    await eventually(async () => {
      const response = await openSse(server, "", { Authorization: `Bearer ${KEYS.read}` });
      if (response.status !== 200) {
        await response.body?.cancel();
        return false;
      }
      again = new SseReader(response);
      return true;
    });
    assert.equal((await again!.next()).event, "subscribed");
    assert.equal((await upgradeRequest(server, KEYS.read)).status, 429);
    await socket.close();
    let reopened: Awaited<ReturnType<typeof denoClient>> | undefined;
    await eventually(async () => {
      const response = await upgradeRequest(server, KEYS.read);
      await response.body?.cancel();
      if (response.status === 429) return false;
      reopened = await denoClient(server.wsUrl(SUBSCRIBE), [`bearer.${KEYS.read}`]);
      return true;
    });
    assert.equal((await reopened!.inbox.next()).type, "subscribed");
    await reopened!.close();
    await again!.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("Subscriptions are bounded per process: 503 subscriptions_full with Retry-After, whatever the key", async () => {
  const server = await startServer({
    auth: true,
    liveRoutes: { subscriptions: { perKey: 10, perProcess: 2 } },
  });
  try {
    const first = await subscribedSse(server, KEYS.read);
    const second = await subscribedSse(server, KEYS.admin);
    for (const key of [KEYS.read, KEYS.admin]) {
      const refused = await openSse(server, "", { Authorization: `Bearer ${key}` });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("Retry-After"), "5");
      const body = await refused.json();
      assert.equal(body.error.code, "subscriptions_full");
      assert.deepEqual(body.error.details, { limit: "process", max: 2 });
      const notUpgraded = await upgradeRequest(server, key);
      assert.equal(notUpgraded.status, 503);
      assert.equal(notUpgraded.headers.get("Retry-After"), "5");
      const notUpgradedBody = await notUpgraded.json();
      assert.equal(notUpgradedBody.error.code, "subscriptions_full");
      assert.deepEqual(notUpgradedBody.error.details, { limit: "process", max: 2 });
    }
    // A refused key is no subscription: it takes no place.
    const denied = await openSse(server, "", { Authorization: `Bearer ${KEYS.ingest}` });
    assert.equal(denied.status, 403);
    await denied.body?.cancel();
    await first.cancel();
    await second.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("ingest sockets and subscriptions hold apart bounds on a real server: either pool full locks nobody out of the other", async () => {
  const server = await startServer({
    auth: true,
    liveRoutes: {
      subscriptions: { perKey: 10, perProcess: 1 },
      socket: { slots: { perKey: 10, perProcess: 1 } },
    },
  });
  const ingestPath = "/v1/streams/orders/ws";
  const ingestUpgrade = (key: string) =>
    fetch(`${server.base}${ingestPath}`, {
      headers: { ...UPGRADE_HEADERS, "Sec-WebSocket-Protocol": `bearer.${key}` },
    });
  try {
    // The ingest pool full: a reader still subscribes.
    const producer = await denoClient(server.wsUrl(ingestPath), [`bearer.${KEYS.ingest}`]);
    assert.equal(producer.socket.readyState, WebSocket.OPEN);
    const fullIngest = await ingestUpgrade(KEYS.admin);
    assert.equal(fullIngest.status, 503);
    assert.equal((await fullIngest.json()).error.code, "ingest_sockets_full");
    const reader = await subscribedSse(server, KEYS.read);
    // Both pools full: each refuses with its own code, the other's connection unharmed.
    const fullSubscriptions = await openSse(server, "", { Authorization: `Bearer ${KEYS.admin}` });
    assert.equal(fullSubscriptions.status, 503);
    assert.equal((await fullSubscriptions.json()).error.code, "subscriptions_full");
    producer.socket.send(JSON.stringify([{ id: "p1", ts: at(1), country: "DE" }]));
    assert.equal((await producer.inbox.next()).type, "ack");
    // The reader's place freed: subscriptions open again, the ingest pool still full.
    await reader.cancel();
    let again: SseReader | undefined;
    await eventually(async () => {
      const response = await openSse(server, "", { Authorization: `Bearer ${KEYS.admin}` });
      if (response.status !== 200) {
        await response.body?.cancel();
        return false;
      }
      again = new SseReader(response);
      return true;
    });
    assert.equal((await again!.next()).event, "subscribed");
    const stillFull = await ingestUpgrade(KEYS.admin);
    assert.equal(stillFull.status, 503);
    await stillFull.body?.cancel();
    await again!.cancel();
    await producer.close();
  } finally {
    await server.close();
  }
});

Deno.test("In open mode subscriptions are bounded per client address", async () => {
  const server = await startServer({ liveRoutes: { subscriptions: { perKey: 1 } } });
  try {
    const sse = await subscribedSse(server);
    const refused = await openSse(server, "");
    assert.equal(refused.status, 429);
    assert.match((await refused.json()).error.message, /client address 127\.0\.0\.1 has 1 open/);
    await sse.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("the subscribed, result and closed messages of real WebSocket and SSE subscribers are as the document's x-messages describe them", async () => {
  const server = await startServer();
  // deno-lint-ignore no-explicit-any
  const doc: any = await (await fetch(`${server.base}/openapi.json`)).json();
  // A control message's fields are all described: no other field may come.
  for (const name of ["LiveSubscribed", "LiveClosed"]) {
    doc.components.schemas[name].additionalProperties = false;
  }
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema(doc, "openapi");
  const responses = "openapi#/paths/~1v1~1streams~1{stream}~1subscribe/get/responses";
  const described = (status: number) => {
    const validate = ajv.getSchema(`${responses}/${status}/x-messages`);
    assert.ok(validate, `the subscribe operation's ${status} describes its messages`);
    return validate;
  };
  const overSocket = described(101);
  const overSse = described(200);
  const sse = new SseReader(await openSse(server, "?types=window.updated,window.closed"));
  const resumed = new SseReader(await openSse(server, "?after=1767225600000-0"));
  const socket = await denoClient(server.wsUrl(`${SUBSCRIBE}?types=window.closed&after=0-0`));
  try {
    const seen: unknown[] = [];
    const sseData = [(await sse.next()).data, (await resumed.next()).data];
    const socketMessages = [await socket.inbox.next()];
    assert.equal(sseData[1].resumed, false, "a resumed subscribed says why it starts at the end");
    await post(server, [{ id: "a", ts: at(5), country: "DE" }, { id: "b", ts: at(100) }]);
    await sweep(server);
    sseData.push((await sse.next()).data);
    socketMessages.push(await socket.inbox.next());
    await server.live.close();
    sseData.push(...(await sse.rest()).map((event) => event.data));
    for (const data of sseData) {
      seen.push(data.type);
      assert.ok(overSse(data), `SSE ${JSON.stringify(data)}: ${ajv.errorsText(overSse.errors)}`);
    }
    for (const message of socketMessages) {
      seen.push(`ws ${message.type}`);
      assert.ok(
        overSocket(message),
        `WebSocket ${JSON.stringify(message)}: ${ajv.errorsText(overSocket.errors)}`,
      );
    }
    assert.ok(seen.includes("closed") && seen.includes("ws subscribed"), String(seen));
    assert.ok(seen.some((type) => String(type).startsWith("window.")), String(seen));
    assert.ok(seen.includes("ws window.closed"), String(seen));
    // What the schemas refuse: a control message with a field they do not describe, a result
    // over WebSocket without its id.
    assert.equal(overSse({ type: "closed", reason: "x", extra: 1 }), false);
    assert.equal(overSocket({ ...socketMessages[1], id: undefined }), false);
  } finally {
    await sse.cancel().catch(() => {});
    await resumed.cancel().catch(() => {});
    await socket.close();
    await server.close();
  }
});

Deno.test("a raw WebSocket subscriber closed with 1009 that never reads has its connection ended and its place freed within closeGraceMs", async () => {
  const server = await startServer({
    liveRoutes: { subscriptions: { perKey: 1 }, closeGraceMs: 300 },
  });
  try {
    const { conn, head, rest } = await rawSocketSending(server, SUBSCRIBE, {
      opcode: 1,
      payload: new TextEncoder().encode("x".repeat(2_000)),
    });
    try {
      assert.match(head, /^HTTP\/1\.1 101 /);
      // Nothing read meanwhile: the close frame waits unanswered until the server drops it.
      await eventually(async () => {
        const again = await openSse(server, "");
        await again.body?.cancel();
        return again.status === 200;
      }, 10_000);
      const { bytes, closed } = await readAllFor(conn, 10_000);
      assert.ok(closed, "the connection is still open");
      assert.equal(closeCodeIn(new Uint8Array([...rest, ...bytes])), 1009);
    } finally {
      conn.close();
    }
  } finally {
    await server.close();
  }
});

Deno.test("README: a subscription dropped (too slow) or whose key is revoked frees its place: over SSE at once, over a WebSocket once its connection ends (a client that reads nothing has it dropped closeGraceMs, 10 s by default, after the close frame)", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "reads nothing keeps its connection for a while: the close frame is sent after what waited for it, and the server drops the connection of a client that has not answered the close frame 10 s after it was sent. It keeps its place until then: the connection and what waits in it still count against the bounds below";
  assert.ok(readme.includes(claim), claim);
  assert.equal(subscriptionSettings().closeGraceMs, 10_000);
  // Dropped: a WebSocket subscriber that stops reading, in open mode with one place an address.
  const server = await startServer({
    liveRoutes: { maxBufferedBytes: 64 * 1024, subscriptions: { perKey: 1 }, closeGraceMs: 3_000 },
    hub: { stalledMs: 100 },
  });
  const document = await (await fetch(`${server.base}/openapi.json`)).json();
  assert.match(
    document.paths["/v1/streams/{stream}/subscribe"].get.description,
    /frees its place; over a WebSocket, once its connection ends/,
  );
  const slow = await nodeClient(server.wsUrl(`${SUBSCRIBE}?types=event.processed`));
  try {
    assert.equal((await slow.inbox.next()).type, "subscribed");
    const full = await openSse(server, "");
    assert.equal(full.status, 429);
    await full.body?.cancel();
    slow.socket.pause();
    const padding = "p".repeat(4_000);
    for (let batch = 0; server.live.stats.subscribers > 0; batch++) {
      assert.ok(batch < 200, "the subscriber was never dropped");
      await post(
        server,
        Array.from(
          { length: 100 },
          (_, i) => ({ id: `f${batch}-${i}`, ts: at(5), country: padding }),
        ),
      );
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // The dropped client still holds its (paused) connection, and with it its place: a client
    // that reads nothing must not open one such connection after another without bound.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const held = await openSse(server, "");
    assert.equal(held.status, 429, "the place of a connection still open is not free");
    await held.body?.cancel();
    // Still reading nothing, it never answers the close frame: the server drops its connection
    // after the grace, and the connection's place is free again.
    await eventually(async () => {
      const again = await openSse(server, "");
      await again.body?.cancel();
      return again.status === 200;
    }, 10_000);
  } finally {
    slow.socket.terminate();
    await slow.inbox.closed;
    await server.close();
  }

  // Revoked: a run-time key's subscriptions closed, the process's one place free again.
  const keyStore = new MemoryKeyStore();
  const secret = "sk_revoked_0123456789abcdef";
  await keyStore.createKey({
    id: "key_0000000000000003",
    type: "secret",
    hash: toHex(sha256(secret)),
    prefix: secret.slice(0, 7),
    scopes: ["read"],
    createdAt: NOW,
  });
  const guarded = await startServer({
    auth: true,
    keyRing: { store: keyStore, cacheTtlMs: 50 },
    liveRoutes: { keyCheckMs: 20, subscriptions: { perKey: 10, perProcess: 1 } },
  });
  try {
    for (const transport of ["sse", "ws"] as const) {
      if (transport === "sse") {
        const sse = await subscribedSse(guarded, secret);
        const full = await openSse(guarded, "", { Authorization: `Bearer ${KEYS.read}` });
        assert.equal(full.status, 503);
        await full.body?.cancel();
        await keyStore.deleteKey("key_0000000000000003");
        const last = await sse.next();
        assert.equal(last.event, "closed");
        // Read its final event and no further: the connection is still the client's to close.
        const other = await subscribedSse(guarded, KEYS.read);
        await other.cancel();
        await sse.cancel();
      } else {
        const socketSecret = "sk_revoked_socket_0123456789abcdef";
        await keyStore.createKey({
          id: "key_0000000000000004",
          type: "secret",
          hash: toHex(sha256(socketSecret)),
          prefix: socketSecret.slice(0, 7),
          scopes: ["read"],
          createdAt: NOW,
        });
        const socket = await nodeClient(guarded.wsUrl(SUBSCRIBE), {
          headers: { Authorization: `Bearer ${socketSecret}` },
        });
        assert.equal((await socket.inbox.next()).type, "subscribed");
        await keyStore.deleteKey("key_0000000000000004");
        assert.equal((await within(socket.inbox.closed, 5_000)).code, 1008);
        const other = await subscribedSse(guarded, KEYS.read);
        await other.cancel();
      }
    }
  } finally {
    await guarded.close();
  }
});

redisTest(
  "README resuming on Redis: once the log was trimmed, an id before the one just before its oldest entry is refused (the last trimmed entry's too), that one and later ones resume, one newer than the newest is refused",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis, { now: () => NOW, log: { retain: 2 } });
    const server = await startServer({ store, hub: { shared: true } });
    const readers: SseReader[] = [];
    const open = async (lastEventId: string) => {
      const sse = new SseReader(
        await openSse(server, "?types=event.processed", { "Last-Event-ID": lastEventId }),
      );
      readers.push(sse);
      const hello = await sse.next();
      assert.equal(hello.event, "subscribed");
      return { sse, hello };
    };
    try {
      const filler = (i: number) => ({
        type: "event.processed" as const,
        timeMs: NOW,
        event: { id: `f${i}`, ts: at(5), country: "DE" },
      });
      // Every id the log ever had, read after each append (`MAXLEN ~` trims whole nodes of 100).
      const ids: string[] = [];
      for (let i = 0; i < 250; i++) {
        await store.appendLog("orders", [filler(i)]);
        const read = await store.readLog("orders", ids.at(-1) ?? null, 1_000);
        ids.push(...read.map((entry) => entry.id));
      }
      assert.equal(ids.length, 250);
      const held = (await store.readLog("orders", null, 1_000)).map((entry) => entry.id);
      assert.ok(held.length < 250, "the log was trimmed");
      const oldest = ids.indexOf(held[0]);
      const lastTrimmed = ids[oldest - 1];
      const [ms, seq] = parseLogId(held[0]);
      const justBefore = seq > 0 ? `${ms}-${seq - 1}` : `${ms - 1}-${Number.MAX_SAFE_INTEGER}`;

      // The last trimmed entry's id is refused, unless it is the id just before the oldest (two
      // appends in one millisecond): resuming after it then loses nothing, and it resumes (below).
      const refusedIds = ["1-0", ids[0], lastTrimmed].filter((id) => id !== justBefore);
      for (const refusedId of refusedIds) {
        const { hello } = await open(refusedId);
        assert.equal(hello.data.resumed, false, refusedId);
        assert.ok(
          hello.data.reason.startsWith(
            `Cannot resume after '${refusedId}': the result log of stream 'orders' was trimmed through '${justBefore}'`,
          ),
          hello.data.reason,
        );
        assert.equal(hello.id, held.at(-1));
      }
      for (const [resumeId, first] of [[justBefore, held[0]], [held[0], held[1]]]) {
        const { sse, hello } = await open(resumeId);
        assert.equal(hello.data.resumed, true, resumeId);
        assert.equal(hello.id, resumeId);
        assert.equal((await sse.next()).id, first, resumeId);
      }
      const newer = `${parseLogId(held.at(-1)!)[0] + 1}-0`;
      const { hello } = await open(newer);
      assert.equal(hello.data.resumed, false);
      assert.equal(
        hello.data.reason,
        `Cannot resume after '${newer}': the result log of stream 'orders' ends at '${
          held.at(-1)
        }'`,
      );
    } finally {
      for (const sse of readers) await sse.cancel();
      await server.close();
    }
  },
);

Deno.test("README: while the server shuts down, a new subscription gets 503 shutting_down, over a WebSocket as over SSE, before any upgrade", async () => {
  const server = await startServer();
  try {
    await server.connections.close("Server is shutting down");
    const upgrade = await fetch(`${server.base}${SUBSCRIBE}`, { headers: UPGRADE_HEADERS });
    assert.equal(upgrade.status, 503);
    assert.equal((await upgrade.json()).error.code, "shutting_down");
    const socket = await nodeClient(server.wsUrl(SUBSCRIBE));
    assert.equal(socket.status, 503);
    const sse = await openSse(server, "");
    assert.equal(sse.status, 503);
    assert.equal((await sse.json()).error.code, "shutting_down");
    assert.equal(server.live.stats.subscribers, 0);
  } finally {
    await server.close();
  }
});

Deno.test("README resuming over a WebSocket: an ?after= the log cannot serve gives subscribed resumed: false with a reason, its id the log's end, and live results follow", async () => {
  const server = await startServer();
  const sockets: Awaited<ReturnType<typeof denoClient>>[] = [];
  try {
    await post(server, [
      { id: "a", ts: at(5), country: "DE" },
      { id: "b", ts: at(100), country: "DE" },
    ]);
    await sweep(server); // closes minute 0 (DE)
    const end = await server.store.lastLogId("orders");
    assert.ok(end !== null);
    const newer = `${parseLogId(end)[0] + 1}-0`;
    for (
      const [after, reason] of [
        ["garbage", "Cannot resume after 'garbage': not a result log id (<ms>-<seq>)"],
        [
          newer,
          `Cannot resume after '${newer}': the result log of stream 'orders' ends at '${end}'`,
        ],
      ]
    ) {
      const socket = await denoClient(
        server.wsUrl(`${SUBSCRIBE}${CLOSED_COUNTS}&after=${encodeURIComponent(after)}`),
      );
      sockets.push(socket);
      assert.deepEqual(await socket.inbox.next(), {
        type: "subscribed",
        stream: "orders",
        types: ["window.closed"],
        counter: "count_1m",
        resumed: false,
        reason,
        id: end,
      });
    }
    await post(server, [{ id: "c", ts: at(200), country: "FR" }]);
    await sweep(server); // closes minute 1 (DE)
    for (const socket of sockets) {
      const next = await socket.inbox.next();
      assert.deepEqual([next.type, next.data.start], ["window.closed", at(60)]);
      assert.ok(compareLogIds(parseLogId(next.id), parseLogId(end)) > 0);
    }
  } finally {
    for (const socket of sockets) await socket.close();
    await server.close();
  }
});

Deno.test("README counter parameter: only that counter's results, while events, of no counter, are sent whatever it names", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme,
    /`counter`: only that counter's results \(`window\.\*`, `alert\.fired`\); events \(`event\.processed`,\s+`event\.late`\) belong to no counter and are sent whatever it names/,
  );
  const server = await startServer();
  const client = await denoClient(
    server.wsUrl(`${SUBSCRIBE}?types=event.processed,window.closed&counter=count_1m`),
  );
  try {
    assert.equal((await client.inbox.next()).type, "subscribed");
    await post(server, [
      { id: "a", ts: at(5), country: "DE", amount: 2 },
      { id: "b", ts: at(100), country: "FR", amount: 3 },
    ]);
    await sweep(server); // closes minute 0 of every counter
    const received = [];
    for (let i = 0; i < 3; i++) received.push(await client.inbox.next());
    assert.deepEqual(
      received.map((message) => [message.type, message.data.counter ?? message.data.event.id]),
      [["event.processed", "a"], ["event.processed", "b"], ["window.closed", "count_1m"]],
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(client.inbox.unread, 0, "no other counter's window.closed");
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("README keep-alive: an SSE subscriber that reads nothing is sent no more keep-alive comments than the one it has not read", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const streams = compileConfig(TEST_CONFIG);
  const live = new LiveHub(streams, store, { pollMs: 20 });
  const app = createApp({
    streams,
    store,
    keys: await KeyRing.parse(""),
    now: () => NOW,
    live,
    liveRoutes: { heartbeatMs: 50 },
  });
  // In process, nothing pulls the body but this reader: what it does not read waits on the server.
  const res = await app.fetch(
    new Request(`http://localhost${SUBSCRIBE}?types=event.processed`, {
      headers: { Accept: "text/event-stream" },
    }),
  );
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  try {
    const first = decoder.decode((await reader.read()).value);
    assert.match(first, /^event: subscribed\n/);
    // It reads nothing for 40 heartbeats: the first comment waits unread, the others are skipped.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    // What waited is read at once; a read that waits is for a comment sent after it. The read's
    // 5 ms window is a tenth of a heartbeat, so a loaded machine rarely catches a new comment in one
    // (at a 10 ms heartbeat it caught a chain of them: 4 comments, under CI's load).
    let text = "";
    for (let i = 0; i < 1_000; i++) {
      const read = await Promise.race([
        reader.read(),
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 5)),
      ]);
      if (read === null || read.done) break;
      text += decoder.decode(read.value);
    }
    const comments = text.split("\n\n").filter((block) => block === ": keep-alive");
    assert.ok(comments.length <= 3, `${comments.length} comments waited: ${JSON.stringify(text)}`);
  } finally {
    await reader.cancel().catch(() => {});
    await live.close();
  }
});

Deno.test("README: an SSE subscriber dropped as too slow that still reads nothing has its response cut (errored) after stalledMs, its unread messages let go", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "A client that reads none of what waits for it (the `closed` event last) for 10 s after its subscription ended has its response cut";
  assert.ok(readme.includes(claim), claim);
  // The grace is the hub's stalledMs, 10 s by default (see "A subscriber's defaults").
  const store = new MemoryStore({ now: () => NOW });
  const streams = compileConfig(TEST_CONFIG);
  const live = new LiveHub(streams, store, { pollMs: 20, stalledMs: 100 });
  const app = createApp({
    streams,
    store,
    keys: await KeyRing.parse(""),
    now: () => NOW,
    live,
    liveRoutes: { maxBufferedBytes: 64 * 1024 },
  });
  // In process, nothing pulls the body but this reader: what it does not read waits on the server.
  const res = await app.fetch(
    new Request(`http://localhost${SUBSCRIBE}?types=event.processed`, {
      headers: { Accept: "text/event-stream" },
    }),
  );
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  try {
    assert.match(new TextDecoder().decode((await reader.read()).value), /^event: subscribed\n/);
    // It reads nothing more: batches fill what may wait for it until the hub drops it.
    const padding = "p".repeat(4_000);
    for (let batch = 0; live.stats.subscribers > 0; batch++) {
      assert.ok(batch < 200, "the subscriber was never dropped");
      const posted = await app.request("/v1/streams/orders/events", {
        method: "POST",
        headers: { "Content-Type": "application/json", Host: "localhost" },
        body: JSON.stringify(
          Array.from(
            { length: 50 },
            (_, i) => ({ id: `d${batch}-${i}`, ts: at(5), country: padding }),
          ),
        ),
      });
      assert.equal(posted.status, 202, await posted.text());
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // Dropped, and still reading nothing for longer than stalledMs: what waited is let go, and
    // the response ends without it.
    await new Promise((resolve) => setTimeout(resolve, 400));
    let bytes = 0;
    let cut: unknown;
    for (;;) {
      try {
        const { value, done } = await within(reader.read(), 2_000);
        if (done) break;
        bytes += value.length;
      } catch (error) {
        cut = error;
        break;
      }
    }
    assert.ok(bytes < 64 * 1024, `${bytes} bytes still waited for a subscription ended 400 ms ago`);
    // Errored, not closed: Deno drops the connection of a body that errors (see the raw test below).
    assert.ok(cut instanceof ResponseCutError, `the body ended with ${cut}`);
  } finally {
    await reader.cancel().catch(() => {});
    await live.close();
  }
});

/**
 * A raw TCP client that subscribes (`request`: the request head) and then reads nothing: what the
 * server writes fills the kernel's buffers and then waits in the server.
 */
async function silentSubscriber(server: TestServer, request: string): Promise<Deno.Conn> {
  const { hostname, port } = new URL(server.base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(new TextEncoder().encode(request));
  return conn;
}

Deno.test("A WebSocket subscription refused for its key is closed 1008, and its connection dropped after refusedCloseMs (5 s by default, as the README says) when the client never answers the close frame", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "a client that has not answered its close frame 5 s later has its connection dropped by the server";
  assert.ok(readme.includes(claim), claim);
  assert.equal(subscriptionSettings().refusedCloseMs, 5_000);
  const server = await startServer({ auth: true, liveRoutes: { refusedCloseMs: 100 } });
  try {
    // No key, and a key without `read`: upgraded, sent the close frame, then never answering it.
    for (const query of ["", `?token=${KEYS.ingest}`]) {
      const { closed, status, code, reason } = await silentUpgrade(
        server,
        rawUpgrade(`${SUBSCRIBE}${query}`),
      );
      assert.ok(closed, `still open: ${status} ${code} ${reason}`);
      assert.match(status, /^HTTP\/1\.1 101 /);
      assert.equal(code, 1008);
      assert.match(reason, query ? /^API key lacks the 'read' scope$/ : /^Missing API key/);
    }
  } finally {
    await server.close();
  }
});

Deno.test("WebSockets refused for their key, of ingest and subscriptions, share one bound (1,000 by default, as the README says): past it a refusal is answered before the upgrade, and a place frees when a connection ends", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "A process holds at most 1,000 such refused WebSockets at once, of ingest and subscriptions together: past that, a refusal is answered before the upgrade, as plain HTTP (`401`, `403` with the error body, which a `WebSocket` client is not shown: it sees a failed connection)";
  assert.ok(readme.includes(claim), claim);
  assert.equal(new RefusedSockets().max, 1_000);
  const refusedSockets = new RefusedSockets(2);
  // A grace longer than the test: only a connection that ends frees a place.
  const server = await startServer({
    auth: true,
    liveRoutes: { refusedSockets, refusedCloseMs: 60_000, socket: { refusedCloseMs: 60_000 } },
  });
  const held: Deno.Conn[] = [];
  try {
    for (const path of ["/v1/streams/orders/ws", SUBSCRIBE]) {
      const { conn, status } = await rawUpgradeAnswer(server.base, path);
      held.push(conn);
      assert.match(status, /^HTTP\/1\.1 101 /, path);
    }
    assert.equal(refusedSockets.held, 2);
    for (
      const [path, expected] of [
        ["/v1/streams/orders/ws", /^HTTP\/1\.1 401 /],
        [SUBSCRIBE, /^HTTP\/1\.1 401 /],
        [`/v1/streams/orders/ws?token=${KEYS.read}`, /^HTTP\/1\.1 403 /],
        [`${SUBSCRIBE}?token=${KEYS.ingest}`, /^HTTP\/1\.1 403 /],
      ] as const
    ) {
      const { conn, status, body } = await rawUpgradeAnswer(server.base, path);
      conn.close();
      assert.match(status, expected, path);
      const { error } = JSON.parse(body);
      assert.match(error.message, /^Missing API key|lacks the '(ingest|read)' scope/, path);
    }
    // A WebSocket client (Deno's) reads no status: a connection that never opened, no reason.
    const client = await denoClient(server.wsUrl(SUBSCRIBE));
    assert.notEqual(client.socket.readyState, WebSocket.OPEN);
    const closed = await client.inbox.closed;
    assert.notEqual(closed.code, 1008);
    assert.equal(closed.reason, "");
    assert.equal(refusedSockets.held, 2);
    // A client that ends its connection (as one answering the close frame) frees its place.
    held.shift()!.close();
    await eventually(() => refusedSockets.held === 1);
    const { conn, status } = await rawUpgradeAnswer(server.base, SUBSCRIBE);
    held.push(conn);
    assert.match(status, /^HTTP\/1\.1 101 /);
  } finally {
    for (const conn of held) conn.close();
    await eventually(() => refusedSockets.held === 0);
    await server.close();
  }
});

/** Posts padded batches until the hub dropped every subscriber. */
async function fillUntilDropped(server: TestServer): Promise<void> {
  const padding = "p".repeat(4_000);
  for (let batch = 0; server.live.stats.subscribers > 0; batch++) {
    assert.ok(batch < 400, "the subscriber was never dropped");
    await post(
      server,
      Array.from(
        { length: 100 },
        (_, i) => ({ id: `c${batch}-${i}`, ts: at(5), country: padding }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** What {@linkcode readFor} read. */
interface ReadOutcome {
  bytes: number;
  /** The last bytes read, as text. */
  tail: string;
  /** Whether the connection ended (EOF, or reset). */
  closed: boolean;
}

/** Reads what the connection delivers until it ends (EOF, or reset), or for `ms` at most. */
async function readFor(conn: Deno.Conn, ms: number): Promise<ReadOutcome> {
  const outcome: ReadOutcome = { bytes: 0, tail: "", closed: false };
  outcome.closed = await readChunksFor(conn, ms, (chunk) => {
    outcome.bytes += chunk.length;
    outcome.tail = (outcome.tail + new TextDecoder().decode(chunk)).slice(-512);
  }, 1 << 20);
  return outcome;
}

Deno.test("README: the connection of an SSE subscriber dropped as too slow that still reads nothing is closed by the server after stalledMs", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "has its response cut and its connection closed by the server, so what waited in the server's memory and the connection are let go";
  assert.ok(readme.includes(claim), claim);
  // Dropped once more than maxBufferedBytes waited unread for stalledMs. At 8 MiB that is more
  // than the kernel's buffers take from a client that reads nothing (about 4 MB here), so the rest
  // waits in the server whenever the drop comes. With a small bound, a loaded server that fell
  // behind handing bytes to the kernel for stalledMs was dropped with the buffers half empty; the
  // kernel then took the rest, the response ended normally and the connection stayed (the README's
  // other case), failing this test.
  const server = await startServer({
    liveRoutes: { maxBufferedBytes: 8 * 1024 * 1024 },
    hub: { stalledMs: 100 },
  });
  const conn = await silentSubscriber(
    server,
    `GET ${SUBSCRIBE}?types=event.processed HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      "Accept: text/event-stream\r\n\r\n",
  );
  try {
    await eventually(() => server.live.stats.subscribers === 1);
    await fillUntilDropped(server);
    // Dropped; reading nothing for longer than the grace (stalledMs) after that.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // What the kernel's buffers hold still arrives; then the connection ends.
    const outcome = await readFor(conn, 5_000);
    assert.ok(outcome.closed, `still open 5 s on, ${outcome.bytes} bytes read`);
    assert.ok(outcome.bytes < 8 * 1024 * 1024, `${outcome.bytes} bytes arrived: nothing let go`);
  } finally {
    conn.close();
    await server.close();
  }
});

Deno.test("README: the connection of an SSE subscriber whose key is revoked while megabytes wait unread is closed by the server after stalledMs; one whose rest the kernel's buffers took ends its response and keeps its connection", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "A client that reads nothing but whose rest (the `closed` event last) the kernel's buffers took has its response ended normally, and keeps its connection, idle, until it closes it";
  assert.ok(readme.includes(claim), claim);
  const keyStore = new MemoryKeyStore();
  const secret = "sk_revoked_0123456789abcdef";
  await keyStore.createKey({
    id: "key_0000000000000005",
    type: "secret",
    hash: toHex(sha256(secret)),
    prefix: secret.slice(0, 7),
    scopes: ["read"],
    createdAt: NOW,
  });
  // Never dropped as too slow: what waits stays under maxBufferedBytes.
  const server = await startServer({
    auth: true,
    keyRing: { store: keyStore, cacheTtlMs: 50 },
    liveRoutes: { maxBufferedBytes: 64 * 1024 * 1024, keyCheckMs: 20 },
    hub: { stalledMs: 300 },
  });
  const conn = await silentSubscriber(
    server,
    `GET ${SUBSCRIBE}?types=event.processed HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      `Accept: text/event-stream\r\nAuthorization: Bearer ${secret}\r\n\r\n`,
  );
  // Same key, sent nothing but `subscribed` and then `closed`: all of it fits the kernel's buffers.
  const quiet = await silentSubscriber(
    server,
    `GET ${SUBSCRIBE}?types=alert.fired HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      `Accept: text/event-stream\r\nAuthorization: Bearer ${secret}\r\n\r\n`,
  );
  try {
    await eventually(() => server.live.stats.subscribers === 2);
    // About 12 MB, more than the kernel's buffers take: the rest waits in the server.
    const padding = "p".repeat(4_000);
    for (let batch = 0; batch < 30; batch++) {
      await post(
        server,
        Array.from(
          { length: 100 },
          (_, i) => ({ id: `r${batch}-${i}`, ts: at(5), country: padding }),
        ),
        KEYS.ingest,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(server.live.stats.subscribers, 2, "not dropped as too slow");
    await keyStore.deleteKey("key_0000000000000005");
    await eventually(() => server.live.stats.subscribers === 0);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const outcome = await readFor(conn, 5_000);
    assert.ok(outcome.closed, `still open 5 s on, ${outcome.bytes} bytes read`);
    assert.ok(outcome.bytes < 12_000_000, `${outcome.bytes} bytes arrived: nothing was let go`);
    // The quiet one: its response ended (the chunked body's last chunk) and the connection stays.
    const rest = await readFor(quiet, 2_000);
    assert.match(rest.tail, /event: closed\ndata: \{"type":"closed","reason":"Key no longer valid/);
    assert.ok(rest.tail.endsWith("0\r\n\r\n"), JSON.stringify(rest.tail));
    assert.equal(rest.closed, false);
  } finally {
    conn.close();
    quiet.close();
    await server.close();
  }
});

Deno.test("README: a WebSocket subscriber dropped as too slow that reads nothing has its connection dropped closeGraceMs after the close frame, though the closing handshake waits on the client", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "A WebSocket subscriber that is closed (dropped, its key revoked) but reads nothing keeps its connection for a while: the close frame is sent after what waited for it, and the server drops the connection of a client that has not answered the close frame 10 s after it was sent";
  assert.ok(readme.includes(claim), claim);
  const server = await startServer({
    liveRoutes: { maxBufferedBytes: 64 * 1024, closeGraceMs: 1_000 },
    hub: { stalledMs: 100 },
  });
  const conn = await silentSubscriber(
    server,
    `GET ${SUBSCRIBE}?types=event.processed HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  );
  try {
    await eventually(() => server.live.stats.subscribers === 1);
    await fillUntilDropped(server);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // What the kernel's buffers took arrives; the client's close frame never comes, and the
    // server drops the connection after the grace: it ends.
    const outcome = await readFor(conn, 10_000);
    assert.equal(outcome.closed, true);
  } finally {
    conn.close();
    await server.close();
  }
});

Deno.test("README: with the defaults, a subscription whose key is deleted is closed within 3 s (the key cache's 2 s and a check every second)", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "A live subscription's key and stream are checked again every second while it lasts: once the key is deleted or expires (within 3 s of the deletion on any instance: the key cache's 2 s and the check)";
  assert.ok(readme.includes(claim), claim);
  assert.equal(subscriptionSettings().keyCheckMs, 1_000);
  let clock = NOW;
  const keyStore = new MemoryKeyStore();
  const secret = "sk_revoked_0123456789abcdef";
  await keyStore.createKey({
    id: "key_0000000000000003",
    type: "secret",
    hash: toHex(sha256(secret)),
    prefix: secret.slice(0, 7),
    scopes: ["read"],
    createdAt: NOW,
  });
  // The key ring's clock is the test's: its cache lasts 2 s of it. The checks run on real timers.
  const server = await startServer({
    auth: true,
    now: () => clock,
    keyRing: { store: keyStore, now: () => clock },
  });
  try {
    const socket = await nodeClient(server.wsUrl(SUBSCRIBE), {
      headers: { Authorization: `Bearer ${secret}` },
    });
    assert.equal((await socket.inbox.next()).type, "subscribed");
    const sse = new SseReader(await openSse(server, "", { Authorization: `Bearer ${secret}` }));
    assert.equal((await sse.next()).event, "subscribed");
    await keyStore.deleteKey("key_0000000000000003");
    // Deleted, and the cache not expired (1.9 s of its clock): two checks later, both still follow.
    clock = NOW + 1_900;
    await new Promise((resolve) => setTimeout(resolve, 2_200));
    assert.equal(server.live.stats.subscribers, 2);
    // The cache expired: the next check (within a second) closes both.
    clock = NOW + 2_100;
    const started = Date.now();
    const closed = await within(socket.inbox.closed, 3_000);
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /^Key no longer valid/);
    const last = await within(sse.next(), 3_000);
    assert.equal(last.event, "closed");
    assert.ok(Date.now() - started <= 1_500, `${Date.now() - started} ms`);
  } finally {
    await server.close();
  }
});

/**
 * Events of stream `orders` that a filter matching `country` against `customer` passes: one of a
 * short pattern, then 40 each of its own pattern of about 4,000 instructions (ids `<prefix><i>`).
 */
function patternEvents(prefix: string) {
  return [
    { id: `${prefix}m`, ts: at(5), country: "DE", customer: "^D" },
    ...Array.from({ length: 40 }, (_, i) => ({
      id: `${prefix}${i}`,
      ts: at(5),
      country: "DE",
      customer: `^(D|${prefix}${i}x.{0,1000}.{0,990})`,
    })),
  ];
}

/**
 * How many of {@linkcode patternEvents}' long patterns fit 131,072 with the short one (each its
 * instructions and 32 more): the events sent before the subscription ends.
 */
const SENT_BEFORE_CUT = 32;

Deno.test("README filter: a filter whose matches() patterns taken from messages pass 131,072 a second to compile ends the subscription with the reason (WebSocket 1008, SSE closed event), the messages before it sent", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const reason = filterPatternBudgetMessage(131_072);
  assert.ok(readme.includes(`\`${reason}\``), "README quotes the reason");
  assert.ok(
    readme.includes(
      "The `matches()` patterns a filter takes from the messages (`payload.data.event.text.matches(payload.data.event.p)`) may cost 131,072 a second to compile",
    ),
  );
  // The hub's clock stands still: every pattern falls within one second.
  const server = await startServer({ hub: { now: () => NOW } });
  const filter = encodeURIComponent(
    "payload.data.event.country.matches(payload.data.event.customer)",
  );
  const query = `?types=event.processed&filter=${filter}`;
  const expected = (prefix: string) => [
    `${prefix}m`,
    ...Array.from({ length: SENT_BEFORE_CUT }, (_, i) => `${prefix}${i}`),
  ];
  // One subscriber at a time: a pattern compiled for one is held for the next, costing it nothing.
  const socket = await denoClient(server.wsUrl(`${SUBSCRIBE}${query}`));
  let sse: SseReader | undefined;
  try {
    assert.equal((await socket.inbox.next()).type, "subscribed");
    await post(server, patternEvents("w"));
    const viaSocket: string[] = [];
    const closed = socket.inbox.closed.then((value) => ({ closed: value }));
    while (true) {
      const next = await within(Promise.race([socket.inbox.next(), closed]), 10_000);
      if ("closed" in next) {
        assert.deepEqual(next.closed, { code: 1008, reason });
        break;
      }
      assert.equal(next.type, "event.processed");
      viaSocket.push(next.data.event.id);
    }
    assert.deepEqual(viaSocket, expected("w"));

    sse = new SseReader(await openSse(server, query));
    assert.equal((await sse.next()).event, "subscribed");
    await post(server, patternEvents("s"));
    const viaSse: string[] = [];
    while (true) {
      const next = await sse.next(10_000);
      if (next.event === "closed") {
        assert.deepEqual(next.data, { type: "closed", reason });
        break;
      }
      assert.equal(next.event, "event.processed");
      viaSse.push(next.data.data.event.id);
    }
    assert.deepEqual(viaSse, expected("s"));
  } finally {
    await socket.close();
    await sse?.cancel().catch(() => {});
    await server.close();
  }
});
