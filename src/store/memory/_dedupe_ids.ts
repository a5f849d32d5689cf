/**
 * The memory store's dedupe ids, held compactly: a 64-bit fingerprint per id
 * in open-addressing tables of typed arrays (8 bytes a slot, at most 3/4
 * full), so a held id costs 11–21 bytes instead of a string in a `Set` (a new time bucket starts
 * with room for the ids of the one before).
 *
 * @module
 */

const C1 = 0x239b961b;
const C2 = 0xab0e9789;
const C3 = 0x38b34ae5;
const C4 = 0xa1e38b93;

function rotl(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * Writes the 64-bit fingerprint of `text` into `into[0]` (high) and
 * `into[1]` (low): the first two words of MurmurHash3 x86_128 over the
 * text's UTF-16LE code units, which reads the string in place, allocates
 * nothing, and spreads every input bit over both words.
 */
export function fingerprintInto(
  text: string,
  into: Uint32Array,
  options: { seed?: number } = {},
): void {
  const seed = (options.seed ?? 0) >>> 0;
  let h1 = seed;
  let h2 = seed;
  let h3 = seed;
  let h4 = seed;
  const units = text.length;
  let i = 0;
  for (; i + 8 <= units; i += 8) {
    let k1 = text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16);
    let k2 = text.charCodeAt(i + 2) | (text.charCodeAt(i + 3) << 16);
    let k3 = text.charCodeAt(i + 4) | (text.charCodeAt(i + 5) << 16);
    let k4 = text.charCodeAt(i + 6) | (text.charCodeAt(i + 7) << 16);
    k1 = Math.imul(rotl(Math.imul(k1, C1), 15), C2);
    h1 ^= k1;
    h1 = (Math.imul(rotl(h1, 19) + h2, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(rotl(Math.imul(k2, C2), 16), C3);
    h2 ^= k2;
    h2 = (Math.imul(rotl(h2, 17) + h3, 5) + 0x0bcaa747) | 0;
    k3 = Math.imul(rotl(Math.imul(k3, C3), 17), C4);
    h3 ^= k3;
    h3 = (Math.imul(rotl(h3, 15) + h4, 5) + 0x96cd1c35) | 0;
    k4 = Math.imul(rotl(Math.imul(k4, C4), 18), C1);
    h4 ^= k4;
    h4 = (Math.imul(rotl(h4, 13) + h1, 5) + 0x32ac3b17) | 0;
  }
  // The tail: up to 7 code units (14 bytes), as the reference's byte switch.
  const rest = units - i;
  if (rest >= 7) {
    h4 ^= Math.imul(rotl(Math.imul(text.charCodeAt(i + 6), C4), 18), C1);
  }
  if (rest >= 5) {
    const k3 = text.charCodeAt(i + 4) | (rest >= 6 ? text.charCodeAt(i + 5) << 16 : 0);
    h3 ^= Math.imul(rotl(Math.imul(k3, C3), 17), C4);
  }
  if (rest >= 3) {
    const k2 = text.charCodeAt(i + 2) | (rest >= 4 ? text.charCodeAt(i + 3) << 16 : 0);
    h2 ^= Math.imul(rotl(Math.imul(k2, C2), 16), C3);
  }
  if (rest >= 1) {
    const k1 = text.charCodeAt(i) | (rest >= 2 ? text.charCodeAt(i + 1) << 16 : 0);
    h1 ^= Math.imul(rotl(Math.imul(k1, C1), 15), C2);
  }
  const bytes = units * 2;
  h1 ^= bytes;
  h2 ^= bytes;
  h3 ^= bytes;
  h4 ^= bytes;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h3 = fmix(h3);
  h4 = fmix(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  into[0] = h1;
  into[1] = h2;
}

const INITIAL_SLOTS = 16;

/**
 * Most slots of one segment (512 KiB): a larger set splits a full segment in two rather than
 * doubling one table, so growing rehashes 512 KiB at a time instead of every id at once (~130 ms
 * at 2,000,000 ids on the VM), and writes fresh pages (~17 µs each to fault) only for the new half.
 */
export const SEGMENT_SLOTS = 1 << 16;

/** Most bits of a fingerprint's low word that choose its segment (so at most 2^16 segments). */
const MAX_DEPTH = 16;

/**
 * Slots of a new {@linkcode FingerprintSet} with room for `expected` fingerprints. Across several
 * segments they do not spread exactly evenly: filled close to 3/4, one segment may still split.
 */
function slotsFor(expected: number): number {
  let capacity = INITIAL_SLOTS;
  while (expected * 4 > capacity * 3) capacity *= 2;
  return capacity;
}

/** One open-addressing table of a {@linkcode FingerprintSet}. */
interface Segment {
  /** Pairs of words, `(high, low)`; `(0, 0)` is an empty slot. */
  slots: Uint32Array;
  /** Slots − 1 (a power of two − 1): a fingerprint's first slot is `high & mask`. */
  mask: number;
  /** Fingerprints held. */
  size: number;
  /** How many top bits of `low` all of its fingerprints share. */
  depth: number;
}

/**
 * A copy of the segment being split, shared by every set (splitting is synchronous): one
 * 512 KiB array for the process instead of a new one per split.
 */
let scratch: Uint32Array | undefined;

function newSegment(slots: number, depth: number): Segment {
  return { slots: new Uint32Array(slots * 2), mask: slots - 1, size: 0, depth };
}

/** The top `bits` bits of `low` (0 for none: `>>> 32` would shift by nothing). */
function topBits(low: number, bits: number): number {
  return (low >>> 16) >>> (16 - bits);
}

/** Adds a fingerprint known to be absent to a segment with room for it. */
function place(segment: Segment, high: number, low: number): void {
  const slots = segment.slots;
  const mask = segment.mask;
  let slot = high & mask;
  while (slots[slot * 2] !== 0 || slots[slot * 2 + 1] !== 0) slot = (slot + 1) & mask;
  slots[slot * 2] = high;
  slots[slot * 2 + 1] = low;
  segment.size += 1;
}

/** Options for {@linkcode FingerprintSet}. */
export interface FingerprintSetOptions {
  /**
   * Most slots of a segment before it splits rather than doubles (a power of two, at least 16;
   * smaller only to test splits with few fingerprints). @default {65536}
   */
  segmentSlots?: number;
}

/**
 * A set of 64-bit fingerprints (pairs of 32-bit words): segments chosen by the top bits of the
 * low word (extendible hashing), each a linear-probing table in one `Uint32Array`, at most 3/4
 * full. A segment doubles while it is smaller than {@linkcode SEGMENT_SLOTS}, then splits in two
 * by one more bit, so no growth rehashes more than one segment. The all-zero pair marks an empty
 * slot, so it is stored as `(0, 1)`.
 */
export class FingerprintSet {
  /**
   * The directory: 2^depth entries, the segment by the top `depth` bits of `low` (one segment of
   * a lesser depth is named by several).
   */
  #segments: Segment[];
  /**
   * The directory's slot arrays, entry by entry (`#segments[i].slots`): lookups read the array
   * straight from it, its mask from its length, with one dependent load fewer before the slot.
   */
  #tables: Uint32Array[];
  #depth: number;
  /** `16 − #depth`: a fingerprint's directory entry is `(low >>> 16) >>> #shift`. */
  #shift: number;
  #size = 0;
  #bytes = 0;
  #segmentSlots: number;

  /** An empty set with room for `expected` fingerprints before it first grows. */
  constructor(expected = 0, options: FingerprintSetOptions = {}) {
    const segmentSlots = options.segmentSlots ?? SEGMENT_SLOTS;
    if (!(segmentSlots >= INITIAL_SLOTS && Number.isInteger(Math.log2(segmentSlots)))) {
      throw new RangeError(
        `Segment slots must be a power of two of at least ${INITIAL_SLOTS}, got ${segmentSlots}`,
      );
    }
    this.#segmentSlots = segmentSlots;
    const capacity = slotsFor(expected);
    const slots = Math.max(Math.min(capacity, segmentSlots), capacity / 2 ** MAX_DEPTH);
    this.#depth = Math.log2(capacity / slots);
    this.#shift = 16 - this.#depth;
    this.#segments = [];
    for (let i = 0; i < capacity / slots; i++) {
      this.#segments.push(newSegment(slots, this.#depth));
    }
    this.#tables = this.#segments.map((segment) => segment.slots);
    this.#bytes = capacity * 8;
  }

  /** Fingerprints held. */
  get size(): number {
    return this.#size;
  }

  /** Bytes of the slot arrays. */
  get byteLength(): number {
    return this.#bytes;
  }

  /** Empties the set, keeping its slot arrays. */
  clear(): void {
    const segments = this.#segments;
    for (let i = 0; i < segments.length; i += 2 ** (this.#depth - segments[i].depth)) {
      segments[i].slots.fill(0);
      segments[i].size = 0;
    }
    this.#size = 0;
  }

  /** Whether the fingerprint `(high, low)` is held. */
  has(high: number, low: number): boolean {
    high >>>= 0;
    low = (low >>> 0) || (high === 0 ? 1 : 0);
    const slots = this.#tables[(low >>> 16) >>> this.#shift];
    const mask = (slots.length >>> 1) - 1;
    for (let slot = high & mask;; slot = (slot + 1) & mask) {
      const h = slots[slot * 2];
      const l = slots[slot * 2 + 1];
      if (h === high && l === low) return true;
      if (h === 0 && l === 0) return false;
    }
  }

  /** Adds the fingerprint `(high, low)`; false when it was already held. */
  add(high: number, low: number): boolean {
    high >>>= 0;
    low = (low >>> 0) || (high === 0 ? 1 : 0);
    let segment = this.#segments[(low >>> 16) >>> this.#shift];
    // A split may leave this fingerprint's half as full as before (all on one side): again.
    while ((segment.size + 1) * 4 > (segment.mask + 1) * 3) {
      this.#grow(segment, low);
      segment = this.#segments[(low >>> 16) >>> this.#shift];
    }
    const slots = segment.slots;
    const mask = segment.mask;
    for (let slot = high & mask;; slot = (slot + 1) & mask) {
      const h = slots[slot * 2];
      const l = slots[slot * 2 + 1];
      if (h === high && l === low) return false;
      if (h === 0 && l === 0) {
        slots[slot * 2] = high;
        slots[slot * 2 + 1] = low;
        segment.size += 1;
        this.#size += 1;
        return true;
      }
    }
  }

  /**
   * Reads the first slot each of `count` fingerprints (pairs in `prints`) would probe, in a loop
   * of loads independent of each other: the CPU then waits for their cache misses together
   * instead of one after another in the lookups that follow. Returns a value of no meaning, so
   * the loads are not optimised away.
   */
  touch(prints: Uint32Array, count: number): number {
    const tables = this.#tables;
    const shift = this.#shift;
    let sum = 0;
    for (let i = 0; i < count; i++) {
      const slots = tables[(prints[i * 2 + 1] >>> 16) >>> shift];
      sum ^= slots[(prints[i * 2] & ((slots.length >>> 1) - 1)) * 2];
    }
    return sum;
  }

  /** Makes room in `segment`, which holds `low`: doubles it, or splits it in two by one more bit. */
  #grow(segment: Segment, low: number): void {
    const old = segment.slots;
    const slots = segment.mask + 1;
    if (slots < this.#segmentSlots || segment.depth === MAX_DEPTH) {
      segment.slots = new Uint32Array(slots * 4);
      segment.mask = slots * 2 - 1;
      segment.size = 0;
      this.#bytes += slots * 8;
      for (let from = 0; from < old.length; from += 2) {
        if (old[from] !== 0 || old[from + 1] !== 0) place(segment, old[from], old[from + 1]);
      }
      this.#name(segment, low);
      return;
    }
    if (segment.depth === this.#depth) {
      // Every entry of the directory in two: the segments stay, each now named by one more bit.
      const doubled: Segment[] = [];
      for (const each of this.#segments) doubled.push(each, each);
      this.#segments = doubled;
      this.#tables = doubled.map((each) => each.slots);
      this.#depth += 1;
      this.#shift -= 1;
    }
    // The half with the bit clear keeps the segment's array: its pages are in memory already,
    // where a new array's would each fault on first write. Its fingerprints are read from a copy.
    if (scratch === undefined || scratch.length < old.length) scratch = new Uint32Array(old.length);
    const copy = scratch;
    copy.set(old);
    old.fill(0);
    const depth = segment.depth + 1;
    const halves = [{ slots: old, mask: segment.mask, size: 0, depth }, newSegment(slots, depth)];
    const bit = 32 - depth;
    for (let from = 0; from < old.length; from += 2) {
      const l = copy[from + 1];
      if (copy[from] !== 0 || l !== 0) place(halves[(l >>> bit) & 1], copy[from], l);
    }
    this.#name(halves[0], low & ~(1 << bit));
    this.#name(halves[1], low | (1 << bit));
    this.#bytes += slots * 8;
  }

  /**
   * Points the directory entries of `segment` at it: the run of 2^(global − its depth) entries
   * named by the top bits it shares with `low`, a fingerprint of it.
   */
  #name(segment: Segment, low: number): void {
    const run = 2 ** (this.#depth - segment.depth);
    const first = topBits(low, segment.depth) * run;
    for (let i = first; i < first + run; i++) {
      this.#segments[i] = segment;
      this.#tables[i] = segment.slots;
    }
  }
}

/**
 * An empty set with room for `expected` fingerprints: `spare`, emptied, when its table is the
 * size a new one would have, else a new one. In a steady stream each time bucket's table is the
 * size of the one it replaces; reusing it spares writing every page of a new table for the
 * first time, which costs a page fault each (~17 µs a 4 KiB page on a virtual machine: 0.05 µs
 * per id of a table at 2/3 load), and the memory held is the same as with a new one.
 */
function emptySet(spare: FingerprintSet, expected: number): FingerprintSet {
  if (spare.byteLength !== slotsFor(expected) * 8) return new FingerprintSet(expected);
  spare.clear();
  return spare;
}

/** Options for {@linkcode DedupeIds}. */
export interface DedupeIdsOptions {
  /**
   * Most ids held (both buckets together); past it the older bucket is
   * forgotten early, so at least the newest `maxIds / 2` stay. Must be 2 or more.
   */
  maxIds: number;
  /** Fingerprint seed (random per store, so slot clusters cannot be precomputed). @default {0} */
  seed?: number;
}

/**
 * The ids held under a TTL no longer in force: its two time buckets, still asked (never added
 * to) until the newer of them ends, so an id stays a duplicate for the TTL it was sent under.
 */
interface RetiredIds {
  ttlMs: number;
  bucket: number;
  current: FingerprintSet;
  previous: FingerprintSet;
}

/** Moves `ids` to the time bucket of `nowMs`; false when both of its buckets have ended. */
function rotateRetired(ids: RetiredIds, nowMs: number): boolean {
  const bucket = Math.floor(nowMs / ids.ttlMs);
  if (bucket === ids.bucket + 1) {
    ids.previous = ids.current;
    ids.current = new FingerprintSet();
    ids.bucket = bucket;
  } else if (bucket > ids.bucket + 1) return false;
  return ids.previous.size + ids.current.size > 0;
}

/**
 * One stream's dedupe ids in two TTL-wide time buckets (as in the Redis
 * store): an id is a duplicate while it is in either, so it is remembered
 * for at least the TTL and at most twice it, unless the bound forgets it
 * early (counted in {@linkcode DedupeIds.forgotten}).
 *
 * A new TTL starts buckets of its own; those of the TTL before are still asked until their
 * time is up (as if that TTL were still in force), so every id is held for the TTL in force
 * when it was sent, whatever TTL comes after. A TTL that comes back takes its buckets up again.
 */
export class DedupeIds {
  #bucket = 0;
  /** The TTL the buckets are of (0: none yet). */
  #ttlMs = 0;
  #current = new FingerprintSet();
  #previous = new FingerprintSet();
  /** Buckets of earlier TTLs whose time is not up, asked before the current ones. */
  #retired: RetiredIds[] = [];
  /** Ids in `#retired`. */
  #retiredSize = 0;
  #perBucket: number;
  #seed: number;
  #forgotten = 0;
  #fingerprint = new Uint32Array(2);
  /** Fingerprints of the ids of one `seenAll` call, reused between calls. */
  #prints = new Uint32Array(2 * 128);
  /**
   * The answer of one `seenAll` call, reused between calls: a new `Uint8Array` of more than 64
   * bytes has its memory outside V8's heap, allocated and later freed apart, on every request.
   */
  #held = new Uint8Array(0);
  /** Sink of `FingerprintSet.touch`'s meaningless values. */
  #touched = 0;

  constructor(options: DedupeIdsOptions) {
    if (!Number.isSafeInteger(options.maxIds) || options.maxIds < 2) {
      throw new RangeError(`Dedupe bound must be an integer of at least 2, got ${options.maxIds}`);
    }
    this.#perBucket = Math.floor(options.maxIds / 2);
    this.#seed = options.seed ?? 0;
  }

  /** Ids held now. */
  get size(): number {
    return this.#current.size + this.#previous.size + this.#retiredSize;
  }

  /** Ids the bound made this forget before their time bucket ended. */
  get forgotten(): number {
    return this.#forgotten;
  }

  /** Bytes of the tables holding the ids. */
  get byteLength(): number {
    let bytes = this.#current.byteLength + this.#previous.byteLength;
    for (const ids of this.#retired) bytes += ids.current.byteLength + ids.previous.byteLength;
    return bytes;
  }

  /**
   * Moves to the time bucket of `nowMs` for a TTL of `ttlMs`, dropping buckets older than the
   * previous one. Another TTL than the last call's keeps the buckets of that one, asked until
   * their time is up (see the class).
   */
  rotateTo(nowMs: number, ttlMs: number): void {
    if (ttlMs !== this.#ttlMs) this.#changeTtl(nowMs, ttlMs);
    if (this.#retired.length > 0) this.#rotateRetired(nowMs);
    const bucket = Math.floor(nowMs / ttlMs);
    if (bucket === this.#bucket + 1) {
      const dropped = this.#previous;
      this.#previous = this.#current;
      // Sized for as many ids as the bucket before: no doublings in a steady stream.
      this.#current = emptySet(dropped, this.#previous.size);
    } else if (bucket > this.#bucket + 1) {
      this.#previous = new FingerprintSet();
      this.#current = new FingerprintSet();
    }
    if (bucket > this.#bucket) this.#bucket = bucket;
  }

  /** Retires the buckets of the TTL in force and takes up those of `ttlMs` (new, or retired). */
  #changeTtl(nowMs: number, ttlMs: number): void {
    if (this.#ttlMs > 0 && this.#current.size + this.#previous.size > 0) {
      this.#retired.push({
        ttlMs: this.#ttlMs,
        bucket: this.#bucket,
        current: this.#current,
        previous: this.#previous,
      });
    }
    this.#ttlMs = ttlMs;
    // Counts #retiredSize again, the buckets just retired with it.
    this.#rotateRetired(nowMs);
    const again = this.#retired.findIndex((ids) => ids.ttlMs === ttlMs);
    if (again >= 0) {
      const [ids] = this.#retired.splice(again, 1);
      this.#retiredSize -= ids.current.size + ids.previous.size;
      this.#bucket = ids.bucket;
      this.#current = ids.current;
      this.#previous = ids.previous;
    } else {
      this.#bucket = Math.floor(nowMs / ttlMs);
      this.#current = new FingerprintSet();
      this.#previous = new FingerprintSet();
    }
  }

  /** Drops the retired buckets whose time is up. */
  #rotateRetired(nowMs: number): void {
    this.#retired = this.#retired.filter((ids) => rotateRetired(ids, nowMs));
    let size = 0;
    for (const ids of this.#retired) size += ids.current.size + ids.previous.size;
    this.#retiredSize = size;
  }

  /**
   * Whether `id` is held (a duplicate); if not, holds it from now on. A
   * duplicate does not extend an id's life: the older bucket is checked
   * first and a hit there is not copied into the current one.
   */
  seen(id: string): boolean {
    const fingerprint = this.#fingerprint;
    fingerprintInto(id, fingerprint, { seed: this.#seed });
    return this.#seenFingerprint(fingerprint[0], fingerprint[1]);
  }

  /**
   * {@linkcode DedupeIds.seen} for each event's id in order (events without an
   * id are never held): 1 where it is a duplicate, else 0, at the event's index. The array is
   * this set's own and answers the next call too: read it before calling again.
   */
  seenAll(events: readonly { id?: string }[]): Uint8Array {
    const count = events.length;
    // Sized exactly, so a steady batch size reuses it.
    if (this.#held.length !== count) this.#held = new Uint8Array(count);
    const held = this.#held;
    held.fill(0, 0, count);
    if (this.#prints.length < count * 2) this.#prints = new Uint32Array(count * 2);
    const prints = this.#prints;
    const fingerprint = this.#fingerprint;
    const options = { seed: this.#seed };
    let ids = 0;
    for (let i = 0; i < count; i++) {
      const id = events[i].id;
      if (id === undefined) continue;
      fingerprintInto(id, fingerprint, options);
      prints[ids * 2] = fingerprint[0];
      prints[ids * 2 + 1] = fingerprint[1];
      ids += 1;
    }
    if (ids === 0) return held;
    // Every slot the lookups start at is read at once, so their cache misses overlap (see
    // `touch`).
    if (this.#previous.size > 0) this.#touched ^= this.#previous.touch(prints, ids);
    this.#touched ^= this.#current.touch(prints, ids);
    let next = 0;
    for (let i = 0; i < count; i++) {
      if (events[i].id === undefined) continue;
      if (this.#seenFingerprint(prints[next * 2], prints[next * 2 + 1])) held[i] = 1;
      next += 1;
    }
    return held;
  }

  #seenFingerprint(high: number, low: number): boolean {
    if (this.#retiredSize > 0 && this.#heldRetired(high, low)) return true;
    if (this.#previous.size > 0 && this.#previous.has(high, low)) return true;
    if (this.#retiredSize > 0 && this.#current.size + this.#retiredSize >= this.#perBucket) {
      // The bound, with ids of an earlier TTL held: those are forgotten first.
      if (this.#current.has(high, low)) return true;
      this.#forgotten += this.#retiredSize;
      this.#retired = [];
      this.#retiredSize = 0;
    }
    if (this.#current.size >= this.#perBucket) {
      if (this.#current.has(high, low)) return true;
      // The bound: forget the older bucket now rather than grow past it.
      this.#forgotten += this.#previous.size;
      this.#previous = this.#current;
      this.#current = new FingerprintSet();
    }
    return !this.#current.add(high, low);
  }

  /** Whether a retired bucket holds the fingerprint. */
  #heldRetired(high: number, low: number): boolean {
    for (const ids of this.#retired) {
      if (ids.previous.size > 0 && ids.previous.has(high, low)) return true;
      if (ids.current.size > 0 && ids.current.has(high, low)) return true;
    }
    return false;
  }
}
