/**
 * The nearest of a few known names to one given, for "did you mean" hints: a misspelled setting
 * at startup (`env.ts`, in any case, the first listed on a tie), a misspelled query parameter
 * (`http/query.ts`, in any case, only when one name alone is nearest and fewer edits than half
 * its length away).
 *
 * @module
 */

/** Edits (insert, delete, replace a character) from `a` to `b`. */
export function editDistance(a: string, b: string): number {
  let row = Uint32Array.from({ length: b.length + 1 }, (_, index) => index);
  let next = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    next[0] = i;
    const char = a.charCodeAt(i - 1);
    for (let j = 1; j <= b.length; j++) {
      const replace = row[j - 1] + (char === b.charCodeAt(j - 1) ? 0 : 1);
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, replace);
    }
    [row, next] = [next, row];
  }
  return row[b.length];
}

/**
 * {@linkcode editDistance} from `a` to `b` if it is at most `bound`, else `undefined`. Only the
 * cells of the table a path of at most `bound` edits can pass through are computed (a cell `j - i`
 * off the diagonal costs that many edits to reach and as many to leave for the corner), and it
 * stops at the first row none of whose cells such a path passes through: a name of a different
 * length, or far from `a`, costs a few rows instead of the whole table.
 */
export function editDistanceWithin(a: string, b: string, bound: number): number | undefined {
  if (Math.abs(a.length - b.length) > bound) return undefined;
  if (bound >= Math.max(a.length, b.length)) {
    const edits = editDistance(a, b);
    return edits <= bound ? edits : undefined;
  }
  // A cell off the band, or past the bound, holds `over`: all that matters is that it is too far.
  const band = Math.floor(bound);
  const over = band + 1;
  const skew = b.length - a.length;
  let row = new Uint32Array(b.length + 1).fill(over);
  let next = new Uint32Array(b.length + 1).fill(over);
  for (let j = 0; j <= Math.min(band, b.length); j++) row[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const low = Math.max(1, i - band, i + skew - band);
    const high = Math.min(b.length, i + band, i + skew + band);
    next[low - 1] = low === 1 && i <= band ? i : over;
    if (high < b.length) next[high + 1] = over;
    // The fewest edits of a path through this row: to a cell, then straight on to the corner.
    let least = next[low - 1] + Math.abs(low - 1 - i - skew);
    const char = a.charCodeAt(i - 1);
    for (let j = low; j <= high; j++) {
      let edits = row[j - 1] + (char === b.charCodeAt(j - 1) ? 0 : 1);
      if (row[j] < edits) edits = row[j] + 1;
      if (next[j - 1] < edits) edits = next[j - 1] + 1;
      if (edits > over) edits = over;
      next[j] = edits;
      const through = edits + Math.abs(j - i - skew);
      if (through < least) least = through;
    }
    if (least > bound) return undefined;
    [row, next] = [next, row];
  }
  return row[b.length] <= bound ? row[b.length] : undefined;
}

/** Options for {@linkcode nearestName}. */
export interface NearestOptions {
  /** Compare in lower case (the name returned is written as listed). @default {false} */
  ignoreCase?: boolean;
  /**
   * The most edits a listed name may be away to be found, given that name: farther ones are
   * left out. @default {Infinity}
   */
  within?: (name: string) => number;
  /** `undefined` when two or more names are nearest, instead of the first listed. @default {false} */
  unique?: boolean;
}

/**
 * The name of `names` fewest edits from `name` (the first listed on a tie, unless `unique`), and
 * how many; `undefined` when none is (`names` empty, or none `within` its edits).
 *
 * @example
 * ```ts
 * import { nearestName } from "./nearest.ts";
 *
 * nearestName("limt", ["limit", "cursor"]); // { name: "limit", edits: 1 }
 * nearestName("LIMT", ["limit"], { ignoreCase: true }); // { name: "limit", edits: 1 }
 * nearestName("ab", ["ax", "xb"], { unique: true }); // undefined: both 1 edit away
 * ```
 */
export function nearestName(
  name: string,
  names: readonly string[],
  options: NearestOptions = {},
): { name: string; edits: number } | undefined {
  const { ignoreCase = false, within, unique = false } = options;
  const given = ignoreCase ? name.toLowerCase() : name;
  let best: { name: string; edits: number } | undefined;
  let tied = false;
  for (const one of names) {
    // Farther than the best so far (by more than a tie), a name changes nothing: it is measured
    // only as far as the nearer of that and its `within`.
    const bound = Math.min(within === undefined ? Infinity : within(one), best?.edits ?? Infinity);
    const other = ignoreCase ? one.toLowerCase() : one;
    const edits = bound === Infinity
      ? editDistance(given, other)
      : editDistanceWithin(given, other, bound);
    if (edits === undefined) continue;
    if (best === undefined || edits < best.edits) {
      best = { name: one, edits };
      tied = false;
    } else if (edits === best.edits) tied = true;
  }
  return unique && tied ? undefined : best;
}
