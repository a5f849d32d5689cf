/**
 * `deploy/main.ts` run as Deno Deploy runs it: the platform's variables set
 * (`DENO_DEPLOY`, `DENO_TIMELINE`), Redis through the Upstash bridge. It
 * registers its cron before anything else, serves, runs the sweep from the
 * cron, and refuses the setups that are unsafe in production.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type RedisFixture, redisTest, withDirect } from "../_redis.ts";
import { configFromEnv } from "../../src/env.ts";
import { createApp } from "../../src/app.ts";
import { Receiver } from "../fanout/webhooks/_receiver.ts";
import { probesWhileStarting, silentListener } from "../_server_process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const harness = fileURLToPath(new URL("./_deploy_harness.ts", import.meta.url));
const KEY = "admin-key-0123456789abcdef";

interface Run {
  child: Deno.ChildProcess;
  output: () => string;
  seen: (pattern: RegExp) => Promise<RegExpMatchArray>;
  done: Promise<{ code: number; output: string }>;
}

/** Starts the harness with the platform's variables plus `vars` over the machine's environment. */
function runDeploy(vars: Record<string, string>): Run {
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    DENO_DEPLOY: "true",
    DENO_TIMELINE: "production",
    PORT: "0",
    NO_COLOR: "1",
    ...vars,
  };
  for (const name of ["UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "EDGESTREAM_KEYS"]) {
    if (!(name in vars)) delete env[name];
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", "--allow-all", harness],
    cwd: root,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let printed = "";
  const waiters: { pattern: RegExp; resolve: (match: RegExpMatchArray) => void }[] = [];
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      printed += text;
      for (const waiter of waiters) {
        const match = printed.match(waiter.pattern);
        if (match) waiter.resolve(match);
      }
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const done = Promise.all([child.status, drained]).then(([status]) => ({
    code: status.code,
    output: printed,
  }));
  return {
    child,
    output: () => printed,
    done,
    seen: (pattern) =>
      new Promise((resolve, reject) => {
        const match = printed.match(pattern);
        if (match) return resolve(match);
        waiters.push({ pattern, resolve });
        setTimeout(() => reject(new Error(`no ${pattern} in:\n${printed}`)), 30_000);
      }),
  };
}

/**
 * An HTTP proxy between the isolate and the fixture's Upstash bridge: each call, once its body is
 * read, goes through `before` first, which may hold it (a slow store) or answer it instead.
 */
function bridgeProxy(
  fixture: RedisFixture,
  before: () => Response | undefined | void | Promise<Response | undefined | void>,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const body = await request.text();
    const instead = await before();
    if (instead) return instead;
    const headers = new Headers(request.headers);
    headers.delete("host");
    const reply = await fetch(`${fixture.restUrl}${new URL(request.url).pathname}`, {
      method: request.method,
      headers,
      body,
    });
    // Decoded by fetch: passed on as it was answered, without its content encoding.
    return new Response(await reply.text(), {
      status: reply.status,
      headers: { "content-type": reply.headers.get("content-type") ?? "application/json" },
    });
  });
}

function redisVars(fixture: RedisFixture): Record<string, string> {
  return {
    UPSTASH_REDIS_REST_URL: fixture.restUrl,
    UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    EDGESTREAM_PREFIX: "deploy",
  };
}

