/**
 * Loading the configuration: parse the JSON, check it with the zod schema,
 * and compile every stream (event schema, transforms, counters) once.
 *
 * @module
 */
import { closeSync, constants as fsConstants, openSync } from "node:fs";
import { isAbsolute } from "node:path";
import type { z } from "zod";
import type { CounterMeta } from "../store/types.ts";
import {
  type CompiledExpression,
  compileExpression,
  compileTransform,
  ExpressionError,
  literalMatchesPatterns,
  type Transform,
  variableFields,
} from "../transform/mod.ts";
import { duplicateKeyPath } from "./_duplicate_keys.ts";
import {
  checkPatternSize,
  compileEventSchema,
  eventIssueMessage,
  jsonSyntaxProblem,
  largeExpansion,
  malformedKeyword,
  MAX_PATTERN_SIZE,
  ORIGIN_RULE,
  patternCompileSize,
  PatternError,
  quoteInput,
  RANGES_PER_INSTRUCTION,
  SchemaCompileError,
  schemaPatterns,
  unrecognizedKeys,
  webOrigin,
  withoutCredentials,
  withOversizedPatterns,
} from "../validate/mod.ts";
import type { AggregateSpec, CompiledCounter, WindowSpec } from "../window/mod.ts";
import { DEFAULT_QUANTILES, hopWidth, paneWidth, quantileName } from "../window/mod.ts";
import { listNames } from "../telemetry/logging.ts";
import {
  type AlertDefinition,
  type AlertEvaluation,
  configSchema,
  type CounterDefinition,
  DEFAULT_MAX_SESSIONS,
  keysTakenAt,
  streamCloseTimeSchema,
  type StreamDefinition,
} from "./schema.ts";
import { DurationError, formatDuration, parseDuration } from "./duration.ts";

/** Variables an alert's `when` expression sees. */
export const ALERT_VARIABLES = ["value", "group", "window"] as const;

/**
 * The fields of the `window` an alert's `when` sees, whatever the window's kind (a session's
 * too): the counter's name, and the window's start and end as ISO text.
 */
export const ALERT_WINDOW_FIELDS = ["counter", "start", "end"] as const;

/**
 * The fields of a quantiles counter's `value` an alert's `when` sees: the count, the exact min
 * and max, `approximate`, and an estimate per default quantile (`p50`, `p90`, `p95`, `p99`).
 * Any other counter's `value` is a number (or null) and has no fields.
 */
export const ALERT_QUANTILE_FIELDS: readonly string[] = [
  "count",
  "min",
  "max",
  "approximate",
  ...DEFAULT_QUANTILES.map(quantileName),
];

/** An alert ready to evaluate: `when` over `value`, `group` and `window`. */
export interface CompiledAlert {
  /** Alert name, unique within its stream. */
  name: string;
  /** The counter it watches. */
  counter: CompiledCounter;
  /** The `when` expression as written. */
  source: string;
  /** The compiled `when` expression. */
  when: CompiledExpression;
  /**
   * When `when` is checked: `live`, right after ingest on the window's value so far and again at
   * close; `close`, on the final value at close only (a session counter's alerts, either way).
   */
  evaluate: AlertEvaluation;
}

/** A stream ready for the hot path. */
export interface CompiledStream {
  /** Stream name. */
  name: string;
  /** The definition as written in the config file. */
  definition: unknown;
  /** The definition after defaults. */
  parsed: StreamDefinition;
  /** Event schema. */
  schema: z.ZodType;
  /** Field holding event time, or undefined for receive time. */
  timeField?: string;
  /** Events this far behind the watermark are late. */
  latenessMs: number;
  /** Events further ahead of now than this are rejected. */
  maxFutureMs: number;
  /**
   * The watermark never trails the clock by more than this (ms), so windows
   * of a quiet stream still close; null: it moves with event time only.
   */
  idleMs: number | null;
  /** Dedupe settings. */
  dedupe?: { field: string; ttlMs: number };
  /** How long (ms) the reply to a request with an `Idempotency-Key` is kept. */
  idempotencyTtlMs: number;
  /** Compiled transform steps. */
  transform: Transform;
  /** Compiled counters, in definition order. */
  counters: CompiledCounter[];
  /** Counter descriptions for the store, indexed like `counters`. */
  counterMetas: CounterMeta[];
  /** Compiled alerts, in definition order. */
  alerts: CompiledAlert[];
  /**
   * The alerts evaluated `live` (in definition order), by the place (in {@linkcode counters}) of
   * the counter they watch, but for sessions (a merge can move a session's start: their alerts are
   * judged at close only): the counters an ingested batch's alert evaluation looks at and the
   * alerts that judge their values so far, found once here rather than for every batch.
   */
  liveAlerts: ReadonlyMap<number, readonly CompiledAlert[]>;
  /**
   * The counters the stream counted in its incarnation and no longer has (removed by a `PUT` or a
   * redeploy), read from its definition record: their results logged before the change still
   * read back as they were (webhooks, live), though the counter counts no more. Set from the
   * record, as {@linkcode CompiledCounter.partialBefore} is.
   */
  formerCounters?: FormerCounter[];
  /**
   * The version of the stored definition this stream serves, set by the registry that serves it:
   * an API stream's record's, a config stream's that of the record holding its file once recorded.
   * A read compares it with the stats' `definitionVersion` (see `closedBefore`). Absent: none, as
   * version 0.
   */
  definitionVersion?: number;
  /**
   * What the sweep closes by instead of {@linkcode latenessMs}, {@linkcode idleMs} and
   * {@linkcode definitionVersion}, set by the registry on a config stream whose record another
   * deployment's file replaced since (same generation; this instance's file stays authoritative
   * here): the later-closing terms of the file and that record (the longer lateness, the longer
   * idle, no idle counting as the longest) with that record's version, so the store takes the
   * close (a later definition that kept final refuses one by the file's version) and closes
   * nothing either would still take events into. Absent: closes by the stream's own.
   */
  closeTerms?: CloseTerms;
}

/** What a config stream's sweep closes by: see {@linkcode CompiledStream.closeTerms}. */
export interface CloseTerms {
  /** The longer of the file's and the later record's lateness (ms). */
  latenessMs: number;
  /**
   * The longer of the file's and the later record's idle (ms); null (the watermark moves with
   * event time only) when either has none.
   */
  idleMs: number | null;
  /** The later record's version, sent with the close (see `CloseOptions.definitionVersion`). */
  definitionVersion: number;
}

/** What a result of a counter a stream no longer has needs to read back: see `formerCounters`. */
export type FormerCounter = Pick<
  CompiledCounter,
  "name" | "window" | "groupBy" | "aggregate" | "partialBefore"
>;

/** The configuration is invalid; the message lists every problem with its path. */
export class ConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/**
 * A path to a value as errors name it, `streams.orders.transform[0].filter`: list positions in
 * brackets, other keys joined by dots (each as {@linkcode quoteInput} quotes it); `(root)` for
 * the value itself.
 */
export function formatPath(path: readonly PropertyKey[]): string {
  let text = "";
  for (const key of path) {
    // A key quoted shortened: a body may hold one as long as it is.
    text += typeof key === "number"
      ? `[${key}]`
      : `${text === "" ? "" : "."}${quoteInput(String(key))}`;
  }
  return text || "(root)";
}

/**
 * Expands a union's issue into the issues of the branch that came closest
 * (the one whose keys matched, e.g. `tumbling`), so the message says what
 * was wrong with the value rather than only which shapes are allowed.
 */
function explainIssue(
  issue: z.core.$ZodIssue,
  prefix: readonly PropertyKey[],
): Array<{ issue: z.core.$ZodIssue; path: PropertyKey[]; at: readonly PropertyKey[] }> {
  const path = [...prefix, ...issue.path];
  if (issue.code !== "invalid_union" || issue.errors.length === 0) {
    return [{ issue, path, at: prefix }];
  }
  // A branch whose every issue is at its root (`expected "count"`) is a shape the value does not
  // take at all: explained alone, it hid what the union says it takes.
  const branches = issue.errors.filter((branch) =>
    branch.length > 0 && !branch.some((inner) => inner.code === "unrecognized_keys") &&
    branch.some((inner) => inner.path.length > 0)
  );
  if (branches.length !== 1) return [{ issue, path, at: prefix }];
  return branches[0].flatMap((inner) => explainIssue(inner, path));
}

/**
 * The message of a zod issue at `at` in `raw`; for a bad record key, why the key is bad. A field
 * `raw` lacks is "missing", as an event's and a request's are (zod says "expected string,
 * received undefined").
 */
function issueMessage(issue: z.core.$ZodIssue, raw: unknown, at: readonly PropertyKey[]): string {
  if (issue.code === "invalid_key") return issue.issues.map((inner) => inner.message).join("; ");
  if (issue.code === "unrecognized_keys") {
    const taken = keysTakenAt([...at, ...issue.path]) ?? [];
    return unrecognizedKeys(issue.keys, taken);
  }
  // A union that words what it takes (`Aggregate must be …`) says so, missing or not.
  if (issue.code === "invalid_union" && issue.message !== "Invalid input") return issue.message;
  return eventIssueMessage(issue, raw, at);
}

