import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Buffer } from "node:buffer";
import { Redis } from "@upstash/redis";
import { createClient } from "redis";
import { type RedisFixture, redisServerInstalled, redisTest } from "../_redis.ts";
import { runDevRedis } from "../../tools/dev_redis.ts";
import { startRedisServer } from "../../tools/redis_server.ts";
import { startUpstashBridge, type UpstashBridge } from "../../tools/upstash_bridge.ts";

/** The client's two ways of sending commands: batched into `/pipeline` (default) or one by one. */
const MODES = [
  { label: "auto-pipelining", enableAutoPipelining: true },
  { label: "no auto-pipelining", enableAutoPipelining: false },
] as const;

type Mode = (typeof MODES)[number];

function upstash(
  fixture: RedisFixture,
  mode: Mode,
  options: { automaticDeserialization?: boolean; responseEncoding?: false } = {},
): Redis {
  return new Redis({
    url: fixture.restUrl,
    token: fixture.restToken,
    enableTelemetry: false,
    enableAutoPipelining: mode.enableAutoPipelining,
    ...options,
  });
}

/** A plain RESP2 connection to the same Redis, to learn what Redis itself answers. */
interface DirectRedis {
  /** Sends one raw command and returns the reply, or the error Redis answered with. */
  send(...args: Array<string | Buffer>): Promise<unknown>;
  /** The message of the error Redis answers `args` with. */
  errorOf(...args: string[]): Promise<string>;
  close(): Promise<void>;
}

async function connectDirect(url: string): Promise<DirectRedis> {
  const client = createClient({ url, RESP: 2 });
  client.on("error", () => {});
  await client.connect();
  return {
    send: (...args) => client.sendCommand(args),
    async errorOf(...args) {
      try {
        await client.sendCommand(args);
      } catch (error) {
        return (error as Error).message;
      }
      throw new Error(`Expected Redis to reject ${args.join(" ")}`);
    },
    close: () => client.close(),
  };
}

/** Runs `fn` with a direct connection to the fixture's Redis and closes it afterwards. */
async function withDirect<T>(
  fixture: RedisFixture,
  fn: (direct: DirectRedis) => Promise<T>,
): Promise<T> {
  const direct = await connectDirect(fixture.redisUrl);
  try {
    return await fn(direct);
  } finally {
    await direct.close();
  }
}

