/**
 * This tree's apply script against another tree's (a `git worktree add --detach` of the base
 * commit), on the `bench` stream of `bench/config.json` (4 counters, panes existing), two ways
 * that a noisy machine disturbs less than separate runs of `redis_work.ts`:
 *
 * - interleaved (always): both trees' stores apply to one redis-server, each under its own key
 *   prefix, their calls alternating (which goes first swaps every call), so both see the same
 *   load and caches; each call's µs comes from `SLOWLOG` (every `EVALSHA` logged, and a round
 *   that did not find all of them stops the run). redis-server runs alone on the last allowed CPU
 *   and this process on the others (`taskset`), as in `redis_work.ts`. Per round, the median and
 *   the mean of each tree.
 * - `--gaps 0,1000,3000`: the interleaved rounds again with this process idle (spinning, on its own
 *   CPUs) for that many µs before each call, so redis-server waits between calls as it does behind
 *   the HTTP server and the bridge (`redis_work.ts`, ~1 ms a request). The same calls (the same
 *   instructions) then take longer the longer redis-server was idle: its CPU's caches and branch
 *   predictors have gone cold, and on a VM the idle vCPU may have been descheduled. A labelled
 *   extra, to tell that effect from the script's own work; without it the rounds run back to back
 *   (gap 0) as before.
 * - `--instructions`: each tree on a redis-server of its own under valgrind (cachegrind), with
 *   the same events (fixed times, ids and users): the instructions redis-server ran per call,
 *   from the difference of a run of `--calls` calls and one of none after the same warm-up.
 *   They do not depend on the load (runs agree within ~1k instructions a call) but count no
 *   cache misses: they show the script's own work, not the cold-cache time of a real call.
 *
 * Talks to redis-server directly (no bridge, no HTTP).
 *
 * `--registry`: through this tree's registry, as for a stream created through the API: a
 * `StreamRegistry` over the definition store creates the stream with `put()` and wraps each tree's
 * store (both with `definitionsHere`), so each batch carries what its store adds: generation 1
 * (`gen`), the definition version it was built for (`dv`), recorded (`rec`). Without it, a
 * RedisStore used alone (none of the three sent).
 *
 * `--port 7400`: the redis-servers on that port and the next two (interleaved, then each
 * tree's under valgrind), for a machine where a session keeps to a range of ports; without it, a
 * free port and random ones.
 *
 * `--keyed`: each call one request with a fresh `Idempotency-Key` (its reply kept).
 *
 * `deno task bench:apply-compare --base ../wt-base [--calls 1500] [--rounds 3] [--batch 1]
 * [--gaps 0,1000] [--instructions] [--port 7400] [--registry] [--keyed]`
 */
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createClient } from "redis";
import { compileConfig, type CompiledStream } from "../src/config/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { RedisStore } from "../src/store/redis/store.ts";
import type { RedisDefinitionClient } from "../src/store/redis/definition_store.ts";
import type { Store } from "../src/store/types.ts";
import { createdThroughApi } from "../tests/store/redis/_apply_headers.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import {
  allowedCpus,
  loadAverageText,
  machineInfo,
  median,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    base: { type: "string" },
    calls: { type: "string", default: "1500" },
    rounds: { type: "string", default: "3" },
    batch: { type: "string", default: "1" },
    instructions: { type: "boolean", default: false },
    gaps: { type: "string" },
    port: { type: "string" },
    registry: { type: "boolean", default: false },
    keyed: { type: "boolean", default: false },
  },
});
if (flags.base === undefined) {
  console.error("--base must name the other tree, e.g. a git worktree of the base commit");
  Deno.exit(2);
}
const CALLS = Number(flags.calls);
const ROUNDS = Number(flags.rounds);
const BATCH = Number(flags.batch);
// µs this process idles before each call, per set of rounds (see --gaps above).
const GAPS = (flags.gaps ?? "0").split(",").map(Number);
// SLOWLOG entries an apply may make (the EVALSHA and each command its script runs); see interleaved().
const SLOWLOG_ENTRIES_PER_CALL = 64;
// The first of three ports to run redis-servers on (see --port above); 0: free or random ones.
const PORT = Number(flags.port ?? 0);
const baseModule = pathToFileURL(resolve(flags.base, "src/store/redis/store.ts")).href;
const { RedisStore: BaseStore } = await import(baseModule) as { RedisStore: typeof RedisStore };

