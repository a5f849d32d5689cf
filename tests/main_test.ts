/**
 * `src/main.ts` as a user starts it: a startup mistake prints one line that
 * names the setting, with no stack trace, and exits with status 1.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { configFromEnv } from "../src/env.ts";
import { createServerApp, type RunningServer, serve, serveApp } from "../src/main.ts";
import {
  checkoutWithSpace,
  PROBE_WAIT_MS,
  probesWhileStarting,
  silentListener,
  START_FLAGS,
  startServerProcess,
} from "./_server_process.ts";
import { redisTest, withDirect } from "./_redis.ts";
import { collectingLogs, messageOf } from "./_logs.ts";
import { StoreUnavailableError } from "../src/store/types.ts";
import { eventually, otelEnv, startOtlpReceiver } from "./telemetry/_otlp.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

/** Runs `src/main.ts` with these variables over the machine's environment until it exits. */
async function startWith(
  vars: Record<string, string>,
): Promise<{ code: number; stderr: string; stdout: string }> {
  const env: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1", ...vars };
  for (
    const name of [
      "EDGESTREAM_KEYS",
      "UPSTASH_REDIS_REST_URL",
      "UPSTASH_REDIS_REST_TOKEN",
      "EDGESTREAM_ENV",
      "DENO_TIMELINE",
    ]
  ) {
    if (!(name in vars)) delete env[name];
  }
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", ...START_FLAGS, "src/main.ts"],
    cwd: root,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  return {
    code: output.code,
    stderr: new TextDecoder().decode(output.stderr),
    stdout: new TextDecoder().decode(output.stdout),
  };
}

function assertOneLine(result: { code: number; stderr: string }, pattern: RegExp): void {
  assert.equal(result.code, 1, result.stderr);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(result.stderr, /\n\s+at /);
}

/**
 * Starts main.ts with `config` (text as it is, anything else as JSON) in a temporary file as its
 * EDGESTREAM_CONFIG, asserts it refuses it in one line matching `pattern`, removes the file and
 * returns what main.ts wrote, for more assertions.
 */
async function assertConfigRefused(
  config: unknown,
  pattern: RegExp,
  options: { suffix?: string } = {},
): Promise<{ code: number; stderr: string }> {
  const path = await Deno.makeTempFile({ suffix: options.suffix ?? ".json" });
  try {
    await Deno.writeTextFile(path, typeof config === "string" ? config : JSON.stringify(config));
    const result = await startWith({ EDGESTREAM_CONFIG: path });
    assertOneLine(result, pattern);
    return result;
  } finally {
    await Deno.remove(path);
  }
}

