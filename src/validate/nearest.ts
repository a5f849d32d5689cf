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
  let row = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
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
    const edits = editDistance(given, ignoreCase ? one.toLowerCase() : one);
    if (within !== undefined && edits > within(one)) continue;
    if (best === undefined || edits < best.edits) {
      best = { name: one, edits };
      tied = false;
    } else if (edits === best.edits) tied = true;
  }
  return unique && tied ? undefined : best;
}