interface RawReply {
  status: number;
  headers: Headers;
  text: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

/** Sends a raw HTTP request to the bridge, with the right token unless `token` says otherwise. */
async function post(
  target: { restUrl: string; restToken: string },
  path: string,
  body: unknown,
  options: { token?: string | null; base64?: boolean; method?: string; rawBody?: string } = {},
): Promise<RawReply> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  const token = options.token === undefined ? target.restToken : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (options.base64) headers["upstash-encoding"] = "base64";
  const method = options.method ?? "POST";
  const response = await fetch(`${target.restUrl}${path}`, {
    method,
    headers,
    body: method === "GET" ? undefined : options.rawBody ?? JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

function fromBase64(value: string): string {
  return Buffer.from(value, "base64").toString("utf8");
}

for (const mode of MODES) {
  redisTest(
    `Upstash client (${mode.label}) sets with EX and gets the value Redis stored`,
    async (fx) => {
      const redis = upstash(fx, mode);
      assert.equal(await redis.set("greeting", "hello", { ex: 100 }), "OK");
      assert.equal(await redis.get("greeting"), "hello");
      assert.equal(await redis.get("missing"), null);
      await withDirect(fx, async (direct) => {
        assert.equal(await direct.send("GET", "greeting"), "hello");
        const ttl = await direct.send("TTL", "greeting") as number;
        assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
      });
    },
  );

  redisTest(
    `Upstash client (${mode.label}) counts with incr, hincrby and hincrbyfloat like Redis`,
    async (fx) => {
      const redis = upstash(fx, mode);
      assert.equal(await redis.incr("visits"), 1);
      assert.equal(await redis.incr("visits"), 2);
      assert.equal(await redis.incrby("visits", 40), 42);
      assert.equal(await redis.hincrby("stats", "count", 5), 5);
      assert.equal(await redis.hincrby("stats", "count", -2), 3);
      assert.equal(await redis.hincrbyfloat("stats", "sum", 10.5), 10.5);
      assert.equal(await redis.hincrbyfloat("stats", "sum", 0.25), 10.75);
      await redis.hset("stats", { label: "page views" });
      // The client's hgetall parses only safe integers and JSON, so the float stays a string.
      assert.deepEqual(await redis.hgetall("stats"), {
        count: 3,
        sum: "10.75",
        label: "page views",
      });
      await withDirect(fx, async (direct) => {
        assert.equal(await direct.send("GET", "visits"), "42");
        assert.deepEqual(await direct.send("HGETALL", "stats"), [
          "count",
          "3",
          "sum",
          "10.75",
          "label",
          "page views",
        ]);
      });
    },
  );

  redisTest(
    `Upstash client (${mode.label}) gets the HyperLogLog count Redis computes`,
    async (fx) => {
      const redis = upstash(fx, mode);
      const users = Array.from({ length: 500 }, (_, index) => `user-${index}`);
      assert.equal(await redis.pfadd("visitors", ...users), 1);
      assert.equal(await redis.pfadd("visitors", "user-1"), 0);
      const count = await redis.pfcount("visitors");
      await withDirect(fx, async (direct) => {
        assert.equal(count, await direct.send("PFCOUNT", "visitors"));
      });
      assert.ok(Math.abs(count - 500) < 25, `count ${count}`);
    },
  );

  redisTest(
    `Upstash client (${mode.label}) reads back stream entries with xadd and xrange`,
    async (fx) => {
      const redis = upstash(fx, mode);
      const first = await redis.xadd("events", "*", { kind: "click", value: "1" });
      const second = await redis.xadd("events", "*", { kind: "view", page: "/home" });
      assert.match(first, /^\d+-\d+$/);
      assert.deepEqual(await redis.xrange("events", "-", "+"), {
        [first]: { kind: "click", value: 1 },
        [second]: { kind: "view", page: "/home" },
      });
      await withDirect(fx, async (direct) => {
        assert.deepEqual(await direct.send("XRANGE", "events", "-", "+"), [
          [first, ["kind", "click", "value", "1"]],
          [second, ["kind", "view", "page", "/home"]],
        ]);
      });
    },
  );

  redisTest(`Upstash client (${mode.label}) ranks sorted set members like Redis`, async (fx) => {
    const redis = upstash(fx, mode);
    assert.equal(
      await redis.zadd("scores", { score: 3, member: "carol" }, { score: 1, member: "alice" }, {
        score: 2.5,
        member: "bob",
      }),
      3,
    );
    assert.deepEqual(await redis.zrange("scores", 0, -1), ["alice", "bob", "carol"]);
    assert.deepEqual(await redis.zrange("scores", 0, -1, { withScores: true }), [
      "alice",
      1,
      "bob",
      2.5,
      "carol",
      3,
    ]);
    await withDirect(fx, async (direct) => {
      assert.deepEqual(await direct.send("ZRANGE", "scores", "0", "-1", "WITHSCORES"), [
        "alice",
        "1",
        "bob",
        "2.5",
        "carol",
        "3",
      ]);
    });
  });

  redisTest(
    `Upstash client (${mode.label}) gets tables, numbers, nil and errors from eval`,
    async (fx) => {
      const redis = upstash(fx, mode);
      const table = "return {1, 'two', {3, 'four'}, KEYS[1], ARGV[1]}";
      assert.deepEqual(await redis.eval(table, ["key-a"], ["arg-b"]), [
        1,
        "two",
        [3, "four"],
        "key-a",
        "arg-b",
      ]);
      assert.equal(await redis.eval("return 42", [], []), 42);
      assert.equal(await redis.eval("return 3.9", [], []), 3); // Redis truncates Lua numbers
      assert.equal(await redis.eval("return nil", [], []), null);
      assert.equal(
        await redis.eval("return redis.call('incrby', KEYS[1], ARGV[1])", ["n"], [7]),
        7,
      );

      await redis.set("text", "not a number");
      await withDirect(fx, async (direct) => {
        assert.deepEqual(await direct.send("EVAL", table, "1", "key-a", "arg-b"), [
          1,
          "two",
          [3, "four"],
          "key-a",
          "arg-b",
        ]);
        const custom = await direct.errorOf("EVAL", "return redis.error_reply('MY_ERR boom')", "0");
        assert.equal(custom, "MY_ERR boom");
        await assert.rejects(
          redis.eval("return redis.error_reply('MY_ERR boom')", [], []),
          (error: Error) => error.message.includes(custom),
        );
        const incrError = await direct.errorOf(
          "EVAL",
          "return redis.call('incr', KEYS[1])",
          "1",
          "text",
        );
        assert.match(incrError, /not an integer/);
        await assert.rejects(
          redis.eval("return redis.call('incr', KEYS[1])", ["text"], []),
          (error: Error) => error.message.includes(incrError),
        );
      });
    },
  );

  redisTest(`Upstash client (${mode.label}) runs a loaded script with evalsha`, async (fx) => {
    const redis = upstash(fx, mode);
    const script = "return {KEYS[1], tonumber(ARGV[1]) * 2}";
    const sha = await redis.scriptLoad(script);
    await withDirect(fx, async (direct) => {
      assert.equal(sha, await direct.send("SCRIPT", "LOAD", script));
    });
    assert.deepEqual(await redis.evalsha(sha, ["k"], [21]), ["k", 42]);
    await assert.rejects(redis.evalsha("0".repeat(40), [], []), /NOSCRIPT/);
  });

  redisTest(
    `Upstash createScript (${mode.label}) falls back from EVALSHA to EVAL on NOSCRIPT`,
    async (fx) => {
      const redis = upstash(fx, mode);
      const script = redis.createScript<[string, number]>(
        "return {ARGV[1], redis.call('incr', KEYS[1])}",
      );
      await withDirect(fx, async (direct) => {
        const sha = await direct.send("SCRIPT", "LOAD", "return 1") as string; // any sha works
        await direct.send("SCRIPT", "FLUSH");
        assert.deepEqual(await direct.send("SCRIPT", "EXISTS", sha), [0]);

        assert.deepEqual(await script.exec(["runs"], ["first"]), ["first", 1]);
        assert.deepEqual(await direct.send("SCRIPT", "EXISTS", script.sha1), [1]);
        assert.deepEqual(await script.exec(["runs"], ["cached"]), ["cached", 2]);

        await direct.send("SCRIPT", "FLUSH");
        assert.deepEqual(await script.exec(["runs"], ["again"]), ["again", 3]);
        assert.equal(await direct.send("GET", "runs"), "3");
      });
    },
  );

  redisTest(
    `Upstash client (${mode.label}) pipeline() returns every reply in order`,
    async (fx) => {
      const redis = upstash(fx, mode);
      const pipeline = redis.pipeline();
      pipeline.set("a", 1);
      pipeline.incr("a");
      pipeline.get("a");
      pipeline.hset("h", { field: "value" });
      pipeline.hgetall("h");
      pipeline.get("missing");
      assert.deepEqual(await pipeline.exec(), ["OK", 2, 2, 1, { field: "value" }, null]);

      const withError = redis.pipeline();
      withError.set("s", "text");
      withError.incr("s");
      withError.get("s");
      const results = await withError.exec({ keepErrors: true });
      assert.deepEqual(results.map((item) => item.result), ["OK", undefined, "text"]);
      assert.equal(results[1].error, "ERR value is not an integer or out of range");
      await assert.rejects(redis.pipeline().incr("s").exec(), /not an integer/);
    },
  );

  redisTest(
    `Upstash client (${mode.label}) multi() runs a transaction and returns its replies`,
    async (fx) => {
      const redis = upstash(fx, mode);
      const transaction = redis.multi();
      transaction.incr("counter");
      transaction.incrby("counter", 10);
      transaction.get("counter");
      transaction.hset("h", { a: "x" });
      assert.deepEqual(await transaction.exec(), [1, 11, 11, 1]);
      await withDirect(fx, async (direct) => {
        assert.equal(await direct.send("GET", "counter"), "11");
      });
    },
  );

  redisTest(
    `Upstash client (${mode.label}) rejects a wrong-type command with Redis's error`,
    async (fx) => {
      const redis = upstash(fx, mode);
      await redis.set("plain", "text");
      const expected = await withDirect(
        fx,
        (direct) => direct.errorOf("HINCRBY", "plain", "f", "1"),
      );
      assert.match(expected, /^WRONGTYPE/);
      await assert.rejects(
        redis.hincrby("plain", "f", 1),
        (error: Error) => error.message.includes(expected),
      );
      await assert.rejects(redis.lpush("plain", "x"), /WRONGTYPE/);
      assert.equal(await redis.get("plain"), "text");
    },
  );

  redisTest(
    `Upstash client (${mode.label}) round-trips unicode, NUL and JSON- or number-like strings exactly`,
    async (fx) => {
      const values = [
        "😀 emoji, ünïcødé, 中文",
        "nul\u0000byte",
        '{"looks":"like json"}',
        "[1,2,3]",
        "12345678901234567890",
        "007",
        "3.14",
        "true",
        "null",
        "",
        "  spaced  ",
        "line\nbreak\ttab",
      ];
      for (const responseEncoding of [undefined, false] as const) {
        const raw = upstash(fx, mode, { automaticDeserialization: false, responseEncoding });
        await Promise.all(values.map((value, index) => raw.set(`v${index}`, value)));
        const readBack = await Promise.all(values.map((_, index) => raw.get(`v${index}`)));
        assert.deepEqual(readBack, values, `responseEncoding ${responseEncoding}`);
        assert.deepEqual(await raw.mget(...values.map((_, index) => `v${index}`)), values);
        await withDirect(fx, async (direct) => {
          for (const [index, value] of values.entries()) {
            assert.equal(await direct.send("GET", `v${index}`), value);
          }
        });
      }
      // The default client parses JSON, but leaves numbers that would lose precision as strings.
      const parsing = upstash(fx, mode);
      assert.deepEqual(await parsing.get("v2"), { looks: "like json" });
      assert.equal(await parsing.get("v4"), "12345678901234567890");
    },
  );

  redisTest(`Upstash client (${mode.label}) stores and reads a 2 MB value`, async (fx) => {
    const redis = upstash(fx, mode, { automaticDeserialization: false });
    const chunk = "edgestream ✓ 0123456789 ";
    const value = chunk.repeat(Math.ceil(2_000_000 / chunk.length));
    assert.equal(await redis.set("large", value), "OK");
    assert.equal(await redis.get("large"), value);
    await withDirect(fx, async (direct) => {
      assert.equal(await direct.send("STRLEN", "large"), Buffer.byteLength(value));
    });
  });
}

redisTest(
  "Upstash auto-pipelining batches concurrent commands into one /pipeline request",
  async (fx) => {
    const redis = upstash(fx, MODES[0]);
    const paths: string[] = [];
    const realFetch = globalThis.fetch;
    globalThis.fetch = (input, init) => {
      paths.push(new URL(input instanceof Request ? input.url : input).pathname);
      return realFetch(input, init);
    };
    try {
      const results = await Promise.all([redis.set("x", 1), redis.incr("y"), redis.incr("y")]);
      assert.deepEqual(results, ["OK", 1, 2]);
    } finally {
      globalThis.fetch = realFetch;
    }
    assert.deepEqual(paths, ["/pipeline"]);
  },
);

redisTest(
  "bridge base64-encodes every string reply, 'OK' included, when the client asks",
  async (fx) => {
    await post(fx, "/", ["rpush", "list", "a", "ü"]);
    const ok = await post(fx, "/", ["set", "k", "value"], { base64: true });
    assert.deepEqual(ok.json, { result: "T0s=" });
    assert.deepEqual((await post(fx, "/", ["get", "k"], { base64: true })).json, {
      result: Buffer.from("value").toString("base64"),
    });
    assert.deepEqual((await post(fx, "/", ["get", "none"], { base64: true })).json, {
      result: null,
    });
    assert.deepEqual((await post(fx, "/", ["incr", "n"], { base64: true })).json, { result: 1 });
    const list = await post(fx, "/", ["lrange", "list", 0, -1], { base64: true });
    assert.deepEqual(list.json.result.map(fromBase64), ["a", "ü"]);
    const nested = await post(fx, "/", [
      "eval",
      "return {1, {'deep', redis.status_reply('FINE')}}",
      0,
    ], {
      base64: true,
    });
    assert.deepEqual(nested.json, {
      result: [1, [Buffer.from("deep").toString("base64"), Buffer.from("FINE").toString("base64")]],
    });

    // Without the header everything stays plain text.
    assert.deepEqual((await post(fx, "/", ["set", "k", "value"])).json, { result: "OK" });
    assert.deepEqual((await post(fx, "/", ["lrange", "list", 0, -1])).json, { result: ["a", "ü"] });
    // Errors are never encoded.
    assert.deepEqual((await post(fx, "/", ["incr", "k"], { base64: true })).json, {
      error: "ERR value is not an integer or out of range",
    });
  },
);

redisTest(
  "bridge returns the exact bytes Redis holds, even when they are not UTF-8",
  async (fx) => {
    const bytes = Buffer.from([0xff, 0x00, 0xfe, 0x41, 0x80]);
    await withDirect(fx, (direct) => direct.send("SET", "binary", bytes));
    const reply = await post(fx, "/", ["get", "binary"], { base64: true });
    assert.deepEqual([...Buffer.from(reply.json.result, "base64")], [...bytes]);
  },
);

redisTest("bridge keeps integer replies beyond 2^53 exact", async (fx) => {
  const reply = await post(fx, "/", ["incrby", "big", "9007199254740993"]);
  assert.equal(reply.text, '{"result":9007199254740993}');
});

redisTest("bridge turns numbers and booleans into RESP strings", async (fx) => {
  assert.deepEqual((await post(fx, "/", ["set", "n", 1.5, "ex", 100])).json, { result: "OK" });
  await post(fx, "/", ["set", "b", true]);
  await withDirect(fx, async (direct) => {
    assert.equal(await direct.send("GET", "n"), "1.5");
    assert.equal(await direct.send("GET", "b"), "true");
    assert.ok((await direct.send("TTL", "n") as number) > 0);
  });
});

redisTest("bridge answers 401 and runs nothing without the right bearer token", async (fx) => {
  for (const token of [null, "wrong", `${fx.restToken}x`, ""]) {
    const reply = await post(fx, "/", ["set", "k", "v"], { token });
    assert.equal(reply.status, 401, `token ${token}`);
    assert.equal(typeof reply.json.error, "string");
  }
  assert.equal((await post(fx, "/pipeline", [["set", "k", "v"]], { token: "wrong" })).status, 401);
  assert.equal(
    (await post(fx, "/multi-exec", [["set", "k", "v"]], { token: "wrong" })).status,
    401,
  );
  const rejected = new Redis({ url: fx.restUrl, token: "wrong", enableTelemetry: false });
  await assert.rejects(rejected.set("k", "v"), /Unauthorized/);
  await withDirect(fx, async (direct) => {
    assert.equal(await direct.send("EXISTS", "k"), 0);
  });
});

redisTest("bridge answers 405 to methods other than POST", async (fx) => {
  for (const path of ["/", "/pipeline", "/multi-exec"]) {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const reply = await post(fx, path, ["ping"], { method });
      assert.equal(reply.status, 405, `${method} ${path}`);
      assert.equal(reply.headers.get("allow"), "POST");
      assert.equal(typeof reply.json.error, "string");
    }
  }
  assert.equal((await post(fx, "/unknown", ["ping"])).status, 404);
});

redisTest("bridge answers 400 to a body that is not JSON or not a command", async (fx) => {
  for (const path of ["/", "/pipeline", "/multi-exec"]) {
    const reply = await post(fx, path, undefined, { rawBody: "set k v" });
    assert.equal(reply.status, 400, path);
    assert.match(reply.json.error, /not valid JSON/);
  }
  for (
    const body of [{ command: "get" }, [], [1, "k"], ["set", "k", { v: 1 }], ["set", "k", null]]
  ) {
    const reply = await post(fx, "/", body);
    assert.equal(reply.status, 400, JSON.stringify(body));
    assert.equal(typeof reply.json.error, "string");
  }
  assert.equal((await post(fx, "/pipeline", ["get", "k"])).status, 400);
  assert.equal((await post(fx, "/multi-exec", [])).status, 400);
});

redisTest("bridge answers 400 with Redis's own error text when a command fails", async (fx) => {
  await post(fx, "/", ["set", "s", "text"]);
  await withDirect(fx, async (direct) => {
    for (
      const command of [["incr", "s"], ["set", "k"], ["nosuchcommand", "x"], ["lpush", "s", "v"]]
    ) {
      const reply = await post(fx, "/", command);
      assert.equal(reply.status, 400, command.join(" "));
      assert.deepEqual(reply.json, { error: await direct.errorOf(...command) });
    }
  });
});

redisTest("bridge /pipeline runs commands in order and reports each error in place", async (fx) => {
  const reply = await post(fx, "/pipeline", [
    ["set", "a", "1"],
    ["incr", "a"],
    ["set", "b"],
    ["hset", "a", "f", "v"],
    ["get", "a"],
    ["blpop", "list", 0],
  ]);
  assert.equal(reply.status, 200);
  assert.deepEqual(reply.json.slice(0, 5), [
    { result: "OK" },
    { result: 2 },
    { error: "ERR wrong number of arguments for 'set' command" },
    { error: "WRONGTYPE Operation against a key holding the wrong kind of value" },
    { result: "2" },
  ]);
  assert.match(reply.json[5].error, /not supported/);
});

redisTest(
  "bridge /multi-exec returns an array of results, with runtime errors in place",
  async (fx) => {
    await post(fx, "/", ["set", "s", "text"]);
    const reply = await post(fx, "/multi-exec", [["incr", "n"], ["incr", "s"], ["get", "n"]], {
      base64: true,
    });
    assert.equal(reply.status, 200);
    assert.ok(Array.isArray(reply.json));
    assert.deepEqual(reply.json, [
      { result: 1 },
      { error: "ERR value is not an integer or out of range" },
      { result: Buffer.from("1").toString("base64") },
    ]);
  },
);

redisTest(
  "bridge /multi-exec answers 400 EXECABORT and applies nothing when a command is rejected",
  async (fx) => {
    const reply = await post(fx, "/multi-exec", [["set", "a", "1"], ["set", "b"], [
      "set",
      "c",
      "3",
    ]]);
    assert.equal(reply.status, 400);
    assert.match(reply.json.error, /^EXECABORT/);
    assert.match(reply.json.error, /wrong number of arguments/);
    const unsupported = await post(fx, "/multi-exec", [["set", "a", "1"], ["watch", "a"]]);
    assert.equal(unsupported.status, 400);
    assert.match(unsupported.json.error, /^EXECABORT/);
    await withDirect(fx, async (direct) => {
      assert.equal(await direct.send("EXISTS", "a", "b", "c"), 0);
    });
  },
);

redisTest("bridge keeps concurrent transactions and single commands apart", async (fx) => {
  const requests = Array.from(
    { length: 30 },
    (_, index) =>
      index % 2 === 0
        ? post(fx, "/multi-exec", [["rpush", "log", `t${index}-a`], [
          "rpush",
          "log",
          `t${index}-b`,
        ]])
        : post(fx, "/pipeline", [["rpush", "log", `p${index}`], ["get", "nothing"]]),
  );
  const replies = await Promise.all(requests);
  assert.ok(replies.every((reply) => reply.status === 200));
  const log = (await post(fx, "/", ["lrange", "log", 0, -1])).json.result as string[];
  assert.equal(log.length, 45);
  for (const [position, entry] of log.entries()) {
    if (entry.endsWith("-a")) assert.equal(log[position + 1], entry.replace(/-a$/, "-b"));
  }
});

redisTest(
  "bridge refuses commands that would block or take over the shared connection",
  async (fx) => {
    const started = performance.now();
    for (
      const command of [
        ["blpop", "list", 0],
        ["BRPOP", "list", 0],
        ["xread", "block", 0, "streams", "s", "$"],
        ["multi"],
        ["subscribe", "channel"],
        ["select", 1],
      ]
    ) {
      const reply = await post(fx, "/", command);
      assert.equal(reply.status, 400, command.join(" "));
      assert.match(reply.json.error, /not supported/);
    }
    assert.ok(performance.now() - started < 2_000);
    assert.deepEqual((await post(fx, "/", ["ping"])).json, { result: "PONG" });
  },
);

redisTest("withRedis() gives every test an empty database", async (fx) => {
  await withDirect(fx, async (direct) => {
    assert.equal(await direct.send("DBSIZE"), 0);
  });
  // Leave data behind: the next test would see it if servers were shared without a flush.
  await post(fx, "/", ["set", "leftover", "1"]);
});

redisTest("withRedis() gives the following test an empty database too", async (fx) => {
  await withDirect(fx, async (direct) => {
    assert.equal(await direct.send("DBSIZE"), 0);
  });
  await post(fx, "/", ["set", "leftover", "1"]);
});

Deno.test({
  name: "bridge answers 503 quickly while Redis is down and recovers when it is back",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const server = await startRedisServer();
    const bridge = await startUpstashBridge({
      redisUrl: server.url,
      token: "t",
      connectTimeoutMs: 500,
    });
    const target = { restUrl: bridge.url, restToken: bridge.token };
    const redis = new Redis({ url: bridge.url, token: "t", enableTelemetry: false });
    let revived: Awaited<ReturnType<typeof startRedisServer>> | undefined;
    try {
      assert.equal(await redis.set("k", "before"), "OK");
      await server.stop();

      const started = performance.now();
      for (
        const [path, body] of [["/", ["get", "k"]], ["/pipeline", [["get", "k"]]], ["/multi-exec", [
          ["get", "k"],
        ]]]
      ) {
        const reply = await post(target, path as string, body);
        assert.equal(reply.status, 503, path as string);
        assert.match(reply.json.error, /Redis is unavailable at 127\.0\.0\.1:\d+/);
      }
      await assert.rejects(redis.get("k"), /unavailable/);
      assert.ok(performance.now() - started < 3_000, "503 took too long");

      revived = await startRedisServer({ port: server.port });
      assert.deepEqual((await post(target, "/", ["get", "k"])).json, { result: null });
      assert.equal(await redis.set("k", "after"), "OK");
      assert.equal(await redis.get("k"), "after");
    } finally {
      await bridge.close();
      await revived?.stop();
      await server.stop();
    }
  },
});

Deno.test("bridge answers 503 when Redis accepts connections but never replies", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const connection of listener) connections.push(connection);
    } catch {
      // The listener was closed.
    }
  })();
  let bridge: UpstashBridge | undefined;
  try {
    bridge = await startUpstashBridge({
      redisUrl: `redis://127.0.0.1:${listener.addr.port}`,
      token: "t",
      commandTimeoutMs: 300,
    });
    const started = performance.now();
    const reply = await post({ restUrl: bridge.url, restToken: "t" }, "/", ["get", "k"]);
    assert.equal(reply.status, 503);
    assert.match(reply.json.error, /did not reply within 300 ms/);
    assert.ok(performance.now() - started < 2_000);
  } finally {
    await bridge?.close();
    listener.close();
    await accepting;
    for (const connection of connections) connection.close();
  }
});