for (
  const [vars, pattern] of [
    [{ EDGESTREAM_KEYS: "admin:short" }, /^edgestream: EDGESTREAM_KEYS: .*at least 16 characters/],
    [{ EDGESTREAM_SWEEP_EVERY: "5" }, /^edgestream: EDGESTREAM_SWEEP_EVERY: .*'5'/],
    [{ PORT: "abc" }, /^edgestream: PORT: expected a port number from 0 to 65535, got 'abc'$/],
    [{ PORT: "70000" }, /^edgestream: PORT: .*'70000'$/],
    // Only whitespace is a value, not the empty text that reads as not set.
    [{ PORT: " " }, /^edgestream: PORT: expected a port number from 0 to 65535, got ' '$/],
    [{ EDGESTREAM_CONFIG: "/nonexistent/config.json" }, /^edgestream: EDGESTREAM_CONFIG: /],
    [{ UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1" }, /^edgestream: UPSTASH_REDIS_REST_URL, /],
    [{ EDGESTREAM_LOG_LEVEL: "verbose" }, /^edgestream: EDGESTREAM_LOG_LEVEL: .*'verbose'$/],
    [
      { EDGESTREAM_WEBHOOK_DISABLE_AFTER: "soon" },
      /^edgestream: EDGESTREAM_WEBHOOK_DISABLE_AFTER: /,
    ],
    [
      { EDGESTREAM_WEBHOOK_SLOW_AFTER: "20s" },
      /^edgestream: EDGESTREAM_WEBHOOK_SLOW_AFTER: expected a duration above 0 and at most 15s \(the webhook request timeout\), got '20s'$/,
    ],
    [
      { EDGESTREAM_WEBHOOK_SLOW_FOR: "0s" },
      /^edgestream: EDGESTREAM_WEBHOOK_SLOW_FOR: expected a duration above 0, got '0s'$/,
    ],
    [
      { EDGESTREAM_ENV: "staging" },
      /^edgestream: EDGESTREAM_ENV: expected production or development, got 'staging'$/,
    ],
    [
      { EDGESTREAM_ENV: "production" },
      /^edgestream: EDGESTREAM_KEYS: EDGESTREAM_ENV=production needs API keys/,
    ],
    [
      { EDGESTREAM_ENV: "production", EDGESTREAM_KEYS: "admin:0123456789abcdef0123" },
      /^edgestream: UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: EDGESTREAM_ENV=production needs the Redis store/,
    ],
    [
      { EDGESTREAM_ALLOW_MEMORY: "yes" },
      /^edgestream: EDGESTREAM_ALLOW_MEMORY: expected true or false, got 'yes'$/,
    ],
    [
      { EDGESTREAM_WEBHOOK_ALLOW_HTTP: "yes" },
      /^edgestream: EDGESTREAM_WEBHOOK_ALLOW_HTTP: expected true or false, got 'yes'$/,
    ],
    [
      { UPSTASH_REDIS_REST_URL: "ftp://x", UPSTASH_REDIS_REST_TOKEN: "t" },
      /^edgestream: UPSTASH_REDIS_REST_URL: expected an http\(s\) URL, got 'ftp:\/\/x'$/,
    ],
    // What URL parsing forgives and the Upstash client throws for (a stack, not one line): an
    // upper-case scheme, a missing slash, a line break copied along; and a token with one.
    [
      { UPSTASH_REDIS_REST_URL: "HTTP://127.0.0.1:7781", UPSTASH_REDIS_REST_TOKEN: "t" },
      /^edgestream: UPSTASH_REDIS_REST_URL: expected an http\(s\) URL, got 'HTTP:\/\/127\.0\.0\.1:7781'$/,
    ],
    [
      { UPSTASH_REDIS_REST_URL: "http:/127.0.0.1:7781", UPSTASH_REDIS_REST_TOKEN: "t" },
      /^edgestream: UPSTASH_REDIS_REST_URL: expected an http\(s\) URL, got 'http:\/127\.0\.0\.1:7781'$/,
    ],
    [
      { UPSTASH_REDIS_REST_URL: "http://127.0.0.1:7781\n", UPSTASH_REDIS_REST_TOKEN: "t" },
      /^edgestream: UPSTASH_REDIS_REST_URL: expected an http\(s\) URL, got 'http:\/\/127\.0\.0\.1:7781\\n'$/,
    ],
    [
      {
        UPSTASH_REDIS_REST_URL: "http://127.0.0.1:7781",
        UPSTASH_REDIS_REST_TOKEN: "secret-token\n",
      },
      /^edgestream: UPSTASH_REDIS_REST_TOKEN: holds whitespace \(a line break copied along\?\): expected the token alone$/,
    ],
    // fetch sends them beside the token in one Authorization header the endpoint refuses: every
    // call failed as if the token were wrong.
    [
      {
        UPSTASH_REDIS_REST_URL: "http://proxy-user:pw-0123456789@127.0.0.1:7781",
        UPSTASH_REDIS_REST_TOKEN: "t",
      },
      /^edgestream: UPSTASH_REDIS_REST_URL: holds credentials \('http:\/\/\[REDACTED\]@127\.0\.0\.1:7781\/'\), .*UPSTASH_REDIS_REST_TOKEN$/,
    ],
    // The client appends its calls' paths to the URL: after a query or fragment every call went
    // to `/` and failed as a command Redis refused (500), naming no setting.
    [
      { UPSTASH_REDIS_REST_URL: "http://127.0.0.1:7781#db", UPSTASH_REDIS_REST_TOKEN: "t" },
      /^edgestream: UPSTASH_REDIS_REST_URL: expected the REST URL without a query or fragment, got 'http:\/\/127\.0\.0\.1:7781\/' and a query or fragment \(not shown\), where the Upstash client would append its calls' paths$/,
    ],
    [
      {
        UPSTASH_REDIS_REST_URL: "https://eu1-quiet-owl-12345.upstash.io/?_token=tok-0123456789",
        UPSTASH_REDIS_REST_TOKEN: "t",
      },
      /^edgestream: UPSTASH_REDIS_REST_URL: expected the REST URL without a query or fragment, got 'https:\/\/eu1-quiet-owl-12345\.upstash\.io\/' and a query or fragment \(not shown\), where the Upstash client would append its calls' paths$/,
    ],
    // Characters fetch cannot put in the Authorization header: every call failed, not naming it.
    [
      { UPSTASH_REDIS_REST_URL: "http://127.0.0.1:7781", UPSTASH_REDIS_REST_TOKEN: "secret-tok€n" },
      /^edgestream: UPSTASH_REDIS_REST_TOKEN: holds a character an HTTP header cannot carry \(U\+20AC\): expected the token as Upstash shows it$/,
    ],
    [
      {
        UPSTASH_REDIS_REST_URL: "http://127.0.0.1:7781",
        UPSTASH_REDIS_REST_TOKEN: "secret\x01token",
      },
      /^edgestream: UPSTASH_REDIS_REST_TOKEN: holds a character an HTTP header cannot carry \(U\+0001\): expected the token as Upstash shows it$/,
    ],
    // Timers overflow past 2^31 ms: the process would stop at once, or sweep without pause.
    [
      { EDGESTREAM_SHUTDOWN: "30d" },
      /^edgestream: EDGESTREAM_SHUTDOWN: expected at most 24d, got '30d'$/,
    ],
    [
      { EDGESTREAM_SWEEP_EVERY: "25d" },
      /^edgestream: EDGESTREAM_SWEEP_EVERY: expected 0s \(no sweep timer\) or from 100ms to 100s, got '25d': a sweep closes at most 100 windows of a counter, so a rarer one lets 1s windows fall further behind at every sweep$/,
    ],
    // Open mode listens on loopback whatever HOST says, but refuses one that names no host.
    [
      { HOST: "999.1.1.1" },
      /^edgestream: HOST: expected an IP address or a host name, got '999\.1\.1\.1'$/,
    ],
    [
      { EDGESTREAM_KEYS: "admin:0123456789abcdef0123", HOST: "notahost.invalid" },
      /^edgestream: HOST: cannot listen on notahost\.invalid:\d+: /,
    ],
    // With keys too, a HOST that names no host is refused before the store is asked for the
    // webhook endpoints: it was refused only by the listener, after a line saying the store
    // (here one fetch refuses to reach) could not be, and without saying what HOST takes.
    [
      {
        EDGESTREAM_KEYS: "admin:0123456789abcdef0123",
        HOST: "0.0.0.0:8080",
        UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1",
        UPSTASH_REDIS_REST_TOKEN: "t",
      },
      /^edgestream: HOST: expected an IP address or a host name, got '0\.0\.0\.0:8080'$/,
    ],
  ] as const
) {
  Deno.test(`main.ts refuses ${JSON.stringify(vars)} in one line naming the setting`, async () => {
    assertOneLine(await startWith(vars), pattern);
  });
}

Deno.test("main.ts names the working directory when a relative EDGESTREAM_CONFIG cannot be read there, as the README says", async () => {
  const readme = (await Deno.readTextFile(`${root}README.md`)).replace(/\s+/g, " ");
  const claim =
    "A relative `EDGESTREAM_CONFIG` is read from the working directory, which the line names when the file cannot be read there";
  assert.ok(readme.includes(claim), claim);
  // A service manager chooses the working directory (systemd: `/`): without it in the line,
  // "No such file" is a puzzle where the file is in the checkout.
  const result = await startWith({ EDGESTREAM_CONFIG: "examples/missing.json" });
  const directory = root.replace(/\/$/, "");
  assertOneLine(result, /^edgestream: EDGESTREAM_CONFIG: Cannot read config file /);
  assert.ok(
    result.stderr.startsWith(
      `edgestream: EDGESTREAM_CONFIG: Cannot read config file examples/missing.json (relative to the working directory ${directory}): No such file or directory`,
    ),
    result.stderr,
  );
});

Deno.test("main.ts redacts the secrets a log line would in its one line of a startup mistake: a token query parameter, a key of EDGESTREAM_KEYS", async () => {
  const origin = await startWith({
    EDGESTREAM_ALLOWED_ORIGINS: "https://app.example.com/?access_token=tok-0123456789abcdef",
  });
  assertOneLine(
    origin,
    /^edgestream: EDGESTREAM_ALLOWED_ORIGINS: Cannot read allowed origin 'https:\/\/app\.example\.com\/\?access_token=\[REDACTED\]': /,
  );
  assert.doesNotMatch(origin.stderr, /tok-0123456789abcdef/);
  // Read once the settings are: the key pasted where the address goes.
  const key = "admin-key-0123456789abcdef";
  const host = await startWith({ EDGESTREAM_KEYS: `admin:${key}`, HOST: key });
  assertOneLine(host, /^edgestream: HOST: cannot listen on \[REDACTED\]:\d+: /);
  assert.doesNotMatch(host.stderr, /admin-key-0123/);
  // A hint of how a token is written is no token: it stays as it is.
  const hint = await startWith({
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_HEADERS: "Authorization: Bearer tok-0123456789abcdef",
  });
  assertOneLine(
    hint,
    /^edgestream: OTEL_EXPORTER_OTLP_HEADERS: expected name=value pairs separated by commas \(Authorization=Bearer%20…\), but pair 1 of 1 has no name before an '=' \(its text is not shown: it may hold a token\)$/,
  );
});

Deno.test("main.ts refuses a config file that gives a stream twice in one line naming it: JSON keeps the last, and the first would go without a word", async () => {
  const counters = '{"n": {"window": {"tumbling": "1m"}, "aggregate": "count"}}';
  await assertConfigRefused(
    `{"streams": {"orders": {"counters": ${counters}}, "orders": {"counters": ${counters}}}}`,
    /^edgestream: EDGESTREAM_CONFIG: Config file .*: streams\.orders: key 'orders' is given twice in one object \(JSON would keep only the last\); remove or rename one$/,
  );
});

Deno.test("main.ts refuses a config file with several bad values in one line naming them all", async () => {
  await assertConfigRefused(
    {
      streams: {
        orders: { counters: { n: { window: { tumbling: "1x" }, aggregate: "count" } } },
        "bad name": { counters: {} },
      },
    },
    /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.orders\.counters\.n\.window\.tumbling: .*; /,
  );
});

Deno.test("main.ts refuses a config file with maxGroups on a session counter, which does nothing, in one line naming its path", async () => {
  await assertConfigRefused(
    {
      streams: {
        visits: {
          counters: { s: { window: { session: "30m" }, aggregate: "count", maxGroups: 10 } },
        },
      },
    },
    /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.visits\.counters\.s\.maxGroups: only tumbling, hopping and sliding windows have maxGroups; this window is session, whose cap is maxSessions: remove maxGroups$/,
  );
});

Deno.test("main.ts refuses a config file with time.maxFuture on a stream without time.field, which does nothing, in one line naming its path", async () => {
  await assertConfigRefused(
    {
      streams: {
        visits: {
          time: { maxFuture: "1h" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
    /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.visits\.time\.maxFuture: only a stream with time\.field has maxFuture; this one has none, so each event is timed when it is received, never ahead of the clock: remove maxFuture or set time\.field$/,
  );
});

Deno.test("main.ts says a stream's compile problem (an alert defined twice, a schema not of an object) in one line starting 'Invalid config:', as a schema's", async () => {
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  const cases: [object, RegExp][] = [
    [
      {
        counters,
        alerts: [
          { name: "big", counter: "n", when: "value > 1.0" },
          { name: "big", counter: "n", when: "value > 2.0" },
        ],
      },
      /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.orders\.alerts\[1\]\.name: Alert 'big' is defined twice$/,
    ],
    [
      { schema: { type: "string" }, counters },
      /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.orders\.schema: Event schema must have type 'object', got "string"$/,
    ],
  ];
  for (const [orders, line] of cases) {
    await assertConfigRefused({ streams: { orders } }, line);
  }
});

Deno.test("main.ts refuses an endless config file (/dev/zero) in one line instead of reading it forever", async () => {
  assertOneLine(
    await startWith({ EDGESTREAM_CONFIG: "/dev/zero" }),
    /^edgestream: EDGESTREAM_CONFIG: Config file \/dev\/zero is larger than 16777216 bytes \(16 MiB\), the most it may have: /,
  );
});

Deno.test("main.ts refuses a named pipe no process writes to as its config file in one line instead of waiting forever", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.fifo`;
    await new Deno.Command("mkfifo", { args: [path] }).output();
    assertOneLine(
      await startWith({ EDGESTREAM_CONFIG: path }),
      /^edgestream: EDGESTREAM_CONFIG: Config file .*config\.fifo is a named pipe \(FIFO\) that no process opened for writing within 5 s: /,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts with OTEL_DENO=true and OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports over gRPC, a protocol Deno knows beside http/protobuf and http/json", async () => {
  const exports: Array<{ path: string; type: string | null }> = [];
  // Deno.serve takes HTTP/2 without TLS from a client that speaks it at once, as gRPC does.
  const receiver = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      await request.arrayBuffer();
      exports.push({
        path: new URL(request.url).pathname,
        type: request.headers.get("content-type"),
      });
      return new Response(null, {
        headers: { "content-type": "application/grpc", "grpc-status": "0" },
      });
    },
  );
  const server = await startServerProcess("otlp-grpc", {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.addr.port}`,
    OTEL_METRIC_EXPORT_INTERVAL: "300",
  });
  try {
    const deadline = Date.now() + 15_000;
    while (!exports.some((item) => item.path.endsWith("MetricsService/Export"))) {
      assert.ok(Date.now() < deadline, `no gRPC metrics export: ${JSON.stringify(exports)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const metrics = exports.find((item) => item.path.endsWith("MetricsService/Export"))!;
    assert.equal(metrics.path, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export");
    assert.match(metrics.type ?? "", /^application\/grpc/);
  } finally {
    await server.stop();
    await receiver.shutdown();
  }
});

Deno.test("main.ts with OTEL_DENO=true and an OTEL_EXPORTER_OTLP_PROTOCOL Deno does not know stops in Deno's one line naming it, before edgestream runs", async () => {
  // RUST_BACKTRACE=1 (set on some machines) adds Deno's own backtrace to any error of its.
  const vars = { OTEL_EXPORTER_OTLP_PROTOCOL: "bogus", RUST_BACKTRACE: "0" };
  const refused = await startWith({ ...vars, OTEL_DENO: "true" });
  assert.equal(refused.code, 1, refused.stderr);
  assert.deepEqual(refused.stderr.trim().split("\n"), [
    "error: Env var OTEL_EXPORTER_OTLP_PROTOCOL specifies an unsupported protocol: bogus",
  ]);
  // Without OTEL_DENO=true Deno does not read it: the server starts (and then stops at the port).
  const started = await startWith({ ...vars, OTEL_DENO: "false", PORT: "99999" });
  assert.match(started.stderr, /^edgestream: PORT: /);
});

Deno.test("main.ts refuses a config file that is not JSON (YAML, /etc/shadow) in one line naming where, quoting none of its text", async () => {
  // V8's JSON.parse message quotes the start of the text, newlines and all: for
  // EDGESTREAM_CONFIG=/etc/shadow, a password hash.
  for (
    const [text, where] of [
      ["streams:\n  orders:\n    counters: {}\n", "Unexpected character at line 1, column 1"],
      [
        "root:$6$s4lt$h4sh3dpassw0rd:19000:0:99999:7:::\n",
        "Unexpected character at line 1, column 1",
      ],
      [
        '{"streams": {}}\nroot:$6$s4lt$h4sh3d',
        "Unexpected non-whitespace character after JSON at line 2, column 1",
      ],
      ['{"streams": {"s": ro0t$6$s4lt}}', "Unexpected character at line 1, column 19"],
    ]
  ) {
    const result = await assertConfigRefused(
      text,
      new RegExp(`^edgestream: EDGESTREAM_CONFIG: Config file .* is not valid JSON: ${where}\n?$`),
      { suffix: ".yaml" },
    );
    assert.doesNotMatch(result.stderr, /streams:|root|s4lt|h4sh|ro0t/, result.stderr);
  }
});

Deno.test("main.ts writes a carriage return or other control character in its one line as an escape: a terminal would write the rest over the setting's name", async () => {
  // A value from an env file with CRLF line ends.
  const result = await startWith({ EDGESTREAM_ENV: "production\r" });
  assertOneLine(
    result,
    /^edgestream: EDGESTREAM_ENV: expected production or development, got 'production\\r'$/,
  );
  assert.doesNotMatch(result.stderr, /\r/);
  // A config file path with a CR and an escape sequence: the line names the file.
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s\r\x1b[2J\r.json`;
    await Deno.writeTextFile(path, "s:\r\x1b[2J\r");
    const quoted = await startWith({ EDGESTREAM_CONFIG: path });
    assertOneLine(
      quoted,
      /^edgestream: EDGESTREAM_CONFIG: Config file .*s\\r\\x1b\[2J\\r\.json is not valid JSON: Unexpected character at line 1, column 1/,
    );
    assert.ok(!quoted.stderr.includes("\r") && !quoted.stderr.includes("\x1b"), quoted.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts in a checkout whose path has a space reads its default config file (examples/config.json)", async () => {
  const copy = await checkoutWithSpace();
  try {
    const server = await startServerProcess("space", {}, {
      denoArgs: ["run", "--cached-only", ...START_FLAGS, `${copy}/src/main.ts`],
    });
    try {
      // Logged once the config streams are recorded, after "listening on".
      const expected = `1 stream(s) from ${copy}/examples/config.json: orders`;
      const deadline = Date.now() + 10_000;
      while (!server.output().includes(expected) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(server.output().includes(expected), server.output());
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(copy.slice(0, copy.indexOf("/my projects/")), { recursive: true });
  }
});

Deno.test("main.ts refuses a port in use in one line that names it", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (holder.addr as Deno.NetAddr).port;
    const result = await startWith({ PORT: String(port), HOST: "127.0.0.1" });
    assertOneLine(
      result,
      new RegExp(`^edgestream: PORT: 127\\.0\\.0\\.1:${port} is already in use$`),
    );
  } finally {
    holder.close();
  }
});

Deno.test("main.ts with its port in use and a store it cannot reach says only the port, in one line", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // A port nothing listens on: every store call fails at once.
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const storePort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  try {
    const port = (holder.addr as Deno.NetAddr).port;
    const result = await startWith({
      PORT: String(port),
      HOST: "127.0.0.1",
      EDGESTREAM_KEYS: "admin:0123456789abcdef0123",
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${storePort}`,
      UPSTASH_REDIS_REST_TOKEN: "t",
    });
    // The store is only logged (the server runs without it); the port stops it: fixed first.
    assertOneLine(
      result,
      new RegExp(`^edgestream: PORT: 127\\.0\\.0\\.1:${port} is already in use$`),
    );
    assert.doesNotMatch(result.stdout, /Cannot|unavailable/, result.stdout);
  } finally {
    holder.close();
  }
});

function env(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

/** The status of a GET sent with `host` as its Host header, over a raw connection. */
async function statusFor(port: number, path: string, host: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
  );
  // Reading to the end closes the connection.
  const reply = await new Response(conn.readable).text();
  return Number(reply.split(" ")[1]);
}

Deno.test("serve() answers EDGESTREAM_ALLOWED_HOSTS in open mode and refuses other hosts", async () => {
  const config = await configFromEnv(env({
    PORT: "0",
    EDGESTREAM_SWEEP_EVERY: "0s",
    EDGESTREAM_ALLOWED_HOSTS: "dev.example.com",
  }));
  const server = await serve(config);
  try {
    const { port } = server.addr;
    assert.equal(await statusFor(port, "/v1/streams", `dev.example.com:${port}`), 200);
    assert.equal(await statusFor(port, "/v1/streams", `localhost:${port}`), 200);
    assert.equal(await statusFor(port, "/v1/streams", `attacker.example:${port}`), 421);
  } finally {
    assert.equal((await server.stop()).clean, true);
  }
});

Deno.test("main.ts refuses a schema or expression nested too deep in one line naming its path", async () => {
  let schema: Record<string, unknown> = { type: "object" };
  for (let level = 0; level < 2_500; level++) schema = { properties: { a: schema } };
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  for (
    const [stream, pattern] of [
      [
        { schema, counters },
        /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.s\.schema: .*nests deeper than 128 levels/,
      ],
      [
        { transform: [{ filter: `${"!".repeat(4_000)}true` }], counters },
        /^edgestream: EDGESTREAM_CONFIG: Invalid config: streams\.s\.transform\[0\]\.filter: .*nests deeper than 250 levels/,
      ],
    ] as const
  ) {
    await assertConfigRefused({ streams: { s: stream } }, pattern);
  }
});

Deno.test("main.ts on an IPv6 address says a URL that works: http://[::1]:port", async () => {
  const server = await startServerProcess("ipv6", { HOST: "::1" });
  try {
    const line = server.output().split("\n").find((text) => text.includes('"listening on '))!;
    const { message, url } = JSON.parse(line);
    assert.equal(message, `listening on http://[::1]:${server.port}`);
    const res = await fetch(new URL("/healthz", url));
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    await server.stop();
  }
});

Deno.test("createServerApp() gives the live hub the README's figures: the log read every 150 ms, at most 4 updates a second", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const config = await configFromEnv({ get: () => undefined });
  const built = createServerApp(config);
  try {
    // Across the README's line breaks, wherever its paragraphs wrap.
    assert.match(readme, /the log is read again\s+every\s+150\s+ms/);
    assert.equal(built.live.settings.pollMs, 150);
    assert.match(readme, /at\s+most\s+4\s+times\s+a\s+second\s+per\s+counter\s+and\s+group/);
    assert.equal(built.live.settings.updateIntervalMs, 1000 / 4);
  } finally {
    await built.live.close();
    config.streams.stop();
  }
});

Deno.test("main.ts on the memory store forgets at a restart what was made at run time: keys, streams, webhooks, counts", async () => {
  const admin = "restart-admin-key-0123456789";
  const vars = {
    EDGESTREAM_KEYS: `admin:${admin}`,
    EDGESTREAM_SWEEP_EVERY: "0s",
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
  };
  const auth = { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" };
  const call = async (url: string, init: RequestInit = {}) => {
    const response = await fetch(url, init);
    return { status: response.status, body: await response.text() };
  };
  const send = (base: string, key: string, stream: string) =>
    call(`${base}/v1/streams/${stream}/events`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ id: "o-1", country: "NL", amount: 5 }),
    });
  const counted = async (base: string) => {
    const read = await call(`${base}/v1/streams/orders/counters/orders_per_minute/current`, {
      headers: auth,
    });
    assert.equal(read.status, 200, read.body);
    return JSON.parse(read.body).windows.reduce(
      (sum: number, row: { value: number }) => sum + row.value,
      0,
    );
  };

  const before = await startServerProcess("memory-before", vars);
  let key: string;
  try {
    const put = await call(`${before.url}/v1/streams/signups`, {
      method: "PUT",
      headers: auth,
      body: JSON.stringify({
        counters: { n: { window: { tumbling: "1h" }, aggregate: "count" } },
      }),
    });
    assert.equal(put.status, 201, put.body);
    const created = await call(`${before.url}/v1/keys`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ scopes: ["ingest"] }),
    });
    assert.equal(created.status, 201, created.body);
    key = JSON.parse(created.body).key;
    const hook = await call(`${before.url}/v1/webhooks`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ url: "http://127.0.0.1:9/hook", eventTypes: ["window.closed"] }),
    });
    assert.equal(hook.status, 201, hook.body);
    const hooks = await call(`${before.url}/v1/webhooks`, { headers: auth });
    assert.equal(JSON.parse(hooks.body).webhooks.length, 1);
    assert.equal((await send(before.url, key, "signups")).status, 202);
    assert.equal((await send(before.url, key, "orders")).status, 202);
    assert.equal(await counted(before.url), 1);
  } finally {
    // A crash: nothing is written anywhere on the way out.
    before.signal("SIGKILL");
    await before.status;
  }

  const after = await startServerProcess("memory-after", vars);
  try {
    assert.equal((await send(after.url, key, "orders")).status, 401, "the run-time key is gone");
    const stream = await call(`${after.url}/v1/streams/signups`, { headers: auth });
    assert.equal(stream.status, 404, stream.body);
    const hooks = await call(`${after.url}/v1/webhooks`, { headers: auth });
    assert.equal(hooks.status, 200, hooks.body);
    assert.deepEqual(JSON.parse(hooks.body).webhooks, []);
    // The config file's stream is served again, its counts from zero.
    assert.equal(await counted(after.url), 0);
  } finally {
    await after.stop();
  }
});

