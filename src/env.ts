/**
 * Every environment variable edgestream reads, read and checked once, for
 * both entry points (`src/main.ts` and `deploy/main.ts`). A bad value throws
 * a {@linkcode ConfigError} whose message starts with the variable's name, so
 * a startup mistake is one line.
 *
 * | variable | meaning | default |
 * | --- | --- | --- |
 * | `EDGESTREAM_CONFIG` | stream definitions (JSON file) | `examples/config.json` |
 * | `PORT` | port to listen on (0 picks a free one) | `8000` |
 * | `HOST` | address to listen on (a value that names no host is refused); open mode always listens on loopback | `0.0.0.0` |
 * | `EDGESTREAM_KEYS` | `scope:key` pairs; none means open development mode | none |
 * | `EDGESTREAM_ALLOWED_HOSTS` | host names open mode answers besides loopback ones (`dev.example.com`; `.example.com` with subdomains) | none |
 * | `EDGESTREAM_ALLOWED_ORIGINS` | origins besides the server's own that may change state and open WebSockets (`https://app.example.com`) | none |
 * | `UPSTASH_REDIS_REST_URL`, `UPSTASH_REDIS_REST_TOKEN` | the Redis store (both or neither) | memory store |
 * | `EDGESTREAM_PREFIX` | Redis key prefix | `es` |
 * | `EDGESTREAM_MEMORY_DEDUPE_MAX` | memory store: most dedupe ids a stream holds | `10000000` |
 * | `EDGESTREAM_SWEEP_EVERY` | self-hosted sweep interval, from `100ms` to `100s`; `0s` turns it off | `5s` |
 * | `EDGESTREAM_WEBHOOK_ALLOW` | CIDRs, addresses and host names webhooks may reach although internal | none |
 * | `EDGESTREAM_WEBHOOK_ALLOW_HTTP` | `true`: plain http for every host | `false` |
 * | `EDGESTREAM_WEBHOOK_DISABLE_AFTER` | disable an endpoint failing this long (above 0, at most 366d) | `5d` |
 * | `EDGESTREAM_WEBHOOK_SLOW_AFTER` | an endpoint is slow once a send to it takes (or waits) this long (above 0, at most the 15 s request timeout) | `5s` |
 * | `EDGESTREAM_WEBHOOK_SLOW_FOR` | an endpoint stays slow this long after its last slow send (above 0, at most 366d) | `60s` |
 * | `EDGESTREAM_ENV` | `production` refuses the memory store and open mode (also on Deno Deploy's production timeline) | `development` |
 * | `EDGESTREAM_ALLOW_MEMORY` | `true`: allow the memory store in production (a one-instance demo) | `false` |
 * | `EDGESTREAM_LOG_LEVEL` | lowest log level written: `trace`, `debug`, `info`, `warning`, `error`, `fatal` | `info` |
 * | `EDGESTREAM_SHUTDOWN` | most time a stopping process (SIGTERM, SIGINT) takes before it exits | `4s` |
 * | `EDGESTREAM_DRAIN` | first part of a stop during which the listener stays open, `/readyz` answers 503 and other requests are served; below `EDGESTREAM_SHUTDOWN` | `0s` |
 * | `EDGESTREAM_SUBSCRIPTIONS_PER_KEY` | most live subscriptions one API key (open mode: one client address) holds on a process | `100` |
 * | `EDGESTREAM_SUBSCRIPTIONS_MAX` | most live subscriptions a process holds | `10000` |
 * | `EDGESTREAM_INGEST_SOCKETS_PER_KEY` | most WebSocket ingest connections one API key (publishable ones too; open mode: one client address) holds on a process | `100` |
 * | `EDGESTREAM_INGEST_SOCKETS_MAX` | most WebSocket ingest connections a process holds | `10000` |
 * | `EDGESTREAM_KEYS_MAX` | most API keys created at run time (`POST /v1/keys`) a deployment holds; `EDGESTREAM_KEYS` does not count | `10000` |
 * | `EDGESTREAM_WEBHOOKS_MAX` | most webhook endpoints a deployment holds | `1000` |
 * | `EDGESTREAM_STREAMS_MAX` | most streams created through the API (`PUT /v1/streams/{stream}`) a deployment holds; config-file streams do not count | `1000` |
 * | `OTEL_DENO`, `OTEL_EXPORTER_OTLP_*ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_METRIC_EXPORT_INTERVAL` | Deno's OpenTelemetry export, read by Deno; checked here (with `OTEL_DENO=true`) as Deno drops a value it cannot use without a word | off |
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { Redis } from "@upstash/redis";
import {
  type CompiledStream,
  ConfigError,
  DurationError,
  largeSchemaExpansion,
  loadConfigFile,
  malformedDuration,
  malformedOrigin,
  malformedSchemaKeyword,
  MAX_DURATION_MS,
  MIN_WINDOW_MS,
  oversizedPatterns,
  parseDuration,
  repeatedGroupBy,
  shortWindowProblem,
  shortWindows,
  StreamRegistry,
  unknownAlertField,
  unknownCounterFieldProblem,
} from "./config/mod.ts";
import {
  AllowListError,
  DEFAULT_TIMEOUT_MS,
  parseAllowList,
  UrlPolicy,
  WebhookService,
} from "./fanout/webhooks/mod.ts";
import { WINDOWS_PER_SWEEP } from "./fanout/mod.ts";
import { KeyRing } from "./http/auth.ts";
import {
  DEFAULT_INGEST_SOCKETS_MAX,
  DEFAULT_INGEST_SOCKETS_PER_KEY,
  DEFAULT_SUBSCRIPTIONS_MAX,
  DEFAULT_SUBSCRIPTIONS_PER_KEY,
  type SlotLimits,
} from "./http/connection_slots.ts";
import {
  OriginSettingError,
  type OriginSettings,
  parseAllowedHosts,
  parseAllowedOrigins,
} from "./http/origin.ts";
import {
  asksSetup,
  DEFAULT_KEYS_MAX,
  DEFAULT_STREAMS_MAX,
  DEFAULT_WEBHOOKS_MAX,
  type DefinitionStore,
  type DeliveryStore,
  type KeyStore,
  MemoryDefinitionStore,
  MemoryDeliveryStore,
  MemoryKeyStore,
  MemoryStore,
  REDIS_CALL_TIMEOUT_MS,
  RedisDefinitionStore,
  RedisDeliveryStore,
  RedisKeyStore,
  redisSetupWarnings,
  RedisStore,
  type Store,
} from "./store/mod.ts";
import { InstrumentedStore } from "./telemetry/mod.ts";
import { LOG_LEVELS, type LogLevel, REDACTED } from "./telemetry/logging.ts";
import { nearestName, withoutCredentials } from "./validate/mod.ts";

/** Where variables come from: `Deno.env`, or a plain map in tests. */
export interface EnvSource {
  /** The variable's value, or undefined when it is not set. */
  get(name: string): string | undefined;
  /**
   * Every variable set, as `Deno.env` gives them: when present, an `EDGESTREAM_` name that is no
   * setting (a typo) gets a startup warning.
   */
  toObject?(): Record<string, string>;
}

