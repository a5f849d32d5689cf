/**
 * A stream created at run time through one instance, used on another over
 * real sockets: WebSocket ingest finds it by its name (the lookup on a
 * miss), and a live subscription over SSE gets its results, as for a
 * config-file stream. The two instances share one memory store and
 * definition store, as instances share Redis.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { LiveHub } from "../../src/fanout/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import {
  MemoryDefinitionStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
} from "../../src/store/mod.ts";
import { KEYS } from "../_fixtures.ts";
import { denoClient, nodeClient, SseReader, within } from "../_live.ts";
import { redisTest, restClient } from "../_redis.ts";

const SIGNUPS = {
  counters: { perMinute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" } },
};

function instance(shared: { definitions: MemoryDefinitionStore; store: MemoryStore }) {
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions: shared.definitions,
  });
  const store = streams.wrap(shared.store);
  const live = new LiveHub(streams, store, { pollMs: 20, updateIntervalMs: 100 });
  return { streams, store, live };
}

Deno.test("A stream created on one instance ingests over WebSocket and is subscribed to over SSE on another", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const keys = await KeyRing.parse("");
  const a = instance(shared);
  const appA = createApp({ ...a, keys });
  const b = instance(shared);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    createApp({ ...b, keys }).fetch,
  );
  const base = `127.0.0.1:${server.addr.port}`;
  try {
    const created = await appA.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(SIGNUPS),
    });
    assert.equal(created.status, 201);
    assert.equal(b.streams.has("signups"), false);

    const client = await denoClient(`ws://${base}/v1/streams/signups/ws`);
    const response = await fetch(
      `http://${base}/v1/streams/signups/subscribe?types=event.processed`,
      {
        headers: { Accept: "text/event-stream" },
      },
    );
    assert.equal(response.status, 200);
    const reader = new SseReader(response);
    try {
      assert.equal((await reader.next()).event, "subscribed");
      client.socket.send(JSON.stringify([{ plan: "pro" }, { plan: "free" }]));
      const ack = await client.inbox.next();
      assert.deepEqual([ack.type, ack.accepted], ["ack", 2]);
      const first = await reader.next();
      assert.equal(first.event, "event.processed");
      assert.deepEqual(first.data.data.event, { plan: "pro" });
    } finally {
      await reader.cancel();
      await client.close();
    }
    const stats = await (await appA.request("/v1/streams/signups")).json();
    assert.equal(stats.stats.applied, 2);
  } finally {
    await a.live.close();
    await b.live.close();
    await server.shutdown();
  }
});

Deno.test("An open WebSocket follows its stream's changes at run time: a new definition applies to the next frame, a deleted stream refuses frames", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const a = instance(shared);
  const app = createApp({ ...a, keys: await KeyRing.parse("") });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const put = (body: unknown) =>
    app.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  try {
    assert.equal((await put(SIGNUPS)).status, 201);
    const client = await denoClient(`ws://127.0.0.1:${server.addr.port}/v1/streams/signups/ws`);
    try {
      client.socket.send(JSON.stringify([{ plan: "test" }]));
      assert.deepEqual(pick(await client.inbox.next()), ["ack", 1, 0]);
      // Replaced: the next frame on the same socket is filtered by the new transform.
      assert.equal(
        (await put({ ...SIGNUPS, transform: [{ filter: "event.plan != 'test'" }] })).status,
        200,
      );
      client.socket.send(JSON.stringify([{ plan: "test" }, { plan: "pro" }]));
      assert.deepEqual(pick(await client.inbox.next()), ["ack", 2, 1]);
      // Deleted: the socket's frames are refused, not written where nothing reads them.
      assert.equal((await app.request("/v1/streams/signups", { method: "DELETE" })).status, 204);
      client.socket.send(JSON.stringify([{ plan: "pro" }]));
      const refused = await client.inbox.next();
      assert.equal(refused.type, "error");
      assert.equal(refused.error.code, "stream_not_found");
    } finally {
      await client.close();
    }
  } finally {
    await a.live.close();
    await server.shutdown();
  }
});

Deno.test("A frame on an open WebSocket after its stream is deleted names the near stream to a key that may list streams, and none to an ingest-only key", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const a = instance(shared);
  const keys = await KeyRing.parse(`admin:${KEYS.admin},ingest:${KEYS.ingest}`);
  const app = createApp({ ...a, keys });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const admin = { Authorization: `Bearer ${KEYS.admin}` };
  const put = (name: string) =>
    app.request(`/v1/streams/${name}`, {
      method: "PUT",
      headers: { ...admin, "Content-Type": "application/json" },
      body: JSON.stringify(SIGNUPS),
    });
  const url = `ws://127.0.0.1:${server.addr.port}/v1/streams/signups/ws`;
  try {
    assert.equal((await put("signups")).status, 201);
    // Left when signups is deleted: one letter off, the stream a listing key meant.
    assert.equal((await put("signup")).status, 201);
    const lister = await denoClient(url, [`bearer.${KEYS.admin}`]);
    const ingester = await denoClient(url, [`bearer.${KEYS.ingest}`]);
    try {
      for (const client of [lister, ingester]) {
        client.socket.send(JSON.stringify([{ plan: "pro" }]));
        assert.deepEqual(pick(await client.inbox.next()), ["ack", 1, 0]);
      }
      const deleted = await app.request("/v1/streams/signups", {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(deleted.status, 204);
      const refused = [];
      for (const client of [lister, ingester]) {
        client.socket.send(JSON.stringify([{ plan: "pro" }]));
        const reply = await client.inbox.next();
        assert.equal(reply.type, "error", JSON.stringify(reply));
        assert.equal(reply.error.code, "stream_not_found");
        refused.push(reply.error.message);
      }
      assert.deepEqual(refused, [
        "Stream 'signups' does not exist (did you mean 'signup'?)",
        "Stream 'signups' does not exist",
      ]);
    } finally {
      await lister.close();
      await ingester.close();
    }
  } finally {
    await a.live.close();
    await server.shutdown();
  }
});

Deno.test("An open WebSocket from a page its stream's origins admitted refuses frames once a PUT removes the origin (origin_not_allowed), as HTTP ingest then does", async () => {
  const shop = "https://shop.example";
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const a = instance(shared);
  const app = createApp({ ...a, keys: await KeyRing.parse("") });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const put = (origins: string[]) =>
    app.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...SIGNUPS, origins }),
    });
  const post = () =>
    fetch(`http://127.0.0.1:${server.addr.port}/v1/streams/signups/events`, {
      method: "POST",
      headers: { Origin: shop, "Content-Type": "application/json" },
      body: JSON.stringify({ plan: "pro" }),
    });
  try {
    assert.equal((await put([shop])).status, 201);
    const client = await nodeClient(`ws://127.0.0.1:${server.addr.port}/v1/streams/signups/ws`, {
      headers: { Origin: shop },
    });
    try {
      assert.equal(client.status, undefined, "upgraded: the stream's origins list the page");
      client.socket.send(JSON.stringify([{ plan: "pro" }]));
      assert.deepEqual(pick(await client.inbox.next()), ["ack", 1, 0]);
      // The stream no longer lists the page: HTTP ingest from it is refused, and so is the
      // socket's next frame, counting nothing; the socket stays open, as for a deleted key.
      assert.equal((await put(["https://other.example"])).status, 200);
      const refusedPost = await post();
      assert.equal(refusedPost.status, 403);
      assert.equal((await refusedPost.json()).error.code, "origin_not_allowed");
      client.socket.send(JSON.stringify([{ plan: "pro" }]));
      const refused = await client.inbox.next();
      assert.deepEqual([refused.type, refused.seq, refused.retryable, refused.error.code], [
        "error",
        2,
        false,
        "origin_not_allowed",
      ]);
      assert.match(refused.error.message, /'https:\/\/shop\.example'/);
      // Listed again: the same socket is taken again.
      assert.equal((await put([shop])).status, 200);
      client.socket.send(JSON.stringify([{ plan: "pro" }]));
      assert.deepEqual(pick(await client.inbox.next()), ["ack", 1, 0]);
      const stats = await (await app.request("/v1/streams/signups")).json();
      assert.equal(stats.stats.applied, 2);
    } finally {
      await client.close();
    }
  } finally {
    await a.live.close();
    await server.shutdown();
  }
});

function pick(ack: { type: string; accepted: number; filtered: number }) {
  return [ack.type, ack.accepted, ack.filtered];
}

Deno.test("A subscription ends when its stream is deleted, or deleted and created again (another stream's results)", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const keys = await KeyRing.parse("");
  const a = instance(shared);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    createApp({ ...a, keys, liveRoutes: { keyCheckMs: 20 } }).fetch,
  );
  const base = `127.0.0.1:${server.addr.port}`;
  const put = () =>
    fetch(`http://${base}/v1/streams/signups`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(SIGNUPS),
    });
  try {
    for (const recreate of [false, true]) {
      assert.equal((await put()).status, 201);
      const socket = await denoClient(`ws://${base}/v1/streams/signups/subscribe`);
      assert.equal((await socket.inbox.next()).type, "subscribed");
      const sse = new SseReader(
        await fetch(`http://${base}/v1/streams/signups/subscribe`, {
          headers: { Accept: "text/event-stream" },
        }),
      );
      assert.equal((await sse.next()).event, "subscribed");
      const removed = await fetch(`http://${base}/v1/streams/signups`, { method: "DELETE" });
      assert.equal(removed.status, 204);
      if (recreate) assert.equal((await put()).status, 201);
      // Created again before a check saw the gap, or after one did.
      const reason = recreate
        ? /^Stream 'signups' was deleted( and created again: subscribe again)?$/
        : /^Stream 'signups' was deleted$/;
      const closed = await within(socket.inbox.closed, 5_000);
      assert.equal(closed.code, 1008);
      assert.match(closed.reason, reason);
      const last = await sse.next();
      assert.equal(last.event, "closed");
      assert.match((last.data as { reason: string }).reason, reason);
      if (recreate) {
        await fetch(`http://${base}/v1/streams/signups`, { method: "DELETE" }).then((res) =>
          res.body?.cancel()
        );
      }
    }
  } finally {
    await a.live.close();
    await server.shutdown();
  }
});

Deno.test("README resuming: an id of the stream's log from before it was deleted and created again is refused (resumed: false), not replayed from the new log as if nothing were missed", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const a = instance(shared);
  const app = createApp({ ...a, keys: await KeyRing.parse("") });
  const put = async () => {
    const res = await app.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(SIGNUPS),
    });
    assert.equal(res.status, 201);
  };
  const post = async (plan: string) => {
    const res = await app.request("/v1/streams/signups/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ plan }]),
    });
    assert.equal(res.status, 202);
  };
  const subscribe = async (lastEventId?: string) => {
    const sse = new SseReader(
      await app.request("/v1/streams/signups/subscribe?types=event.processed", {
        headers: {
          Accept: "text/event-stream",
          ...(lastEventId === undefined ? {} : { "Last-Event-ID": lastEventId }),
        },
      }),
    );
    const hello = await sse.next();
    assert.equal(hello.event, "subscribed");
    return { sse, hello: hello.data as { resumed?: boolean; reason?: string } };
  };
  const readers: SseReader[] = [];
  try {
    await put();
    const first = await subscribe();
    readers.push(first.sse);
    await post("seen");
    const seen = await first.sse.next();
    assert.equal(seen.event, "event.processed");
    // The subscriber's connection breaks here; "missed" is logged after what it saw.
    await post("missed");
    assert.equal((await first.sse.next()).event, "event.processed");
    await app.request("/v1/streams/signups", { method: "DELETE" });
    await put();
    const keeper = await subscribe();
    readers.push(keeper.sse);
    await post("after");
    const after = await keeper.sse.next();
    // It comes back with the id it saw: "missed" went with the old log.
    const back = await subscribe(seen.id);
    readers.push(back.sse);
    assert.equal(back.hello.resumed, false);
    assert.equal(
      back.hello.reason,
      `Cannot resume after '${seen.id}': the result log of stream 'signups' starts at '${after.id}' and never had that id (its stream deleted and created again, or the store's log lost)`,
    );
  } finally {
    for (const sse of readers) await sse.cancel();
    await a.live.close();
  }
});

Deno.test("A subscriber behind when its stream is deleted is closed for the deletion, not as too slow, though its catch-up finds the log gone before the next check", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const a = instance(shared);
  // The check every second (the default) comes after the catch-up's next read.
  const app = createApp({
    ...a,
    keys: await KeyRing.parse(""),
    liveRoutes: { maxBufferedBytes: 4096 },
  });
  try {
    const created = await app.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(SIGNUPS),
    });
    assert.equal(created.status, 201);
    const sse = new SseReader(
      await app.request("/v1/streams/signups/subscribe?types=event.processed", {
        headers: { Accept: "text/event-stream" },
      }),
    );
    assert.equal((await sse.next()).event, "subscribed");
    // Unread, the subscriber falls behind: what follows waits in the result log.
    const padding = "p".repeat(1_000);
    for (let batch = 0; a.live.stats.behind === 0; batch++) {
      assert.ok(batch < 100, "the subscriber never fell behind");
      const res = await app.request("/v1/streams/signups/events", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Array.from({ length: 10 }, () => ({ plan: padding }))),
      });
      assert.equal(res.status, 202);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const removed = await app.request("/v1/streams/signups", { method: "DELETE" });
    assert.equal(removed.status, 204);
    // It reads again, at once: the hub's catch-up reads the log (gone) before a check comes.
    const rest = await sse.rest();
    const last = rest.at(-1)!;
    assert.equal(last.event, "closed");
    assert.equal((last.data as { reason: string }).reason, "Stream 'signups' was deleted");
    assert.ok(rest.slice(0, -1).every((event) => event.event === "event.processed"));
  } finally {
    await a.live.close();
  }
});

Deno.test("A WebSocket subscriber behind when its stream is deleted is closed 1008 for the deletion, not as too slow", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const a = instance(shared);
  const app = createApp({
    ...a,
    keys: await KeyRing.parse(""),
    liveRoutes: { maxBufferedBytes: 64 * 1024 },
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  const created = await app.request("/v1/streams/signups", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(SIGNUPS),
  });
  assert.equal(created.status, 201);
  const socket = await nodeClient(
    `ws://127.0.0.1:${server.addr.port}/v1/streams/signups/subscribe?types=event.processed`,
  );
  try {
    assert.equal((await socket.inbox.next()).type, "subscribed");
    // Unread, the socket's buffers fill and the subscriber falls behind.
    socket.socket.pause();
    const padding = "p".repeat(4_000);
    for (let batch = 0; a.live.stats.behind === 0; batch++) {
      assert.ok(batch < 200, "the subscriber never fell behind");
      const res = await app.request("/v1/streams/signups/events", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Array.from({ length: 100 }, () => ({ plan: padding }))),
      });
      assert.equal(res.status, 202);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const removed = await app.request("/v1/streams/signups", { method: "DELETE" });
    assert.equal(removed.status, 204);
    socket.socket.resume();
    const closed = await within(socket.inbox.closed, 10_000);
    assert.deepEqual(closed, { code: 1008, reason: "Stream 'signups' was deleted" });
  } finally {
    socket.socket.terminate();
    await socket.inbox.closed;
    await a.live.close();
    await server.shutdown();
  }
});

const TWO_COUNTERS = {
  counters: {
    perMinute: SIGNUPS.counters.perMinute,
    total: { window: { tumbling: "1h" }, aggregate: "count" },
  },
};

/**
 * Subscribes on `base` over WebSocket and SSE to `signups` with `query`, and waits for `subscribed`.
 */
