/**
 * SipHash-2-4 (Aumasson and Bernstein, 2012) with its 128-bit output, as the
 * reference implementation computes it for `outlen == 16`: a pseudorandom
 * function of short inputs under a secret 128-bit key. The key cache of
 * `auth.ts` names its entries with it: computed in JavaScript, it costs a
 * tenth of a SHA-256 through `node:crypto` (an op call per step).
 *
 * 64-bit words are held as two 32-bit halves, low then high.
 *
 * @module
 */

/** The state v0…v3, each as its low and high half. One, reused: a digest runs synchronously. */
const state = new Uint32Array(8);

/** `rounds` SipRounds over {@linkcode state}. */
function sipRounds(rounds: number): void {
  let v0l = state[0], v0h = state[1], v1l = state[2], v1h = state[3];
  let v2l = state[4], v2h = state[5], v3l = state[6], v3h = state[7];
  let low = 0, swap = 0;
  for (let round = 0; round < rounds; round++) {
    // v0 += v1; v1 = rotl(v1, 13) ^ v0; v0 = rotl(v0, 32)
    low = (v0l + v1l) >>> 0;
    v0h = (v0h + v1h + (low < v0l ? 1 : 0)) >>> 0;
    v0l = low;
    swap = v1h;
    v1h = (((v1h << 13) | (v1l >>> 19)) ^ v0h) >>> 0;
    v1l = (((v1l << 13) | (swap >>> 19)) ^ v0l) >>> 0;
    swap = v0h;
    v0h = v0l;
    v0l = swap;
    // v2 += v3; v3 = rotl(v3, 16) ^ v2
    low = (v2l + v3l) >>> 0;
    v2h = (v2h + v3h + (low < v2l ? 1 : 0)) >>> 0;
    v2l = low;
    swap = v3h;
    v3h = (((v3h << 16) | (v3l >>> 16)) ^ v2h) >>> 0;
    v3l = (((v3l << 16) | (swap >>> 16)) ^ v2l) >>> 0;
    // v0 += v3; v3 = rotl(v3, 21) ^ v0
    low = (v0l + v3l) >>> 0;
    v0h = (v0h + v3h + (low < v0l ? 1 : 0)) >>> 0;
    v0l = low;
    swap = v3h;
    v3h = (((v3h << 21) | (v3l >>> 11)) ^ v0h) >>> 0;
    v3l = (((v3l << 21) | (swap >>> 11)) ^ v0l) >>> 0;
    // v2 += v1; v1 = rotl(v1, 17) ^ v2; v2 = rotl(v2, 32)
    low = (v2l + v1l) >>> 0;
    v2h = (v2h + v1h + (low < v2l ? 1 : 0)) >>> 0;
    v2l = low;
    swap = v1h;
    v1h = (((v1h << 17) | (v1l >>> 15)) ^ v2h) >>> 0;
    v1l = (((v1l << 17) | (swap >>> 15)) ^ v2l) >>> 0;
    swap = v2h;
    v2h = v2l;
    v2l = swap;
  }
  state[0] = v0l;
  state[1] = v0h;
  state[2] = v1l;
  state[3] = v1h;
  state[4] = v2l;
  state[5] = v2h;
  state[6] = v3l;
  state[7] = v3h;
}

/** Takes in one 8-byte word: v3 ^= m, two SipRounds, v0 ^= m. */
function absorb(low: number, high: number): void {
  state[6] ^= low;
  state[7] ^= high;
  sipRounds(2);
  state[0] ^= low;
  state[1] ^= high;
}

/**
 * SipHash-2-4 of the first `length` bytes of `bytes` under `key` (the 16 key bytes as four
 * little-endian 32-bit words), as four little-endian 32-bit words of its 16 output bytes.
 */
export function sipHash128(
  key: Uint32Array,
  bytes: Uint8Array,
  length: number = bytes.length,
): [number, number, number, number] {
  state[0] = 0x70736575 ^ key[0];
  state[1] = 0x736f6d65 ^ key[1];
  state[2] = 0x6e646f6d ^ key[2] ^ 0xee;
  state[3] = 0x646f7261 ^ key[3];
  state[4] = 0x6e657261 ^ key[0];
  state[5] = 0x6c796765 ^ key[1];
  state[6] = 0x79746573 ^ key[2];
  state[7] = 0x74656462 ^ key[3];
  const whole = length - (length % 8);
  for (let i = 0; i < whole; i += 8) {
    absorb(
      bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24),
      bytes[i + 4] | (bytes[i + 5] << 8) | (bytes[i + 6] << 16) | (bytes[i + 7] << 24),
    );
  }
  // The last word: the bytes left, and the length (mod 256) in its top byte.
  let low = 0;
  let high = (length & 0xff) << 24;
  for (let i = whole, shift = 0; i < length; i++, shift += 8) {
    if (shift < 32) low |= bytes[i] << shift;
    else high |= bytes[i] << (shift - 32);
  }
  absorb(low, high);
  state[4] ^= 0xee;
  sipRounds(4);
  const first = (state[0] ^ state[2] ^ state[4] ^ state[6]) >>> 0;
  const second = (state[1] ^ state[3] ^ state[5] ^ state[7]) >>> 0;
  state[2] ^= 0xdd;
  sipRounds(4);
  return [
    first,
    second,
    (state[0] ^ state[2] ^ state[4] ^ state[6]) >>> 0,
    (state[1] ^ state[3] ^ state[5] ^ state[7]) >>> 0,
  ];
}

/** Where texts are laid out as bytes; a longer text gets its own. */
const scratch = new Uint8Array(1024);

/**
 * {@linkcode sipHash128} of `text` as UTF-16LE (two bytes a code unit, so distinct texts are
 * distinct inputs) under `key`, as a string of eight UTF-16 code units: a compact Map key.
 */
export function sipHashText(key: Uint32Array, text: string): string {
  const length = text.length * 2;
  const bytes = length <= scratch.length ? scratch : new Uint8Array(length);
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    bytes[2 * i] = unit & 0xff;
    bytes[2 * i + 1] = unit >>> 8;
  }
  const [a, b, c, d] = sipHash128(key, bytes, length);
  // The text may be a key: its bytes do not stay behind.
  bytes.fill(0, 0, length);
  return String.fromCharCode(
    a & 0xffff,
    a >>> 16,
    b & 0xffff,
    b >>> 16,
    c & 0xffff,
    c >>> 16,
    d & 0xffff,
    d >>> 16,
  );
}