/**
 * Paths of `__proto__` keys in a parsed JSON value (the raw config, an API body). JSON.parse
 * makes them own keys, and zod drops them from records without an issue, so a stream, counter
 * or `set` field (a webhook's header) named `__proto__` would vanish silently.
 */
export function protoKeyPaths(raw: unknown): string[] {
  // Each node's path as a link to its parent's, spelled out only for a `__proto__` key found: a
  // copy per node would make a definition nested n deep cost n² (seconds for a 64 KB body).
  type Link = { step: PropertyKey; parent: Link | null } | null;
  const pathOf = (link: Link): PropertyKey[] => {
    const path: PropertyKey[] = [];
    for (let at = link; at !== null; at = at.parent) path.push(at.step);
    return path.reverse();
  };
  const found: string[] = [];
  const stack: Array<[unknown, Link]> = [[raw, null]];
  while (stack.length > 0) {
    const [node, link] = stack.pop()!;
    if (typeof node !== "object" || node === null) continue;
    for (const key of Object.keys(node)) {
      if (key === "__proto__") found.push(formatPath([...pathOf(link), key]));
      else {
        const step = Array.isArray(node) ? Number(key) : key;
        stack.push([(node as Record<string, unknown>)[key], { step, parent: link }]);
      }
    }
  }
  return found;
}

function compileWindow(window: CounterDefinition["window"], at: string): WindowSpec {
  if ("tumbling" in window) return { kind: "tumbling", sizeMs: window.tumbling };
  if ("session" in window) {
    return { kind: "session", gapMs: window.session, sizeMs: window.session };
  }
  if ("hopping" in window) {
    if (window.every > window.hopping) {
      throw new ConfigError(
        `${at}.window: 'every' is ${formatDuration(window.every)}, longer than the window size ${
          formatDuration(window.hopping)
        }; a hop is at most the window size`,
      );
    }
    return { kind: "hopping", sizeMs: window.hopping, everyMs: window.every };
  }
  if (window.sliding % window.precision !== 0) {
    throw new ConfigError(
      `${at}.window: sliding size ${
        formatDuration(window.sliding)
      } is not a multiple of its precision ${
        formatDuration(window.precision)
      }; the size must be a whole number of precisions`,
    );
  }
  if (window.sliding / window.precision > 1440) {
    throw new ConfigError(
      `${at}.window: a sliding window spans ${
        window.sliding / window.precision
      } panes (size / precision); at most 1440`,
    );
  }
  return { kind: "sliding", sizeMs: window.sliding, precisionMs: window.precision };
}

function compileCounter(
  name: string,
  index: number,
  definition: CounterDefinition,
  latenessMs: number,
  at: string,
): CompiledCounter {
  const window = compileWindow(definition.window, at);
  const session = sessionOf(window, definition, at);
  if (!session && window.sizeMs / paneWidth(window) > 1440) {
    throw new ConfigError(
      `${at}.window: a window spans ${window.sizeMs / paneWidth(window)} panes of ${
        formatDuration(paneWidth(window))
      } (size over the greatest common divisor of size and 'every'); at most 1440: pick sizes with a larger common divisor`,
    );
  }
  const aggregate: AggregateSpec = definition.aggregate === "count"
    ? { kind: "count" as const }
    : "quantiles" in definition.aggregate
    ? {
      kind: "quantiles",
      field: definition.aggregate.quantiles,
      accuracy: definition.aggregate.accuracy,
    }
    : (() => {
      const [kind, field] = Object.entries(definition.aggregate)[0];
      return { kind: kind as "sum" | "min" | "max" | "avg" | "distinct", field: field as string };
    })();
  if (session && aggregate.kind === "quantiles") {
    // A session's state merges on the apply path, where sketches are not kept per session.
    throw new ConfigError(
      `${at}.aggregate: quantiles are not available on session windows; use a tumbling, hopping or sliding window`,
    );
  }
  const ttlMs = window.sizeMs + latenessMs + definition.retention;
  return {
    name,
    index,
    window,
    paneMs: paneWidth(window),
    groupBy: definition.groupBy,
    aggregate,
    retentionMs: definition.retention,
    meta: {
      name,
      aggregate: aggregate.kind,
      maxGroups: definition.maxGroups,
      ttlMs,
      sizeMs: window.sizeMs,
      hopMs: hopWidth(window),
      ...(aggregate.kind === "quantiles" ? { accuracy: aggregate.accuracy } : {}),
      ...(session ? { session } : {}),
    },
    // Set from the stream's definition record when it is served; here so the shape stays one.
    partialBefore: null,
  };
}

/** The session settings of a counter, or undefined for fixed windows; checks the limits. */
function sessionOf(
  window: WindowSpec,
  definition: CounterDefinition,
  at: string,
): { gapMs: number; maxSessions: number } | undefined {
  if (window.kind !== "session") {
    if (definition.maxSessions !== undefined) {
      throw new ConfigError(
        `${at}.maxSessions: only session windows have maxSessions; this window is ${window.kind}`,
      );
    }
    return undefined;
  }
  return { gapMs: window.gapMs, maxSessions: definition.maxSessions ?? DEFAULT_MAX_SESSIONS };
}

function compileAlerts(
  definitions: AlertDefinition[],
  counters: CompiledCounter[],
  at: string,
  options: CompileOptions,
): CompiledAlert[] {
  const names = new Set<string>();
  return definitions.map((definition, index) => {
    const path = `${at}.alerts[${index}]`;
    if (names.has(definition.name)) {
      throw new ConfigError(`${path}.name: Alert '${definition.name}' is defined twice`);
    }
    names.add(definition.name);
    const counter = counters.find((item) => item.name === definition.counter);
    if (!counter) {
      throw new ConfigError(
        `${path}.counter: No counter '${definition.counter}' in this stream; it has: ${
          listNames(counters.map((item) => item.name)) || "(none)"
        }`,
      );
    }
    let when: CompiledExpression;
    try {
      when = compileExpression(definition.when, ALERT_VARIABLES, {
        returns: "bool",
        uncountedPatternClasses: options.oversizedPatterns ?? false,
      });
    } catch (error) {
      if (error instanceof ExpressionError) throw new ConfigError(`${path}.when: ${error.message}`);
      throw error;
    }
    const unknown = options.unknownAlertFields
      ? undefined
      : unknownField(definition.when, counter, path);
    if (unknown !== undefined) throw new ConfigError(unknown);
    return {
      name: definition.name,
      counter,
      source: definition.when,
      when,
      evaluate: definition.evaluate,
    };
  });
}

/**
 * The first field of `group`, `window` or `value` that `when` names and no window of `counter`
 * has, as `<path>.when: group has no field 'contry'; …`, or `undefined` for none: any field of a
 * value that is a number (`value.p99` of a count), a quantile a quantiles value lacks
 * (`value['p99.9']`: see {@linkcode ALERT_QUANTILE_FIELDS}). Reading one fails on every window
 * (and `has()` of it fails or is always false): the alert would never fire by it.
 */
function unknownField(when: string, counter: CompiledCounter, path: string): string | undefined {
  for (const { variable, field } of variableFields(when, ALERT_VARIABLES)) {
    if (variable === "group" && !counter.groupBy.includes(field)) {
      const quoted = quoteInput(field);
      const fields = counter.groupBy.length === 0
        ? `none, as counter '${counter.name}' groups by nothing`
        : `the groupBy fields of counter '${counter.name}': ${listNames(counter.groupBy)}`;
      // `group.user.country` for groupBy `user.country`: the dotted path is one key.
      const dotted = counter.groupBy.find((name) => name.startsWith(`${field}.`));
      const hint = dotted === undefined
        ? ""
        : ` (a dotted groupBy path is one field: write group['${quoteInput(dotted)}'])`;
      return `${path}.when: group has no field '${quoted}'; it has ${fields}${hint}`;
    }
    if (variable === "window" && !(ALERT_WINDOW_FIELDS as readonly string[]).includes(field)) {
      return `${path}.when: window has no field '${quoteInput(field)}'; it has: ${
        ALERT_WINDOW_FIELDS.join(", ")
      }`;
    }
    if (variable === "value") {
      const { kind } = counter.aggregate;
      if (kind !== "quantiles") {
        // A count is never null; min, max and avg are where no value exists.
        const number = kind === "count" || kind === "sum" || kind === "distinct"
          ? "a number"
          : "a number or null";
        return `${path}.when: value has no field '${
          quoteInput(field)
        }'; counter '${counter.name}' aggregates ${kind}, so value is ${number}`;
      }
      if (!ALERT_QUANTILE_FIELDS.includes(field)) {
        return `${path}.when: value has no field '${
          quoteInput(field)
        }'; counter '${counter.name}' computes quantiles, so value has: ${
          ALERT_QUANTILE_FIELDS.join(", ")
        }`;
      }
    }
  }
  return undefined;
}

