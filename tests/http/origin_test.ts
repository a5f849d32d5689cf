import assert from "node:assert/strict";
import type { OpenAPIHono } from "@hono/zod-openapi";
import {
  OriginPolicy,
  OriginSettingError,
  parseAllowedHosts,
  parseAllowedOrigins,
} from "../../src/http/origin.ts";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { KEYS, NOW, TEST_CONFIG } from "../_fixtures.ts";
import { ADMIN_KEY, setup } from "../fanout/webhooks/_setup.ts";
import { nodeClient, startServer } from "../_live.ts";

const HOOK = { url: "http://127.0.0.1:9/hook" };
const SUBSCRIBE = "/v1/streams/orders/subscribe";

/** Sends a request with the given headers; reads the JSON reply. */
async function send(
  app: OpenAPIHono,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: unknown; key?: string } = {},
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.key) headers.Authorization = `Bearer ${options.key}`;
  const res = await app.request(path, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function streamsApp(options: { auth?: boolean; allowedHosts?: string[] } = {}) {
  const keys = await KeyRing.parse(
    options.auth ? `admin:${KEYS.admin},ingest:${KEYS.ingest},read:${KEYS.read}` : "",
  );
  const store = new MemoryStore({ now: () => NOW });
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store,
    keys,
    now: () => NOW,
    origins: { allowedHosts: options.allowedHosts },
  });
  return { app, store };
}

Deno.test("Open mode refuses a Host that is not a loopback name with 421 naming it and EDGESTREAM_ALLOWED_HOSTS", async () => {
  const { app } = await streamsApp();
  const res = await send(app, "GET", "/v1/streams", { headers: { Host: "attacker.example" } });
  assert.equal(res.status, 421);
  assert.deepEqual(res.body, {
    error: {
      code: "host_not_allowed",
      message:
        "Host 'attacker.example' refused: open mode (no EDGESTREAM_KEYS) answers only loopback names (localhost, 127.0.0.1, [::1]) and EDGESTREAM_ALLOWED_HOSTS; add 'attacker.example' there to allow it",
      requestId: res.body.error.requestId,
    },
  });
  assert.equal(typeof res.body.error.requestId, "string");
  for (
    const host of [
      "attacker.example:8000",
      "127.0.0.1.nip.io",
      "localhost.attacker.example",
      "evil@localhost",
      "10.0.0.1:8000",
      "0.0.0.0:8000",
      "[::2]:8000",
      "[::ffff:7f00:1]",
    ]
  ) {
    const refused = await send(app, "GET", "/healthz", { headers: { Host: host } });
    assert.equal(refused.status, 421, host);
    assert.equal(refused.body.error.code, "host_not_allowed", host);
  }
});

Deno.test("Open mode answers loopback Host names, and a request without Host by its URL", async () => {
  const { app } = await streamsApp();
  for (
    const host of [
      "localhost",
      "localhost:8000",
      "LocalHost:8000",
      "localhost.:8000",
      "app.localhost:5173",
      "127.0.0.1",
      "127.0.0.1:8000",
      "127.8.9.10:1",
      "[::1]",
      "[::1]:8000",
    ]
  ) {
    const res = await send(app, "GET", "/v1/streams", { headers: { Host: host } });
    assert.equal(res.status, 200, host);
  }
  assert.equal((await send(app, "GET", "/v1/streams")).status, 200);
});

Deno.test("Keyed mode answers any Host and still needs a key", async () => {
  const { app } = await streamsApp({ auth: true });
  const headers = { Host: "attacker.example" };
  assert.equal((await send(app, "GET", "/v1/streams", { headers, key: KEYS.read })).status, 200);
  assert.equal((await send(app, "GET", "/v1/streams", { headers })).status, 401);
});

