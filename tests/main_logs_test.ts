/**
 * `src/main.ts` as a user runs it, with keys, the Redis store (through the
 * Upstash bridge) and a webhook endpoint: everything it prints is JSON lines
 * (stdout is a pipe), each request has its line, and no API key, webhook
 * secret or Redis token appears anywhere in stdout or stderr, though keys
 * travel in headers, in `?token=` and in WebSocket subprotocols.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { TEST_CONFIG } from "./_fixtures.ts";
import { denoClient, SseReader } from "./_live.ts";
import { redisTest } from "./_redis.ts";
import { Receiver } from "./fanout/webhooks/_receiver.ts";
import { START_FLAGS } from "./_server_process.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

function randomKey(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** A running `src/main.ts`; `stop()` ends it and returns everything it printed. */
interface ServerProcess {
  url: string;
  /** Resolves once stdout or stderr holds `pattern` (what the server prints after it listens). */
  printed(pattern: RegExp): Promise<void>;
  stop(): Promise<{ stdout: string; stderr: string }>;
}

async function startMain(vars: Record<string, string>): Promise<ServerProcess> {
  const port = freePort();
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    NO_COLOR: "1",
    PORT: String(port),
    HOST: "127.0.0.1",
    ...vars,
  };
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", ...START_FLAGS, "src/main.ts"],
    cwd: root,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const printed = { stdout: "", stderr: "" };
  const drain = async (stream: ReadableStream<Uint8Array>, name: "stdout" | "stderr") => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) printed[name] += text;
  };
  const drained = Promise.all([drain(child.stdout, "stdout"), drain(child.stderr, "stderr")]);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (true) {
    try {
      const res = await fetch(`${url}/healthz`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      child.kill("SIGTERM");
      await drained;
      throw new Error(`src/main.ts did not start:\n${printed.stdout}${printed.stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    async printed(pattern) {
      const deadline = Date.now() + 30_000;
      while (!pattern.test(printed.stdout + printed.stderr)) {
        if (Date.now() > deadline) {
          throw new Error(`never printed ${pattern}:\n${printed.stdout}${printed.stderr}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
      return printed;
    },
  };
}

/** A fetch whose body is read (or cancelled), returning status and JSON body when there is one. */
async function call(url: string, init: RequestInit = {}) {
  const res = await fetch(url, init);
  const text = await res.text();
  // deno-lint-ignore no-explicit-any
  let body: any = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON.
  }
  return { status: res.status, body };
}