/**
 * Most counters one stream may define. Each keeps state per pane in the shared process (or in
 * Redis), and the key that defines them may be limited to its stream: a tenant's.
 */
export const MAX_COUNTERS_PER_STREAM = 64;

/**
 * Most groups a stream's window counters may hold per pane together (their `maxGroups` added
 * up), and most sessions its session counters may hold open together (their `maxSessions`):
 * what one counter may have on its own, so a stream holds at most that many whatever the
 * number of counters it spreads them over.
 */
export const MAX_STREAM_GROUPS = 1_000_000;

/** Why a stream of `count` counters is refused. */
function tooManyCounters(count: number): string {
  return `a stream may have at most ${MAX_COUNTERS_PER_STREAM} counters; this one has ${count}`;
}

/**
 * Refuses more groups or sessions between a stream's counters than one stream may hold (more
 * counters than it may have were refused before zod ran: {@linkcode tooManyCountersLines}).
 */
function checkStreamState(parsed: StreamDefinition, at: string): void {
  const entries = Object.entries(parsed.counters);
  let groups = 0;
  let sessions = 0;
  for (const [counterName, definition] of entries) {
    const session = "session" in definition.window;
    if (session) sessions += definition.maxSessions ?? DEFAULT_MAX_SESSIONS;
    else groups += definition.maxGroups;
    const [total, field, what] = session
      ? [sessions, "maxSessions", "sessions open"]
      : [groups, "maxGroups", "groups per pane"];
    if (total > MAX_STREAM_GROUPS) {
      throw new ConfigError(
        `${at}.counters.${counterName}.${field}: the stream's counters would hold up to ${total} ${what} with this one; at most ${MAX_STREAM_GROUPS} together`,
      );
    }
  }
}

function compileStream(
  name: string,
  raw: unknown,
  parsed: StreamDefinition,
  options: CompileOptions,
): CompiledStream {
  const at = `streams.${name}`;
  let schema: z.ZodType;
  try {
    schema = compileEventSchema(parsed.schema, {
      malformedKeywords: options.malformedSchemaKeywords,
      largeExpansion: options.largeSchemaExpansion,
    });
  } catch (error) {
    if (error instanceof SchemaCompileError) {
      throw new ConfigError(`${at}.schema: ${error.message}`);
    }
    throw error;
  }
  let transform: Transform;
  try {
    // A stream stored or deployed before patterns' classes were counted is served as it was.
    transform = compileTransform(parsed.transform, {
      uncountedPatternClasses: options.oversizedPatterns,
    });
  } catch (error) {
    if (error instanceof ExpressionError) throw new ConfigError(`${at}.${error.message}`);
    throw error;
  }
  checkStreamState(parsed, at);
  const counters = Object.entries(parsed.counters).map(([counterName, definition], index) =>
    compileCounter(
      counterName,
      index,
      definition,
      parsed.time.lateness,
      `${at}.counters.${counterName}`,
    )
  );
  const alerts = compileAlerts(parsed.alerts, counters, at, options);
  return {
    name,
    definition: raw,
    parsed,
    schema,
    timeField: parsed.time.field,
    latenessMs: parsed.time.lateness,
    maxFutureMs: parsed.time.maxFuture,
    idleMs: idleOf(parsed.time),
    dedupe: parsed.dedupe ? { field: parsed.dedupe.field, ttlMs: parsed.dedupe.ttl } : undefined,
    idempotencyTtlMs: parsed.idempotencyTtl,
    transform,
    counters,
    counterMetas: counters.map((counter) => counter.meta),
    alerts,
    liveAlerts: liveAlertsOf(alerts),
  };
}

/** A stream's {@linkcode CompiledStream.liveAlerts} from its compiled alerts. */
function liveAlertsOf(alerts: readonly CompiledAlert[]): Map<number, CompiledAlert[]> {
  const live = new Map<number, CompiledAlert[]>();
  for (const alert of alerts) {
    if (alert.evaluate !== "live" || alert.counter.window.kind === "session") continue;
    const watching = live.get(alert.counter.index);
    if (watching) watching.push(alert);
    else live.set(alert.counter.index, [alert]);
  }
  return live;
}

/** A stream's {@linkcode CompiledStream.idleMs} from its parsed `time`. */
function idleOf(time: { field?: string; idle?: number }): number | null {
  // Receive-time streams: the clock is the event time, so it is the watermark.
  return time.idle ?? (time.field === undefined ? 0 : null);
}

/**
 * The lateness and idle a stream definition (as written or stored) closes by, as
 * {@linkcode compileStreamDefinition} would compile them (the same defaults), read from its `time`
 * alone: a definition this release cannot compile (a newer release's, with an option it does not
 * know) still says them. `undefined` when its `time.field`, `time.lateness` or `time.idle` cannot
 * be read either.
 */
export function closeTimeOf(
  definition: unknown,
): { latenessMs: number; idleMs: number | null } | undefined {
  const read = streamCloseTimeSchema.safeParse(definition);
  if (!read.success) return undefined;
  return { latenessMs: read.data.time.lateness, idleMs: idleOf(read.data.time) };
}

/**
 * Most instructions the patterns of one stream definition may compile to together (each by
 * `patternCompileSize`: its size once its repeats are expanded, a character class 1 more for each
 * `RANGES_PER_INSTRUCTION` ranges of characters it holds, as `MAX_EXPRESSION_PATTERN_SIZE`
 * counts; 15 of `^[\p{L}\p{N}\p{S}\p{P}]{1000}`, 1,003 instructions each without, took
 * 0.35–1.2 s to compile): its schema's `pattern`s and
 * `patternProperties`, and the literal patterns of `matches()` in its transform and alerts. Every
 * instance compiles each new version of a stream (about 0.3–8 µs an instruction), and a key
 * limited to one stream may write it: without a bound, one definition held every instance for
 * seconds. A few hundred ordinary patterns (an email, a UUID, `^[A-Z]{2}$`: 12, 40 and 6) stay
 * well within it. Each pattern is bounded on its own by `MAX_PATTERN_SIZE` as well.
 */
export const MAX_DEFINITION_PATTERN_SIZE = 16_000;

/** The patterns a definition compiles (see {@linkcode MAX_DEFINITION_PATTERN_SIZE}), with paths. */
function definitionPatterns(parsed: StreamDefinition): Array<[PropertyKey[], string]> {
  const found: Array<[PropertyKey[], string]> = schemaPatterns(parsed.schema).map((
    { path, pattern },
  ) => [["schema", ...path], pattern]);
  parsed.transform.forEach((step, index) => {
    const expressions: Array<[PropertyKey[], string]> = "filter" in step
      ? [[["filter"], step.filter]]
      : "set" in step
      ? Object.entries(step.set).map(([field, source]) => [["set", field], source])
      : [];
    for (const [at, source] of expressions) {
      for (const pattern of literalMatchesPatterns(source)) {
        found.push([["transform", index, ...at], pattern]);
      }
    }
  });
  parsed.alerts.forEach((alert, index) => {
    for (const pattern of literalMatchesPatterns(alert.when, ALERT_VARIABLES)) {
      found.push([["alerts", index, "when"], pattern]);
    }
  });
  return found;
}

/**
 * The first pattern of a definition past `MAX_PATTERN_SIZE` on its own, or past
 * {@linkcode MAX_DEFINITION_PATTERN_SIZE} with those before it, as `streams.<name>.<path>: …`;
 * read without compiling any of them.
 */
function patternBudgetProblem(name: string, parsed: StreamDefinition): string | undefined {
  let total = 0;
  for (const [path, pattern] of definitionPatterns(parsed)) {
    let size: number;
    try {
      checkPatternSize(pattern);
      size = patternCompileSize(pattern);
    } catch (error) {
      if (!(error instanceof PatternError)) throw error;
      return `${formatPath(["streams", name, ...path])}: ${error.message}`;
    }
    total += size;
    if (total > MAX_DEFINITION_PATTERN_SIZE) {
      return `${
        formatPath(["streams", name, ...path])
      }: the stream's patterns would compile to ${total} instructions with this one (${size}), past the ${MAX_DEFINITION_PATTERN_SIZE} a definition may have together (a pattern counts its size once its repeats are expanded: [a-z]{1000} is 1002; a character class 1 more for each ${RANGES_PER_INSTRUCTION} ranges of characters it holds: [\\p{L}] is about 24; each at most ${MAX_PATTERN_SIZE} without its classes' ranges); shorten or drop patterns`;
    }
  }
  return undefined;
}

/**
 * A stream's first pattern past `MAX_PATTERN_SIZE` on its own, or past
 * {@linkcode MAX_DEFINITION_PATTERN_SIZE} with those before it, as
 * `streams.<name>.<path>: …`, or `undefined` for none (see
 * {@linkcode CompileOptions.oversizedPatterns}).
 */
export function oversizedPatterns(stream: CompiledStream): string | undefined {
  return patternBudgetProblem(stream.name, stream.parsed);
}

/** A field a counter's `groupBy` names again, found by {@linkcode repeatedGroupBy}. */
export interface RepeatedGroupBy {
  /** The counter. */
  counter: string;
  /** The field named again. */
  field: string;
  /** Where in `groupBy` it is again. */
  index: number;
  /** Where in `groupBy` it is first. */
  first: number;
}

