/**
 * Three real server processes (`src/main.ts`) share one Redis through the Upstash bridge. A
 * client spreads an order stream over them round-robin (overlapping ids, duplicates, batches sent
 * to two at once or again to another), retrying connection errors and 503s with the same ids at
 * another instance, while one process is SIGKILLed mid-load. Afterwards the survivors read
 * counters equal to an independent computation from the unique events (distinct within the
 * HyperLogLog error), sweeping both at once closes each final window exactly once, and every
 * window and group reaches a verifying webhook receiver with exactly one distinct `webhook-id`.
 */
import assert from "node:assert/strict";
import { HLL_STANDARD_ERROR } from "../src/store/redis/store.ts";
import { redisTest, withDirect } from "./_redis.ts";
import { type ServerProcess, startServerProcess } from "./_server_process.ts";
import { Receiver } from "./fanout/webhooks/_receiver.ts";

const MINUTE = 60_000;
const STREAM = "orders";
const LATENESS_MS = 10 * MINUTE;
const MINUTES = 6;
const UNIQUE_EVENTS = 2_400;
const COUNTRIES = ["de", "fr", "us"];

const CONFIG = {
  streams: {
    [STREAM]: {
      time: { field: "ts", lateness: "10m" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
        amount_per_minute: {
          window: { tumbling: "1m" },
          groupBy: ["country"],
          aggregate: { sum: "amount" },
        },
        customers_per_minute: { window: { tumbling: "1m" }, aggregate: { distinct: "customer" } },
        per_2m_every_1m: {
          window: { hopping: "2m", every: "1m" },
          groupBy: ["country"],
          aggregate: "count",
        },
        customers_2m_every_1m: {
          window: { hopping: "2m", every: "1m" },
          aggregate: { distinct: "customer" },
        },
      },
    },
  },
};

interface Event {
  id: string;
  ts: number;
  country: string;
  amount: number;
  customer: string;
}

interface CounterSpec {
  name: string;
  sizeMs: number;
  hopMs: number;
  groupBy: boolean;
  value: "count" | "sum" | "distinct";
}

const COUNTERS: CounterSpec[] = [
  { name: "per_minute", sizeMs: MINUTE, hopMs: MINUTE, groupBy: true, value: "count" },
  { name: "amount_per_minute", sizeMs: MINUTE, hopMs: MINUTE, groupBy: true, value: "sum" },
  {
    name: "customers_per_minute",
    sizeMs: MINUTE,
    hopMs: MINUTE,
    groupBy: false,
    value: "distinct",
  },
  { name: "per_2m_every_1m", sizeMs: 2 * MINUTE, hopMs: MINUTE, groupBy: true, value: "count" },
  {
    name: "customers_2m_every_1m",
    sizeMs: 2 * MINUTE,
    hopMs: MINUTE,
    groupBy: false,
    value: "distinct",
  },
];

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Unique events over MINUTES one-minute windows from `baseMs`; amounts are exact in binary. */
function makeEvents(baseMs: number): Event[] {
  return Array.from({ length: UNIQUE_EVENTS }, (_, i) => ({
    id: `e${i}`,
    ts: baseMs + (i % MINUTES) * MINUTE + ((i * 7_919) % MINUTE),
    country: COUNTRIES[Math.floor(i / 7) % COUNTRIES.length],
    amount: ((i * 37) % 400) / 4,
    customer: `c${(i * 13) % 500}`,
  }));
}

function windowStarts(ts: number, counter: CounterSpec): number[] {
  const starts: number[] = [];
  for (
    let start = Math.floor(ts / counter.hopMs) * counter.hopMs;
    start + counter.sizeMs > ts;
    start -= counter.hopMs
  ) {
    starts.push(start);
  }
  return starts;
}

function cellKey(startMs: number, group: Record<string, unknown>): string {
  return `${startMs}|${JSON.stringify(group)}`;
}

/** Expected value per window and group of each counter, computed from the unique events. */
function expectedCounters(events: Event[]): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  for (const counter of COUNTERS) {
    const cells = new Map<string, { n: number; sum: number; customers: Set<string> }>();
    for (const event of events) {
      for (const start of windowStarts(event.ts, counter)) {
        const key = cellKey(start, counter.groupBy ? { country: event.country } : {});
        const cell = cells.get(key) ?? { n: 0, sum: 0, customers: new Set<string>() };
        cell.n += 1;
        cell.sum += event.amount;
        cell.customers.add(event.customer);
        cells.set(key, cell);
      }
    }
    const values = new Map<string, number>();
    for (const [key, cell] of cells) {
      values.set(
        key,
        counter.value === "count"
          ? cell.n
          : counter.value === "sum"
          ? cell.sum
          : cell.customers.size,
      );
    }
    out.set(counter.name, values);
  }
  return out;
}

