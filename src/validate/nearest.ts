/**
 * The nearest of a few known names to one given, for "did you mean" hints: a misspelled setting
 * at startup (`env.ts`), a misspelled query parameter (`http/query.ts`).
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

/**
 * The name of `names` fewest edits from `name` (the first listed on a tie), and how many;
 * `undefined` when `names` is empty.
 *
 * @example
 * ```ts
 * import { nearestName } from "./nearest.ts";
 *
 * nearestName("limt", ["limit", "cursor"]); // { name: "limit", edits: 1 }
 * ```
 */
export function nearestName(
  name: string,
  names: readonly string[],
): { name: string; edits: number } | undefined {
  let best: { name: string; edits: number } | undefined;
  for (const one of names) {
    const edits = editDistance(name, one);
    if (best === undefined || edits < best.edits) best = { name: one, edits };
  }
  return best;
}
