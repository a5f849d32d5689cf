/**
 * The keys a zod schema's object at a path may hold, for a misspelled key's "did you mean" hint:
 * a config file's (`config/`), a request body's (`http/`).
 *
 * @module
 */
import type { z } from "zod";
import { nearestName } from "./nearest.ts";

type Def = z.core.$ZodTypeDef & Record<string, unknown>;

/**
 * The keys the object at `path` of a value `schema` checks may hold; `undefined` where the schema
 * has no one object there (a union's members, a value that is not an object).
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { objectKeysAt } from "./object_keys.ts";
 *
 * const schema = z.object({ items: z.array(z.object({ id: z.string() })).optional() });
 * objectKeysAt(schema, ["items", 0]); // ["id"]
 * ```
 */
export function objectKeysAt(
  schema: z.core.$ZodType,
  path: readonly PropertyKey[],
): string[] | undefined {
  let at = unwrapped(schema);
  for (const step of path) {
    const def = at._zod.def as Def;
    let next: z.core.$ZodType | undefined;
    if (def.type === "object") {
      const shape = def.shape as Record<PropertyKey, z.core.$ZodType>;
      next = Object.hasOwn(shape, step) ? shape[step] : undefined;
    } else if (def.type === "record") next = def.valueType as z.core.$ZodType;
    else if (def.type === "array") next = def.element as z.core.$ZodType;
    if (next === undefined) return undefined;
    at = unwrapped(next);
  }
  const def = at._zod.def as Def;
  return def.type === "object" ? Object.keys(def.shape as object) : undefined;
}

/** `schema` without the wrappers of an optional, defaulted or transformed value. */
function unwrapped(schema: z.core.$ZodType): z.core.$ZodType {
  let at = schema;
  for (;;) {
    const def = at._zod.def as Def;
    if (["optional", "default", "prefault", "nullable", "readonly", "catch"].includes(def.type)) {
      at = def.innerType as z.core.$ZodType;
    } else if (def.type === "pipe") at = def.in as z.core.$ZodType;
    else return at;
  }
}

/**
 * The key of `taken` a misspelled `key` stands for, if one alone is nearest: the same in another
 * case (`groupby`), or fewer edits than half its length away (`windw`, `latenes`).
 */
export function meantKey(key: string, taken: readonly string[]): string | undefined {
  // Not near any (a key twice as long is as many edits away as the name is long): left unmeasured,
  // as a key of a large file may be megabytes long.
  if (taken.every((one) => key.length >= 2 * one.length)) return undefined;
  const within = (one: string) => Math.ceil(one.length / 2) - 1;
  return nearestName(key, taken, { ignoreCase: true, within, unique: true })?.name;
}
