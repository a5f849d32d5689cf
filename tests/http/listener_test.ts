import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { FAILED_KEPT, ResponseCutError, serveListening } from "../../src/http/listener.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";
import { startServerProcess } from "../_server_process.ts";

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with true once `condition` holds, false after `tries` checks `everyMs` apart. */
async function eventually(condition: () => boolean | Promise<boolean>, tries = 200, everyMs = 50) {
  for (let i = 0; i < tries; i++) {
    if (await condition()) return true;
    await delay(everyMs);
  }
  return false;
}

/** Status of GET `url`, or 0 when the connection fails. */
async function statusOf(url: string): Promise<number> {
  try {
    const response = await fetch(url);
    await response.body?.cancel();
    return response.status;
  } catch {
    return 0;
  }
}

Deno.test("main.ts out of file descriptors logs one line, keeps its subscribers and serves again once they free up", async () => {
  // 128 descriptors: the runtime and the app use ~25, so ~100 idle connections exhaust them.
  const server = await startServerProcess("low-fd", {}, { openFileLimit: 128 });
  const exited = server.status.then(() => true);
  const encoder = new TextEncoder();
  const held: Deno.Conn[] = [];
  let events: ReadableStreamDefaultReader<string> | undefined;
  try {
    // A subscriber from before the flood: its connection must outlive the listener's failure.
    const subscriber = await fetch(
      `${server.url}/v1/streams/orders/subscribe?counter=orders_per_minute`,
      {
        headers: { Accept: "text/event-stream" },
      },
    );
    assert.equal(subscriber.status, 200);
    events = subscriber.body!.pipeThrough(new TextDecoderStream()).getReader();
    // Clients that open connections and never finish their request heads, as a flood does.
    for (let i = 0; i < 200; i++) {
      try {
        const connection = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        held.push(connection);
        await connection.write(
          encoder.encode("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: a"),
        );
      } catch {
        // Refused while the listener is down: the flood goes on.
      }
    }
    const failed = () =>
      server.output().includes("The HTTP listener stopped accepting connections");
    assert.ok(
      await eventually(async () => failed() || await Promise.race([exited, delay(0)]) === true),
      `Neither a log line nor an exit:\n${server.output()}`,
    );
    assert.equal(
      await Promise.race([exited, delay(200).then(() => false)]),
      false,
      server.output(),
    );
    for (const connection of held) connection.close();
    held.length = 0;
    assert.ok(
      await eventually(async () => await statusOf(`${server.url}/healthz`) === 200),
      `Not serving again:\n${server.output()}`,
    );
    // The subscription opened before still gets events.
    const ingest = await fetch(`${server.url}/v1/streams/orders/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: "o1", country: "DE", amount: 5 }),
    });
    await ingest.body?.cancel();
    assert.equal(ingest.status, 202);
    let seen = "";
    while (!seen.includes("event: window.updated")) {
      const { value, done } = await events.read();
      assert.ok(!done, `Subscription ended: ${seen}`);
      seen += value;
    }
    const output = server.output();
    assert.doesNotMatch(output, /Uncaught/);
    const lines = output.split("\n").filter((line) => line.includes('"level":"error"'));
    assert.equal(lines.length, 1, output);
    assert.match(lines[0], /Too many open files/);
    assert.match(lines[0], /listening again/);
  } finally {
    for (const connection of held) connection.close();
    await events?.cancel().catch(() => {});
    const status = await server.stop();
    assert.equal(status.code, 0, server.output());
  }
});

Deno.test("serveListening() throws the first listen's error, as Deno.serve does", () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    assert.throws(
      () =>
        serveListening(() => new Response(), {
          hostname: "127.0.0.1",
          port: holder.addr.port,
          onFatal: () => assert.fail("not fatal: thrown"),
        }),
      Deno.errors.AddrInUse,
    );
  } finally {
    holder.close();
  }
});

Deno.test("serveListening() serves and shuts down", async () => {
  const server = serveListening(() => new Response("ok"), {
    hostname: "127.0.0.1",
    port: 0,
    onFatal: () => assert.fail("not fatal"),
  });
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  assert.equal(await response.text(), "ok");
  await server.shutdown();
  assert.equal(await statusOf(`http://127.0.0.1:${server.addr.port}/`), 0);
});

Deno.test("serveListening() drops the connection of a body cut with ResponseCutError and logs nothing; another body error is one log line", async () => {
  await writtenLogs(async (written) => {
    const server = serveListening((request) => {
      const cutOnPurpose = new URL(request.url).pathname === "/cut";
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("data: x\n\n"));
          setTimeout(() => {
            controller.error(
              cutOnPurpose ? new ResponseCutError("Cut on purpose") : new TypeError("Broke\nhere"),
            );
          }, 50);
        },
      });
      return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
    }, { hostname: "127.0.0.1", port: 0, onFatal: () => assert.fail("not fatal") });
    try {
      for (const path of ["/cut", "/broken"]) {
        const response = await fetch(`http://127.0.0.1:${server.addr.port}${path}`);
        assert.equal(response.status, 200);
        // The connection is dropped: the body fails rather than ending.
        await assert.rejects(response.text());
      }
      // One line (no stack, its line break escaped), for the error that was not a cut.
      assert.equal(written.length, 1, JSON.stringify(written));
      assert.ok(!written[0].text.includes("\n"), written[0].text);
      const [line] = jsonLines(written);
      assert.equal(line.level, "error");
      assert.equal(line.message, "Serving a request failed: TypeError: Broke\nhere");
    } finally {
      await server.shutdown();
    }
  });
});