async function subscribeBoth(base: string, query: string) {
  const socket = await denoClient(`ws://${base}/v1/streams/signups/subscribe${query}`);
  assert.equal((await socket.inbox.next()).type, "subscribed");
  const sse = new SseReader(
    await fetch(`http://${base}/v1/streams/signups/subscribe${query}`, {
      headers: { Accept: "text/event-stream" },
    }),
  );
  assert.equal((await sse.next()).event, "subscribed");
  return { socket, sse };
}

/**
 * Defect 4 of probe 10: `PUT` on `writer` removes the followed counter `total`; the subscriptions
 * to it on `reader` end with the reason, those to the stream or to `perMinute` still follow.
 */
async function removedCounterEndsItsSubscriptions(
  writer: { app: { request: (path: string, init: RequestInit) => Response | Promise<Response> } },
  reader: { base: string; streams: StreamRegistry },
) {
  const put = (body: unknown) =>
    writer.app.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  assert.equal((await put(TWO_COUNTERS)).status, 201);
  await waitFor(() => reader.streams.get("signups")?.counters.length === 2);
  const removed = await subscribeBoth(reader.base, "?counter=total");
  const kept = await subscribeBoth(reader.base, "?counter=perMinute");
  const whole = await subscribeBoth(reader.base, "");
  try {
    assert.equal((await put(SIGNUPS)).status, 200);
    const reason = /^Counter 'total' was removed from stream 'signups'$/;
    const closed = await within(removed.socket.inbox.closed, 5_000);
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, reason);
    const last = await within(removed.sse.next(), 5_000);
    assert.equal(last.event, "closed");
    assert.match((last.data as { reason: string }).reason, reason);
    // The others still follow: an event ingested now reaches them.
    const posted = await writer.app.request("/v1/streams/signups/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ plan: "pro" }]),
    });
    assert.equal(posted.status, 202);
    await posted.body?.cancel();
    for (const { socket, sse } of [kept, whole]) {
      const message = await within(socket.inbox.next(), 5_000);
      assert.equal(message.type, "window.updated");
      assert.equal(message.data.counter, "perMinute");
      const event = await within(sse.next(), 5_000);
      assert.equal(event.event, "window.updated");
    }
  } finally {
    for (const { socket, sse } of [removed, kept, whole]) {
      await socket.close();
      await sse.cancel();
    }
  }
}

