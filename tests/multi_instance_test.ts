/**
 * Two real server processes (`src/main.ts`) share one Redis through the Upstash bridge: fed the
 * same events concurrently, with overlapping ids and retries, both read the same exact counters,
 * and sweeping both at once closes each final window exactly once.
 */
import assert from "node:assert/strict";
import { HLL_STANDARD_ERROR } from "../src/store/redis/store.ts";
import { type RedisFixture, redisTest, withDirect } from "./_redis.ts";

const MINUTE = 60_000;
const STREAM = "clicks";
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
        users_per_minute: { window: { tumbling: "1m" }, aggregate: { distinct: "user" } },
        per_2m_every_1m: {
          window: { hopping: "2m", every: "1m" },
          groupBy: ["country"],
          aggregate: "count",
        },
        users_2m_every_1m: {
          window: { hopping: "2m", every: "1m" },
          aggregate: { distinct: "user" },
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
  user: string;
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
  { name: "users_per_minute", sizeMs: MINUTE, hopMs: MINUTE, groupBy: false, value: "distinct" },
  { name: "per_2m_every_1m", sizeMs: 2 * MINUTE, hopMs: MINUTE, groupBy: true, value: "count" },
  {
    name: "users_2m_every_1m",
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
    user: `u${(i * 13) % 500}`,
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
    const cells = new Map<string, { n: number; sum: number; users: Set<string> }>();
    for (const event of events) {
      for (const start of windowStarts(event.ts, counter)) {
        const key = cellKey(start, counter.groupBy ? { country: event.country } : {});
        const cell = cells.get(key) ?? { n: 0, sum: 0, users: new Set<string>() };
        cell.n += 1;
        cell.sum += event.amount;
        cell.users.add(event.user);
        cells.set(key, cell);
      }
    }
    const values = new Map<string, number>();
    for (const [key, cell] of cells) {
      values.set(
        key,
        counter.value === "count" ? cell.n : counter.value === "sum" ? cell.sum : cell.users.size,
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

/** A running `src/main.ts` process. */
interface ServerProcess {
  name: string;
  url: string;
  /** Everything the process printed so far, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

async function startServer(
  name: string,
  fixture: RedisFixture,
  configPath: string,
): Promise<ServerProcess> {
  const port = freePort();
  const root = new URL("../", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", `${root}src/main.ts`],
    cwd: root,
    env: {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_PREFIX: "multi",
      EDGESTREAM_CONFIG: configPath,
      EDGESTREAM_KEYS: "",
      EDGESTREAM_SWEEP_EVERY: "0s",
      PORT: String(port),
      HOST: "127.0.0.1",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let printed = "";
  let listening: () => void;
  const ready = new Promise<void>((resolve) => listening = resolve);
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      printed += text;
      if (/listening on http:\/\//.test(printed)) listening();
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  let stopping: Promise<void> | undefined;
  const server: ServerProcess = {
    name,
    url: `http://127.0.0.1:${port}`,
    output: () => printed,
    stop() {
      stopping ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
        await child.status;
        await drained;
      })();
      return stopping;
    },
  };

  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    ready.then(() => "ready" as const),
    child.status.then(() => "exited" as const),
    new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), 30_000)),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    await server.stop();
    throw new Error(`Server ${name} ${outcome} before listening:\n${printed}`);
  }
  return server;
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

/** How one batch is sent: to one instance, to both at the same time, or to one then again. */
type Delivery = "one" | "both-at-once" | "retry-on-other";

/**
 * The batches of the run: every unique event is in at least one batch; some batches repeat
 * events of other batches or within themselves. Copies of an id are identical objects.
 */
function plan(
  events: Event[],
  next: () => number,
): Array<{ batch: Event[]; first: 0 | 1; delivery: Delivery }> {
  const order = shuffle(events, next);
  const deliveries: Delivery[] = ["one", "both-at-once", "retry-on-other"];
  const out: Array<{ batch: Event[]; first: 0 | 1; delivery: Delivery }> = [];
  for (let offset = 0, index = 0; offset < order.length; index++) {
    const size = 1 + Math.floor(next() * 40);
    const batch = order.slice(offset, offset + size);
    offset += size;
    for (let extra = Math.floor(next() * 4); extra > 0; extra--) {
      batch.push(events[Math.floor(next() * events.length)]);
    }
    if (next() < 0.2) batch.push(batch[0]);
    out.push({ batch, first: (index % 2) as 0 | 1, delivery: deliveries[index % 3] });
  }
  return out;
}

redisTest(
  "two server processes on one Redis count overlapping, retried batches once, and close each window once",
  async (fixture) => {
    const dir = await Deno.makeTempDir({ prefix: "edgestream-multi-" });
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(configPath, JSON.stringify(CONFIG));
    const servers: ServerProcess[] = [];
    try {
      servers.push(
        ...await Promise.all([
          startServer("A", fixture, configPath),
          startServer("B", fixture, configPath),
        ]),
      );

      // Event times are in the past (the servers use their own clock) and far enough apart
      // from "now" that the watermark can be advanced later.
      const baseMs = Math.floor(Date.now() / MINUTE) * MINUTE - 30 * MINUTE;
      const events = makeEvents(baseMs);
      const next = random(20260101);
      const batches = plan(events, next);

      let applied = 0;
      let sent = 0;
      const send = async (to: 0 | 1, batch: Event[]) => {
        const reply = await post(servers[to], batch);
        assert.equal(reply.late, 0);
        assert.equal(reply.accepted, batch.length);
        applied += reply.accepted - reply.duplicates;
        sent += batch.length;
      };
      let cursor = 0;
      const worker = async () => {
        while (cursor < batches.length) {
          const { batch, first, delivery } = batches[cursor++];
          const other = (1 - first) as 0 | 1;
          if (delivery === "one") {
            await send(first, batch);
          } else if (delivery === "both-at-once") {
            await Promise.all([send(first, batch), send(other, batch)]);
          } else {
            await send(first, batch);
            await send(other, batch);
          }
        }
      };
      await Promise.all(Array.from({ length: 12 }, worker));
      assert.equal(applied, UNIQUE_EVENTS, "each unique id applied exactly once");

      for (const server of servers) {
        const stats = (await getJson(server, `/v1/streams/${STREAM}`)).stats;
        assert.equal(stats.applied, UNIQUE_EVENTS, server.name);
        assert.equal(stats.duplicates, sent - UNIQUE_EVENTS, server.name);
        assert.equal(stats.late, 0, server.name);
      }

      const expected = expectedCounters(events);
      for (const counter of COUNTERS) {
        const want = expected.get(counter.name)!;
        for (const server of servers) {
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
        user: "someone-else",
      };
      await post(servers[0], [advance]);
      const closing = await Promise.all(
        Array.from({ length: 4 }, () => servers.map(sweep)).flat(),
      );
      const closed = closing.flat();
      closed.push(...(await sweep(servers[1])), ...(await sweep(servers[0])));

      const closedKeys = new Set<string>();
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

      // The closed windows read as final, and a late event changes nothing.
      const late = await post(servers[1], [{ ...advance, id: "too-late", ts: baseMs }]);
      assert.equal(late.late, 1);
      for (const server of servers) {
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
      assert.deepEqual(await sweep(servers[0]), []);

      // Both processes took the key prefix from EDGESTREAM_PREFIX.
      const keys = await withDirect(fixture.redisUrl, (send) => send("KEYS", "*")) as string[];
      assert.ok(keys.length > 0);
      assert.deepEqual(keys.filter((key) => !key.startsWith(`multi:{${STREAM}}:`)), []);
    } catch (error) {
      for (const server of servers) console.error(`--- ${server.name} output:\n${server.output()}`);
      throw error;
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
      await Deno.remove(dir, { recursive: true });
    }
  },
);