Deno.test("startUpstashBridge() rejects quickly when Redis is unreachable", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const started = performance.now();
  await assert.rejects(
    startUpstashBridge({ redisUrl: `redis://user:secret@127.0.0.1:${port}`, token: "t" }),
    (error: Error) => {
      assert.match(error.message, new RegExp(`Redis is unreachable at 127\\.0\\.0\\.1:${port}`));
      assert.doesNotMatch(error.message, /secret/);
      return true;
    },
  );
  assert.ok(performance.now() - started < 3_000);
});

Deno.test({
  name: "runDevRedis() prints working UPSTASH_* exports and stops the bridge when told",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const lines: string[] = [];
    let stop = () => {};
    const until = new Promise<void>((resolve) => (stop = resolve));
    let printed = () => {};
    const ready = new Promise<void>((resolve) => (printed = resolve));
    const running = runDevRedis({
      until,
      print(line) {
        lines.push(line);
        if (lines.length === 2) printed();
      },
    });
    await Promise.race([ready, running]);
    const env = Object.fromEntries(lines.map((line) => {
      const match = /^export (\w+)=(.+)$/.exec(line);
      assert.ok(match, line);
      return [match[1], match[2]];
    }));
    assert.deepEqual(Object.keys(env), ["UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"]);
    assert.match(env.UPSTASH_REDIS_REST_TOKEN, /^[0-9a-f]{32}$/);
    const redis = new Redis({
      url: env.UPSTASH_REDIS_REST_URL,
      token: env.UPSTASH_REDIS_REST_TOKEN,
      enableTelemetry: false,
    });
    assert.equal(await redis.incr("dev"), 1);
    stop();
    await running;
    await assert.rejects(fetch(env.UPSTASH_REDIS_REST_URL, { method: "POST", body: "[]" }));
  },
});

