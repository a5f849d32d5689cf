/**
 * A bound on the work of judging one event against its stream's schema, and one on a request's
 * events in all ({@linkcode RequestCheckBudget}).
 *
 * zod checks each value of an event against every schema node that applies to it: every member
 * of an `anyOf`/`oneOf` (until one takes it), every part of an `allOf`, every property of an
 * object schema (those the value lacks too), and each array item against `items`. The work is
 * the schema's size times the event's, not either alone: an `anyOf` of 200 objects of 5 `const`s
 * under `items` (54 KB) and an event of 5,000 items (55 KB) took 5.3 s. So before zod runs, an
 * event whose checks could pass {@linkcode MAX_EVENT_SCHEMA_CHECKS} more than its own values is
 * counted, as if no `anyOf`/`oneOf` member took it (each is tried), without judging anything, and
 * refused past the bound; the count stops there, so it costs at most the bound's steps.
 *
 * Most schemas never count: a schema of `size` nodes once its `$ref`s are expanded makes at most
 * `3 × size` checks a value (the nodes judging it, the properties of object nodes it lacks, its
 * keys' `propertyNames`), so an event of `values` values is counted only when
 * `3 × size × values` is past the bound plus `values`. A schema whose `$ref`s recurse (a tree)
 * has no such size: its events are always counted.
 *
 * @module
 */

import { isPlainObject } from "./_fast_verdict.ts";

/**
 * Most checks of one event against its schema beyond one a value (each JSON value, key or array
 * item, checked once, is the event's own size, bounded by the body's). Past it the event is
 * refused. About 0.1-1 µs a check in zod: 2^18 is at most a few hundred milliseconds.
 */
export const MAX_EVENT_SCHEMA_CHECKS = 262_144;

/** What counting an event against one compiled schema needs. */
export interface CheckCost {
  /** The schema zod was given. */
  root: Record<string, unknown>;
  /** Its definitions, by name (without a prototype). */
  defs: Record<string, unknown>;
  /** Its nodes once `$ref`s are expanded; Infinity when they recurse. */
  size: number;
}

/**
 * The definition name of a local `$ref` (`#/$defs/<name>`), its JSON Pointer escapes read as zod
 * reads them (RFC 6901: `~1` is `/`, then `~0` is `~`): `#/$defs/a~1b` names `a/b`.
 */
export function refName(ref: string): string {
  return ref.slice(ref.lastIndexOf("/") + 1).replace(/~1/g, "/").replace(/~0/g, "~");
}

/**
 * The definitions a schema's local `$ref`s may name: its `$defs` over its draft-07 `definitions`,
 * read by key as zod reads them. Without a prototype: a `$ref` to `constructor` or `toString`
 * names no definition.
 */
export function definitionsOf(root: Record<string, unknown>): Record<string, unknown> {
  const definitions: Record<string, unknown> = Object.create(null);
  for (const key of ["definitions", "$defs"]) {
    const map = root[key];
    // Not a string's characters (Object.assign would copy them).
    if (typeof map === "object" && map !== null) Object.assign(definitions, map);
  }
  return definitions;
}

function target(node: Record<string, unknown>, defs: Record<string, unknown>): unknown {
  if (typeof node.$ref !== "string") return undefined;
  const found = defs[refName(node.$ref)];
  return typeof found === "object" || typeof found === "boolean" ? found : undefined;
}

/** Keywords whose value is one subschema or a list of them (`items` either). */
const ONE_OR_LIST = [
  "allOf",
  "anyOf",
  "oneOf",
  "prefixItems",
  "items",
  "additionalProperties",
  "propertyNames",
  "contains",
  "additionalItems",
  "not",
];
/** Keywords whose value maps names to subschemas. */
const MAPS = ["properties", "patternProperties"];

/** The subschemas of `node` (not its `$ref`'s target, nor a root's `$defs`). */
function subschemas(node: Record<string, unknown>): unknown[] {
  const found: unknown[] = [];
  for (const key of ONE_OR_LIST) {
    const value = node[key];
    if (Array.isArray(value)) found.push(...value);
    else if (value !== undefined) found.push(value);
  }
  for (const key of MAPS) {
    if (isPlainObject(node[key])) found.push(...Object.values(node[key]));
  }
  return found;
}

/**
 * The {@linkcode CheckCost} of a schema as given to zod (its `$ref`s all local, cycles without a
 * property between already refused, its expanded depth bounded: recursion here is bounded).
 */
export function checkCost(root: Record<string, unknown>): CheckCost {
  const defs = definitionsOf(root);
  const sizes = new Map<string, number>();
  const expanding = new Set<string>();
  const sizeOf = (node: unknown): number => {
    if (!isPlainObject(node)) return 1;
    let size = 1;
    if (typeof node.$ref === "string") {
      const name = refName(node.$ref);
      if (expanding.has(name)) return Infinity;
      let known = sizes.get(name);
      if (known === undefined) {
        expanding.add(name);
        known = sizeOf(defs[name]);
        expanding.delete(name);
        sizes.set(name, known);
      }
      size += known;
    }
    for (const sub of subschemas(node)) size += sizeOf(sub);
    return size;
  };
  return { root, defs, size: sizeOf(root) };
}