/** Every field a counter of `stream` groups by more than once (the second and later places). */
export function repeatedGroupBy(stream: CompiledStream): RepeatedGroupBy[] {
  return stream.counters.flatMap((counter) =>
    counter.groupBy.flatMap((field, index) => {
      const first = counter.groupBy.indexOf(field);
      return first < index ? [{ counter: counter.name, field, index, first }] : [];
    })
  );
}

/** Why a repeated `groupBy` field is refused, at its path in the stream `name`. */
export function repeatedGroupByProblem(name: string, repeated: RepeatedGroupBy): string {
  const { counter, field, index, first } = repeated;
  return `streams.${name}.counters.${counter}.groupBy[${index}]: Field '${field}' is already at groupBy[${first}]; group by each field once`;
}

/**
 * Shortest window length (ms) a definition may give: a tumbling, hopping or sliding window's size,
 * a hopping window's `every`, a sliding window's `precision` and a session's gap. Windows close in
 * the sweep, which closes a bounded number of a counter's windows (and sessions) per run, every
 * few seconds: windows much shorter than a second that keep getting events would close later and
 * later behind them, their data held until then. A session's gap is a window length too: a group
 * can start a session per gap, each closed on its own. The panes a hopping window is kept in may
 * be shorter (`{"hopping": "1500ms", "every": "1s"}` has 500 ms panes): closes go by windows,
 * and a window spans at most 1,440 panes.
 */
export const MIN_WINDOW_MS = 1_000;

/** What each window length is called in a refusal, by its key in `window`. */
const WINDOW_LENGTHS = {
  tumbling: "Window size",
  hopping: "Window size",
  every: "Hop ('every')",
  sliding: "Window size",
  precision: "Precision",
  session: "Session gap",
} as const;

/** A window length shorter than {@linkcode MIN_WINDOW_MS}, found by {@linkcode shortWindows}. */
export interface ShortWindow {
  /** The counter. */
  counter: string;
  /** The key of `window` that gives it. */
  key: keyof typeof WINDOW_LENGTHS;
  /** The length (ms). */
  ms: number;
}

/** The window lengths of a parsed definition shorter than {@linkcode MIN_WINDOW_MS}. */
function shortWindowsOf(parsed: StreamDefinition): ShortWindow[] {
  return Object.entries(parsed.counters).flatMap(([counter, definition]) =>
    Object.entries(definition.window).flatMap(([key, ms]) =>
      Object.hasOwn(WINDOW_LENGTHS, key) && ms < MIN_WINDOW_MS
        ? [{ counter, key: key as ShortWindow["key"], ms }]
        : []
    )
  );
}

/**
 * Every window length of `stream` shorter than {@linkcode MIN_WINDOW_MS}, which a stream stored
 * or deployed before that check may have (see {@linkcode CompileOptions.shortWindows}).
 */
export function shortWindows(stream: CompiledStream): ShortWindow[] {
  return shortWindowsOf(stream.parsed);
}

/** Why a window length is refused, at its path in the stream `name`. */
export function shortWindowProblem(name: string, short: ShortWindow): string {
  const { counter, key, ms } = short;
  return `streams.${name}.counters.${counter}.window.${key}: ${
    WINDOW_LENGTHS[key]
  } is ${ms} ms, shorter than the minimum of 1s: a sweep closes a bounded number of a counter's windows each run, so windows this short would close later and later behind a steady stream of events; use '1s' or more`;
}

/**
 * The first key an object of the JSON `text` gives twice, as `<path>: key '<key>' is given twice
 * …`, or `undefined` for none. `JSON.parse` keeps the last, so a stream or counter pasted in again
 * without a new name would replace the first without a word: a config file and a stream's `PUT`
 * body refuse it.
 */
export function duplicateKeyProblem(text: string): string | undefined {
  const path = duplicateKeyPath(text);
  if (path === undefined) return undefined;
  return `${formatPath(path)}: key '${
    quoteInput(String(path[path.length - 1]))
  }' is given twice in one object (JSON would keep only the last); remove or rename one`;
}

/** A field path with an empty part, found by {@linkcode emptyPathParts}. */
export interface EmptyPathPart {
  /** Where it is, under the stream (`["counters", "n", "groupBy", 0]`). */
  path: PropertyKey[];
  /** The field path as written (`"user..country"`). */
  field: string;
  /** The counter that reads it, or `undefined` for `time.field` and `dedupe.field`. */
  counter?: string;
}

/**
 * One field a stream reads, found by {@linkcode fieldReadsOf}: where it is, the field name or
 * dotted path as written, and its counter, as an {@linkcode EmptyPathPart} has them.
 */
interface FieldRead extends EmptyPathPart {
  /** Read from the event its transform gave (a counter's), not the one received. */
  afterTransform: boolean;
}

/**
 * Every field a parsed definition reads, in order: `time.field` and `dedupe.field` (before
 * transforms), then each counter's aggregate field and `groupBy` fields (after).
 */
function fieldReadsOf(parsed: StreamDefinition): FieldRead[] {
  const reads: FieldRead[] = [];
  if (parsed.time.field !== undefined) {
    reads.push({ path: ["time", "field"], field: parsed.time.field, afterTransform: false });
  }
  if (parsed.dedupe) {
    reads.push({ path: ["dedupe", "field"], field: parsed.dedupe.field, afterTransform: false });
  }
  for (const [counter, definition] of Object.entries(parsed.counters)) {
    if (typeof definition.aggregate === "object") {
      // Its one string member (a quantiles counter's other is its accuracy).
      const found = Object.entries(definition.aggregate).find(([, v]) => typeof v === "string");
      if (found) {
        reads.push({
          path: ["counters", counter, "aggregate", found[0]],
          field: String(found[1]),
          counter,
          afterTransform: true,
        });
      }
    }
    definition.groupBy.forEach((field, index) => {
      reads.push({
        path: ["counters", counter, "groupBy", index],
        field,
        counter,
        afterTransform: true,
      });
    });
  }
  return reads;
}

/**
 * The field paths of a parsed definition (`time.field`, `dedupe.field`, each counter's aggregate
 * field and `groupBy` fields) with an empty part: `a..b`, `.a`, `a.`.
 */
function emptyPathPartsOf(parsed: StreamDefinition): EmptyPathPart[] {
  return fieldReadsOf(parsed)
    .filter(({ field }) => field.split(".").includes(""))
    .map(({ path, field, counter }) => ({ path, field, counter }));
}

/**
 * Every field path of `stream` with an empty part, which a stream stored before that check may
 * have (see {@linkcode CompileOptions.emptyPathParts}).
 */
export function emptyPathParts(stream: CompiledStream): EmptyPathPart[] {
  return emptyPathPartsOf(stream.parsed);
}

/** Why a field path with an empty part is refused, at its path in the stream `name`. */
export function emptyPathPartProblem(name: string, empty: EmptyPathPart): string {
  return `${formatPath(["streams", name, ...empty.path])}: Field path '${
    quoteInput(empty.field)
  }' has an empty part (a dot at its start or end, or two dots together); a dotted path names the keys read in turn, as 'user.country'`;
}

