/**
 * The dashboard's talk to the API (static/dashboard/api.js), run in Deno with a recording `fetch`
 * and fake timers: how a live subscription reconnects, resumes and stops.
 */
import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { follow, forgetKey, rememberKey } from "../../../static/dashboard/api.js";

Deno.test("a subscription answered 503 is asked again after 1 s, backing off to 15 s, with the key in the header only", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const original = globalThis.fetch;
  const asked: Array<{ at: number; url: string; authorization: string | undefined }> = [];
  globalThis.fetch = ((url: string, init: { headers: Record<string, string> }) => {
    asked.push({ at: clock.now, url, authorization: init.headers.Authorization });
    return Promise.resolve(
      Response.json({ error: { code: "store_unavailable" } }, { status: 503 }),
    );
  }) as typeof fetch;
  rememberKey("k-dashboard");
  const states: string[] = [];
  const stop = follow("orders", {
    types: ["window.updated"],
    onMessage: () => {},
    onState: (state: string) => states.push(state),
  });
  try {
    await clock.tickAsync(60_000);
    const gaps = asked.slice(1).map((request, i) => request.at - asked[i].at);
    assert.deepEqual(gaps.slice(0, 7), [1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000]);
    assert.equal(asked[0].url, "/v1/streams/orders/subscribe?types=window.updated");
    assert.ok(asked.every((request) => request.authorization === "Bearer k-dashboard"));
    assert.equal(states[0], "reconnecting (subscription answered 503)");
  } finally {
    stop();
    forgetKey();
    globalThis.fetch = original;
    clock.uninstall();
  }
});

Deno.test("a followed stream says why the server closed it, resumes after the last result, and stops at a revoked key's 401", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const original = globalThis.fetch;
  const asked: string[] = [];
  const sse = (text: string) =>
    new Response(text, { headers: { "Content-Type": "text/event-stream" } });
  const answers = [
    sse(
      'event: subscribed\ndata: {"type":"subscribed"}\n\n' +
        'id: 17-0\nevent: window.closed\ndata: {"type":"window.closed","data":{}}\n\n' +
        'event: closed\ndata: {"type":"closed","reason":"shutting down"}\n\n',
    ),
    Response.json({ error: { code: "unauthorized", message: "no" } }, { status: 401 }),
  ];
  globalThis.fetch = ((url: string) => {
    asked.push(url);
    return Promise.resolve(answers.shift() ?? new Response(null, { status: 500 }));
  }) as typeof fetch;
  rememberKey("k-dashboard");
  const states: Array<[string, boolean]> = [];
  const messages: string[] = [];
  const stop = follow("orders", {
    types: ["window.closed"],
    onMessage: (payload: { type: string }) => messages.push(payload.type),
    onState: (state: string, connected: boolean) => states.push([state, connected]),
  });
  try {
    await clock.tickAsync(60_000);
    assert.deepEqual(messages, ["subscribed", "window.closed"], "the closed message is a state");
    assert.deepEqual(states, [
      ["live", true],
      ["reconnecting: closed by the server: shutting down", false],
      ["stopped (subscription answered 401 unauthorized)", false],
    ]);
    assert.equal(asked.length, 2, "no retry after the 401");
    assert.equal(new URL(asked[1], "http://page").searchParams.get("after"), "17-0");
  } finally {
    stop();
    forgetKey();
    globalThis.fetch = original;
    clock.uninstall();
  }
});

Deno.test("a followed stream answered 404 (created on another instance, unknown here for 5 s) is followed again 6 s later", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const original = globalThis.fetch;
  const asked: number[] = [];
  const answers = [
    Response.json({ error: { code: "stream_not_found", message: "no" } }, { status: 404 }),
    new Response('event: subscribed\ndata: {"type":"subscribed"}\n\n', {
      headers: { "Content-Type": "text/event-stream" },
    }),
  ];
  globalThis.fetch = (() => {
    asked.push(clock.now);
    // Then the connection stays open, answering nothing.
    return Promise.resolve(answers.shift() ?? new Promise<Response>(() => {}));
  }) as typeof fetch;
  rememberKey("k-dashboard");
  const states: Array<[string, boolean]> = [];
  const stop = follow("orders", {
    types: ["window.closed"],
    onMessage: () => {},
    onState: (state: string, connected: boolean) => states.push([state, connected]),
  });
  try {
    await clock.tickAsync(5_900);
    assert.deepEqual(states, [[
      "reconnecting (subscription answered 404 stream_not_found)",
      false,
    ]]);
    assert.equal(asked.length, 1);
    await clock.tickAsync(200);
    assert.deepEqual(asked, [0, 6_000]);
    assert.deepEqual(states[1], ["live", true]);
  } finally {
    stop();
    forgetKey();
    globalThis.fetch = original;
    clock.uninstall();
  }
  // Stopped while waiting: not asked again.
  const again = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const none: number[] = [];
  globalThis.fetch = (() => {
    none.push(again.now);
    return Promise.resolve(
      Response.json({ error: { code: "stream_not_found" } }, { status: 404 }),
    );
  }) as typeof fetch;
  try {
    const stopNow = follow("orders", { types: [], onMessage: () => {}, onState: () => {} });
    await again.tickAsync(1_000);
    stopNow();
    await again.tickAsync(60_000);
    assert.deepEqual(none, [0]);
  } finally {
    globalThis.fetch = original;
    again.uninstall();
  }
});