/**
 * Every `EDGESTREAM_` variable read: those of the table above, and `EDGESTREAM_CHROMIUM`, the
 * browser the tests drive (README, Tests).
 */
export const SETTING_NAMES: readonly string[] = [
  "EDGESTREAM_CONFIG",
  "EDGESTREAM_KEYS",
  "EDGESTREAM_ALLOWED_HOSTS",
  "EDGESTREAM_ALLOWED_ORIGINS",
  "EDGESTREAM_PREFIX",
  "EDGESTREAM_MEMORY_DEDUPE_MAX",
  "EDGESTREAM_SWEEP_EVERY",
  "EDGESTREAM_WEBHOOK_ALLOW",
  "EDGESTREAM_WEBHOOK_ALLOW_HTTP",
  "EDGESTREAM_WEBHOOK_DISABLE_AFTER",
  "EDGESTREAM_WEBHOOK_SLOW_AFTER",
  "EDGESTREAM_WEBHOOK_SLOW_FOR",
  "EDGESTREAM_ENV",
  "EDGESTREAM_ALLOW_MEMORY",
  "EDGESTREAM_LOG_LEVEL",
  "EDGESTREAM_SHUTDOWN",
  "EDGESTREAM_DRAIN",
  "EDGESTREAM_SUBSCRIPTIONS_PER_KEY",
  "EDGESTREAM_SUBSCRIPTIONS_MAX",
  "EDGESTREAM_INGEST_SOCKETS_PER_KEY",
  "EDGESTREAM_INGEST_SOCKETS_MAX",
  "EDGESTREAM_KEYS_MAX",
  "EDGESTREAM_WEBHOOKS_MAX",
  "EDGESTREAM_STREAMS_MAX",
  "EDGESTREAM_CHROMIUM",
];

/**
 * A warning for each `EDGESTREAM_` variable set that is no setting: a typo
 * (`EDGESTREAM_SWEEP_EVRY`) would otherwise leave the default in force without a word. The name
 * is compared in upper case (a variable name is case-sensitive: `edgestream_keys` is no setting
 * either); the nearest setting is named when it is a few edits away.
 */
function unknownSettings(source: EnvSource): StartupNotice[] {
  let variables: Record<string, string>;
  try {
    variables = source.toObject?.() ?? {};
  } catch (error) {
    // `--allow-env=NAME,…` grants reading those names alone: the whole environment cannot be
    // listed, and the settings it names are read as before.
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    return [{
      level: "info",
      text:
        "The environment cannot be listed (--allow-env names some variables only): unknown EDGESTREAM_ variables (typos) are not checked",
    }];
  }
  const names = Object.keys(variables);
  const known = new Set(SETTING_NAMES);
  const typos = names.filter((name) =>
    name.toUpperCase().startsWith("EDGESTREAM_") && !known.has(name)
  ).sort().map((name) => {
    const nearest = nearestName(name, SETTING_NAMES, { ignoreCase: true, within: () => 3 });
    const hint = nearest === undefined ? "" : ` (did you mean ${nearest.name}?)`;
    return {
      level: "warning" as const,
      text: `${name} is not a setting edgestream reads${hint}: ignored`,
    };
  });
  return [...typos, ...redisTypos(variables)];
}

/** The two variables that choose the Redis store. */
const REDIS_SETTINGS = ["UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"] as const;

/**
 * A warning for each `UPSTASH_REDIS_` variable set that is neither Redis setting, unless both are
 * set (an empty value counts as not set): a name written otherwise (`UPSTASH_REDIS_URL`,
 * `UPSTASH_REDIS_TOKEN`) left the memory store in force, each process counting alone, with
 * nothing said but the store's info line. Beside both settings (Upstash's read-only token) none.
 */
function redisTypos(variables: Record<string, string>): StartupNotice[] {
  const set = REDIS_SETTINGS.filter((setting) => (variables[setting] ?? "") !== "");
  if (set.length === REDIS_SETTINGS.length) return [];
  // With one of them set, startup stops ("set both"), its line naming this one too.
  const memory = set.length === 0
    ? ", and without UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN the store is memory"
    : "";
  return Object.keys(variables)
    .filter((name) =>
      name.toUpperCase().startsWith("UPSTASH_REDIS_") &&
      !(REDIS_SETTINGS as readonly string[]).includes(name)
    )
    .sort()
    .map((name) => ({
      level: "warning" as const,
      // Always a hint: a name starting UPSTASH_REDIS_ can only mean one of the two.
      text: `${name} is not a setting edgestream reads (did you mean ${
        nearestName(name, REDIS_SETTINGS, { ignoreCase: true })!.name
      }?): ignored${memory}`,
    }));
}

/**
 * `env` with an empty value read as not set, the one rule for every variable: a compose file's
 * `${VAR}` of an unset variable, or `PORT=` in an env file, gives one.
 */
function setOnly(env: EnvSource): EnvSource {
  return {
    get(name) {
      const value = env.get(name);
      return value === "" ? undefined : value;
    },
  };
}

/** Everything a server needs, built from the environment. */
export interface ServerConfig {
  /** The config file the streams came from. */
  configPath: string;
  /**
   * The streams served: the config file's, and those created at run time,
   * shared through the store's definitions. `serve()` records the config
   * streams (`registerConfig`) and starts its poll.
   */
  streams: StreamRegistry;
  /**
   * Memory or Redis, per the Upstash variables, measured (`edgestream.store.*`),
   * seen through the registry (each stream incarnation's generation).
   */
  store: Store;
  /** Where the webhook service keeps endpoints and deliveries. */
  deliveries: DeliveryStore;
  /** Webhook fan-out, its deliveries kept beside the store. */
  webhooks: WebhookService;
  /** API keys; empty means open development mode. */
  keys: KeyRing;
  /** Allowed hosts (open mode) and origins, for `createApp`. */
  origins: Required<OriginSettings>;
  /** Address to listen on (loopback in open mode). */
  hostname: string;
  /** Port to listen on. */
  port: number;
  /** Self-hosted sweep interval (ms); 0 means no timer (always on Deploy, which reads none). */
  sweepEveryMs: number;
  /** Most time (ms) a stopping server takes before it exits; above 0. */
  shutdownMs: number;
  /**
   * The first part (ms) of `shutdownMs` during which a stopping server still listens and serves,
   * `/readyz` answering 503 `shutting_down`; 0 (no drain) or more, below `shutdownMs`; 0 on
   * Deploy, which reads none.
   */
  drainMs: number;
  /** Lines worth printing at startup: the store, the streams, open mode. */
  notices: StartupNotice[];
  /**
   * Warnings on how the store's server keeps data, asked of it once (a redis-server without
   * `appendonly yes` or with a `maxmemory-policy` other than `noeviction`); none for the memory
   * store, or where Redis refuses `CONFIG GET` (Upstash); one saying nothing was checked where
   * Redis did not answer it (unreachable at startup).
   */
  storeWarnings(): Promise<StartupNotice[]>;
  /** Lowest log level written. */
  logLevel: LogLevel;
  /** Values no log line may show: the API keys and the Redis token. */
  secrets: string[];
  /** Most live subscriptions per key (open mode: per client address) and per process. */
  subscriptions: Required<SlotLimits>;
  /** Most WebSocket ingest connections per key (open mode: per client address) and per process. */
  ingestSockets: Required<SlotLimits>;
}

