import assert from "node:assert/strict";
import { closeWithin, dropSocket } from "../../src/http/_drop_socket.ts";
import { rawUpgrade, within } from "../_live.ts";

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

/** Reads until the connection ends (true) or `ms` passed (false). */
async function endsWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buffer = new Uint8Array(4096);
  const deadline = performance.now() + ms;
  for (;;) {
    try {
      const read = await within(conn.read(buffer), Math.max(1, deadline - performance.now()));
      if (read === null) return true;
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) return true;
      if (error instanceof Error && error.message.startsWith("Not settled")) return false;
      throw error;
    }
  }
}

Deno.test("closeWithin() drops the connection of a client that never answers the close frame, after graceMs", async () => {
  const { server, closed } = socketServer((socket) =>
    closeWithin(socket, { code: 1008, reason: "Refused", graceMs: 50 })
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  try {
    await conn.write(new TextEncoder().encode(rawUpgrade("/")));
    assert.ok(await endsWithin(conn, 10_000), "the connection is still open");
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
    assert.ok(await endsWithin(conn, 10_000), "the connection is still open");
    await closed;
    assert.equal(dropped, true);
  } finally {
    conn.close();
    await server.shutdown();
  }
});
