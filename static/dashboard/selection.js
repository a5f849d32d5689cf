/**
 * Which streams get panels, without DOM or network: the page draws a card and the counters of
 * at most a fixed number of streams, chosen by the viewer and kept in the URL's fragment
 * (`#streams=a,b`, never sent to the server), so that a reload or a shared link shows the same.
 * Tested in Deno (tests/static/dashboard/selection_test.ts).
 *
 * @module
 */

/** Streams shown with a card and their counters at once; the rest are only listed. */
export const MAX_SHOWN_STREAMS = 6;

/** Rows the list of streams to choose from draws at once (the chosen ones, then the matches). */
export const MAX_LISTED_STREAMS = 100;

const PREFIX = "#streams=";

/** Names in name order (code units, as instances agree on it whatever their locale). */
export function byName(names) {
  return [...names].sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
}

/**
 * The streams chosen in a URL fragment (`#streams=a,b`, each name percent-encoded), or null
 * when the fragment chooses none (then the page shows its default).
 *
 * @param {string} hash `location.hash`
 * @returns {string[] | null}
 */
export function parseChoice(hash) {
  if (!hash.startsWith(PREFIX)) return null;
  const names = [];
  for (const part of hash.slice(PREFIX.length).split(",")) {
    if (!part) continue;
    try {
      names.push(decodeURIComponent(part));
    } catch {
      // A hand-edited fragment with a stray `%`: that name is skipped.
    }
  }
  return [...new Set(names)];
}

/** The URL fragment that chooses `names`. */
export function choiceHash(names) {
  return PREFIX + names.map((name) => encodeURIComponent(name)).join(",");
}

/**
 * The streams that get panels, in name order: every stream when there are at most `limit`;
 * else the chosen ones that exist (at most `limit`), or the first `limit` by name when nothing
 * is chosen or none of the chosen exists any more. An explicitly empty choice shows none.
 *
 * @param {string[]} names every stream's name
 * @param {string[] | null} chosen from {@linkcode parseChoice}
 * @param {number} limit
 * @returns {string[]}
 */
export function shownStreams(names, chosen, limit = MAX_SHOWN_STREAMS) {
  const sorted = byName(names);
  if (sorted.length <= limit || chosen === null) return sorted.slice(0, limit);
  if (chosen.length === 0) return [];
  const wanted = new Set(chosen);
  const kept = sorted.filter((name) => wanted.has(name)).slice(0, limit);
  return kept.length > 0 ? kept : sorted.slice(0, limit);
}

/**
 * The rows of the list to choose from: the `shown` streams first, then the others whose name
 * contains `filter` (ignoring case), in name order, `max` rows at most; `more` counts the
 * matches left out.
 *
 * @param {string[]} names every stream's name
 * @param {string[]} shown
 * @param {string} filter
 * @param {number} max
 * @returns {{rows: string[], matches: number, more: number}}
 */
export function listedStreams(names, shown, filter, max = MAX_LISTED_STREAMS) {
  const needle = filter.trim().toLowerCase();
  const isShown = new Set(shown);
  const others = byName(names).filter((name) =>
    !isShown.has(name) && name.toLowerCase().includes(needle)
  );
  const room = Math.max(0, max - shown.length);
  return {
    rows: [...shown, ...others.slice(0, room)],
    matches: others.length,
    more: Math.max(0, others.length - room),
  };
}
