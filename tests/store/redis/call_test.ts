import assert from "node:assert/strict";
import { isCommandError, RedisCalls, redisErrorText } from "../../../src/store/redis/call.ts";
import {
  StoreRefusedError,
  StoreRequestTooLargeError,
  StoreUnavailableError,
} from "../../../src/store/types.ts";
import { Redis } from "@upstash/redis";
import { redisTest } from "../../_redis.ts";
import { startUpstashProxy } from "../../_upstash_proxy.ts";
import { startUpstashBridge } from "../../../tools/upstash_bridge.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { send } from "./_key_checks.ts";
import { causeText } from "../../../src/telemetry/logging.ts";

function upstashError(message: string): Error {
  const error = new Error(message);
  error.name = "UpstashError";
  return error;
}

Deno.test("redisErrorText() drops the client's echo of the request", () => {
  assert.equal(
    redisErrorText(
      upstashError('ERR boom, command was: ["evalsha","abc",1,"es:{s}:","{\\"events\\":[]}"]'),
    ),
    "ERR boom",
  );
  assert.equal(
    redisErrorText(upstashError("Command failed: WRONGTYPE Operation against a key")),
    "WRONGTYPE Operation against a key",
  );
});

Deno.test("isCommandError() tells Redis refusing a command from Redis being unavailable", () => {
  assert.equal(isCommandError(upstashError("ERR Error running script, command was: […]")), true);
  assert.equal(isCommandError(upstashError("Command failed: WRONGTYPE Operation")), true);
  // A refusal quoting a key or value holding a refused token's code is a refusal all the same: the
  // code counts only as the reply's own (a stream may be named NOAUTH).
  assert.equal(
    isCommandError(upstashError("WRONGTYPE edgestream key es:{NOAUTH}:stats field wm holds 'x'")),
    true,
  );
  assert.equal(isCommandError(upstashError("ERR user script: WRONGPASS in a value")), true);
  for (
    const message of [
      "BUSY Redis is busy running a script, command was: […]",
      "LOADING Redis is loading the dataset in memory",
      "ERR max requests limit exceeded. Limit: 10000, Usage: 10000",
      "Redis is unreachable: connect ECONNREFUSED, command was: […]",
      // The token refused: the setting is wrong, not the command.
      "NOAUTH Authentication required., command was: […]",
      "WRONGPASS invalid username-password pair or user is disabled.",
    ]
  ) assert.equal(isCommandError(upstashError(message)), false, message);
  assert.equal(isCommandError(new TypeError("fetch failed")), false);
});

Deno.test("RedisCalls.call() maps failures: refused → Error, unreachable or slow → StoreUnavailableError", async () => {
  const calls = new RedisCalls(
    { evalsha: () => Promise.reject(), eval: () => Promise.reject() } as never,
    50,
  );
  await assert.rejects(
    calls.call(
      "applyBatch",
      () => Promise.reject(upstashError("ERR bad, command was: secret-events")),
    ),
    (error: Error) =>
      !(error instanceof StoreUnavailableError) && !(error instanceof StoreRefusedError) &&
      error.message === "Redis refused applyBatch: ERR bad",
  );
  // A key of another type: refused, for the group committer to apply its requests one by one.
  await assert.rejects(
    calls.call(
      "applyBatch",
      () => Promise.reject(upstashError("WRONGTYPE edgestream key es:{s}:log holds a string")),
    ),
    (error: Error) =>
      error instanceof StoreRefusedError &&
      error.message ===
        "Redis refused applyBatch: WRONGTYPE edgestream key es:{s}:log holds a string",
  );
  await assert.rejects(
    calls.call("applyBatch", () => Promise.reject(new TypeError("fetch failed"))),
    (error: Error) =>
      error instanceof StoreUnavailableError && /unavailable \(applyBatch\)/.test(error.message),
  );
  await assert.rejects(
    calls.call("stats", () => new Promise(() => {})),
    (error: Error) => error instanceof StoreUnavailableError && /within 50 ms/.test(error.message),
  );
});