Deno.test("src/main.ts stops within EDGESTREAM_SHUTDOWN on SIGTERM right after it listens, while the store is still slow to record the config streams", async () => {
  // A "Redis" that takes connections and never answers: recording the config streams, after
  // "listening on", waits for the store's deadline (5 s).
  const silent = silentListener();
  try {
    const server = await startServerProcess("slow-store", {
      EDGESTREAM_KEYS: "admin:0123456789abcdef0123",
      UPSTASH_REDIS_REST_URL: silent.url,
      UPSTASH_REDIS_REST_TOKEN: "silent-token-0123456789",
      EDGESTREAM_SHUTDOWN: "500ms",
    });
    const started = performance.now();
    server.signal("SIGTERM");
    const status = await server.status;
    const elapsedMs = performance.now() - started;
    assert.equal(status.code, 0, server.output());
    assert.ok(elapsedMs < 2_000, `stopped after ${Math.round(elapsedMs)} ms:\n${server.output()}`);
  } finally {
    await silent.close();
  }
});

redisTest(
  "serve() reports the webhook backlog gauges under a lease of 3 × EDGESTREAM_SWEEP_EVERY it renews while it sweeps, and never takes it with 0s",
  async (fixture) => {
    const base = {
      PORT: "0",
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    };
    const lease = "es:{wh}:lease:telemetry:webhook-backlog";
    const ttl = () =>
      withDirect(fixture.redisUrl, (send) => send("PTTL", lease)) as Promise<number>;
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

    const idle = await serve(await configFromEnv(env({ ...base, EDGESTREAM_SWEEP_EVERY: "0s" })));
    try {
      await pause(1_000);
      assert.equal(await ttl(), -2, "a process with no sweep timer took the lease");
    } finally {
      assert.equal((await idle.stop()).clean, true);
    }

    const sweeping = await serve(
      await configFromEnv(env({ ...base, EDGESTREAM_SWEEP_EVERY: "300ms" })),
    );
    try {
      // Sampled over more than three leases: each one taken lives at most 900 ms, and more than
      // two sweeps (600 ms); renewed, it is still held at the end.
      const seen: number[] = [];
      for (const until = Date.now() + 3_000; Date.now() < until; await pause(20)) {
        const left = await ttl();
        if (left > 0) seen.push(left);
      }
      assert.ok(seen.length > 0, "no lease taken");
      assert.ok(Math.max(...seen) <= 900, `a lease longer than 3 sweeps: ${Math.max(...seen)} ms`);
      assert.ok(Math.max(...seen) > 600, `no lease longer than 2 sweeps: ${Math.max(...seen)} ms`);
      assert.ok(await ttl() > 0, "the lease was not renewed");
    } finally {
      assert.equal((await sweeping.stop()).clean, true);
    }
    assert.equal(await ttl(), -2, "the stop did not give the lease back");
  },
);

