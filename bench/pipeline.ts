/**
 * Where the memory path's CPU goes per event, stage by stage, in this process (no HTTP, no load
 * generator sharing the cores): CPU µs per event (`process.cpuUsage()`, so time lost to other
 * processes does not count) of each stage alone over the same pre-built batches of the `bench`
 * stream of `bench/config.json` (`makeBatch`, 100 events), then of the whole of
 * `parseEvents` + `ingestItems` on a `MemoryStore`, with and without dedupe (`bench_no_dedupe`).
 * Each figure is the least of `--rounds` rounds, as CPU time still moves with cache contention.
 * Beside CPU time, the heap bytes each stage allocates per event (V8's `total_allocated_bytes`):
 * what the garbage collector pays for later, in this process and in the server.
 *
 * - `JSON.parse`: the body text alone, what a parse-only handler also pays;
 * - `parseEvents`: the body split into events (JSON.parse included);
 * - `validate`: `eventValidator` (structural limits + the stream's schema: its fast verdict, or zod);
 * - `transform`: the compiled CEL filter + set;
 * - `counters`: `writeCounterCell` of the 4 counters into a batch's update columns;
 * - `ingest`: `makeBatch` + parse + `ingestItems` into a memory store (the stages above, dedupe,
 *   the store);
 * - `ingest, no dedupe`: the same on the stream without dedupe;
 * - `makeBatch`: making a body, which the `ingest` rows do for each batch (fresh ids) and a server
 *   does not;
 * - `ingest, store no-op`: `makeBatch` + parse + `ingestItems` to a store that applies nothing
 *   (the pipeline before the store);
 * - `store apply`: `MemoryStore.applyBatch` alone (dedupe included) into a new store, of batches
 *   the pipeline made of fresh bodies, 300 at a time, before they are measured.
 *
 * With `--server` it also measures the whole server over HTTP, where the stages above are only a
 * part: `bench/server.ts main` (what `deno task bench` runs: `src/main.ts`, keys on, the same
 * stream) and `baseline` (parse-only), each under 16 closed-loop clients sending batches of 100
 * for `--seconds` after a 2 s warm-up, in rounds that alternate the two. Each figure is the
 * server process's CPU time (all its threads, from `/proc/<pid>/stat`, so Linux only) per event
 * it answered: the load generator and other processes change how fast it runs, much less what
 * an event costs it. The CPU ratio (parse-only's µs per event / memory's) is what the throughput
 * ratio of `deno task bench` would be if both servers had the CPU to themselves.
 *
 * `deno run --allow-all bench/pipeline.ts [--batches 3000] [--rounds 3] [--server] [--seconds 6]`
 */
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadConfigFile } from "../src/config/mod.ts";
import { parseEvents } from "../src/http/body.ts";
import { ingestItems } from "../src/ingest/pipeline.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import type { ApplyResult, Store, StoreBatch } from "../src/store/types.ts";
import type { Event } from "../src/validate/mod.ts";
import { eventValidator, validateEvent } from "../src/validate/mod.ts";
import { writeCounterCell } from "../src/window/mod.ts";
import {
  allocatedBytes,
  benchServerEnv,
  closedLoop,
  loadAverageText,
  machineInfo,
  makeBatch,
  processCpuSeconds,
  startServer,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    batches: { type: "string", default: "3000" },
    rounds: { type: "string", default: "3" },
    server: { type: "boolean", default: false },
    seconds: { type: "string", default: "6" },
  },
});
const BATCHES = Number(flags.batches);
const ROUNDS = Number(flags.rounds);
const SECONDS = Number(flags.seconds);
const BATCH = 100;

const streams = await loadConfigFile(fileURLToPath(new URL("./config.json", import.meta.url)));
const stream = streams.get("bench")!;
const noDedupe = streams.get("bench_no_dedupe")!;
const machine = await machineInfo();