function assertValue(counter: CounterSpec, key: string, actual: number, expected: number) {
  if (counter.value === "distinct") {
    // HyperLogLog: standard error 0.81%; allow three of them (and 1 for tiny sets).
    const bound = Math.max(1, Math.ceil(3 * HLL_STANDARD_ERROR * expected));
    assert.ok(
      Math.abs(actual - expected) <= bound,
      `${counter.name} ${key}: ${actual} is not within ${bound} of ${expected}`,
    );
  } else {
    assert.equal(actual, expected, `${counter.name} ${key}`);
  }
}

interface IngestReply {
  accepted: number;
  duplicates: number;
  late: number;
}

async function post(server: ServerProcess, events: Event[]): Promise<IngestReply> {
  const res = await fetch(`${server.url}/v1/streams/${STREAM}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(events),
  });
  const body = await res.json();
  assert.equal(res.status, 202, `${server.name}: ${JSON.stringify(body)}`);
  return body;
}

/** What the client saw of the instances while spreading the load. */
interface Spread {
  /** Requests that failed to connect or lost their connection, retried elsewhere. */
  connectionErrors: number;
  /** Requests answered 503, retried elsewhere. */
  unavailable: number;
}

/**
 * Posts a batch to `servers[first]`, and on a connection error or a 503 again, with the same
 * ids, to the next instance round-robin, until one acknowledges it.
 */
async function postAnywhere(
  servers: ServerProcess[],
  first: number,
  events: Event[],
  spread: Spread,
): Promise<IngestReply> {
  for (let attempt = 0; attempt < 3 * servers.length; attempt++) {
    const server = servers[(first + attempt) % servers.length];
    let res: Response;
    let body;
    try {
      res = await fetch(`${server.url}/v1/streams/${STREAM}/events`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(events),
      });
      body = await res.json();
    } catch {
      spread.connectionErrors += 1;
      continue;
    }
    if (res.status === 503) {
      spread.unavailable += 1;
      continue;
    }
    assert.equal(res.status, 202, `${server.name}: ${JSON.stringify(body)}`);
    return body;
  }
  throw new Error(`No instance acknowledged a batch of ${events.length} events`);
}

async function getJson(server: ServerProcess, path: string, init?: RequestInit) {
  const res = await fetch(`${server.url}${path}`, init);
  const body = await res.json();
  assert.equal(res.status, 200, `${server.name} ${path}: ${JSON.stringify(body)}`);
  return body;
}

interface Row {
  start: string;
  end: string;
  group: Record<string, unknown>;
  value: number;
  final: boolean;
  approximate?: boolean;
}

async function readCounter(server: ServerProcess, counter: string): Promise<Row[]> {
  const body = await getJson(server, `/v1/streams/${STREAM}/counters/${counter}?limit=1000`);
  return body.windows;
}

interface Closed {
  stream: string;
  counter: string;
  start: string;
  end: string;
  groups: Array<{ group: Record<string, unknown>; value: number }>;
}

async function sweep(server: ServerProcess): Promise<Closed[]> {
  const body = await getJson(server, "/v1/admin/sweep", { method: "POST" });
  return body.closed;
}

function shuffle<T>(items: T[], next: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** How one batch is sent: to one instance, to two at the same time, or to one then another. */
type Delivery = "one" | "two-at-once" | "again-on-other";

/**
 * The batches of the run: every unique event is in at least one batch; some batches repeat
 * events of other batches or within themselves. Copies of an id are identical objects.
 */
function plan(
  events: Event[],
  next: () => number,
): Array<{ batch: Event[]; delivery: Delivery }> {
  const order = shuffle(events, next);
  const deliveries: Delivery[] = ["one", "two-at-once", "again-on-other"];
  const out: Array<{ batch: Event[]; delivery: Delivery }> = [];
  for (let offset = 0, index = 0; offset < order.length; index++) {
    const size = 1 + Math.floor(next() * 40);
    const batch = order.slice(offset, offset + size);
    offset += size;
    for (let extra = Math.floor(next() * 4); extra > 0; extra--) {
      batch.push(events[Math.floor(next() * events.length)]);
    }
    if (next() < 0.2) batch.push(batch[0]);
    out.push({ batch, delivery: deliveries[index % 3] });
  }
  return out;
}

/** Where a window and group is: `<counter>|<start ms>|<group JSON>`. */
function deliveryKey(data: { counter: string; start: string; group: Record<string, unknown> }) {
  return `${data.counter}|${cellKey(Date.parse(data.start), data.group)}`;
}

redisTest(
  "three server processes on one Redis, one SIGKILLed mid-load: counters exact (distinct within the HLL error), each window closed once, and each window and group delivered with one webhook-id",
  async (fixture) => {
    const dir = await Deno.makeTempDir({ prefix: "edgestream-multi-" });
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(CONFIG));
    const receiver = await Receiver.start();
    const servers: ServerProcess[] = [];
    try {
      const vars = {
        UPSTASH_REDIS_REST_URL: fixture.restUrl,
        UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
        EDGESTREAM_PREFIX: "multi",
        EDGESTREAM_CONFIG: configPath,
        EDGESTREAM_SWEEP_EVERY: "0s",
        EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
      };
      servers.push(
        ...await Promise.all(["A", "B", "C"].map((name) => startServerProcess(name, vars))),
      );
      const [a, b, killed] = servers;
      const survivors = [a, b];

      // A webhook registered through one instance; every instance delivers to it.
      const registered = await fetch(`${a.url}/v1/webhooks`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ url: receiver.url(), eventTypes: ["window.closed"] }),
      });
      const endpoint = await registered.json();
      assert.equal(registered.status, 201, JSON.stringify(endpoint));
      receiver.secrets = [endpoint.secret];

      // Event times are in the past (the servers use their own clock) and far enough apart
      // from "now" that the watermark can be advanced later.
      const baseMs = Math.floor(Date.now() / MINUTE) * MINUTE - 30 * MINUTE;
      const events = makeEvents(baseMs);
      const next = random(20260101);
      const batches = plan(events, next);

      const spread: Spread = { connectionErrors: 0, unavailable: 0 };
      let sent = 0;
      let turn = 0;
      const send = async (first: number, batch: Event[]) => {
        const reply = await postAnywhere(servers, first, batch, spread);
        assert.equal(reply.late, 0);
        assert.equal(reply.accepted, batch.length);
        sent += batch.length;
      };
      let cursor = 0;
      const killAt = Math.floor(batches.length / 3);
      const worker = async () => {
        while (cursor < batches.length) {
          const index = cursor++;
          if (index === killAt) killed.signal("SIGKILL");
          const { batch, delivery } = batches[index];
          const first = turn++ % servers.length;
          const other = (first + 1) % servers.length;
          if (delivery === "one") {
            await send(first, batch);
          } else if (delivery === "two-at-once") {
            await Promise.all([send(first, batch), send(other, batch)]);
          } else {
            await send(first, batch);
            await send(other, batch);
          }
        }
      };
      await Promise.all(Array.from({ length: 12 }, worker));
      const status = await killed.status;
      assert.equal(status.signal, "SIGKILL");
      assert.ok(spread.connectionErrors > 0, "some requests met the killed instance");

      for (const server of survivors) {
        const stats = (await getJson(server, `/v1/streams/${STREAM}`)).stats;
        assert.equal(stats.applied, UNIQUE_EVENTS, `${server.name}: each unique id applied once`);
        assert.equal(stats.late, 0, server.name);
        // A batch the killed instance applied without answering came back as duplicates.
        assert.equal(stats.accepted, stats.applied + stats.duplicates, server.name);
        assert.ok(stats.duplicates >= sent - UNIQUE_EVENTS, server.name);
      }

      const expected = expectedCounters(events);
      for (const counter of COUNTERS) {
        const want = expected.get(counter.name)!;
        for (const server of survivors) {
          const rows = await readCounter(server, counter.name);
          const seen = new Set<string>();
          for (const row of rows) {
            const key = cellKey(Date.parse(row.start), row.group);
            assert.ok(want.has(key), `${server.name} ${counter.name}: unexpected ${key}`);
            assert.ok(!seen.has(key), `${server.name} ${counter.name}: ${key} twice`);
            seen.add(key);
            assertValue(counter, `${server.name} ${key}`, row.value, want.get(key)!);
            assert.equal(row.final, false);
            assert.equal(row.approximate === true, counter.value === "distinct");
          }
          assert.equal(seen.size, want.size, `${server.name} ${counter.name}: number of rows`);
        }
      }

      // Advance the watermark past every window of the data (plus lateness).
      const advance: Event = {
        id: "advance",
        ts: baseMs + 30 * MINUTE,
        country: "de",
        amount: 1,
        customer: "someone-else",
      };
      await post(a, [advance]);
      const closing = await Promise.all(
        Array.from({ length: 4 }, () => survivors.map(sweep)).flat(),
      );
      const closed = closing.flat();
      closed.push(...(await sweep(b)), ...(await sweep(a)));

      const closedKeys = new Set<string>();
      const groupsClosed = new Set<string>();
      for (const window of closed) {
        const id = `${window.counter}@${window.start}`;
        assert.ok(!closedKeys.has(id), `window ${id} closed twice`);
        closedKeys.add(id);
        assert.equal(window.stream, STREAM);
        const counter = COUNTERS.find((item) => item.name === window.counter)!;
        assert.equal(Date.parse(window.end) - Date.parse(window.start), counter.sizeMs);
        const want = expected.get(counter.name)!;
        for (const { group, value } of window.groups) {
          const key = cellKey(Date.parse(window.start), group);
          assert.ok(want.has(key), `closed ${counter.name}: unexpected ${key}`);
          assertValue(counter, `closed ${key}`, value, want.get(key)!);
          groupsClosed.add(deliveryKey({ counter: counter.name, start: window.start, group }));
        }
        const groupsWanted = [...want.keys()].filter((key) =>
          key.startsWith(`${Date.parse(window.start)}|`)
        ).length;
        assert.equal(window.groups.length, groupsWanted, `closed ${id}: number of groups`);
      }
      const finalWindows = new Set<string>();
      for (const counter of COUNTERS) {
        for (const key of expected.get(counter.name)!.keys()) {
          const start = Number(key.split("|")[0]);
          if (start + counter.sizeMs <= advance.ts - LATENESS_MS) {
            finalWindows.add(`${counter.name}@${new Date(start).toISOString()}`);
          }
        }
      }
      assert.deepEqual([...closedKeys].sort(), [...finalWindows].sort());

      // Every window and group reaches the receiver; the survivors' sweeps send what is due.
      const idsByKey = new Map<string, Set<string>>();
      const deadline = Date.now() + 30_000;
      for (let round = 0; idsByKey.size < groupsClosed.size; round++) {
        assert.ok(Date.now() < deadline, `delivered ${idsByKey.size} of ${groupsClosed.size}`);
        await sweep(survivors[round % survivors.length]);
        await new Promise((resolve) => setTimeout(resolve, 100));
        idsByKey.clear();
        for (const received of receiver.received) {
          assert.deepEqual(received.verifiedWith, [endpoint.secret], "signed with the secret");
          assert.equal(received.payload.type, "window.closed");
          const key = deliveryKey(received.payload.data);
          assert.ok(groupsClosed.has(key), `delivered ${key}, which did not close`);
          const counter = COUNTERS.find((item) => item.name === received.payload.data.counter)!;
          const [, start, group] = key.split("|");
          assertValue(
            counter,
            `delivered ${key}`,
            received.payload.data.value,
            expected.get(counter.name)!.get(`${start}|${group}`)!,
          );
          const ids = idsByKey.get(key) ?? new Set<string>();
          ids.add(received.id);
          idsByKey.set(key, ids);
        }
      }
      for (const [key, ids] of idsByKey) {
        assert.equal(ids.size, 1, `${key}: webhook-ids ${[...ids].join(", ")}`);
      }
      console.log(
        `${sent} events sent (${UNIQUE_EVENTS} unique); ${spread.connectionErrors} connection errors and ${spread.unavailable} 503s retried elsewhere; ${closedKeys.size} windows closed; ${groupsClosed.size} windows and groups delivered in ${receiver.received.length} requests`,
      );

      // The closed windows read as final, and a late event changes nothing.
      const late = await post(b, [{ ...advance, id: "too-late", ts: baseMs }]);
      assert.equal(late.late, 1);
      for (const server of survivors) {
        const rows = await readCounter(server, "per_minute");
        for (const row of rows) {
          const old = Date.parse(row.start) < baseMs + MINUTES * MINUTE;
          assert.equal(row.final, old, `${server.name} ${row.start}`);
          if (old) {
            assert.equal(
              row.value,
              expected.get("per_minute")!.get(cellKey(Date.parse(row.start), row.group)),
            );
          }
        }
      }
      assert.deepEqual(await sweep(a), []);

      // Every process took the key prefix from EDGESTREAM_PREFIX.
      const keys = await withDirect(fixture.redisUrl, (send) => send("KEYS", "*")) as string[];
      assert.ok(keys.length > 0);
      assert.deepEqual(
        keys.filter((key) =>
          !key.startsWith(`multi:{${STREAM}}:`) && !key.startsWith("multi:{wh}:") &&
          !key.startsWith("multi:{@definitions}:") &&
          // The startup check's write (the /readyz ping's key, kept a second).
          key !== "multi:{@ready}"
        ),
        [],
      );
    } catch (error) {
      for (const server of servers) console.error(`--- ${server.name} output:\n${server.output()}`);
      throw error;
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
      await receiver.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