/** Whether counting `values` values against `cost` could find more than the bound. */
export function mayPassCheckBudget(cost: CheckCost, values: number): boolean {
  return 3 * cost.size * values > MAX_EVENT_SCHEMA_CHECKS + values;
}

/**
 * Most checks of one request's events against their schema beyond one a value each, in all (an
 * HTTP batch, a WebSocket frame): 8 events at {@linkcode MAX_EVENT_SCHEMA_CHECKS}. Without it,
 * every event of a request just within that bound would be judged: 531 events (1 MiB of NDJSON)
 * of 218 items under an `anyOf` of 200 objects of 5 `const`s, or 1,000 of 87 empty items under an
 * object of 3,000 properties; with it, 8 to 12 of them are, and such a request takes about 0.6–1.6 s of CPU
 * (`deno task bench:check-budget`).
 */
export const MAX_REQUEST_SCHEMA_CHECKS = 2_097_152;

/**
 * What {@linkcode RequestCheckBudget.charge} says of an event: judge it (zod may run), or refuse
 * it as its own checks pass {@linkcode MAX_EVENT_SCHEMA_CHECKS} (`"event"`), or as the request's
 * pass its budget (`"request"`).
 */
export type CheckVerdict = "judge" | "event" | "request";

/** Options for {@linkcode RequestCheckBudget}. */
export interface RequestCheckBudgetOptions {
  /** The request's checks, in all. @default {MAX_REQUEST_SCHEMA_CHECKS} */
  maxChecks?: number;
}

/**
 * The checks one request's events may take against their schema, beyond one a value each,
 * spent in the order they are judged: one for each request, handed to the validation of each of
 * its events (those the fast verdict takes, which zod never sees, spend none).
 *
 * An event is judged on its estimate beyond its values (`(3 × size - 1) × values`, an upper
 * bound, see {@linkcode mayPassCheckBudget}) while the estimates so taken stay within half the
 * budget: a pool of their own, so that an estimate (often 5–50 times the real checks) never takes
 * from the budget of the checks counted. Past that (or when the estimate could pass the event's
 * own bound) its checks are counted, up to what is left of the budget, and it spends its count.
 * An event refused on its own bound spends that bound (counting it took as much). The first event
 * whose checks pass what is left cuts the request: it and every later event are refused, without
 * any work. The work of judging a request is so bounded, whatever its events: zod's checks of the
 * estimated events at most half the budget, those of the counted ones (and the counting) at most
 * the budget.
 */
export class RequestCheckBudget {
  /** The request's checks in all. */
  readonly maxChecks: number;
  #left: number;
  #estimated = 0;
  #cut = false;

  constructor(options: RequestCheckBudgetOptions = {}) {
    this.maxChecks = options.maxChecks ?? MAX_REQUEST_SCHEMA_CHECKS;
    this.#left = this.maxChecks;
  }

  /** Counted checks not yet spent (estimates spend none: see {@linkcode estimated}). */
  get left(): number {
    return this.#left;
  }

  /** The estimates of the events judged on them, in all: at most half of {@linkcode maxChecks}. */
  get estimated(): number {
    return this.#estimated;
  }

  /** Whether an event passed what was left: it and every later event of the request are refused. */
  get cut(): boolean {
    return this.#cut;
  }

