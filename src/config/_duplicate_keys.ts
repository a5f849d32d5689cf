/**
 * Finds a key an object of a JSON text holds twice. `JSON.parse` keeps the last, so in a config
 * file a stream or counter pasted in again without a new name replaces the first without a word.
 *
 * @module
 */

/** A container being read: an object's keys so far and the key being read, or an array's index. */
type Level =
  | { kind: "object"; keys: Set<string>; key: string | undefined; expectKey: boolean }
  | { kind: "array"; index: number };

/**
 * The path (as `[key, …]`, array positions as numbers) of the first key that an object of `text`
 * holds twice, with that key last; `undefined` when there is none. `text` must be JSON that
 * `JSON.parse` took: it is read once, in linear time, without building the values.
 */
export function duplicateKeyPath(text: string): PropertyKey[] | undefined {
  const levels: Level[] = [];
  /** The path to the value about to be read. */
  const pathHere = (): PropertyKey[] =>
    levels.map((level) => level.kind === "object" ? level.key ?? "" : level.index);
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    const level = levels[levels.length - 1];
    if (char === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      if (level?.kind === "object" && level.expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (level.keys.has(key)) {
          level.key = key;
          return pathHere();
        }
        level.keys.add(key);
        level.key = key;
        level.expectKey = false;
      }
      i = end;
    } else if (char === "{") {
      levels.push({ kind: "object", keys: new Set(), key: undefined, expectKey: true });
    } else if (char === "[") {
      levels.push({ kind: "array", index: 0 });
    } else if (char === "}" || char === "]") {
      levels.pop();
    } else if (char === ",") {
      if (level?.kind === "object") level.expectKey = true;
      else if (level?.kind === "array") level.index++;
    }
  }
  return undefined;
}
