/**
 * Stopping `src/main.ts` with SIGTERM, as a process manager or Deno Deploy
 * (SIGINT) does: under load it exits 0 within `EDGESTREAM_SHUTDOWN`; every
 * HTTP request gets its whole reply or no byte at all; every WebSocket frame
 * it read is answered before the 1001 close; subscribers are told; a webhook
 * send it gives up on is released at once and logged as interrupted; and the
 * store (Redis, read back after the process is gone) holds exactly the
 * acknowledged events. A request that does not finish in time is cut at the
 * bound, with exit status 1.
 */
import assert from "node:assert/strict";
import { RedisDeliveryStore } from "../src/store/redis/delivery_store.ts";
import { evalAtRoot } from "./_eval.ts";
import { collectingLogs, messageOf } from "./_logs.ts";
import { redisTest, restClient, withDirect } from "./_redis.ts";
import { type ServerProcess, startServerProcess } from "./_server_process.ts";
import { Receiver } from "./fanout/webhooks/_receiver.ts";
import { OpenConnections, RequestsInFlight } from "../src/http/open_connections.ts";
import { SAME_STOP_MS, type StoppingServer, stopServer } from "../src/shutdown.ts";
import { compileConfig } from "../src/config/mod.ts";
import { RejectedCounts } from "../src/ingest/mod.ts";
import type { ApplyResult } from "../src/store/mod.ts";

const STREAM = "orders";
const PREFIX = "stop";
const CONFIG = {
  streams: {
    [STREAM]: {
      dedupe: { field: "id", ttl: "1h" },
      counters: { per_hour: { window: { tumbling: "1h" }, aggregate: "count" } },
    },
  },
};
const REASON = "Server is shutting down";

/** What one HTTP request got: its whole reply, or nothing at all. */
type Outcome =
  | { kind: "reply"; status: number; body: string; close: boolean }
  | { kind: "none"; why: string };

const ASCII = new TextDecoder();

/**
 * One keep-alive HTTP/1.1 connection read byte by byte, so the test sees
 * exactly what arrived: a request's reply is whole, or no byte of it came
 * (refused, reset or closed first). A reply cut short throws.
 */
class RawHttp {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(0);

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** A connection, or null when refused. */
  static async connect(port: number): Promise<RawHttp | null> {
    try {
      return new RawHttp(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused) return null;
      throw error;
    }
  }

  /** Writes `head` and `body` without waiting for a reply. */
  async write(head: string, body = ""): Promise<void> {
    await this.#conn.write(new TextEncoder().encode(head + body));
  }