Deno.test("RedisCalls.script() sends the script text only after NOSCRIPT", async () => {
  const sent: string[] = [];
  let known = false;
  const client = {
    evalsha(sha: string) {
      sent.push(`evalsha ${sha.length}`);
      return known
        ? Promise.resolve("ok")
        : Promise.reject(upstashError("NOSCRIPT No matching script"));
    },
    eval() {
      sent.push("eval");
      known = true;
      return Promise.resolve("ok");
    },
  };
  const calls = new RedisCalls(client as never, 1000);
  assert.equal(await calls.script("return 1", ["k"], [{ a: 1 }]), "ok");
  assert.equal(await calls.script("return 1", ["k"], [{ a: 1 }]), "ok");
  assert.deepEqual(sent, ["evalsha 40", "eval", "evalsha 40"]);
});

Deno.test("RedisCalls.call() says whether a failure may have applied: not_applied only when Redis answered not now", async () => {
  const calls = new RedisCalls({
    evalsha: () => Promise.reject(),
    eval: () => Promise.reject(),
  } as never, 50);
  const outcome = (run: () => Promise<unknown>) =>
    calls.call("applyBatch", run).then(
      () => assert.fail("expected a failure"),
      (error) => {
        assert.ok(error instanceof StoreUnavailableError);
        return error.outcome;
      },
    );
  assert.equal(await outcome(() => new Promise(() => {})), "unknown");
  // As Deno's fetch fails on a refused connection, which may follow a send that ran (it sends a
  // request once more when a kept-alive connection closes before any reply).
  assert.equal(
    await outcome(() =>
      Promise.reject(
        new TypeError("fetch failed", {
          cause: new Error(
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)",
          ),
        }),
      )
    ),
    "unknown",
  );
  assert.equal(
    await outcome(() => Promise.reject(upstashError("LOADING Redis is loading"))),
    "not_applied",
  );
  assert.equal(
    await outcome(() => Promise.reject(upstashError("BUSY Redis is busy running a script"))),
    "not_applied",
  );
  assert.equal(
    await outcome(() =>
      Promise.reject(upstashError("OOM command not allowed when used memory > 'maxmemory'."))
    ),
    "not_applied",
  );
  assert.equal(
    await outcome(() =>
      Promise.reject(new TypeError("connection closed before message completed"))
    ),
    "unknown",
  );
});

redisTest(
  "RedisCalls.script() with alone sends the call in a request of its own, after NOSCRIPT a SCRIPT LOAD and EVALSHA (no EVAL), and its failures map as any call's",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
      const calls = new RedisCalls(redis, 5_000);
      const script = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('STRLEN', KEYS[1])";
      // Made at the same moment: the auto-pipelined GET in one request, the alone call in its own.
      const [alone, other] = await Promise.all([
        calls.call("alone", () => calls.script(script, ["alone:k"], ["abc"], { alone: true })),
        redis.get("other:k"),
      ]);
      // Arguments go as JSON: '"abc"' is 5 bytes.
      assert.deepEqual([alone, other], [5, null]);
      // Known now: EVALSHA alone.
      assert.equal(await calls.script(script, ["alone:k"], ["abcd"], { alone: true }), 6);
      const requests = proxy.take().map((request) => request.commands);
      assert.ok(requests.every((commands) => commands.length === 1), JSON.stringify(requests));
      assert.deepEqual(
        requests.map((commands) => String(commands[0][0])).sort(),
        ["evalsha", "evalsha", "evalsha", "get", "script"],
      );
      // A command error is a command error: WRONGTYPE refused, a script error an Error.
      await redis.lpush("alone:list", "x");
      const wrong = await calls.call(
        "alone",
        () =>
          calls.script("return redis.call('GET', KEYS[1])", ["alone:list"], [], { alone: true }),
      ).then(() => assert.fail("expected a failure"), (error) => error);
      assert.ok(wrong instanceof StoreRefusedError, String(wrong));
      assert.match(wrong.message, /^Redis refused alone: .*WRONGTYPE/);
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "a token the REST endpoint refuses is not_applied, and the message names the setting",
  async (fixture) => {
    const redis = new Redis({ url: fixture.restUrl, token: "wrong-token", enableTelemetry: false });
    const calls = new RedisCalls(redis, 5_000);
    const error = await calls.call("applyBatch", () => calls.script("return 1", ["k"], [])).then(
      () => assert.fail("expected a failure"),
      (error) => error,
    );
    assert.ok(error instanceof StoreUnavailableError, String(error));
    assert.equal(error.outcome, "not_applied");
    assert.match(
      error.message,
      /^Redis is unavailable \(applyBatch\): the token was refused: Unauthorized.*\(check UPSTASH_REDIS_REST_TOKEN\)$/,
    );
  },
);

