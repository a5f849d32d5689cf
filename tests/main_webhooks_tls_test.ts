/**
 * A webhook to an `https` host name from `src/main.ts` run with `deno task
 * start`'s permissions: the connection is pinned to the checked address
 * through `node:https`, which reads the extra CA certificates of
 * `NODE_EXTRA_CA_CERTS` (here the test CA that signed the receiver's
 * `localhost` certificate) and needs `--allow-sys` for that.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Webhook } from "standardwebhooks";
import { startServerProcess } from "./_server_process.ts";

const ADMIN = "admin-secret-key-5e1d9c3b7a20";
const TLS = fileURLToPath(new URL("./fixtures/tls/", import.meta.url));

Deno.test("main.ts delivers a signed webhook to an https host name over the pinned connection", async () => {
  const arrived = Promise.withResolvers<{ headers: Headers; body: string }>();
  const receiver = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: Deno.readTextFileSync(`${TLS}localhost.pem`),
    key: Deno.readTextFileSync(`${TLS}localhost.key`),
    onListen() {},
  }, async (request) => {
    arrived.resolve({ headers: request.headers, body: await request.text() });
    return new Response(null, { status: 204 });
  });
  const server = await startServerProcess("webhooks-tls", {
    EDGESTREAM_KEYS: `admin:${ADMIN}`,
    // 'localhost' resolves to this address, which the allow-list lets through.
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
    NODE_EXTRA_CA_CERTS: `${TLS}ca.pem`,
  });
  try {
    const admin = { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" };
    const created = await fetch(`${server.url}/v1/webhooks`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ url: `https://localhost:${receiver.addr.port}/hook` }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    const { id, secret } = await created.json();
    const test = await fetch(`${server.url}/v1/webhooks/${id}/test`, {
      method: "POST",
      headers: admin,
    });
    assert.equal(test.status, 202, await test.clone().text());
    await test.body?.cancel();
    const timeout = AbortSignal.timeout(15_000);
    const { headers, body } = await Promise.race([
      arrived.promise,
      new Promise<never>((_, reject) =>
        timeout.addEventListener("abort", async () => {
          const deliveries = await fetch(`${server.url}/v1/webhooks/${id}/deliveries`, {
            headers: admin,
          }).then((res) => res.text());
          reject(new Error(`Not delivered in 15 s: ${deliveries}\n${server.output()}`));
        })
      ),
    ]);
    const verified = new Webhook(secret).verify(body, Object.fromEntries(headers));
    assert.equal((verified as { type: string }).type, "webhook.test");
  } finally {
    await server.stop();
    await receiver.shutdown();
  }
});