/** A line printed at startup; a `warning` (open mode, a setting without effect) shows at that level too. */
export interface StartupNotice {
  /** Its log level. */
  level: "info" | "warning";
  /** The text, printed as it is. */
  text: string;
}

/** Options for {@linkcode configFromEnv}. */
export interface ConfigFromEnvOptions {
  /** Config file when `EDGESTREAM_CONFIG` is not set. @default {examples/config.json} */
  defaultConfigPath?: string;
  /**
   * Where the server runs. On `"deploy"` (Deno Deploy, `deploy/main.ts`: a cron sweeps, and no
   * load balancer asks `/readyz`) `EDGESTREAM_SWEEP_EVERY` and `EDGESTREAM_DRAIN` are not read,
   * so no value of theirs stops startup: each one set (a drain other than zero) is a warning notice
   * that it has no effect there, and `sweepEveryMs` and `drainMs` are 0.
   * @default {"self-hosted"}
   */
  platform?: "self-hosted" | "deploy";
}

const LOOPBACK_NAMES = new Set(["127.0.0.1", "localhost", "::1"]);

/** A label of a host name (`_` too, as resolvers take it). */
const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/**
 * Whether `text` can name a host: an IPv4 address written as four numbers from 0 to 255, an IPv6
 * address (a zone, `%eth0`, after it; in brackets or not), or a host name of letters, digits, `-` and `_` whose last
 * label is not a number (`999.1.1.1` and `1.2.3` are no addresses, and no names).
 *
 * Not `HOST_NAME` (validate/origin.ts) nor http/origin.ts's `parseHost`: those read a name the
 * URL parser normalized first (an origin, a `Host` header), which turns `1.2.3` into `1.2.0.3`,
 * `0x7f.1` into `127.0.0.1` and `bücher.example` into punycode, and takes a label starting or
 * ending with `-`, a port, and a bracketed IPv6 address. `HOST` goes to the listener unnormalized,
 * as written, so it is read as written.
 */
function isHost(text: string): boolean {
  // Bracketed, as a URL writes an IPv6 address (`[::1]`): the listener takes it so too.
  const bracketed = /^\[([^\]]*)\]$/.exec(text)?.[1];
  if (bracketed !== undefined) return bracketed.includes(":") && isHost(bracketed);
  if (text.includes(":")) return URL.canParse(`http://[${text.replace(/%[^%]+$/, "")}]`);
  if (/^[0-9.]+$/.test(text)) {
    const parts = text.split(".");
    return parts.length === 4 &&
      parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255);
  }
  const labels = text.replace(/\.$/, "").split(".");
  return text.length <= 253 && labels.every((label) => HOST_LABEL.test(label)) &&
    !/^\d+$/.test(labels.at(-1)!);
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Longest duration a timer takes: 24 days (timers overflow past 2^31 - 1 ms, about 24.8). */
const MAX_TIMER_MS = 24 * 86_400_000;

/**
 * A duration variable of at most 366 days, or a ConfigError naming it. `timer`: a timer waits
 * that long, so it may not exceed {@linkcode MAX_TIMER_MS}.
 */
function readDuration(env: EnvSource, name: string, fallback: string, timer = false): number {
  const text = env.get(name) ?? fallback;
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch (error) {
    if (!(error instanceof DurationError)) throw error;
    throw new ConfigError(`${name}: ${error.message}`, { cause: error });
  }
  if (timer && ms > MAX_TIMER_MS) {
    throw new ConfigError(`${name}: expected at most 24d, got '${text}'`);
  }
  // As every duration the README describes, a config file's too.
  if (ms > MAX_DURATION_MS) {
    throw new ConfigError(`${name}: expected at most 366d, got '${text}'`);
  }
  return ms;
}

/** A list variable read by `parse`, or a ConfigError naming it. */
function readList(env: EnvSource, name: string, parse: (text?: string) => string[]): string[] {
  try {
    return parse(env.get(name));
  } catch (error) {
    if (!(error instanceof OriginSettingError)) throw error;
    throw new ConfigError(`${name}: ${error.message}`, { cause: error });
  }
}

/** Shortest sweep interval: a shorter one would keep the store busy with sweeps. */
const MIN_SWEEP_MS = 100;

/**
 * Longest sweep interval, 100 s: a sweep closes at most {@linkcode WINDOWS_PER_SWEEP} windows of
 * a counter, so a rarer one lets a counter of the shortest windows ({@linkcode MIN_WINDOW_MS})
 * that keeps getting events close them later and later, holding their panes, never catching up.
 */
const MAX_SWEEP_MS = WINDOWS_PER_SWEEP * MIN_WINDOW_MS;

/** `EDGESTREAM_SWEEP_EVERY`: 0 (no timer), or from {@linkcode MIN_SWEEP_MS} to {@linkcode MAX_SWEEP_MS}. */
function readSweepEvery(env: EnvSource): number {
  const text = env.get("EDGESTREAM_SWEEP_EVERY");
  const ms = readDuration(env, "EDGESTREAM_SWEEP_EVERY", "5s");
  // Off only when written as zero (every number in it: `0s`, `0m0s`); a fraction of a
  // millisecond, which could round to 0 and turn it off unsaid, is refused by parseDuration.
  const off = ms === 0 && !/[1-9]/.test(text ?? "");
  if (ms === 0 ? !off : ms < MIN_SWEEP_MS || ms > MAX_SWEEP_MS) {
    // Why a rarer sweep is refused, which nothing else would say.
    const why = ms > MAX_SWEEP_MS
      ? `: a sweep closes at most ${WINDOWS_PER_SWEEP} windows of a counter, so a rarer one lets ` +
        `${MIN_WINDOW_MS / 1000}s windows fall further behind at every sweep`
      : "";
    throw new ConfigError(
      `EDGESTREAM_SWEEP_EVERY: expected 0s (no sweep timer) or from ${MIN_SWEEP_MS}ms to ${
        MAX_SWEEP_MS / 1000
      }s, got '${text}'${why}`,
    );
  }
  return ms;
}

/**
 * Deno's OpenTelemetry settings, read by Deno before any module runs and checked here only as
 * Deno reads them (with `OTEL_DENO=true`, in any case): Deno takes an endpoint without its
 * `http://` (`localhost:4318`, as a gRPC exporter's is written), with a space, or an export
 * interval that is no whole number of ms, without a word, and exports nothing there (every
 * signal, for `OTEL_EXPORTER_OTLP_ENDPOINT`) or every 60 s. Without `OTEL_DENO=true` they are
 * not read: another program's settings in the environment stop nothing.
 */