/** A stand-in for one `Deno.HttpServer` whose listener fails when told. */
interface FakeListener {
  server: Deno.HttpServer<Deno.NetAddr>;
  fail(error: Error): void;
  shutdowns: number;
}

function fakeListener(port: number): FakeListener {
  const finished = Promise.withResolvers<void>();
  const fake: FakeListener = {
    server: {
      addr: { transport: "tcp", hostname: "127.0.0.1", port },
      finished: finished.promise,
      shutdown() {
        fake.shutdowns += 1;
        return Promise.resolve();
      },
      ref() {},
      unref() {},
      [Symbol.asyncDispose]: () => Promise.resolve(),
    } as Deno.HttpServer<Deno.NetAddr>,
    fail: (error) => finished.reject(error),
    shutdowns: 0,
  };
  return fake;
}

Deno.test("serveListening() keeps at most FAILED_KEPT failed listeners under a lasting flood, shutting down the oldest", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const listeners: FakeListener[] = [];
  try {
    const server = serveListening(() => new Response(), {
      hostname: "127.0.0.1",
      port: 8200,
      onFatal: (message) => assert.fail(message),
      serve: () => {
        const listener = fakeListener(8200);
        listeners.push(listener);
        return listener.server;
      },
    });
    const emfile = () =>
      Object.assign(new Error("Too many open files (os error 24)"), { name: "Http" });
    assert.equal(FAILED_KEPT, 8, "README, Stopping: those of the last 8 failed listeners are kept");
    const held: number[] = [];
    for (let failure = 1; failure <= 40; failure++) {
      listeners.at(-1)!.fail(emfile());
      await clock.tickAsync(5_000);
      assert.equal(listeners.length, failure + 1, "listening again");
      held.push(server.listeners);
    }
    // One more kept per failure until FAILED_KEPT, then as many.
    assert.deepEqual(
      held.slice(0, FAILED_KEPT),
      Array.from({ length: FAILED_KEPT }, (_, i) => i + 2),
    );
    assert.ok(held.slice(FAILED_KEPT).every((count) => count === FAILED_KEPT + 1), `${held}`);
    // The oldest were shut down as newer ones failed; the kept ones are not yet.
    const shutdowns = listeners.map((listener) => listener.shutdowns);
    assert.deepEqual(shutdowns, listeners.map((_, i) => i < 41 - (FAILED_KEPT + 1) ? 1 : 0));
    await server.shutdown();
    assert.ok(listeners.every((listener) => listener.shutdowns === 1), "each shut down once");
  } finally {
    clock.uninstall();
  }
});

Deno.test("serveListening() logs a listener failure again at once when its clock is before the last line's time, then once a minute", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const listeners: FakeListener[] = [];
  let now = 10_000_000;
  try {
    await writtenLogs(async (lines) => {
      const server = serveListening(() => new Response(), {
        hostname: "127.0.0.1",
        port: 8201,
        now: () => now,
        onFatal: (message) => assert.fail(message),
        serve: () => {
          const listener = fakeListener(8201);
          listeners.push(listener);
          return listener.server;
        },
      });
      const fail = async (step: number) => {
        now += step;
        listeners.at(-1)!.fail(
          Object.assign(new Error("Too many open files (os error 24)"), { name: "Http" }),
        );
        await clock.tickAsync(5_000);
      };
      await fail(0); // said
      await fail(10_000); // within the minute
      await fail(-3_600_000); // the clock stepped an hour back: said, not an hour of silence
      await fail(10_000);
      await fail(50_000); // a minute after the last line
      await server.shutdown();
      const failures = jsonLines(lines, "edgestream.http")
        .filter((line) => String(line.message).startsWith("The HTTP listener stopped"));
      assert.deepEqual(failures.map((line) => line.also), [
        "",
        " (and 1 more time(s) since the last such line)",
        " (and 1 more time(s) since the last such line)",
      ]);
    });
  } finally {
    clock.uninstall();
  }
});