  /** Spends the checks of `event`, of `values` values, against `cost`'s schema: see the class. */
  charge(cost: CheckCost, event: unknown, values: number): CheckVerdict {
    if (this.#cut) return "request";
    const estimate = (3 * cost.size - 1) * values;
    if (
      estimate <= MAX_EVENT_SCHEMA_CHECKS && this.#estimated + estimate <= this.maxChecks / 2
    ) {
      this.#estimated += estimate;
      return "judge";
    }
    const limit = Math.min(MAX_EVENT_SCHEMA_CHECKS, this.#left);
    const checks = Math.max(0, checksUpTo(cost, event, limit + values) - values);
    if (checks <= limit) {
      this.#left -= checks;
      return "judge";
    }
    if (limit === MAX_EVENT_SCHEMA_CHECKS) {
      this.#left -= MAX_EVENT_SCHEMA_CHECKS;
      return "event";
    }
    this.#cut = true;
    return "request";
  }
}

/**
 * {@linkcode RequestCheckBudget.charge} for an event judged on its own (no request budget):
 * `"event"` when its checks pass {@linkcode MAX_EVENT_SCHEMA_CHECKS}, counted only when
 * {@linkcode mayPassCheckBudget}, else `"judge"`.
 */
export function eventCheckVerdict(cost: CheckCost, event: unknown, values: number): CheckVerdict {
  if (!mayPassCheckBudget(cost, values)) return "judge";
  return checksPast(cost, event, MAX_EVENT_SCHEMA_CHECKS + values) ? "event" : "judge";
}

/** The JSON type a value has, as `type` names it. */
function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value === "object" ? "object" : typeof value;
}

/** Whether `member` refuses `value` on its own `type` alone (one check in zod). */
function refusedByType(member: unknown, value: unknown): boolean {
  if (!isPlainObject(member) || member.type === undefined) return false;
  const type = typeOf(value);
  const takes = (name: unknown) => name === type || (name === "integer" && type === "number");
  return Array.isArray(member.type) ? !member.type.some(takes) : !takes(member.type);
}

/** How many properties each `properties` map of a schema names, counted once. */
const propertyCounts = new WeakMap<object, number>();

function propertyCount(properties: Record<string, unknown>): number {
  let count = propertyCounts.get(properties);
  if (count === undefined) propertyCounts.set(properties, count = Object.keys(properties).length);
  return count;
}

/** Each `patternProperties` map's schemas, listed once. */
const patternLists = new WeakMap<object, unknown[]>();

function patternSchemas(patterns: Record<string, unknown>): unknown[] {
  let list = patternLists.get(patterns);
  if (list === undefined) patternLists.set(patterns, list = Object.values(patterns));
  return list;
}

/**
 * Pushes with `push` each of `members` (an `anyOf` or `oneOf`) that may judge `value`; returns
 * how many refuse it on their `type` alone, a check each.
 */
function pushMembers(
  members: unknown[],
  value: unknown,
  push: (value: unknown, node: unknown) => void,
): number {
  let refused = 0;
  for (const member of members) {
    if (refusedByType(member, value)) refused++;
    else push(value, member);
  }
  return refused;
}

/**
 * Counts the checks of `event` against `cost`'s schema, as zod would make them with every
 * `anyOf`/`oneOf` member tried, up to `limit`: true when they are more (then counting stopped
 * there). Without recursion.
 */
export function checksPast(cost: CheckCost, event: unknown, limit: number): boolean {
  return checksUpTo(cost, event, limit) > limit;
}

/**
 * The checks of `event` against `cost`'s schema, counted as {@linkcode checksPast} counts them:
 * their number when it is at most `limit`, else a number past `limit` (counting stopped there).
 */
export function checksUpTo(cost: CheckCost, event: unknown, limit: number): number {
  const { defs } = cost;
  let checks = 0;
  // A recursive schema's definitions judged once an object value: zod's checks of a tree under
  // an anyOf grew with its depth, not 2^depth, and counted each path they would (31 levels of a
  // 2-member anyOf, 2^31) refused a tree zod judged in a millisecond.
  const recursive = cost.size === Infinity;
  const judged = new WeakMap<object, Set<unknown>>();
  const seen = (value: unknown, definition: unknown): boolean => {
    if (typeof value !== "object" || value === null) return false;
    let definitions = judged.get(value);
    if (definitions === undefined) judged.set(value, definitions = new Set());
    if (definitions.has(definition)) return true;
    definitions.add(definition);
    return false;
  };
  // Two stacks rather than one of pairs: no array made a step.
  const values: unknown[] = [event];
  const nodes: unknown[] = [cost.root];
  const push = (value: unknown, node: unknown) => {
    values.push(value);
    nodes.push(node);
  };
  while (nodes.length > 0) {
    const value = values.pop();
    const node = nodes.pop();
    if (++checks > limit) return checks;
    if (!isPlainObject(node)) continue;
    const refTo = target(node, defs);
    if (refTo !== undefined && !(recursive && seen(value, refTo))) push(value, refTo);
    if (Array.isArray(node.allOf)) { for (const part of node.allOf) push(value, part); }
    // Each list on its own: no [anyOf, oneOf] array allocated per node visited.
    if (Array.isArray(node.anyOf)) checks += pushMembers(node.anyOf, value, push);
    if (Array.isArray(node.oneOf)) checks += pushMembers(node.oneOf, value, push);
    if (Array.isArray(value)) {
      const prefix = Array.isArray(node.prefixItems)
        ? node.prefixItems
        : Array.isArray(node.items)
        ? node.items
        : [];
      const rest = Array.isArray(node.items) ? node.additionalItems : node.items;
      for (let index = 0; index < value.length; index++) {
        if (index < prefix.length) push(value[index], prefix[index]);
        else if (rest !== undefined) push(value[index], rest);
        if (node.contains !== undefined) push(value[index], node.contains);
      }
    } else if (isPlainObject(value)) {
      const properties = isPlainObject(node.properties) ? node.properties : undefined;
      // Each property the value lacks is one check: all of them, less each the value holds. Not
      // one by one: over a map of 3,000 properties under `items`, that took as long as zod.
      if (properties !== undefined) checks += propertyCount(properties);
      const patterns = isPlainObject(node.patternProperties)
        ? patternSchemas(node.patternProperties)
        : undefined;
      const additional = node.additionalProperties;
      for (const key in value) {
        if (node.propertyNames !== undefined) push(key, node.propertyNames);
        if (properties !== undefined && Object.hasOwn(properties, key)) {
          checks--;
          push(value[key], properties[key]);
          continue;
        }
        if (patterns !== undefined) { for (const schema of patterns) push(value[key], schema); }
        if (additional !== undefined) push(value[key], additional);
      }
    }
    if (checks > limit) return checks;
  }
  return checks;
}