function checkOpenTelemetry(env: EnvSource): void {
  const enabled = env.get("OTEL_DENO");
  if (enabled === undefined) return;
  // Deno Deploy sets up its own telemetry export, and what it puts in these variables is its
  // own: a platform value this check did not foresee must not stop every isolate.
  if (env.get("DENO_DEPLOYMENT_ID") !== undefined) return;
  if (!/^(true|false)$/i.test(enabled)) {
    throw new ConfigError(`OTEL_DENO: expected true or false, got '${enabled}'`);
  }
  if (enabled.toLowerCase() !== "true") return;
  const endpoints = [
    ["OTEL_EXPORTER_OTLP_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_ENDPOINT")],
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")],
    ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")],
    ["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")],
  ] as const;
  for (const [name, text] of endpoints) {
    if (text === undefined || (/^https?:\/\/\S+$/i.test(text) && URL.canParse(text))) continue;
    // Credentials in it are not printed: a scheme-less `user:token@host` hides them all the same.
    const shown = shownUrl(withoutCredentials(text, REDACTED).replace(/^[^@/]*@/, `${REDACTED}@`));
    throw new ConfigError(
      `${name}: expected an http:// or https:// URL (http://localhost:4318), got '${shown.text}'${shown.rest}`,
    );
  }
  // `name=value` pairs: Deno skips one without its `=` (`Authorization: Bearer …`, written as
  // the header is) or its name, and the backend then refuses every export unseen. Its value may
  // be a token: the message gives where the pair is, never its text.
  const headers = env.get("OTEL_EXPORTER_OTLP_HEADERS");
  const pairs = headers?.split(",") ?? [];
  const unread = pairs.findIndex((pair) => pair.trim() !== "" && !/^\s*[^\s=][^=]*=/.test(pair));
  if (unread >= 0) {
    throw new ConfigError(
      `OTEL_EXPORTER_OTLP_HEADERS: expected name=value pairs separated by commas (Authorization=Bearer%20…), but pair ${
        unread + 1
      } of ${pairs.length} has no name before an '=' (its text is not shown: it may hold a token)`,
    );
  }
  const interval = env.get("OTEL_METRIC_EXPORT_INTERVAL");
  // As Deno reads it (a whole number, `+` or leading zeros allowed), of 1 or more.
  if (interval !== undefined && !(/^\+?[0-9]+$/.test(interval) && Number(interval) > 0)) {
    throw new ConfigError(
      `OTEL_METRIC_EXPORT_INTERVAL: expected a whole number of milliseconds above 0 (60000), got '${interval}'`,
    );
  }
}

/**
 * `EDGESTREAM_SHUTDOWN` as a duration above 0 (ms), 4 s when not set; a ConfigError naming it
 * otherwise. `deno task dev` (tools/dev.ts) reads it here too.
 */
export function readShutdown(env: EnvSource): number {
  const ms = readDuration(env, "EDGESTREAM_SHUTDOWN", "4s", true);
  if (ms <= 0) {
    throw new ConfigError(
      `EDGESTREAM_SHUTDOWN: expected a duration above 0, got '${env.get("EDGESTREAM_SHUTDOWN")}'`,
    );
  }
  return ms;
}

/**
 * `EDGESTREAM_DRAIN` (ms), 0 when not set: the first part of the stop bound (`shutdownMs`) during
 * which the listener stays open. It counts inside that bound, so it must leave time for the stop
 * steps: a ConfigError naming it when it is not below `shutdownMs`.
 */
export function readDrain(env: EnvSource, shutdownMs: number): number {
  const ms = readDuration(env, "EDGESTREAM_DRAIN", "0s", true);
  if (ms >= shutdownMs) {
    throw new ConfigError(
      `EDGESTREAM_DRAIN: expected a duration below EDGESTREAM_SHUTDOWN (${shutdownMs} ms), as the drain counts inside it, got '${
        env.get("EDGESTREAM_DRAIN")
      }'`,
    );
  }
  return ms;
}

/**
 * The warnings of `EDGESTREAM_SWEEP_EVERY` and `EDGESTREAM_DRAIN` set on Deno Deploy, which reads
 * neither: a value of theirs, in range or not, has no effect there. A drain that reads as zero is
 * none, as it is everywhere: no warning.
 */
function unusedOnDeploy(env: EnvSource): StartupNotice[] {
  const notices: StartupNotice[] = [];
  const sweepEvery = env.get("EDGESTREAM_SWEEP_EVERY");
  if (sweepEvery !== undefined) {
    notices.push({
      level: "warning",
      text:
        `EDGESTREAM_SWEEP_EVERY has no effect on Deno Deploy, where Deno.cron runs the sweep every minute (got ${sweepEvery}); it sets the timer of a self-hosted process (src/main.ts)`,
    });
  }
  const drain = env.get("EDGESTREAM_DRAIN");
  let noDrain = false;
  try {
    noDrain = drain === undefined || parseDuration(drain) === 0;
  } catch (error) {
    if (!(error instanceof DurationError)) throw error;
  }
  // A drain is for a load balancer that probes `/readyz` and takes a stopping process out of its
  // rotation meanwhile; Deploy routes requests itself, asking no `/readyz`, so there it would only
  // hold the stop that long, out of the 5 s before the kill.
  if (!noDrain) {
    notices.push({
      level: "warning",
      text:
        `EDGESTREAM_DRAIN is ignored on Deno Deploy, whose routing asks no /readyz (got ${drain}): a stopping isolate does not drain, keeping the 5 s before its kill for its stop; it is for a self-hosted process behind a load balancer that probes /readyz (src/main.ts)`,
    });
  }
  return notices;
}

/** A duration setting above 0 (ms): a one-line error naming it for 0 or less. */
function readPositiveDuration(env: EnvSource, name: string, fallback: string): number {
  const ms = readDuration(env, name, fallback);
  if (ms <= 0) {
    throw new ConfigError(`${name}: expected a duration above 0, got '${env.get(name)}'`);
  }
  return ms;
}

/**
 * `EDGESTREAM_WEBHOOK_DISABLE_AFTER` as a duration above 0 (ms): with 0, an endpoint's first
 * failed attempt would disable it, as if it had failed for a long time.
 */
function readDisableAfter(env: EnvSource): number {
  return readPositiveDuration(env, "EDGESTREAM_WEBHOOK_DISABLE_AFTER", "5d");
}

/**
 * `EDGESTREAM_WEBHOOK_SLOW_AFTER` and `EDGESTREAM_WEBHOOK_SLOW_FOR` as durations above 0 (ms), the
 * first at most the request timeout: a send is cut off then, so the sender would read a longer one
 * as the timeout; refused instead, so the setting does what it says.
 */