Deno.test("serve() says a store unavailable to the webhook backlog count once as a warning, not an error with its stack after every sweep, and when it counts again", async () => {
  await collectingLogs(async (records) => {
    const config = await configFromEnv(env({ PORT: "0", EDGESTREAM_SWEEP_EVERY: "100ms" }));
    let unavailable = true;
    const deliveries = config.deliveries;
    // What the backlog gauges use of it (serve() gives it nothing else).
    config.deliveries = {
      acquireLease: (name: string, ttlMs: number) => deliveries.acquireLease(name, ttlMs),
      releaseLease: (name: string, token: string) => deliveries.releaseLease(name, token),
      countDeliveries: () =>
        unavailable
          ? Promise.reject(new StoreUnavailableError("Redis did not answer countDeliveries"))
          : deliveries.countDeliveries(),
    } as unknown as typeof deliveries;
    const server = await serve(config);
    try {
      // Sweeps every 100 ms: several counts fail.
      await new Promise((resolve) => setTimeout(resolve, 800));
      unavailable = false;
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      assert.equal((await server.stop()).clean, true);
    }
    const counts = records.filter((record) => /webhook deliveries/i.test(messageOf(record)));
    assert.deepEqual(
      counts.map((record) => [record.level, messageOf(record).replace(/ since .*/, "")]),
      [
        [
          "warning",
          "Cannot count webhook deliveries: StoreUnavailableError: Redis did not answer countDeliveries",
        ],
        [
          "info",
          `Webhook deliveries counted again after ${counts[1]?.properties.failures} failures`,
        ],
      ],
    );
    assert.ok(Number(counts[1].properties.failures) > 2, String(counts[1].properties.failures));
  }, { level: "info" });
});

