import assert from "node:assert/strict";
import {
  MAX_EXCERPT_BYTES,
  parseRetryAfter,
  postWebhook,
} from "../../../src/fanout/webhooks/http_post.ts";

Deno.test("parseRetryAfter() reads seconds and HTTP dates, clamped to 1 s – 24 h", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter(" 7 ", now), 7_000);
  assert.equal(parseRetryAfter("0", now), 1_000);
  assert.equal(parseRetryAfter("999999", now), 86_400_000);
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:02:00 GMT", now), 120_000);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now), 1_000);
  assert.equal(parseRetryAfter("soon", now), null);
  assert.equal(parseRetryAfter(null, now), null);
});

async function withServer(
  handler: (request: Request) => Response | Promise<Response>,
  run: (url: string) => Promise<void>,
) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  try {
    await run(`http://127.0.0.1:${server.addr.port}/hook`);
  } finally {
    await server.shutdown();
  }
}

Deno.test("postWebhook() keeps at most 2 KB of the response, never half a character", async () => {
  const body = "a" + "é".repeat(3_000);
  await withServer(() => new Response(body, { status: 500 }), async (url) => {
    const result = await postWebhook(url, {}, "{}");
    assert.equal(result.status, 500);
    assert.equal(result.error, "HTTP 500");
    const bytes = new TextEncoder().encode(result.excerpt).length;
    assert.ok(bytes <= MAX_EXCERPT_BYTES && bytes >= MAX_EXCERPT_BYTES - 1, `${bytes} bytes`);
    assert.ok(!result.excerpt.includes("\ufffd"));
    assert.equal(result.excerpt, body.slice(0, result.excerpt.length));
  });
});

Deno.test("postWebhook() sends the body and headers and reports a 2xx as success", async () => {
  let seen: { method: string; body: string; header: string | null } | undefined;
  await withServer(async (request) => {
    seen = {
      method: request.method,
      body: await request.text(),
      header: request.headers.get("x-team"),
    };
    return new Response("ok", { status: 200 });
  }, async (url) => {
    const result = await postWebhook(url, { "x-team": "a" }, '{"n":1}');
    assert.deepEqual(result, { status: 200, error: null, excerpt: "ok", retryAfterMs: null });
  });
  assert.deepEqual(seen, { method: "POST", body: '{"n":1}', header: "a" });
});

Deno.test("postWebhook() does not follow redirects: a 3xx is a failure", async () => {
  let hits = 0;
  await withServer((request) => {
    hits += 1;
    if (new URL(request.url).pathname === "/hook") {
      return new Response(null, { status: 302, headers: { location: "/elsewhere" } });
    }
    return new Response("followed", { status: 200 });
  }, async (url) => {
    const result = await postWebhook(url, {}, "{}");
    assert.equal(result.status, 302);
    assert.equal(result.error, "Redirects are not followed (HTTP 302)");
  });
  assert.equal(hits, 1);
});

Deno.test("postWebhook() reads Retry-After on 429, 502, 503 and 504 only (Standard Webhooks' slow-down statuses)", async () => {
  const statuses = [429, 502, 503, 504, 500, 501, 410, 200];
  const expected = [30_000, 30_000, 30_000, 30_000, null, null, null, null];
  await withServer(
    () => new Response(null, { status: statuses.shift()!, headers: { "retry-after": "30" } }),
    async (url) => {
      const got = [];
      for (const _ of expected) got.push((await postWebhook(url, {}, "{}")).retryAfterMs);
      assert.deepEqual(got, expected);
    },
  );
});

Deno.test("postWebhook() names the timeout it is given to name (the attempt's as configured), not what is left of it", async () => {
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  await withServer(async () => {
    await released;
    return new Response("late");
  }, async (url) => {
    const result = await postWebhook(url, {}, "{}", { timeoutMs: 50, namedTimeoutMs: 15_000 });
    release();
    assert.equal(result.error, "Timed out after 15 s");
  });
});

Deno.test("postWebhook() gives up after its timeout and reports it", async () => {
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  await withServer(async () => {
    await released;
    return new Response("late");
  }, async (url) => {
    const result = await postWebhook(url, {}, "{}", { timeoutMs: 50 });
    release();
    assert.deepEqual(result, {
      status: null,
      error: "Timed out after 50 ms",
      excerpt: "",
      retryAfterMs: null,
    });
  });
});

Deno.test("postWebhook() ends when its signal aborts, pinned or not, and says so", async () => {
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  const arrived: string[] = [];
  await withServer(async (request) => {
    arrived.push(new URL(request.url).pathname);
    await released;
    return new Response("late");
  }, async (url) => {
    try {
      await abortBoth(url);
    } finally {
      release();
    }
  });
  assert.deepEqual(arrived, ["/hook", "/pinned"]);

  async function abortBoth(url: string) {
    const port = new URL(url).port;
    const aborted = {
      status: null,
      error: "Aborted: the sender is stopping",
      excerpt: "",
      retryAfterMs: null,
    };
    const targets: Array<[string, string | undefined]> = [
      [url, undefined],
      [`http://hooks.invalid:${port}/pinned`, "127.0.0.1"],
    ];
    for (const [target, address] of targets) {
      const stop = new AbortController();
      const posting = postWebhook(target, {}, "{}", {
        address,
        timeoutMs: 5_000,
        signal: stop.signal,
      });
      while (arrived.length < (address ? 2 : 1)) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      stop.abort();
      assert.deepEqual(await posting, aborted, target);
      stop.abort();
    }
    const already = AbortSignal.abort();
    assert.deepEqual(await postWebhook(url, {}, "{}", { signal: already }), aborted);
  }
});