/** Options for {@linkcode compileConfig}. */
export interface CompileOptions {
  /**
   * Let a counter's `groupBy` name a field twice, as releases before this check did: a stream
   * stored then is served as it counted (its groups keyed by the field twice). Find them with
   * {@linkcode repeatedGroupBy}. @default {false: refused, naming the field}
   */
  repeatedGroupBy?: boolean;
  /**
   * Compile a schema keyword whose value is not of its kind (`"minimum": "x"`) as releases before
   * that check did: a stream stored or deployed then is served as it was. Find it with
   * {@linkcode malformedSchemaKeyword}. @default {false: refused, naming its path}
   */
  malformedSchemaKeywords?: boolean;
  /**
   * Compile a schema past `MAX_EXPANDED_SCHEMA_SIZE` objects and arrays once its `$ref`s are
   * expanded as releases before that check did: a stream stored or deployed then is served as it
   * was. Find it with {@linkcode largeSchemaExpansion}. @default {false: refused}
   */
  largeSchemaExpansion?: boolean;
  /**
   * Take an `origins` entry no browser sends (a wildcard host, `https://*.shop.example`, or
   * credentials, `https://user:pw@shop.example`) as releases before that check did: a stream
   * stored or deployed then is served as it was (a wildcard matches no page; credentials are
   * dropped, leaving the origin). Find it with {@linkcode malformedOrigin}.
   * @default {false: refused, naming its path}
   */
  malformedOrigins?: boolean;
  /**
   * Take a duration with a fraction of a millisecond (`"0.6ms"`, rounded) or a unit given twice
   * (`"1m1m"`, the parts added) as releases before those checks did: a stream stored or deployed
   * then is served as it was. Find it with {@linkcode malformedDuration}.
   * @default {false: refused, naming its path}
   */
  malformedDurations?: boolean;
  /**
   * Take a window shorter than {@linkcode MIN_WINDOW_MS} (`{"tumbling": "100ms"}`) as releases
   * before that check did: a stream stored or deployed then is served as it was. Find them with
   * {@linkcode shortWindows}. @default {false: refused, naming its path}
   */
  shortWindows?: boolean;
  /**
   * Compile a definition whose patterns together pass {@linkcode MAX_DEFINITION_PATTERN_SIZE}, or
   * with one past `MAX_PATTERN_SIZE` on its own, as releases before those checks did: a stream
   * stored or deployed then is served as it was. Find it with {@linkcode oversizedPatterns}.
   * @default {false: refused before any is compiled, naming the first pattern past either}
   */
  oversizedPatterns?: boolean;
  /**
   * Compile an alert whose `when` names a field of `group` no groupBy field is (`group.contry`
   * where the counter groups by `country`), of `window` it has not (`window.strat`) or of `value`
   * it has not (`value.p99` of a count), as releases before that check did: a stream stored or
   * deployed then is served as it was (the condition fails where it reads the field, and the
   * alert does not fire there). Find it with {@linkcode unknownAlertField}.
   * @default {false: refused, naming its path and the fields}
   */
  unknownAlertFields?: boolean;
  /**
   * Compile a counter that reads a field its stream can never hold (`{"sum": "amont"}` beside
   * `"additionalProperties": false` without `amont`, at the top level or below it, or a field a
   * transform's `drop` removes, its `rename` moves away or its `pick` leaves out), or a
   * `time.field` or `dedupe.field` naming one its schema cannot hold, as releases before those
   * checks did: a stream stored or deployed then is served as it was (the field is always
   * missing). Find it with {@linkcode unknownCounterField}.
   * @default {false: refused, naming its path and the fields the schema holds}
   */
  unknownCounterFields?: boolean;
  /**
   * Take a field path with an empty part (`"a..b"`, `".a"`, `"a."`) in `time.field`,
   * `dedupe.field` or a counter as releases before that check did: a stream stored then is served
   * as it was (such a path reads the key written so, else the parts in turn, the empty one too).
   * Find them with {@linkcode emptyPathParts}. @default {false: refused, naming its path}
   */
  emptyPathParts?: boolean;
  /**
   * Take `maxGroups` on a session counter, which has no panes for it to bound, as releases before
   * that check did (doing nothing with it): a stream stored then is served as it was. Find it with
   * {@linkcode sessionMaxGroups}. @default {false: refused, naming its path}
   */
  sessionMaxGroups?: boolean;
  /**
   * Take `time.maxFuture` on a stream without `time.field`, whose events are timed when they are
   * received (never ahead of the clock), as releases before that check did (doing nothing with
   * it): a stream stored then is served as it was. Find it with
   * {@linkcode receiveTimeMaxFuture}. @default {false: refused, naming its path}
   */
  receiveTimeMaxFuture?: boolean;
}

/** Top-level schema keywords that may let an event hold a key `properties` does not list. */
const OPENING_KEYWORDS = [
  "patternProperties",
  "allOf",
  "anyOf",
  "oneOf",
  "not",
  "if",
  "then",
  "else",
  "$ref",
  "$dynamicRef",
  "$recursiveRef",
  "dependencies",
  "dependentSchemas",
  "unevaluatedProperties",
  "propertyNames",
  "enum",
  "const",
];

/** `schema` as a JSON object schema, or `undefined` for a boolean schema or anything else. */
function schemaObject(schema: unknown): Record<string, unknown> | undefined {
  return typeof schema === "object" && schema !== null && !Array.isArray(schema)
    ? schema as Record<string, unknown>
    : undefined;
}

/**
 * The `properties` of an object schema with none of {@linkcode OPENING_KEYWORDS}, or `undefined`
 * for any other: only then is a property's subschema all that decides what the key may hold.
 * `nested` asks more of a schema below the top level: `"type": "object"` (a schema without a
 * type lets an array through, which has keys of its own: `0`, `length`) and no `default` (filled
 * in as written, unchecked: `{"contry": "DE"}` past a closed schema's properties).
 */
function plainProperties(
  schema: unknown,
  nested: boolean,
): Record<string, unknown> | undefined {
  const object = schemaObject(schema);
  if (object === undefined) return undefined;
  if (nested ? object.type !== "object" : object.type !== undefined && object.type !== "object") {
    return undefined;
  }
  if (nested && Object.hasOwn(object, "default")) return undefined;
  if (OPENING_KEYWORDS.some((keyword) => Object.hasOwn(object, keyword))) return undefined;
  return schemaObject(object.properties ?? {});
}

/**
 * The keys a closed schema lets an event hold (its `properties`), or `undefined` when it may hold
 * others: anything but an object schema with `"additionalProperties": false` and none of
 * {@linkcode OPENING_KEYWORDS} (below the top level, see {@linkcode plainProperties}) is taken to
 * hold any key.
 */
function closedSchemaKeys(schema: unknown, nested = false): string[] | undefined {
  if (schemaObject(schema)?.additionalProperties !== false) return undefined;
  const properties = plainProperties(schema, nested);
  return properties === undefined ? undefined : Object.keys(properties);
}

/**
 * What an event may hold at one top-level key: `held` with the subschema its value was checked
 * against (`undefined` when not known: the schema does not say alone, or a transform wrote it),
 * or never held, with why (`step` the transform step that removes it, none for the schema, which
 * is then closed).
 */
type KeyState =
  | { held: true; schema?: unknown }
  | {
    held: false;
    step?:
      | { index: number; kind: "drop" }
      | { index: number; kind: "rename"; to: string }
      | { index: number; kind: "pick"; picked: string[] };
  };

/** What the events of a stream may hold at each top-level key, before its transform or after. */
function keyStates(parsed: StreamDefinition, afterTransform: boolean): (key: string) => KeyState {
  const closed = closedSchemaKeys(parsed.schema);
  const properties = plainProperties(parsed.schema, false);
  let fixed = new Map<string, KeyState>();
  let rest = (key: string): KeyState =>
    closed !== undefined && !closed.includes(key) ? { held: false } : {
      held: true,
      schema: properties && Object.hasOwn(properties, key) ? properties[key] : undefined,
    };
  const stateOf = (key: string) => fixed.get(key) ?? rest(key);
  if (!afterTransform) return stateOf;
  parsed.transform.forEach((step, index) => {
    // A key a `set` or `rename` writes holds what the step gives it: any value.
    if ("set" in step) {
      for (const key of Object.keys(step.set)) fixed.set(key, { held: true });
    } else if ("rename" in step) {
      // Every source is removed first, then every target written: a key both (`{a: b, b: a}`)
      // is held. Names are top-level keys, a dotted one too, as `drop` reads them.
      for (const [from, to] of Object.entries(step.rename)) {
        fixed.set(from, { held: false, step: { index, kind: "rename", to } });
      }
      for (const key of Object.values(step.rename)) fixed.set(key, { held: true });
    } else if ("drop" in step) {
      for (const key of step.drop) fixed.set(key, { held: false, step: { index, kind: "drop" } });
    } else if ("pick" in step) {
      const kept = new Map(step.pick.map((key) => [key, stateOf(key)]));
      const removed: KeyState = { held: false, step: { index, kind: "pick", picked: step.pick } };
      fixed = kept;
      rest = () => removed;
    }
  });
  return stateOf;
}

/** What {@linkcode missingFieldReason} says of a field always missing. */
interface MissingField {
  /** Why the field is always missing, naming the schema or the transform step that decides it. */
  reason: string;
  /** What to change for the field to be read: the field itself or what {@linkcode reason} names. */
  fix: string;
}

/** The fix for a field always missing because its stream's schema cannot hold it. */
const SCHEMA_FIX = "fix the field or the schema";

/**
 * Why `field` (a name or dotted path, read as `readField` reads it: the key written so, else the
 * parts in turn) is always missing from an event whose top-level keys `stateOf` says, or
 * `undefined` when it may be there; `closed` is the keys of the schema, when closed. Below the
 * top level, only a closed subschema (see {@linkcode closedSchemaKeys}) under plain object
 * schemas all the way is read.
 */