function readSlowEndpoints(env: EnvSource): { slowAfterMs: number; slowForMs: number } {
  const slowAfterMs = readDuration(env, "EDGESTREAM_WEBHOOK_SLOW_AFTER", "5s");
  if (slowAfterMs <= 0 || slowAfterMs > DEFAULT_TIMEOUT_MS) {
    throw new ConfigError(
      `EDGESTREAM_WEBHOOK_SLOW_AFTER: expected a duration above 0 and at most ${
        DEFAULT_TIMEOUT_MS / 1_000
      }s (the webhook request timeout), got '${env.get("EDGESTREAM_WEBHOOK_SLOW_AFTER")}'`,
    );
  }
  const slowForMs = readPositiveDuration(env, "EDGESTREAM_WEBHOOK_SLOW_FOR", "60s");
  return { slowAfterMs, slowForMs };
}

/** `PORT` as an integer from 0 to 65535. */
function readPort(env: EnvSource): number {
  const text = env.get("PORT") ?? "8000";
  const port = /^\d{1,5}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new ConfigError(`PORT: expected a port number from 0 to 65535, got '${text}'`);
  }
  return port;
}

/** `EDGESTREAM_LOG_LEVEL`, any case; `warn` is read as `warning`. */
function readLogLevel(env: EnvSource): LogLevel {
  const text = env.get("EDGESTREAM_LOG_LEVEL");
  if (text === undefined || text.trim() === "") return "info";
  const name = text.trim().toLowerCase();
  const level = name === "warn" ? "warning" : name;
  if (!LOG_LEVELS.includes(level as LogLevel)) {
    throw new ConfigError(
      `EDGESTREAM_LOG_LEVEL: expected one of ${LOG_LEVELS.join(", ")}, got '${text}'`,
    );
  }
  return level as LogLevel;
}

/** The keys of `EDGESTREAM_KEYS` and the Redis token, for the logs to redact. */
function secretsOf(env: EnvSource): string[] {
  const keys = (env.get("EDGESTREAM_KEYS") ?? "").split(",")
    .map((part) => part.slice(part.indexOf(":") + 1).trim());
  return [...keys, env.get("UPSTASH_REDIS_REST_TOKEN") ?? ""].filter((item) => item !== "");
}

/** `EDGESTREAM_MEMORY_DEDUPE_MAX` as a whole number of at least 2, or undefined when unset. */
function readMaxDedupeIds(env: EnvSource): number | undefined {
  const text = env.get("EDGESTREAM_MEMORY_DEDUPE_MAX");
  if (text === undefined) return undefined;
  const value = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(Number.isSafeInteger(value) && value >= 2)) {
    throw new ConfigError(
      `EDGESTREAM_MEMORY_DEDUPE_MAX: expected a whole number of at least 2, got '${text}'`,
    );
  }
  return value;
}

/** A whole number of at least 1 from `name`, or `fallback` when unset. */
function readCount(env: EnvSource, name: string, fallback: number): number {
  const text = env.get(name);
  if (text === undefined) return fallback;
  const value = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(Number.isSafeInteger(value) && value >= 1)) {
    throw new ConfigError(`${name}: expected a whole number of at least 1, got '${text}'`);
  }
  return value;
}

/** `EDGESTREAM_SUBSCRIPTIONS_PER_KEY` and `EDGESTREAM_SUBSCRIPTIONS_MAX`. */
function readSubscriptionLimits(env: EnvSource): Required<SlotLimits> {
  return {
    perKey: readCount(env, "EDGESTREAM_SUBSCRIPTIONS_PER_KEY", DEFAULT_SUBSCRIPTIONS_PER_KEY),
    perProcess: readCount(env, "EDGESTREAM_SUBSCRIPTIONS_MAX", DEFAULT_SUBSCRIPTIONS_MAX),
  };
}

/**
 * The warning for a per-key bound (`perKey`, the variable) above its process bound (`max`): the
 * per-key bound is then never reached, and one key can take every place of the process. Not
 * refused: both are bounds as they say, and the process's still holds.
 */
function perKeyAboveMax(
  env: EnvSource,
  bound: { limits: Required<SlotLimits>; perKey: string; max: string; places: string },
): StartupNotice[] {
  const { limits, ...names } = bound;
  if (limits.perKey <= limits.perProcess) return [];
  const given = env.get(names.perKey) === undefined ? ", its default" : "";
  return [{
    level: "warning",
    text:
      `${names.perKey} (${limits.perKey}${given}) is above ${names.max} (${limits.perProcess}): it is never reached, and one key (in open mode, one client address) can hold all of a process's ${names.places}; set it at most ${names.max}`,
  }];
}

/** `EDGESTREAM_INGEST_SOCKETS_PER_KEY` and `EDGESTREAM_INGEST_SOCKETS_MAX`. */
function readIngestSocketLimits(env: EnvSource): Required<SlotLimits> {
  return {
    perKey: readCount(env, "EDGESTREAM_INGEST_SOCKETS_PER_KEY", DEFAULT_INGEST_SOCKETS_PER_KEY),
    perProcess: readCount(env, "EDGESTREAM_INGEST_SOCKETS_MAX", DEFAULT_INGEST_SOCKETS_MAX),
  };
}

/**
 * A URL setting as a startup line quotes it (its credentials already hidden): without its query
 * or fragment, which may hold a token (`?api_key=…`, `?_token=…`), and `rest` saying so.
 */
