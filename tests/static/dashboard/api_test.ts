/**
 * The dashboard's talk to the API (static/dashboard/api.js), run in Deno with a recording `fetch`
 * and fake timers: how a live subscription reconnects, resumes and stops.
 */
import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { follow, forgetKey, rememberKey } from "../../../static/dashboard/api.js";

/** A request the page made: when (fake clock), where, and its `Authorization`. */
interface Asked {
  at: number;
  url: string;
  authorization: string | undefined;
}

/**
 * `follow("orders", {types})` with the key "k-dashboard" on a fake clock, `fetch` answering each
 * request with the next of `answers` (then `otherwise`): what it asked, the messages' types and the
 * states it told, and `end()`, which stops it and puts the clock, `fetch` and the key back.
 */
function following(
  types: string[],
  answers: Array<Response | Promise<Response>>,
  otherwise: () => Response | Promise<Response>,
) {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const original = globalThis.fetch;
  const asked: Asked[] = [];
  globalThis.fetch = ((url: string, init: { headers: Record<string, string> }) => {
    asked.push({ at: clock.now, url, authorization: init.headers.Authorization });
    return Promise.resolve(answers.shift() ?? otherwise());
  }) as typeof fetch;
  rememberKey("k-dashboard");
  const messages: string[] = [];
  const states: Array<[string, boolean]> = [];
  const stop = follow("orders", {
    types,
    onMessage: (payload: { type: string }) => messages.push(payload.type),
    onState: (state: string, connected: boolean) => states.push([state, connected]),
  });
  return {
    clock,
    asked,
    messages,
    states,
    stop,
    end() {
      stop();
      forgetKey();
      globalThis.fetch = original;
      clock.uninstall();
    },
  };
}

/** An SSE answer carrying `text`, then ended. */
function sse(text: string): Response {
  return new Response(text, { headers: { "Content-Type": "text/event-stream" } });
}

Deno.test("a subscription answered 503 is asked again after 1 s, backing off to 15 s, with the key in the header only", async () => {
  const run = following(
    ["window.updated"],
    [],
    () => Response.json({ error: { code: "store_unavailable" } }, { status: 503 }),
  );
  try {
    await run.clock.tickAsync(60_000);
    const { asked } = run;
    const gaps = asked.slice(1).map((request, i) => request.at - asked[i].at);
    assert.deepEqual(gaps.slice(0, 7), [1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000]);
    assert.equal(asked[0].url, "/v1/streams/orders/subscribe?types=window.updated");
    assert.ok(asked.every((request) => request.authorization === "Bearer k-dashboard"));
    assert.deepEqual(run.states[0], ["reconnecting (subscription answered 503)", false]);
  } finally {
    run.end();
  }
});

Deno.test("a followed stream says why the server closed it, resumes after the last result, and stops at a revoked key's 401", async () => {
  const run = following(["window.closed"], [
    sse(
      'event: subscribed\ndata: {"type":"subscribed"}\n\n' +
        'id: 17-0\nevent: window.closed\ndata: {"type":"window.closed","data":{}}\n\n' +
        'event: closed\ndata: {"type":"closed","reason":"shutting down"}\n\n',
    ),
    Response.json({ error: { code: "unauthorized", message: "no" } }, { status: 401 }),
  ], () => new Response(null, { status: 500 }));
  try {
    await run.clock.tickAsync(60_000);
    assert.deepEqual(
      run.messages,
      ["subscribed", "window.closed"],
      "the closed message is a state",
    );
    assert.deepEqual(run.states, [
      ["live", true],
      ["reconnecting: closed by the server: shutting down", false],
      ["stopped (subscription answered 401 unauthorized)", false],
    ]);
    assert.equal(run.asked.length, 2, "no retry after the 401");
    assert.equal(new URL(run.asked[1].url, "http://page").searchParams.get("after"), "17-0");
  } finally {
    run.end();
  }
});

Deno.test("a followed stream answered 404 (created on another instance, unknown here for 5 s) is followed again 6 s later", async () => {
  const notFound = () =>
    Response.json({ error: { code: "stream_not_found", message: "no" } }, { status: 404 });
  // After the 404, a connection that stays open, answering nothing more.
  const run = following(
    ["window.closed"],
    [notFound(), sse('event: subscribed\ndata: {"type":"subscribed"}\n\n')],
    () => new Promise<Response>(() => {}),
  );
  try {
    await run.clock.tickAsync(5_900);
    assert.deepEqual(run.states, [[
      "reconnecting (subscription answered 404 stream_not_found)",
      false,
    ]]);
    assert.equal(run.asked.length, 1);
    await run.clock.tickAsync(200);
    assert.deepEqual(run.asked.map((request) => request.at), [0, 6_000]);
    assert.deepEqual(run.states[1], ["live", true]);
  } finally {
    run.end();
  }
  // Stopped while waiting: not asked again.
  const stopped = following(["window.closed"], [], notFound);
  try {
    await stopped.clock.tickAsync(1_000);
    stopped.stop();
    await stopped.clock.tickAsync(60_000);
    assert.deepEqual(stopped.asked.map((request) => request.at), [0]);
  } finally {
    stopped.end();
  }
});

Deno.test("a followed stream skips a message whose data is no JSON object, logging it, and stays connected: no reconnection loop", async () => {
  const logged: unknown[] = [];
  const error = console.error;
  console.error = (value: unknown) => logged.push(value);
  // A connection that carries `text` and stays open.
  const open = (text: string) =>
    new Response(
      new ReadableStream({
        start: (controller) => controller.enqueue(new TextEncoder().encode(text)),
      }),
      { headers: { "Content-Type": "text/event-stream" } },
    );
  const run = following(["window.closed"], [
    // Ends after a message that is no JSON: resumed after it, not before (it would come again).
    sse(
      'event: subscribed\ndata: {"type":"subscribed"}\n\n' +
        "id: 5-0\nevent: window.closed\ndata: {not json\n\n",
    ),
    open(
      'event: subscribed\ndata: {"type":"subscribed"}\n\n' +
        "id: 6-0\nevent: window.closed\ndata: null\n\n" +
        'id: 7-0\nevent: window.closed\ndata: {"type":"window.closed","data":{}}\n\n',
    ),
  ], () => open('event: subscribed\ndata: {"type":"subscribed"}\n\n'));
  try {
    await run.clock.tickAsync(60_000);
    assert.deepEqual(run.messages, ["subscribed", "subscribed", "window.closed"]);
    assert.equal(run.asked.length, 2, "asked again once, for the connection that ended");
    assert.equal(new URL(run.asked[1].url, "http://page").searchParams.get("after"), "5-0");
    assert.deepEqual(run.states.at(-1), ["live", true]);
    assert.deepEqual(run.states.filter(([, connected]) => !connected), [
      ["reconnecting (the subscription to 'orders' ended)", false],
    ]);
    assert.equal(logged.length, 2);
    assert.match(String(logged[0]), /window\.closed 5-0\): \{not json$/);
    assert.match(String(logged[1]), /window\.closed 6-0\): null$/);
  } finally {
    console.error = error;
    run.end();
  }
});
