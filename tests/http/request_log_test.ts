/**
 * The request log: one JSON line per request with its fields, errors with
 * their cause, levels by status.
 */
import assert from "node:assert/strict";
import { withContext } from "@logtape/logtape";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { Hono } from "hono";
import { jsonWithRequestId } from "../../src/http/request_id.ts";
import { annotateRequest, levelOfStatus, logRequest } from "../../src/http/request_log.ts";
import { causeText, MAX_QUOTED_CHARACTERS, REDACTED } from "../../src/telemetry/logging.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { type Store, StoreUnavailableError } from "../../src/store/types.ts";
import { at, KEYS, NOW, postEvents, TEST_CONFIG, testApp } from "../_fixtures.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";
import { setup } from "../fanout/webhooks/_setup.ts";

/** A memory store whose applyBatch fails as an unreachable Redis does, and whose stats throw a bug. */
function failingStore(): Store {
  const inner = new MemoryStore({ now: () => NOW });
  return new Proxy(inner, {
    get(target, property) {
      if (property === "applyBatch") {
        return () => {
          throw new StoreUnavailableError("Redis is unavailable (applyBatch): connection refused", {
            outcome: "not_applied",
            cause: new TypeError("error sending request: Connection refused (os error 111)"),
          });
        };
      }
      if (property === "stats") {
        return () => {
          throw new Error("stats exploded");
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
}

Deno.test("requestLog() writes one JSON line per request: method, path, status, duration, request id, stream, ingest counts", async () => {
  const { app } = await testApp();
  await writtenLogs(async (lines) => {
    const res = await app.request("/v1/streams/orders/events?debug=1", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Request-Id": "req-1" },
      body: JSON.stringify([
        { id: "a", ts: at(1), country: "DE" },
        { id: "a", ts: at(1), country: "DE" },
        { id: "b", ts: at(2), test: true },
        { ts: at(3) },
      ]),
    });
    assert.equal(res.status, 202);
    await res.body?.cancel();
    await (await app.request("/healthz")).body?.cancel();

    const http = jsonLines(lines, "edgestream.http");
    assert.equal(http.length, 2, JSON.stringify(http));
    const [ingest, health] = http;
    assert.equal(typeof ingest.durationMs, "number");
    assert.ok(ingest.durationMs >= 0);
    assert.equal(typeof ingest["@timestamp"], "string");
    assert.deepEqual(
      { ...ingest, durationMs: 0, "@timestamp": "" },
      {
        "@timestamp": "",
        level: "info",
        logger: "edgestream.http",
        message: `POST /v1/streams/orders/events 202 ${ingest.durationMs} ms`,
        method: "POST",
        path: "/v1/streams/orders/events",
        status: 202,
        durationMs: 0,
        requestId: "req-1",
        stream: "orders",
        accepted: 3,
        duplicates: 1,
        late: 0,
        filtered: 1,
        rejected: 1,
      },
    );
    assert.equal(health.path, "/healthz");
    assert.equal(health.status, 200);
    assert.equal(health.stream, undefined);
    assert.match(health.requestId, /^[0-9a-f-]{36}$/);
    // Info lines go to stdout (console.info), one line each.
    assert.deepEqual(lines.slice(0, 2).map((line) => line.method), ["info", "info"]);
    assert.ok(lines.every((line) => !line.text.includes("\n")));
  });
});

Deno.test("requestLog() gives a failed request's error and cause: 4xx at info, 503 at warning, 500 at error with the stack", async () => {
  const { app } = await testApp({ store: failingStore() });
  await writtenLogs(async (lines) => {
    const unavailable = await postEvents(app, [{ id: "x", ts: at(1) }]);
    assert.equal(unavailable.status, 503);
    const crashed = await app.request("/v1/streams");
    assert.equal(crashed.status, 500);
    const missing = await app.request("/v1/streams/nope");
    assert.equal(missing.status, 404);
    const badJson = await postEvents(app, "{", { raw: true });
    assert.equal(badJson.status, 400);
    for (const res of [unavailable, crashed, missing, badJson]) await res.body?.cancel();

    const [store, bug, notFound, invalid] = jsonLines(lines, "edgestream.http");
    assert.equal(store.level, "warning");
    assert.equal(store.status, 503);
    assert.equal(store.stream, "orders");
    assert.equal(store.error.code, "store_unavailable");
    assert.match(store.error.message, /^Redis is unavailable .*nothing was applied$/);
    assert.equal(
      store.cause,
      "StoreUnavailableError: Redis is unavailable (applyBatch): connection refused; caused by TypeError: error sending request: Connection refused (os error 111)",
    );

    assert.equal(bug.level, "error");
    assert.deepEqual(bug.error, { code: "internal_error", message: "Internal server error" });
    assert.equal(bug.cause.name, "Error");
    assert.equal(bug.cause.message, "stats exploded");
    assert.match(bug.cause.stack, /stats exploded\n\s+at /);

    assert.equal(notFound.level, "info");
    assert.equal(notFound.error.code, "stream_not_found");
    assert.equal(notFound.cause, undefined);

    assert.equal(invalid.level, "info");
    assert.equal(invalid.error.code, "invalid_json");

    // Warnings and errors go to stderr (console.warn, console.error).
    const methods = lines.map((line) => [JSON.parse(line.text).status, line.method]);
    assert.deepEqual(methods.filter(([status]) => status >= 500), [[503, "warn"], [500, "error"]]);
  });
});

Deno.test("levelOfStatus() is error for 5xx but 503, warning for 503, info for the rest", () => {
  assert.deepEqual(
    [200, 202, 101, 302, 400, 404, 421, 429, 500, 502, 503, 504].map(levelOfStatus),
    [
      "info",
      "info",
      "info",
      "info",
      "info",
      "info",
      "info",
      "info",
      "error",
      "error",
      "warning",
      "error",
    ],
  );
});

Deno.test("causeText() follows an error's causes in one line", () => {
  const error = new RangeError("outer", { cause: new TypeError("inner", { cause: "text" }) });
  assert.equal(
    causeText(error),
    "RangeError: outer; caused by TypeError: inner; caused by text",
  );
  assert.equal(causeText(undefined), undefined);
});

Deno.test("causeText() says once a cause that reads as the error it caused (an error wrapped again with its own message)", () => {
  const refused = new TypeError("connect ECONNREFUSED 127.0.0.1:6379");
  const inner = new StoreUnavailableError("Redis is unavailable (getStream): refused", {
    cause: refused,
  });
  // What the stream registry throws for a read: the same error, its outcome made not_applied.
  const outer = new StoreUnavailableError(inner.message, { cause: inner, outcome: "not_applied" });
  assert.equal(
    causeText(outer),
    "StoreUnavailableError: Redis is unavailable (getStream): refused; caused by TypeError: connect ECONNREFUSED 127.0.0.1:6379",
  );
});

Deno.test("requestLog() marks an Idempotency-Key replay, and records logged while serving carry the request id", async () => {
  const streams = compileConfig(TEST_CONFIG);
  const app = createApp({
    streams,
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
    observers: [() => {
      throw new Error("observer broke");
    }],
  });
  await writtenLogs(async (lines) => {
    for (let i = 0; i < 2; i++) {
      const res = await app.request("/v1/streams/orders/events", {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          "Idempotency-Key": "batch-1",
          "X-Request-Id": `idem-${i}`,
        },
        body: JSON.stringify({ id: "i1", ts: at(1) }),
      });
      assert.equal(res.status, 202);
      await res.body?.cancel();
    }
    const records = jsonLines(lines);
    const requests = records.filter((line) => line.logger === "edgestream.http");
    assert.deepEqual(requests.map((line) => [line.requestId, line.replayed]), [
      ["idem-0", undefined],
      ["idem-1", true],
    ]);
    const failure = records.find((line) => line.logger === "edgestream.ingest");
    assert.equal(failure.level, "error");
    assert.equal(failure.message, "Ingest observer failed on stream orders: Error: observer broke");
    assert.equal(failure.requestId, "idem-0");
    assert.match(failure.error.stack, /observer broke/);
  });
});

Deno.test("requestLog() counts every rejected event of a replay whose stored list was shortened, as of its first reply", async () => {
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
  });
  // 150 rejected events: more than a stored reply lists.
  const body = JSON.stringify([
    { id: "ok", ts: at(1) },
    ...Array.from({ length: 150 }, () => ({ ts: at(1) })),
  ]);
  await writtenLogs(async (lines) => {
    const replies = [];
    for (let i = 0; i < 2; i++) {
      const res = await app.request("/v1/streams/orders/events", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": "shortened" },
        body,
      });
      assert.equal(res.status, 202);
      replies.push(await res.json());
    }
    assert.ok(replies[1].rejectedOmitted > 0, "the replay's list is shortened");
    const requests = jsonLines(lines).filter((line) => line.logger === "edgestream.http");
    assert.deepEqual(requests.map((line) => [line.rejected, line.replayed]), [
      [150, undefined],
      [150, true],
    ]);
  });
});

