/**
 * A fast verdict for flat event schemas: the stream's JSON Schema compiled by
 * Ajv (to a plain function that allocates nothing for a valid event), used
 * where it is known to agree with the zod schema the rest of validation uses.
 *
 * It only ever says "valid, and zod would return this very event": zod
 * copies each valid event (shape keys first, in schema order, then the other
 * keys), so the event is used as it is only when its keys are already in
 * that order. Every other case — an event Ajv refuses, keys in another
 * order, a schema using a keyword outside the subset below — goes to zod,
 * which gives the verdict and the error messages as before.
 * `tests/validate/_fast_verdict_test.ts` checks it against zod on generated
 * schemas and events.
 *
 * The subset: a top-level `type: "object"` with `properties`, `required`
 * and `additionalProperties` (boolean or a leaf schema), whose properties are
 * leaf schemas: `type` (a primitive type name or a list of them), `enum` and
 * `const` of primitives, `minimum`/`maximum`/`exclusiveMinimum`/
 * `exclusiveMaximum` (numbers), `pattern`, arrays with leaf `items` and
 * `minItems`/`maxItems`, annotations, `{}` and boolean schemas. Left out
 * because zod reads them otherwise (or copies what they match): `format`,
 * `multipleOf`, `default`, nested object schemas, combinators and `$ref`.
 * String lengths (`minLength`/`maxLength`) are left out too, though zod 4
 * and Ajv both count code points (a lone surrogate as one): such a schema
 * gets no fast verdict, so zod alone judges it.
 *
 * @module
 */
import { Ajv } from "ajv";
import { linearRegExpEngine } from "./linear_regexp.ts";

/** A compiled fast verdict: true when zod would accept `event` and return it unchanged. */
export type FastVerdict = (event: Record<string, unknown>) => boolean;

const PRIMITIVE_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
const ANNOTATIONS = new Set(["title", "description", "$comment", "examples"]);

/**
 * Marks the node holding a `format: "date-time"` or `"time"` pattern in a prepared schema: zod's
 * check of it also takes a leap second (`23:59:60Z`), which the pattern refuses. Skipped here:
 * Ajv refuses every `:60` with the pattern, so zod judges those, and both take the rest alike.
 */
export const RFC3339_MARK = "x-edgestream-rfc3339";
const NUMBER_BOUNDS = new Set(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]);

/** Whether `value` is a JSON object (not an array, not null). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPrimitive(value: unknown): boolean {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

/**
 * The Ajv form of a leaf schema, or null when it is outside the subset. An `integer` is bounded to
 * the safe integers, as zod's (Ajv's numbers are finite already, as zod's).
 */
function leafSchema(schema: unknown, allowItems = true): unknown {
  if (typeof schema === "boolean") return schema;
  if (!isPlainObject(schema)) return null;
  const out: Record<string, unknown> = {};
  let limits: Record<string, number> | undefined;
  for (const [key, value] of Object.entries(schema)) {
    if (ANNOTATIONS.has(key) || key === RFC3339_MARK) continue;
    if (key === "type") {
      const types = Array.isArray(value) ? value : [value];
      if (
        types.length === 0 || !types.every((type) => PRIMITIVE_TYPES.has(type) || type === "array")
      ) {
        return null;
      }
      if (types.includes("array") && (types.length > 1 || !allowItems)) return null;
      if (types.includes("integer")) {
        limits = { minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER };
      } else if (types.includes("number")) {
        limits = { minimum: -Number.MAX_VALUE, maximum: Number.MAX_VALUE };
      }
      out.type = value;
    } else if (key === "enum") {
      if (!Array.isArray(value) || value.length === 0 || !value.every(isPrimitive)) return null;
      out.enum = value;
    } else if (key === "const") {
      if (!isPrimitive(value)) return null;
      out.const = value;
    } else if (NUMBER_BOUNDS.has(key)) {
      if (typeof value !== "number") return null;
      out[key] = value;
    } else if (key === "pattern") {
      if (typeof value !== "string") return null;
      out.pattern = value;
    } else if (key === "items" && allowItems) {
      const items = leafSchema(value, false);
      if (items === null) return null;
      out.items = items;
    } else if ((key === "minItems" || key === "maxItems") && allowItems) {
      if (!Number.isSafeInteger(value) || (value as number) < 0) return null;
      out[key] = value;
    } else {
      return null;
    }
  }
  if (out.items !== undefined && out.type !== "array") return null;
  // `allOf` keeps the schema's own bounds as they are.
  return limits ? { ...out, allOf: [limits] } : out;
}