function missingFieldReason(
  field: string,
  stateOf: (key: string) => KeyState,
  afterTransform: boolean,
  closed: readonly string[] = [],
): MissingField | undefined {
  const parts = field.split(".");
  if (parts.length > 1 && stateOf(field).held) return undefined;
  const first = stateOf(parts[0]);
  const what = afterTransform ? "and no transform sets it" : "read before transforms";
  if (!first.held) {
    const step = first.step;
    if (step === undefined) {
      return {
        reason: `Field '${
          quoteInput(field)
        }' is not in the schema, which holds no other fields ("additionalProperties": false), ${what}, so it is always missing; the schema holds: ${
          closed.length === 0 ? "none" : listNames(closed)
        }`,
        fix: SCHEMA_FIX,
      };
    }
    const key = quoteInput(parts[0]);
    const removes = step.kind === "drop"
      ? `drops '${key}'`
      : step.kind === "rename"
      ? `renames '${key}' to '${quoteInput(step.to)}'`
      : `picks only ${listNames(step.picked)}`;
    return {
      reason: `Field '${
        quoteInput(field)
      }' is always missing: transform[${step.index}] ${removes}, and no step after it sets '${key}'`,
      fix: `fix the field or transform[${step.index}]'s ${step.kind}`,
    };
  }
  let schema = first.schema;
  for (let depth = 1; depth < parts.length; depth++) {
    const keys = closedSchemaKeys(schema, true);
    if (keys === undefined) return undefined;
    if (!keys.includes(parts[depth])) {
      const parent = quoteInput(parts.slice(0, depth).join("."));
      const sets = afterTransform ? `and no transform sets '${quoteInput(parts[0])}'` : what;
      return {
        reason: `Field '${
          quoteInput(field)
        }' is not in the schema, whose '${parent}' holds no other fields ("additionalProperties": false), ${sets}, so it is always missing; '${parent}' holds: ${
          keys.length === 0 ? "none" : listNames(keys)
        }`,
        fix: SCHEMA_FIX,
      };
    }
    schema = plainProperties(schema, true)![parts[depth]];
  }
  return undefined;
}

/**
 * The first field a stream reads that it can never hold, as
 * `streams.<name>.counters.<counter>.aggregate.sum: …`, or `undefined` for none: a counter's
 * aggregate field or `groupBy` field (after transforms), `time.field` and `dedupe.field` (read
 * before transforms). A field is never held when its schema, closed by
 * `"additionalProperties": false` (at its top level, or at a plain object schema below it for a
 * dotted path: see {@linkcode closedSchemaKeys}), has no such property and no transform's `set`
 * or `rename` writes it, or when a transform's `drop` removes it, a `rename` moves it away or a
 * `pick` leaves it out, and no step after sets it. Such a field is always missing, so a counter
 * reading it never counts (a missing value is skipped) or groups everything as `null`: a typo
 * would lose the metric silently.
 * When unsure (any keyword that may let more keys in, a default, a value a transform wrote), the
 * field is taken as held.
 */
function counterFieldProblem(
  name: string,
  parsed: StreamDefinition,
): UnknownCounterFieldProblem | undefined {
  const before = keyStates(parsed, false);
  const after = keyStates(parsed, true);
  const closed = closedSchemaKeys(parsed.schema);
  for (const { path, field, afterTransform } of fieldReadsOf(parsed)) {
    const stateOf = afterTransform ? after : before;
    const missing = missingFieldReason(field, stateOf, afterTransform, closed);
    if (missing !== undefined) {
      return {
        problem: `${formatPath(["streams", name, ...path])}: ${missing.reason}`,
        consequence: MISSING_FIELD_CONSEQUENCE[path[0] as "time" | "dedupe" | "counters"],
        fix: missing.fix,
      };
    }
  }
  return undefined;
}

/** What a field always missing does, by where the stream reads it. */
const MISSING_FIELD_CONSEQUENCE = {
  time: "every event is timed when it is received",
  dedupe: "no event is deduplicated",
  counters: "a counter reading it counts nothing or groups as null",
} as const;

/** A field a stream reads but can never hold, with what to change for it to be read. */
export interface UnknownCounterFieldProblem {
  /** As {@linkcode unknownCounterField} says it. */
  problem: string;
  /**
   * What the field always missing does: `every event is timed when it is received` (`time.field`),
   * `no event is deduplicated` (`dedupe.field`), or `a counter reading it counts nothing or groups
   * as null`.
   */
  consequence: string;
  /**
   * The remedy, as the problem's cause says: `fix the field or the schema` for a field its
   * schema cannot hold, `fix the field or transform[1]'s drop` (or `'s rename`, `'s pick`) for
   * one a transform removes.
   */
  fix: string;
}

/**
 * A stream's first counter field, `time.field` or `dedupe.field` its schema can never hold, as
 * `streams.<name>.counters.<counter>.aggregate.sum: Field 'amont' is not in the schema …`, or
 * `undefined` for none (see {@linkcode CompileOptions.unknownCounterFields}).
 */
export function unknownCounterField(stream: CompiledStream): string | undefined {
  return counterFieldProblem(stream.name, stream.parsed)?.problem;
}

/**
 * {@linkcode unknownCounterField}'s problem with the remedy its cause calls for (the schema, or
 * the transform step that removes the field), or `undefined` for none.
 */
export function unknownCounterFieldProblem(
  stream: CompiledStream,
): UnknownCounterFieldProblem | undefined {
  return counterFieldProblem(stream.name, stream.parsed);
}

/** `value` if it is a JSON object, else an empty one. */
function object(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as Record<string, unknown>
    : {};
}

/** The durations of a stream definition (as written), each with its path under the stream. */
function definitionDurations(definition: unknown): Array<[PropertyKey[], unknown]> {
  const found: Array<[PropertyKey[], unknown]> = [];
  const stream = object(definition);
  const time = object(stream.time);
  for (const key of ["lateness", "maxFuture", "idle"]) found.push([["time", key], time[key]]);
  found.push([["dedupe", "ttl"], object(stream.dedupe).ttl]);
  found.push([["idempotencyTtl"], stream.idempotencyTtl]);
  for (const [name, counter] of Object.entries(object(stream.counters))) {
    const window = object(object(counter).window);
    for (const key of Object.keys(WINDOW_LENGTHS)) {
      found.push([["counters", name, "window", key], window[key]]);
    }
    found.push([["counters", name, "retention"], object(counter).retention]);
  }
  return found.filter(([, text]) => typeof text === "string");
}

/** The first duration of a definition that only a lenient read takes, as `streams.<name>.…: …`. */
function durationProblem(name: string, definition: unknown): string | undefined {
  for (const [path, text] of definitionDurations(definition)) {
    try {
      parseDuration(text as string);
    } catch (error) {
      if (!(error instanceof DurationError)) throw error;
      return `${formatPath(["streams", name, ...path])}: ${error.message}`;
    }
  }
  return undefined;
}

/**
 * A stream's first duration with a fraction of a millisecond or a unit given twice, as
 * `streams.<name>.<path>: Cannot read duration …`, or `undefined` for none (see
 * {@linkcode CompileOptions.malformedDurations}).
 */
export function malformedDuration(stream: CompiledStream): string | undefined {
  return durationProblem(stream.name, stream.definition);
}

/**
 * A stream's first schema keyword whose value is not of its kind, as
 * `streams.<name>.schema: <path>: expected …, got …`, or `undefined` for none (see
 * {@linkcode CompileOptions.malformedSchemaKeywords}).
 */
export function malformedSchemaKeyword(stream: CompiledStream): string | undefined {
  const schema = (stream.definition as { schema?: unknown } | undefined)?.schema;
  if (schema === undefined) return undefined;
  const problem = malformedKeyword(schema);
  return problem === undefined ? undefined : `streams.${stream.name}.schema: ${problem}`;
}

/**
 * Why a stream's schema is past `MAX_EXPANDED_SCHEMA_SIZE` objects and arrays once its `$ref`s are
 * expanded, as `streams.<name>.schema: it holds more than …`, or `undefined` for none (see
 * {@linkcode CompileOptions.largeSchemaExpansion}).
 */
export function largeSchemaExpansion(stream: CompiledStream): string | undefined {
  const schema = (stream.definition as { schema?: unknown } | undefined)?.schema;
  const problem = largeExpansion(schema);
  return problem === undefined ? undefined : `streams.${stream.name}.schema: ${problem}`;
}

/**
 * A stream's first alert whose `when` names a field of `group`, `window` or `value` no window of
 * its counter has, as `streams.<name>.alerts[<i>].when: group has no field …`, or `undefined` for
 * none (see {@linkcode CompileOptions.unknownAlertFields}).
 */