Deno.test("requestLog() lines carry the context of a withContext the app is served in, on ingest and on other routes", async () => {
  const { app } = await testApp();
  await writtenLogs(async (lines) => {
    await withContext({ worker: 3 }, async () => {
      const ingest = await postEvents(app, [{ id: "a", ts: at(1), country: "DE" }]);
      assert.equal(ingest.status, 202);
      await ingest.body?.cancel();
      await (await app.request("/v1/streams")).body?.cancel();
    });
    const http = jsonLines(lines, "edgestream.http");
    assert.deepEqual(http.map((line) => [line.path, line.worker]), [
      ["/v1/streams/orders/events", 3],
      ["/v1/streams", 3],
    ]);
  });
});

Deno.test("logRequest() leaves a response made with its id (jsonWithRequestId) as it is: its headers are not read again", async () => {
  const app = new Hono();
  let made: Response | undefined;
  app.post("/x", (c) =>
    logRequest(c, () => {
      made = jsonWithRequestId(c, { ok: true }, 202);
      // Reading a made response's headers makes Deno send it the slower way.
      Object.defineProperty(made, "headers", {
        get() {
          throw new Error("headers read");
        },
      });
      c.res = made;
      return Promise.resolve();
    }));
  await writtenLogs(async (lines) => {
    const res = await app.request("/x", { method: "POST", headers: { "X-Request-Id": "made-1" } });
    assert.equal(res, made);
    assert.equal(await res.text(), '{"ok":true}');
    assert.equal(jsonLines(lines, "edgestream.http")[0]?.requestId, "made-1");
  });
  // Made outside the request log (no id): a plain JSON answer.
  const plain = new Hono();
  plain.get("/y", (c) => jsonWithRequestId(c, { ok: 1 }, 200));
  const res = await plain.request("/y");
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(res.headers.get("X-Request-Id"), null);
  assert.equal(await res.text(), '{"ok":1}');
});