redisTest(
  "main.ts with OTEL_DENO=true and Redis runs its timers' store calls in traces of their own, not under the fetch of its first store call",
  async (fixture) => {
    const receiver = startOtlpReceiver();
    const server = await startServerProcess("otlp-timers", {
      ...otelEnv(receiver),
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_SWEEP_EVERY: "100ms",
    });
    try {
      // Deno's spans of the fetches to Redis: the startup's, then those of sweeps and polls.
      const storeFetches = () =>
        receiver.spans().filter((span) =>
          span.scope !== "edgestream" &&
          String(span.attributes["url.full"] ?? "").startsWith(fixture.restUrl)
        );
      await eventually(() => assert.ok(storeFetches().length >= 40, `${storeFetches().length}`));
      const fetches = storeFetches();
      const ids = new Set(fetches.map((span) => span.spanId));
      const nested = fetches.filter((span) => ids.has(span.parentSpanId));
      assert.deepEqual(
        nested.length,
        0,
        `${nested.length} of ${fetches.length} store fetches are children of another one`,
      );
      // Each its own trace: a process up for days must not grow one trace without end.
      const traces = new Set(fetches.map((span) => span.traceId));
      assert.equal(traces.size, fetches.length);
    } finally {
      await server.stop();
      await receiver.close();
    }
  },
);

