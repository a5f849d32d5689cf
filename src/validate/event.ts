/**
 * Event validation: structural limits every event must meet whatever its
 * stream (size, depth, no prototype keys), then the stream's own schema.
 *
 * @module
 */
import { z } from "zod";
import { compileFastVerdict, type FastVerdict, RFC3339_MARK } from "./_fast_verdict.ts";
import {
  type CheckCost,
  checkCost,
  definitionsOf,
  eventCheckVerdict,
  MAX_EVENT_SCHEMA_CHECKS,
  MAX_REQUEST_SCHEMA_CHECKS,
  refName,
  RequestCheckBudget,
} from "./_check_budget.ts";
import {
  compileLinearPattern,
  endMatchingBudget,
  PatternBudgetError,
  startMatchingBudget,
  withLinearRegExp,
  withPatternCache,
} from "./linear_regexp.ts";
import { MAX_LISTED_NAMES, quoteInput } from "./quote.ts";
import { endsUtcDay } from "./_leap_second.ts";
import { meantKey } from "./object_keys.ts";

/** One problem with one event, as reported in an ingest reply. */
export interface FieldError {
  /** Dotted path of the bad field; empty for the event as a whole. */
  path: string;
  /** What is wrong, in a sentence. */
  message: string;
}

/** A JSON object event after validation. */
export type Event = Record<string, unknown>;

/** Result of {@linkcode validateEvent}. */
export type Validation =
  | { ok: true; event: Event }
  | { ok: false; errors: FieldError[] };

/** Limits checked by {@linkcode checkEventShape}. */
export interface ShapeLimits {
  /** Deepest nesting of objects and arrays. @default {32} */
  maxDepth?: number;
}

/**
 * Whether `key` is one no event may hold. Compared one by one rather than looked up in a `Set`:
 * keys JSON.parse makes are internalized strings, which compare by address, so this is a few
 * instructions per key where a lookup hashes.
 */
function isForbiddenKey(key: string): boolean {
  return key === "__proto__" || key === "constructor" || key === "prototype";
}

/**
 * Checks what any event must satisfy: a JSON object, nested at most
 * `maxDepth` deep, with no `__proto__`, `constructor` or `prototype` keys
 * (they are how prototype pollution reaches code that copies objects).
 * Recursion stops at `maxDepth`, so a deeply nested event cannot overflow
 * the stack. (An event its schema takes is also refused when it holds a
 * number out of range: see {@linkcode validateEvent}.)
 */
export function checkEventShape(value: unknown, limits: ShapeLimits = {}): FieldError[] {
  const error = shapeError(value, limits.maxDepth ?? 32);
  return error === null ? [] : [error];
}

/**
 * Set by {@linkcode shapeError} when the event holds a number out of range: that is refused
 * only after the schema's own errors (see {@linkcode validated}), and its path found by a second
 * walk, as it is rare ({@linkcode nonFiniteError}).
 */
let sawNonFinite = false;

/** Set by {@linkcode shapeError}: the event's values (itself, each array item, each key's value). */
let eventValues = 0;

/**
 * {@linkcode checkEventShape}'s one error but a number out of range (which sets
 * {@linkcode sawNonFinite}), or null (no list to allocate on the hot path).
 */
function shapeError(value: unknown, maxDepth: number): FieldError | null {
  sawNonFinite = false;
  eventValues = 1;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { path: "", message: `Event must be a JSON object, got ${describe(value)}` };
  }
  return checkNode(value, 1, maxDepth);
}

function checkNode(node: object, depth: number, maxDepth: number): FieldError | null {
  if (depth > maxDepth) {
    return { path: "", message: `Event is nested deeper than ${maxDepth} levels` };
  }
  if (Array.isArray(node)) {
    eventValues += node.length;
    for (let i = 0; i < node.length; i++) {
      const item = node[i];
      if (typeof item === "object" && item !== null) {
        const error = checkNode(item, depth + 1, maxDepth);
        if (error) return prefix(error, String(i));
      } else if (typeof item === "number" && item - item !== 0) sawNonFinite = true;
    }
    return null;
  }
  for (const key in node) {
    eventValues++;
    if (isForbiddenKey(key)) {
      return { path: key, message: `Key '${key}' is not allowed in events` };
    }
    const item = (node as Record<string, unknown>)[key];
    if (typeof item === "object" && item !== null) {
      const error = checkNode(item, depth + 1, maxDepth);
      if (error) return prefix(error, key);
    } else if (typeof item === "number" && item - item !== 0) sawNonFinite = true;
  }
  return null;
}

/** The error of the first number out of range in an event (null: none), naming its path. */
function nonFiniteError(value: unknown): FieldError | null {
  if (typeof value === "number" && !Number.isFinite(value)) {
    return {
      path: "",
      message: "Number is out of range (JSON reads 1e400 as Infinity, which it passes on as null)",
    };
  }
  if (typeof value !== "object" || value === null) return null;
  for (const [key, item] of Object.entries(value)) {
    const error = nonFiniteError(item);
    if (error) return prefix(error, key);
  }
  return null;
}

function prefix(error: FieldError, key: string): FieldError {
  return { path: joinPath(key, error.path), message: error.message };
}

function joinPath(head: string, tail: string): string {
  return tail === "" ? head : `${head}.${tail}`;
}

/** Describes a JSON value's type for error messages. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/** How many levels of JSON objects and arrays a stream's JSON Schema may nest. */
export const MAX_SCHEMA_DEPTH = 128;

/** Whether `value` nests objects and arrays more than `limit` levels deep. Without recursion. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  const pending: [unknown, number][] = [[value, 0]];
  while (pending.length > 0) {
    const [item, depth] = pending.pop()!;
    if (typeof item !== "object" || item === null) continue;
    if (depth + 1 > limit) return true;
    for (const member of Object.values(item)) pending.push([member, depth + 1]);
  }
  return false;
}

/** Error thrown when a stream's JSON Schema cannot be compiled. */
export class SchemaCompileError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SchemaCompileError";
  }
}

/**
 * Compiles a stream's JSON Schema to a zod schema once, at startup. The
 * schema must describe an object; unknown fields are kept unless it forbids
 * them (`additionalProperties: false`).
 */
export function compileEventSchema(
  jsonSchema: Record<string, unknown>,
  options: EventSchemaOptions = {},
): z.ZodType {
  // Each pattern once, though the checks, zod and Ajv each compile it.
  return withPatternCache(() => compileSchemaOnce(jsonSchema, options));
}

function compileSchemaOnce(
  jsonSchema: Record<string, unknown>,
  options: EventSchemaOptions,
): z.ZodType {
  if (jsonSchema.type !== undefined && jsonSchema.type !== "object") {
    throw new SchemaCompileError(
      `Event schema must have type 'object', got ${JSON.stringify(jsonSchema.type)}`,
    );
  }
  // Compiling recurses once a level: a deeper schema could exhaust the stack, or not, depending
  // on what else is on it. Events nest at most 32 levels, a few JSON levels each in a schema.
  if (nestsDeeperThan(jsonSchema, MAX_SCHEMA_DEPTH)) {
    throw new SchemaCompileError(
      `Event schema nests deeper than ${MAX_SCHEMA_DEPTH} levels (objects and arrays)`,
    );
  }
  if (!options.malformedKeywords) {
    const problem = malformedKeyword(jsonSchema);
    if (problem !== undefined) refuse(problem);
  }
  const prepared = prepareEventSchema(jsonSchema, options);
  let schema: z.ZodType;
  try {
    // A schema without `$schema` is read as draft 2020-12, whose `$ref`s point into `$defs`: one
    // with `definitions` only is a draft-07 one (`#/definitions/…`).
    const draft7 = prepared.$defs === undefined && prepared.definitions !== undefined;
    // Its patterns tested by RE2, in linear time (see linear_regexp.ts).
    const marked = uriMarks();
    schema = withLinearRegExp(() =>
      z.fromJSONSchema(
        // deno-lint-ignore no-explicit-any
        prepared as any,
        // deno-lint-ignore no-explicit-any
        { registry: marked as any, ...(draft7 ? { defaultTarget: "draft-7" } : {}) },
      )
    );
    for (const uriSchema of marked.schemas) checkUrisUnchanged(uriSchema);
    for (const timeSchema of marked.times) takesLeapSeconds(timeSchema);
  } catch (error) {
    throw new SchemaCompileError(
      `Cannot compile event schema: ${error instanceof Error ? error.message : error}`,
      { cause: error },
    );
  }
  checkCosts.set(schema, checkCost(prepared));
  if (namesInheritedKey(prepared)) {
    // Ajv reads such names through the prototype as zod does: no fast verdict either.
    ownKeysOnly.add(schema);
    return schema;
  }
  const fast = compileFastVerdict(prepared);
  if (fast !== null) fastVerdicts.set(schema, fast);
  return schema;
}

/**
 * Marks a `format: "uri"` in the schema handed to zod (see {@linkcode forZod}): zod's converter
 * hands the schema it made of a node with a keyword it does not know to its registry's `add`.
 */
const URI_MARK = "x-edgestream-uri";

/**
 * A stand-in for zod's registry that keeps the schemas made of nodes {@linkcode URI_MARK} marks
 * (the converter calls only `add`; other nodes' annotations, `$comment` and the like, go nowhere).
 */
function uriMarks(): {
  schemas: z.ZodType[];
  times: z.ZodType[];
  add(schema: z.ZodType, meta: object): unknown;
} {
  const schemas: z.ZodType[] = [];
  const times: z.ZodType[] = [];
  return {
    schemas,
    times,
    add(schema, meta) {
      if ((meta as Record<string, unknown>)[URI_MARK] === true) schemas.push(schema);
      if ((meta as Record<string, unknown>)[RFC3339_MARK] === true) times.push(schema);
      return this;
    },
  };
}

/**
 * A time of RFC 3339 with seconds `60` (its hour, minute, the `:60` with its index and the offset),
 * ending the text: a leap
 * second when it is the last second of a UTC day, as {@linkcode isLeapSecond} checks.
 */
const LEAP_SECOND_TIME = /(?:^|[Tt])(\d\d):(\d\d)(:60)(?:\.\d+)?(?:[Zz]|([+-])(\d\d):(\d\d))$/d;