Deno.test("Open mode answers the allowed hosts: exact names and .domain for a domain and its subdomains", async () => {
  const { app } = await streamsApp({ allowedHosts: ["dev.example.com", ".trycloudflare.com"] });
  for (
    const host of [
      "dev.example.com",
      "DEV.example.com:443",
      "trycloudflare.com",
      "a-b.trycloudflare.com",
      "x.y.trycloudflare.com:8443",
    ]
  ) {
    assert.equal((await send(app, "GET", "/healthz", { headers: { Host: host } })).status, 200);
  }
  for (
    const host of [
      "example.com",
      "other.dev.example.com",
      "eviltrycloudflare.com",
      "dev.example.com.attacker.example",
    ]
  ) {
    const res = await send(app, "GET", "/healthz", { headers: { Host: host } });
    assert.equal(res.status, 421, host);
  }
});

Deno.test("A rebinding page cannot register a webhook in open mode: 421 and nothing registered", async () => {
  const { app, close } = await setup();
  try {
    const res = await send(app, "POST", "/v1/webhooks", {
      headers: { Host: "attacker.example:8000", Origin: "http://attacker.example:8000" },
      body: HOOK,
    });
    assert.equal(res.status, 421);
    assert.equal(res.body.error.code, "host_not_allowed");
    assert.equal(res.body.secret, undefined);
    assert.deepEqual((await send(app, "GET", "/v1/webhooks")).body.webhooks, []);
  } finally {
    await close();
  }
});

Deno.test("A cross-origin POST to /v1/webhooks is refused with 403 in both modes and registers nothing", async () => {
  for (const auth of [false, true]) {
    const { app, close } = await setup({ auth });
    const key = auth ? ADMIN_KEY : undefined;
    try {
      for (
        const origin of [
          "https://evil.example",
          "null",
          "https://localhost:8000",
          "http://localhost:5173",
          "http://localhost:8000/",
        ]
      ) {
        const res = await send(app, "POST", "/v1/webhooks", {
          headers: { Host: "localhost:8000", Origin: origin },
          body: HOOK,
          key,
        });
        assert.equal(res.status, 403, `${origin} (auth: ${auth})`);
        assert.deepEqual(res.body, {
          error: {
            code: "origin_not_allowed",
            message:
              `Cross-origin POST from '${origin}' refused, as this server is 'http://localhost:8000': add the origin to EDGESTREAM_ALLOWED_ORIGINS to allow it`,
            requestId: res.body.error.requestId,
          },
        });
        assert.equal(typeof res.body.error.requestId, "string");
      }
      assert.deepEqual((await send(app, "GET", "/v1/webhooks", { key })).body.webhooks, []);
    } finally {
      await close();
    }
  }
});

Deno.test("A same-origin POST registers a webhook, default ports included", async () => {
  for (const auth of [false, true]) {
    const { app, close } = await setup({ auth });
    const key = auth ? ADMIN_KEY : undefined;
    try {
      for (
        const [host, origin] of [
          ["localhost:8000", "http://localhost:8000"],
          ["localhost", "http://localhost"],
          ["localhost:80", "http://localhost"],
          ["[::1]:8000", "http://[::1]:8000"],
        ]
      ) {
        const res = await send(app, "POST", "/v1/webhooks", {
          headers: { Host: host, Origin: origin },
          body: HOOK,
          key,
        });
        assert.equal(res.status, 201, `${host} ${origin} (auth: ${auth})`);
        assert.match(res.body.secret, /^whsec_/);
      }
    } finally {
      await close();
    }
  }
});

Deno.test("allowedOrigins lets a listed origin send state-changing requests, and only that one", async () => {
  const { app, close } = await setup({ origins: { allowedOrigins: ["http://localhost:5173"] } });
  try {
    const headers = (origin: string) => ({ Host: "localhost:8000", Origin: origin });
    const listed = await send(app, "POST", "/v1/webhooks", {
      headers: headers("http://localhost:5173"),
      body: HOOK,
    });
    assert.equal(listed.status, 201);
    const other = await send(app, "POST", "/v1/webhooks", {
      headers: headers("http://localhost:5174"),
      body: HOOK,
    });
    assert.equal(other.status, 403);
    assert.equal((await send(app, "GET", "/v1/webhooks")).body.webhooks.length, 1);
  } finally {
    await close();
  }
});

