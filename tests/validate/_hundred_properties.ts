/**
 * An event schema whose items are each checked against 100 optional properties, shared by the
 * check budget's unit tests and the HTTP and WebSocket ingest tests of that budget.
 *
 * @module
 */

/** Objects of 100 optional string properties under `items`: each item 100 checks beyond its own. */
export const HUNDRED_PROPERTIES = {
  type: "object",
  properties: {
    items: {
      type: "array",
      items: {
        type: "object",
        properties: Object.fromEntries(
          Array.from({ length: 100 }, (_, index) => [`p${index}`, { type: "string" }]),
        ),
      },
    },
  },
};

/** An event of `count` empty items: `100 × count` checks beyond its `count + 2` values. */
export function emptyItems(count: number): { items: Record<string, never>[] } {
  return { items: Array.from({ length: count }, () => ({})) };
}