Deno.test("serveApp() with ready answers a request only once ready resolves (main.ts: the webhook endpoints loaded), /healthz and /readyz at once", async () => {
  const config = await configFromEnv({ get: () => undefined });
  const built = createServerApp(config);
  const ready = Promise.withResolvers<void>();
  let released = false;
  const serving = serveApp(built, {
    hostname: "127.0.0.1",
    port: 0,
    shutdownMs: 2_000,
    onListenError: (error) => {
      throw error;
    },
    ready: ready.promise,
  });
  try {
    const base = `http://127.0.0.1:${serving.addr.port}`;
    const answered = fetch(`${base}/v1/streams`).then((res) => {
      assert.ok(released, "answered before ready resolved");
      return res;
    });
    // Probes wait for nothing: a store that does not answer would hold them its whole deadline.
    // Asked while ready is held, each must answer (a probe that waits for ready times out).
    for (const path of ["/healthz", "/readyz"]) {
      const probe = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(PROBE_WAIT_MS) });
      assert.equal(probe.status, 200, path);
      await probe.body?.cancel();
    }
    // Only now is the held request let through.
    released = true;
    ready.resolve();
    const res = await answered;
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    await serving.stop(async () => {});
    await built.live.close();
    config.streams.stop();
    await config.webhooks.close();
  }
});