  /** POSTs JSON and reads the reply. */
  async post(path: string, json: string): Promise<Outcome> {
    const body = new TextEncoder().encode(json);
    const head = `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    try {
      await this.#conn.write(new Uint8Array([...new TextEncoder().encode(head), ...body]));
    } catch (error) {
      return { kind: "none", why: `write: ${error}` };
    }
    return await this.reply();
  }

  /** Reads one reply: whole, or none when the connection ends before its first byte. */
  async reply(): Promise<Outcome> {
    let headEnd = -1;
    while ((headEnd = this.#find("\r\n\r\n")) < 0) {
      const why = await this.#fill();
      if (why === null) continue;
      if (this.#buffer.length === 0) return { kind: "none", why };
      throw new Error(`Reply cut in its head (${why}): ${ASCII.decode(this.#buffer)}`);
    }
    const head = ASCII.decode(this.#buffer.subarray(0, headEnd));
    const [statusLine, ...lines] = head.split("\r\n");
    const headers = new Map(lines.map((line) => {
      const colon = line.indexOf(":");
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
    }));
    const length = Number(headers.get("content-length"));
    assert.ok(Number.isSafeInteger(length), `a reply without Content-Length: ${head}`);
    while (this.#buffer.length < headEnd + 4 + length) {
      const why = await this.#fill();
      if (why !== null) throw new Error(`Reply cut in its body (${why}): ${head}`);
    }
    const body = ASCII.decode(this.#buffer.subarray(headEnd + 4, headEnd + 4 + length));
    this.#buffer = this.#buffer.slice(headEnd + 4 + length);
    return {
      kind: "reply",
      status: Number(statusLine.split(" ")[1]),
      body,
      close: headers.get("connection")?.toLowerCase() === "close",
    };
  }

  /** Reads more; null when it did, else why the connection ended. */
  async #fill(): Promise<string | null> {
    const chunk = new Uint8Array(16_384);
    let read: number | null;
    try {
      read = await this.#conn.read(chunk);
    } catch (error) {
      return String(error);
    }
    if (read === null) return "closed";
    const merged = new Uint8Array(this.#buffer.length + read);
    merged.set(this.#buffer);
    merged.set(chunk.subarray(0, read), this.#buffer.length);
    this.#buffer = merged;
    return null;
  }

  #find(text: string): number {
    return ASCII.decode(this.#buffer).indexOf(text);
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }
}

interface Ledger {
  /** Event ids acknowledged as applied. */
  acked: string[];
  /** Event ids sent without an acknowledgement. */
  unacked: string[];
  /** HTTP replies (whole), and requests that got nothing. */
  replies: number;
  none: number;
}

/** Sends 10-event batches over keep-alive connections until the server refuses connections. */
async function httpLoad(server: ServerProcess, worker: number, ledger: Ledger): Promise<void> {
  let conn: RawHttp | null = null;
  for (let n = 0;; n++) {
    conn ??= await RawHttp.connect(server.port);
    if (!conn) return;
    const ids = Array.from({ length: 10 }, (_, i) => `h${worker}-${n}-${i}`);
    const outcome: Outcome = await conn.post(
      `/v1/streams/${STREAM}/events`,
      JSON.stringify(ids.map((id) => ({ id }))),
    );
    if (outcome.kind === "none") {
      ledger.none += 1;
      ledger.unacked.push(...ids);
      conn.close();
      conn = null;
      continue;
    }
    ledger.replies += 1;
    assert.equal(outcome.status, 202, outcome.body);
    const reply = JSON.parse(outcome.body);
    assert.deepEqual([reply.accepted, reply.duplicates], [10, 0], outcome.body);
    ledger.acked.push(...ids);
    if (outcome.close) {
      conn.close();
      conn = null;
    }
  }
}

interface SocketRun {
  /** Frames sent, by seq, with their event ids. */
  sent: Map<number, string[]>;
  // deno-lint-ignore no-explicit-any
  answers: any[];
  closed: Promise<{ code: number; reason: string }>;
}

/** Keeps 8 frames of 2 events unanswered on a WebSocket until it closes. */
async function socketLoad(server: ServerProcess): Promise<SocketRun> {
  const socket = new WebSocket(`ws://127.0.0.1:${server.port}/v1/streams/${STREAM}/ws`);
  const run: SocketRun = { sent: new Map(), answers: [], closed: Promise.resolve(null!) };
  const closed = Promise.withResolvers<{ code: number; reason: string }>();
  run.closed = closed.promise;
  const opened = Promise.withResolvers<void>();
  const pump = () => {
    while (socket.readyState === WebSocket.OPEN && run.sent.size - run.answers.length < 8) {
      const seq = run.sent.size + 1;
      const ids = [`w${seq}-a`, `w${seq}-b`];
      run.sent.set(seq, ids);
      socket.send(JSON.stringify({ seq, events: ids.map((id) => ({ id })) }));
    }
  };
  socket.onopen = () => opened.resolve();
  socket.onmessage = (event) => {
    run.answers.push(JSON.parse(event.data));
    pump();
  };
  socket.onerror = () => {};
  socket.onclose = (event) => closed.resolve({ code: event.code, reason: event.reason });
  await opened.promise;
  pump();
  return run;
}

/** An SSE subscription: the events it got, settling when the stream ends. */
async function sseSubscriber(server: ServerProcess) {
  const res = await fetch(`${server.url}/v1/streams/${STREAM}/subscribe`, {
    headers: { Accept: "text/event-stream" },
  });
  assert.equal(res.status, 200);
  const events: Array<{ event: string; data: string }> = [];
  const subscribed = Promise.withResolvers<void>();
  const ended = (async () => {
    let text = "";
    for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      let end;
      while ((end = text.indexOf("\n\n")) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data !== undefined) events.push({ event, data });
        if (event === "subscribed") subscribed.resolve();
      }
    }
  })();
  await subscribed.promise;
  return { events, ended };
}

async function json(server: ServerProcess, path: string, init?: RequestInit) {
  const res = await fetch(`${server.url}${path}`, {
    ...init,
    headers: { "Content-Type": "application/json" },
  });
  return { status: res.status, body: await res.json() };
}

/** Resolves once `test` holds, checking every 10 ms; rejects after `ms`. */
/**
 * Registers `receiver` as a webhook of `server` and has it send a test delivery, received: its id.
 */
async function sendTestDelivery(server: ServerProcess, receiver: Receiver): Promise<string> {
  const endpoint = await json(server, "/v1/webhooks", {
    method: "POST",
    body: JSON.stringify({ url: receiver.url(), eventTypes: ["window.closed"] }),
  });
  assert.equal(endpoint.status, 201, JSON.stringify(endpoint.body));
  const test = await json(server, `/v1/webhooks/${endpoint.body.id}/test`, { method: "POST" });
  assert.equal(test.status, 202, JSON.stringify(test.body));
  await receiver.waitFor(1);
  return test.body.delivery.id;
}

/** Checks that `reply` is the 503 `body_interrupted` of a body the stop cut. */
function assertBodyInterrupted(reply: Awaited<ReturnType<RawHttp["reply"]>>): void {
  assert.equal(reply.kind, "reply");
  if (reply.kind === "reply") {
    assert.equal(reply.status, 503, reply.body);
    assert.equal(JSON.parse(reply.body).error.code, "body_interrupted");
  }
}

async function until(test: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`Not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

redisTest(
  "SIGTERM under load: exit 0 within EDGESTREAM_SHUTDOWN, every request answered whole or not at all, every WebSocket frame read answered before 1001, subscribers told, the webhook claim released, and exactly the acknowledged events counted",
  async (fixture) => {
    const dir = await Deno.makeTempDir({ prefix: "edgestream-stop-" });
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(CONFIG));
    const vars = {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_PREFIX: PREFIX,
      EDGESTREAM_CONFIG: configPath,
      EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
      EDGESTREAM_SHUTDOWN: "2s",
      EDGESTREAM_SWEEP_EVERY: "1s",
    };
    const boundMs = 2_000;
    const receiver = await Receiver.start();
    const { promise: answered, resolve: answer } = Promise.withResolvers<void>();
    receiver.respond = async () => {
      await answered;
      return new Response(null, { status: 204 });
    };
    const servers: ServerProcess[] = [];
    try {
      const server = await startServerProcess("stopping", vars);
      servers.push(server);

      // A webhook send that waits for an answer across the stop.
      const delivery = await sendTestDelivery(server, receiver);

      const sse = await sseSubscriber(server);
      const subscriber = new WebSocket(
        `ws://127.0.0.1:${server.port}/v1/streams/${STREAM}/subscribe`,
      );
      const subscriberClosed = Promise.withResolvers<{ code: number; reason: string }>();
      const subscribed = Promise.withResolvers<void>();
      subscriber.onmessage = () => subscribed.resolve();
      subscriber.onclose = (event) =>
        subscriberClosed.resolve({ code: event.code, reason: event.reason });
      await subscribed.promise;

      const ledger: Ledger = { acked: [], unacked: [], replies: 0, none: 0 };
      const socket = await socketLoad(server);
      const workers = Array.from({ length: 6 }, (_, worker) => httpLoad(server, worker, ledger));
      await until(
        () => ledger.replies >= 30 && socket.answers.length >= 10,
        30_000,
        "load running",
      );

      const started = performance.now();
      server.signal("SIGTERM");
      const status = await server.status;
      const elapsedMs = performance.now() - started;
      assert.equal(status.code, 0, server.output());
      // The bound, plus time for a process to start exiting on a busy machine.
      assert.ok(elapsedMs < boundMs + 2_000, `exited after ${Math.round(elapsedMs)} ms`);
      assert.match(server.output(), /SIGTERM: stopping, within 2000 ms/);
      assert.match(server.output(), /stopped in \d+ ms/);
      await Promise.all(workers);

      // WebSocket: answers for frames 1..k in order (acks, then not-applied errors), then 1001.
      assert.deepEqual(await socket.closed, { code: 1001, reason: REASON });
      const seqs = socket.answers.map((answer) => answer.seq);
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "answers in order, none missing");
      const acks = socket.answers.filter((answer) => answer.type === "ack");
      assert.deepEqual(socket.answers.slice(0, acks.length), acks, "acks come first");
      for (const answer of socket.answers.slice(acks.length)) {
        assert.deepEqual([answer.type, answer.error.code, answer.retryable], [
          "error",
          "connection_closing",
          true,
        ]);
      }
      for (const [seq, ids] of socket.sent) {
        const answer = socket.answers[seq - 1];
        if (answer?.type === "ack") {
          assert.deepEqual([answer.accepted, answer.duplicates], [2, 0]);
          ledger.acked.push(...ids);
        } else ledger.unacked.push(...ids);
      }

      // Subscribers were told, the SSE one with a final `closed` event.
      assert.deepEqual(await subscriberClosed.promise, { code: 1001, reason: REASON });
      await sse.ended;
      assert.deepEqual(sse.events.at(-1), {
        event: "closed",
        data: JSON.stringify({ type: "closed", reason: REASON }),
      });

      // The webhook claim was given back: claimable now, not in 30 s when its lease ends.
      const redis = restClient(fixture);
      const deliveries = new RedisDeliveryStore(redis, { prefix: PREFIX });
      const claims = await deliveries.claimDue({
        nowMs: Date.now(),
        limit: 10,
        leaseMs: 1_000,
        maxConcurrency: 8,
      });
      assert.deepEqual(claims.map((claim) => claim.delivery.id), [delivery]);
      // The receiver got the cut send: the attempt log shows it, and it used up no retry.
      assert.deepEqual(
        [claims[0].delivery.status, claims[0].delivery.attempts, claims[0].delivery.tries],
        ["pending", 1, 0],
      );
      assert.deepEqual(
        (await deliveries.listAttempts(delivery)).map((item) => [
          item.attempt,
          item.status,
          item.outcome,
        ]),
        [[1, null, "interrupted"]],
      );

      // A fresh process on the same Redis: every acknowledged id is a duplicate, no other is.
      const fresh = await startServerProcess("fresh", { ...vars, EDGESTREAM_SWEEP_EVERY: "0s" });
      servers.push(fresh);
      for (const [ids, duplicate] of [[ledger.acked, true], [ledger.unacked, false]] as const) {
        for (let i = 0; i < ids.length; i += 1_000) {
          const batch = ids.slice(i, i + 1_000);
          const { status, body } = await json(fresh, `/v1/streams/${STREAM}/events`, {
            method: "POST",
            body: JSON.stringify(batch.map((id) => ({ id }))),
          });
          assert.equal(status, 202, JSON.stringify(body));
          assert.equal(body.duplicates, duplicate ? batch.length : 0, `acknowledged: ${duplicate}`);
        }
      }
      const total = ledger.acked.length + ledger.unacked.length;
      const stats = (await json(fresh, `/v1/streams/${STREAM}`)).body.stats;
      assert.equal(stats.applied, total);
      const rows = (await json(fresh, `/v1/streams/${STREAM}/counters/per_hour`)).body.windows;
      assert.equal(rows.reduce((sum: number, row: { value: number }) => sum + row.value, 0), total);
      console.log(
        `acknowledged ${ledger.acked.length} events, not ${ledger.unacked.length}; HTTP replies ${ledger.replies}, none ${ledger.none}; WebSocket acks ${acks.length}, not applied ${
          socket.answers.length - acks.length
        }, unanswered ${socket.sent.size - socket.answers.length}; stopped in ${
          Math.round(elapsedMs)
        } ms`,
      );
    } catch (error) {
      for (const server of servers) console.error(`--- ${server.name}:\n${server.output()}`);
      throw error;
    } finally {
      answer();
      await Promise.all(servers.map((server) => server.stop()));
      await receiver.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

redisTest(
  "a stop gives back the webhook backlog gauges' lease, so another process reports them from its next sweep",
  async (fixture) => {
    const lease = `${PREFIX}:{wh}:lease:telemetry:webhook-backlog`;
    const server = await startServerProcess("backlog", {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_PREFIX: PREFIX,
      EDGESTREAM_SWEEP_EVERY: "1s",
    });
    try {
      const held = () => withDirect(fixture.redisUrl, (send) => send("GET", lease));
      const deadline = Date.now() + 10_000;
      while ((await held()) === null) {
        assert.ok(Date.now() < deadline, `no lease taken:\n${server.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      server.signal("SIGTERM");
      assert.equal((await server.status).code, 0, server.output());
      assert.equal(await held(), null, "the lease outlived the process");
    } finally {
      await server.stop();
    }
  },
);

redisTest(
  "a stop whose give-back of the webhook backlog lease waits on a Redis that does not answer, with no sweep running, exits 0: nothing was in flight",
  async (fixture) => {
    const lease = `${PREFIX}:{wh}:lease:telemetry:webhook-backlog`;
    // Between the server and Redis: passes calls through, but once `hold` holds those of the
    // lease (its give-back), so that the sweep that took it ends as it would with Redis up.
    let hold = false;
    const released = Promise.withResolvers<void>();
    const proxy = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
      const body = await request.text();
      if (hold && body.includes("telemetry:webhook-backlog")) await released.promise;
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
    const server = await startServerProcess("lease-held", {
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${proxy.addr.port}`,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_PREFIX: PREFIX,
      // The lease is taken after the first sweep; the next one starts 2 s later, well after
      // the stop below began (a sweep running then would be work in flight, and a store that
      // does not answer it too).
      EDGESTREAM_SWEEP_EVERY: "2s",
      EDGESTREAM_SHUTDOWN: "500ms",
    });
    try {
      const held = () => withDirect(fixture.redisUrl, (send) => send("GET", lease));
      const deadline = Date.now() + 10_000;
      while ((await held()) === null) {
        assert.ok(Date.now() < deadline, `no lease taken:\n${server.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      hold = true;
      server.signal("SIGTERM");
      assert.equal((await server.status).code, 0, server.output());
      assert.match(
        server.output(),
        /stopped in \d+ ms, nothing in flight; left to the exit: webhook backlog lease"/,
      );
    } finally {
      released.resolve();
      await server.stop();
      await proxy.shutdown();
    }
  },
);

redisTest(
  "a request still running when EDGESTREAM_SHUTDOWN ends is cut: exit 1 at the bound, naming it, the request gets no byte; a WebSocket frame waiting on the store holds the listener open half the bound at most; a body still arriving is answered 503 body_interrupted",
  async (fixture) => {
    // Between the server and Redis: passes calls through until `hold`, then holds them.
    let hold = false;
    const released = Promise.withResolvers<void>();
    const proxy = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
      const body = await request.text();
      if (hold) await released.promise;
      return await fetch(`${fixture.restUrl}${new URL(request.url).pathname}`, {
        method: request.method,
        headers: { authorization: request.headers.get("authorization") ?? "" },
        body,
      });
    });
    const server = await startServerProcess("stuck", {
      UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${proxy.addr.port}`,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_SHUTDOWN: "2s",
      EDGESTREAM_SWEEP_EVERY: "0s",
    });
    try {
      const socket = new WebSocket(`ws://127.0.0.1:${server.port}/v1/streams/orders/ws`);
      socket.onerror = () => {};
      await new Promise((resolve) => socket.onopen = resolve);
      hold = true;
      socket.send(JSON.stringify([{ id: "o-2", country: "DE", amount: 1 }]));
      const stuck = (await RawHttp.connect(server.port))!;
      const event = '{"id":"o-1","country":"DE","amount":1}';
      await stuck.write(
        `POST /v1/streams/orders/events HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${event.length}\r\n\r\n`,
        event,
      );
      const trickling = (await RawHttp.connect(server.port))!;
      await trickling.write(
        `POST /v1/streams/orders/events HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
          `Content-Type: application/json\r\nContent-Length: 100\r\n\r\n`,
        '[{"id":',
      );
      // The requests are in the server: the frame and one waits on the store, one on its body.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const started = performance.now();
      server.signal("SIGTERM");

      assertBodyInterrupted(await trickling.reply());
      trickling.close();

      // The frame waits on the store, yet new connections are refused well before the bound.
      let exited = false;
      server.status.then(() => exited = true);
      for (let conn; (conn = await RawHttp.connect(server.port)) !== null;) {
        conn.close();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(exited, false, "refused only once the process exited");

      const status = await server.status;
      const elapsedMs = performance.now() - started;
      assert.equal(status.code, 1, server.output());
      assert.ok(elapsedMs >= 1_900 && elapsedMs < 2_000 + 2_000, `exited after ${elapsedMs} ms`);
      // The frame the store is applying may count: its connection is work still running, though
      // the listener's shutdown closed its socket at half the bound.
      assert.match(
        server.output(),
        /stopped after \d+ ms \(EDGESTREAM_SHUTDOWN\) with still running: websockets, http requests"/,
      );
      assert.deepEqual(await stuck.reply(), { kind: "none", why: "closed" });
      stuck.close();
    } catch (error) {
      console.error(server.output());
      throw error;
    } finally {
      released.resolve();
      await server.stop();
      await proxy.shutdown();
    }
  },
);

redisTest(
  "a stop applies the rejected counts still waiting (requests that accepted none): a fresh process reads them in stats.rejected",
  async (fixture) => {
    const dir = await Deno.makeTempDir({ prefix: "edgestream-stop-" });
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(CONFIG));
    const vars = {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_PREFIX: "stop-rejected",
      EDGESTREAM_CONFIG: configPath,
      EDGESTREAM_SWEEP_EVERY: "0s",
    };
    const servers: ServerProcess[] = [];
    try {
      const server = await startServerProcess("rejecting", vars);
      servers.push(server);
      // Three events that are no objects: 400, counted about a second later, off the request.
      const refused = await json(server, `/v1/streams/${STREAM}/events`, {
        method: "POST",
        body: JSON.stringify([1, "two", null]),
      });
      assert.equal(refused.status, 400, JSON.stringify(refused.body));
      assert.equal(refused.body.error.code, "no_events_accepted");
      // At once, well within the second the count waits for its apply.
      server.signal("SIGTERM");
      assert.equal((await server.status).code, 0, server.output());
      assert.match(server.output(), /stopped in \d+ ms/);

      const fresh = await startServerProcess("fresh", vars);
      servers.push(fresh);
      const stats = (await json(fresh, `/v1/streams/${STREAM}`)).body.stats;
      assert.equal(stats.rejected, 3, JSON.stringify(stats));
    } catch (error) {
      for (const server of servers) console.error(`--- ${server.name}:\n${server.output()}`);
      throw error;
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("deploy/main.ts stops well on SIGINT, as Deno Deploy stops an isolate: the WebSocket frames read are answered before 1001, exit 0", async () => {
  const server = await startServerProcess("deploy", { EDGESTREAM_SHUTDOWN: "2s" }, {
    entry: "deploy/main.ts",
  });
  try {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}/v1/streams/orders/ws`);
    // deno-lint-ignore no-explicit-any
    const answers: any[] = [];
    const answered = Promise.withResolvers<void>();
    const closed = Promise.withResolvers<{ code: number; reason: string }>();
    socket.onmessage = (event) => {
      answers.push(JSON.parse(event.data));
      answered.resolve();
    };
    socket.onclose = (event) => closed.resolve({ code: event.code, reason: event.reason });
    await new Promise((resolve) => socket.onopen = resolve);
    socket.send(JSON.stringify({ seq: 1, events: [{ id: "d-1", country: "DE", amount: 1 }] }));
    await answered.promise;

    const started = performance.now();
    server.signal("SIGINT");
    assert.deepEqual(await closed.promise, { code: 1001, reason: REASON });
    const status = await server.status;
    const elapsedMs = performance.now() - started;
    assert.equal(status.code, 0, server.output());
    assert.ok(elapsedMs < 2_000 + 2_000, `exited after ${elapsedMs} ms`);
    assert.match(server.output(), /SIGINT: stopping, within 2000 ms/);
    assert.deepEqual(answers.map((answer) => [answer.type, answer.seq, answer.accepted]), [
      ["ack", 1, 1],
    ]);
  } catch (error) {
    console.error(server.output());
    throw error;
  } finally {
    await server.stop();
  }
});

Deno.test("SIGTERM with only subscribers open: each WebSocket subscriber gets 1001 with the server's reason, as the SSE one gets its closed event, before the listener shuts down; exit 0", async () => {
  const server = await startServerProcess("subscribers", { EDGESTREAM_SHUTDOWN: "2s" });
  try {
    const closes: Array<Promise<{ code: number; reason: string }>> = [];
    for (let i = 0; i < 3; i++) {
      const socket = new WebSocket(`ws://127.0.0.1:${server.port}/v1/streams/orders/subscribe`);
      const subscribed = Promise.withResolvers<void>();
      const closed = Promise.withResolvers<{ code: number; reason: string }>();
      socket.onmessage = () => subscribed.resolve();
      socket.onclose = (event) => closed.resolve({ code: event.code, reason: event.reason });
      await subscribed.promise;
      closes.push(closed.promise);
    }
    const sse = await fetch(`http://127.0.0.1:${server.port}/v1/streams/orders/subscribe`, {
      headers: { Accept: "text/event-stream" },
    });
    const sseText = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
    let received = (await sseText.read()).value ?? "";

    server.signal("SIGTERM");
    assert.deepEqual(await Promise.all(closes), [
      { code: 1001, reason: REASON },
      { code: 1001, reason: REASON },
      { code: 1001, reason: REASON },
    ]);
    for (let chunk = await sseText.read(); !chunk.done; chunk = await sseText.read()) {
      received += chunk.value;
    }
    assert.match(
      received,
      new RegExp(`event: closed\ndata: ${JSON.stringify({ type: "closed", reason: REASON })}`),
    );
    assert.equal((await server.status).code, 0, server.output());
  } catch (error) {
    console.error(server.output());
    throw error;
  } finally {
    await server.stop();
  }
});

Deno.test("a second signal while stopping exits at once with status 1", async () => {
  // A webhook send whose receiver never answers holds the stop (until 3/4 of the bound).
  const receiver = await Receiver.start();
  const { promise: never, resolve: release } = Promise.withResolvers<void>();
  receiver.respond = async () => {
    await never;
    return new Response(null, { status: 204 });
  };
  const server = await startServerProcess("impatient", {
    EDGESTREAM_SHUTDOWN: "20s",
    EDGESTREAM_SWEEP_EVERY: "0s",
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
  });
  try {
    await sendTestDelivery(server, receiver);
    const started = performance.now();
    server.signal("SIGTERM");
    await until(() => server.output().includes("SIGTERM: stopping"), 10_000, "stopping");
    // Past the time in which more signals are the same stop (`deno run --watch` sends several).
    await new Promise((resolve) => setTimeout(resolve, SAME_STOP_MS + 50));
    server.signal("SIGINT");
    const status = await server.status;
    assert.equal(status.code, 1, server.output());
    assert.ok(performance.now() - started < 10_000, "long before the 20 s bound");
    assert.match(server.output(), /SIGINT again: exiting now/);
  } finally {
    release();
    await server.stop();
    await receiver.close();
  }
});

Deno.test("a client still sending a body cut by the stop gets its 503 and does not hold the stop: exit 0", async () => {
  const server = await startServerProcess("trickled", {
    EDGESTREAM_SHUTDOWN: "3s",
    EDGESTREAM_SWEEP_EVERY: "0s",
  });
  const trickling = (await RawHttp.connect(server.port))!;
  try {
    await trickling.write(
      `POST /v1/streams/orders/events HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
        `Content-Type: application/json\r\nContent-Length: 100\r\n\r\n`,
      '[{"id":',
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    server.signal("SIGTERM");
    assertBodyInterrupted(await trickling.reply());
    // The client keeps its connection open, as if the rest of its body were on its way.
    const status = await server.status;
    assert.equal(status.code, 0, server.output());
    assert.match(server.output(), /every HTTP request answered; connections still open/);
    assert.match(server.output(), /"stopped in \d+ ms"/);
  } finally {
    trickling.close();
    await server.stop();
  }
});

Deno.test("EDGESTREAM_SHUTDOWN=1ms: a server with nothing in flight exits 0, its listener still closing 50 connections whose requests never came whole left to the exit; they get no byte", async () => {
  for (const connections of [0, 50]) {
    const server = await startServerProcess(`idle, ${connections} connections`, {
      EDGESTREAM_SHUTDOWN: "1ms",
      EDGESTREAM_SWEEP_EVERY: "0s",
    });
    const clients: RawHttp[] = [];
    try {
      for (let i = 0; i < connections; i++) {
        const client = (await RawHttp.connect(server.port))!;
        // Half a request head: nothing reaches the app, so nothing is in flight.
        await client.write("GET /healthz HTTP/1.1\r\nHost: 127.");
        clients.push(client);
      }
      server.signal("SIGTERM");
      const status = await server.status;
      assert.equal(status.code, 0, server.output());
      assert.match(server.output(), /"message":"stopped in \d+ ms/);
      assert.doesNotMatch(server.output(), /still running/);
      for (const client of clients) assert.equal((await client.reply()).kind, "none");
    } catch (error) {
      console.error(server.output());
      throw error;
    } finally {
      for (const client of clients) client.close();
      await server.stop();
    }
  }
});

/** Parts of a server for {@linkcode stopServer} whose steps never end unless told. */
function stoppingParts(options: { sending?: boolean; sweeping?: boolean } = {}) {
  const never = new Promise<void>(() => {});
  const requests = new RequestsInFlight();
  const parts: StoppingServer = {
    server: { shutdown: () => never },
    connections: new OpenConnections(),
    live: { close: () => Promise.resolve() },
    webhooks: {
      close: () => options.sending ? never : Promise.resolve(),
      sending: !!options.sending,
    },
    stopPeriodic: () => options.sweeping ? never : Promise.resolve(),
    requests,
  };
  return { parts, requests, never };
}

Deno.test({
  name:
    "stopServer() is clean when the bound leaves only steps holding no work (a listener still closing, the webhook backlog lease being given back); a request being answered, a webhook send or a sweep running makes it unclean",
  // What a stop leaves (the listener's shutdown, its 250 ms wait for replies) ends with the process.
  sanitizeOps: false,
  async fn() {
    const idle = stoppingParts();
    assert.deepEqual(
      { ...await stopServer(idle.parts, { boundMs: 1 }), elapsedMs: 0 },
      { clean: true, unfinished: [], leftIdle: ["http requests"], elapsedMs: 0 },
    );

    const answering = stoppingParts();
    const handler = answering.requests.track(() => answering.never.then(() => new Response()));
    void handler(new Request("http://127.0.0.1/"));
    const cut = await stopServer(answering.parts, { boundMs: 1 });
    assert.deepEqual([cut.clean, cut.unfinished, cut.leftIdle], [false, ["http requests"], []]);

    // A reply sent less than 250 ms before may still be leaving: work in flight too; not later.
    let clock = 0;
    const answered = stoppingParts();
    const timed = new RequestsInFlight({ now: () => clock });
    answered.parts.requests = timed;
    await timed.track(() => new Response())(new Request("http://127.0.0.1/"));
    clock = 249;
    const leaving = await stopServer(answered.parts, { boundMs: 1 });
    assert.deepEqual([leaving.clean, leaving.unfinished], [false, ["http requests"]]);
    clock = 250;
    const left = await stopServer(answered.parts, { boundMs: 1 });
    assert.deepEqual([left.clean, left.leftIdle], [true, ["http requests"]]);

    // A WebSocket frame the store applied after the stop closed its connection got no ack.
    const cutFrame = stoppingParts();
    await cutFrame.parts.connections.close("Server is shutting down");
    cutFrame.parts.connections.noteAnswerCut();
    const cutAnswer = await stopServer(cutFrame.parts, { boundMs: 1 });
    assert.deepEqual([cutAnswer.clean, cutAnswer.unfinished], [false, ["websockets"]]);

    const sending = await stopServer(stoppingParts({ sending: true }).parts, { boundMs: 1 });
    assert.deepEqual([sending.clean, sending.unfinished], [false, ["webhook sends"]]);
    const sweeping = await stopServer(stoppingParts({ sweeping: true }).parts, { boundMs: 1 });
    assert.deepEqual([sweeping.clean, sweeping.unfinished], [false, ["sweep"]]);
    // The lease given back after the sweep stopped spares another process a wait: no work.
    const leasing = stoppingParts();
    leasing.parts.giveBackLease = () => leasing.never;
    assert.deepEqual(
      { ...await stopServer(leasing.parts, { boundMs: 1 }), elapsedMs: 0 },
      {
        clean: true,
        unfinished: [],
        leftIdle: ["webhook backlog lease", "http requests"],
        elapsedMs: 0,
      },
    );
  },
});

Deno.test({
  name:
    "stopServer() applies the rejected counts waiting once HTTP is done; an apply still running at the bound leaves 'rejected counts' unfinished; one that fails ends the step (the stop clean)",
  // What a stop leaves (the listener's shutdown, its 250 ms wait for replies) ends with the process.
  sanitizeOps: false,
  async fn() {
    const stream = compileConfig(CONFIG).get(STREAM)!;
    const applied: number[] = [];
    const counted = stoppingParts();
    const counts = new RejectedCounts({
      applyBatch(batch) {
        applied.push(batch.requests?.[0].rejected ?? 0);
        return Promise.resolve({} as ApplyResult);
      },
    }, { intervalMs: 60_000 });
    counted.parts.rejectedCounts = counts;
    counts.add(stream, 4);
    const done = await stopServer(counted.parts, { boundMs: 2_000 });
    assert.deepEqual([done.clean, done.unfinished, applied], [true, [], [4]]);

    const hanging = stoppingParts();
    const held = new RejectedCounts(
      { applyBatch: () => new Promise<ApplyResult>(() => {}) },
      { intervalMs: 60_000 },
    );
    hanging.parts.rejectedCounts = held;
    held.add(stream, 2);
    const cut = await stopServer(hanging.parts, { boundMs: 600 });
    assert.deepEqual([cut.clean, cut.unfinished], [false, ["rejected counts"]]);

    // Redis failing since before the stop (a failure already logged): the stop's flush still says
    // what it lost.
    const failing = stoppingParts();
    const refused = new RejectedCounts({
      applyBatch: () => Promise.reject(new Error("Redis is down")),
    }, { intervalMs: 60_000 });
    failing.parts.rejectedCounts = refused;
    const { failed, warnings } = await collectingLogs(async (records) => {
      refused.add(stream, 1);
      await refused.flush();
      refused.add(stream, 3);
      const failed = await stopServer(failing.parts, { boundMs: 2_000 });
      const warnings = records.filter((record) => record.level === "warning").map(messageOf);
      return { failed, warnings };
    });
    assert.deepEqual([failed.clean, failed.unfinished, refused.waiting], [true, [], false]);
    assert.deepEqual(warnings.filter((line) => line.startsWith("Cannot count")), [
      "Cannot count 1 rejected events (requests that accepted none) of stream(s) orders on flush, so they are lost: Error: Redis is down",
      "Cannot count 3 rejected events (requests that accepted none) of stream(s) orders on flush, so they are lost: Error: Redis is down",
    ]);
  },
});

/**
 * What the stop signal's handler does with each kind of report: its line and its exit status (the
 * README quotes the line `nothing in flight; left to the exit: …`).
 */
async function stopLine(report: object): Promise<{ code: number; message: string }> {
  const result = await evalAtRoot(
    [
      'import { configureLogging } from "./src/telemetry/logging.ts";',
      'import { exitOnStopSignal } from "./src/shutdown.ts";',
      'configureLogging({ level: "info", format: "json" });',
      'const report = JSON.parse(Deno.env.get("REPORT"));',
      "exitOnStopSignal(() => Promise.resolve(report), 1);",
      "setTimeout(() => {}, 30_000);",
      'Deno.kill(Deno.pid, "SIGTERM");',
    ].join("\n"),
    { vars: { REPORT: JSON.stringify(report) } },
  );
  const lines = (result.stdout + result.stderr).split("\n").filter((line) =>
    line.includes('"message":"stopped')
  );
  assert.equal(lines.length, 1, result.stdout + result.stderr);
  return { code: result.code, message: JSON.parse(lines[0]).message };
}

Deno.test("the stop line: 0 and 'nothing in flight; left to the exit: …' when only idle steps were left; 1 and 'still running' when work was", async () => {
  const base = { unfinished: [], leftIdle: [], elapsedMs: 3 };
  assert.deepEqual(await stopLine({ ...base, clean: true }), {
    code: 0,
    message: "stopped in 3 ms",
  });
  assert.deepEqual(
    await stopLine({ ...base, clean: true, leftIdle: ["http requests", "live subscriptions"] }),
    {
      code: 0,
      message:
        "stopped in 3 ms, nothing in flight; left to the exit: http requests, live subscriptions",
    },
  );
  assert.deepEqual(
    await stopLine({ ...base, clean: false, unfinished: ["http requests"] }),
    {
      code: 1,
      message: "stopped after 3 ms (EDGESTREAM_SHUTDOWN) with still running: http requests",
    },
  );
});
