/**
 * Where edgestream's log records go and what they look like. Modules log
 * through LogTape's `getLogger(["edgestream", …])`, which writes nothing until
 * {@linkcode configureLogging} runs, so tests and embedders that never call
 * it stay quiet.
 *
 * Lines go to the console (info and below to stdout, warnings and errors to
 * stderr): one JSON object a line when stdout is not a terminal (Deno Deploy,
 * containers, log shippers), readable text when it is.
 *
 * Secrets never reach a line: the finished line is searched for the secrets
 * named at configuration (API keys, the Redis token) in their plain, JSON and
 * URL-encoded forms, for webhook secrets (`whsec_…`), for whatever follows
 * `Bearer ` and a `bearer.` subprotocol, and for the value of a `token` (or
 * `key`, `access_token`, `api_key`) query parameter; each is replaced by
 * `[REDACTED]`. Properties named like a secret (`secret`, `token`,
 * `authorization`, `password`, `cookie`, `apiKey`) are dropped before
 * formatting.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  configureSync,
  type ConsoleSinkOptions,
  getAnsiColorFormatter,
  getConsoleSink,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
  sanitizeControlSequences,
  type TextFormatter,
} from "@logtape/logtape";
import { redactByField, redactByPattern, type RedactionPattern } from "@logtape/redaction";

/** Levels `EDGESTREAM_LOG_LEVEL` takes, most verbose first. */
export const LOG_LEVELS: readonly LogLevel[] = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
];

export type { LogLevel };

/** What replaces a secret in a line. */
export const REDACTED = "[REDACTED]";

/** The console methods lines are written with. */
export type LogConsole = Pick<Console, "debug" | "info" | "warn" | "error">;

/** Options for {@linkcode configureLogging}. */
export interface LoggingOptions {
  /** Lowest level written. @default {"info"} */
  level?: LogLevel;
  /**
   * `json`: one JSON object a line; `text`: for a person at a terminal.
   * @default {"text" when stdout is a terminal, else "json"}
   */
  format?: "json" | "text";
  /** Exact values no line may contain (API keys, the Redis token). */
  secrets?: readonly string[];
  /** Where lines are written. @default {globalThis.console} */
  console?: LogConsole;
}

/** Property names whose values are dropped from records: they name secrets. */
const SECRET_FIELDS = [
  /secret/i,
  /token/i,
  /authorization/i,
  /pass(?:code|phrase|word)/i,
  /cookie/i,
  /api[-_]?key/i,
  /credential/i,
];

/**
 * Secrets found by their shape. A value starting with `<` is left alone, so
 * usage hints such as `Bearer <key>` stay readable.
 */