/**
 * Whether `value`, which a format's pattern refused, is the same text with a leap second in it
 * (RFC 3339 §5.6 allows `:60`; JSON Schema's test suite takes `1998-12-31T15:59:60.123-08:00` and
 * refuses `22:59:60Z`): seconds `60` at 23:59 UTC once its offset is taken away, and the rest as
 * the pattern takes it (checked with the seconds read as `59`).
 */
function isLeapSecond(value: string, pattern: RegExp): boolean {
  const match = LEAP_SECOND_TIME.exec(value);
  if (match === null) return false;
  const [hour, minute, hours, minutes] = [match[1], match[2], match[5], match[6]].map((part) =>
    Number(part ?? 0)
  );
  const offset = (match[4] === "-" ? -1 : 1) * (hours * 60 + minutes);
  if (!endsUtcDay(hour, minute, offset)) return false;
  // The group is in every match: the `d` flag gives where it begins.
  const at = match.indices![3]![0];
  return pattern.test(`${value.slice(0, at)}:59${value.slice(at + 3)}`);
}

/**
 * Gives the `date-time` and `time` pattern checks of a schema made of a node that
 * {@linkcode RFC3339_MARK} marks (its string schema, a `type` list's member, under a `default`) a
 * check that also takes a leap second: the pattern runs first, and a value it refuses is taken
 * when {@linkcode isLeapSecond}, else given the pattern's issue as before.
 */
function takesLeapSeconds(schema: z.ZodType): void {
  const patterns = new Set(Object.values(RFC3339_FORMATS).map(({ pattern }) => `/${pattern}/`));
  forEachStringCheck(schema, (check) => {
    const checkDef = check._zod.def;
    if (checkDef.format !== "regex" || !patterns.has(String(checkDef.pattern))) return;
    const patternCheck = check._zod.check;
    // deno-lint-ignore no-explicit-any
    check._zod.check = (payload: any) => {
      // The pattern first: most values it takes, and only one it refuses may be a leap second.
      // It has no flags (its text is `/…/`, as matched above): no `g` or `y` whose `lastIndex`
      // would carry over from one test to the next.
      const pattern = checkDef.pattern;
      if (pattern.test(payload.value)) return;
      if (!isLeapSecond(payload.value, pattern)) patternCheck(payload);
    };
  });
}

/**
 * Calls `visit` with each check of each string schema in `schema`: the schema itself and, below
 * it, an `innerType` (a `default`, an optional), both sides of an intersection and a union's
 * options.
 */
// deno-lint-ignore no-explicit-any
function forEachStringCheck(schema: z.ZodType, visit: (check: any) => void): void {
  const pending: unknown[] = [schema];
  while (pending.length > 0) {
    // deno-lint-ignore no-explicit-any
    const def = (pending.pop() as any)?._zod?.def;
    if (def === undefined) continue;
    if (def.type === "string") {
      for (const check of def.checks ?? []) visit(check);
    }
    pending.push(def.innerType, def.left, def.right, ...(def.options ?? []));
  }
}

/**
 * Whitespace anywhere (zod's URL check trims it at either end, and the URL parser strips it there
 * and percent-encodes it inside: `http://a.example/a b` was taken), or a control character (the URL
 * parser deletes tabs and line breaks: `http://exa\nmple.com` is read as `example.com`). RFC 3986
 * allows neither (C1 controls, U+0080 to U+009F, included). Linear.
 */
// deno-lint-ignore no-control-regex
const NOT_IN_URI = /\s|[\x00-\x1f\x7f-\x9f]/;

/** Why a `format: "uri"` value with {@linkcode NOT_IN_URI} is refused. */
export const URI_SPACE_MESSAGE =
  "Invalid URL: a URI has no whitespace and no control character (RFC 3986)";

/**
 * Gives the URL checks of a schema made of a `format: "uri"` node (its string schema, a `type`
 * list's member, under a `default`) a check that never changes the value: zod's trims it and
 * deletes its tabs and line breaks, so `"http://a.example "` passed and was stored trimmed (and
 * in an `allOf`, the trimmed and untrimmed values of its parts were "Unmergable": zod threw).
 * The value is refused instead when it holds {@linkcode NOT_IN_URI}, and otherwise checked as
 * zod does (the URL parser takes it).
 */
function checkUrisUnchanged(schema: z.ZodType): void {
  forEachStringCheck(schema, (check) => {
    if (check._zod.def.format === "url") check._zod.check = uriCheck(check);
  });
}

/** A check for zod's URL check `inst` that refuses what it would trim rather than trim it. */
// deno-lint-ignore no-explicit-any
function uriCheck(inst: unknown): (payload: any) => void {
  // zod's own issue for a URL (its message "Invalid URL" when none is given).
  const issue = (value: string, message?: string) => ({
    code: ZOD_INVALID_FORMAT,
    format: "url",
    input: value,
    inst,
    ...(message === undefined ? {} : { message }),
    continue: true,
  });
  return (payload) => {
    const value = payload.value as string;
    if (NOT_IN_URI.test(value)) payload.issues.push(issue(value, URI_SPACE_MESSAGE));
    else if (!URL.canParse(value)) payload.issues.push(issue(value));
  };
}

/** zod's issue code for a string not of its format (no API error code). */
const ZOD_INVALID_FORMAT = "invalid_format";

/**
 * Names every object inherits (`toString`, `valueOf`, `hasOwnProperty`, …): zod reads a property
 * as `key in event` and `event[key]`, so for an event without such a property it finds the
 * inherited function (an optional typed property refused every event, a required one passed).
 */
const INHERITED_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype));

/** Whether a schema lists an inherited name under `properties` or `required`. Without recursion. */
function namesInheritedKey(schema: unknown): boolean {
  const pending = [schema];
  while (pending.length > 0) {
    const node = pending.pop();
    if (typeof node !== "object" || node === null) continue;
    if (!Array.isArray(node)) {
      const { properties, required } = node as Record<string, unknown>;
      if (typeof properties === "object" && properties !== null) {
        if (Object.keys(properties).some((key) => INHERITED_KEYS.has(key))) return true;
      }
      if (Array.isArray(required) && required.some((key) => INHERITED_KEYS.has(key))) return true;
    }
    for (const value of Object.values(node)) pending.push(value);
  }
  return false;
}

/** Schemas that name an inherited key: zod validates a copy of each event without prototypes. */
const ownKeysOnly = new WeakSet<z.ZodType>();

/** A copy of a JSON value whose objects have no prototype, so only their own keys are seen. */
function withoutPrototypes(value: unknown): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(withoutPrototypes);
  const copy: Record<string, unknown> = Object.create(null);
  for (const key in value) copy[key] = withoutPrototypes((value as Record<string, unknown>)[key]);
  return copy;
}

/** Gives the objects {@linkcode withoutPrototypes} made (zod passes them on) their prototype back. */
function restorePrototypes(value: unknown): void {
  if (typeof value !== "object" || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) restorePrototypes(item);
    return;
  }
  if (Object.getPrototypeOf(value) === null) Object.setPrototypeOf(value, Object.prototype);
  for (const key in value) restorePrototypes((value as Record<string, unknown>)[key]);
}

/**
 * The schema {@linkcode compileEventSchema} hands zod (and the fast verdict): its top level read
 * as an object, whose keywords apply whether or not it says so, then
 * {@linkcode withRequiredProperties} and {@linkcode forZod}.
 */
export function prepareEventSchema(
  jsonSchema: Record<string, unknown>,
  options: EventSchemaOptions = {},
): Record<string, unknown> {
  // A top-level `$ref` names the event's schema: `type` beside it would be a second, open object
  // (checkEventShape makes sure an event is an object anyway).
  const root = jsonSchema.$ref !== undefined && jsonSchema.type === undefined
    ? jsonSchema
    : { ...jsonSchema, type: "object" };
  return withDefsInScope(root, () => {
    refuseRefCycles();
    refuseDeepExpansion(root);
    if (!options.largeExpansion) refuseLargeExpansion(root);
    return forZod(withRequiredProperties(root)) as Record<string, unknown>;
  });
}

/**
 * The schema's `$defs` (and draft-07 `definitions`) while {@linkcode prepareEventSchema} or
 * {@linkcode largeExpansion} runs ({@linkcode withDefsInScope}).
 */
let defsInScope: Record<string, unknown> = Object.create(null);

/** `fn()` with {@linkcode defsInScope} the definitions `root` holds, emptied again after. */
function withDefsInScope<T>(root: Record<string, unknown>, fn: () => T): T {
  defsInScope = definitionsOf(root);
  try {
    return fn();
  } finally {
    defsInScope = Object.create(null);
  }
}

/** The definition a local `$ref` names, if any. */
function refTarget(node: Record<string, unknown>): Record<string, unknown> | undefined {
  if (typeof node.$ref !== "string") return undefined;
  const target = defsInScope[refName(node.$ref)];
  return typeof target === "object" && target !== null
    ? target as Record<string, unknown>
    : undefined;
}

/**
 * Refuses definitions that refer to themselves without a step into a property or item between
 * (`{"$ref": "#/$defs/D"}` in `D`): zod's schema would recurse on the same value until the stack
 * ends, at compile or on every event.
 */
function refuseRefCycles(): void {
  // Each definition is followed once: one whose refs were all followed without a cycle (`done`)
  // is on none, so a second `$ref` to it adds nothing. (Followed again for every `$ref`, a chain
  // of definitions each naming the next twice took time doubling with each one.) Without
  // recursion: a chain of thousands of definitions would end the stack here.
  const done = new Set<string>();
  for (const start of Object.keys(defsInScope)) {
    if (done.has(start)) continue;
    // The definitions being followed, and for each the `$ref`s it has left to follow.
    const path = [start];
    const left = [sameValueRefs(defsInScope[start])];
    while (left.length > 0) {
      const name = left[left.length - 1].shift();
      if (name === undefined) {
        done.add(path.pop()!);
        left.pop();
      } else if (path.includes(name)) {
        refuse(`$ref cycle without a property between: ${[...path, name].join(" → ")}`);
      } else if (!done.has(name)) {
        path.push(name);
        left.push(sameValueRefs(defsInScope[name]));
      }
    }
  }
}

/**
 * One schema's own JSON depth, its JSON objects and arrays, and the depths at which its `$ref`s
 * name definitions.
 */
interface RefScan {
  depth: number;
  nodes: number;
  refs: [at: number, name: string][];
}