Deno.test("postWebhook() reports a refused connection without throwing", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const result = await postWebhook(`http://127.0.0.1:${port}/hook`, {}, "{}");
  assert.equal(result.status, null);
  assert.match(result.error!, /connect|refused/i);
});

Deno.test("postWebhook() keeps the URL and this server's local address out of the error of a connection the receiver closed once made", async () => {
  // A receiver that takes the connection and closes it: Deno's fetch then names both ends,
  // `from <local> for <url> (<address>)`; the attempt log, which the deliveries API shows, keeps
  // neither.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const connection of listener) {
      await connection.read(new Uint8Array(1024)).catch(() => null);
      connection.close();
    }
  })();
  try {
    const port = listener.addr.port;
    for (
      const url of [`http://127.0.0.1:${port}/hook?token=s3cret`, `http://127.0.0.1:${port}/a)b`]
    ) {
      const result = await postWebhook(url, {}, "{}");
      assert.equal(result.status, null);
      assert.ok(!result.error!.includes(String(port)), result.error!);
      assert.ok(!result.error!.includes("127.0.0.1"), result.error!);
      assert.match(result.error!, /^fetch failed: client error \(SendRequest\): \S/);
    }
  } finally {
    listener.close();
    await accepting.catch(() => {});
  }
});

Deno.test("postWebhook() with an address connects there, keeping the URL's host name in Host", async () => {
  let host: string | null = null;
  let body = "";
  await withServer(async (request) => {
    host = request.headers.get("host");
    body = await request.text();
    return new Response("busy", { status: 503, headers: { "retry-after": "30" } });
  }, async (url) => {
    const port = new URL(url).port;
    // The name does not resolve anywhere: only the pinned address can reach the server.
    const result = await postWebhook(`http://hooks.invalid:${port}/hook`, {}, '{"n":2}', {
      address: "127.0.0.1",
      timeoutMs: 5_000,
    });
    assert.deepEqual(result, {
      status: 503,
      error: "HTTP 503",
      excerpt: "busy",
      retryAfterMs: 30_000,
    });
  });
  assert.match(host ?? "", /^hooks\.invalid:\d+$/);
  assert.equal(body, '{"n":2}');
});

Deno.test("postWebhook() sends a header value with leading or trailing whitespace, or only whitespace, trimmed, pinned (node:http) as by fetch", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const lines: string[][] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      const buffer = new Uint8Array(8192);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buffer);
        if (n === null) break;
        head += new TextDecoder("latin1").decode(buffer.subarray(0, n));
      }
      lines.push(head.split("\r\n").filter((line) => line.startsWith("x-")).sort());
      await conn.write(
        new TextEncoder().encode("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"),
      );
      conn.close();
    }
  })();
  try {
    const headers = { "x-blank": " \t", "x-padded": "\t a b " };
    const direct = await postWebhook(`http://127.0.0.1:${port}/hook`, headers, "{}");
    const pinned = await postWebhook(`http://hooks.invalid:${port}/hook`, headers, "{}", {
      address: "127.0.0.1",
      timeoutMs: 5_000,
    });
    assert.deepEqual([direct.status, pinned.status], [204, 204]);
    assert.deepEqual(lines, [["x-blank: ", "x-padded: a b"], ["x-blank: ", "x-padded: a b"]]);
  } finally {
    listener.close();
    await serving.catch(() => {});
  }
});

Deno.test("postWebhook() with an address reports a request it cannot even start, without throwing", async () => {
  // Node's client refuses the header before connecting (as it refuses a missing permission).
  const result = await postWebhook("https://hooks.invalid/hook", { "x-bad": "a\nb" }, "{}", {
    address: "127.0.0.1",
    timeoutMs: 1_000,
  });
  assert.equal(result.status, null);
  assert.match(result.error ?? "", /x-bad/i);
});

Deno.test("postWebhook() never re-resolves a pinned host: a rebinding answer cannot reach loopback", async () => {
  let hits = 0;
  await withServer(() => {
    hits += 1;
    return new Response("internal");
  }, async (url) => {
    const port = new URL(url).port;
    // 'localhost' resolves to loopback, but the check approved (and pinned) another address.
    const result = await postWebhook(`http://localhost:${port}/hook`, {}, "{}", {
      address: "192.0.2.1",
      timeoutMs: 300,
    });
    assert.equal(result.status, null);
  });
  assert.equal(hits, 0);
});

Deno.test("postWebhook() takes a 2xx whose body never ends as the success it is, pinned or not: the status and a first excerpt are its answer", async () => {
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  await withServer(() => {
    // Headers and a first chunk at once, then a body that stays open.
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(new TextEncoder().encode("accepted"));
        await released;
        controller.close();
      },
    });
    return new Response(body, { status: 200 });
  }, async (url) => {
    const port = new URL(url).port;
    try {
      const results = [
        await postWebhook(url, {}, "{}", { timeoutMs: 300 }),
        await postWebhook(`http://hooks.invalid:${port}/hook`, {}, "{}", {
          address: "127.0.0.1",
          timeoutMs: 300,
        }),
      ];
      for (const result of results) {
        assert.deepEqual(result, {
          status: 200,
          error: null,
          excerpt: "accepted",
          retryAfterMs: null,
        });
      }
    } finally {
      release();
    }
  });
});
