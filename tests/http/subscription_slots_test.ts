import assert from "node:assert/strict";
import { apiErrorOf } from "../../src/http/errors.ts";
import { SubscriptionLimitError, SubscriptionSlots } from "../../src/http/subscription_slots.ts";

Deno.test("SubscriptionSlots bounds each holder and the process, and a release frees one place once", () => {
  const slots = new SubscriptionSlots({ perKey: 2, perProcess: 3 });
  const a1 = slots.take("a", "key a");
  slots.take("a", "key a");
  assert.throws(
    () => slots.take("a", "key a"),
    (error) =>
      error instanceof SubscriptionLimitError && error.limit === "key" && error.max === 2 &&
      error.message ===
        "Too many live subscriptions: key a has 2 open on this server; the limit is 2; close one first",
  );
  const b1 = slots.take("b", "key b");
  assert.throws(
    () => slots.take("c", "key c"),
    (error) => error instanceof SubscriptionLimitError && error.limit === "process",
  );
  a1.release();
  a1.release(); // a second release frees nothing more
  assert.equal(slots.held("a"), 1);
  assert.equal(slots.held(), 2);
  slots.take("c", "key c");
  assert.throws(() => slots.take("a", "key a"), SubscriptionLimitError);
  b1.release();
  assert.equal(slots.held("b"), 0);
  slots.take("a", "key a");
  assert.equal(slots.held(), 3);
});

Deno.test("apiErrorOf() answers a key's bound with 429 too_many_subscriptions and the process's with 503 subscriptions_full, both with Retry-After", () => {
  const key = apiErrorOf(new SubscriptionLimitError("key", 100, "m"))!;
  assert.equal(key.status, 429);
  assert.equal(key.code, "too_many_subscriptions");
  assert.deepEqual(key.headers, { "Retry-After": "5" });
  assert.deepEqual(key.details, { limit: "key", max: 100 });
  const process = apiErrorOf(new SubscriptionLimitError("process", 10_000, "m"))!;
  assert.equal(process.status, 503);
  assert.equal(process.code, "subscriptions_full");
  assert.deepEqual(process.headers, { "Retry-After": "5" });
});
