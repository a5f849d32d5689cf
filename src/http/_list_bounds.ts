/**
 * Bounds of request lists whose repeats the server removes (a key's and a webhook's `streams`, a
 * key's `origins`): the bound that matters counts different entries, since that is what is
 * stored, so a list naming an entry twice is not refused for it. JSON Schema cannot count
 * different entries, so the API document states that bound in words; its `maxItems` is the raw
 * cap below, which the server applies as written (repeats included).
 *
 * @module
 */
import { z } from "@hono/zod-openapi";

/**
 * Most entries, repeats included, in a list bounded at `different` different entries: four times
 * that bound, room for a client that joins lists without removing repeats, while the work of one
 * request (each entry checked, an origin parsed as a URL) stays bounded by the list rather than
 * only by the 1 MiB body (some 50,000 short entries).
 */
export function rawCapOf(different: number): number {
  return different * 4;
}

/**
 * Most entries, repeats included, in a list of values from a short enumeration (a key's `scopes`,
 * a webhook's `eventTypes`), whose different entries the enumeration already bounds.
 */
export const MAX_ENUM_LIST_ITEMS = 16;

/**
 * How a list's description says its bounds: at most `different` different entries and
 * {@linkcode rawCapOf} that as sent (a list of {@linkcode differentEntries}), or only a `cap` as
 * sent (an enumeration's).
 */
export function repeatsRemoved(bound: { different: number } | { cap: number }): string {
  if ("cap" in bound) return `repeats are removed (at most ${bound.cap} entries, repeats included)`;
  const { different } = bound;
  return `repeats are removed (at most ${different} different; at most ${
    rawCapOf(different)
  } entries, repeats included)`;
}

/**
 * A list of at least one `item`, of at most `max` different entries as `identity` tells them
 * apart (repeats are removed later: the handler stores each entry once) and at most
 * {@linkcode rawCapOf}(`max`) entries as sent. The entries are told apart once per list, and the
 * message names `field` and the number of different entries.
 *
 * @example
 * ```ts
 * import { z } from "@hono/zod-openapi";
 * import { differentEntries } from "./_list_bounds.ts";
 *
 * const streams = differentEntries(z.string(), {
 *   max: 256,
 *   field: "streams",
 *   identity: (name) => name,
 * });
 * streams.parse(["a", "b", "a"]); // at most 256 different: repeats are removed later
 * ```
 */
export function differentEntries<T>(
  item: z.ZodType<T>,
  options: { max: number; field: string; identity: (entry: T) => string },
) {
  const { max, field, identity } = options;
  return z.array(item).min(1).max(rawCapOf(max)).superRefine((entries, context) => {
    const different = new Set(entries.map(identity)).size;
    if (different > max) {
      context.addIssue({
        code: "custom",
        message:
          `Too big: expected at most ${max} different ${field} (repeats are removed), got ${different}`,
      });
    }
  });
}
