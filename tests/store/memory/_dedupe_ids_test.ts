import assert from "node:assert/strict";
import fc from "fast-check";
import {
  DedupeIds,
  fingerprintInto,
  FingerprintSet,
} from "../../../src/store/memory/_dedupe_ids.ts";

/** MurmurHash3_x86_128 over bytes, transcribed from the reference C; returns h1..h4. */
function murmur3x86x128(key: Uint8Array, seed: number): number[] {
  const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));
  const fmix = (h: number) => {
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return h ^ (h >>> 16);
  };
  const [c1, c2, c3, c4] = [0x239b961b, 0xab0e9789, 0x38b34ae5, 0xa1e38b93];
  let [h1, h2, h3, h4] = [seed, seed, seed, seed];
  const blocks = Math.floor(key.length / 16);
  const word = (at: number) =>
    key[at] | (key[at + 1] << 8) | (key[at + 2] << 16) | (key[at + 3] << 24);
  for (let b = 0; b < blocks; b++) {
    let k1 = word(b * 16);
    let k2 = word(b * 16 + 4);
    let k3 = word(b * 16 + 8);
    let k4 = word(b * 16 + 12);
    k1 = Math.imul(k1, c1);
    k1 = rotl(k1, 15);
    k1 = Math.imul(k1, c2);
    h1 ^= k1;
    h1 = rotl(h1, 19);
    h1 = (h1 + h2) | 0;
    h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(k2, c2);
    k2 = rotl(k2, 16);
    k2 = Math.imul(k2, c3);
    h2 ^= k2;
    h2 = rotl(h2, 17);
    h2 = (h2 + h3) | 0;
    h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(k3, c3);
    k3 = rotl(k3, 17);
    k3 = Math.imul(k3, c4);
    h3 ^= k3;
    h3 = rotl(h3, 15);
    h3 = (h3 + h4) | 0;
    h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(k4, c4);
    k4 = rotl(k4, 18);
    k4 = Math.imul(k4, c1);
    h4 ^= k4;
    h4 = rotl(h4, 13);
    h4 = (h4 + h1) | 0;
    h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;
  }
  const tail = key.subarray(blocks * 16);
  let [k1, k2, k3, k4] = [0, 0, 0, 0];
  const n = key.length & 15;
  if (n >= 15) k4 ^= tail[14] << 16;
  if (n >= 14) k4 ^= tail[13] << 8;
  if (n >= 13) {
    k4 ^= tail[12];
    k4 = Math.imul(k4, c4);
    k4 = rotl(k4, 18);
    k4 = Math.imul(k4, c1);
    h4 ^= k4;
  }
  if (n >= 12) k3 ^= tail[11] << 24;
  if (n >= 11) k3 ^= tail[10] << 16;
  if (n >= 10) k3 ^= tail[9] << 8;
  if (n >= 9) {
    k3 ^= tail[8];
    k3 = Math.imul(k3, c3);
    k3 = rotl(k3, 17);
    k3 = Math.imul(k3, c4);
    h3 ^= k3;
  }
  if (n >= 8) k2 ^= tail[7] << 24;
  if (n >= 7) k2 ^= tail[6] << 16;
  if (n >= 6) k2 ^= tail[5] << 8;
  if (n >= 5) {
    k2 ^= tail[4];
    k2 = Math.imul(k2, c2);
    k2 = rotl(k2, 16);
    k2 = Math.imul(k2, c3);
    h2 ^= k2;
  }
  if (n >= 4) k1 ^= tail[3] << 24;
  if (n >= 3) k1 ^= tail[2] << 16;
  if (n >= 2) k1 ^= tail[1] << 8;
  if (n >= 1) {
    k1 ^= tail[0];
    k1 = Math.imul(k1, c1);
    k1 = rotl(k1, 15);
    k1 = Math.imul(k1, c2);
    h1 ^= k1;
  }
  h1 ^= key.length;
  h2 ^= key.length;
  h3 ^= key.length;
  h4 ^= key.length;
  h1 = (h1 + h2) | 0;
  h1 = (h1 + h3) | 0;
  h1 = (h1 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h3 = fmix(h3);
  h4 = fmix(h4);
  h1 = (h1 + h2) | 0;
  h1 = (h1 + h3) | 0;
  h1 = (h1 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  return [h1 >>> 0, h2 >>> 0, h3 >>> 0, h4 >>> 0];
}

function utf16le(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    bytes[i * 2] = text.charCodeAt(i) & 0xff;
    bytes[i * 2 + 1] = text.charCodeAt(i) >>> 8;
  }
  return bytes;
}