/** {@linkcode RefScan} of `node`, without the definitions a root holds (`$defs`, `definitions`). */
function scanRefs(node: unknown, root: boolean): RefScan {
  const scan: RefScan = { depth: 0, nodes: 0, refs: [] };
  const pending: [unknown, number][] = [[node, 1]];
  while (pending.length > 0) {
    const [item, depth] = pending.pop()!;
    if (typeof item !== "object" || item === null) continue;
    scan.depth = Math.max(scan.depth, depth);
    scan.nodes++;
    const schema = item as Record<string, unknown>;
    if (!Array.isArray(item) && typeof schema.$ref === "string") {
      scan.refs.push([depth, refName(schema.$ref)]);
    }
    for (const [key, value] of Object.entries(schema)) {
      if (root && item === node && (key === "$defs" || key === "definitions")) continue;
      pending.push([value, depth + 1]);
    }
  }
  return scan;
}

/**
 * Refuses a schema nesting deeper than {@linkcode MAX_SCHEMA_DEPTH} levels once its `$ref`s are
 * replaced by the definitions they name, as zod expands them, recursing once a level: a chain of
 * definitions, each shallow, would otherwise compile or exhaust the stack depending on what else
 * is on it. A `$ref` back to a definition being expanded is a leaf (zod makes it lazy). Each
 * definition is expanded once, without recursion.
 */
function refuseDeepExpansion(root: Record<string, unknown>): void {
  // Past MAX_EXPANDED_SCHEMA_SIZE expansions (a schema refuseLargeExpansion refuses, unless it is
  // one served as stored), each definition's depth is kept wherever it was first expanded, as
  // before: bounded work, though the verdict may then depend on the order of properties.
  if (!deepExpansion(root, MAX_EXPANDED_SCHEMA_SIZE)) deepExpansion(root, Infinity, true);
}

/**
 * What a walk replacing `$ref`s by their definitions keeps of each definition's expansion (its
 * depth, its size), so that a definition named again is not expanded again, by the rule both
 * {@linkcode deepExpansion} and {@linkcode refuseLargeExpansion} follow. A `$ref` back to a
 * definition being expanded is a leaf, so an expansion depends on which definitions are being
 * expanded around it: a result is kept only when its expansion met no definition being expanded
 * but itself, and reused only where none of the definitions it went through is being expanded.
 * Kept or reused past either, a definition counted with a leaf where it is expanded from
 * elsewhere (or the reverse), and the verdict depended on which property named the definitions
 * first.
 */
class KeptExpansions<T> {
  readonly #kept = new Map<string, { value: T; through: ReadonlySet<string> }>();
  readonly #expanding: ReadonlySet<string>;
  readonly #keepAlways: boolean;

  /**
   * `expanding`: the definitions the walk is expanding, read at each {@linkcode get}.
   * `keepAlways`: keep and reuse every result however it was met (bounded work, though the
   * verdict may then depend on the order of properties).
   */
  constructor(expanding: ReadonlySet<string>, keepAlways: boolean) {
    this.#expanding = expanding;
    this.#keepAlways = keepAlways;
  }

  /** The result kept for `name` that holds where the walk is, with what it went through. */
  get(name: string): { value: T; through: ReadonlySet<string> } | undefined {
    const known = this.#kept.get(name);
    if (known === undefined || this.#keepAlways) return known;
    for (const inner of known.through) if (this.#expanding.has(inner)) return undefined;
    return known;
  }

  /**
   * Keeps `name`'s result, whose expansion went through the definitions `through` and met (not
   * expanded) the definitions being expanded `met`, `name` not among them.
   */
  keep(name: string, value: T, through: ReadonlySet<string>, met: ReadonlySet<string>): void {
    if (this.#keepAlways || met.size === 0) this.#kept.set(name, { value, through });
  }
}

/**
 * {@linkcode refuseDeepExpansion}'s walk: false when it stopped after `maxExpansions` expansions
 * without a verdict. Depths are kept and reused as {@linkcode KeptExpansions} says (`keepAlways`:
 * however they were met).
 */
function deepExpansion(
  root: Record<string, unknown>,
  maxExpansions: number,
  keepAlways = false,
): boolean {
  const expanding = new Set<string>();
  const expanded = new KeptExpansions<number>(expanding, keepAlways);
  let expansions = 0;
  // A definition expanded again (in another context) is not scanned again.
  const scans = new Map<string, RefScan>();
  const scanOf = (name: string, node: unknown) => {
    let scan = scans.get(name);
    if (scan === undefined) scans.set(name, scan = scanRefs(node, false));
    return scan;
  };
  const frame = (name: string | undefined, node: unknown) => ({
    name,
    scan: name === undefined ? scanRefs(node, true) : scanOf(name, node),
    next: 0,
    deepest: 0,
    waitingAt: 0,
    // The definitions being expanded (outer ones) its walk met, not expanded.
    met: new Set<string>(),
    // The definitions its walk expanded, or took a kept depth of.
    through: new Set<string>(),
  });
  const stack = [frame(undefined, root)];
  stack[0].deepest = stack[0].scan.depth;
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.deepest > MAX_SCHEMA_DEPTH) {
      refuse(
        `it nests deeper than ${MAX_SCHEMA_DEPTH} levels (objects and arrays) once its $refs are expanded`,
      );
    }
    if (top.next < top.scan.refs.length) {
      const [at, name] = top.scan.refs[top.next++];
      const target = defsInScope[name];
      if (typeof target !== "object" || target === null) continue;
      if (expanding.has(name)) {
        top.met.add(name);
        continue;
      }
      // A `$ref` replaced by its definition adds the definition's levels below its own place, but
      // one at the top of a schema (a definition that is a `$ref` to another) would add none,
      // while zod still recurses once for it: a chain of thousands such compiled or ended the
      // stack depending on what else was on it. That hop counts one level.
      const hop = at === 1 ? at : at - 1;
      const known = expanded.get(name);
      if (known !== undefined) {
        top.deepest = Math.max(top.deepest, hop + known.value);
        for (const inner of known.through) top.through.add(inner);
        continue;
      }
      if (++expansions > maxExpansions) return false;
      expanding.add(name);
      top.waitingAt = hop;
      const child = frame(name, target);
      child.deepest = child.scan.depth;
      stack.push(child);
      continue;
    }
    stack.pop();
    if (top.name !== undefined) {
      expanding.delete(top.name);
      top.met.delete(top.name);
      top.through.add(top.name);
      expanded.keep(top.name, top.deepest, top.through, top.met);
      const parent = stack[stack.length - 1];
      for (const outer of top.met) parent.met.add(outer);
      for (const inner of top.through) parent.through.add(inner);
      parent.deepest = Math.max(parent.deepest, parent.waitingAt + top.deepest);
    }
  }
  return true;
}

/**
 * Most JSON objects and arrays a schema may hold once its `$ref`s are replaced by the definitions
 * they name (a `$ref` back to a definition being expanded counting 1, as zod makes it lazy).
 * Sizes add up across sibling properties, though a value is checked against one of them: the
 * bound is the total, so it is set well above what a realistic schema holds (a 700-object
 * definition used under 100 properties, 70,000, is taken) and well below the chains that stall:
 * definitions each an `anyOf` of two `$ref`s to the next hold about 5 * 2^levels, so at most 14
 * levels are taken (2^14 leaves for one wrong value, 1/16 of the 2^18 that took 1 s).
 */
export const MAX_EXPANDED_SCHEMA_SIZE = 131_072;

/**
 * Refuses a schema holding more than {@linkcode MAX_EXPANDED_SCHEMA_SIZE} objects and arrays once
 * its `$ref`s are expanded. zod checks a value against every member of an `anyOf`/`oneOf` that
 * applies to it, through the definitions their `$ref`s name, so a chain of 40 definitions, each an
 * `anyOf` of two `$ref`s to the next (3 KB), made one event's wrong value take 2^40 checks,
 * stalling the process; a schema without `$ref`s that fits the 64 KiB body limit holds fewer.
 *
 * Sizes are kept and reused as {@linkcode KeptExpansions} says, so the verdict does not depend on
 * the order of properties. Work stays bounded, though not by the bound itself: each expansion
 * counts at least 1 and stops once its own sum passes the bound, and its caller then stops too, so
 * the walk does at most about the bound times the `$ref` chain's depth, at most 128 levels
 * (checked before).
 */
function refuseLargeExpansion(root: Record<string, unknown>): void {
  const own = new Map<unknown, { count: number; refs: string[] }>();
  const expanding = new Set<string>();
  const sizes = new KeptExpansions<number>(expanding, false);
  /**
   * `node`'s expanded size, the definitions being expanded its walk met (not expanded), and the
   * definitions it expanded or took a kept size of.
   */
  const sizeOf = (node: unknown, isRoot: boolean): [number, Set<string>, Set<string>] => {
    let scan = own.get(node);
    if (scan === undefined) {
      const { nodes, refs } = scanRefs(node, isRoot);
      scan = { count: nodes, refs: refs.map(([, n]) => n) };
      own.set(node, scan);
    }
    let size = scan.count;
    const met = new Set<string>();
    const through = new Set<string>();
    for (const name of scan.refs) {
      const target = defsInScope[name];
      if (typeof target !== "object" || target === null) continue;
      if (expanding.has(name)) {
        met.add(name);
        continue;
      }
      let known = sizes.get(name);
      if (known === undefined) {
        expanding.add(name);
        // Recursion is safe: one level a `$ref` followed, a definition being expanded not followed
        // again, and refuseDeepExpansion (run first) bounds how deep such a chain goes.
        const [counted, inner, innerThrough] = sizeOf(target, false);
        expanding.delete(name);
        inner.delete(name);
        innerThrough.add(name);
        sizes.keep(name, counted, innerThrough, inner);
        for (const outer of inner) met.add(outer);
        known = { value: counted, through: innerThrough };
      }
      for (const inner of known.through) through.add(inner);
      size += known.value;
      if (size > MAX_EXPANDED_SCHEMA_SIZE) break;
    }
    return [size, met, through];
  };
  const [size] = sizeOf(root, true);
  if (size > MAX_EXPANDED_SCHEMA_SIZE) {
    refuse(
      `it holds more than ${MAX_EXPANDED_SCHEMA_SIZE} objects and arrays once its $refs are expanded (each event value is checked against every anyOf/oneOf member that applies to it)`,
    );
  }
}

/** The definitions `node`'s `$ref`s name that check the same value: its own and its combinators'. */
function sameValueRefs(node: unknown): string[] {
  const names: string[] = [];
  const pending = [node];
  while (pending.length > 0) {
    const item = pending.shift();
    if (typeof item !== "object" || item === null) continue;
    const schema = item as Record<string, unknown>;
    if (typeof schema.$ref === "string") names.push(refName(schema.$ref));
    for (const key of COMBINATORS) {
      if (Array.isArray(schema[key])) pending.push(...schema[key] as unknown[]);
    }
  }
  return names;
}

/** Fast verdicts of the schemas {@linkcode compileEventSchema} made (see `_fast_verdict.ts`). */
const fastVerdicts = new WeakMap<z.ZodType, FastVerdict>();

/** What counting an event's checks against each compiled schema needs (see `_check_budget.ts`). */
const checkCosts = new WeakMap<z.ZodType, CheckCost>();

const SCHEMA_MAPS = new Set(["properties", "patternProperties", "$defs", "definitions"]);
const DATA_KEYWORDS = new Set(["enum", "const", "examples", "default"]);

/**
 * Returns a copy of a JSON Schema in which every `required` name is also
 * under `properties` (as `{}` when it was not): zod's converter enforces only
 * required names it finds there, so `{"required": ["id"]}` alone would accept
 * an event without `id`.
 */
export function withRequiredProperties(
  schema: unknown,
  parent?: Record<string, unknown>,
  closedBy?: Record<string, unknown>,
): unknown {
  if (Array.isArray(schema)) return schema.map((item) => withRequiredProperties(item));
  if (typeof schema !== "object" || schema === null) return schema;
  const node = schema as Record<string, unknown>;
  // The nearest closed object this member checks the same value as (see closeLike).
  const closer = parent !== undefined && isClosed(parent) ? parent : closedBy;
  const copy: Record<string, unknown> = {};
  const combinators: string[] = [];
  for (const [key, value] of Object.entries(node)) {
    if (SCHEMA_MAPS.has(key) && typeof value === "object" && value !== null) {
      // Names to schemas: a property may itself be called "enum" or "default".
      copy[key] = Object.fromEntries(
        Object.entries(value).map(([name, item]) => [name, withRequiredProperties(item)]),
      );
    } else if (COMBINATORS.has(key) && Array.isArray(value)) {
      // Its place kept; written below, once this object's other keywords are.
      combinators.push(key);
      copy[key] = value;
    } else if (key === "additionalProperties" && matchesNothing(value)) {
      // `{"not": {}}` is `false`: read as such where closed objects are told apart (isClosed).
      copy[key] = false;
    } else {
      copy[key] = DATA_KEYWORDS.has(key) ? value : withRequiredProperties(value);
    }
  }
  // Members are given this object as written here: what they take of it (its
  // additionalProperties, see closeLike) has its required names listed too, as zod enforces.
  const holder = { ...copy };
  for (const key of combinators) {
    // A member's required names are this object's properties too (see unlistedProperty).
    // A `true` member is `{}`, closed like the others below: as `true` zod let every key through.
    copy[key] = (node[key] as unknown[]).map((item) =>
      withRequiredProperties(item === true ? {} : item, holder, isClosed(holder) ? holder : closer)
    );
  }
  if (Array.isArray(copy.required) && copy.required.every((name) => typeof name === "string")) {
    const properties = { ...(copy.properties as Record<string, unknown> | undefined) };
    for (const name of copy.required as string[]) {
      if (!Object.hasOwn(properties, name)) {
        properties[name] = unlistedProperty(copy, name) ??
          (parent && parentProperty(parent, name)) ??
          {};
      }
    }
    copy.properties = properties;
  }
  if (closer !== undefined) {
    if (copy.additionalProperties === false) {
      // Closed itself, its own patterns still match keys the holder refuses.
      refuseOwnPatterns(copy, closer);
      restrictOwnKeys(copy, closer);
    } else closeLike(copy, closer);
  }
  return copy;
}

/**
 * Gives a combinator's member the holding schema's `additionalProperties`, knowing its properties
 * and patterns too (as `{}`: the holder checks them): the same check as the holder's, so nothing
 * changes in JSON Schema terms, but zod intersects objects so that a key one side allows is
 * allowed, and an open member would let through what the closed holder refuses.
 */
function closeLike(member: Record<string, unknown>, holder: Record<string, unknown>): void {
  if (member.$ref !== undefined) {
    refuse(
      "a $ref in an allOf, anyOf or oneOf member of an object with additionalProperties is not supported: list the properties in the object, or close the definition itself",
    );
  }
  refuseOwnPatterns(member, holder);
  // Keys the holder knows and the member does not: the member's own bound on other keys.
  const ownAdditional = member.additionalProperties;
  const otherKey = ownAdditional === undefined || ownAdditional === true ? {} : ownAdditional;
  const known = (map: unknown) =>
    Object.fromEntries(
      Object.keys((map as Record<string, unknown>) ?? {}).map((key) => [key, otherKey]),
    );
  restrictOwnKeys(member, holder);
  member.properties = { ...known(holder.properties), ...(member.properties as object) };
  if (holder.patternProperties !== undefined) {
    member.patternProperties = {
      ...known(holder.patternProperties),
      ...(member.patternProperties as object),
    };
  }
  // The member's own bound on other keys still holds beside the holder's.
  member.additionalProperties = holder.additionalProperties === false ||
      ownAdditional === undefined || ownAdditional === true
    ? holder.additionalProperties
    : { allOf: [ownAdditional, holder.additionalProperties] };
}

/**
 * Refuses a member's `patternProperties` its closed holder does not have: the keys they match
 * are the holder's additional ones, which zod would let through where the member allows them.
 */
function refuseOwnPatterns(member: Record<string, unknown>, holder: Record<string, unknown>): void {
  const ownPatterns = Object.keys((member.patternProperties as object) ?? {});
  const holderPatterns = Object.keys((holder.patternProperties as object) ?? {});
  if (ownPatterns.some((pattern) => !holderPatterns.includes(pattern))) {
    refuse(
      "patternProperties in an allOf, anyOf or oneOf member of an object with additionalProperties is not supported",
    );
  }
}

/** Whether a schema is `{"not": {}}` (or `{"not": true}`), which no value matches. */
function matchesNothing(schema: unknown): boolean {
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) return false;
  const { not, ...others } = schema as Record<string, unknown>;
  if (Object.keys(others).length > 0) return false;
  return not === true ||
    (typeof not === "object" && not !== null && !Array.isArray(not) &&
      Object.keys(not).length === 0);
}