/**
 * Runs `deno test` on `file` with an empty PATH (so no redis-server), under CI
 * or not. Everything else of the environment passes through (certificate and
 * proxy settings, DENO_DIR), and the child resolves packages from the lockfile
 * and the package cache only: no test may need the network.
 */
async function runWithoutRedisServer(
  file: string,
  options: { ci: boolean },
): Promise<{ code: number; text: string }> {
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    PATH: Deno.makeTempDirSync({ prefix: "edgestream-empty-path-" }),
    NO_COLOR: "1",
  };
  delete env.CI;
  if (options.ci) env.CI = "true";
  const config = fileURLToPath(new URL("../../deno.json", import.meta.url));
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--config", config, "--frozen", "--cached-only", "--allow-all", file],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      text: decoder.decode(output.stdout) + decoder.decode(output.stderr),
    };
  } finally {
    await Deno.remove(env.PATH);
  }
}

Deno.test("redisTest() ignores its tests without redis-server locally but fails them under CI=true", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgestream-harness-" });
  try {
    const harness = new URL("../_redis.ts", import.meta.url).href;
    const file = `${dir}/needs_redis_test.ts`;
    await Deno.writeTextFile(
      file,
      `import { redisTest } from "${harness}";\nredisTest("needs redis", async () => {});\n`,
    );
    const local = await runWithoutRedisServer(file, { ci: false });
    assert.equal(local.code, 0, local.text);
    assert.match(local.text, /0 passed \| 0 failed \| 1 ignored/);
    assert.match(local.text, /apt-get install -y redis-server/);
    const ci = await runWithoutRedisServer(file, { ci: true });
    assert.notEqual(ci.code, 0, ci.text);
    assert.match(ci.text, /RedisServerNotFoundError/);
    assert.match(ci.text, /apt-get install -y redis-server/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "startRedisServer() rejects a port that another Redis already holds",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const first = await startRedisServer();
    try {
      await assert.rejects(
        startRedisServer({ port: first.port }),
        /Cannot start redis-server on port \d+ as it exited with code 1:[\s\S]*Address already in use/,
      );
    } finally {
      await first.stop();
    }
  },
});

