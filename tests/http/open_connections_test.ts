import assert from "node:assert/strict";
import { OpenConnections, RequestsInFlight } from "../../src/http/open_connections.ts";

Deno.test("RequestsInFlight counts a handler's requests until each answered, thrown or not", async () => {
  const requests = new RequestsInFlight();
  const gates: PromiseWithResolvers<Response>[] = [];
  const handler = requests.track((request: Request) => {
    if (request.url.endsWith("/throw")) throw new Error("handler failed");
    if (request.url.endsWith("/reject")) return Promise.reject(new Error("rejected"));
    const gate = Promise.withResolvers<Response>();
    gates.push(gate);
    return gate.promise;
  });
  await requests.idle();
  const first = handler(new Request("http://localhost/a"));
  const second = handler(new Request("http://localhost/b"));
  assert.equal(requests.running, 2);
  let idle = false;
  const waiting = requests.idle().then(() => idle = true);
  gates[0].resolve(new Response("a"));
  assert.equal(await (await first).text(), "a");
  assert.equal(requests.running, 1);
  assert.equal(idle, false);
  gates[1].resolve(new Response("b"));
  await second;
  await waiting;
  assert.equal(idle, true);
  await assert.rejects(handler(new Request("http://localhost/throw")), /handler failed/);
  await assert.rejects(handler(new Request("http://localhost/reject")), /rejected/);
  assert.equal(requests.running, 0);
});

Deno.test("RequestsInFlight.idleForMs() is Infinity before any request, 0 while one runs, then the time since the last was answered", async () => {
  let now = 1_000;
  const requests = new RequestsInFlight({ now: () => now });
  assert.equal(requests.idleForMs(), Infinity);
  const { promise: answer, resolve } = Promise.withResolvers<Response>();
  const handled = requests.track(() => answer)(new Request("http://localhost/"));
  now = 2_000;
  assert.equal(requests.idleForMs(), 0);
  resolve(new Response("ok"));
  await (await handled).body?.cancel();
  now = 2_300;
  assert.equal(requests.idleForMs(), 300);
});

Deno.test("OpenConnections.drain() makes it stopping while it still takes connections; close() refuses them", async () => {
  const connections = new OpenConnections();
  assert.equal(connections.stopping, false);
  connections.drain();
  assert.equal(connections.stopping, true);
  assert.equal(connections.closing, false);
  // Still taken during the drain: only /readyz says the instance is going.
  connections.refuseWhileClosing();
  await connections.close("Server is shutting down");
  assert.equal(connections.stopping, true);
  assert.throws(() => connections.refuseWhileClosing(), /shutting down/);
});