function fingerprintOf(text: string, seed = 0): [number, number] {
  const into = new Uint32Array(2);
  fingerprintInto(text, into, { seed });
  return [into[0], into[1]];
}

Deno.test("the reference MurmurHash3_x86_128 used below matches SMHasher's verification value", () => {
  // SMHasher's VerificationTest: hash {0}, {0,1}, … {0..254} with seed 256 - length, then the hashes.
  const key = new Uint8Array(256);
  const hashes = new Uint8Array(16 * 256);
  const view = new DataView(hashes.buffer);
  for (let i = 0; i < 256; i++) {
    key[i] = i;
    murmur3x86x128(key.subarray(0, i), 256 - i).forEach((h, w) =>
      view.setUint32(i * 16 + w * 4, h, true)
    );
  }
  assert.equal(murmur3x86x128(hashes, 0)[0], 0xb3ece62a);
});

Deno.test("fingerprintInto() is the first two words of MurmurHash3_x86_128 over the UTF-16LE code units", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 80 }), fc.nat(), (text, seed) => {
      assert.deepEqual(fingerprintOf(text, seed), murmur3x86x128(utf16le(text), seed).slice(0, 2));
    }),
    { numRuns: 500 },
  );
});

Deno.test("fingerprintInto() tells ids apart that differ in one code unit or in length", () => {
  const seen = new Set<string>();
  for (const text of ["", "\u0000", "\u0000\u0000", "a", "b", "ab", "ba", "a\u0100", "a\u0001"]) {
    seen.add(fingerprintOf(text).join(","));
  }
  assert.equal(seen.size, 9);
});

Deno.test("FingerprintSet adds, finds and grows like a Set of the pairs", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          op: fc.constantFrom("add", "has"),
          // Few distinct values, so hits and probe collisions are common; 0 covers the empty marker.
          high: fc.constantFrom(0, 1, 17, 33, 0xffffffff, 0x80000001),
          low: fc.constantFrom(0, 1, 2, 0xffffffff),
        }),
        { maxLength: 300 },
      ),
      fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 200 }),
      (ops, bulk) => {
        const set = new FingerprintSet();
        const model = new Set<string>();
        // Normalised as the set stores them: (0, 0) is held as (0, 1).
        const key = (high: number, low: number) =>
          high === 0 && low === 0 ? "0,1" : `${high >>> 0},${low >>> 0}`;
        for (const [high, low] of bulk) {
          assert.equal(set.add(high, low), !model.has(key(high, low)));
          model.add(key(high, low));
        }
        for (const { op, high, low } of ops) {
          if (op === "add") {
            assert.equal(set.add(high, low), !model.has(key(high, low)));
            model.add(key(high, low));
          } else {
            assert.equal(set.has(high, low), model.has(key(high, low)));
          }
          assert.equal(set.size, model.size);
        }
        for (const entry of model) {
          const [high, low] = entry.split(",").map(Number);
          assert.ok(set.has(high, low));
        }
      },
    ),
  );
});

