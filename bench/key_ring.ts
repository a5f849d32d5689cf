/**
 * What verifying an API key costs per request: `KeyRing.grantOf` (what every request calls) with its
 * verified-key cache, against what it did before the cache (a WebCrypto
 * SHA-256 of the presented key, compared in constant time with every
 * configured digest). Both in the same run, so the ratio holds on a busy
 * machine. Run: `deno run bench/key_ring.ts`.
 */
import { constantTimeEqual, KeyRing } from "../src/http/auth.ts";

const KEY = "ingest-key-0123456789abcdef";
const CONFIGURED = `admin:admin-key-0123456789abc,ingest:${KEY},read:read-key-0123456789abc`;
const ROUNDS = 3;
const OPS = 100_000;

async function webCryptoDigest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** The verification of every request before the cache. */
async function uncached(digests: Uint8Array[], key: string): Promise<boolean> {
  const presented = await webCryptoDigest(key);
  let found = false;
  for (const digest of digests) found = constantTimeEqual(digest, presented) || found;
  return found;
}

async function microsPerOp(run: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < OPS; i++) await run();
  return ((performance.now() - start) * 1000) / OPS;
}

const ring = await KeyRing.parse(CONFIGURED);
const digests = await Promise.all(
  CONFIGURED.split(",").map((entry) => webCryptoDigest(entry.slice(entry.indexOf(":") + 1))),
);
for (let round = 1; round <= ROUNDS; round++) {
  const before = await microsPerOp(() => uncached(digests, KEY));
  const after = await microsPerOp(() => ring.grantOf(KEY));
  console.log(
    `round ${round}: uncached WebCrypto ${before.toFixed(2)} µs/op, cached KeyRing ${
      after.toFixed(2)
    } µs/op (${(before / after).toFixed(1)}x)`,
  );
}
