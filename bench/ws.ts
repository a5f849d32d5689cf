/**
 * WebSocket ingest against HTTP ingest, same server process, same run: events/s
 * over ONE WebSocket connection (frames of 100 events, at most 8 frames in
 * flight, each acked after the store applied it) against HTTP POSTs of 100
 * events with 8 requests in flight. Memory store, `bench/config.json`.
 *
 * `deno task bench:ws [seconds-per-round] [rounds]`
 */

// @ts-types="@types/ws"
import NodeWebSocket from "ws";
import { machineInfo, makeBatch, startServer, writeResults } from "./_shared.ts";

const SECONDS = Number(Deno.args[0] ?? 5);
const ROUNDS = Number(Deno.args[1] ?? 3);
const BATCH = 100;
const IN_FLIGHT = 8;

interface Result {
  events: number;
  seconds: number;
}

async function overHttp(url: string, seconds: number): Promise<Result> {
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let events = 0;
  async function worker() {
    while (performance.now() < deadline) {
      const res = await fetch(`${url}/v1/streams/bench/events`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: makeBatch(BATCH),
      });
      const reply = await res.json();
      if (res.status !== 202) throw new Error(`HTTP ingest failed: ${JSON.stringify(reply)}`);
      events += reply.accepted;
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return { events, seconds: (performance.now() - started) / 1000 };
}

async function overWebSocket(url: string, seconds: number): Promise<Result> {
  // npm:ws as the client: Deno's own WebSocket client costs the load generator
  // more per frame than the server spends, which would measure the client.
  const socket = new NodeWebSocket(`${url.replace("http", "ws")}/v1/streams/bench/ws`);
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let events = 0;
  let inFlight = 0;
  const done = Promise.withResolvers<void>();
  function fill() {
    while (inFlight < IN_FLIGHT && performance.now() < deadline) {
      socket.send(makeBatch(BATCH));
      inFlight += 1;
    }
    if (inFlight === 0) done.resolve();
  }
  socket.on("message", (data) => {
    const reply = JSON.parse(String(data));
    if (reply.type !== "ack") done.reject(new Error(`WebSocket ingest failed: ${data}`));
    events += reply.accepted;
    inFlight -= 1;
    fill();
  });
  fill();
  await done.promise;
  const elapsed = (performance.now() - started) / 1000;
  const closed = new Promise((resolve) => socket.once("close", resolve));
  socket.close();
  await closed;
  return { events, seconds: elapsed };
}

const rate = (result: Result) => result.events / result.seconds;
const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const machine = await machineInfo();
const http: number[] = [];
const ws: number[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  const server = await startServer("pipeline");
  try {
    await overHttp(server.url, 1); // warm-up, both paths
    await overWebSocket(server.url, 1);
    // Alternate the order so neither path always runs on a fuller store.
    if (round % 2 === 1) {
      ws.push(rate(await overWebSocket(server.url, SECONDS)));
      http.push(rate(await overHttp(server.url, SECONDS)));
    } else {
      http.push(rate(await overHttp(server.url, SECONDS)));
      ws.push(rate(await overWebSocket(server.url, SECONDS)));
    }
  } finally {
    await server.stop();
  }
  console.log(
    `round ${round}: websocket ${ws.at(-1)!.toFixed(0)} events/s, http ${
      http.at(-1)!.toFixed(0)
    } events/s`,
  );
}
const w = median(ws);
const h = median(http);
console.log(
  `ingest (batches of ${BATCH}, ${IN_FLIGHT} in flight, memory store, ${SECONDS}s x ${ROUNDS} rounds, median):`,
);
console.log(`  websocket (1 connection, acked frames): ${w.toFixed(0)} events/s`);
console.log(`  http (${IN_FLIGHT} concurrent POSTs):          ${h.toFixed(0)} events/s`);
console.log(`  ratio websocket/http:                   ${(w / h).toFixed(2)} (target >= 1.00)`);
const path = await writeResults("ws", {
  bench: "ws",
  machine,
  batch: BATCH,
  inFlight: IN_FLIGHT,
  seconds: SECONDS,
  rounds: { websocket: ws, http },
  medians: { websocket: w, http: h },
  ratio: w / h,
});
console.log(`\nresults: ${path}`);
