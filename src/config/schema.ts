/**
 * The zod schema of the configuration file: streams as data, checked once at
 * startup. Errors name the path of the bad value.
 *
 * @module
 */
import { z } from "zod";
import { expressionText, transformStep } from "../transform/mod.ts";
import { DurationError, parseDuration } from "./duration.ts";
import { objectKeysAt } from "../validate/mod.ts";

/** Names of streams, counters and endpoints, in config files and in paths. */
export const NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** What {@linkcode NAME} takes, as every refusal of a name words it. */
export const NAME_RULE = "Names are 1-64 characters of letters, digits, '_' and '-'";

/** Longest duration a config may name: windows, retention and TTLs stay within a year. */
export const MAX_DURATION_MS = 366 * 86_400_000;

/**
 * `text` in milliseconds, or an issue added to `ctx` and `undefined`. Takes a fraction of a
 * millisecond and a unit given twice as releases before those checks did; `compileConfig`
 * refuses them (`malformedDuration`), unless told to take what was stored or deployed then.
 */
function durationMs(text: string, ctx: z.RefinementCtx): number | undefined {
  try {
    const ms = parseDuration(text, { lenient: true });
    if (ms <= MAX_DURATION_MS) return ms;
    ctx.addIssue({ code: "custom", message: `Duration '${text}' is longer than 366 days` });
  } catch (error) {
    ctx.addIssue({
      code: "custom",
      message: error instanceof DurationError ? error.message : String(error),
    });
  }
  return undefined;
}

/** Default of a session counter's `maxSessions`. */
export const DEFAULT_MAX_SESSIONS = 100_000;

/**
 * A duration as text (`"30s"`), parsed to milliseconds (see `durationMs`). A default is given as
 * text too (`.prefault("1h")`, parsed as if sent), so that the API document tells it as written.
 */
export const duration = z.string().transform((text, ctx) => durationMs(text, ctx) ?? z.NEVER);

/**
 * A duration above zero. One that is zero only once rounded (`0.4ms`), refused by every release,
 * is told why it is not whole rather than that it is zero.
 */
const positiveDuration = z.string().transform((text, ctx) => {
  const ms = durationMs(text, ctx);
  if (ms === undefined) return z.NEVER;
  if (ms > 0) return ms;
  let message = "Duration must be greater than zero";
  try {
    parseDuration(text);
  } catch (error) {
    if (error instanceof DurationError) message = error.message;
  }
  ctx.addIssue({ code: "custom", message });
  return z.NEVER;
});

/** A field name or dotted path into the event (`"user.country"`). */
const fieldPath = z.string().min(1).max(256).refine(
  (path) =>
    !path.split(".").some((part) => ["__proto__", "constructor", "prototype"].includes(part)),
  { error: (issue) => `Field path '${String(issue.input)}' is not allowed` },
);

const windowSchema = z.union([
  z.strictObject({ tumbling: positiveDuration }),
  z.strictObject({ hopping: positiveDuration, every: positiveDuration }),
  z.strictObject({ sliding: positiveDuration, precision: positiveDuration }),
  z.strictObject({ session: positiveDuration }),
], { error: "Window must be {tumbling}, {hopping, every}, {sliding, precision} or {session}" });

const aggregateSchema = z.union([
  z.literal("count"),
  z.strictObject({ sum: fieldPath }),
  z.strictObject({ min: fieldPath }),
  z.strictObject({ max: fieldPath }),
  z.strictObject({ avg: fieldPath }),
  z.strictObject({ distinct: fieldPath }),
  z.strictObject({
    quantiles: fieldPath,
    accuracy: z.number().min(0.001).max(0.1).default(0.01),
  }),
], {
  error:
    'Aggregate must be "count", one of {sum|min|max|avg|distinct: "<field>"} or {quantiles: "<field>", accuracy?}',
});

const counterSchema = z.strictObject({
  description: z.string().max(1024).optional(),
  window: windowSchema,
  groupBy: z.array(fieldPath).max(8).default([]),
  aggregate: aggregateSchema,
  retention: duration.prefault("1h"),
  /** Fixed windows only: most groups per pane (on a session counter refused, see compile.ts). */
  maxGroups: z.int().min(1).max(1_000_000).default(1000),
  /** Session counters only: most sessions open at once (see README, Session windows). */
  maxSessions: z.int().min(1).max(1_000_000).optional().meta({
    description:
      `Session counters only: most sessions open at once. Default: \`${DEFAULT_MAX_SESSIONS}\``,
  }),
});

/**
 * When an alert's `when` is checked: `live` (after ingest, on the value so far, and at close) or
 * `close` (on the final value only).
 */
export const ALERT_EVALUATIONS = ["live", "close"] as const;

/** An alert: a CEL condition over a counter's window (`value`, `group`, `window`). */
const alertSchema = z.strictObject({
  name: z.string().regex(NAME, NAME_RULE),
  description: z.string().max(1024).optional(),
  counter: z.string().regex(NAME, NAME_RULE),
  when: expressionText,
  /**
   * When `when` is checked: `live`, right after ingest on the window's value so far and again on
   * its final value at close; `close`, on the final value only (see README, `alerts`).
   */
  evaluate: z.enum(ALERT_EVALUATIONS).default("live").meta({
    description:
      "When `when` is checked: `live` right after ingest on the window's value so far and again on its final value when the window closes, `close` on the final value only",
  }),
});

