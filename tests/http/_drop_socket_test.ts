import assert from "node:assert/strict";
import { closeWithin, dropSocket, RefusedSockets } from "../../src/http/_drop_socket.ts";
import { rawUpgrade, readAllFor } from "../_live.ts";
import { collectingLogs, messageOf } from "../_logs.ts";

/** A server whose every request is upgraded and handed to `opened`; its close events are kept. */
function socketServer(opened: (socket: WebSocket) => void) {
  const closes: CloseEvent[] = [];
  const closed = Promise.withResolvers<CloseEvent>();
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => opened(socket);
    socket.onclose = (event) => {
      closes.push(event);
      closed.resolve(event);
    };
    return response;
  });
  return { server, closes, closed: closed.promise };
}

Deno.test("closeWithin() drops the connection of a client that never answers the close frame, after graceMs", async () => {
  const { server, closed } = socketServer((socket) =>
    closeWithin(socket, { code: 1008, reason: "Refused", graceMs: 50 })
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  try {
    await conn.write(new TextEncoder().encode(rawUpgrade("/")));
    assert.ok((await readAllFor(conn, 10_000)).closed, "the connection is still open");
    // The socket's close event follows, as it does for a close the client answered.
    await closed;
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("closeWithin() leaves a client that answers the close frame a clean close with the code and reason", async () => {
  const { server, closes } = socketServer((socket) =>
    closeWithin(socket, { code: 1008, reason: "Refused", graceMs: 60_000 })
  );
  try {
    const client = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
    const event = await new Promise<CloseEvent>((resolve) => client.onclose = resolve);
    assert.deepEqual([event.code, event.reason], [1008, "Refused"]);
    // The timer went with the close: the test's sanitizer sees none left.
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(closes.map((close) => close.code), [1008]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("dropSocket() ends an open server WebSocket's connection at once", async () => {
  let dropped: boolean | undefined;
  const { server, closed } = socketServer((socket) => dropped = dropSocket(socket));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  try {
    await conn.write(new TextEncoder().encode(rawUpgrade("/")));
    assert.ok((await readAllFor(conn, 10_000)).closed, "the connection is still open");
    await closed;
    assert.equal(dropped, true);
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("dropSocket() of a socket whose connection is out of reach leaves it and says so once", async () => {
  await collectingLogs(async (records) => {
    // Not a Deno server socket: no resource to close, as on a Deno that hid it.
    const socket = new EventTarget() as unknown as WebSocket;
    assert.equal(dropSocket(socket), false);
    assert.equal(dropSocket(socket), false);
    await Promise.resolve();
    const warnings = records.filter((record) => record.level === "warning").map(messageOf);
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(
      warnings[0],
      /^Cannot drop a WebSocket whose client does not answer its close frame/,
    );
  });
});

Deno.test("dropSocket() whose close does not end the connection says so once, after checkMs", async () => {
  await collectingLogs(async (records) => {
    // A socket whose resource is no open one: closing it ends nothing, and no close event comes,
    // as on a Deno whose closed resource no longer ends the connection.
    const socket = Object.assign(new EventTarget(), {
      readyState: WebSocket.OPEN,
      [Symbol("[[rid]]")]: 2 ** 31 - 1,
    }) as unknown as WebSocket;
    assert.equal(dropSocket(socket, { checkMs: 10 }), true);
    assert.equal(dropSocket(socket, { checkMs: 10 }), true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const warnings = records.filter((record) => record.level === "warning").map(messageOf);
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(
      warnings[0],
      /^Dropping a WebSocket whose client does not answer its close frame did not end it/,
    );
  });
});

Deno.test("RefusedSockets holds at most max places; a place released (once, however often asked) is free again", () => {
  const sockets = new RefusedSockets(2);
  const first = sockets.take()!;
  const second = sockets.take()!;
  assert.ok(first && second);
  assert.equal(sockets.take(), undefined);
  assert.equal(sockets.held, 2);
  first.release();
  first.release();
  assert.equal(sockets.held, 1);
  assert.ok(sockets.take());
  assert.equal(sockets.take(), undefined);
});

Deno.test("RefusedSockets warns naming its bound when a refusal finds it reached, then at most once a minute while it stays reached (as the README says)", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "until a refused connection ends; a refusal that finds this bound reached is logged as a warning naming it, at most once a minute";
  assert.ok(readme.includes(claim), claim);
  let now = 0;
  const sockets = new RefusedSockets(1, { now: () => now });
  const warnings = await collectingLogs((records) => {
    const place = sockets.take()!;
    assert.ok(place);
    // Reached but nothing refused yet: nothing to say.
    assert.equal(sockets.held, 1);
    now = 1_000;
    assert.equal(sockets.take(), undefined);
    assert.equal(sockets.take(), undefined);
    now = 60_999;
    assert.equal(sockets.take(), undefined);
    now = 61_000;
    assert.equal(sockets.take(), undefined);
    place.release();
    assert.ok(sockets.take());
    return Promise.resolve(records.map(messageOf));
  }, { level: "warning" });
  // At 1,000 and 61,000: not again at 60,999, within the minute.
  assert.equal(warnings.length, 2, warnings.join("\n"));
  for (const warning of warnings) {
    assert.match(warning, /^The process holds 1 refused WebSockets, its bound: /);
  }
});
