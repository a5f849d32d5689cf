/**
 * The CPU of the worst requests the schema check budgets allow (`src/validate/_check_budget.ts`):
 * one `POST /v1/streams/<stream>/events` of as many NDJSON events as fit in the 1 MiB body limit
 * (at most 1,000, the default `maxEvents`), every event just within the event's bound (262,144
 * checks beyond one a value) and invalid, so that zod judges each the request's budget lets
 * through. Through `createApp` on a
 * `MemoryStore` in this process (no HTTP server, no load generator): CPU seconds of the request
 * (`process.cpuUsage()`, so time lost to other processes does not count), the least of `--rounds`
 * rounds, each on a new app, and the reply's accepted and rejected counts.
 *
 * - `anyOf`: `items` under an `anyOf` of 200 objects of 5 `const`s, 218 items an event,
 *   none of them matching a member;
 * - `properties`: `items` under an object of 3,000 optional properties, 87 empty items an event,
 *   `extra` (not a string) making each event refused;
 * - `mixed`: as `properties`, after 4 events of 26 empty items, which the budget judges on their
 *   estimates (each within the event's bound, 4 within half the request's budget) before it counts
 *   the others: what the estimates' own pool adds to the work of a request.
 *
 * `--events N` sends N events instead of as many as fit in 1 MiB (at most 1,000).
 *
 * `deno run --allow-all bench/check_budget.ts [--rounds 3] [--only anyOf,properties,mixed] [--events N]`
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { createApp } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { KeyRing } from "../src/http/auth.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { loadAverageText, machineInfo, table, writeResults } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    only: { type: "string", default: "anyOf,properties,mixed" },
    events: { type: "string" },
  },
});
const ROUNDS = Number(flags.rounds);
const MAX_BODY = 1024 * 1024;
const MAX_EVENTS = 1_000;

interface Case {
  schema: Record<string, unknown>;
  event: Record<string, unknown>;
  /** Events sent before the others: `count` of `event`. */
  first?: { event: Record<string, unknown>; count: number };
}

/** `items` under an object of 3,000 optional properties, and `extra` a string. */
const PROPERTIES_SCHEMA = {
  type: "object",
  properties: {
    extra: { type: "string" },
    items: {
      type: "array",
      items: {
        type: "object",
        properties: Object.fromEntries(
          Array.from({ length: 3_000 }, (_, index) => [`p${index}`, { type: "string" }]),
        ),
      },
    },
  },
};

const CASES: Record<string, Case> = {
  anyOf: {
    schema: {
      type: "object",
      properties: {
        items: {
          type: "array",
          items: {
            anyOf: Array.from({ length: 200 }, (_, member) => ({
              type: "object",
              properties: Object.fromEntries(
                ["a", "b", "c", "d", "e"].map((
                  name,
                  index,
                ) => [name, { const: member * 5 + index }]),
              ),
            })),
          },
        },
      },
    },
    event: { items: Array.from({ length: 218 }, () => ({ a: -1 })) },
  },
  properties: {
    schema: PROPERTIES_SCHEMA,
    event: { extra: 1, items: Array.from({ length: 87 }, () => ({})) },
  },
  mixed: {
    schema: PROPERTIES_SCHEMA,
    first: { event: { extra: 1, items: Array.from({ length: 26 }, () => ({})) }, count: 4 },
    event: { extra: 1, items: Array.from({ length: 87 }, () => ({})) },
  },
};

/** The body: `first`, then as many lines of `event` as fit under the body limit (or `--events`). */
function body(spec: Case): { text: string; events: number } {
  const lines = Array.from(
    { length: spec.first?.count ?? 0 },
    () => JSON.stringify(spec.first!.event),
  );
  const line = JSON.stringify(spec.event);
  const room = MAX_BODY + 1 - lines.reduce((bytes, first) => bytes + first.length + 1, 0);
  const fit = Math.min(MAX_EVENTS - lines.length, Math.floor(room / (line.length + 1)));
  const count = flags.events === undefined ? fit : Number(flags.events) - lines.length;
  for (let index = 0; index < count; index++) lines.push(line);
  return { text: lines.join("\n"), events: lines.length };
}

/** The rejected events by the start of their first message (`Event would …`, `Request would …`). */
function refusals(rejected: { errors: { message: string }[] }[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const { errors } of rejected) {
    const start = errors[0].message.split(" ").slice(0, 2).join(" ");
    counts[start] = (counts[start] ?? 0) + 1;
  }
  return counts;
}

async function oneRequest(
  name: string,
  spec: Case,
  text: string,
): Promise<
  { cpuSeconds: number; status: number; accepted: number; rejected: Record<string, number> }
> {
  const store = new MemoryStore();
  const app = createApp({
    streams: compileConfig({
      streams: {
        [name]: {
          schema: spec.schema,
          counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    }),
    store,
    keys: await KeyRing.parse(""),
  });
  const before = process.cpuUsage();
  const res = await app.request(`/v1/streams/${name}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/x-ndjson" },
    body: text,
  });
  const reply = await res.json();
  const used = process.cpuUsage(before);
  return {
    cpuSeconds: (used.user + used.system) / 1e6,
    status: res.status,
    accepted: reply.accepted ?? 0,
    rejected: refusals(reply.rejected ?? []),
  };
}

const machine = await machineInfo();
console.log(`load average at start: ${loadAverageText(machine)}`);
const rows: string[][] = [];
const results: Record<string, unknown>[] = [];
for (const name of flags.only.split(",")) {
  const spec = CASES[name];
  if (spec === undefined) throw new Error(`no case ${name}: anyOf, properties or mixed`);
  const { text, events } = body(spec);
  const rounds = [];
  for (let round = 0; round < ROUNDS; round++) rounds.push(await oneRequest(name, spec, text));
  const best = rounds.reduce((a, b) => (b.cpuSeconds < a.cpuSeconds ? b : a));
  results.push({ case: name, bodyBytes: text.length, events, rounds });
  rows.push([
    name,
    String(text.length),
    String(events),
    String(best.status),
    String(best.accepted),
    Object.entries(best.rejected).map(([start, count]) => `${count} ${start} …`).join(", "),
    best.cpuSeconds.toFixed(2),
    rounds.map((r) => r.cpuSeconds.toFixed(2)).join(" "),
  ]);
}
console.log(
  table(
    ["case", "body bytes", "events", "status", "accepted", "rejected", "CPU s (least)", "rounds"],
    rows,
    [0],
  ),
);
console.log(`results: ${await writeResults("check-budget", { machine, results })}`);
