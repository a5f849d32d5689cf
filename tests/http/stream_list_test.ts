/**
 * `GET /v1/streams` pages as the other lists do: `limit` (1 to 1,000, default 100), `nextCursor`,
 * by name, and a cursor not in the form it gives is a 400 `invalid_cursor`.
 */
import assert from "node:assert/strict";
import { OpenAPIHono } from "@hono/zod-openapi";
import { createApp } from "../../src/app.ts";
import {
  compileConfig,
  type CompiledStream,
  type StreamCatalog,
  type StreamRegistry,
  type UnservableStream,
} from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { DEFAULT_LIMITS } from "../../src/http/body.ts";
import { errorResponse, unservableProblem } from "../../src/http/errors.ts";
import { registerStreamRoutes } from "../../src/http/stream_routes.ts";
import { MemoryStore } from "../../src/store/mod.ts";
import { cursorOfText } from "../../src/store/deliveries.ts";
import { NOW, testApp } from "../_fixtures.ts";

/** 250 streams (names of different lengths) and two that code point order puts first and last. */
function config() {
  const streams: Record<string, unknown> = {};
  for (let i = 0; i < 250; i++) streams[`s${i}`] = {};
  streams["S-A"] = {};
  streams["s_z"] = {};
  return { streams };
}

Deno.test("GET /v1/streams pages by name with limit and nextCursor, default 100", async () => {
  const { app } = await testApp({ config: config() });
  const first = await (await app.request("/v1/streams")).json();
  assert.equal(first.streams.length, 100);
  assert.equal(typeof first.nextCursor, "string");
  const names: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const query: string = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
    const res = await app.request(`/v1/streams?limit=40${query}`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok(body.streams.length <= 40);
    names.push(...body.streams.map((stream: { name: string }) => stream.name));
    cursor = body.nextCursor;
    pages++;
  } while (cursor !== null);
  assert.equal(pages, 7);
  assert.equal(names.length, 252);
  assert.equal(new Set(names).size, 252);
  // Code point order, not the config's nor a locale's.
  assert.deepEqual(names.slice(0, 4), ["S-A", "s0", "s1", "s10"]);
  assert.deepEqual(names.at(-1), "s_z");
  const all = await (await app.request("/v1/streams?limit=1000")).json();
  assert.equal(all.streams.length, 252);
  assert.equal(all.nextCursor, null);
});

Deno.test("GET /v1/streams refuses a bad limit or cursor as the other lists do", async () => {
  const { app } = await testApp({ config: config() });
  // The keys' and webhooks' lists use the same bounds (1 to 1,000), refused as invalid_query.
  // Decimal digits alone: what Number() would also read (hex, exponents, a sign, spaces) is
  // refused too, saying what was sent.
  for (
    const [query, sent] of [
      ["limit=0", "0"],
      ["limit=1001", "1001"],
      ["limit=x", "x"],
      ["limit=", ""],
      ["limit=2.5", "2.5"],
      ["limit=0x10", "0x10"],
      ["limit=1e1", "1e1"],
      ["limit=%2B5", "+5"],
      ["limit=%205", " 5"],
    ]
  ) {
    const res = await app.request(`/v1/streams?${query}`);
    assert.equal(res.status, 400, query);
    const { error } = await res.json();
    assert.deepEqual([error.code, error.message], [
      "invalid_query",
      `Invalid query parameter limit: expected a whole number from 1 to 1000, received '${sent}'`,
    ]);
  }
  assert.equal((await app.request("/v1/streams?limit=05")).status, 200);
  for (const cursor of ["!!", "eyJhIjoxfQ", "ZS4xLjI"]) {
    const res = await app.request(`/v1/streams?cursor=${cursor}`);
    assert.equal(res.status, 400, cursor);
    assert.equal((await res.json()).error.code, "invalid_cursor", cursor);
  }
  // Cursors are not signed: one written by hand in the form the list gives is read as the name it
  // holds, and the page goes on after that name (README: "read as the name it holds").
  const written = cursorOfText(JSON.stringify(["streams", "s98"]));
  const page = await (await app.request(`/v1/streams?limit=2&cursor=${written}`)).json();
  assert.deepEqual(page.streams.map((stream: { name: string }) => stream.name), ["s99", "s_z"]);
});