/** A key only the member lists is still the holder's additional property. */
function restrictOwnKeys(member: Record<string, unknown>, holder: Record<string, unknown>): void {
  const own = { ...(member.properties as Record<string, unknown>) };
  for (const [key, schema] of Object.entries(own)) {
    if (holderKnows(holder, key)) continue;
    own[key] = holder.additionalProperties === false
      ? false
      : { allOf: [schema, holder.additionalProperties] };
  }
  member.properties = own;
}

/** Whether `holder` lists `key` under its properties or patterns. */
function holderKnows(holder: Record<string, unknown>, key: string): boolean {
  const properties = holder.properties as Record<string, unknown> | undefined;
  if (properties && Object.hasOwn(properties, key)) return true;
  return Object.keys((holder.patternProperties as object) ?? {}).some((pattern) =>
    patternMatches(pattern, key)
  );
}

/** A `pattern`, or a `patternProperties` key, of a JSON Schema, found by {@linkcode schemaPatterns}. */
export interface SchemaPattern {
  /** Where it is from the schema's root: `["properties", "sku", "pattern"]`. */
  path: PropertyKey[];
  /** The pattern as written. */
  pattern: string;
}

/**
 * Every `pattern` and `patternProperties` key of a JSON Schema, wherever it stands (to
 * {@linkcode MAX_SCHEMA_DEPTH} levels, past which {@linkcode compileEventSchema} refuses it), in
 * the order written, without compiling any. Without recursion.
 */
export function schemaPatterns(schema: unknown): SchemaPattern[] {
  const found: SchemaPattern[] = [];
  // `map`: a node of names to schemas (`properties`), itself no schema: its `pattern` is a name.
  const pending: Array<[unknown, PropertyKey[], boolean]> = [[schema, [], false]];
  while (pending.length > 0) {
    const [node, path, map] = pending.pop()!;
    // Deeper, the schema is refused before any pattern is compiled: no path copied that long.
    if (typeof node !== "object" || node === null || path.length > MAX_SCHEMA_DEPTH) continue;
    const children: Array<[unknown, PropertyKey[], boolean]> = [];
    if (Array.isArray(node)) {
      node.forEach((item, index) => children.push([item, [...path, index], false]));
    } else if (map) {
      for (const [key, value] of Object.entries(node)) {
        children.push([value, [...path, key], false]);
      }
    } else {
      const record = node as Record<string, unknown>;
      if (typeof record.pattern === "string") {
        found.push({ path: [...path, "pattern"], pattern: record.pattern });
      }
      for (const key of Object.keys(patternMap(record.patternProperties))) {
        found.push({ path: [...path, "patternProperties", key], pattern: key });
      }
      for (const [key, value] of Object.entries(record)) {
        if (!DATA_KEYWORDS.has(key)) children.push([value, [...path, key], SCHEMA_MAPS.has(key)]);
      }
    }
    for (let index = children.length - 1; index >= 0; index--) pending.push(children[index]);
  }
  return found;
}

/** Whether a schema's `pattern` matches `key`; false for one RE2 refuses (zod refuses it later). */
function patternMatches(pattern: string, key: string): boolean {
  try {
    return compileLinearPattern(pattern).test(key);
  } catch {
    return false;
  }
}

/** Whether a schema bounds the keys it does not list (`additionalProperties` other than `true`). */
function isClosed(node: Record<string, unknown>): boolean {
  return node.additionalProperties !== undefined && node.additionalProperties !== true;
}

/** The keywords whose members validate the same value as the schema holding them. */
const COMBINATORS = new Set(["allOf", "anyOf", "oneOf"]);

/** What `parent` (the schema holding a combinator) says of its property `name`, if anything. */
function parentProperty(parent: Record<string, unknown>, name: string): unknown {
  const properties = parent.properties as Record<string, unknown> | undefined;
  if (properties && Object.hasOwn(properties, name)) return properties[name];
  return unlistedProperty(parent, name);
}

/**
 * The schema a property not under `properties` has: that of the `patternProperties` it
 * matches, else `additionalProperties` (a required name escapes neither by being listed);
 * undefined when the schema says nothing of it.
 */
