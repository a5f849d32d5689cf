import assert from "node:assert/strict";
import fc from "fast-check";
import { Webhook } from "standardwebhooks";
import {
  generateSecret,
  secretKey,
  sign,
  signatureHeaders,
  SigningError,
} from "../../../src/fanout/webhooks/signing.ts";

Deno.test("generateSecret() gives whsec_ + base64 of 32 random bytes, different every time", () => {
  const a = generateSecret();
  const b = generateSecret();
  assert.match(a, /^whsec_[A-Za-z0-9+/]{43}=$/);
  assert.notEqual(a, b);
  assert.equal(secretKey(a).length, 32);
});

Deno.test("sign() equals the standardwebhooks reference signature for any body", async () => {
  await fc.assert(
    fc.asyncProperty(fc.string({ unit: "grapheme" }), fc.integer({ min: 0, max: 4e9 }), async (
      body,
      seconds,
    ) => {
      const secret = generateSecret();
      const expected = new Webhook(secret).sign("msg_s_1-0", new Date(seconds * 1000), body);
      assert.equal(await sign(secret, "msg_s_1-0", seconds, body), expected);
    }),
    { numRuns: 50 },
  );
});

Deno.test("signatureHeaders() signs with every secret; a receiver with either one verifies", async () => {
  const oldSecret = generateSecret();
  const newSecret = generateSecret();
  const nowMs = Date.now();
  const body = JSON.stringify({ type: "window.closed", data: { value: 1 } });
  const headers = await signatureHeaders([newSecret, oldSecret], "msg_s_1-0", nowMs, body);
  assert.equal(headers["webhook-id"], "msg_s_1-0");
  assert.equal(headers["webhook-timestamp"], String(Math.floor(nowMs / 1000)));
  assert.equal(headers["webhook-signature"].split(" ").length, 2);
  assert.deepEqual(new Webhook(oldSecret).verify(body, { ...headers }), JSON.parse(body));
  assert.deepEqual(new Webhook(newSecret).verify(body, { ...headers }), JSON.parse(body));
  assert.throws(() => new Webhook(generateSecret()).verify(body, { ...headers }), /signature/);
  assert.throws(
    () => new Webhook(newSecret).verify(body + " ", { ...headers }),
    /No matching signature/,
    "a changed body must not verify",
  );
});

Deno.test("secretKey() refuses secrets without the prefix, not base64, or shorter than 24 bytes", () => {
  assert.throws(() => secretKey("abc"), SigningError);
  assert.throws(() => secretKey("whsec_not base64!"), /followed by base64/);
  assert.throws(() => secretKey(`whsec_${btoa("x".repeat(23))}`), /holds 23 bytes; at least 24/);
  assert.equal(secretKey(`whsec_${btoa("x".repeat(24))}`).length, 24);
});

Deno.test("signatureHeaders() refuses a message id holding a '.'", async () => {
  await assert.rejects(
    () => signatureHeaders([generateSecret()], "msg.1", Date.now(), "{}"),
    /must not contain '\.': msg\.1/,
  );
});