// Behind a proxy that passes on Redis's own errors, a wrong token is Redis's `NOAUTH` (or
// `WRONGPASS`): error replies, yet not a command Redis refused (500) but the setting wrong, as the
// REST endpoint's 401 says it.
redisTest(
  "a store call Redis refuses for its password (NOAUTH, passed on by the bridge) is the store unavailable, not_applied, saying the token was refused",
  async (fixture) => {
    await send(fixture, "CONFIG", "SET", "requirepass", "not-the-bridges");
    // A bridge started now connects without the password: Redis answers each command NOAUTH.
    const bridge = await startUpstashBridge({ redisUrl: fixture.redisUrl, token: "bridge-token" });
    const store = new RedisStore(
      new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false }),
    );
    try {
      const error = await store.stats("s", []).then(
        () => assert.fail("expected a failure"),
        (error) => error,
      );
      assert.ok(error instanceof StoreUnavailableError, String(error));
      assert.equal(error.outcome, "not_applied");
      assert.match(
        error.message,
        /^Redis is unavailable \(\w+\): the token was refused: NOAUTH .*\(check UPSTASH_REDIS_REST_TOKEN\)$/,
      );
    } finally {
      await store.close();
      await bridge.close();
    }
  },
);

Deno.test("RedisCalls.call() takes Upstash's refusals of a request as not now, nothing applied, and a full database as not now, outcome unknown", async () => {
  const calls = new RedisCalls(
    { evalsha: () => Promise.reject(), eval: () => Promise.reject() } as never,
    50,
  );
  const failure = (text: string) =>
    calls.call("applyBatch", () => Promise.reject(upstashError(`${text}, command was: […]`)))
      .then(() => assert.fail("expected a failure"), (error) => error);
  // The texts of Upstash's troubleshooting pages: the whole HTTP request refused, nothing ran.
  for (
    const text of [
      "ERR max concurrent connections exceeded",
      "ERR max requests limit exceeded. Limit: 10000, Usage: 10000",
      "ERR max daily request limit exceeded",
      "ERR max request size exceeded",
    ]
  ) {
    const error = await failure(text);
    assert.ok(error instanceof StoreUnavailableError, text);
    assert.equal(error.outcome, "not_applied", text);
    assert.ok(error.message.includes(text), text);
  }
  const tooLarge = await failure("ERR max request size exceeded");
  assert.match(tooLarge.message, /if it persists, send fewer events a request/);
  // Its own class, so a caller that can split its work (the webhook dispatch) does.
  assert.ok(tooLarge instanceof StoreRequestTooLargeError);
  assert.ok(
    !(await failure("ERR max daily request limit exceeded") instanceof StoreRequestTooLargeError),
  );
  // Writes refused, but whether a script's later write can be after earlier ones is not said.
  const full = await failure("ERR DB capacity quota exceeded");
  assert.ok(full instanceof StoreUnavailableError);
  assert.equal(full.outcome, "unknown");
});