const SHAPED_SECRETS: RedactionPattern[] = [
  { pattern: /\bwhsec_[A-Za-z0-9+/]+={0,2}/g, replacement: `whsec_${REDACTED}` },
  { pattern: /\b(bearer[ \t]+)[^\s"'\\,;<][^\s"'\\,;]*/gi, replacement: `$1${REDACTED}` },
  { pattern: /\b(bearer\.)[^\s"'\\,;<][^\s"'\\,;]*/gi, replacement: `$1${REDACTED}` },
  {
    pattern: /([?&](?:token|access_token|api_key|apikey|key)=)[^&#\s"'\\<][^&#\s"'\\]*/gi,
    replacement: `$1${REDACTED}`,
  },
];

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * The patterns that redact `secrets` (each in its plain, JSON-escaped and
 * URL-encoded form) and secrets known by their shape.
 */
export function redactionPatterns(secrets: readonly string[] = []): RedactionPattern[] {
  const forms = new Set<string>();
  for (const secret of secrets) {
    if (secret === "") continue;
    forms.add(secret);
    forms.add(JSON.stringify(secret).slice(1, -1));
    forms.add(encodeURIComponent(secret));
  }
  // Longest first, so a secret that contains another is replaced whole.
  const sorted = [...forms].sort((a, b) => b.length - a.length).map(escapeRegExp);
  const exact = sorted.length === 0
    ? []
    : [{ pattern: new RegExp(sorted.join("|"), "g"), replacement: REDACTED }];
  return [...exact, ...SHAPED_SECRETS];
}

/** A value inside a message: strings as they are, errors as `Name: message`, the rest as JSON. */
function messageValue(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  return jsonText(value);
}

/** Renders a message's parts (text, value, text, …). */
function renderMessage(parts: readonly unknown[]): string {
  let text = "";
  for (let i = 0; i < parts.length; i++) {
    text += i % 2 === 0 ? String(parts[i]) : messageValue(parts[i]);
  }
  return text;
}

/** JSON of a value, with errors as their name, message, stack and cause. */
function jsonText(value: unknown): string {
  try {
    return JSON.stringify(value, jsonValue) ?? String(value);
  } catch {
    return String(value);
  }
}

function jsonValue(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (!(value instanceof Error)) return value;
  const error: Record<string, unknown> = { name: value.name, message: value.message };
  if (value.stack) error.stack = value.stack;
  if (value.cause !== undefined) error.cause = value.cause;
  return error;
}

/**
 * One JSON object a line: `@timestamp`, `level`, `logger`, `message` (the
 * rendered text) and the record's properties as top-level fields.
 */
export function jsonLineFormatter(record: LogRecord): string {
  const line = {
    "@timestamp": new Date(record.timestamp).toISOString(),
    level: record.level,
    logger: record.category.join("."),
    message: renderMessage(record.message),
    ...record.properties,
  };
  try {
    return JSON.stringify(line, jsonValue) + "\n";
  } catch (error) {
    // A circular property: keep the line, without its properties.
    const { "@timestamp": timestamp, level, logger, message } = line;
    return JSON.stringify({ "@timestamp": timestamp, level, logger, message, error }, jsonValue) +
      "\n";
  }
}

/** Names the message template shows, so text lines do not repeat them. */
function placeholders(raw: string | TemplateStringsArray): Set<string> {
  if (typeof raw !== "string") return new Set();
  return new Set([...raw.matchAll(/\{([^{}]+)\}/g)].map((match) => match[1].trim()));
}

function textValue(value: unknown): string {
  if (value instanceof Error) return value.stack ?? `${value.name}: ${value.message}`;
  if (typeof value === "string") return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return jsonText(value);
}

/**
 * Text lines for a terminal: time, level, logger and message, then the
 * properties the message does not show as `name=value`.
 */
export function textLineFormatter(options: { colors?: boolean } = {}): TextFormatter {
  const settings = {
    timestamp: "time" as const,
    value: messageValue,
    format({ timestamp, level, category, message, record }: {
      timestamp: string | null;
      level: string;
      category: string;
      message: string;
      record: LogRecord;
    }) {
      const shown = placeholders(record.rawMessage);
      // An error's stack is not in the message: it follows it.
      const extra = Object.entries(record.properties)
        .filter(([name, value]) =>
          (!shown.has(name) || value instanceof Error) && value !== undefined
        )
        .map(([name, value]) => `${name}=${sanitizeControlSequences(textValue(value))}`);
      return `${timestamp} ${level} ${category}: ${message}${
        extra.length > 0 ? ` ${extra.join(" ")}` : ""
      }`;
    },
  };
  return options.colors ? getAnsiColorFormatter(settings) : getTextFormatter(settings);
}

function stdoutIsTerminal(): boolean {
  try {
    return Deno.stdout.isTerminal();
  } catch {
    // Some hosts (Deno Deploy) have no stdout to ask.
    return false;
  }
}

/**
 * Sends the `edgestream` loggers to the console at `level` and up, as JSON
 * lines or text, with secrets redacted (see the module doc). Replaces any
 * earlier configuration.
 *
 * @example
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 * import { configureLogging } from "./logging.ts";
 *
 * configureLogging({ level: "info", format: "json", secrets: ["k-0123456789abcdef"] });
 * getLogger(["edgestream"]).info("Listening on {url}", { url: "http://localhost:8000/" });
 * ```
 */
export function configureLogging(options: LoggingOptions = {}): void {
  const format = options.format ?? (stdoutIsTerminal() ? "text" : "json");
  const base = format === "json"
    ? jsonLineFormatter
    : textLineFormatter({ colors: !Deno.noColor && options.console === undefined });
  const formatter = redactByPattern(base, redactionPatterns(options.secrets));
  const sink = redactByField(
    getConsoleSink({
      formatter,
      // Only the level methods are called.
      console: options.console as ConsoleSinkOptions["console"],
    }),
    SECRET_FIELDS,
  );
  configureSync({
    reset: true,
    sinks: { console: sink },
    loggers: [
      { category: ["edgestream"], sinks: ["console"], lowestLevel: options.level ?? "info" },
      // LogTape's own diagnostics: only its failures.
      { category: ["logtape", "meta"], sinks: ["console"], lowestLevel: "warning" },
    ],
    // Lets records logged while serving a request carry its request id.
    contextLocalStorage: new AsyncLocalStorage<Record<string, unknown>>(),
  });
}