/** The Ajv form of a top-level event schema, or null when it is outside the subset. */
function eventSchema(schema: Record<string, unknown>): Record<string, unknown> | null {
  if (schema.type !== "object") return null;
  const out: Record<string, unknown> = { type: "object" };
  for (const [key, value] of Object.entries(schema)) {
    if (ANNOTATIONS.has(key) || key === "type") continue;
    if (key === "properties") {
      if (!isPlainObject(value)) return null;
      const properties: Record<string, unknown> = {};
      for (const [name, property] of Object.entries(value)) {
        const leaf = leafSchema(property);
        if (leaf === null) return null;
        properties[name] = leaf;
      }
      out.properties = properties;
    } else if (key === "required") {
      if (!Array.isArray(value) || !value.every((name) => typeof name === "string")) return null;
      out.required = value;
    } else if (key === "additionalProperties") {
      const leaf = leafSchema(value);
      if (leaf === null) return null;
      out.additionalProperties = leaf;
    } else {
      return null;
    }
  }
  return out;
}

/** Whether the string keys of `event` come as zod writes them: schema keys in order, then the rest. */
function inSchemaOrder(
  event: Record<string, unknown>,
  keys: readonly string[],
  positions: ReadonlyMap<string, number>,
): boolean {
  let next = 0;
  let extra = false;
  for (const key in event) {
    if (!extra && key === keys[next]) {
      next += 1;
      continue;
    }
    const at = positions.get(key);
    if (at === undefined) {
      extra = true;
      continue;
    }
    if (extra || at < next) return false;
    next = at + 1;
  }
  return true;
}

// Patterns as zod reads them (no `u` flag); unknown keywords refused (the subset is checked
// before), no warnings printed for bounds on schemas of other types (they do not apply there).
function newAjv(): Ajv {
  return new Ajv({
    allErrors: false,
    unicodeRegExp: false,
    // Patterns tested by RE2 in linear time, as zod's (see linear_regexp.ts).
    code: { regExp: linearRegExpEngine },
    strictSchema: true,
    strictTypes: false,
    logger: false,
  });
}

/**
 * Compilations one Ajv makes before the next is made. An Ajv keeps what each compilation put in
 * its code scope (about 4 KB) for as long as it lives, `removeSchema` or not, so one Ajv for the
 * process grew with every stream definition compiled (each `PUT`, each poll that loads a change).
 * An Ajv replaced is collected once no verdict it compiled is in use; a new one costs some
 * milliseconds, so it is not made per compilation.
 */
export const COMPILES_PER_AJV = 64;

let ajv = newAjv();
let compiles = 0;

/**
 * Compiles the fast verdict of a stream's JSON Schema (as given to zod, `required` names already
 * under `properties`), or returns null when the schema is outside the subset or Ajv cannot
 * compile it (then zod alone validates, as before).
 */
export function compileFastVerdict(jsonSchema: Record<string, unknown>): FastVerdict | null {
  const schema = eventSchema(jsonSchema);
  if (schema === null) return null;
  let validate: (data: unknown, context: { instancePath: string }) => boolean;
  if (++compiles > COMPILES_PER_AJV) {
    ajv = newAjv();
    compiles = 1;
  }
  try {
    validate = ajv.compile(schema) as unknown as typeof validate;
  } catch {
    return null;
  } finally {
    // Ajv caches every schema it compiled; streams are redefined at run time.
    ajv.removeSchema(schema);
  }
  const keys = Object.keys((schema.properties ?? {}) as Record<string, unknown>);
  const positions = new Map(keys.map((key, index) => [key, index]));
  // Given, the context is not made (as an empty object) on every call.
  const context = { instancePath: "" };
  return (event) => validate(event, context) && inSchemaOrder(event, keys, positions);
}