function unlistedProperty(node: Record<string, unknown>, name: string): unknown | undefined {
  const patterns = node.patternProperties;
  if (typeof patterns === "object" && patterns !== null) {
    const matching = Object.entries(patterns).filter(([pattern]) => patternMatches(pattern, name))
      .map(([, schema]) => schema);
    if (matching.length > 0) return matching.length === 1 ? matching[0] : { allOf: matching };
  }
  return node.additionalProperties;
}

/** Keywords that apply to one type of value only (JSON Schema 2020-12 and draft-07). */
const TYPE_KEYWORDS = new Set([
  ...["properties", "required", "additionalProperties", "patternProperties", "propertyNames"],
  ...["minProperties", "maxProperties", "dependentRequired", "dependentSchemas"],
  ...["unevaluatedProperties", "items", "prefixItems", "additionalItems", "contains"],
  ...["minItems", "maxItems", "uniqueItems", "minContains", "maxContains", "unevaluatedItems"],
  ...["pattern", "minLength", "maxLength", "format", "minimum", "maximum", "exclusiveMinimum"],
  ...["exclusiveMaximum", "multipleOf"],
]);
/** Every JSON type (`integer` is a `number`). */
const ALL_TYPES = ["object", "array", "string", "number", "boolean", "null"];
/** Keywords whose value is one subschema, a list of them, or names to them. */
const SUBSCHEMA = new Set([
  ...["additionalProperties", "items", "contains", "not", "if", "then", "else", "propertyNames"],
  ...["unevaluatedProperties", "unevaluatedItems", "additionalItems"],
]);
const SUBSCHEMA_LISTS = new Set(["allOf", "anyOf", "oneOf", "prefixItems", "items"]);
const SUBSCHEMA_MAPS = new Set([...SCHEMA_MAPS, "dependentSchemas"]);
/** Kept on a schema whose checks are split into `allOf` parts: they are not checks. */
const NOT_CHECKS = new Set([
  ...["$schema", "$id", "$anchor", "$comment", "$defs", "definitions", "title", "description"],
  ...["examples", "default", "deprecated"],
]);
/** Annotations zod's converter turns into behaviour (`readOnly` freezes the event): dropped. */
const DROPPED = new Set(["readOnly", "writeOnly"]);
/**
 * Formats accepted and not checked: three zod checks more strictly than the format says (relative
 * references refused), and the standard ones it does not check.
 */
const UNCHECKED_FORMATS = new Set([
  "uri-reference",
  "iri-reference",
  "uri-template",
  // JSON Schema 2020-12's other formats, which zod's converter does not check: a schema written
  // for another validator names them, and refusing them would refuse a standard schema.
  "idn-email",
  "idn-hostname",
  "iri",
  "json-pointer",
  "relative-json-pointer",
  "regex",
]);
/**
 * The formats a schema may name: those zod's converter checks, and {@linkcode UNCHECKED_FORMATS}.
 * It ignores any other, so a misspelt one (`emial`) checked nothing.
 */