export function unknownAlertField(stream: CompiledStream): string | undefined {
  for (const [index, alert] of stream.alerts.entries()) {
    const problem = unknownField(
      alert.source,
      alert.counter,
      `streams.${stream.name}.alerts[${index}]`,
    );
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * A stream's first `origins` entry no browser sends in `Origin`, as
 * `streams.<name>.origins[<i>]: …`, or `undefined` for none (see
 * {@linkcode CompileOptions.malformedOrigins}). The rule is `EDGESTREAM_ALLOWED_ORIGINS`' and a
 * key's `origins`'.
 */
export function malformedOrigin(stream: CompiledStream): string | undefined {
  const origins = (stream.definition as { origins?: unknown } | undefined)?.origins;
  if (!Array.isArray(origins)) return undefined;
  for (const [index, entry] of origins.entries()) {
    if (typeof entry !== "string" || webOrigin(entry) !== undefined) continue;
    // Not the credentials themselves: this goes to the client and to the request's log line.
    const shown = withoutCredentials(entry);
    const credentials = shown !== entry;
    const text = quoteInput(shown);
    const why = credentials
      ? "holds credentials, which no browser sends in Origin"
      : "has a host no browser sends in Origin (a wildcard matches no page: list each origin)";
    return `streams.${stream.name}.origins[${index}]: Origin '${text}' ${why}; expected ${ORIGIN_RULE}`;
  }
  return undefined;
}

/**
 * The first session counter of `stream` whose definition gives `maxGroups` (which bounds panes, and
 * a session counter has none: its cap is `maxSessions`), as `<path>: …`, or `undefined` for none.
 * Releases before this check took it and did nothing with it.
 */
export function sessionMaxGroups(stream: CompiledStream): string | undefined {
  const counters = (stream.definition as { counters?: unknown } | undefined)?.counters;
  if (typeof counters !== "object" || counters === null) return undefined;
  for (const counter of stream.counters) {
    const raw = (counters as Record<string, unknown>)[counter.name];
    if (counter.window.kind !== "session" || typeof raw !== "object" || raw === null) continue;
    if (!Object.hasOwn(raw, "maxGroups")) continue;
    return `streams.${stream.name}.counters.${counter.name}.maxGroups: only tumbling, hopping and sliding windows have maxGroups; this window is session, whose cap is maxSessions: remove maxGroups`;
  }
  return undefined;
}

/**
 * `time.maxFuture` of `stream` when its definition gives it without `time.field` (its events are
 * timed when they are received, so none is ever ahead of the clock for it to reject), as
 * `<path>: …`, or `undefined` for none. `time.lateness` and `time.idle` still mean something there
 * (the watermark is the latest receive time, on Redis any instance's). Releases before this check
 * took it and did nothing with it.
 */
export function receiveTimeMaxFuture(stream: CompiledStream): string | undefined {
  if (stream.timeField !== undefined) return undefined;
  const time = (stream.definition as { time?: unknown } | undefined)?.time;
  if (typeof time !== "object" || time === null || !Object.hasOwn(time, "maxFuture")) {
    return undefined;
  }
  return `streams.${stream.name}.time.maxFuture: only a stream with time.field has maxFuture; this one has none, so each event is timed when it is received, never ahead of the clock: remove maxFuture or set time.field`;
}

/** Most problems an `Invalid config` message lists; the rest are counted. */
export const MAX_LISTED_PROBLEMS = 20;

/**
 * `lines` joined for one message, the first {@linkcode MAX_LISTED_PROBLEMS} of them and a count
 * of the rest: a file (or a definition sent) of thousands of bad entries would otherwise give a
 * startup line, or an error body, of megabytes, many times the size of what was sent.
 */
function listProblems(lines: readonly string[]): string {
  const rest = lines.length - MAX_LISTED_PROBLEMS;
  const listed = lines.slice(0, MAX_LISTED_PROBLEMS).join("; ");
  if (rest <= 0) return listed;
  return `${listed}; and ${rest} more ${rest === 1 ? "problem" : "problems"} not listed`;
}

/**
 * A line for each stream of `raw` (a config not yet parsed) that has more counters than a stream
 * may, read before zod checks them: a stream of bad counters would otherwise get the first of its
 * problems listed, one a counter, and at some 200,000 of them (a 15 MB file) zod ran out of stack
 * (it hands a record's issues up as the arguments of one call, `push(...issues)`).
 */
function tooManyCountersLines(raw: unknown): string[] {
  const streams = typeof raw === "object" && raw !== null
    ? (raw as { streams?: unknown }).streams
    : undefined;
  if (typeof streams !== "object" || streams === null || Array.isArray(streams)) return [];
  return Object.entries(streams).flatMap(([name, definition]) => {
    const counters = typeof definition === "object" && definition !== null
      ? (definition as { counters?: unknown }).counters
      : undefined;
    const count = typeof counters === "object" && counters !== null && !Array.isArray(counters)
      ? Object.keys(counters).length
      : 0;
    return count > MAX_COUNTERS_PER_STREAM
      ? [`${formatPath(["streams", name, "counters"])}: ${tooManyCounters(count)}`]
      : [];
  });
}

/**
 * `configSchema.safeParse(raw)`. Too many counters in a stream are refused before this
 * ({@linkcode tooManyCountersLines}); should zod still run out of stack on what is left (so many
 * bad entries elsewhere), that is said on one line, not as a stack trace.
 */
function parseConfig(raw: unknown): ReturnType<typeof configSchema.safeParse> {
  try {
    return configSchema.safeParse(raw);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new ConfigError(
      "Invalid config: (root): too many problems to check at once (checking them ran out of stack)",
      { cause: error },
    );
  }
}

/**
 * What a refused config adds when it holds stream definitions without `streams` around them
 * (`{"orders": {…}}`, a `PUT /v1/streams/{stream}` body pasted in): where they go. Empty
 * otherwise.
 */
function unwrappedHint(raw: unknown): string {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return "";
  if (Object.hasOwn(raw, "streams")) return "";
  const values = Object.values(raw);
  if (values.length === 0) return "";
  if (!values.every((value) => typeof value === "object" && value !== null)) return "";
  return `; a config file holds its streams under "streams": {"streams": {"<name>": <definition>}}`;
}

/**
 * Checks and compiles a parsed configuration. Throws {@linkcode ConfigError}
 * naming the path of every bad value (the first {@linkcode MAX_LISTED_PROBLEMS}, and how many
 * more), on one line (`path: problem; …`).
 *
 * @example
 * ```ts
 * const streams = compileConfig({ streams: { clicks: { counters: {
 *   perMinute: { window: { tumbling: "1m" }, aggregate: "count" },
 * } } } });
 * ```
 */
export function compileConfig(
  raw: unknown,
  options: CompileOptions = {},
): Map<string, CompiledStream> {
  const protoKeys = protoKeyPaths(raw);
  if (protoKeys.length > 0) {
    const lines = protoKeys.map((path) => `${path}: Key '__proto__' is not allowed`);
    throw new ConfigError(`Invalid config: ${listProblems(lines)}`);
  }
  const crowded = tooManyCountersLines(raw);
  if (crowded.length > 0) throw new ConfigError(`Invalid config: ${listProblems(crowded)}`);
  const result = parseConfig(raw);
  if (!result.success) {
    const lines = result.error.issues.flatMap((issue) => explainIssue(issue, []))
      .map(({ issue, path, at }) => `${formatPath(path)}: ${issueMessage(issue, raw, at)}`);
    throw new ConfigError(`Invalid config: ${listProblems(lines)}${unwrappedHint(raw)}`);
  }
  const streams = new Map<string, CompiledStream>();
  const rawStreams = (raw as { streams: Record<string, unknown> }).streams;
  for (const [name, parsed] of Object.entries(result.data.streams)) {
    // Before compiling: a duration rounded or added up could fail a window's check unsaid.
    const duration = options.malformedDurations
      ? undefined
      : durationProblem(name, rawStreams[name]);
    if (duration !== undefined) throw new ConfigError(`Invalid config: ${duration}`);
    // Before compiling too: what is wrong with a window this short is its length.
    const short = options.shortWindows ? undefined : shortWindowsOf(parsed)[0];
    if (short) throw new ConfigError(`Invalid config: ${shortWindowProblem(name, short)}`);
    // Before compiling: what a refused definition costs is reading it.
    const budget = options.oversizedPatterns ? undefined : patternBudgetProblem(name, parsed);
    if (budget !== undefined) throw new ConfigError(`Invalid config: ${budget}`);
    // A pattern past MAX_PATTERN_SIZE on its own is compiled as it was too (re2js's limits apply).
    let stream: CompiledStream;
    try {
      stream = options.oversizedPatterns
        ? withOversizedPatterns(() => compileStream(name, rawStreams[name], parsed, options))
        : compileStream(name, rawStreams[name], parsed, options);
    } catch (error) {
      // Its problems (an alert defined twice, a schema not of an object…) name their path as the
      // schema's do, and are said as they are: `Invalid config: <path>: …`.
      if (!(error instanceof ConfigError)) throw error;
      throw new ConfigError(`Invalid config: ${error.message}`, { cause: error });
    }
    const repeated = options.repeatedGroupBy ? undefined : repeatedGroupBy(stream)[0];
    if (repeated) {
      throw new ConfigError(`Invalid config: ${repeatedGroupByProblem(name, repeated)}`);
    }
    const origin = options.malformedOrigins ? undefined : malformedOrigin(stream);
    if (origin !== undefined) throw new ConfigError(`Invalid config: ${origin}`);
    const sessionGroups = options.sessionMaxGroups ? undefined : sessionMaxGroups(stream);
    if (sessionGroups !== undefined) throw new ConfigError(`Invalid config: ${sessionGroups}`);
    const maxFuture = options.receiveTimeMaxFuture ? undefined : receiveTimeMaxFuture(stream);
    if (maxFuture !== undefined) throw new ConfigError(`Invalid config: ${maxFuture}`);
    const empty = options.emptyPathParts ? undefined : emptyPathPartsOf(parsed)[0];
    if (empty) throw new ConfigError(`Invalid config: ${emptyPathPartProblem(name, empty)}`);
    const field = options.unknownCounterFields
      ? undefined
      : counterFieldProblem(name, parsed)?.problem;
    if (field !== undefined) throw new ConfigError(`Invalid config: ${field}`);
    streams.set(name, stream);
  }
  return streams;
}

/**
 * Checks and compiles one stream definition, as the config file's
 * `streams.<name>` would be (the same schema, errors and paths). Throws
 * {@linkcode ConfigError}.
 */
export function compileStreamDefinition(
  name: string,
  raw: unknown,
  options: CompileOptions = {},
): CompiledStream {
  return compileConfig({ streams: { [name]: raw } }, options).get(name)!;
}

/**
 * Where the first byte of `bytes` that is not UTF-8 is (its offset and 1-based line), or
 * `undefined` when all are. A decoder in stream mode takes a prefix cut inside a character, so
 * the longest prefix it takes ends at that byte.
 */
function firstNonUtf8(bytes: Uint8Array): { offset: number; line: number } | undefined {
  if (isWholeUtf8(bytes)) return undefined;
  const takes = (length: number) => {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, length), { stream: true });
      return true;
    } catch {
      return false;
    }
  };
  let offset: number;
  if (takes(bytes.length)) {
    // Only the last character is cut off: it starts at its lead byte.
    offset = bytes.length - 1;
    while (offset > 0 && (bytes[offset] & 0xc0) === 0x80) offset--;
  } else {
    let low = 0; // taken
    let high = bytes.length; // not taken
    while (high - low > 1) {
      const middle = Math.floor((low + high) / 2);
      if (takes(middle)) low = middle;
      else high = middle;
    }
    // The byte that made it fail may follow a character begun before it: point at its start.
    offset = high - 1;
    while (offset > 0 && !isWholeUtf8(bytes.subarray(0, offset))) offset--;
  }
  let line = 1;
  for (let i = 0; i < offset; i++) if (bytes[i] === 0x0a) line++;
  return { offset, line };
}