Deno.test("RedisCalls.call() says why a REST URL was not reached, and to check UPSTASH_REDIS_REST_URL", async () => {
  const calls = new RedisCalls(
    { evalsha: () => Promise.reject(), eval: () => Promise.reject() } as never,
    50,
  );
  const messageOf = (error: unknown) =>
    calls.call("getDefinition", () => Promise.reject(error)).then(
      () => assert.fail("expected a failure"),
      (failed: Error) => failed.message,
    );
  // As Deno's fetch fails on a refused connection.
  assert.equal(
    await messageOf(
      new TypeError("fetch failed", {
        cause: new Error(
          "error sending request for url (http://127.0.0.1:7699/): client error (Connect): tcp connect error: Connection refused (os error 111)",
        ),
      }),
    ),
    "Redis is unavailable (getDefinition): fetch failed: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111) (check UPSTASH_REDIS_REST_URL)",
  );
  // A URL with a `)` in its path is left out whole too.
  assert.equal(
    await messageOf(
      new TypeError("fetch failed", {
        cause: new Error(
          "error sending request for url (http://127.0.0.1:7699/a)b): client error (Connect): tcp connect error: Connection refused (os error 111)",
        ),
      }),
    ),
    "Redis is unavailable (getDefinition): fetch failed: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111) (check UPSTASH_REDIS_REST_URL)",
  );
  // A port Deno's fetch refuses to ask (its list of blocked ports, such as 1 or 6000), as it fails.
  assert.equal(
    await messageOf(new TypeError("Fetch failed: Requests to port 6000 are blocked")),
    "Redis is unavailable (getDefinition): Fetch failed: Requests to port 6000 are blocked (check UPSTASH_REDIS_REST_URL)",
  );
  // A server that is not an Upstash REST endpoint (the client's words).
  assert.equal(
    await messageOf(upstashError("Unable to parse response body: ok")),
    "Redis is unavailable (getDefinition): Unable to parse response body: ok (check UPSTASH_REDIS_REST_URL)",
  );
});

Deno.test("RedisCalls.call() keeps the REST URL and the local address out of a closed connection's message, which /readyz and 503 replies carry", async () => {
  // What answers at the URL takes the connection and closes it (a redis-server's own port, which
  // drops an HTTP request): Deno's fetch then names both ends, `from <local> for <url> (<addr>)`.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const connection of listener) {
      await connection.read(new Uint8Array(1024)).catch(() => null);
      connection.close();
    }
  })();
  try {
    const url = `http://127.0.0.1:${listener.addr.port}`;
    const redis = new Redis({ url, token: "t", retry: false, enableTelemetry: false });
    const failed = await new RedisCalls(redis, 2_000).call("getDefinition", () => redis.get("k"))
      .then(() => assert.fail("expected a failure"), (error: Error) => error);
    assert.ok(failed instanceof StoreUnavailableError, String(failed));
    assert.ok(!failed.message.includes(String(listener.addr.port)), failed.message);
    assert.ok(!failed.message.includes("127.0.0.1"), failed.message);
    assert.match(
      failed.message,
      /^Redis is unavailable \(getDefinition\): fetch failed: error sending request: client error \(SendRequest\): .+ \(check UPSTASH_REDIS_REST_URL\)$/,
    );
    // The cause, which the logs print, keeps them.
    assert.match(String((failed.cause as Error).cause), new RegExp(`${listener.addr.port}`));
  } finally {
    listener.close();
    await accepting.catch(() => {});
  }
});

Deno.test("RedisCalls.call() says a JSON error reply that is not Upstash's is not an Upstash REST endpoint, not '[object Object]'", async () => {
  // UPSTASH_REDIS_REST_URL pointing at another JSON API (here one answering as edgestream's own
  // 405 does): the client quotes the reply's `error` field, an object or nothing, as text.
  const replies = [
    {
      reply: { error: { code: "method_not_allowed", message: "no" } },
      status: 405,
      read: "[object Object]",
    },
    { reply: { message: "no" }, status: 405, read: "undefined" },
    { reply: { error: { code: 1 } }, status: 500, read: "[object Object]" },
  ];
  for (const { reply, status, read } of replies) {
    const ac = new AbortController();
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen: () => {} },
      () => Response.json(reply, { status }),
    );
    try {
      const redis = new Redis({
        url: `http://127.0.0.1:${server.addr.port}`,
        token: "t",
        retry: false,
        enableTelemetry: false,
      });
      const calls = new RedisCalls(redis, 2_000);
      const failed = await calls.call("getDefinition", () => redis.get("k")).then(
        () => assert.fail("expected a failure"),
        (error: Error) => error,
      );
      assert.ok(failed instanceof StoreUnavailableError, String(failed));
      assert.doesNotMatch(failed.message, /\[object Object\]|undefined/);
      assert.equal(
        failed.message,
        "Redis is unavailable (getDefinition): the reply is not an Upstash REST endpoint's " +
          "(an HTTP error without an error message) (check UPSTASH_REDIS_REST_URL)",
      );
      // The cause, which the logs print, says what the client's text was, not a bare
      // `UpstashError: [object Object]`.
      const cause = failed.cause as Error;
      assert.equal(cause.name, "UpstashError");
      assert.equal(
        cause.message,
        `an HTTP error reply without an Upstash error message (its "error" field read as text: '${read}')`,
      );
      assert.ok(cause.stack?.includes(cause.message), String(cause.stack));
      assert.doesNotMatch(causeText(failed) ?? "", /caused by UpstashError: (\[object|undefined)/);
    } finally {
      ac.abort();
      await server.finished;
    }
  }
});