const KNOWN_FORMATS = new Set([
  ...["date-time", "date", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uri"],
  ...["uuid", "guid", "mac", "cidr", "cidr-v6", "base64", "base64url", "e164", "credit_card"],
  ...["iban", "jwt", "emoji", "nanoid", "cuid", "cuid2", "ulid", "xid", "ksuid"],
  ...UNCHECKED_FORMATS,
]);
/** A full date of RFC 3339 (its day within its month, February 29th in leap years), as zod's. */
const RFC3339_DATE =
  "(?:(?:\\d\\d[2468][048]|\\d\\d[13579][26]|\\d\\d0[48]|[02468][048]00|[13579][26]00)-02-29|\\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|02-(?:0[1-9]|1\\d|2[0-8])))";
/** A full time of RFC 3339: seconds and an offset, `Z` or `z` for UTC. */
const RFC3339_TIME =
  "(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d+)?(?:[Zz]|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)";
/**
 * The formats zod checks as RFC 3339 but for its note that `T` and `Z` may be lower case (§5.6),
 * which zod refuses: checked by these patterns instead, as zod's but for that. The message of a
 * value that does not match is zod's own (see {@linkcode eventIssueMessage}), not the pattern.
 */
const RFC3339_FORMATS: Readonly<Record<string, { pattern: string; message: string }>> = {
  "date-time": {
    pattern: `^${RFC3339_DATE}[Tt]${RFC3339_TIME}$`,
    message: "Invalid ISO datetime",
  },
  time: { pattern: `^${RFC3339_TIME}$`, message: "Invalid ISO time" },
};
/** The `$ref`s zod's converter resolves as written. */
const LOCAL_REF = /^#\/(\$defs|definitions)\/[^/]+$/;

function refuse(message: string): never {
  throw new SchemaCompileError(`Cannot compile event schema: ${message}`);
}

function patternMap(value: unknown): object {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? value : {};
}

function isPrimitive(value: unknown): boolean {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

/** Keywords whose value is a number (draft-04's boolean `exclusiveMinimum` is not one). */
const NUMBER_KEYWORDS = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
/** Keywords whose value is a count: a whole number, 0 or more. */
const COUNT_KEYWORDS = [
  ...["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"],
  ...["minContains", "maxContains"],
];
/** The names `type` takes. */
const TYPE_NAMES = new Set([...ALL_TYPES, "integer"]);

/** Options for {@linkcode compileEventSchema}. */
export interface EventSchemaOptions {
  /**
   * Compile a keyword whose value is not of its kind as releases before that check did (zod's
   * converter drops some, reads others wrongly): for a schema stored or deployed then. Find it with
   * {@linkcode malformedKeyword}. @default {false: refused, naming its path}
   */
  malformedKeywords?: boolean;
  /**
   * Compile a schema past {@linkcode MAX_EXPANDED_SCHEMA_SIZE} once its `$ref`s are expanded as
   * releases before that check did: for a schema stored or deployed then. Find it with
   * {@linkcode largeExpansion}. @default {false: refused}
   */
  largeExpansion?: boolean;
}

/**
 * Why a schema is past {@linkcode MAX_EXPANDED_SCHEMA_SIZE} once its `$ref`s are expanded, or
 * `undefined` when it is not (or is refused for another reason). Its walk recurses once a `$ref`
 * followed, which is bounded because the `$ref` depth check ({@linkcode prepareEventSchema}'s,
 * at most {@linkcode MAX_SCHEMA_DEPTH} levels expanded) ran on the schema first: every caller
 * passes a compiled stream's schema.
 */
export function largeExpansion(jsonSchema: unknown): string | undefined {
  if (typeof jsonSchema !== "object" || jsonSchema === null || Array.isArray(jsonSchema)) {
    return undefined;
  }
  const root = jsonSchema as Record<string, unknown>;
  return withDefsInScope(root, () => {
    try {
      refuseLargeExpansion(root);
      return undefined;
    } catch (error) {
      if (!(error instanceof SchemaCompileError)) throw error;
      return error.message.replace(/^Cannot compile event schema: /, "");
    }
  });
}

/**
 * The first keyword of a schema whose value is not of the kind JSON Schema gives it
 * (`"minimum": "x"`, `"required": "id"`, `"maxLength": -1`), as `<path>: expected …, got …`, or
 * `undefined` for none. zod's converter drops some such keywords without a word (a bound that is
 * not there), takes others wrongly (every string refused) and fails on the rest with its own
 * internals' messages, so {@linkcode compileEventSchema} refuses them.
 */
export function malformedKeyword(root: unknown): string | undefined {
  try {
    walkKeywords(root);
    return undefined;
  } catch (error) {
    if (error instanceof MalformedKeyword) return error.message;
    throw error;
  }
}

/** The problem {@linkcode walkKeywords} found, ending its walk. */
class MalformedKeyword extends Error {}

/** A keyword's value as a problem shows it: JSON, but `Infinity` (a 1e400) as itself. */
function shown(value: unknown): string {
  return typeof value === "number" ? String(value) : JSON.stringify(value);
}

/** The path and value of the first number out of range in a keyword's data, or `undefined`. */
function nonFiniteValue(value: unknown, path: string): [string, number] | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : [path, value];
  if (typeof value !== "object" || value === null) return undefined;
  for (const [key, item] of Object.entries(value)) {
    const found = nonFiniteValue(item, Array.isArray(value) ? `${path}[${key}]` : `${path}.${key}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** {@linkcode malformedKeyword}'s walk: throws the first problem as a {@linkcode MalformedKeyword}. */
function walkKeywords(root: unknown): void {
  const malformed = (message: string): never => {
    throw new MalformedKeyword(message);
  };
  // The definitions a local `$ref` may name: the root's own (see the `$ref` check below).
  const definitions = new Set<string>();
  if (typeof root === "object" && root !== null) {
    for (const key of ["$defs", "definitions"]) {
      const value = (root as Record<string, unknown>)[key];
      if (typeof value === "object" && value !== null) {
        for (const name of Object.keys(value)) definitions.add(name);
      }
    }
  }
  const pending: Array<[unknown, string]> = [[root, ""]];
  while (pending.length > 0) {
    const [node, path] = pending.pop()!;
    const at = (key: string) => path === "" ? key : `${path}.${key}`;
    if (typeof node === "boolean") continue;
    if (typeof node !== "object" || node === null || Array.isArray(node)) {
      malformed(`${path}: expected a schema (an object or a boolean), got ${shown(node)}`);
    }
    const schema = node as Record<string, unknown>;
    const expect = (key: string, ok: boolean, what: string) => {
      if (!ok) malformed(`${at(key)}: expected ${what}, got ${shown(schema[key])}`);
    };
    for (const key of NUMBER_KEYWORDS) {
      if (key in schema) expect(key, Number.isFinite(schema[key]), "a number");
    }
    if ("multipleOf" in schema) {
      const value = schema.multipleOf;
      expect(
        "multipleOf",
        typeof value === "number" && value > 0 && value < Infinity,
        "a number above 0",
      );
    }
    for (const key of COUNT_KEYWORDS) {
      if (key in schema) {
        const value = schema[key];
        expect(
          key,
          Number.isSafeInteger(value) && (value as number) >= 0,
          "a whole number, 0 or more",
        );
      }
    }
    if ("required" in schema) {
      const value = schema.required;
      expect(
        "required",
        Array.isArray(value) && value.every((name) => typeof name === "string"),
        "an array of property names",
      );
      // No event holds it (refused as an event's key), and zod's object shape cannot name it
      // (`shape.__proto__ = …` sets the prototype), so the requirement vanished: every event passed.
      if ((value as string[]).includes("__proto__")) {
        malformed(`${at("required")}: '__proto__' cannot be required: no event may hold that key`);
      }
    }
    if ("enum" in schema) expect("enum", Array.isArray(schema.enum), "an array of values");
    // A 1e400 in the body is Infinity, which a filled-in default or a compared value would pass
    // on as JSON's null.
    for (const key of DATA_KEYWORDS) {
      if (!(key in schema)) continue;
      const outOfRange = nonFiniteValue(schema[key], at(key));
      if (outOfRange !== undefined) {
        malformed(
          `${outOfRange[0]}: expected a number within the double range, got ${
            shown(outOfRange[1])
          } (JSON reads 1e400 as Infinity, which it writes back as null)`,
        );
      }
    }
    for (const key of ["pattern", "format"]) {
      if (key in schema) expect(key, typeof schema[key] === "string", "a string");
    }
    if ("format" in schema && typeof schema.format === "string") {
      expect(
        "format",
        KNOWN_FORMATS.has(schema.format),
        `a known format (${[...KNOWN_FORMATS].join(", ")})`,
      );
    }
    if ("uniqueItems" in schema) {
      expect("uniqueItems", typeof schema.uniqueItems === "boolean", "true or false");
    }
    if ("type" in schema) {
      const types = Array.isArray(schema.type) ? schema.type : [schema.type];
      expect(
        "type",
        types.length > 0 && types.every((type) => TYPE_NAMES.has(type as string)),
        `one of ${[...TYPE_NAMES].join(", ")}, or an array of them`,
      );
    }
    // zod looks a `$ref`'s name up as `defs[name]`: one the definitions only inherit
    // (`constructor`, `toString`) it finds, a function, which takes any value. (It refuses
    // another missing one.)
    if (typeof schema.$ref === "string" && LOCAL_REF.test(schema.$ref)) {
      const name = refName(schema.$ref);
      if (name in Object.prototype && !definitions.has(name)) {
        malformed(`${at("$ref")}: Reference not found: ${schema.$ref}`);
      }
    }
    for (const key of SUBSCHEMA_MAPS) {
      if (!(key in schema)) continue;
      const value = schema[key];
      expect(
        key,
        typeof value === "object" && value !== null && !Array.isArray(value),
        "an object",
      );
      for (const [name, item] of Object.entries(value as object)) {
        pending.push([item, `${at(key)}.${name}`]);
      }
    }
    for (const key of COMBINATORS) {
      if (!(key in schema)) continue;
      const value = schema[key];
      expect(key, Array.isArray(value) && value.length > 0, "a non-empty array of schemas");
    }
    if ("prefixItems" in schema) {
      expect("prefixItems", Array.isArray(schema.prefixItems), "an array of schemas");
    }
    for (const [key, value] of Object.entries(schema)) {
      if (SUBSCHEMA_LISTS.has(key) && Array.isArray(value)) {
        value.forEach((item, i) => pending.push([item, `${at(key)}[${i}]`]));
      } else if (SUBSCHEMA.has(key)) {
        pending.push([value, at(key)]);
      }
    }
  }
}

/**
 * Returns a copy of a JSON Schema that zod's converter reads as JSON Schema
 * means it, or throws {@linkcode SchemaCompileError} for what it would
 * misread:
 * - a subschema that uses a type's keywords without a `type` lists every
 *   type (the converter reads no `type` as any value and drops the keywords;
 *   with the list it makes a union whose members apply their type's);
 * - checks the converter would let one another replace (`$ref`, `enum` or
 *   `const`, `anyOf`, `oneOf`, `allOf`, and the rest beside them) become
 *   parts of one `allOf`, which it intersects;
 * - `minItems`/`maxItems` get `items: {}`, without which they are dropped;
 * - `readOnly`/`writeOnly` are dropped, and `uri-reference`-like formats are
 *   not checked;
 * - refused: draft-07's `dependencies`, `$dynamicRef`/`$recursiveRef`, a
 *   `$ref` other than `#/$defs/<name>` (or `#/definitions/<name>`), an
 *   `enum` or `const` of objects or arrays, and `additionalProperties` as a
 *   schema beside `patternProperties`.
 */
export function forZod(schema: unknown): unknown {
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) return schema;
  const node = schema as Record<string, unknown>;
  if (node.dependencies !== undefined) {
    refuse("dependencies is not supported (nor are dependentRequired and dependentSchemas)");
  }
  if (node.$dynamicRef !== undefined || node.$recursiveRef !== undefined) {
    refuse("$dynamicRef and $recursiveRef are not supported");
  }
  if (node.$ref !== undefined && (typeof node.$ref !== "string" || !LOCAL_REF.test(node.$ref))) {
    refuse(`$ref '${node.$ref}' is not supported: only #/$defs/<name> (or #/definitions/<name>)`);
  }
  for (const key of ["enum", "const"]) {
    const values = key === "enum" && Array.isArray(node.enum) ? node.enum : [node[key]];
    if (node[key] !== undefined && !values.every(isPrimitive)) {
      refuse(`${key} takes strings, numbers, booleans and null, not objects or arrays`);
    }
  }
  // Checked wherever it stands: one that never applies (on the event object itself, say) is
  // refused as well, as the README says of every pattern RE2 cannot run.
  for (const pattern of [node.pattern, ...Object.keys(patternMap(node.patternProperties))]) {
    if (typeof pattern !== "string") continue;
    try {
      compileLinearPattern(pattern);
    } catch (error) {
      refuse(error instanceof Error ? error.message : String(error));
    }
  }
  if (
    node.patternProperties !== undefined && node.additionalProperties !== undefined &&
    typeof node.additionalProperties !== "boolean"
  ) {
    refuse("additionalProperties as a schema beside patternProperties is not supported");
  }
  const copy: Record<string, unknown> = {};
  let typed = false;
  let formatPart: Record<string, unknown> | undefined;
  for (const [key, value] of Object.entries(node)) {
    if (DROPPED.has(key)) continue;
    if (key === "format" && UNCHECKED_FORMATS.has(value as string)) continue;
    if (key === "format" && value === "uri") copy[URI_MARK] = true;
    if (key === "format" && typeof value === "string" && Object.hasOwn(RFC3339_FORMATS, value)) {
      typed = true;
      const { pattern } = RFC3339_FORMATS[value];
      // Beside the schema's own pattern, in a part of its own (a schema holds one pattern).
      if (node.pattern === undefined) {
        copy.pattern = pattern;
        copy[RFC3339_MARK] = true;
      } else formatPart = { ...forZod({ pattern }) as object, [RFC3339_MARK]: true };
      continue;
    }
    if (TYPE_KEYWORDS.has(key)) typed = true;
    if ((key === "anyOf" || key === "oneOf") && Array.isArray(value)) {
      copy[key] = value.map((item) => takesAnything(item) ? { type: ALL_TYPES } : forZod(item));
    } else if (SUBSCHEMA_LISTS.has(key) && Array.isArray(value)) {
      copy[key] = value.map(forZod);
    } else if (SUBSCHEMA.has(key)) {
      copy[key] = forZod(value);
    } else if (
      SUBSCHEMA_MAPS.has(key) && typeof value === "object" && value !== null &&
      !Array.isArray(value)
    ) {
      // zod's `$ref` lookup takes a definition `false` for none ("Reference not found"): it is
      // given as the schema that nothing passes, which zod reads.
      const definitions = key === "$defs" || key === "definitions";
      copy[key] = Object.fromEntries(
        Object.entries(value).map(([name, item]) => [
          name,
          definitions && item === false ? { not: {} } : forZod(item),
        ]),
      );
    } else {
      copy[key] = value;
    }
  }
  if (formatPart !== undefined) {
    copy.allOf = [...(Array.isArray(copy.allOf) ? copy.allOf : []), formatPart];
  }
  if ((copy.minItems !== undefined || copy.maxItems !== undefined) && copy.items === undefined) {
    if (copy.prefixItems === undefined) copy.items = {};
  }
  return splitChecks(copy, typed);
}

/**
 * Whether a schema takes any value (`true`, `{}`, annotations only). In an `anyOf` or `oneOf` it
 * is written as every type instead: zod's `any` for it counts as optional, and a union holding it
 * and an object guard (`minProperties`, `maxProperties`, `propertyNames`, which zod also counts so)
 * made a required field whose schema it is optional.
 */
function takesAnything(schema: unknown): boolean {
  if (schema === true) return true;
  return typeof schema === "object" && schema !== null && !Array.isArray(schema) &&
    Object.keys(schema).every((key) => ANNOTATIONS.has(key));
}

/** Keywords that neither check nor change a value. */
const ANNOTATIONS = new Set(["title", "description", "$comment", "examples", "deprecated"]);

/** Why a closed combinator member beside other checks of its object is refused. */
const CLOSED_MEMBER_BESIDE_CHECKS =
  "additionalProperties: false in an allOf, anyOf or oneOf member beside other checks of the same object is not supported: move those checks into the members";

/** {@linkcode forZod}'s `allOf` of the checks zod would let replace one another. */
function splitChecks(node: Record<string, unknown>, typed: boolean): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  const parts: Record<string, unknown>[] = [];
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (NOT_CHECKS.has(key)) kept[key] = value;
    else if (key === "$ref" || key === "enum" || key === "const") parts.push({ [key]: value });
    else if (key === "anyOf" || key === "oneOf") parts.push({ [key]: value });
    else if (key === "allOf" && Array.isArray(value)) parts.push(...value);
    else rest[key] = value;
  }
  if (typed && rest.type === undefined) rest.type = ALL_TYPES;
  if (parts.length === 0) return { ...kept, ...rest };
  // zod intersects the parts too: beside another part, a closed one would let through the keys
  // the other allows (an object closed itself has its members closed alike, see closeLike).
  if (
    rest.additionalProperties !== false && parts.length > 1 &&
    parts.some((part) => closesObject(part))
  ) {
    refuse(CLOSED_MEMBER_BESIDE_CHECKS);
  }
  // zod intersects objects so that a key one part allows is allowed, whatever another part's
  // `additionalProperties: false` says: a lone `type` goes into the parts instead of beside them.
  const onlyType = rest.type !== undefined && Object.keys(rest).length === 1;
  // A `$ref` whose definition has a type within this one needs no `type` beside it.
  const implied = (part: Record<string, unknown>) => {
    const target = refTarget(part);
    return target?.type !== undefined && typeWithin(target.type, rest.type);
  };
  if (onlyType && parts.every((part) => part.$ref === undefined || implied(part))) {
    const typedParts = parts.map((part) =>
      part.$ref === undefined ? withType(part, rest.type) : part
    );
    return typedParts.length === 1
      ? { ...kept, ...typedParts[0] }
      : { ...kept, allOf: typedParts.map(keepingKeyChecks) };
  }
  const restChecks = Object.keys(rest).length > 0;
  // A closed member beside an open object, or beside a closed one whose properties it does not
  // all list (withRequiredProperties closes the members of a closed object so).
  // (An `additionalProperties` schema lets zod's object know every key, as an open one does.)
  const keys = rest.additionalProperties === false
    ? Object.keys((rest.properties as object) ?? {})
    : undefined;
  if (restChecks && parts.some((part) => closesObject(part, keys))) {
    refuse(CLOSED_MEMBER_BESIDE_CHECKS);
  }
  // A lone `false` (an `allOf: [false]`) spread would be `{}`, which takes any value.
  if (parts.length === 1 && !restChecks) {
    return { ...kept, ...((parts[0] as unknown) === false ? { not: {} } : parts[0]) };
  }
  return { ...kept, allOf: (restChecks ? [rest, ...parts] : parts).map(keepingKeyChecks) };
}

/**
 * An `allOf` part whose `propertyNames` zod keeps: it reports a key one side of an intersection
 * refuses only when the other side refuses it too, so a key name the part refuses passed beside
 * any part that takes it. In a union of two (the other `false`, which takes nothing), the part's
 * refusal is the union's, which the intersection keeps. (A union of one is the part itself.)
 */
function keepingKeyChecks(part: unknown): unknown {
  return checksKeyNames(part) ? { anyOf: [part, false] } : part;
}

/** Whether a schema, a definition it refers to or a member of its combinators has `propertyNames`. */
function checksKeyNames(part: unknown, seen = new Set<unknown>()): boolean {
  if (typeof part !== "object" || part === null) return false;
  const node = part as Record<string, unknown>;
  if (node.propertyNames !== undefined && node.propertyNames !== true) return true;
  const target = refTarget(node);
  if (target && !seen.has(target)) {
    seen.add(target);
    if (checksKeyNames(target, seen)) return true;
  }
  return [...COMBINATORS].some((key) =>
    Array.isArray(node[key]) &&
    (node[key] as unknown[]).some((member) => checksKeyNames(member, seen))
  );
}

/**
 * Whether a part, a definition it refers to, or a member of its combinators, forbids the keys it
 * does not list (`additionalProperties: false`) — without listing all of `keys`, when given.
 */
function closesObject(
  part: Record<string, unknown>,
  keys?: string[],
  seen = new Set<unknown>(),
): boolean {
  if (part.additionalProperties === false) {
    const listed = (part.properties as Record<string, unknown>) ?? {};
    if (keys === undefined || !keys.every((key) => Object.hasOwn(listed, key))) return true;
  }
  const target = refTarget(part);
  if (target && !seen.has(target)) {
    seen.add(target);
    if (closesObject(target, keys, seen)) return true;
  }
  return [...COMBINATORS].some((key) =>
    Array.isArray(part[key]) &&
    (part[key] as unknown[]).some((member) =>
      typeof member === "object" && member !== null &&
      closesObject(member as Record<string, unknown>, keys, seen)
    )
  );
}

/** Whether every type of `inner` is one of `outer` (`integer` within `number`). */
function typeWithin(inner: unknown, outer: unknown): boolean {
  return typesOf(inner).every((type) =>
    typesOf(outer).includes(type) || (type === "integer" && typesOf(outer).includes("number"))
  );
}

/** The types of a `type` value, `integer` within `number`. */
function typesOf(type: unknown): string[] {
  return Array.isArray(type) ? type : [type as string];
}

/** `part` and `type` together, `type` pushed into its anyOf or oneOf members. */
function withType(part: unknown, type: unknown): Record<string, unknown> {
  if (part === true) return { type };
  if (typeof part !== "object" || part === null) return { not: {} };
  const node = part as Record<string, unknown>;
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(node[key])) {
      return { ...node, [key]: (node[key] as unknown[]).map((member) => withType(member, type)) };
    }
  }
  // A lone `$ref` to a closed definition: beside an open `{type}` (an object zod reads as knowing
  // every key) it would let through the keys it refuses. Typed within `type`, it needs none;
  // else the type's part is closed alike.
  if (node.$ref !== undefined && Object.keys(node).length === 1) {
    const target = refTarget(node);
    if (target?.type !== undefined && typeWithin(target.type, type)) return node;
    if (target?.additionalProperties === false) {
      const typePart: Record<string, unknown> = { type };
      closeLike(typePart, target);
      return { allOf: [typePart, node] };
    }
  }
  // zod reads a `type` beside these as if it were not there.
  if (["$ref", "allOf", "enum", "const"].some((key) => node[key] !== undefined)) {
    return { allOf: [{ type }, node] };
  }
  if (node.type === undefined) return { ...node, type };
  const wanted = typesOf(type);
  const both = typesOf(node.type).filter((item) =>
    wanted.includes(item) || (item === "integer" && wanted.includes("number"))
  ).concat(
    typesOf(node.type).includes("number") && wanted.includes("integer") ? ["integer"] : [],
  );
  return { ...node, type: both.length === 1 ? both[0] : both };
}