Deno.test({
  name: "deno task redis on a PORT in use says so in one line naming PORT, no stack trace",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--cached-only",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          "--allow-run",
          "--allow-write",
          "tools/dev_redis.ts",
        ],
        cwd: fileURLToPath(new URL("../../", import.meta.url)),
        env: { PORT: String(taken.addr.port), NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 1, stderr);
      const lines = stderr.trim().split("\n");
      assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
      assert.match(
        lines[0],
        new RegExp(`^Cannot start the Upstash bridge: PORT ${taken.addr.port} is already in use`),
      );
    } finally {
      taken.close();
    }
  },
});

Deno.test({
  name:
    "deno task redis refuses a PORT that is not decimal digits (only spaces, hex, an exponent) in one line, as the server does",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    // `Number` read " " as 0 (a free port, the variable ignored) and "0x1f90" as 8080.
    for (const port of [" ", "0x1f90", "1e3", "80.0"]) {
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--cached-only",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          "--allow-run",
          "--allow-write",
          "tools/dev_redis.ts",
        ],
        cwd: fileURLToPath(new URL("../../", import.meta.url)),
        env: { PORT: port, NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        // Taken, the bridge would wait for a signal: ended here (SIGTERM stops its redis-server).
        signal: AbortSignal.timeout(15_000),
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 1, `PORT=${JSON.stringify(port)}: ${stderr}`);
      assert.equal(
        stderr.trim(),
        `Cannot start the Upstash bridge as PORT is not a port number from 0 to 65535: '${port}'`,
      );
    }
  },
});