Deno.test("FingerprintSet keeps every entry through many doublings and stays at most 3/4 full", () => {
  const set = new FingerprintSet();
  const into = new Uint32Array(2);
  for (let i = 0; i < 100_000; i++) {
    fingerprintInto(`id-${i}`, into);
    assert.ok(set.add(into[0], into[1]));
    assert.ok(set.size * 8 * 4 <= set.byteLength * 3);
  }
  for (let i = 0; i < 100_000; i++) {
    fingerprintInto(`id-${i}`, into);
    assert.ok(set.has(into[0], into[1]));
    assert.equal(set.add(into[0], into[1]), false);
  }
  fingerprintInto("id-100000", into);
  assert.equal(set.has(into[0], into[1]), false);
  assert.equal(set.size, 100_000);
  // 100,000 ids in 2^18 slots of 8 bytes: under 22 bytes an id.
  assert.equal(set.byteLength, 2 ** 18 * 8);
});

Deno.test("DedupeIds still finds every id of the ttl after many inserts", () => {
  const ids = new DedupeIds({ maxIds: 1_000_000 });
  ids.rotateTo(0, 1_000);
  for (let i = 0; i < 200_000; i++) assert.equal(ids.seen(`evt-${i}`), false);
  ids.rotateTo(1_500, 1_000);
  for (let i = 0; i < 200_000; i += 7) assert.equal(ids.seen(`evt-${i}`), true);
  assert.equal(ids.seen("evt-200000"), false);
  assert.equal(ids.forgotten, 0);
});

Deno.test("DedupeIds holds at most maxIds, keeps the newest half and counts what it forgot early", () => {
  const ids = new DedupeIds({ maxIds: 10 });
  ids.rotateTo(0, 1_000);
  for (let i = 0; i < 23; i++) ids.seen(`evt-${i}`);
  // Buckets of 5: evt-0..14 forgotten, evt-15..19 and evt-20..22 held.
  assert.equal(ids.size, 8);
  assert.equal(ids.forgotten, 15);
  for (let i = 15; i < 23; i++) assert.equal(ids.seen(`evt-${i}`), true, `evt-${i}`);
  assert.equal(ids.seen("evt-14"), false);
  assert.equal(ids.size, 9);
});

Deno.test("DedupeIds at its bound keeps two tables of at most the power of two over 4/3 of maxIds / 2 slots", () => {
  const ids = new DedupeIds({ maxIds: 20_000 });
  ids.rotateTo(0, 1_000);
  // 10,000 ids a bucket need 13,334 slots at 3/4 full: 16,384 slots of 8 bytes each.
  for (let i = 0; i < 100_000; i++) {
    ids.seen(`evt-${i}`);
    assert.ok(ids.size <= 20_000);
    assert.ok(ids.byteLength <= 2 * 16_384 * 8, `${ids.byteLength} bytes at ${i}`);
  }
  assert.equal(ids.forgotten, 80_000);
});

Deno.test("DedupeIds does not count ids that outlived their time bucket as forgotten", () => {
  const ids = new DedupeIds({ maxIds: 10 });
  ids.rotateTo(0, 1_000);
  for (let i = 0; i < 5; i++) ids.seen(`evt-${i}`);
  ids.rotateTo(2_000, 1_000);
  for (let i = 5; i < 10; i++) ids.seen(`evt-${i}`);
  assert.equal(ids.forgotten, 0);
  assert.equal(ids.seen("evt-0"), false);
});