/**
 * zod's issues of `event` as its errors, in order: a union member's own issues when only one
 * member took the value's type (a `type` list's union), else the issue. Past `maxErrors` of them,
 * one more entry says how many more there are (`and N more errors not listed`), and those are
 * counted, not worded: an event with an error in each of thousands of array items has only those
 * it lists quoted and worded.
 */
function eventErrors(
  issues: readonly z.core.$ZodIssue[],
  event: unknown,
  maxErrors: number,
): FieldError[] {
  const errors: FieldError[] = [];
  let count = 0;
  // Without recursion, in order: each entry an issue and the path of its parent.
  const pending: [z.core.$ZodIssue, PropertyKey[]][] = [];
  for (let index = issues.length - 1; index >= 0; index--) pending.push([issues[index], []]);
  while (pending.length > 0) {
    const [issue, at] = pending.pop()!;
    if (issue.code === "invalid_union") {
      const typed = issue.errors.filter((members) =>
        !members.every((inner) => inner.code === "invalid_type" && inner.path.length === 0)
      );
      if (typed.length === 1) {
        const path = [...at, ...issue.path];
        for (let index = typed[0].length - 1; index >= 0; index--) {
          pending.push([typed[0][index], path]);
        }
        continue;
      }
    }
    count += 1;
    if (errors.length >= maxErrors) continue;
    // A key in the path quoted shortened, as the message quotes one.
    const shown = [...at, ...issue.path].map((key) => quoteInput(String(key))).join(".");
    errors.push({ path: shown, message: eventIssueMessage(issue, event, at) });
  }
  if (count > errors.length) errors.push(notListed(count - errors.length));
  return errors;
}

/** The entry that ends a list of an event's errors cut short: how many more it has (1 or more). */
export function notListed(count: number): FieldError {
  return { path: "", message: `and ${count} more ${count === 1 ? "error" : "errors"} not listed` };
}

/**
 * `errors` as an answer lists an event's errors: all of them when there are at most `max`
 * (`errors` itself), else the first `max` and then {@linkcode notListed} with how many more. A
 * validator with `maxErrors` ends its lists so too, counting the rest without wording them.
 */
export function listedErrors(errors: FieldError[], max: number): FieldError[] {
  return errors.length <= max ? errors : [...errors.slice(0, max), notListed(errors.length - max)];
}

/**
 * zod's words for keys an object may not hold, each quoted shortened and at most
 * {@linkcode MAX_LISTED_NAMES} of them: zod writes every key whole, and one key of a 1 MiB body
 * may be almost that long. `taken`: the keys the object may hold; the one a misspelled key stands
 * for ({@linkcode meantKey}), if any, is said after it: `Unrecognized key: "groupby" (did you
 * mean "groupBy"?)`.
 */
export function unrecognizedKeys(keys: readonly string[], taken: readonly string[] = []): string {
  const shown = keys.slice(0, MAX_LISTED_NAMES).map((key) => {
    const near = meantKey(key, taken);
    const hint = near === undefined ? "" : ` (did you mean "${quoteInput(near)}"?)`;
    return `"${quoteInput(key)}"${hint}`;
  }).join(", ");
  const more = keys.length > MAX_LISTED_NAMES
    ? ` … and ${keys.length - MAX_LISTED_NAMES} more`
    : "";
  return `Unrecognized key${keys.length === 1 ? "" : "s"}: ${shown}${more}`;
}

/**
 * The message of zod's issue for `event`, in JSON Schema's words: a field
 * the event lacks is said to be missing, with what it should have been
 * (zod says "expected nonoptional", or names the enum as if a value were
 * wrong); a value no member of a `type` list takes names the list (zod says
 * "Invalid input"); zod's `int` is an `integer`. `at`: the path of the
 * issue's parent, when it is a union member's. The API's request checks
 * (bodies, queries: the app's `defaultHook`) word their issues the same way.
 */
export function eventIssueMessage(
  issue: z.core.$ZodIssue,
  event: unknown,
  at: readonly PropertyKey[] = [],
): string {
  const field = fieldAt(event, [...at, ...issue.path]);
  if (field.missing) {
    const wanted = wantedBy(issue);
    return wanted.length === 0
      ? "Required field is missing"
      : `Required field is missing (expected ${wanted.join(" or ")})`;
  }
  if (issue.code === "invalid_format" && issue.format === "regex") {
    // zod names the pattern as a regular expression literal.
    const format = Object.values(RFC3339_FORMATS).find(({ pattern }) =>
      `/${pattern}/` === issue.pattern
    );
    if (format !== undefined) return format.message;
  }
  if (issue.code === "unrecognized_keys") return unrecognizedKeys(issue.keys);
  // zod says only "Invalid key in record": which rule of `propertyNames` the key breaks.
  if (issue.code === "invalid_key") {
    // Each inner issue is about the key itself: worded by the same rules, with the key as the value.
    const key = issue.path.at(-1);
    const why = issue.issues.map((inner) => eventIssueMessage(inner, key)).join("; ");
    return `Key breaks the schema's propertyNames: ${why}`;
  }
  // A subschema `false` (or `{"not": {}}`): zod says "expected never".
  if (issue.code === "invalid_type" && issue.expected === "never") {
    return `Not allowed: the schema takes no value here, received ${jsonType(field.value)}`;
  }
  if (issue.code === "invalid_type" && issue.expected === "int") {
    return issue.message.replace("expected int,", "expected integer,");
  }
  if (issue.code === "invalid_union" && issue.errors.every((branch) => branch.length === 1)) {
    const wanted = wantedBy(issue);
    if (wanted.length === issue.errors.length) {
      return `Invalid input: expected ${wanted.join(" or ")}, received ${jsonType(field.value)}`;
    }
  }
  return issue.message;
}