Deno.test("Cross-origin PATCH, PUT and DELETE are refused and change nothing; cross-origin GET, HEAD and OPTIONS pass", async () => {
  const { app, close } = await setup();
  try {
    const created = await send(app, "POST", "/v1/webhooks", {
      body: { ...HOOK, description: "before" },
    });
    assert.equal(created.status, 201);
    const path = `/v1/webhooks/${created.body.id}`;
    const headers = { Origin: "https://evil.example" };
    const patch = await send(app, "PATCH", path, { headers, body: { description: "after" } });
    assert.equal(patch.status, 403);
    assert.match(patch.body.error.message, /^Cross-origin PATCH from 'https:\/\/evil\.example'/);
    assert.equal((await send(app, "DELETE", path, { headers })).status, 403);
    assert.equal((await send(app, "PUT", path, { headers, body: HOOK })).status, 403);
    const options = await app.request(path, { method: "OPTIONS", headers });
    assert.equal(options.status, 204);
    assert.equal(options.headers.get("Access-Control-Allow-Origin"), null, "no CORS grant");
    assert.equal((await app.request(path, { method: "HEAD", headers })).status, 200);
    const read = await send(app, "GET", path, { headers });
    assert.equal(read.status, 200);
    assert.equal(read.body.description, "before");
  } finally {
    await close();
  }
});

Deno.test("With keys, a cross-origin read is refused 403 origin_not_allowed, readable by the page, once its key is known; no Origin, the server's own and a listed one read", async () => {
  const { app, close } = await setup({
    auth: true,
    origins: { allowedOrigins: ["https://app.example"] },
  });
  try {
    const evil = { Origin: "https://evil.example" };
    for (const method of ["GET", "HEAD"]) {
      const res = await app.request("http://edge.example/v1/webhooks", {
        method,
        headers: { ...evil, Authorization: `Bearer ${ADMIN_KEY}` },
      });
      assert.equal(res.status, 403, method);
      assert.equal(res.headers.get("Access-Control-Allow-Origin"), "https://evil.example", method);
      if (method === "GET") assert.equal((await res.json()).error.code, "origin_not_allowed");
      else await res.body?.cancel();
    }
    // Without a key: its 401 first, as before (the key's origins are not known).
    const none = await app.request("http://edge.example/v1/webhooks", { headers: evil });
    assert.equal(none.status, 401);
    await none.body?.cancel();
    for (
      const headers of [
        {} as Record<string, string>,
        { Origin: "http://edge.example" },
        { Origin: "https://app.example" },
      ]
    ) {
      const read = await send(app, "GET", "http://edge.example/v1/webhooks", {
        headers,
        key: ADMIN_KEY,
      });
      assert.equal(read.status, 200, JSON.stringify(headers));
    }
  } finally {
    await close();
  }
});

Deno.test("A cross-origin ingest POST is refused and counts nothing", async () => {
  const { app, store } = await streamsApp();
  const res = await send(app, "POST", "/v1/streams/orders/events", {
    headers: { Origin: "https://evil.example" },
    body: { id: "a", country: "DE" },
  });
  assert.equal(res.status, 403);
  assert.equal(res.body.error.code, "origin_not_allowed");
  assert.equal((await store.stats("orders", [])).accepted, 0);
});

Deno.test("A cross-origin WebSocket upgrade is refused before its route with a JSON error", async () => {
  const { app } = await streamsApp();
  const res = await send(app, "GET", SUBSCRIBE, {
    headers: { Upgrade: "websocket", Connection: "Upgrade", Origin: "https://evil.example" },
  });
  assert.equal(res.status, 403);
  assert.equal(
    res.body.error.message,
    "Cross-origin WebSocket upgrade from 'https://evil.example' refused, as this server is 'http://localhost': add the origin to EDGESTREAM_ALLOWED_ORIGINS to allow it",
  );
});

Deno.test("A real WebSocket client from another origin is refused with 403; from the server's own origin it connects", async () => {
  const server = await startServer();
  try {
    for (const path of [SUBSCRIBE, "/v1/streams/orders/ws"]) {
      const refused = await nodeClient(server.wsUrl(path), {
        headers: { Origin: "https://evil.example" },
      });
      assert.equal(refused.status, 403, path);
      await refused.inbox.closed;
    }
    const own = await nodeClient(server.wsUrl(SUBSCRIBE), { headers: { Origin: server.base } });
    assert.equal(own.status, undefined);
    assert.equal((await own.inbox.next()).type, "subscribed");
    await own.close();
  } finally {
    await server.close();
  }
});