/** Every name of `GET /v1/streams`, a page of `limit` at a time, running `between` after each. */
async function walkPages(
  app: { request: (path: string, init?: RequestInit) => Response | Promise<Response> },
  limit: number,
  between: (page: number) => Promise<void>,
): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | null = null;
  let page = 0;
  do {
    const query: string = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
    const res = await app.request(`/v1/streams?limit=${limit}${query}`);
    assert.equal(res.status, 200);
    const body = await res.json();
    names.push(...body.streams.map((stream: { name: string }) => stream.name));
    cursor = body.nextCursor;
    await between(page++);
  } while (cursor !== null);
  return names;
}

Deno.test("following nextCursor gives every stream that exists all along exactly once while streams are created and deleted", async () => {
  const app = createApp({
    streams: compileConfig({ streams: {} }),
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
  });
  const definition = { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } };
  const put = async (name: string) => {
    const res = await app.request(`/v1/streams/${name}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(definition),
    });
    assert.equal(res.status, 201, await res.text());
  };
  const remove = async (name: string) => {
    const res = await app.request(`/v1/streams/${name}`, { method: "DELETE" });
    assert.equal(res.status, 204, await res.text());
  };
  const staying = Array.from({ length: 20 }, (_, i) => `s${String(i).padStart(2, "0")}`);
  const going = ["s03x", "s10x", "s17x", "s19x"];
  for (const name of [...staying, ...going]) await put(name);
  // After each page, a stream before the cursor and one after it are deleted, and new ones
  // created on both sides of it.
  const names = await walkPages(app, 3, async (page) => {
    if (page < going.length) await remove(going[page]);
    await put(`s${String(page * 3).padStart(2, "0")}a`);
    await put(`s${String(page * 3 + 4).padStart(2, "0")}b`);
  });
  for (const name of staying) {
    assert.equal(names.filter((item) => item === name).length, 1, `${name} in ${names}`);
  }
  assert.equal(new Set(names).size, names.length, "none twice");
});

Deno.test("a page of GET /v1/streams reads the stats of its own streams only", async () => {
  const read: string[] = [];
  class Counting extends MemoryStore {
    override stats(...args: Parameters<MemoryStore["stats"]>) {
      read.push(args[0]);
      return super.stats(...args);
    }
  }
  const { app } = await testApp({ config: config(), store: new Counting({ now: () => NOW }) });
  const first = await (await app.request("/v1/streams?limit=5")).json();
  assert.deepEqual(read.sort(), first.streams.map((s: { name: string }) => s.name).sort());
  read.length = 0;
  const next = await (await app.request(`/v1/streams?limit=7&cursor=${first.nextCursor}`)).json();
  assert.deepEqual(read.sort(), next.streams.map((s: { name: string }) => s.name).sort());
  assert.equal(read.length, 7);
});

/** A registry of another kind than `StreamRegistry`: a map that keeps one stream it cannot serve. */
class OtherRegistry extends Map<string, CompiledStream> implements StreamCatalog {
  static readonly BROKEN: UnservableStream = { version: 3, error: "its pattern is not linear" };

  *unservableStreams(): Iterable<[string, UnservableStream]> {
    yield ["broken", OtherRegistry.BROKEN];
  }
}

// StreamRegistry reports its unservable streams through the catalog's method: renamed, this fails
// the type check (the method is optional in StreamCatalog, so `implements` alone would not).
const registryReports: Required<Pick<StreamCatalog, "unservableStreams">> = {} as StreamRegistry;
void registryReports;

/** `GET /v1/streams` of the stream routes alone, on `streams`. */
async function listed(streams: StreamCatalog): Promise<Array<Record<string, unknown>>> {
  const app = new OpenAPIHono();
  app.onError(errorResponse);
  registerStreamRoutes(app, {
    streams,
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
    now: () => NOW,
    limits: DEFAULT_LIMITS,
    ingestOptions: () => ({}),
    sweepConsumers: [],
  });
  const res = await app.request("/v1/streams");
  assert.equal(res.status, 200);
  return (await res.json()).streams;
}

Deno.test("GET /v1/streams lists the unservable streams of any registry that reports them, not only a StreamRegistry's", async () => {
  const config = compileConfig({ streams: { orders: {} } });
  const streams = await listed(new OtherRegistry(config));
  assert.deepEqual(streams.map(({ name, servable }) => [name, servable]), [
    ["broken", false],
    ["orders", true],
  ]);
  assert.deepEqual(streams[0], {
    name: "broken",
    source: "api",
    version: 3,
    servable: false,
    problem: unservableProblem("broken", OtherRegistry.BROKEN),
  });
  // A plain map reports none.
  assert.deepEqual((await listed(config)).map(({ name }) => name), ["orders"]);
});