redisTest(
  "A server run with keys, Redis and a webhook prints JSON lines without any key, webhook secret or Redis token",
  async (fixture) => {
    const keys = { admin: randomKey("adm-"), ingest: randomKey("ing-"), read: randomKey("rd-") };
    const receiver = await Receiver.start();
    // Braces in a setting's value are printed as they are (a log message template reads them).
    const dir = `${await Deno.makeTempDir()}/conf{ig}`;
    await Deno.mkdir(dir);
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(TEST_CONFIG));
    const server = await startMain({
      EDGESTREAM_KEYS: `admin:${keys.admin},ingest:${keys.ingest},read:${keys.read}`,
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_PREFIX: "logs",
      EDGESTREAM_CONFIG: configPath,
      EDGESTREAM_SWEEP_EVERY: "1s",
      EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
      EDGESTREAM_LOG_LEVEL: "trace",
    });
    const base = server.url;
    const wsBase = base.replace("http:", "ws:");
    const bearer = (key: string) => ({ Authorization: `Bearer ${key}` });
    const json = { "Content-Type": "application/json" };
    const secrets: string[] = [];
    const receiverToken = randomKey("hdr-");
    let output: { stdout: string; stderr: string } | undefined;
    try {
      const events = [{ id: "e1", country: "DE", amount: 5 }, { id: "e2", country: "FR" }];
      const ingest = await call(`${base}/v1/streams/orders/events`, {
        method: "POST",
        headers: { ...bearer(keys.ingest), ...json, "X-Request-Id": "logs-test-1" },
        body: JSON.stringify(events),
      });
      assert.equal(ingest.status, 202, JSON.stringify(ingest.body));
      // HTTP ingest reads the header only: a key in the URL is refused, and must not be printed.
      const inUrl = await call(`${base}/v1/streams/orders/events?token=${keys.ingest}`, {
        method: "POST",
        headers: json,
        body: JSON.stringify(events),
      });
      assert.equal(inUrl.status, 401);
      assert.equal(
        (await call(`${base}/v1/streams/orders/counters/count_1m`, { headers: bearer(keys.read) }))
          .status,
        200,
      );
      assert.equal(
        (await call(`${base}/v1/nowhere?token=${keys.admin}`, { headers: bearer(keys.admin) }))
          .status,
        404,
      );

      const created = await call(`${base}/v1/webhooks`, {
        method: "POST",
        headers: { ...bearer(keys.admin), ...json },
        body: JSON.stringify({
          url: receiver.url(),
          eventTypes: ["window.closed"],
          headers: { "X-Receiver-Token": receiverToken },
        }),
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      secrets.push(created.body.secret);
      const rotated = await call(`${base}/v1/webhooks/${created.body.id}/rotate-secret`, {
        method: "POST",
        headers: bearer(keys.admin),
      });
      assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
      secrets.push(rotated.body.secret);
      receiver.secrets = [...secrets];
      const test = await call(`${base}/v1/webhooks/${created.body.id}/test`, {
        method: "POST",
        headers: bearer(keys.admin),
      });
      assert.equal(test.status, 202, JSON.stringify(test.body));
      await receiver.waitFor(1);
      assert.deepEqual(receiver.received[0].verifiedWith.sort(), [...secrets].sort());
      assert.equal(
        (await call(`${base}/v1/admin/sweep`, { method: "POST", headers: bearer(keys.admin) }))
          .status,
        200,
      );

      const byQuery = await denoClient(`${wsBase}/v1/streams/orders/ws?token=${keys.ingest}`);
      byQuery.socket.send(JSON.stringify({ id: "w1", country: "IT" }));
      assert.equal((await byQuery.inbox.next()).type, "ack");
      byQuery.socket.send("{not json");
      assert.equal((await byQuery.inbox.next()).error.code, "invalid_json");
      await byQuery.close();
      const byProtocol = await denoClient(`${wsBase}/v1/streams/orders/ws`, [
        "edgestream",
        `bearer.${keys.ingest}`,
      ]);
      byProtocol.socket.send(JSON.stringify({ id: "w2", country: "IT" }));
      assert.equal((await byProtocol.inbox.next()).type, "ack");
      await byProtocol.close();
      const keyOnly = await denoClient(`${wsBase}/v1/streams/orders/ws`, [`bearer.${keys.ingest}`]);
      await keyOnly.close();
      const wrongScope = await denoClient(`${wsBase}/v1/streams/orders/ws?token=${keys.read}`);
      assert.equal((await wrongScope.inbox.closed).code, 1008);

      const sse = await fetch(`${base}/v1/streams/orders/subscribe?token=${keys.read}`, {
        headers: { Accept: "text/event-stream" },
      });
      assert.equal(sse.status, 200);
      const reader = new SseReader(sse);
      assert.equal((await reader.next()).event, "subscribed");
      await reader.cancel();
      // A sweep tick sends the delivery queued above and logs nothing secret either.
      await new Promise((resolve) => setTimeout(resolve, 1_200));
    } finally {
      output = await server.stop();
      await receiver.close();
      await Deno.remove(dir, { recursive: true });
    }

    const printed = output.stdout + output.stderr;
    const forbidden: Array<[string, string]> = [
      ...Object.entries(keys).map(([scope, key]) => [`${scope} key`, key] as [string, string]),
      ...secrets.flatMap((secret, i) => [
        [`webhook secret ${i}`, secret] as [string, string],
        [`webhook secret ${i} without prefix`, secret.slice("whsec_".length)] as [string, string],
      ]),
      ["Redis token", fixture.restToken],
      ["webhook header value", receiverToken],
    ];
    for (const [name, value] of forbidden) {
      assert.ok(!printed.includes(value), `${name} appears in the output:\n${printed}`);
    }

    // The output is JSON lines, and it logged what happened: the test would pass on silence otherwise.
    const lines = printed.split("\n").filter((line) => line.trim() !== "");
    // deno-lint-ignore no-explicit-any
    const records: any[] = lines.map((line) => {
      try {
        return JSON.parse(line);
      } catch {
        throw new Error(`Not a JSON line: ${line}`);
      }
    });
    assert.ok(records.some((record) => /^store: redis /.test(record.message)), printed);
    assert.ok(
      records.some((record) => record.message.includes(` stream(s) from ${configPath}: `)),
      printed,
    );
    assert.ok(records.some((record) => /^listening on http:\/\//.test(record.message)), printed);
    const requests = records.filter((record) =>
      record.logger === "edgestream.http" && record.method
    )
      .map((record) =>
        `${record.method} ${record.path} ${record.status}${record.keyInQuery ? " q" : ""}`
      );
    for (
      const expected of [
        "POST /v1/streams/orders/events 202",
        "POST /v1/streams/orders/events 401",
        "GET /v1/streams/orders/counters/count_1m 200",
        "GET /v1/nowhere 404",
        "POST /v1/webhooks 201",
        "POST /v1/webhooks/{id}/rotate-secret 200",
        "POST /v1/webhooks/{id}/test 202",
        "POST /v1/admin/sweep 200",
        "GET /v1/streams/orders/ws 101 q",
        "GET /v1/streams/orders/ws 101",
        "GET /v1/streams/orders/subscribe 200 q",
      ]
    ) {
      const pattern = new RegExp(
        `^${expected.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace("{id}", "[^/]+")}$`,
      );
      assert.ok(
        requests.some((line) => pattern.test(line)),
        `${expected} in:\n${requests.join("\n")}`,
      );
    }
    const first = records.find((record) => record.requestId === "logs-test-1");
    assert.deepEqual(
      [first.stream, first.accepted, first.duplicates, first.rejected],
      ["orders", 2, 0, 0],
    );
    assert.ok(records.some((record) => /'\?token=', which is deprecated/.test(record.message)));
  },
);

redisTest(
  "EDGESTREAM_LOG_LEVEL=warning leaves out the request lines and keeps the warnings",
  async (fixture) => {
    const dir = await Deno.makeTempDir();
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(TEST_CONFIG));
    const read = randomKey("rd-");
    const server = await startMain({
      EDGESTREAM_KEYS: `read:${read}`,
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_CONFIG: configPath,
      EDGESTREAM_SWEEP_EVERY: "0s",
      EDGESTREAM_LOG_LEVEL: "warning",
    });
    let output: { stdout: string; stderr: string };
    try {
      assert.equal(
        (await call(`${server.url}/v1/streams`, { headers: { Authorization: `Bearer ${read}` } }))
          .status,
        200,
      );
      const sse = await fetch(`${server.url}/v1/streams/orders/subscribe?token=${read}`, {
        headers: { Accept: "text/event-stream" },
      });
      assert.equal(sse.status, 200);
      await sse.body?.cancel();
      // A CORS preflight: Deno's legacy request abort printed a plain-text notice after it.
      const preflight = await call(`${server.url}/v1/streams/orders/events`, {
        method: "OPTIONS",
        headers: { Origin: "https://shop.example", "Access-Control-Request-Method": "POST" },
      });
      assert.equal(preflight.status, 204);
      // The setup check runs after the server listens: stopped before it answers, it prints nothing.
      await server.printed(/Redis has appendonly no:/);
    } finally {
      output = await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
    // deno-lint-ignore no-explicit-any
    const records: any[] = (output.stdout + output.stderr).split("\n").filter((line) => line !== "")
      .map((line) => JSON.parse(line));
    // The fixture's redis-server keeps no append-only file, which the server warns of once.
    const setup = records.filter((record) => /^Redis has appendonly no:/.test(record.message));
    assert.deepEqual(setup.map((record) => record.level), ["warning"], JSON.stringify(records));
    const others = records.filter((record) => !setup.includes(record));
    assert.deepEqual(
      others.map((record) => record.level),
      ["warning"],
      JSON.stringify(records),
    );
    assert.match(others[0].message, /'\?token=', which is deprecated/);
    assert.equal(output.stdout, "", "warnings go to stderr");
  },
);
