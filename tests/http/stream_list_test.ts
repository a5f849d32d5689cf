/**
 * `GET /v1/streams` pages as the other lists do: `limit` (1 to 1,000, default 100), `nextCursor`,
 * by name, and a cursor it did not give out is a 400 `invalid_cursor`.
 */
import assert from "node:assert/strict";
import { testApp } from "../_fixtures.ts";

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
  for (const query of ["limit=0", "limit=1001", "limit=x"]) {
    const res = await app.request(`/v1/streams?${query}`);
    assert.equal(res.status, 400, query);
    assert.equal((await res.json()).error.code, "invalid_query", query);
  }
  for (const cursor of ["!!", "eyJhIjoxfQ", "ZS4xLjI"]) {
    const res = await app.request(`/v1/streams?cursor=${cursor}`);
    assert.equal(res.status, 400, cursor);
    assert.equal((await res.json()).error.code, "invalid_cursor", cursor);
  }
});