Deno.test("logRequest() makes no line below the level written: a 202 at level warning reads the clock once and none of its fields, a 503 is written", async () => {
  let clockReads = 0;
  let fieldReads = 0;
  let status = 202;
  const app = new Hono();
  app.post("/v1/streams/orders/events", (c) =>
    logRequest(c, () => {
      annotateRequest(c, {
        get accepted() {
          fieldReads += 1;
          return 1;
        },
      });
      c.res = new Response(null, { status });
      return Promise.resolve();
    }, { now: () => ++clockReads }));
  const post = () => app.request("/v1/streams/orders/events", { method: "POST" });
  await writtenLogs(async (lines) => {
    const res = await post();
    assert.equal(res.status, 202);
    assert.ok(res.headers.get("X-Request-Id"));
    assert.equal(clockReads, 1);
    assert.equal(fieldReads, 0);
    assert.deepEqual(jsonLines(lines, "edgestream.http"), []);

    status = 503;
    assert.equal((await post()).status, 503);
    const [line] = jsonLines(lines, "edgestream.http");
    assert.deepEqual([line?.level, line?.status, line?.accepted], ["warning", 503, 1]);
  }, { level: "warning" });
  // At `info` the 202's line is made whole, the clock read again for its duration.
  status = 202;
  clockReads = 0;
  await writtenLogs(async (lines) => {
    await post();
    assert.equal(clockReads, 2);
    assert.equal(jsonLines(lines, "edgestream.http")[0]?.accepted, 1);
  }, { level: "info" });
});

Deno.test("a refused request's log line holds the error message as the client got it, hints and all", async () => {
  const { app } = await testApp({ auth: true });
  await writtenLogs(async (lines) => {
    const res = await postEvents(app, [{ id: "a", ts: at(1) }]);
    assert.equal(res.status, 401);
    const { error } = await res.json();
    // The hint names the query parameter a publishable key may use: not a secret to redact.
    assert.match(error.message, /'\?key=<pk_…>'/);
    const line = jsonLines(lines, "edgestream.http").at(-1)!;
    assert.deepEqual(line.error, { code: error.code, message: error.message });
  });
});

