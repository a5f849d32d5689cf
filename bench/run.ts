/**
 * Ingest benchmark over real HTTP on loopback: batches of 100 events, three
 * counters, memory store; against a baseline Hono handler that only parses
 * the same JSON and replies 202, measured in the same run. Each server runs
 * in its own process; this process is the load generator. The pipeline runs
 * twice: on the `bench` stream (dedupe by id, as most streams will) and on
 * `bench_no_dedupe` (same counters, no dedupe), to show what dedupe costs.
 *
 * `deno task bench [seconds-per-round] [rounds]`
 */

import { makeBatch, startServer } from "./_shared.ts";

const SECONDS = Number(Deno.args[0] ?? 5);
const ROUNDS = Number(Deno.args[1] ?? 3);
const CONCURRENCY = 16;
const BATCH = 100;

async function load(
  port: number,
  seconds: number,
  stream: string,
): Promise<{ events: number; seconds: number; errors: number }> {
  const url = `http://127.0.0.1:${port}/v1/streams/${stream}/events`;
  const deadline = performance.now() + seconds * 1000;
  let events = 0;
  let errors = 0;
  const started = performance.now();
  async function worker() {
    while (performance.now() < deadline) {
      const res = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: makeBatch(BATCH),
      });
      await res.arrayBuffer();
      if (res.status === 202) events += BATCH;
      else errors += 1;
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { events, seconds: (performance.now() - started) / 1000, errors };
}

async function measure(mode: string, stream = "bench"): Promise<number> {
  const server = await startServer(mode);
  try {
    await load(server.port, 1, stream); // warm-up
    const result = await load(server.port, SECONDS, stream);
    if (result.errors > 0) throw new Error(`${mode}: ${result.errors} requests failed`);
    return result.events / result.seconds;
  } finally {
    await server.stop();
  }
}

const baseline: number[] = [];
const pipeline: number[] = [];
const noDedupe: number[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  baseline.push(await measure("baseline"));
  pipeline.push(await measure("pipeline"));
  noDedupe.push(await measure("pipeline", "bench_no_dedupe"));
  console.log(
    `round ${round}: baseline ${baseline.at(-1)!.toFixed(0)} events/s, pipeline ${
      pipeline.at(-1)!.toFixed(0)
    } events/s, pipeline without dedupe ${noDedupe.at(-1)!.toFixed(0)} events/s`,
  );
}
const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const b = median(baseline);
const p = median(pipeline);
const n = median(noDedupe);
console.log(
  `ingest (batches of ${BATCH}, 3 counters, memory store, ${CONCURRENCY} connections, ${SECONDS}s x ${ROUNDS} rounds, median):`,
);
console.log(`  baseline (parse JSON + 202):      ${b.toFixed(0)} events/s`);
console.log(`  pipeline (dedupe by id):          ${p.toFixed(0)} events/s`);
console.log(`  pipeline (no dedupe):             ${n.toFixed(0)} events/s`);
console.log(`  ratio pipeline/baseline:          ${(p / b).toFixed(2)} (target >= 0.50)`);
console.log(`  ratio pipeline (no dedupe)/base:  ${(n / b).toFixed(2)}`);
