import assert from "node:assert/strict";
import { apiErrorOf } from "../../src/http/errors.ts";
import { ConnectionSlots, SlotLimitError } from "../../src/http/connection_slots.ts";

Deno.test("ConnectionSlots bounds each holder and the process, and a release frees one place once", () => {
  const slots = new ConnectionSlots("subscription", { perKey: 2, perProcess: 3 });
  const a1 = slots.take("a", "key a");
  slots.take("a", "key a");
  assert.throws(
    () => slots.take("a", "key a"),
    (error) =>
      error instanceof SlotLimitError && error.kind === "subscription" && error.limit === "key" &&
      error.max === 2 &&
      error.message ===
        "Too many live subscriptions: key a has 2 open on this server; the limit is 2; close one first",
  );
  const b1 = slots.take("b", "key b");
  assert.throws(
    () => slots.take("c", "key c"),
    (error) => error instanceof SlotLimitError && error.limit === "process",
  );
  a1.release();
  a1.release(); // a second release frees nothing more
  assert.equal(slots.held("a"), 1);
  assert.equal(slots.held(), 2);
  slots.take("c", "key c");
  assert.throws(() => slots.take("a", "key a"), SlotLimitError);
  b1.release();
  assert.equal(slots.held("b"), 0);
  slots.take("a", "key a");
  assert.equal(slots.held(), 3);
});

Deno.test("ConnectionSlots of ingest sockets count apart from subscriptions and name them in refusals", () => {
  const subscriptions = new ConnectionSlots("subscription", { perKey: 1, perProcess: 10 });
  const sockets = new ConnectionSlots("ingest_socket", { perKey: 1, perProcess: 10 });
  subscriptions.take("a", "key a");
  // A pool of its own: the key's subscription takes none of its sockets.
  sockets.take("a", "key a");
  assert.throws(
    () => sockets.take("a", "key a"),
    (error) =>
      error instanceof SlotLimitError && error.kind === "ingest_socket" && error.limit === "key" &&
      error.message ===
        "Too many WebSocket ingest connections: key a has 1 open on this server; the limit is 1; close one first",
  );
  assert.equal(subscriptions.held(), 1);
  assert.equal(sockets.held(), 1);
});

Deno.test("apiErrorOf() answers a key's bound with 429 too_many_subscriptions and the process's with 503 subscriptions_full, both with Retry-After", () => {
  const key = apiErrorOf(new SlotLimitError("subscription", "key", 100, "m"))!;
  assert.equal(key.status, 429);
  assert.equal(key.code, "too_many_subscriptions");
  assert.deepEqual(key.headers, { "Retry-After": "5" });
  assert.deepEqual(key.details, { limit: "key", max: 100 });
  const process = apiErrorOf(new SlotLimitError("subscription", "process", 10_000, "m"))!;
  assert.equal(process.status, 503);
  assert.equal(process.code, "subscriptions_full");
  assert.deepEqual(process.headers, { "Retry-After": "5" });
});

Deno.test("apiErrorOf() answers an ingest socket's key bound with 429 too_many_ingest_sockets and the process's with 503 ingest_sockets_full, both with Retry-After", () => {
  const key = apiErrorOf(new SlotLimitError("ingest_socket", "key", 100, "m"))!;
  assert.equal(key.status, 429);
  assert.equal(key.code, "too_many_ingest_sockets");
  assert.deepEqual(key.headers, { "Retry-After": "5" });
  assert.deepEqual(key.details, { limit: "key", max: 100 });
  const process = apiErrorOf(new SlotLimitError("ingest_socket", "process", 10_000, "m"))!;
  assert.equal(process.status, 503);
  assert.equal(process.code, "ingest_sockets_full");
  assert.deepEqual(process.headers, { "Retry-After": "5" });
  assert.deepEqual(process.details, { limit: "process", max: 10_000 });
});