Deno.test("DedupeIds asks an earlier TTL's buckets until its time is up, and takes them up again when it comes back", () => {
  const ids = new DedupeIds({ maxIds: 1_000 });
  ids.rotateTo(500, 1_000);
  assert.equal(ids.seen("a"), false);
  // Down to 100 ms: "a" is held for the 1,000 ms it was sent under, "b" for 100 ms.
  ids.rotateTo(600, 100);
  assert.equal(ids.seen("a"), true);
  assert.equal(ids.seen("b"), false);
  ids.rotateTo(750, 100);
  assert.deepEqual([ids.seen("a"), ids.seen("b")], [true, true]);
  ids.rotateTo(1_900, 100);
  assert.deepEqual([ids.seen("a"), ids.seen("b")], [true, false]);
  assert.equal(ids.size, 2);
  // Up to 1,000 ms again: its buckets are the current ones, "b" still under 100 ms.
  ids.rotateTo(1_950, 1_000);
  assert.deepEqual([ids.seen("a"), ids.seen("b"), ids.seen("c")], [true, true, false]);
  // 1,000 ms buckets 1 (c) and 2: "a" (bucket 0) and "b" (100 ms bucket 19) are new again.
  ids.rotateTo(2_150, 1_000);
  assert.deepEqual([ids.seen("a"), ids.seen("b"), ids.seen("c")], [false, false, true]);
  ids.rotateTo(3_000, 1_000);
  assert.deepEqual([ids.seen("a"), ids.seen("b"), ids.seen("c")], [true, true, false]);
  assert.equal(ids.forgotten, 0);
});

Deno.test("DedupeIds at its bound forgets an earlier TTL's ids first, and counts them", () => {
  const ids = new DedupeIds({ maxIds: 10 });
  ids.rotateTo(0, 1_000);
  for (let i = 0; i < 4; i++) ids.seen(`old-${i}`);
  ids.rotateTo(10, 500);
  // Held with the 4 old ones: the bucket's 5 minus 4.
  assert.equal(ids.seen("new-0"), false);
  assert.equal(ids.size, 5);
  assert.equal(ids.seen("old-3"), true);
  assert.equal(ids.seen("new-1"), false);
  assert.equal(ids.forgotten, 4);
  assert.equal(ids.seen("old-3"), false);
  assert.equal(ids.seen("new-0"), true);
  assert.ok(ids.size <= 10);
});

Deno.test("DedupeIds refuses a bound below 2", () => {
  assert.throws(
    () => new DedupeIds({ maxIds: 1 }),
    /^RangeError: Dedupe bound must be an integer of at least 2, got 1$/,
  );
});

Deno.test("DedupeIds.seenAll() answers as seen() would, id by id in order", () => {
  fc.assert(fc.property(
    fc.array(
      fc.array(fc.option(fc.constantFrom("a", "b", "c", "d", "e", "f"), { nil: undefined })),
    ),
    fc.integer({ min: 2, max: 6 }),
    (batches, maxIds) => {
      const one = new DedupeIds({ maxIds, seed: 3 });
      const all = new DedupeIds({ maxIds, seed: 3 });
      for (const ids of batches) {
        const expected = ids.map((id) => id !== undefined && one.seen(id) ? 1 : 0);
        assert.deepEqual([...all.seenAll(ids.map((id) => ({ id })))], expected);
      }
      assert.equal(all.size, one.size);
      assert.equal(all.forgotten, one.forgotten);
    },
  ));
});

Deno.test("DedupeIds.seenAll() answers batches of one size in one array, each answer from zeros", () => {
  const ids = new DedupeIds({ maxIds: 100, seed: 1 });
  const first = ids.seenAll([{ id: "a" }, { id: "b" }, { id: "c" }]);
  assert.deepEqual([...first], [0, 0, 0]);
  const second = ids.seenAll([{ id: "a" }, { id: "d" }, { id: "c" }]);
  // No new array per request while the batch size stays: the answer is read before the next call.
  assert.equal(second, first);
  assert.deepEqual([...second], [1, 0, 1]);
  assert.deepEqual([...ids.seenAll([{ id: "e" }, {}, { id: "f" }])], [0, 0, 0]);
  assert.deepEqual([...ids.seenAll([{ id: "e" }, { id: "g" }])], [1, 0]);
});