/** Starts `deno task redis` (tools/dev_redis.ts) with `PORT`, and resolves its two export lines. */
async function startDevRedis(port: number): Promise<{
  url: string;
  token: string;
  stop: () => Promise<void>;
}> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--cached-only",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-run",
      "--allow-write",
      "tools/dev_redis.ts",
    ],
    cwd: fileURLToPath(new URL("../../", import.meta.url)),
    env: { PORT: String(port), NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await child.status;
  };
  const exports = new Map<string, string>();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = setTimeout(() => stop(), 30_000);
  try {
    while (exports.size < 2) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`deno task redis exited before its export lines: ${text}`);
      text += value;
      for (const match of text.matchAll(/^export (UPSTASH_REDIS_REST_\w+)=(\S+)$/gm)) {
        exports.set(match[1], match[2]);
      }
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    clearTimeout(deadline);
  }
  // The rest of stdout is read and dropped so the child never blocks on it.
  (async () => {
    while (!(await reader.read().catch(() => ({ done: true }))).done) { /* drop */ }
  })();
  return {
    url: exports.get("UPSTASH_REDIS_REST_URL")!,
    token: exports.get("UPSTASH_REDIS_REST_TOKEN")!,
    stop,
  };
}

Deno.test({
  name: "deno task redis listens on PORT, and started again there it is a fresh, empty store",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = free.addr.port;
    free.close();
    const call = async (url: string, token: string, command: unknown[]) => {
      const response = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify(command),
      });
      return (await response.json()).result;
    };
    const first = await startDevRedis(port);
    try {
      assert.equal(new URL(first.url).port, String(port));
      assert.equal(await call(first.url, first.token, ["SET", "kept?", "yes"]), "OK");
      assert.equal(await call(first.url, first.token, ["GET", "kept?"]), "yes");
    } finally {
      await first.stop();
    }
    const second = await startDevRedis(port);
    try {
      assert.equal(new URL(second.url).port, String(port));
      assert.equal(await call(second.url, second.token, ["GET", "kept?"]), null);
      assert.equal(await call(second.url, second.token, ["DBSIZE"]), 0);
    } finally {
      await second.stop();
    }
  },
});