// The base's own pipeline and config too: the batch a pipeline hands its store may differ between
// the trees (counter updates as columns since f4c55ff).
const baseDir = flags.base;
const baseTree = (path: string) => pathToFileURL(resolve(baseDir, path)).href;
const baseIngest = await import(baseTree("src/ingest/mod.ts")) as {
  ingestItems: typeof ingestItems;
};
const baseConfig = await import(baseTree("src/config/mod.ts")) as {
  compileConfig: typeof compileConfig;
};

const config = JSON.parse(await Deno.readTextFile(new URL("./config.json", import.meta.url)));
const stream = compileConfig({ streams: { bench: config.streams.bench } }).get("bench")!;
const baseStream = baseConfig.compileConfig({ streams: { bench: config.streams.bench } })
  .get("bench")!;

/** The part of a direct `redis` client the stores' adapter uses. */
interface ScriptClient {
  evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

/** The `@upstash/redis` calls the store makes, on a direct client. */
function adapter(client: ScriptClient) {
  return {
    evalsha: (sha: string, keys: string[], args: string[]) =>
      client.evalSha(sha, { keys, arguments: args }),
    eval: (script: string, keys: string[], args: string[]) =>
      client.eval(script, { keys, arguments: args }),
  } as unknown as ConstructorParameters<typeof RedisStore>[0];
}

/**
 * A store of tree `which` under `prefix`; with `--registry`, a registry's store: a
 * {@linkcode StreamRegistry} over the definition store under `prefix` creates the `bench` stream
 * with `put()` (generation 1, a definition record) and wraps the store, so each batch carries what
 * that registry adds for a stream created through the API (`gen`, `dv`, `rec`); this tree's events
 * are then built from the stream that registry serves.
 */
/** A tree's store and the stream its events are built from (this tree's pipeline). */
interface Target {
  which: "base" | "tree";
  store: Store;
  stream: CompiledStream;
}

async function storeOf(
  which: "base" | "tree",
  client: ScriptClient,
  prefix: string,
): Promise<Target> {
  const Store = which === "base" ? BaseStore : RedisStore;
  const store = new Store(adapter(client), { prefix, definitionsHere: flags.registry });
  if (!flags.registry) return { which, store, stream };
  const created = await createdThroughApi(
    adapter(client) as unknown as RedisDefinitionClient,
    store,
    { prefix, name: "bench", definition: config.streams.bench },
  );
  return { which, store: created.store, stream: created.stream };
}

/** Events as `bench/_shared.ts` makes them; `fixed` gives times and users that do not vary. */
function eventMaker(fixed: boolean) {
  let sequence = 0;
  let clock = 1_796_000_000_000;
  return (size: number) => {
    clock += 10;
    return Array.from({ length: size }, () => {
      sequence += 1;
      const user = fixed ? (sequence * 7919) % 5000 : Math.floor(Math.random() * 5000);
      return {
        ok: true as const,
        value: {
          id: `e${sequence}`,
          ts: fixed ? clock : Date.now(),
          country: `c${sequence % 20}`,
          amount: sequence % 200,
          user: `u${user}`,
        },
      };
    });
  };
}

/** Ingests `items` into `target`'s store through its tree's pipeline. */
async function apply(
  target: Target,
  items: ReturnType<ReturnType<typeof eventMaker>>,
  fixed: boolean,
) {
  const nowMs = fixed ? items[0].value.ts + 5 : Date.now();
  const { store } = target;
  // --keyed: each call one request with a fresh Idempotency-Key (named by its first event's id).
  const idempotency = flags.keyed
    ? { key: `k-${items[0].value.id}`, body: JSON.stringify(items.map((item) => item.value)) }
    : undefined;
  if (target.which === "base") {
    await baseIngest.ingestItems(baseStream, items, { store, nowMs, idempotency });
  } else await ingestItems(target.stream, items, { store, nowMs, idempotency });
}

/** Keeps every thread of process `pid` on the CPUs `list` (`taskset -c` syntax). */
async function pin(pid: number, list: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("taskset", {
      args: ["-a", "-p", "-c", list, String(pid)],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

interface Round {
  /** µs this process idled before each call (0: back to back). */
  gapUs: number;
  base: { median: number; mean: number; calls: number };
  tree: { median: number; mean: number; calls: number };
}

/** Keeps this process busy (not asleep, so no timer's slack) for `us` µs. */
function idle(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end) {
    // spin
  }
}

async function interleaved(): Promise<{ rounds: Round[]; pinned: boolean }> {
  const cpus = allowedCpus();
  const redis = await startRedisServer({ port: PORT });
  const client = createClient({ url: redis.url });
  await client.connect();
  try {
    let pinned = false;
    if (cpus.length >= 2) {
      const info = String(await client.sendCommand(["INFO", "server"]));
      pinned = await pin(Number(/process_id:(\d+)/.exec(info)![1]), String(cpus.at(-1))) &&
        await pin(Deno.pid, cpus.slice(0, -1).join(","));
    }
    await client.sendCommand(["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    // Redis 7 logs each command a script runs as well as the EVALSHA (about a dozen entries an
    // apply here): room for many more than the calls' own, or the log keeps only the last few
    // hundred calls (it did, before, up to 16:07 on 2026-12-07: ~95 of 1,500 a side).
    await client.sendCommand([
      "CONFIG",
      "SET",
      "slowlog-max-len",
      String(2 * CALLS * SLOWLOG_ENTRIES_PER_CALL + 100),
    ]);
    const stores = [await storeOf("base", client, "base"), await storeOf("tree", client, "tree")];
    const events = eventMaker(false);
    for (let i = 0; i < 50; i++) {
      for (const target of stores) await apply(target, events(BATCH), false);
    }
    const rounds: Round[] = [];
    for (const gapUs of GAPS) {
      for (let round = 0; round < ROUNDS; round++) {
        await client.sendCommand(["SLOWLOG", "RESET"]);
        for (let i = 0; i < CALLS; i++) {
          const items = events(BATCH);
          for (const target of i % 2 === 0 ? stores : [...stores].reverse()) {
            if (gapUs > 0) idle(gapUs);
            await apply(
              target,
              items.map((item) => ({ ...item, value: { ...item.value } })),
              false,
            );
          }
        }
        const entries = await client.sendCommand(["SLOWLOG", "GET", "-1"]) as unknown[][];
        const usec: Record<"base" | "tree", number[]> = { base: [], tree: [] };
        for (const entry of entries) {
          const args = entry[3] as string[];
          if (String(args[0]).toLowerCase() !== "evalsha") continue;
          // EVALSHA sha numkeys key…: the first key names the store by its prefix.
          const which = String(args[3]).startsWith("base:") ? "base" : "tree";
          usec[which].push(Number(entry[2]));
        }
        const summary = (values: number[]) => ({
          median: median(values),
          mean: values.reduce((a, b) => a + b, 0) / values.length,
          calls: values.length,
        });
        for (const which of ["base", "tree"] as const) {
          if (usec[which].length !== CALLS) {
            const held = usec[which].length;
            throw new Error(
              `SLOWLOG held ${held} of ${which}'s ${CALLS} EVALSHA calls: an apply logged more ` +
                `than ${SLOWLOG_ENTRIES_PER_CALL} entries? Raise SLOWLOG_ENTRIES_PER_CALL`,
            );
          }
        }
        rounds.push({ gapUs, base: summary(usec.base), tree: summary(usec.tree) });
      }
    }
    return { rounds, pinned };
  } finally {
    await client.quit();
    await redis.stop();
  }
}

/** Instructions redis-server ran (cachegrind's total) over a warm-up and then `calls` calls. */
async function instructionsOf(which: "base" | "tree", calls: number): Promise<number> {
  const port = PORT > 0
    ? PORT + (which === "base" ? 1 : 2)
    : 20_000 + Math.floor(Math.random() * 20_000);
  const out = await Deno.makeTempFile({ prefix: "cachegrind-" });
  const server = new Deno.Command("valgrind", {
    args: [
      "--tool=cachegrind",
      "--cache-sim=no",
      `--cachegrind-out-file=${out}`,
      "redis-server",
      "--port",
      String(port),
      "--save",
      "",
      "--appendonly",
      "no",
      "--hz",
      "1",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (error) {
      if (i > 300) throw error;
      await new Promise((done) => setTimeout(done, 100));
    }
  }
  const client = createClient({ url: `redis://127.0.0.1:${port}` });
  await client.connect();
  const target = await storeOf(which, client, "v");
  const events = eventMaker(true);
  for (let i = 0; i < 50 + calls; i++) await apply(target, events(BATCH), true);
  await client.disconnect();
  // SHUTDOWN closes the connection without a reply: sent on a socket of its own.
  const socket = await Deno.connect({ hostname: "127.0.0.1", port });
  await socket.write(new TextEncoder().encode("SHUTDOWN NOSAVE\r\n"));
  await socket.read(new Uint8Array(64)).catch(() => null);
  try {
    socket.close();
  } catch {
    // closed by the server
  }
  await server.status;
  const text = await Deno.readTextFile(out);
  await Deno.remove(out);
  return Number(/^summary: (\d+)/m.exec(text)![1]);
}

const machine = await machineInfo();
const { rounds, pinned } = await interleaved();
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average at start ${
    loadAverageText(machine)
  }; ${CALLS} calls of ${BATCH} event(s) per tree and round, interleaved${
    pinned ? ", redis-server on a CPU of its own" : ""
  }${flags.registry ? ", as the registry sends them (gen, dv, rec)" : ""}${
    flags.keyed ? ", each a fresh Idempotency-Key" : ""
  }; base ${flags.base}`,
);
console.log(table(
  [
    "round",
    ...(flags.gaps === undefined ? [] : ["idle µs before each call"]),
    "base median µs",
    "tree median µs",
    "base mean µs",
    "tree mean µs",
  ],
  rounds.map((round, i) => [
    String(i + 1),
    ...(flags.gaps === undefined ? [] : [String(round.gapUs)]),
    String(round.base.median),
    String(round.tree.median),
    round.base.mean.toFixed(1),
    round.tree.mean.toFixed(1),
  ]),
  [0],
));
let instructions: Record<"base" | "tree", number> | undefined;
if (flags.instructions) {
  const perCall = async (which: "base" | "tree") =>
    (await instructionsOf(which, CALLS) - await instructionsOf(which, 0)) / CALLS;
  instructions = { base: await perCall("base"), tree: await perCall("tree") };
  console.log(
    `redis-server instructions per call (cachegrind): base ${Math.round(instructions.base)}, tree ${
      Math.round(instructions.tree)
    } (${((instructions.tree / instructions.base - 1) * 100).toFixed(1)}%)`,
  );
}
console.log(
  `\nresults: ${await writeResults("apply_compare", {
    bench: "apply_compare",
    machine,
    base: flags.base,
    calls: CALLS,
    batch: BATCH,
    pinned,
    registry: flags.registry,
    keyed: flags.keyed,
    rounds,
    instructionsPerCall: instructions,
  })}`,
);