/** Distinct bodies, cycled (ids differ per body, so dedupe keeps finding new ids). */
const bodies = Array.from({ length: 200 }, () => makeBatch(BATCH));
const parsed = bodies.map((body) =>
  parseEvents(body, "json").map((item) => (item.ok ? item.value : null))
);
const transformed = parsed.map((events) =>
  events.map((event) =>
    stream.transform(validateEvent(event, stream.schema).ok ? event as Event : {})
  )
);

/** A store that applies nothing and answers every event applied, keeping the batches if asked. */
function noOpStore(kept?: StoreBatch[]): Store {
  return {
    applyBatch(batch: StoreBatch): Promise<ApplyResult> {
      kept?.push(batch);
      return Promise.resolve({
        outcomes: batch.events.map(() => "applied" as const),
        requests: [{ status: "applied", duplicates: 0, late: 0 }],
        watermark: null,
        demand: [],
      });
    },
  } as unknown as Store;
}

/** A stage's work on batch `i`. */
type Run = (i: number) => unknown;

/**
 * A stage whose batches are made before they are measured, {@linkcode CHUNK} at a time: made all
 * at once, a stage's batches would be ~100 MB live, and collecting them would slow the stages
 * measured after it.
 */
interface Chunked {
  /** Makes the batches `run` takes from `from` on (not measured). */
  before: (from: number) => void;
  run: Run;
}

/** Batches a {@linkcode Chunked} stage makes at a time. */
const CHUNK = 300;

/**
 * CPU µs and heap bytes allocated per event of `run(i)` for `batches` batches, after a warm-up.
 * Bytes allocated are what the garbage collector later pays for; unlike CPU time they do not
 * move with the machine's load.
 */
async function perEvent(stage: Run | Chunked): Promise<{ cpu: number; bytes: number }> {
  const { run, before } = typeof stage === "function" ? { run: stage, before: undefined } : stage;
  before?.(0);
  for (let i = 0; i < 200; i++) await run(i);
  let cpu = 0;
  let bytes = 0;
  for (let from = 0; from < BATCHES; from += before === undefined ? BATCHES : CHUNK) {
    const to = before === undefined ? BATCHES : Math.min(BATCHES, from + CHUNK);
    before?.(from);
    const allocated = allocatedBytes();
    const start = process.cpuUsage();
    for (let i = from; i < to; i++) await run(i);
    const used = process.cpuUsage(start);
    bytes += allocatedBytes() - allocated;
    cpu += used.user + used.system;
  }
  return { cpu: cpu / (BATCHES * BATCH), bytes: bytes / (BATCHES * BATCH) };
}

const stages: [string, () => Run | Chunked][] = [
  ["JSON.parse", () => (i) => JSON.parse(bodies[i % 200])],
  ["parseEvents", () => (i) => parseEvents(bodies[i % 200], "json")],
  ["validate", () => (i) => {
    const validate = eventValidator(stream.schema);
    for (const event of parsed[i % 200]) validate(event);
  }],
  ["transform", () => (i) => {
    for (const event of parsed[i % 200]) stream.transform(event as Event);
  }],
  ["counters", () => (i) => {
    const now = Date.now();
    const events = transformed[i % 200];
    const room = events.length * stream.counters.length;
    const columns = { panes: new Array(room), groups: new Array(room), values: new Array(room) };
    let at = 0;
    for (const event of events) {
      if (event) {
        for (const counter of stream.counters) {
          writeCounterCell(counter, event, now, columns, at++);
        }
      }
    }
  }],
  ["ingest", () => {
    const store = new MemoryStore();
    return () =>
      ingestItems(stream, parseEvents(makeBatch(BATCH), "json"), { store, nowMs: Date.now() });
  }],
  ["ingest, no dedupe", () => {
    const store = new MemoryStore();
    return () =>
      ingestItems(noDedupe, parseEvents(makeBatch(BATCH), "json"), { store, nowMs: Date.now() });
  }],
  ["makeBatch", () => () => makeBatch(BATCH)],
  ["ingest, store no-op", () => {
    const store = noOpStore();
    return () =>
      ingestItems(stream, parseEvents(makeBatch(BATCH), "json"), { store, nowMs: Date.now() });
  }],
  ["store apply", () => {
    let batches: StoreBatch[] = [];
    let first = 0;
    const memory = new MemoryStore();
    return {
      before(from) {
        batches = [];
        first = from;
        const store = noOpStore(batches);
        for (let i = 0; i < CHUNK; i++) {
          ingestItems(stream, parseEvents(makeBatch(BATCH), "json"), { store, nowMs: Date.now() });
        }
      },
      run: (i) => memory.applyBatch(batches[i - first]),
    };
  }],
];

