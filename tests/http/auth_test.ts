/** Keys in requests: where they are read from, and how a key in the URL is logged. */
import assert from "node:assert/strict";
import { presentedKey } from "../../src/http/auth.ts";
import { KEYS } from "../_fixtures.ts";
import { nodeClient, startServer } from "../_live.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";

Deno.test("presentedKey() prefers the header, then ?token= (marked inQuery), then the subprotocol", () => {
  const url = "http://localhost/v1/streams/orders/subscribe";
  const both = new Request(`${url}?token=from-query`, {
    headers: { Authorization: "Bearer from-header", "Sec-WebSocket-Protocol": "bearer.from-proto" },
  });
  assert.deepEqual(presentedKey(both), { key: "from-header", protocol: "bearer.from-proto" });
  const query = new Request(`${url}?token=from-query`, {
    headers: { "Sec-WebSocket-Protocol": "app, bearer.from-proto" },
  });
  assert.deepEqual(presentedKey(query), { key: "from-query", protocol: "app", inQuery: true });
  const protocol = new Request(url, { headers: { "Sec-WebSocket-Protocol": "bearer.from-proto" } });
  assert.deepEqual(presentedKey(protocol), { key: "from-proto", protocol: "bearer.from-proto" });
  assert.deepEqual(presentedKey(new Request(`${url}?token=`)), {
    key: undefined,
    protocol: undefined,
  });
});

Deno.test("A key sent as ?token= still works, is never logged, marks the line keyInQuery and warns once that it is deprecated", async () => {
  const server = await startServer({ auth: true });
  try {
    await writtenLogs(async (lines) => {
      for (let i = 0; i < 2; i++) {
        const sse = await fetch(
          `${server.base}/v1/streams/orders/subscribe?types=window.closed&token=${KEYS.read}`,
          { headers: { Accept: "text/event-stream" } },
        );
        assert.equal(sse.status, 200);
        // The line is written when the stream opens, not when it ends.
        assert.equal(jsonLines(lines, "edgestream.http").at(-1)?.status, 200);
        await sse.body?.cancel();
      }
      const socket = await nodeClient(server.wsUrl(`/v1/streams/orders/ws?token=${KEYS.ingest}`));
      socket.socket.send(JSON.stringify({ id: "q1" }));
      assert.equal((await socket.inbox.next()).type, "ack");
      await socket.close();
      const header = await nodeClient(server.wsUrl("/v1/streams/orders/ws"), {
        headers: { Authorization: `Bearer ${KEYS.ingest}` },
      });
      await header.close();

      const http = jsonLines(lines, "edgestream.http");
      const requests = http.filter((line) => line.method === "GET");
      assert.deepEqual(
        requests.map((line) => [line.path, line.status, line.keyInQuery]),
        [
          ["/v1/streams/orders/subscribe", 200, true],
          ["/v1/streams/orders/subscribe", 200, true],
          ["/v1/streams/orders/ws", 101, true],
          ["/v1/streams/orders/ws", 101, undefined],
        ],
      );
      const warnings = http.filter((line) => line.level === "warning");
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.match(warnings[0].message, /'\?token=', which is deprecated/);
      const text = lines.map((line) => line.text).join("\n");
      for (const key of Object.values(KEYS)) assert.ok(!text.includes(key), key);
    });
  } finally {
    await server.close();
  }
});