/** The value at `path` in `event`, or whether an object at the path's parent lacks it. */
function fieldAt(
  event: unknown,
  path: readonly PropertyKey[],
): { missing: boolean; value?: unknown } {
  let node = event;
  for (const [index, key] of path.entries()) {
    if (typeof node !== "object" || node === null) return { missing: false };
    if (index === path.length - 1 && !Array.isArray(node) && !Object.hasOwn(node, key)) {
      return { missing: true };
    }
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return { missing: false, value: node };
}

/**
 * A JSON value's type as zod's messages name it ("received …"): a number out of range (JSON reads
 * 1e400 as Infinity) as itself, which "expected string or number, received number" would hide.
 */
function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return Array.isArray(value) ? "array" : typeof value;
}

/** What an issue on a missing field wanted, in words (none said: any value). */
function wantedBy(issue: z.core.$ZodIssue): string[] {
  switch (issue.code) {
    case "invalid_type":
      if (issue.expected === "nonoptional") return [];
      return [issue.expected === "int" ? "integer" : issue.expected];
    case "invalid_value": {
      const values = issue.values.map((value) => JSON.stringify(value));
      return [values.length === 1 ? values[0] : `one of ${values.join("|")}`];
    }
    // A `type` list: each member's own wants.
    case "invalid_union":
      return issue.errors.flatMap((branch) =>
        branch.length === 1 && branch[0].path.length === 0 ? wantedBy(branch[0]) : []
      );
    default:
      return [];
  }
}

/**
 * Validates one parsed event against the structural limits and its stream schema; one they take
 * is still refused when it holds a number out of range (`JSON.parse` reads `1e400` as
 * `Infinity`, which JSON writes back as `null`: passed on, the event would say `null`).
 */
export function validateEvent(
  value: unknown,
  schema: z.ZodType,
  limits?: ShapeLimits,
): Validation {
  const result = validated(value, schema, {
    fast: fastVerdicts.get(schema),
    cost: checkCosts.get(schema),
    maxDepth: limits?.maxDepth ?? 32,
    maxErrors: Infinity,
    ownKeysOnly: ownKeysOnly.has(schema),
  });
  return Array.isArray(result) ? { ok: false, errors: result } : { ok: true, event: result };
}

/**
 * {@linkcode validateEvent} for many events of one schema, without a result object per event:
 * the event, or (an array) why it is refused. The event is the value itself when the schema's
 * fast verdict accepts it, else zod's copy. `budget`: the request's (see
 * {@linkcode RequestCheckBudget}), the same for each of its events, in order; without it each
 * event is bounded only on its own.
 *
 * @example
 * ```ts
 * import { compileEventSchema, eventValidator, RequestCheckBudget } from "./mod.ts";
 *
 * const validate = eventValidator(compileEventSchema({ type: "object" }));
 * // One budget for one request's events.
 * const budget = new RequestCheckBudget();
 * [{ a: 1 }, { b: 2 }].map((event) => validate(event, budget)); // both events, as given
 * ```
 */
export function eventValidator(
  schema: z.ZodType,
  options: EventValidatorOptions = {},
): (value: unknown, budget?: RequestCheckBudget) => Event | FieldError[] {
  const settings = {
    fast: fastVerdicts.get(schema),
    cost: checkCosts.get(schema),
    maxDepth: options.maxDepth ?? 32,
    maxErrors: options.maxErrors ?? Infinity,
    ownKeysOnly: ownKeysOnly.has(schema),
  };
  return (value, budget) => validated(value, schema, settings, budget);
}

/** Options for {@linkcode eventValidator}. */
export interface EventValidatorOptions extends ShapeLimits {
  /**
   * Most errors a refused event lists: past them, one more entry says how many more it has
   * (`{"path": "", "message": "and N more errors not listed"}`), which are counted, not worded.
   * @default {Infinity}
   */
  maxErrors?: number;
}

/**
 * The event error for zod's throw when an `allOf`'s members (a `$ref` and the keywords beside it
 * are two) made values of the event it cannot merge: two members filling in different defaults at
 * one place, or one filling in a tuple's item (`Unmergable intersection. Error path: ["a"]`).
 * Undefined for any other error. The event is refused with it, naming the place within the
 * `allOf`, rather than the request failing.
 */
function unmergableError(error: unknown): FieldError | undefined {
  if (!(error instanceof Error)) return undefined;
  const found = /^Unmergable intersection\. Error path: (\[.*\])$/s.exec(error.message);
  if (found === null) return undefined;
  let path: unknown[] = [];
  try {
    const parsed = JSON.parse(found[1]);
    if (Array.isArray(parsed)) path = parsed;
  } catch {
    // A path zod wrote otherwise: the event's top.
  }
  // zod's path is within the allOf, wherever that is in the event: said, not taken as the field's.
  const within = path.map((key) => quoteInput(String(key))).join(".");
  return {
    path: "",
    message: `${UNMERGABLE_MESSAGE} (at '${within}' within the allOf)`,
  };
}

/** Why an event is refused when judging it against its schema would take too many checks. */
export const CHECK_BUDGET_MESSAGE =
  `Event would take more than ${MAX_EVENT_SCHEMA_CHECKS} checks against its schema beyond one a value (each value is checked against every schema node that applies to it, every anyOf/oneOf member counted, and each property an object lacks): send fewer items in one event, or give the schema fewer anyOf/oneOf members or properties where they repeat`;

/**
 * Why an event is refused when its request's checks would pass the request's budget of
 * `maxChecks` (see {@linkcode RequestCheckBudget}): it and every later event of the request.
 */
export function requestCheckBudgetMessage(maxChecks: number): string {
  return `Request would take more than ${maxChecks} checks against its schema beyond one a value, its events' checks counted in order (as for one event's bound): this event and every later one in the request were refused unjudged, the earlier ones judged as usual; send fewer events per request (these again in another), or give the schema fewer anyOf/oneOf members or properties where they repeat`;
}

/**
 * Why an event after the one refused with {@linkcode requestCheckBudgetMessage} is refused, where
 * a reply lists that one's message whole once: `index`, that event's place in the request. A cut
 * request of 1,000 events had a reply of 400 KB, the long message repeated for each.
 */
export function checkBudgetCutMessage(index: number): string {
  return `Refused unjudged: past the request's budget of schema checks (see index ${index})`;
}

/** {@linkcode requestCheckBudgetMessage} for the default budget, {@linkcode MAX_REQUEST_SCHEMA_CHECKS}. */
export const REQUEST_CHECK_BUDGET_MESSAGE = requestCheckBudgetMessage(MAX_REQUEST_SCHEMA_CHECKS);

/** Why an event is refused when its schema's `allOf` members fill in values that differ. */
export const UNMERGABLE_MESSAGE =
  "The schema's allOf members (or a $ref and the keywords beside it) fill in different values (different defaults of one field, or a tuple's item), which cannot be merged: send the field, or have the schema give the default in one member only";

function validated(
  value: unknown,
  schema: z.ZodType,
  options: {
    fast: FastVerdict | undefined;
    cost: CheckCost | undefined;
    maxDepth: number;
    maxErrors: number;
    ownKeysOnly: boolean;
  },
  budget?: RequestCheckBudget,
): Event | FieldError[] {
  // Past the request's budget: refused without any work. Ingest refuses a cut request's later
  // events itself, with a short message naming the cut; this keeps the validator's own contract.
  if (budget?.cut) return [{ path: "", message: requestCheckBudgetMessage(budget.maxChecks) }];
  const shapeProblem = shapeError(value, options.maxDepth);
  if (shapeProblem !== null) return [shapeProblem];
  // A number out of range is refused after the schema's errors, which name a typed one as zod does.
  const nonFinite = sawNonFinite;
  // Its schema's patterns tested within a budget (see MAX_EVENT_MATCHING_COST), past which the
  // event is refused, whatever zod or the fast verdict made of the error: one for each (zod
  // tests again what the fast verdict refused, to say why).
  startMatchingBudget();
  let accepted = false;
  let result: z.ZodSafeParseResult<unknown> | undefined;
  try {
    // zod would accept it and return an equal copy: skip the copy.
    accepted = !nonFinite && options.fast?.(value as Event) === true;
    if (!accepted) {
      // Its checks counted first when they could pass the bounds (see _check_budget.ts).
      if (options.cost !== undefined) {
        const verdict = budget === undefined
          ? eventCheckVerdict(options.cost, value, eventValues)
          : budget.charge(options.cost, value, eventValues);
        if (verdict === "event") return [{ path: "", message: CHECK_BUDGET_MESSAGE }];
        if (verdict === "request") {
          return [{ path: "", message: requestCheckBudgetMessage(budget!.maxChecks) }];
        }
      }
      if (options.fast) startMatchingBudget();
      try {
        result = schema.safeParse(options.ownKeysOnly ? withoutPrototypes(value) : value);
      } catch (error) {
        const unmergable = unmergableError(error);
        if (unmergable === undefined) throw error;
        return [unmergable];
      }
    }
  } finally {
    const past = endMatchingBudget();
    // deno-lint-ignore no-unsafe-finally
    if (past) return [{ path: "", message: new PatternBudgetError(past).message }];
  }
  if (accepted || result === undefined) return value as Event;
  if (!result.success) return eventErrors(result.error.issues, value, options.maxErrors);
  if (nonFinite) return [nonFiniteError(value)!];
  if (options.ownKeysOnly) restorePrototypes(result.data);
  if (typeof result.data !== "object" || result.data === null || Array.isArray(result.data)) {
    return [{ path: "", message: "Event must be a JSON object" }];
  }
  return result.data as Event;
}