Deno.test("Keyed mode refuses a cross-origin WebSocket carrying ?token=, unless its origin is allowed", async () => {
  const server = await startServer({
    auth: true,
    origins: { allowedOrigins: ["https://app.example.com"] },
  });
  try {
    const url = server.wsUrl(`${SUBSCRIBE}?token=${KEYS.read}`);
    const refused = await nodeClient(url, { headers: { Origin: "https://evil.example" } });
    assert.equal(refused.status, 403);
    await refused.inbox.closed;
    const listed = await nodeClient(url, { headers: { Origin: "https://app.example.com" } });
    assert.equal(listed.status, undefined);
    assert.equal((await listed.inbox.next()).type, "subscribed");
    await listed.close();
  } finally {
    await server.close();
  }
});

Deno.test("Open mode refuses a real WebSocket upgrade whose Host is not loopback with 421", async () => {
  const server = await startServer({ origins: { allowedHosts: ["dev.example.com"] } });
  try {
    const port = new URL(server.base).port;
    const refused = await nodeClient(server.wsUrl(SUBSCRIBE), {
      headers: { Host: `attacker.example:${port}` },
    });
    assert.equal(refused.status, 421);
    await refused.inbox.closed;
    const allowed = await nodeClient(server.wsUrl(SUBSCRIBE), {
      headers: { Host: `dev.example.com:${port}` },
    });
    assert.equal((await allowed.inbox.next()).type, "subscribed");
    await allowed.close();
  } finally {
    await server.close();
  }
});

Deno.test("parseAllowedHosts() normalizes names and refuses ports, paths and wildcards", () => {
  assert.deepEqual(
    parseAllowedHosts(" Dev.Example.com, .TryCloudflare.com,,[::2], bücher.example "),
    ["dev.example.com", ".trycloudflare.com", "[::2]", "xn--bcher-kva.example"],
  );
  assert.deepEqual(parseAllowedHosts(undefined), []);
  for (const entry of ["dev.example.com:8080", "*", "*.example.com", "a/b", "http://x", "."]) {
    assert.throws(
      () => parseAllowedHosts(`ok.example, ${entry}`),
      (error) =>
        error instanceof OriginSettingError &&
        error.message.startsWith(`Cannot read allowed host '${entry}': expected a host name`),
      entry,
    );
  }
});

Deno.test("parseAllowedHosts() refuses an entry holding credentials without repeating them", () => {
  const entries = {
    "https://ops:hunter2@dev.example.com": "https://[REDACTED]@dev.example.com",
    "https://ops:hunter2@dev.example.com/": "https://[REDACTED]@dev.example.com/",
    "ops:hunter2@dev.example.com": "ops:[REDACTED]@dev.example.com",
    "hunter2@dev.example.com": "[REDACTED]@dev.example.com",
    "https://hunter2@x@dev.example.com": "https://[REDACTED]@dev.example.com",
  };
  for (const [entry, shown] of Object.entries(entries)) {
    assert.throws(
      () => parseAllowedHosts(`ok.example, ${entry}`),
      (error) =>
        error instanceof OriginSettingError && !error.message.includes("hunter2") &&
        error.message.startsWith(`Cannot read allowed host '${shown}': expected a host name`),
      entry,
    );
  }
});