Deno.test("a request line holds no key its path carries partly percent-encoded, nor a key query parameter whose '?' is encoded", async () => {
  const { app } = await testApp({ auth: true });
  // A key with a reserved character, which Hono leaves percent-encoded in the path it gives.
  const key = "k-0123456789+abcdef";
  await writtenLogs(async (lines) => {
    for (
      const path of [
        "/v1/streams/orders/k-0123456789%2babcdef",
        "/v1/streams/orders/events%3Fkey=pk_Xq3v%2Dpublishable",
      ]
    ) {
      const res = await app.request(path, { headers: { Authorization: `Bearer ${KEYS.read}` } });
      assert.equal(res.status, 404);
      await res.body?.cancel();
    }
    const [reserved, query] = jsonLines(lines, "edgestream.http");
    assert.equal(reserved.path, `/v1/streams/orders/${REDACTED}`);
    assert.equal(
      reserved.message,
      `GET /v1/streams/orders/${REDACTED} 404 ${reserved.durationMs} ms`,
    );
    assert.equal(query.path, `/v1/streams/orders/events%3Fkey=${REDACTED}`);
    const text = lines.map((line) => line.text).join("\n");
    assert.ok(!text.includes("0123456789"), text);
    assert.ok(!text.includes("publishable"), text);
  }, { secrets: [key, KEYS.read] });
});

Deno.test("a body that is not JSON is refused, in the reply and its log line, with where it stops being JSON but none of its text", async () => {
  const ctx = await setup();
  try {
    await writtenLogs(async (lines) => {
      const bodies: [string, string][] = [
        [
          "/v1/webhooks",
          '{"url":"http://127.0.0.1:9/a","headers":{"X-Api-Key":s3cr3t-value-12345}}',
        ],
        ["/v1/streams/orders/events", '{"id":"a","email":ada@example.org}'],
      ];
      for (const [path, body] of bodies) {
        const res = await ctx.app.request(path, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body,
        });
        assert.equal(res.status, 400);
        const { error } = await res.json();
        assert.equal(error.code, "invalid_json");
        assert.match(
          error.message,
          /^Body is not valid JSON: Unexpected character at line 1, column \d+$/,
        );
        const line = jsonLines(lines, "edgestream.http").at(-1)!;
        assert.deepEqual(line.error, { code: "invalid_json", message: error.message });
      }
      const text = lines.map((line) => line.text).join("\n");
      for (const part of ["s3cr3t", "Api-Key", "ada@", "example"]) {
        assert.ok(!text.includes(part), text);
      }
    });
  } finally {
    await ctx.close();
  }
});

Deno.test("a 60,000-character method is quoted within bounds in the log line and in the 404, 405 and 403 messages", async () => {
  // Deno takes a method (a token of any letters) as long as a request head may be, ~64 KB.
  const method = "X".repeat(60_000);
  const quoted = `${"X".repeat(MAX_QUOTED_CHARACTERS)}… (60000 characters)`;
  const { app } = await testApp();
  await writtenLogs(async (lines) => {
    const cases: Array<[string, Record<string, string>, number]> = [
      ["/v1/streams", {}, 405],
      ["/no/such/route", {}, 404],
      ["/v1/streams/orders/events", { Origin: "https://elsewhere.example" }, 403],
    ];
    for (const [path, headers, status] of cases) {
      const res = await app.request(`http://localhost${path}`, { method, headers });
      const text = await res.text();
      assert.equal(res.status, status, text.slice(0, 300));
      assert.ok(text.length < 1_000, `reply of ${text.length} characters`);
      assert.ok(text.includes(quoted), text.slice(0, 300));
    }
    const http = jsonLines(lines, "edgestream.http");
    assert.equal(http.length, cases.length);
    for (const line of http) {
      const written = JSON.stringify(line);
      assert.ok(written.length < 2_000, `line of ${written.length} characters`);
      assert.equal(line.method, quoted);
      assert.ok(String(line.message).startsWith(`${quoted} /`), String(line.message).slice(0, 300));
    }
  });
});