Deno.test("serve() listens before the webhook endpoints load: /healthz answers, /readyz is 503 starting, other requests wait until they are loaded", async () => {
  const config = await configFromEnv(env({ PORT: "0", EDGESTREAM_SWEEP_EVERY: "0s" }));
  // The endpoints' listing held, as a store that does not answer holds it.
  const listing = Promise.withResolvers<void>();
  const refresh = config.webhooks.refreshEndpoints.bind(config.webhooks);
  config.webhooks.refreshEndpoints = async () => {
    await listing.promise;
    return refresh();
  };
  const listening = Promise.withResolvers<RunningServer>();
  const started = serve(config, { onListening: (server) => listening.resolve(server) });
  const server = await listening.promise;
  let loaded = false;
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const read = fetch(`${base}/v1/streams`).then((res) => {
      assert.ok(loaded, "answered before the webhook endpoints were loaded");
      return res;
    });
    // Asked while the listing is held, the probes must answer (one that waits for the webhook
    // endpoints times out); the held request waits until the listing is let through below.
    const body = await probesWhileStarting(base);
    assert.equal(body.store, "memory");
    assert.match(String(body.error), /webhook endpoints are loading/);
    assert.equal(typeof body.requestId, "string");
    loaded = true;
    listing.resolve();
    const res = await read;
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await started;
    const after = await fetch(`${base}/readyz`);
    assert.equal(after.status, 200);
    assert.equal((await after.json()).status, "ready");
  } finally {
    // A failed probe above left the read held: let through here, it is no failure of its own.
    loaded = true;
    listing.resolve();
    await started;
    assert.equal((await server.stop()).clean, true);
  }
});

