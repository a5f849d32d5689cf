/**
 * The CPU of a request whose CEL filter matches patterns taken from its events
 * (`event.text.matches(event.p1) || … || event.text.matches(event.p6)`), bounded per request by
 * `MAX_REQUEST_PATTERN_COMPILE` (`src/transform/cel.ts`): one `POST /v1/streams/<stream>/events`
 * of 1,000 NDJSON events through `createApp` on a `MemoryStore` in this process (no HTTP server,
 * no load generator). CPU seconds (`process.cpuUsage()`, so time lost to other processes does not
 * count), the least of `--rounds` rounds, each on a new app with patterns no earlier round
 * compiled, and the reply's status, accepted and rejected counts.
 *
 * - `distinct`: each event lists six patterns of its own, about 4,000 instructions each
 *   (`^<event><k>.{0,1000}.{0,990}`, 208 KB in all), none matching its text: the request the
 *   bound cuts;
 * - `unbounded`: the same events through the stream's transform one by one without a request's
 *   budget (each evaluation's own alone, as a request ran them before the bound), not through
 *   `createApp`;
 * - `repeated`: each event lists the same six patterns of about 500 instructions
 *   (`^r<round>x<k>.{0,250}.{0,240}`, compiled once and kept): a request the bound leaves whole;
 * - `small`: each event lists six small patterns of its own (`^<round>-<event>x<k>[a-z]+$`, about
 *   13 instructions each): 6,000 distinct patterns in one request;
 * - `many`: each event lists 50 tiny patterns of its own (`a<round>.<event>.<k>`, about 11
 *   instructions), the filter `event.ps.exists(p, event.text.matches(p))`: what each pattern's
 *   `PATTERN_COMPILE_OVERHEAD` is for.
 *
 * `deno run --allow-all bench/cel_patterns.ts [--rounds 3] [--only distinct,unbounded,repeated,small,many] [--events 1000]`
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { createApp } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { TransformError } from "../src/transform/mod.ts";
import { loadAverageText, machineInfo, table, writeResults } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    only: { type: "string", default: "distinct,unbounded,repeated,small,many" },
    events: { type: "string", default: "1000" },
  },
});
const ROUNDS = Number(flags.rounds);
const EVENTS = Number(flags.events);
const PATTERNS = 6;

const FILTER = Array.from({ length: PATTERNS }, (_, k) => `event.text.matches(event.p${k + 1})`)
  .join(" || ");

/** The `many` case's filter: over a list of patterns. */
const LIST_FILTER = "event.ps.exists(p, event.text.matches(p))";
/** Patterns each event of the `many` case lists. */
const LISTED = 50;

function config() {
  const counters = { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } };
  return {
    streams: {
      s: { schema: { type: "object" }, transform: [{ filter: FILTER }], counters },
      m: { schema: { type: "object" }, transform: [{ filter: LIST_FILTER }], counters },
    },
  };
}

/** The events of a case in round `round`: patterns of their own (`distinct`) or shared. */
function events(name: string, round: number): Record<string, unknown>[] {
  return Array.from({ length: EVENTS }, (_, index) => {
    if (name === "many") {
      const ps = Array.from({ length: LISTED }, (_, k) => `a${round}.${index}.${k}`);
      return { text: "hello world", ps };
    }
    const event: Record<string, string> = { text: "hello world" };
    for (let k = 1; k <= PATTERNS; k++) {
      event[`p${k}`] = name === "repeated"
        ? `^r${round}x${k}.{0,250}.{0,240}`
        : name === "small"
        ? `^${round}-${index}x${k}[a-z]+$`
        : `^${round}.${index}x${k}.{0,1000}.{0,990}`;
    }
    return event;
  });
}

/** The rejected events by their first error's path and the first words of its message. */
function refusals(rejected: { errors: { path: string; message: string }[] }[]) {
  const counts: Record<string, number> = {};
  for (const { errors } of rejected) {
    const { path, message } = errors[0];
    const words = message.replace(/^Expression failed: /, "").split(" ").slice(0, 3).join(" ");
    const start = `${path === "" ? '""' : path}: ${words}`;
    counts[start] = (counts[start] ?? 0) + 1;
  }
  return counts;
}

interface Round {
  cpuSeconds: number;
  status: number;
  accepted: number;
  rejected: Record<string, number>;
}

function cpuSince(before: ReturnType<typeof process.cpuUsage>): number {
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1e6;
}

async function oneRequest(name: string, round: number): Promise<Round> {
  const text = events(name, round).map((event) => JSON.stringify(event)).join("\n");
  const app = createApp({
    streams: compileConfig(config()),
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
  });
  const before = process.cpuUsage();
  const res = await app.request(`/v1/streams/${name === "many" ? "m" : "s"}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/x-ndjson" },
    body: text,
  });
  const reply = await res.json();
  return {
    cpuSeconds: cpuSince(before),
    status: res.status,
    accepted: reply.accepted ?? 0,
    rejected: refusals(reply.rejected ?? []),
  };
}

/**
 * The `distinct` events through the transform alone, one by one, without a request's budget; a
 * macrotask between each 50 (not counted), since run in one synchronous loop this process ran out
 * of its 4 GB heap once (what each compiled pattern's matcher keeps through a `WeakRef` is held
 * until the task ends).
 */
async function unbounded(round: number): Promise<Round> {
  const transform = compileConfig(config()).get("s")!.transform;
  const list = events("distinct", round);
  const rejected: { errors: { path: string; message: string }[] }[] = [];
  let accepted = 0;
  let cpuSeconds = 0;
  let before = process.cpuUsage();
  for (const [index, event] of list.entries()) {
    if (index > 0 && index % 50 === 0) {
      cpuSeconds += cpuSince(before);
      await new Promise((resolve) => setTimeout(resolve, 0));
      before = process.cpuUsage();
    }
    try {
      transform(event, { inPlace: true });
      accepted++;
    } catch (error) {
      if (!(error instanceof TransformError)) throw error;
      rejected.push({ errors: [{ path: error.path, message: error.message }] });
    }
  }
  return {
    cpuSeconds: cpuSeconds + cpuSince(before),
    status: 0,
    accepted,
    rejected: refusals(rejected),
  };
}

const machine = await machineInfo();
console.log(`load average at start: ${loadAverageText(machine)}`);
const rows: string[][] = [];
const results: Record<string, unknown>[] = [];
let round = 0;
for (const name of flags.only.split(",")) {
  if (!["distinct", "unbounded", "repeated", "small", "many"].includes(name)) {
    throw new Error(`no case ${name}: distinct, unbounded, repeated, small or many`);
  }
  const rounds: Round[] = [];
  for (let index = 0; index < ROUNDS; index++) {
    round++;
    rounds.push(await (name === "unbounded" ? unbounded(round) : oneRequest(name, round)));
  }
  const best = rounds.reduce((a, b) => (b.cpuSeconds < a.cpuSeconds ? b : a));
  results.push({ case: name, events: EVENTS, rounds });
  rows.push([
    name,
    String(EVENTS),
    name === "unbounded" ? "-" : String(best.status),
    String(best.accepted),
    Object.entries(best.rejected).map(([start, count]) => `${count} ${start} …`).join(", "),
    best.cpuSeconds.toFixed(2),
    rounds.map((r) => r.cpuSeconds.toFixed(2)).join(" "),
  ]);
}
console.log(
  table(
    ["case", "events", "status", "accepted", "rejected", "CPU s (least)", "rounds"],
    rows,
    [0, 4],
  ),
);
console.log(`results: ${await writeResults("cel-patterns", { machine, results })}`);