/**
 * The slowest refill of a rate limit (events or deliveries per second): one a thousand seconds.
 * Slower ones are refused: a bucket refilling slower would outlive any sensible use, and its
 * times (Retry-After, the bucket's expiry) grow past what headers and Redis take as integers.
 */
export const MIN_RATE_PER_SECOND = 0.001;

/** The fastest refill of an ingest rate limit (a stream's `limits`, a key's `rateLimit`). */
export const MAX_RATE_PER_SECOND = 1_000_000;

/** The largest `burst` of an ingest rate limit (a stream's `limits`, a key's `rateLimit`). */
export const MAX_BURST = 1_000_000;

/** A token bucket: `eventsPerSecond` refill, at most `burst` events at once. */
export const rateLimitSchema = z.strictObject({
  eventsPerSecond: z.number().min(MIN_RATE_PER_SECOND).max(MAX_RATE_PER_SECOND),
  burst: z.int().min(1).max(MAX_BURST),
});

/**
 * A web origin, `http(s)://host[:port]` without path, serialized as browsers send it. Takes a
 * wildcard host or credentials as releases before that check did; `compileConfig` refuses them
 * (`malformedOrigin`), unless told to take what was stored or deployed then.
 */
export const originSchema = z.string().max(256).transform((text, ctx) => {
  let url: URL | undefined;
  try {
    url = /^https?:\/\/[^/?#\s]+\/?$/i.test(text) ? new URL(text) : undefined;
  } catch {
    url = undefined;
  }
  if (!url) {
    ctx.addIssue({
      code: "custom",
      message:
        `Origin '${text}' must be http(s)://host[:port] without path, e.g. 'https://shop.example'`,
    });
    return z.NEVER;
  }
  return url.origin;
});

/**
 * What a stream's `time` says of when its windows close, read the same by
 * {@linkcode streamDefinitionSchema} and {@linkcode streamCloseTimeSchema}.
 */
const closeTimeFields = {
  field: fieldPath.optional(),
  lateness: duration.prefault("30s"),
  idle: duration.optional(),
};

/** One stream definition as written in the config file. */
export const streamDefinitionSchema = z.strictObject({
  description: z.string().max(1024).optional(),
  schema: z.record(z.string(), z.unknown()).default({ type: "object" }),
  time: z.strictObject({
    // In this order (maxFuture before idle), as its issues are listed.
    field: closeTimeFields.field,
    lateness: closeTimeFields.lateness,
    /** Event-time streams only: most an event may be ahead of the clock (without `field` refused). */
    maxFuture: duration.prefault("5m"),
    idle: closeTimeFields.idle,
  }).prefault({}),
  dedupe: z.strictObject({
    field: fieldPath,
    ttl: positiveDuration.prefault("24h"),
  }).optional(),
  idempotencyTtl: positiveDuration.prefault("24h"),
  transform: z.array(transformStep).max(64).default([]),
  counters: z.record(z.string().regex(NAME, NAME_RULE), counterSchema).prefault({}),
  alerts: z.array(alertSchema).max(64).default([]),
  limits: rateLimitSchema.optional(),
  origins: z.array(originSchema).max(64).optional(),
});

/**
 * Only what a stream definition says of when its windows close (`time.field`, `time.lateness`,
 * `time.idle`, read and defaulted as {@linkcode streamDefinitionSchema} does), any other key
 * passed over: read from a definition this release cannot compile (a newer release's, with an
 * option it does not know), see `closeTimeOf`.
 */
export const streamCloseTimeSchema = z.object({
  time: z.object(closeTimeFields).prefault({}),
});

/** The configuration file. */
export const configSchema = z.strictObject({
  streams: z.record(z.string().regex(NAME, NAME_RULE), streamDefinitionSchema),
});

/**
 * The keys the object at `path` of a config file may hold (`["streams", "orders", "counters",
 * "c"]`: a counter's), for a misspelled one's hint; `undefined` where the schema has no one
 * object (a union's members, a value that is not an object).
 */
export function keysTakenAt(path: readonly PropertyKey[]): string[] | undefined {
  return objectKeysAt(configSchema, path);
}

/** A stream definition after defaults and duration parsing. */
export type StreamDefinition = z.output<typeof streamDefinitionSchema>;
/** A counter definition after defaults and duration parsing. */
export type CounterDefinition = z.output<typeof counterSchema>;
/** An alert definition as written. */
export type AlertDefinition = z.output<typeof alertSchema>;
/** When an alert's `when` is checked (see {@linkcode ALERT_EVALUATIONS}). */
export type AlertEvaluation = (typeof ALERT_EVALUATIONS)[number];
/** The whole configuration after parsing. */
export type Config = z.output<typeof configSchema>;