// deploy/main.ts ignores EDGESTREAM_DRAIN (Deploy asks no /readyz, and the drain would take from
// the 5 s before its kill): tests/deploy/main_test.ts shows it stops without one.
for (const entry of ["src/main.ts"]) {
  Deno.test(`${entry} with EDGESTREAM_DRAIN keeps listening after SIGTERM: /readyz answers 503 shutting_down on a new connection, ingest is still served, then it stops`, async () => {
    // The three requests below must land within the drain: 6 s leaves room for a loaded machine
    // (with 2 s, the drain could end first). Without a drain the listener closes at once and
    // they fail.
    const server = await startServerProcess(`drain ${entry}`, {
      EDGESTREAM_SWEEP_EVERY: "0s",
      EDGESTREAM_SHUTDOWN: "8s",
      EDGESTREAM_DRAIN: "6s",
    }, { entry });
    // Each request on a connection of its own, as a load balancer's probe opens one.
    const onNewConnection = async (path: string, init: RequestInit = {}) => {
      using client = Deno.createHttpClient({});
      const response = await fetch(`${server.url}${path}`, { ...init, client });
      return { status: response.status, headers: response.headers, body: await response.text() };
    };
    try {
      assert.equal((await onNewConnection("/readyz")).status, 200);
      server.signal("SIGTERM");
      // The drain line: the stop has begun.
      await eventually(() => assert.match(server.output(), /draining for 6000 ms/));
      const ready = await onNewConnection("/readyz");
      assert.equal(ready.status, 503, ready.body);
      assert.equal(JSON.parse(ready.body).status, "shutting_down");
      assert.equal(ready.headers.get("Retry-After"), "1");
      const sent = await onNewConnection("/v1/streams/orders/events", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ id: "drain-1", country: "NL", amount: 5 }),
      });
      assert.ok(sent.status >= 200 && sent.status < 300, `${sent.status} ${sent.body}`);
      const read = await onNewConnection("/v1/streams/orders/counters/orders_per_minute/current");
      assert.equal(read.status, 200, read.body);
      const counted = JSON.parse(read.body).windows.reduce(
        (sum: number, row: { value: number }) => sum + row.value,
        0,
      );
      assert.equal(counted, 1);
      const status = await server.status;
      assert.equal(status.code, 0, server.output());
      assert.match(server.output(), /stopped in \d+ ms/);
    } finally {
      await server.stop();
    }
  });
}

Deno.test("src/main.ts exits at once with status 1 on a second SIGTERM during its EDGESTREAM_DRAIN", async () => {
  const server = await startServerProcess("drain-twice", {
    EDGESTREAM_SWEEP_EVERY: "0s",
    EDGESTREAM_SHUTDOWN: "20s",
    EDGESTREAM_DRAIN: "15s",
  });
  try {
    server.signal("SIGTERM");
    await eventually(() => assert.match(server.output(), /draining for 15000 ms/));
    // Past the 250 ms within which signals are the same stop.
    await new Promise((resolve) => setTimeout(resolve, 400));
    server.signal("SIGTERM");
    const status = await server.status;
    assert.equal(status.code, 1, server.output());
    assert.match(server.output(), /SIGTERM again: exiting now/);
  } finally {
    await server.stop();
  }
});