Deno.test("RedisCalls.call() says a 2xx JSON reply the client cannot read is not an Upstash REST endpoint's, and to check UPSTASH_REDIS_REST_URL, not 'res.map is not a function'", async () => {
  // UPSTASH_REDIS_REST_URL pointing at another JSON API answering 200: the client reads its reply
  // as a list of results without a check, and fails on what it finds.
  const replies = [{ ok: true }, { result: "PONG" }, "hello", null, [], [{ result: 1 }, {
    result: 2,
  }]];
  for (const reply of replies) {
    const ac = new AbortController();
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", signal: ac.signal, onListen: () => {} },
      () => Response.json(reply),
    );
    try {
      // As src/env.ts makes it: commands sent in pipelines, as the client does by default.
      const redis = new Redis({
        url: `http://127.0.0.1:${server.addr.port}`,
        token: "t",
        retry: false,
        enableTelemetry: false,
      });
      const calls = new RedisCalls(redis, 2_000);
      // A read the client parses itself, sent again alone when it cannot (RedisCalls.read).
      const read = () =>
        calls.read(() => redis.hmget("k", "f"), (pipeline) => pipeline.hmget("k", "f"));
      for (const run of [() => redis.get("k"), () => redis.evalsha("abc", ["k"], ["1"]), read]) {
        const failed = await calls.call("getDefinition", run).then(
          () => assert.fail(`expected a failure for ${JSON.stringify(reply)}`),
          (error: Error) => error,
        );
        assert.ok(failed instanceof StoreUnavailableError, String(failed));
        assert.match(
          failed.message,
          /^Redis is unavailable \(getDefinition\): the reply is not an Upstash REST endpoint's \(the client cannot read it: .+\) \(check UPSTASH_REDIS_REST_URL\)$/,
          JSON.stringify(reply),
        );
        assert.equal(failed.outcome, "unknown");
      }
    } finally {
      ac.abort();
      await server.finished;
    }
  }
  // A TypeError of edgestream's own code in the call is not the reply's: said as it is.
  const own = await new RedisCalls({} as never, 1_000).call("getDefinition", () => {
    throw new TypeError("x is not a function");
  }).then(() => assert.fail("expected a failure"), (error: Error) => error);
  assert.equal(own.message, "Redis is unavailable (getDefinition): x is not a function");
});

Deno.test("RedisCalls.call() keeps the client's echo of the request out of its errors' causes too, which the logs print", async () => {
  const calls = new RedisCalls(
    { evalsha: () => Promise.reject(), eval: () => Promise.reject() } as never,
    1_000,
  );
  for (
    const text of [
      "ERR max request size exceeded", // unavailable (too large)
      "Unauthorized: missing or wrong bearer token", // unavailable (token)
      "ERR bad", // refused
    ]
  ) {
    const error = await calls.call(
      "applyBatch",
      () => Promise.reject(upstashError(`${text}, command was: [["evalsha","PRIVATE-EVENTS"]]`)),
    ).then(() => undefined, (error: Error) => error);
    assert.ok(error instanceof Error, text);
    let chain = "";
    for (let current: unknown = error; current instanceof Error; current = current.cause) {
      chain += `${current.name}: ${current.message}\n${current.stack}\n`;
    }
    assert.match(chain, new RegExp(`UpstashError: ${text}`), chain);
    assert.doesNotMatch(chain, /PRIVATE-EVENTS|command was/, chain);
  }
});