const rounds: Record<string, number>[] = [];
const byteRounds: Record<string, number>[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const figures: Record<string, number> = {};
  const bytes: Record<string, number> = {};
  for (const [name, make] of stages) {
    ({ cpu: figures[name], bytes: bytes[name] } = await perEvent(make()));
  }
  rounds.push(figures);
  byteRounds.push(bytes);
}
const least = Object.fromEntries(
  stages.map(([name]) => [name, Math.min(...rounds.map((figures) => figures[name]))]),
);
const leastBytes = Object.fromEntries(
  stages.map(([name]) => [name, Math.min(...byteRounds.map((bytes) => bytes[name]))]),
);
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average at start ${
    loadAverageText(machine)
  }`,
);
console.log(
  `CPU µs per event, batches of ${BATCH}, ${BATCHES} batches per stage, least of ${ROUNDS} rounds:`,
);
console.log(table(
  ["stage", "CPU µs/event", "share of ingest", "bytes allocated/event"],
  stages.map(([name]) => [
    name,
    least[name].toFixed(3),
    `${(100 * least[name] / least.ingest).toFixed(0)}%`,
    leastBytes[name].toFixed(0),
  ]),
  [0],
));
/** The CPU µs per event and events/s of a `bench/server.ts` process in `mode` under load. */
async function serverPerEvent(mode: string): Promise<{ cpu: number; eventsPerSecond: number }> {
  const key = crypto.randomUUID().replaceAll("-", "");
  const server = await startServer(mode, { env: benchServerEnv(key) });
  try {
    const url = `${server.url}/v1/streams/bench/events`;
    const load = { clients: 16, batch: BATCH, headers: { Authorization: `Bearer ${key}` } };
    await closedLoop(url, { ...load, seconds: 2 });
    const before = processCpuSeconds(server.pid);
    const result = await closedLoop(url, { ...load, seconds: SECONDS });
    const used = processCpuSeconds(server.pid) - before;
    if (result.errors > 0) throw new Error(`Server ${mode}: ${result.firstError}`);
    return { cpu: (used * 1e6) / result.events, eventsPerSecond: result.events / result.seconds };
  } finally {
    await server.stop();
  }
}

let servers: Record<string, { cpu: number; eventsPerSecond: number }>[] | undefined;
if (flags.server) {
  servers = [];
  for (let round = 0; round < ROUNDS; round++) {
    servers.push({
      "parse-only": await serverPerEvent("baseline"),
      "memory": await serverPerEvent("main"),
    });
  }
  const leastServer = (name: string) => Math.min(...servers!.map((round) => round[name].cpu));
  console.log(
    `\nServer CPU µs per event over HTTP (16 clients, batches of ${BATCH}, ${SECONDS} s, least of ${ROUNDS} rounds):`,
  );
  console.log(table(
    ["server", "CPU µs/event", "events/s by round"],
    ["parse-only", "memory"].map((name) => [
      name,
      leastServer(name).toFixed(2),
      servers!.map((round) => round[name].eventsPerSecond.toFixed(0)).join(" / "),
    ]),
    [0],
  ));
  console.log(
    `CPU ratio parse-only / memory: ${
      (leastServer("parse-only") / leastServer("memory")).toFixed(2)
    } (by round: ${
      servers.map((round) => (round["parse-only"].cpu / round.memory.cpu).toFixed(2)).join(" / ")
    })`,
  );
}

const path = await writeResults("pipeline", {
  bench: "pipeline",
  machine,
  least,
  rounds,
  leastBytes,
  byteRounds,
  servers,
});
console.log(`\nresults: ${path}`);