/** Whether `bytes` decode as UTF-8 with no character cut off at the end. */
function isWholeUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * Most bytes of a config file read: 256 definitions at the 64 KiB a `PUT` body may have. A path
 * to an endless file (`/dev/zero`, a pipe that never ends) would otherwise be read until memory
 * runs out, startup hanging meanwhile.
 */
export const MAX_CONFIG_FILE_BYTES = 16 * 1024 * 1024;

/** How long startup waits for a process to open a named pipe (`mkfifo`) for writing. */
export const CONFIG_PIPE_WRITER_WAIT_MS = 5_000;

/**
 * Opens `path` to read. Opening a named pipe waits until a process opens it for writing, and Deno
 * cannot cancel an open: a pipe no one writes to would keep startup waiting forever, so it is
 * refused after {@linkcode CONFIG_PIPE_WRITER_WAIT_MS}. A pipe with its writer (`<(cat x.json)`,
 * another process's `mkfifo`) is read as a file.
 */
async function openToRead(path: string): Promise<Deno.FsFile> {
  const info = await Deno.stat(path).catch(() => undefined);
  if (info?.isFifo !== true) return await Deno.open(path);
  const opening = Deno.open(path);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const waited = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), CONFIG_PIPE_WRITER_WAIT_MS);
  });
  const file = await Promise.race([opening, waited]).finally(() => clearTimeout(timer));
  if (file !== undefined) return file;
  // Let the waiting open through, as a writer that writes nothing, so it holds no thread.
  try {
    closeSync(openSync(path, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK));
  } catch {
    // The open went through (or failed) meanwhile: nothing waits.
  }
  opening.then((late) => late.close(), () => {});
  throw new ConfigError(
    `Config file ${path} is a named pipe (FIFO) that no process opened for writing within ${
      CONFIG_PIPE_WRITER_WAIT_MS / 1000
    } s: give the path of a JSON file of stream definitions`,
  );
}

/**
 * For a relative path, the directory it was read from: a service manager starts a process where it
 * likes (systemd in `/` unless `WorkingDirectory=` says otherwise), so `examples/config.json` that
 * worked in a shell is then missing, and the line must say from where it was looked for.
 */
function fromWorkingDirectory(path: string): string {
  if (isAbsolute(path)) return "";
  try {
    return ` (relative to the working directory ${Deno.cwd()})`;
  } catch {
    // Not allowed to read it (--allow-read naming other paths): said without it.
    return " (relative to the working directory)";
  }
}

/** The first `limit` bytes of the file at `path`, plus one more if it has more (never read). */
async function readAtMost(path: string, limit: number): Promise<Uint8Array> {
  const file = await openToRead(path);
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (total <= limit) {
      const chunk = new Uint8Array(Math.min(1024 * 1024, limit + 1 - total));
      const read = await file.read(chunk);
      if (read === null) break;
      chunks.push(chunk.subarray(0, read));
      total += read;
    }
  } finally {
    file.close();
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/** Options for {@linkcode loadConfigFile}. */
export interface LoadConfigOptions {
  /**
   * Told what the file holds that is served as before a check refusing it was made, to warn:
   * bytes that are not UTF-8 (read as U+FFFD, as releases before did, where a `PUT` body with
   * them is refused). The counters and other parts to warn about are found by
   * {@linkcode repeatedGroupBy}, {@linkcode shortWindows} and the others.
   */
  onWarning?(text: string): void;
}

/**
 * Reads and compiles a JSON config file. A counter whose `groupBy` names a field twice, which
 * releases before that check took, is compiled as it counted (see
 * {@linkcode CompileOptions.repeatedGroupBy}): find it with {@linkcode repeatedGroupBy} to warn.
 */
export async function loadConfigFile(
  path: string,
  options: LoadConfigOptions = {},
): Promise<Map<string, CompiledStream>> {
  let bytes: Uint8Array;
  try {
    bytes = await readAtMost(path, MAX_CONFIG_FILE_BYTES);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(
      `Cannot read config file ${path}${fromWorkingDirectory(path)}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (bytes.byteLength > MAX_CONFIG_FILE_BYTES) {
    throw new ConfigError(
      `Config file ${path} is larger than ${MAX_CONFIG_FILE_BYTES} bytes (16 MiB), the most it may have: give the path of a JSON file of stream definitions (each at most 64 KiB, as through the API)`,
    );
  }
  // Read as releases before did (U+FFFD for each bad byte): a file deployed with such bytes keeps
  // running, said so, as a PUT body with them is refused.
  const text = new TextDecoder().decode(bytes);
  const bad = firstNonUtf8(bytes);
  if (bad !== undefined) {
    options.onWarning?.(
      `Config file ${path} is not UTF-8 at line ${bad.line} (byte ${bad.offset}): read with U+FFFD in place of each byte that is not; save it as UTF-8 (a definition sent through the API with such bytes is refused)`,
    );
  }
  // A byte order mark, as some editors write, is not part of the JSON.
  const json = text.startsWith("\uFEFF") ? text.slice(1) : text;
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    // V8's message quotes the text near the problem: the start of a file that is no config
    // (`EDGESTREAM_CONFIG=/etc/shadow`) would be printed in the startup line. Where, not what.
    const problem = jsonSyntaxProblem(error, json);
    const where = problem === undefined
      ? ""
      : `: ${problem.reason} at line ${problem.line}, column ${problem.column}`;
    throw new ConfigError(`Config file ${path} is not valid JSON${where}`);
  }
  // JSON.parse keeps the last of a key given twice: a stream or counter pasted in again without a
  // new name would replace the first without a word.
  const duplicate = duplicateKeyProblem(text);
  if (duplicate !== undefined) throw new ConfigError(`Config file ${path}: ${duplicate}`);
  // A file that ran before these checks keeps running (changing the counter would start it over;
  // a schema keyword, a schema too large once its $refs are expanded, an origin, a duration, a window shorter than a second, patterns past the
  // definition's budget or a pattern's own, or an alert naming a field its windows lack, refused
  // since, are compiled as they were): find them to warn.
  // Unlike a stored definition, a field path with an empty part is refused (as other bad paths).
  // Nor is maxGroups on a session counter, nor time.maxFuture without time.field, which did
  // nothing: removing them changes no count.
  return compileConfig(raw, {
    ...AS_STORED,
    emptyPathParts: false,
    sessionMaxGroups: false,
    receiveTimeMaxFuture: false,
  });
}

/**
 * How a definition stored (or deployed) before a check refusing it compiles: as it was (a groupBy
 * field named twice, a schema keyword not of its kind, a schema too large once its `$ref`s are
 * expanded, an origin no browser sends, a duration with
 * a fraction of a millisecond or a unit given twice, a window shorter than a second, patterns past
 * the budget, an alert or a counter reading a field it can never have, a field path with an empty
 * part, `maxGroups` on a session counter, `time.maxFuture` without `time.field`), each found to
 * warn.
 */
export const AS_STORED: CompileOptions = {
  repeatedGroupBy: true,
  malformedSchemaKeywords: true,
  largeSchemaExpansion: true,
  malformedOrigins: true,
  malformedDurations: true,
  shortWindows: true,
  oversizedPatterns: true,
  unknownAlertFields: true,
  unknownCounterFields: true,
  emptyPathParts: true,
  sessionMaxGroups: true,
  receiveTimeMaxFuture: true,
};