Deno.test("DedupeIds.seenAll() answers as seen() would across time buckets, with ids and gaps of any batch size", () => {
  fc.assert(fc.property(
    fc.array(fc.record({
      // Times in ms with a ttl of 10: the same bucket, the next one, or a jump past both.
      at: fc.integer({ min: 0, max: 35 }),
      ids: fc.array(fc.option(fc.integer({ min: 0, max: 400 }), { nil: undefined }), {
        maxLength: 300,
      }),
    })),
    fc.integer({ min: 2, max: 600 }),
    (steps, maxIds) => {
      const one = new DedupeIds({ maxIds, seed: 5 });
      const all = new DedupeIds({ maxIds, seed: 5 });
      let now = 0;
      for (const { at, ids } of steps) {
        now += at;
        one.rotateTo(now, 10);
        all.rotateTo(now, 10);
        const texts = ids.map((id) => id === undefined ? undefined : `id-${id}`);
        const expected = texts.map((id) => id !== undefined && one.seen(id) ? 1 : 0);
        assert.deepEqual([...all.seenAll(texts.map((id) => ({ id })))], expected);
        assert.equal(all.size, one.size);
        assert.equal(all.forgotten, one.forgotten);
      }
    },
  ));
});

Deno.test("FingerprintSet made for an expected count holds it without doubling, at most 3/4 full", () => {
  for (const expected of [0, 1, 12, 13, 1_000, 49_152, 49_153]) {
    const set = new FingerprintSet(expected);
    const bytes = set.byteLength;
    const into = new Uint32Array(2);
    for (let i = 0; i < expected; i++) {
      fingerprintInto(`id-${i}`, into);
      set.add(into[0], into[1]);
    }
    assert.equal(set.byteLength, bytes, `${expected}`);
    assert.ok(set.size * 8 * 4 <= set.byteLength * 3);
    // The smallest such table: half of it would be more than 3/4 full (or below 16 slots).
    assert.ok(bytes === 16 * 8 || expected * 8 * 4 > (bytes / 2) * 3, `${expected}: ${bytes}`);
  }
});

Deno.test("DedupeIds sizes a new time bucket for the ids of the one before", () => {
  const ids = new DedupeIds({ maxIds: 1_000_000 });
  ids.rotateTo(0, 1_000);
  for (let i = 0; i < 10_000; i++) ids.seen(`evt-${i}`);
  // 10,000 ids in 16,384 slots, beside the empty previous bucket's 16.
  assert.equal(ids.byteLength, (16_384 + 16) * 8);
  ids.rotateTo(1_000, 1_000);
  // Both tables are sized for 10,000 ids, before the new one holds any.
  assert.equal(ids.byteLength, 2 * 16_384 * 8);
  // The rate drops to 10 ids a bucket: one bucket later the tables are small again.
  for (let i = 0; i < 10; i++) ids.seen(`late-${i}`);
  ids.rotateTo(2_000, 1_000);
  assert.equal(ids.byteLength, (16_384 + 16) * 8);
  ids.rotateTo(3_000, 1_000);
  assert.equal(ids.byteLength, (16 + 16) * 8);
});

/**
 * What DedupeIds promises without its bound, as plain data: an id is a duplicate while the time
 * bucket it was first held in is the current one or the one before (a duplicate does not extend
 * it); the bucket never moves back.
 */
class BucketModel {
  #bucket = 0;
  #heldIn = new Map<string, number>();

  rotateTo(nowMs: number, ttlMs: number): void {
    this.#bucket = Math.max(this.#bucket, Math.floor(nowMs / ttlMs));
  }