Deno.test("parseAllowedOrigins() normalizes origins and refuses null, paths and other schemes", () => {
  assert.deepEqual(
    parseAllowedOrigins(
      "HTTPS://App.Example.com/, http://localhost:5173,https://x.example:443, http://[::1]:8080, https://a.example., https://bücher.example",
    ),
    [
      "https://app.example.com",
      "http://localhost:5173",
      "https://x.example",
      "http://[::1]:8080",
      "https://a.example.",
      "https://xn--bcher-kva.example",
    ],
  );
  for (
    const entry of [
      "null",
      "*",
      "app.example.com",
      "https://app.example.com/path",
      "https://app.example.com?x",
      "https://user@app.example.com",
      "ftp://app.example.com",
      // No browser sends these hosts in `Origin`: a wildcard would never match.
      "https://*.example.com",
      "https://*",
      "https://a!b.example",
    ]
  ) {
    assert.throws(
      () => parseAllowedOrigins(entry),
      (error) =>
        error instanceof OriginSettingError &&
        // Credentials (`user@`) are not repeated into the message.
        error.message.startsWith(
          `Cannot read allowed origin '${entry.replace("user@", "[REDACTED]@")}': expected`,
        ),
      entry,
    );
  }
});

/** The status line and JSON body of one raw HTTP/1.1 request to `port`. */
// deno-lint-ignore no-explicit-any
async function rawRequest(port: number, head: string): Promise<{ status: string; body: any }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(`${head}Connection: close\r\n\r\n`));
    let text = "";
    const buffer = new Uint8Array(4096);
    for (let read; (read = await conn.read(buffer)) !== null;) {
      text += new TextDecoder().decode(buffer.subarray(0, read));
    }
    return {
      status: text.slice(0, text.indexOf("\r\n")),
      body: JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)),
    };
  } finally {
    conn.close();
  }
}

Deno.test("A Host header that makes no URL is a 400 naming it, not a 500, open or with keys", async () => {
  for (const auth of [false, true]) {
    const server = await startServer({ auth });
    try {
      const port = Number(new URL(server.base).port);
      // With keys, only a request with an Origin has its host read.
      const { status, body } = await rawRequest(
        port,
        "GET /v1/streams HTTP/1.1\r\nHost: evil.com, localhost\r\nOrigin: https://evil.com\r\n",
      );
      assert.match(status, /^HTTP\/1\.1 400 /);
      assert.equal(body.error.code, "invalid_request");
      assert.match(body.error.message, /^Host 'evil\.com, localhost' is not a host name/);
      if (auth) {
        // Without an Origin the host is not read; a key looked for in the query is not found.
        const subscribe = await rawRequest(
          port,
          "GET /v1/streams/orders/subscribe?token=x HTTP/1.1\r\nHost: evil.com, localhost\r\n" +
            "Accept: text/event-stream\r\n",
        );
        assert.match(subscribe.status, /^HTTP\/1\.1 401 /);
        assert.equal(subscribe.body.error.code, "unauthorized");
      }
    } finally {
      await server.close();
    }
  }
});

Deno.test("foreignOrigin() names a request's Origin that is neither the server's own nor listed, as a read from it needs a key listing it", () => {
  const policy = new OriginPolicy({ open: false, allowedOrigins: ["https://app.example"] });
  const from = (url: string, headers: Record<string, string>) =>
    policy.foreignOrigin(new Request(url, { headers }));
  assert.equal(from("http://edge.example/v1/x", {}), undefined, "no Origin: not a page");
  assert.equal(from("http://edge.example/v1/x", { Origin: "https://app.example" }), undefined);
  assert.equal(from("http://edge.example/v1/x", { Origin: "http://edge.example" }), undefined);
  // The own origin is the Host the request came with, scheme and port included.
  assert.equal(
    from("http://10.0.0.1:8000/v1/x", {
      Origin: "http://edge.example:8000",
      Host: "edge.example:8000",
    }),
    undefined,
  );
  assert.equal(
    from("http://edge.example/v1/x", { Origin: "https://edge.example" }),
    "https://edge.example",
  );
  // What no setting can list (a sandboxed page, an extension, an app's file: page) is answered as
  // before: read only by a client that skips CORS, as an extension with host permissions does.
  assert.equal(from("http://edge.example/v1/x", { Origin: "null" }), undefined);
  assert.equal(
    from("http://edge.example/v1/x", { Origin: "chrome-extension://abcdefghijklmnop" }),
    undefined,
  );
  assert.equal(from("http://edge.example/v1/x", { Origin: "file://" }), undefined);
  assert.equal(
    from("http://edge.example/v1/x", { Origin: "https://evil.example" }),
    "https://evil.example",
  );
});