redisTest(
  "deploy/main.ts on the production timeline registers its cron before anything else and serves",
  async (fixture) => {
    const run = runDeploy({
      ...redisVars(fixture),
      EDGESTREAM_KEYS: `admin:${KEY},ingest:${KEY}1`,
    });
    try {
      const [, port] = await run.seen(/listening on http:\/\/[^\s"]*?:(\d+)"/);
      const lines = run.output().split("\n").filter((line) => line.startsWith("harness:"));
      assert.equal(lines[0], "harness: cron edgestream sweep * * * * *", run.output());
      assert.ok(lines.includes("harness: fetch"), "the app reads its webhook endpoints from Redis");
      const res = await fetch(`http://127.0.0.1:${port}/v1/streams/orders/events`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${KEY}1` },
        body: JSON.stringify({ id: "o1", country: "DE", amount: 5 }),
      });
      assert.equal(res.status, 202, await res.text());
    } finally {
      run.child.kill("SIGTERM");
      await run.done;
    }
  },
);

redisTest(
  "deploy/main.ts runs the sweep from its cron handler, and gives back the backlog gauges' lease when Deploy stops it",
  async (fixture) => {
    const run = runDeploy({
      ...redisVars(fixture),
      EDGESTREAM_KEYS: `admin:${KEY}`,
      HARNESS_SWEEP: "1",
    });
    const lease = () =>
      withDirect(
        fixture.redisUrl,
        (send) => send("GET", "deploy:{wh}:lease:telemetry:webhook-backlog"),
      );
    try {
      await run.seen(/harness: swept/);
      assert.doesNotMatch(run.output(), /sweep failed|Error/);
      assert.notEqual(await lease(), null, "the cron's sweep took the lease");
      // For 150 s: over two cron runs, a minute apart.
      const ttl = await withDirect(
        fixture.redisUrl,
        (send) => send("PTTL", "deploy:{wh}:lease:telemetry:webhook-backlog"),
      ) as number;
      assert.ok(ttl > 140_000 && ttl <= 150_000, `the lease lives ${ttl} ms`);
      run.child.kill("SIGINT");
      assert.equal((await run.done).code, 0, run.output());
      assert.equal(await lease(), null, "the lease outlived the isolate");
    } finally {
      try {
        run.child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await run.done;
    }
  },
);

for (
  const [name, vars, pattern] of [
    [
      "the memory store",
      { EDGESTREAM_KEYS: `admin:${KEY}` },
      /^edgestream: UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: Deno Deploy production timeline \(DENO_TIMELINE=production\) needs the Redis store; set both \(or EDGESTREAM_ALLOW_MEMORY=true for a one-instance demo\)$/,
    ],
    [
      "open mode (no keys)",
      {},
      /^edgestream: EDGESTREAM_KEYS: Deno Deploy production timeline \(DENO_TIMELINE=production\) needs API keys; set EDGESTREAM_KEYS=/,
    ],
  ] as const
) {
  Deno.test(`deploy/main.ts on the production timeline refuses ${name} in one line, after registering its cron`, async () => {
    const run = runDeploy(vars);
    const { code, output } = await run.done;
    assert.equal(code, 1, output);
    const lines = output.trim().split("\n");
    assert.equal(lines[0], "harness: cron edgestream sweep * * * * *");
    assert.equal(lines.length, 2, output);
    assert.match(lines[1], pattern);
  });
}

Deno.test("deploy/main.ts serves the memory store in production with EDGESTREAM_ALLOW_MEMORY=true", async () => {
  const run = runDeploy({ EDGESTREAM_KEYS: `admin:${KEY}`, EDGESTREAM_ALLOW_MEMORY: "true" });
  try {
    const [, host, port] = await run.seen(/listening on http:\/\/([^\s/"]*?):(\d+)"/);
    assert.equal(host, "0.0.0.0", "with keys, every interface, as HOST's default");
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    assert.deepEqual(await res.json(), { status: "ready", store: "memory" });
    // Its notices after "listening on", as src/main.ts logs them.
    await run.seen(/No UPSTASH_REDIS_REST_URL/);
    const messages = run.output().split("\n").filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line).message as string);
    const listening = messages.findIndex((message) => message.startsWith("listening on"));
    const warning = messages.findIndex((message) => message.startsWith("No UPSTASH_REDIS"));
    assert.ok(listening >= 0 && warning > listening, messages.join("\n"));
  } finally {
    run.child.kill("SIGTERM");
    await run.done;
  }
});

Deno.test("deploy/main.ts on a preview timeline starts without keys or Redis, listening on loopback only", async () => {
  const run = runDeploy({ DENO_TIMELINE: "preview/abc123" });
  try {
    const [, host] = await run.seen(/listening on http:\/\/([^\s/"]*?):\d+"/);
    // Open mode, as src/main.ts: no other machine reaches it.
    assert.equal(host, "127.0.0.1");
    // Its own JSON line, not Deno.serve's plain "Listening on": every line is one JSON object.
    const listening = run.output().split("\n").find((line) => line.includes('"listening on '))!;
    assert.match(JSON.parse(listening).message, /^listening on http:\/\/127\.0\.0\.1:\d+$/);
    assert.doesNotMatch(run.output(), /Listening on/);
  } finally {
    run.child.kill("SIGTERM");
    await run.done;
  }
});

Deno.test("deploy/main.ts warns, naming it, of an EDGESTREAM_SHUTDOWN of 5s or more, which Deploy's kill 5 s after SIGINT would cut short", async () => {
  const warning = /EDGESTREAM_SHUTDOWN: (\S+) is not under the 5 s Deno Deploy gives/;
  for (const [shutdown, warned] of [["5s", true], ["10s", true], ["4999ms", false]] as const) {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", EDGESTREAM_SHUTDOWN: shutdown });
    try {
      // The last notice of the memory store's isolate: the others came before it.
      await run.seen(/No UPSTASH_REDIS_REST_URL/);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const messages = run.output().split("\n").filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line).message as string);
      const found = messages.map((message) => message.match(warning)).find((match) => match);
      assert.equal(
        found?.[1],
        warned ? shutdown : undefined,
        `${shutdown}: ${messages.join("\n")}`,
      );
      if (warned) assert.match(found!.input!, /set it under 5s \(default 4s\)$/);
    } finally {
      run.child.kill("SIGTERM");
      await run.done;
    }
  }
  // The default is under it.
  const run = runDeploy({ DENO_TIMELINE: "preview/abc123" });
  try {
    await run.seen(/No UPSTASH_REDIS_REST_URL/);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.doesNotMatch(run.output(), /EDGESTREAM_SHUTDOWN/);
  } finally {
    run.child.kill("SIGTERM");
    await run.done;
  }
});

Deno.test("deploy/main.ts warns, naming it, that EDGESTREAM_SWEEP_EVERY has no effect there: its cron sweeps every minute", async () => {
  for (const sweepEvery of ["0s", "10s", ""]) {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", EDGESTREAM_SWEEP_EVERY: sweepEvery });
    try {
      await run.seen(/No UPSTASH_REDIS_REST_URL/);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const messages = run.output().split("\n").filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line).message as string);
      const found = messages.find((message) => message.startsWith("EDGESTREAM_SWEEP_EVERY"));
      if (sweepEvery === "") {
        // Empty is not set, as for every setting.
        assert.equal(found, undefined);
        continue;
      }
      assert.equal(
        found,
        `EDGESTREAM_SWEEP_EVERY has no effect on Deno Deploy, where Deno.cron runs the sweep every minute (got ${sweepEvery}); it sets the timer of a self-hosted process (src/main.ts)`,
      );
    } finally {
      run.child.kill("SIGTERM");
      await run.done;
    }
  }
});

Deno.test("deploy/main.ts warns once, naming it, that EDGESTREAM_DRAIN is ignored there, and stops without a drain: Deploy asks no /readyz", async () => {
  for (const drain of ["2s", "0s", ""]) {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", EDGESTREAM_DRAIN: drain });
    try {
      await run.seen(/No UPSTASH_REDIS_REST_URL/);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const messages = run.output().split("\n").filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line).message as string);
      const found = messages.filter((message) => message.startsWith("EDGESTREAM_DRAIN"));
      // `0s` is no drain (the default), and empty is not set, as for every setting.
      if (drain !== "2s") {
        assert.deepEqual(found, [], drain);
        continue;
      }
      assert.deepEqual(found, [
        "EDGESTREAM_DRAIN is ignored on Deno Deploy, whose routing asks no /readyz (got 2s): a stopping isolate does not drain, keeping the 5 s before its kill for its stop; it is for a self-hosted process behind a load balancer that probes /readyz (src/main.ts)",
      ]);
      // Before, the server was given the drain: the stop spent 2 s of Deploy's 5 s serving on.
      await run.seen(/listening on/);
      run.child.kill("SIGINT");
      const { code, output } = await run.done;
      assert.match(output, /SIGINT: stopping, within 4000 ms/, output);
      assert.doesNotMatch(output, /draining for/, output);
      assert.equal(code, 0, output);
    } finally {
      try {
        run.child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await run.done;
    }
  }
});

Deno.test("deploy/main.ts does not read EDGESTREAM_SWEEP_EVERY or EDGESTREAM_DRAIN, which it does not use: a value a self-hosted process refuses starts it, warned once each, and it stops without a drain", async () => {
  for (
    const vars of [
      { EDGESTREAM_SWEEP_EVERY: "5m", EDGESTREAM_DRAIN: "4s" },
      { EDGESTREAM_SWEEP_EVERY: "often", EDGESTREAM_DRAIN: "soon" },
    ]
  ) {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", ...vars });
    try {
      await run.seen(/No UPSTASH_REDIS_REST_URL/);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const messages = run.output().split("\n").filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line).message as string);
      assert.deepEqual(
        messages.filter((message) => /^EDGESTREAM_(SWEEP_EVERY|DRAIN)/.test(message)),
        [
          `EDGESTREAM_SWEEP_EVERY has no effect on Deno Deploy, where Deno.cron runs the sweep every minute (got ${vars.EDGESTREAM_SWEEP_EVERY}); it sets the timer of a self-hosted process (src/main.ts)`,
          `EDGESTREAM_DRAIN is ignored on Deno Deploy, whose routing asks no /readyz (got ${vars.EDGESTREAM_DRAIN}): a stopping isolate does not drain, keeping the 5 s before its kill for its stop; it is for a self-hosted process behind a load balancer that probes /readyz (src/main.ts)`,
        ],
        run.output(),
      );
      run.child.kill("SIGINT");
      const { code, output } = await run.done;
      assert.doesNotMatch(output, /draining for/, output);
      assert.equal(code, 0, output);
    } finally {
      try {
        run.child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await run.done;
    }
  }
});

Deno.test("deploy/main.ts still refuses, in one line after its cron, a setting it uses: EDGESTREAM_SHUTDOWN of 0, or not a duration", async () => {
  for (
    const [vars, pattern] of [
      [
        { EDGESTREAM_SHUTDOWN: "0s" },
        /^edgestream: EDGESTREAM_SHUTDOWN: expected a duration above 0, got '0s'$/,
      ],
      [
        { EDGESTREAM_SHUTDOWN: "soon" },
        /^edgestream: EDGESTREAM_SHUTDOWN: Cannot read duration 'soon'/,
      ],
    ] as const
  ) {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", ...vars });
    // Had it taken the value, it would serve on: stopped after a while, to fail here, not hang.
    const stop = setTimeout(() => run.child.kill("SIGTERM"), 20_000);
    const { code, output } = await run.done;
    clearTimeout(stop);
    assert.equal(code, 1, output);
    const lines = output.trim().split("\n");
    assert.equal(lines.length, 2, output);
    assert.equal(lines[0], "harness: cron edgestream sweep * * * * *");
    assert.match(lines[1], pattern);
  }
});

Deno.test("deploy/main.ts holds WebSocket ingest to EDGESTREAM_INGEST_SOCKETS_PER_KEY, as src/main.ts", async () => {
  const run = runDeploy({
    DENO_TIMELINE: "preview/abc123",
    EDGESTREAM_INGEST_SOCKETS_PER_KEY: "1",
  });
  try {
    const [, port] = await run.seen(/listening on http:\/\/[^\s/"]*?:(\d+)"/);
    // Open mode: one client address holds one connection.
    const first = new WebSocket(`ws://127.0.0.1:${port}/v1/streams/orders/ws`);
    await new Promise((resolve, reject) => {
      first.onopen = resolve;
      first.onerror = reject;
    });
    const second = await fetch(`http://127.0.0.1:${port}/v1/streams/orders/ws`, {
      headers: {
        Upgrade: "websocket",
        Connection: "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    assert.equal(second.status, 429);
    assert.equal((await second.json()).error.code, "too_many_ingest_sockets");
    const closed = new Promise((resolve) => first.onclose = resolve);
    first.close();
    await closed;
  } finally {
    run.child.kill("SIGTERM");
    await run.done;
  }
});

Deno.test("deploy/main.ts run locally on a port taken says so in one line", async () => {
  const taken = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  try {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", PORT: String(taken.addr.port) });
    const { code, output } = await run.done;
    assert.equal(code, 1, output);
    const lines = output.trim().split("\n").filter((line) => !line.startsWith("{"));
    assert.deepEqual(lines, [
      "harness: cron edgestream sweep * * * * *",
      `edgestream: PORT: ${taken.addr.port} is already in use`,
    ]);
  } finally {
    taken.close();
  }
});

redisTest(
  "deploy/main.ts's cron handler returns only once the sweep's deliveries were sent",
  async (fixture) => {
    const receiver = await Receiver.start();
    // A receiver that takes a moment to answer: a handler that did not wait for its sends
    // would return before the answer.
    let answered = 0;
    receiver.respond = async () => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      answered += 1;
      return new Response(null, { status: 204 });
    };
    const dir = await Deno.makeTempDir();
    try {
      const configPath = `${dir}/config.json`;
      // A receive-time stream whose one-second windows are final as soon as they end.
      await Deno.writeTextFile(
        configPath,
        JSON.stringify({
          streams: {
            ticks: {
              time: { lateness: "0s" },
              counters: { n: { window: { tumbling: "1s" }, aggregate: "count" } },
            },
          },
        }),
      );
      const vars = {
        ...redisVars(fixture),
        EDGESTREAM_KEYS: `admin:${KEY}`,
        EDGESTREAM_CONFIG: configPath,
        EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
      };
      // Another instance on the same Redis registers a webhook and counts an event.
      const other = await configFromEnv({ get: (name) => (vars as Record<string, string>)[name] });
      try {
        const app = createApp({
          streams: other.streams,
          store: other.store,
          keys: other.keys,
          webhooks: other.webhooks,
        });
        const headers = { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" };
        const registered = await app.request("/v1/webhooks", {
          method: "POST",
          headers,
          body: JSON.stringify({ url: receiver.url(), eventTypes: ["window.closed"] }),
        });
        assert.equal(registered.status, 201, await registered.text());
        const ingested = await app.request("/v1/streams/ticks/events", {
          method: "POST",
          headers,
          body: JSON.stringify({ id: "t1" }),
        });
        assert.equal(ingested.status, 202, await ingested.text());
      } finally {
        await other.webhooks.close();
      }
      // Let its window end, so the cron's sweep closes it.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      assert.equal(receiver.received.length, 0);
      const run = runDeploy({ ...vars, HARNESS_SWEEP: "1" });
      try {
        await run.seen(/harness: swept/);
        // The handler returned (the harness printed after it): the delivery had been answered
        // by then.
        assert.equal(answered, 1, run.output());
        assert.equal(receiver.received.length, 1);
        assert.equal(receiver.received[0].payload.type, "window.closed");
        // Its summary (logged through a buffer, so it may print after) counts the attempt.
        await run.seen(/Sweep closed 1 window\(s\), fired 0 alert\(s\), queued 1 and attempted 1 /);
      } finally {
        run.child.kill("SIGTERM");
        await run.done;
      }
    } finally {
      await receiver.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("deploy/main.ts run locally without PORT, on Deno.serve's port 8000 taken, names that port in its one line", async () => {
  // Open mode (a preview timeline) listens on loopback. Held here unless someone else holds it
  // already: taken either way.
  let taken: Deno.Listener | undefined;
  try {
    taken = Deno.listen({ hostname: "127.0.0.1", port: 8000 });
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  }
  try {
    const run = runDeploy({ DENO_TIMELINE: "preview/abc123", PORT: "" });
    const { code, output } = await run.done;
    assert.equal(code, 1, output);
    const lines = output.trim().split("\n").filter((line) => !line.startsWith("{"));
    assert.deepEqual(lines, [
      "harness: cron edgestream sweep * * * * *",
      "edgestream: PORT: 8000 is already in use",
    ]);
  } finally {
    taken?.close();
  }
});

Deno.test("deploy/main.ts run locally on a HOST it cannot listen on says so in one line", async () => {
  // 192.0.2.1 (TEST-NET-1) is on no interface of this machine.
  const run = runDeploy({
    DENO_TIMELINE: "preview/abc123",
    EDGESTREAM_KEYS: `admin:${KEY}`,
    HOST: "192.0.2.1",
  });
  const { code, output } = await run.done;
  assert.equal(code, 1, output);
  const lines = output.trim().split("\n").filter((line) => !line.startsWith("{"));
  assert.equal(lines.length, 2, output);
  assert.equal(lines[0], "harness: cron edgestream sweep * * * * *");
  assert.match(lines[1], /^edgestream: HOST: cannot listen on 192\.0\.2\.1:0: /);
});

redisTest(
  "deploy/main.ts stopped while its cron's sweep waits on the store waits for that sweep, as src/main.ts waits for its timer's: at the bound it exits 1 naming it",
  async (fixture) => {
    // Between the isolate and Redis: passes calls through until `hold`, then holds them.
    let hold = false;
    const released = Promise.withResolvers<void>();
    const proxy = bridgeProxy(fixture, async () => {
      if (hold) await released.promise;
    });
    const run = runDeploy({
      ...redisVars(fixture),
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${proxy.addr.port}`,
      EDGESTREAM_KEYS: `admin:${KEY}`,
      EDGESTREAM_SHUTDOWN: "500ms",
      HARNESS_SWEEP: "signal",
    });
    try {
      await run.seen(/harness: loaded/);
      hold = true;
      run.child.kill("SIGUSR1");
      await run.seen(/harness: sweeping/);
      run.child.kill("SIGINT");
      const { code, output } = await run.done;
      assert.match(output, /with still running: sweep"/, output);
      assert.equal(code, 1, output);
    } finally {
      released.resolve();
      try {
        run.child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await run.done;
      await proxy.shutdown();
    }
  },
);

Deno.test("deploy/main.ts stops well on SIGINT right after it listens, while the store is still slow to answer", async () => {
  // A "Redis" that takes connections and never answers: recording the config streams, after
  // "listening on", waits for the store's deadline (5 s). Deploy may stop the isolate meanwhile.
  const silent = silentListener();
  try {
    const run = runDeploy({
      DENO_TIMELINE: "preview/abc123",
      EDGESTREAM_KEYS: `admin:${KEY}`,
      UPSTASH_REDIS_REST_URL: silent.url,
      UPSTASH_REDIS_REST_TOKEN: "silent-token-0123456789",
    });
    await run.seen(/listening on http:/);
    run.child.kill("SIGINT");
    const { code, output } = await run.done;
    assert.match(output, /SIGINT: stopping, within 4000 ms/, output);
    assert.equal(code, 0, output);
  } finally {
    await silent.close();
  }
});

Deno.test("deploy/main.ts stops well on SIGINT while the store is still slow to load the webhook endpoints: exit 0, as src/main.ts", async () => {
  // Loading the webhook endpoints, after "listening on", waits for the store's deadline (5 s).
  // Deploy may stop a starting isolate meanwhile; the signal must not kill it unhandled (130).
  const silent = silentListener();
  try {
    const run = runDeploy({
      DENO_TIMELINE: "preview/abc123",
      EDGESTREAM_KEYS: `admin:${KEY}`,
      UPSTASH_REDIS_REST_URL: silent.url,
      UPSTASH_REDIS_REST_TOKEN: "silent-token-0123456789",
    });
    // The first call to the store is on its way: the endpoints are loading.
    await run.seen(/harness: fetch/);
    await run.seen(/listening on http:/);
    const started = Date.now();
    run.child.kill("SIGINT");
    const { code, output } = await run.done;
    assert.match(output, /SIGINT: stopping, within 4000 ms/, output);
    assert.match(output, /stopped in \d+ ms/, output);
    assert.doesNotMatch(output, /Cannot load webhook endpoints/, output);
    assert.equal(code, 0, output);
    assert.ok(Date.now() - started < 4_000, `stopped after ${Date.now() - started} ms`);
  } finally {
    await silent.close();
  }
});

redisTest(
  "deploy/main.ts listens before the webhook endpoints load, as src/main.ts: /healthz answers, /readyz is 503 starting, other requests wait until they are loaded",
  async (fixture) => {
    // Every store call held until `release`, as a store slow to answer holds the loading.
    const release = Promise.withResolvers<void>();
    const proxy = bridgeProxy(fixture, () => release.promise);
    const run = runDeploy({
      ...redisVars(fixture),
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${proxy.addr.port}`,
      DENO_TIMELINE: "preview/abc123",
      EDGESTREAM_KEYS: `admin:${KEY}`,
    });
    let released = false;
    try {
      const [, port] = await run.seen(/listening on http:\/\/[^\s"]*?:(\d+)"/);
      const base = `http://127.0.0.1:${port}`;
      // Asks the store nothing: only the gate holds it.
      const held = fetch(`${base}/openapi.json`).then((res) => {
        assert.ok(released, "answered before the webhook endpoints were loaded");
        return res;
      });
      await probesWhileStarting(base);
      released = true;
      release.resolve();
      const res = await held;
      assert.equal(res.status, 200);
      await res.body?.cancel();
      // Loaded: ready once the store answers its ping.
      let after: Response | undefined;
      for (let tries = 0; tries < 50; tries++) {
        after = await fetch(`${base}/readyz`);
        await after.body?.cancel();
        if (after.status === 200) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(after?.status, 200, run.output());
    } finally {
      released = true;
      release.resolve();
      run.child.kill("SIGTERM");
      await run.done;
      await proxy.shutdown();
    }
  },
);

redisTest(
  "deploy/main.ts's cron handler logs a sweep the store refuses as one line, as the self-hosted timer does",
  async (fixture) => {
    const run = runDeploy({
      ...redisVars(fixture),
      UPSTASH_REDIS_REST_TOKEN: "not-the-token-0123456789",
      DENO_TIMELINE: "preview/abc123",
      EDGESTREAM_KEYS: `admin:${KEY}`,
      HARNESS_SWEEP: "1",
    });
    try {
      await run.seen(/harness: swept|Uncaught/);
      const output = run.output();
      assert.doesNotMatch(output, /Uncaught/, output);
      const lines = output.split("\n").filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line));
      assert.ok(
        lines.some((line) =>
          line.level === "warning" && /^Sweep failed: StoreUnavailableError/.test(line.message)
        ),
        output,
      );
    } finally {
      run.child.kill("SIGTERM");
      await run.done;
    }
  },
);

redisTest(
  "deploy/main.ts's cron runs during a store outage say it once, and once a run works that sweeps run again",
  async (fixture) => {
    // Between the isolate and Redis: while `down`, answers every call as an unreachable host would
    // through a gateway (an HTTP error without an Upstash error message).
    let down = false;
    const proxy = bridgeProxy(
      fixture,
      () => down ? new Response("Bad Gateway", { status: 502 }) : undefined,
    );
    const run = runDeploy({
      ...redisVars(fixture),
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${proxy.addr.port}`,
      DENO_TIMELINE: "preview/abc123",
      EDGESTREAM_KEYS: `admin:${KEY}`,
      HARNESS_SWEEP: "signal",
    });
    const sweeps = async (count: number) => {
      run.child.kill("SIGUSR1");
      await run.seen(new RegExp(`(harness: swept[^]*){${count}}`));
    };
    try {
      await run.seen(/harness: loaded/);
      await run.seen(/listening on http:/);
      down = true;
      await sweeps(1);
      await sweeps(2);
      await sweeps(3);
      down = false;
      await sweeps(4);
      // Info lines go to stdout, written up to 50 ms after they are logged.
      await run.seen(/Sweeps run again/);
      const lines = run.output().split("\n").filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line));
      const failed = lines.filter((line) => /^Sweep failed: /.test(line.message));
      assert.deepEqual(failed.map((line) => line.level), ["warning"], run.output());
      assert.match(failed[0].error, /^StoreUnavailableError: Redis is unavailable/);
      const again = lines.filter((line) => /^Sweeps run again /.test(line.message));
      assert.deepEqual(again.map((line) => line.level), ["info"], run.output());
      assert.match(again[0].message, /^Sweeps run again after 3 failures since \d{4}-/);
    } finally {
      run.child.kill("SIGTERM");
      await run.done;
      await proxy.shutdown();
    }
  },
);