  seen(id: string): boolean {
    const heldIn = this.#heldIn.get(id);
    if (heldIn !== undefined && heldIn >= this.#bucket - 1) return true;
    this.#heldIn.set(id, this.#bucket);
    return false;
  }
}

Deno.test("DedupeIds answers as a model of two time buckets over a Map, through steady, rising, falling and idle rates", () => {
  fc.assert(fc.property(
    fc.array(
      fc.record({
        // With a ttl of 10: mostly the next bucket, some in the same one, some jumps past both.
        at: fc.oneof(fc.constant(10), fc.integer({ min: 0, max: 35 })),
        // Ids from a small space, so ids come back one and two buckets later.
        ids: fc.array(fc.integer({ min: 0, max: 3_000 }), { maxLength: 600 }),
      }),
      { maxLength: 30 },
    ),
    (steps) => {
      const ids = new DedupeIds({ maxIds: 1_000_000, seed: 9 });
      const model = new BucketModel();
      let now = 0;
      for (const { at, ids: batch } of steps) {
        now += at;
        ids.rotateTo(now, 10);
        model.rotateTo(now, 10);
        const texts = batch.map((id) => `id-${id}`);
        assert.deepEqual(
          [...ids.seenAll(texts.map((id) => ({ id })))],
          texts.map((id) => model.seen(id) ? 1 : 0),
        );
      }
    },
  ));
});

Deno.test("DedupeIds forgets the ids of a dropped bucket whose table the new bucket reuses", () => {
  const ids = new DedupeIds({ maxIds: 1_000_000 });
  ids.rotateTo(0, 1_000);
  for (let i = 0; i < 10_000; i++) ids.seen(`a-${i}`);
  ids.rotateTo(1_000, 1_000);
  for (let i = 0; i < 10_000; i++) ids.seen(`b-${i}`);
  // The table of bucket 0 (16,384 slots) is the size bucket 2 needs: it is emptied and reused.
  ids.rotateTo(2_000, 1_000);
  assert.equal(ids.byteLength, 2 * 16_384 * 8);
  assert.equal(ids.size, 10_000);
  for (let i = 0; i < 10_000; i++) assert.equal(ids.seen(`a-${i}`), false, `a-${i}`);
  for (let i = 0; i < 10_000; i++) assert.equal(ids.seen(`b-${i}`), true, `b-${i}`);
});

Deno.test("FingerprintSet.clear() empties the set and keeps its table", () => {
  const set = new FingerprintSet(1_000);
  const into = new Uint32Array(2);
  for (let i = 0; i < 1_000; i++) {
    fingerprintInto(`id-${i}`, into);
    set.add(into[0], into[1]);
  }
  const bytes = set.byteLength;
  set.clear();
  assert.equal(set.size, 0);
  assert.equal(set.byteLength, bytes);
  for (let i = 0; i < 1_000; i++) {
    fingerprintInto(`id-${i}`, into);
    assert.equal(set.has(into[0], into[1]), false, `id-${i}`);
    assert.equal(set.add(into[0], into[1]), true, `id-${i}`);
  }
  assert.equal(set.size, 1_000);
});

Deno.test("FingerprintSet with small segments adds, finds, splits and clears like a Set of the pairs", () => {
  const word = fc.oneof(
    fc.integer({ min: 0, max: 0xffffffff }),
    // Few values: runs of fingerprints that share a segment's bits, so splits leave one half full.
    fc.constantFrom(0, 1, 0x80000000, 0xc0000000, 0xffffffff),
  );
  fc.assert(
    fc.property(
      fc.constantFrom(16, 32, 64),
      fc.array(
        fc.oneof(
          { weight: 20, arbitrary: fc.record({ op: fc.constant("add"), high: word, low: word }) },
          { weight: 5, arbitrary: fc.record({ op: fc.constant("has"), high: word, low: word }) },
          { weight: 1, arbitrary: fc.record({ op: fc.constant("clear"), high: word, low: word }) },
        ),
        { maxLength: 2_000 },
      ),
      (segmentSlots, ops) => {
        const set = new FingerprintSet(0, { segmentSlots });
        const model = new Set<string>();
        const key = (high: number, low: number) =>
          high === 0 && low === 0 ? "0,1" : `${high >>> 0},${low >>> 0}`;
        for (const { op, high, low } of ops) {
          if (op === "add") {
            assert.equal(set.add(high, low), !model.has(key(high, low)));
            model.add(key(high, low));
          } else if (op === "has") {
            assert.equal(set.has(high, low), model.has(key(high, low)));
          } else {
            set.clear();
            model.clear();
          }
          assert.equal(set.size, model.size);
          assert.ok(set.size * 8 * 4 <= set.byteLength * 3);
        }
        for (const entry of model) {
          const [high, low] = entry.split(",").map(Number);
          assert.ok(set.has(high, low), entry);
          assert.equal(set.add(high, low), false, entry);
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("FingerprintSet keeps fingerprints that share all 16 bits that choose a segment, and those beside them", () => {
  const set = new FingerprintSet(0, { segmentSlots: 16 });
  // Each split by one more bit leaves them all on one side, until there are no more bits to split
  // by: then their segment doubles.
  for (let i = 1; i <= 1_000; i++) assert.ok(set.add(i, 0x12345678));
  for (let i = 1; i <= 1_000; i++) assert.ok(set.add(i, 0x12355678 + i));
  for (let i = 1; i <= 1_000; i++) {
    assert.ok(set.has(i, 0x12345678), `${i}`);
    assert.ok(set.has(i, 0x12355678 + i), `${i}`);
  }
  assert.equal(set.has(1_001, 0x12345678), false);
  assert.equal(set.size, 2_000);
  assert.ok(set.size * 8 * 4 <= set.byteLength * 3);
});

Deno.test("FingerprintSet grows past one segment by splits, holding every entry at most 3/4 full", () => {
  const set = new FingerprintSet(0, { segmentSlots: 1_024 });
  const into = new Uint32Array(2);
  for (let i = 0; i < 20_000; i++) {
    fingerprintInto(`id-${i}`, into);
    assert.ok(set.add(into[0], into[1]));
    assert.ok(set.size * 8 * 4 <= set.byteLength * 3);
  }
  for (let i = 0; i < 20_000; i++) {
    fingerprintInto(`id-${i}`, into);
    assert.ok(set.has(into[0], into[1]), `id-${i}`);
  }
  fingerprintInto("id-20000", into);
  assert.equal(set.has(into[0], into[1]), false);
  // 20,000 ids in segments of 1,024 slots (768 ids each): 32 to 64 of them.
  assert.ok(
    set.byteLength >= 32 * 1_024 * 8 && set.byteLength <= 64 * 1_024 * 8,
    `${set.byteLength}`,
  );
});

Deno.test("FingerprintSet refuses segments that are not a power of two of at least 16 slots", () => {
  for (const segmentSlots of [8, 24, 0, -16, 16.5]) {
    assert.throws(
      () => new FingerprintSet(0, { segmentSlots }),
      new RegExp(
        `^RangeError: Segment slots must be a power of two of at least 16, got ${segmentSlots}$`,
      ),
    );
  }
});

Deno.test("the README's dedupe memory figures are those of the newest bench:dedupe result", async () => {
  const root = new URL("../../../", import.meta.url);
  const names: string[] = [];
  for await (const entry of Deno.readDir(new URL("bench/results/", root))) {
    if (/^dedupe-.*\.json$/.test(entry.name)) names.push(entry.name);
  }
  const newest = names.sort().at(-1)!;
  const result = JSON.parse(await Deno.readTextFile(new URL(`bench/results/${newest}`, root)));
  const bytesOf = (name: string) =>
    result.rows.find((row: { name: string }) => row.name.startsWith(name)).bytesPerId;
  const readme = (await Deno.readTextFile(new URL("README.md", root))).replace(/\s+/g, " ");
  assert.equal(result.ids, 1_000_000);
  const fingerprints = bytesOf("DedupeIds").toFixed(1);
  const set = Math.round(bytesOf("Set<string>"));
  const fixed = (512 * 1024 / result.ids).toFixed(1);
  assert.ok(
    readme.includes(
      `measures ${fingerprints} at 1,000,000 UUID-like ids, about ${fixed} of it those 512 KiB, against ${set} for the same ids in a \`Set<string>\``,
    ),
    `README: ${fingerprints}, ${fixed}, ${set} (${newest})`,
  );
});
