import assert from "node:assert/strict";
import { configFromEnv } from "../src/env.ts";
import { serve } from "../src/main.ts";

function env(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

/** The status of a GET sent with `host` as its Host header, over a raw connection. */
async function statusFor(port: number, path: string, host: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
  );
  // Reading to the end closes the connection.
  const reply = await new Response(conn.readable).text();
  return Number(reply.split(" ")[1]);
}

Deno.test("serve() answers EDGESTREAM_ALLOWED_HOSTS in open mode and refuses other hosts", async () => {
  const config = await configFromEnv(env({
    PORT: "0",
    EDGESTREAM_SWEEP_EVERY: "0s",
    EDGESTREAM_ALLOWED_HOSTS: "dev.example.com",
  }));
  const server = await serve(config);
  try {
    const { port } = server.addr as Deno.NetAddr;
    assert.equal(await statusFor(port, "/v1/streams", `dev.example.com:${port}`), 200);
    assert.equal(await statusFor(port, "/v1/streams", `localhost:${port}`), 200);
    assert.equal(await statusFor(port, "/v1/streams", `attacker.example:${port}`), 421);
  } finally {
    await server.shutdown();
    await config.webhooks.close();
  }
});
