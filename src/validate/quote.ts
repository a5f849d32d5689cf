/**
 * Client input as messages quote it: shortened, so an error or a log line does not echo a name
 * as long as the request could carry. Here, in the validate stage, because every stage that
 * words an error (validation's own messages too) quotes with it.
 *
 * @module
 */

/** Most characters of client input (a path, a name, a header) a log line or an error message quotes. */
export const MAX_QUOTED_CHARACTERS = 256;

/**
 * `text` as a log line or an error message may quote it: whole up to `max` characters (Unicode
 * code points: an emoji is one, not the two UTF-16 code units of `length`), else its first `max`
 * and how many it has (`aaaa… (60000 characters)`). A client's path, names and headers may be as
 * long as Deno takes: quoted whole, one request writes its input several times into a line and
 * echoes it back.
 *
 * @example
 * ```ts
 * import { quoteInput } from "./quote.ts";
 *
 * quoteInput("orders"); // "orders"
 * quoteInput("a".repeat(300)); // "aaa…a… (300 characters)", 256 a's before the ellipsis
 * ```
 */
export function quoteInput(text: string, max: number = MAX_QUOTED_CHARACTERS): string {
  // No more code units than that: no more characters either.
  if (text.length <= max) return text;
  let characters = 0;
  let end = text.length;
  for (let at = 0; at < text.length; at++) {
    // The low half of a surrogate pair is the character its high half began.
    if (
      (text.charCodeAt(at) & 0xfc00) === 0xdc00 && (text.charCodeAt(at - 1) & 0xfc00) === 0xd800
    ) {
      continue;
    }
    if (characters === max) end = at;
    characters++;
  }
  return characters <= max ? text : `${text.slice(0, end)}… (${characters} characters)`;
}

/** Most names a message lists (`listNames` in telemetry, the unknown keys of a body or event). */
export const MAX_LISTED_NAMES = 10;