async function waitFor(done: () => boolean) {
  for (let tries = 0; !done(); tries++) {
    if (tries > 500) throw new Error("Timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("A subscription to a counter that a PUT removes ends with the reason; others stay open (memory store)", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const keys = await KeyRing.parse("");
  const a = instance(shared);
  const app = createApp({ ...a, keys, liveRoutes: { keyCheckMs: 20 } });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, app.fetch);
  try {
    await removedCounterEndsItsSubscriptions({ app }, {
      base: `127.0.0.1:${server.addr.port}`,
      streams: a.streams,
    });
  } finally {
    await a.live.close();
    await server.shutdown();
  }
});

redisTest(
  "A subscription to a counter that a PUT on another instance removes ends with the reason; others stay open (Redis)",
  async (fixture) => {
    const keys = await KeyRing.parse("");
    const redisInstance = () => {
      const redis = restClient(fixture);
      const streams = new StreamRegistry(compileConfig({ streams: {} }), {
        definitions: new RedisDefinitionStore(redis),
        pollMs: 20,
      });
      const store = streams.wrap(new RedisStore(redis));
      const live = new LiveHub(streams, store, { pollMs: 20, updateIntervalMs: 100, shared: true });
      return { streams, store, live };
    };
    const a = redisInstance();
    const b = redisInstance();
    b.streams.startPolling();
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      createApp({ ...b, keys, liveRoutes: { keyCheckMs: 20 } }).fetch,
    );
    try {
      await removedCounterEndsItsSubscriptions({ app: createApp({ ...a, keys }) }, {
        base: `127.0.0.1:${server.addr.port}`,
        streams: b.streams,
      });
    } finally {
      b.streams.stop();
      await a.live.close();
      await b.live.close();
      await server.shutdown();
    }
  },
);

Deno.test("A subscription ends saying so when another deployment's config file takes its stream's name", async () => {
  const definitions = new MemoryDefinitionStore();
  const shared = { definitions, store: new MemoryStore({ definitions }) };
  const keys = await KeyRing.parse("");
  const a = instance(shared);
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    createApp({ ...a, keys, liveRoutes: { keyCheckMs: 20 } }).fetch,
  );
  const base = `127.0.0.1:${server.addr.port}`;
  try {
    const created = await fetch(`http://${base}/v1/streams/signups`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(SIGNUPS),
    });
    assert.equal(created.status, 201);
    await created.body?.cancel();
    const { socket, sse } = await subscribeBoth(base, "");
    await new StreamRegistry(compileConfig({ streams: { signups: SIGNUPS } }), { definitions })
      .registerConfig();
    await a.streams.poll();
    const reason =
      /^Stream 'signups' is now defined in another deployment's config file, and not served here$/;
    const closed = await within(socket.inbox.closed, 5_000);
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, reason);
    const last = await within(sse.next(), 5_000);
    assert.equal(last.event, "closed");
    assert.match((last.data as { reason: string }).reason, reason);
  } finally {
    await a.live.close();
    await server.shutdown();
  }
});