function shownUrl(url: string): { text: string; rest: string } {
  const cut = url.search(/[?#]/);
  return cut < 0
    ? { text: url, rest: "" }
    : { text: url.slice(0, cut), rest: " and a query or fragment (not shown)" };
}

/** A URL as `@upstash/redis` takes one (its own check, which throws in its constructor). */
const UPSTASH_URL = /^https?:\/\/[^\s#$./?].\S*$/;

function redisFromEnv(env: EnvSource): Redis | undefined {
  const url = env.get("UPSTASH_REDIS_REST_URL");
  const token = env.get("UPSTASH_REDIS_REST_TOKEN");
  if (url && token) {
    // As the Upstash client takes it (it throws, with a stack, for what it does not): a lower-case
    // scheme, no whitespace (a line break copied along), a host.
    if (!UPSTASH_URL.test(url) || !URL.canParse(url)) {
      // Quoted when it is some URL, but for the credentials it may hold (no line holds them);
      // text that is none may be the token, pasted in the wrong one.
      const shown = shownUrl(withoutCredentials(url, REDACTED));
      const got = /^[a-z][a-z\d+.-]*:/i.test(url)
        ? `'${JSON.stringify(shown.text).slice(1, -1)}'${shown.rest}`
        : `text without a scheme (${url.length} characters, not shown: the token?)`;
      throw new ConfigError(`UPSTASH_REDIS_REST_URL: expected an http(s) URL, got ${got}`);
    }
    // fetch sends them as `Basic …` in the one Authorization header the token goes in
    // (`Basic …, Bearer <token>`), which the REST endpoint refuses: every call would fail as if
    // the token were wrong.
    const { username, password, protocol, host, origin, pathname } = new URL(url);
    // Neither credentials nor a query or fragment (which may hold `_token=`) is shown.
    const rest = /[?#]/.test(url) ? " and a query or fragment (not shown)" : "";
    if (username !== "" || password !== "") {
      throw new ConfigError(
        `UPSTASH_REDIS_REST_URL: holds credentials ('${
          JSON.stringify(`${protocol}//${REDACTED}@${host}${pathname}`).slice(1, -1)
        }'${rest}), which fetch would send in the Authorization header beside the token, where the REST endpoint refuses them; give the URL without them and the token in UPSTASH_REDIS_REST_TOKEN`,
      );
    }
    // The client appends each call's path (`/pipeline`) to the URL as text: after a query or a
    // fragment it is no path, and every call goes to `/` and fails as a command Redis refused.
    if (rest !== "") {
      throw new ConfigError(
        `UPSTASH_REDIS_REST_URL: expected the REST URL without a query or fragment, got '${
          JSON.stringify(origin + pathname).slice(1, -1)
        }'${rest}, where the Upstash client would append its calls' paths`,
      );
    }
    if (/\s/.test(token)) {
      throw new ConfigError(
        "UPSTASH_REDIS_REST_TOKEN: holds whitespace (a line break copied along?): expected the token alone",
      );
    }
    // Sent as `Authorization: Bearer <token>`: a control character or one past U+00FF fails every
    // call with a message that does not name the setting (fetch cannot build the header).
    const unsendable = [...token].map((character) => character.codePointAt(0)!)
      .find((code) => code < 0x20 || code === 0x7f || code > 0xff);
    if (unsendable !== undefined) {
      throw new ConfigError(
        `UPSTASH_REDIS_REST_TOKEN: holds a character an HTTP header cannot carry (U+${
          unsendable.toString(16).toUpperCase().padStart(4, "0")
        }): expected the token as Upstash shows it`,
      );
    }
    // One retry, soon; then the store turns the failure into 503 + Retry-After. An apply sent
    // again (by this retry, or by fetch itself when a kept-alive connection closes before any
    // reply) answers the first one's reply instead of applying twice: it carries a token, kept
    // 60 s. Each request (its retry included) is aborted at the stores' deadline, so none is
    // sent again after the store gave up on it, when the token may be gone.
    return new Redis({
      url,
      token,
      enableTelemetry: false,
      retry: { retries: 1, backoff: () => 50 },
      signal: () => AbortSignal.timeout(REDIS_CALL_TIMEOUT_MS),
    });
  }
  if (url || token) {
    throw new ConfigError(
      "UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: set both to use Redis, or neither",
    );
  }
  return undefined;
}

/**
 * Picks the store from the environment: Redis when both Upstash variables are set. Alone, without
 * the definitions of {@linkcode storesFromEnv} beside it: its caller keeps stream definitions
 * elsewhere, so an apply does not look for their records in Redis.
 */
export function storeFromEnv(source: EnvSource): Store {
  const env = setOnly(source);
  return storesFromEnv(env, { definitionsHere: false }).store;
}

/**
 * The store and the stream definitions beside it: both in Redis when both
 * Upstash variables are set, else both in memory (the memory store reports
 * the definitions' versions as Redis does). With `definitionsHere` (the default), either store
 * refuses an apply (and a close) whose caller recorded its stream when the stream's definition
 * record is missing from the definitions beside it.
 */
export function storesFromEnv(
  source: EnvSource,
  options: { definitionsHere?: boolean } = {},
): { store: Store; definitions: DefinitionStore } {
  const env = setOnly(source);
  // Each checked with the other store too, so a typo shows before a switch of store.
  const maxDedupeIds = readMaxDedupeIds(env);
  const prefix = readPrefix(env);
  const redis = redisFromEnv(env);
  const maxApiStreams = readCount(env, "EDGESTREAM_STREAMS_MAX", DEFAULT_STREAMS_MAX);
  const definitionsHere = options.definitionsHere ?? true;
  if (!redis) {
    const definitions = new MemoryDefinitionStore({ maxApiStreams });
    return { store: new MemoryStore({ maxDedupeIds, definitions, definitionsHere }), definitions };
  }
  return {
    store: new RedisStore(redis, { prefix, definitionsHere }),
    definitions: new RedisDefinitionStore(redis, { prefix, maxApiStreams }),
  };
}

/**
 * `EDGESTREAM_PREFIX`, default `es`: not empty, no whitespace, and no `{` or `}`, which would make
 * Redis Cluster hash the prefix instead of the stream name (every stream in one slot).
 */
function readPrefix(env: EnvSource): string {
  const prefix = env.get("EDGESTREAM_PREFIX") ?? "es";
  if (!/^[^\s{}]{1,64}$/.test(prefix)) {
    throw new ConfigError(
      `EDGESTREAM_PREFIX: expected 1-64 characters without whitespace, '{' or '}', got '${prefix}'`,
    );
  }
  return prefix;
}

/** Picks the run-time key store: in Redis when both Upstash variables are set, else in memory. */
export function keyStoreFromEnv(source: EnvSource): KeyStore {
  const env = setOnly(source);
  const redis = redisFromEnv(env);
  const maxKeys = readCount(env, "EDGESTREAM_KEYS_MAX", DEFAULT_KEYS_MAX);
  return redis
    ? new RedisKeyStore(redis, { prefix: readPrefix(env), maxKeys })
    : new MemoryKeyStore({ maxKeys });
}

/** Picks the delivery store: in Redis when both Upstash variables are set, else in memory. */
export function deliveriesFromEnv(source: EnvSource): DeliveryStore {
  const env = setOnly(source);
  const redis = redisFromEnv(env);
  const maxEndpoints = readCount(env, "EDGESTREAM_WEBHOOKS_MAX", DEFAULT_WEBHOOKS_MAX);
  return redis
    ? new RedisDeliveryStore(redis, { prefix: readPrefix(env), maxEndpoints })
    : new MemoryDeliveryStore({ maxEndpoints });
}

/**
 * Builds the webhook service from the environment: deliveries in Redis when
 * the Upstash variables are set (in memory otherwise; or `deliveries` when
 * given), the URL allow-list, the disable period and when an endpoint counts
 * as slow. Throws
 * {@linkcode ConfigError} for a bad setting.
 */
export function webhooksFromEnv(
  source: EnvSource,
  options: {
    store: Store;
    streams: ReadonlyMap<string, CompiledStream>;
    deliveries?: DeliveryStore;
  },
): WebhookService {
  const env = setOnly(source);
  const deliveries = options.deliveries ?? deliveriesFromEnv(env);
  let policy: UrlPolicy;
  try {
    policy = new UrlPolicy({
      allow: parseAllowList(env.get("EDGESTREAM_WEBHOOK_ALLOW")),
      allowHttp: readFlag(env, "EDGESTREAM_WEBHOOK_ALLOW_HTTP"),
    });
  } catch (error) {
    if (!(error instanceof AllowListError)) throw error;
    throw new ConfigError(`EDGESTREAM_WEBHOOK_ALLOW: ${error.message}`, { cause: error });
  }
  const disableAfterMs = readDisableAfter(env);
  const { slowAfterMs, slowForMs } = readSlowEndpoints(env);
  return new WebhookService({
    ...options,
    deliveries,
    policy,
    disableAfterMs,
    slowAfterMs,
    slowForMs,
  });
}

/**
 * Why this environment is production: `EDGESTREAM_ENV=production`, or Deno
 * Deploy serving the production timeline (`DENO_TIMELINE=production`, set by
 * the platform at run time, not during builds), whatever `EDGESTREAM_ENV` says
 * (`development` is its default, not a way out of the guard); null otherwise.
 */
export function productionReason(source: EnvSource): string | null {
  const env = setOnly(source);
  const declared = env.get("EDGESTREAM_ENV");
  if (declared !== undefined && declared !== "production" && declared !== "development") {
    throw new ConfigError(`EDGESTREAM_ENV: expected production or development, got '${declared}'`);
  }
  if (declared === "production") return "EDGESTREAM_ENV=production";
  if (env.get("DENO_TIMELINE") === "production") {
    return "Deno Deploy production timeline (DENO_TIMELINE=production)";
  }
  return null;
}

/** A boolean variable: `true` or `false`, else a ConfigError naming it. */
function readFlag(env: EnvSource, name: string): boolean {
  const text = env.get(name);
  // Empty, as a compose file's unset `${VAR}` gives it: not set.
  if (text === undefined || text === "" || text === "false") return false;
  if (text === "true") return true;
  throw new ConfigError(`${name}: expected true or false, got '${text}'`);
}

/**
 * Refuses what must not serve production traffic: the memory store (each
 * process or isolate would count alone and forget on restart) unless
 * `EDGESTREAM_ALLOW_MEMORY=true`, and open mode (no keys).
 */
function checkProduction(env: EnvSource, keys: KeyRing): void {
  const allowMemory = readFlag(env, "EDGESTREAM_ALLOW_MEMORY");
  const reason = productionReason(env);
  if (reason === null) return;
  if (keys.open) {
    throw new ConfigError(
      `EDGESTREAM_KEYS: ${reason} needs API keys; set EDGESTREAM_KEYS=admin:<key>,ingest:<key>,read:<key>`,
    );
  }
  const redis = env.get("UPSTASH_REDIS_REST_URL") && env.get("UPSTASH_REDIS_REST_TOKEN");
  if (!redis && !allowMemory) {
    throw new ConfigError(
      `UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: ${reason} needs the Redis store; set both (or EDGESTREAM_ALLOW_MEMORY=true for a one-instance demo)`,
    );
  }
}

/**
 * The warning for `EDGESTREAM_ALLOW_MEMORY=true` where it changes nothing: with the Redis store
 * (there is no memory store to allow), or outside production (the memory store needs no leave
 * there); undefined where it lets the memory store serve production, or is not `true`.
 */
function allowMemoryWithoutEffect(env: EnvSource, store: string): string | undefined {
  if (!readFlag(env, "EDGESTREAM_ALLOW_MEMORY")) return undefined;
  const effect = "it lets the memory store serve production";
  if (store === "redis") {
    return `EDGESTREAM_ALLOW_MEMORY has no effect with the Redis store: ${effect}`;
  }
  if (productionReason(env) === null) {
    return `EDGESTREAM_ALLOW_MEMORY has no effect outside production (EDGESTREAM_ENV=production or Deno Deploy's production timeline): ${effect}, and outside it the memory store needs no leave`;
  }
  return undefined;
}

/**
 * Reads every variable (table in the module doc), loads the config file and
 * builds the store and the webhook service. Throws only
 * {@linkcode ConfigError}, its message starting with the variable at fault.
 *
 * @example
 * ```ts
 * import { configFromEnv } from "./env.ts";
 *
 * const config = await configFromEnv(Deno.env);
 * console.log(config.notices.map((notice) => notice.text).join("\n"));
 * ```
 */
export async function configFromEnv(
  source: EnvSource,
  options: ConfigFromEnvOptions = {},
): Promise<ServerConfig> {
  const typos = unknownSettings(source);
  try {
    return await serverConfigOf(source, options, typos);
  } catch (error) {
    // A typo is most often why a setting is missing: the line that stops startup names it too
    // (`EDGESTREAM_ALOW_MEMORY` beside "needs the Redis store … or EDGESTREAM_ALLOW_MEMORY=true").
    const warned = typos.filter((notice) => notice.level === "warning");
    if (!(error instanceof ConfigError) || warned.length === 0) throw error;
    const also = warned.map((notice) => notice.text).join("; ");
    throw new ConfigError(`${error.message} (${also})`, { cause: error });
  }
}

/** {@linkcode configFromEnv}'s work; `typos` are its notices of variables that are no setting. */
async function serverConfigOf(
  source: EnvSource,
  options: ConfigFromEnvOptions,
  typos: StartupNotice[],
): Promise<ServerConfig> {
  const env = setOnly(source);
  const port = readPort(env);
  const logLevel = readLogLevel(env);
  const onDeploy = options.platform === "deploy";
  const sweepEveryMs = onDeploy ? 0 : readSweepEvery(env);
  const shutdownMs = readShutdown(env);
  const drainMs = onDeploy ? 0 : readDrain(env, shutdownMs);
  checkOpenTelemetry(env);
  const subscriptions = readSubscriptionLimits(env);
  const ingestSockets = readIngestSocketLimits(env);
  const origins = {
    allowedHosts: readList(env, "EDGESTREAM_ALLOWED_HOSTS", parseAllowedHosts),
    allowedOrigins: readList(env, "EDGESTREAM_ALLOWED_ORIGINS", parseAllowedOrigins),
  };
  const keyStore = keyStoreFromEnv(env);
  let keys: KeyRing;
  try {
    keys = await KeyRing.parse(env.get("EDGESTREAM_KEYS"), { store: keyStore });
  } catch (error) {
    throw new ConfigError(`EDGESTREAM_KEYS: ${message(error)}`, { cause: error });
  }
  checkProduction(env, keys);
  // A value that names no host (`0.0.0.0:8080`, `http://myhost`) is refused here, before anything
  // is built: with keys the listener would refuse it too, but only once the store was asked for
  // the webhook endpoints (a line of its own when it cannot be reached), in words that do not say
  // what HOST takes. Open mode listens on loopback whatever HOST says, but refuses such a value
  // all the same.
  const host = env.get("HOST")?.trim();
  if (host && !isHost(host)) {
    throw new ConfigError(`HOST: expected an IP address or a host name, got '${host}'`);
  }
  // A file path, not a URL's path: that one escapes a space (`my%20projects/`), a file no one has.
  const configPath = env.get("EDGESTREAM_CONFIG") ?? options.defaultConfigPath ??
    fileURLToPath(new URL("../examples/config.json", import.meta.url));
  let configStreams: Map<string, CompiledStream>;
  const fileWarnings: string[] = [];
  try {
    configStreams = await loadConfigFile(configPath, {
      onWarning: (text) => fileWarnings.push(`EDGESTREAM_CONFIG: ${text}`),
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new ConfigError(`EDGESTREAM_CONFIG: ${error.message}`, { cause: error });
  }
  const stores = storesFromEnv(env);
  // Upstash refuses CONFIG GET: not sent there.
  const restUrl = env.get("UPSTASH_REDIS_REST_URL");
  const setupRedis = restUrl === undefined || asksSetup(restUrl) ? redisFromEnv(env) : undefined;
  const data = new InstrumentedStore(stores.store);
  const streams = new StreamRegistry(configStreams, {
    definitions: stores.definitions,
    // The bound spares a shared store; this process's own memory answers every lookup for sure.
    lookupsPerSecond: stores.store.kind === "memory" ? Infinity : undefined,
    data,
  });
  const store = streams.wrap(data);
  const deliveries = deliveriesFromEnv(env);
  const webhooks = webhooksFromEnv(env, { store, streams, deliveries });

  const notices: StartupNotice[] = [
    store.kind === "redis"
      ? `store: redis (${
        withoutCredentials(env.get("UPSTASH_REDIS_REST_URL")!, REDACTED)
      }, prefix ${env.get("EDGESTREAM_PREFIX") ?? "es"})`
      : "store: memory (embedded; state is lost on restart)",
    `${configStreams.size} stream(s) from ${configPath}: ${[...configStreams.keys()].join(", ")}`,
  ].map((text) => ({ level: "info" as const, text }));
  for (const text of fileWarnings) notices.push({ level: "warning", text });
  notices.push(...typos);
  if (onDeploy) notices.push(...unusedOnDeploy(env));
  notices.push(
    ...perKeyAboveMax(env, {
      limits: subscriptions,
      perKey: "EDGESTREAM_SUBSCRIPTIONS_PER_KEY",
      max: "EDGESTREAM_SUBSCRIPTIONS_MAX",
      places: "live subscriptions",
    }),
    ...perKeyAboveMax(env, {
      limits: ingestSockets,
      perKey: "EDGESTREAM_INGEST_SOCKETS_PER_KEY",
      max: "EDGESTREAM_INGEST_SOCKETS_MAX",
      places: "WebSocket ingest connections",
    }),
  );
  // Read (and checked) whichever the store, so a typo shows before a switch of store; but it
  // bounds only the memory store's ids: set beside Redis, it says so rather than seem to bound it.
  if (store.kind === "redis" && env.get("EDGESTREAM_MEMORY_DEDUPE_MAX") !== undefined) {
    notices.push({
      level: "warning",
      text:
        "EDGESTREAM_MEMORY_DEDUPE_MAX has no effect with the Redis store: it bounds the memory store's dedupe ids; Redis keeps a stream's ids for its dedupe ttl",
    });
  }
  const allowMemoryIdle = allowMemoryWithoutEffect(env, store.kind);
  if (allowMemoryIdle !== undefined) notices.push({ level: "warning", text: allowMemoryIdle });
  for (const [name, stream] of configStreams) {
    const malformed = malformedSchemaKeyword(stream);
    if (malformed !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${malformed}; compiled as before this check (zod may ignore the keyword or read it wrongly); fix it: a definition sent through the API with it is refused`,
      });
    }
    const large = largeSchemaExpansion(stream);
    if (large !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${large}; compiled as before this check (one wrong value may take many anyOf checks); fix it: a definition sent through the API with it is refused`,
      });
    }
    const origin = malformedOrigin(stream);
    if (origin !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${origin}; served as before this check (a wildcard host matches no page; credentials are dropped, leaving the origin); fix it: a definition sent through the API with it is refused`,
      });
    }
    const duration = malformedDuration(stream);
    if (duration !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${duration}; read as before this check (a fraction of a millisecond rounded, a unit given twice added up); fix it: a definition sent through the API with it is refused`,
      });
    }
    const patterns = oversizedPatterns(stream);
    if (patterns !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${patterns}; compiled as before this check (each instance compiles them at startup); fix it: a definition sent through the API with it is refused`,
      });
    }
    const alertField = unknownAlertField(stream);
    if (alertField !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${alertField}; compiled as before this check (its condition fails where it reads the field, and the alert does not fire there); fix it: a definition sent through the API with it is refused`,
      });
    }
    // The remedy is the one the problem's cause calls for: the schema, or the transform step
    // that removes the field.
    const counterField = unknownCounterFieldProblem(stream);
    if (counterField !== undefined) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: ${counterField.problem}; compiled as before this check (the field is always missing: ${counterField.consequence}); ${counterField.fix}: a definition sent through the API with it is refused`,
      });
    }
    for (const short of shortWindows(stream)) {
      notices.push({
        level: "warning",
        text: `EDGESTREAM_CONFIG: ${
          shortWindowProblem(name, short)
        }; served as before this check (its windows may close later and later behind its events); a definition sent through the API with it is refused: to count in windows of 1s or more, define a counter under a new name (a changed window is refused)`,
      });
    }
    for (const { counter, field, index, first } of repeatedGroupBy(stream)) {
      notices.push({
        level: "warning",
        text:
          `EDGESTREAM_CONFIG: streams.${name}.counters.${counter}.groupBy[${index}]: Field '${field}' is already at groupBy[${first}]; counted as before (each group keyed by the field twice); to group by it once, define the counter under a new name (a changed groupBy is refused)`,
      });
    }
  }
  // Trimmed, as the README says: a value of only whitespace (`HOST=" "`) is not set.
  const hostSet = env.get("HOST")?.trim() || undefined;
  let hostname = hostSet ?? "0.0.0.0";
  if (keys.open) {
    // A HOST set to reach the server from elsewhere (a container's 0.0.0.0) is not taken: said,
    // as a client there finds nothing listening.
    const notTaken = hostSet === undefined || LOOPBACK_NAMES.has(hostSet)
      ? ""
      : ` (HOST=${hostSet} is not taken in open mode: set EDGESTREAM_KEYS to listen on it)`;
    if (!LOOPBACK_NAMES.has(hostname)) hostname = "127.0.0.1";
    const allowed = origins.allowedHosts.length > 0
      ? ` and ${origins.allowedHosts.join(", ")} (EDGESTREAM_ALLOWED_HOSTS)`
      : "";
    notices.push({
      level: "warning",
      text:
        `no EDGESTREAM_KEYS set: open development mode, no key needed; listening on localhost only${notTaken}, answering only loopback Host names${allowed}`,
    });
  } else if (origins.allowedHosts.length > 0) {
    notices.push({
      level: "warning",
      text:
        "EDGESTREAM_ALLOWED_HOSTS has no effect: with EDGESTREAM_KEYS set, any Host is answered",
    });
  }
  return {
    configPath,
    streams,
    store,
    deliveries,
    webhooks,
    keys,
    origins,
    hostname,
    port,
    sweepEveryMs,
    shutdownMs,
    drainMs,
    notices,
    async storeWarnings() {
      if (!setupRedis) return [];
      const warnings = await redisSetupWarnings(setupRedis, { prefix: readPrefix(env) });
      return warnings.map((text) => ({ level: "warning" as const, text }));
    },
    logLevel,
    secrets: secretsOf(env),
    subscriptions,
    ingestSockets,
  };
}
