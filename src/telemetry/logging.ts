/**
 * Where edgestream's log records go and what they look like. Modules log
 * through LogTape's `getLogger(["edgestream", …])`, which writes nothing until
 * {@linkcode configureLogging} runs, so tests and embedders that never call
 * it stay quiet.
 *
 * Lines go to stdout (info and below, in chunks at most 50 ms apart) and
 * stderr (warnings and errors, at once), or to the console on Deno Deploy or
 * when one is given: one JSON object a line when stdout is not a terminal
 * (Deno Deploy, containers, log shippers), readable text when it is.
 *
 * Secrets never reach a line: the finished line is searched for the secrets named at
 * configuration (API keys, the Redis token) as written, with their own ASCII percent escapes
 * decoded, with `\` as `/` (a URL path) and with control characters as a text line writes them
 * (`\x0b`), each JSON-escaped up to three times and any character of it percent-encoded once or
 * twice (as a URL parser, `encodeURI` or `encodeURIComponent` leaves it; see `secretForms`), in
 * time linear in the line; for webhook secrets (`whsec_…`, URL-encoded too), for whatever follows
 * `Bearer ` and a `bearer.` subprotocol, and for the value of a `token` (or
 * `key`, `access_token`, `api_key`) query parameter; each is replaced by
 * `[REDACTED]`, as are the first characters (four or more) of a named secret or an `sk_…` key
 * that quoting client input cut (`quoteInput`: `…/a1b2… (300 characters)`), and what the line's
 * percent escapes decode to (a key sent partly encoded, `%3Fkey=…`). Whitespace a line escapes (a tab as `\t`, a line break as
 * `\n`) counts as the whitespace it stands for: before a secret, and between
 * `Bearer` and its key, where any whitespace (a no-break space too) and a quote
 * around the key (`Bearer "…"`) may stand. Properties named like a secret (`secret`, `token`,
 * `authorization`, `password`, `cookie`, `apiKey`) are dropped before
 * formatting.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Config,
  configureSync,
  getAnsiColorFormatter,
  getConfig,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
  sanitizeControlSequences,
  type TextFormatter,
} from "@logtape/logtape";
import { MAX_LISTED_NAMES, MAX_QUOTED_CHARACTERS, quoteInput } from "../validate/mod.ts";

/**
 * An error and its causes as one line: `Name: message; caused by Name: message`. A cause that
 * reads as the error it caused (an error wrapped again with its own message, to change what it
 * says of the request's outcome) is said once.
 */
export function causeText(error: unknown): string | undefined {
  const parts: string[] = [];
  let current = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    const part = current instanceof Error ? `${current.name}: ${current.message}` : String(current);
    if (part !== parts.at(-1)) parts.push(part);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.length > 0 ? parts.join("; caused by ") : undefined;
}

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

export { MAX_LISTED_NAMES, MAX_QUOTED_CHARACTERS, quoteInput };

/**
 * Names for a message: the first `max`, each through {@linkcode quoteInput} (at most 64
 * characters), comma-separated, then how many more there are, so a message built from a list
 * (every stream, a key's streams) stays short however long the list is.
 *
 * @example
 * ```ts
 * import { listNames } from "./logging.ts";
 *
 * listNames(["a", "b"]); // "a, b"
 * listNames(["a", "b", "c"], 2); // "a, b … and 1 more"
 * ```
 */
export function listNames(names: Iterable<string>, max: number = MAX_LISTED_NAMES): string {
  const shown: string[] = [];
  let count = 0;
  for (const name of names) {
    if (count++ < max) shown.push(quoteInput(name, 64));
  }
  const text = shown.join(", ");
  return count > max ? `${text} … and ${count - max} more` : text;
}

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

/**
 * Property names whose values are dropped from records: they name secrets.
 * One pattern, so a record's names are each tested once.
 */
const SECRET_FIELD =
  /secret|token|authorization|pass(?:code|phrase|word)|cookie|api[-_]?key|credential/i;

/** A search for a secret in a finished line and what replaces it (`$1` keeps a prefix). */
export interface RedactionPattern {
  /** A global regular expression. */
  pattern: RegExp;
  /** The replacement text. */
  replacement: string;
}

/**
 * The escape a finished line writes for a control character (a JSON line's `\t`, `\n`, `\u000b`,
 * a text line's `\x0b`). It ends in a letter or digit where the text had whitespace.
 */
const CONTROL_ESCAPE = String.raw`\\(?:[bfnrt]|u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2})`;

/**
 * Where a word starts in a finished line: after no letter, digit or `_`, or right after a
 * {@linkcode CONTROL_ESCAPE}, so that `\tBearer …` and `\nwhsec_…` read as the words they are.
 */
const WORD_START = String.raw`(?:(?<![A-Za-z0-9_])|(?<=${CONTROL_ESCAPE}))`;

/**
 * What parts `Bearer` from its key: any whitespace (a no-break space, a line break), also as a line
 * escapes it (`\t`, `\n`, `\r\n`), then perhaps the quote a key is written in (`"`, `'`, a JSON
 * line's `\"`).
 */
const BEARER_GAP = String.raw`(?:\s|${CONTROL_ESCAPE})+(?:\\?["'])?`;

/**
 * Secrets found by their shape. A value starting with `<` or `…` is left alone, so
 * usage hints such as `Bearer <key>` and `Bearer%20…` stay readable.
 */
const SHAPED_SECRETS: RedactionPattern[] = [
  {
    // Base64's `+`, `/` and `=` perhaps URL-encoded (a secret in a query or form body).
    pattern: new RegExp(
      String.raw`${WORD_START}whsec_(?:[A-Za-z0-9+/]|%2[BbFf])+(?:=|%3[Dd]){0,2}`,
      "g",
    ),
    replacement: `whsec_${REDACTED}`,
  },
  // A run-time secret key (`sk_` and 32 base64url characters) wherever it is: pasted into a path,
  // or echoed in an error message.
  {
    pattern: new RegExp(String.raw`${WORD_START}sk_[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])`, "g"),
    replacement: `sk_${REDACTED}`,
  },
  // Not the words of a message about one ("missing or invalid bearer token", Upstash's reply):
  // such a word ends the text or is followed by a space or a sentence's punctuation, where a key
  // that begins with one ("token-…", "key.…", "authz:…") goes on.
  {
    pattern: new RegExp(
      String
        .raw`${WORD_START}(bearer${BEARER_GAP})(?!(?:token|key|auth\w*)(?:$|[\s"'\\,;)]|[.!?](?:$|[\s"'\\,;)])))[^\s"'\\,;<…][^\s"'\\,;]*`,
      "gi",
    ),
    replacement: `$1${REDACTED}`,
  },
  {
    pattern: new RegExp(String.raw`${WORD_START}(bearer\.)[^\s"'\\,;<…][^\s"'\\,;]*`, "gi"),
    replacement: `$1${REDACTED}`,
  },
  {
    // A backslash a query keeps (`?token=ab\cd`, `\\` in a JSON line) is part of the value; one
    // before a quote is where a quoted URL ends (`\"` in a JSON line).
    pattern:
      /([?&](?:token|access_token|api_key|apikey|key)=)[^&#\s"'\\<](?:[^&#\s"'\\]|\\+(?!["'\\]))*/gi,
    replacement: `$1${REDACTED}`,
  },
];

/** Secrets shorter than this are redacted as whole words only. */
const SHORT_SECRET = 12;

/** Where a short secret may start: as {@linkcode WORD_START}, with `-` a letter of a word too. */
const SHORT_SECRET_START = String.raw`(?:(?<![A-Za-z0-9_-])|(?<=${CONTROL_ESCAPE}))`;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * The patterns that redact `secrets` (each in every form a line carries it in, see
 * {@linkcode secretForms}; its first characters too where `quoteInput` cut it) and secrets known
 * by their shape.
 */
export function redactionPatterns(secrets: readonly string[] = []): RedactionPattern[] {
  // Longest first, so a secret that contains another is replaced whole. A short one (a dev
  // token such as "dev") is replaced only where no letter, digit, '_' or '-' touches it, or every
  // word holding those letters would be mangled.
  const named = [...new Set(secrets)].filter((secret) => secret !== "")
    .sort((a, b) => b.length - a.length);
  const forms = new Set<string>();
  const sorted = named.map((secret) => {
    const { pattern, written } = secretForms(secret);
    for (const form of written) forms.add(form);
    return secret.length < SHORT_SECRET
      ? `${SHORT_SECRET_START}${pattern}(?![A-Za-z0-9_-])`
      : pattern;
  });
  const exact = sorted.length === 0
    ? []
    : [{ pattern: new RegExp(sorted.join("|"), "g"), replacement: REDACTED }];
  // A secret in client input a line quotes cut at its length (`quoteInput`: `…a1b2c3… (300
  // characters)`) is no longer whole: its first characters before the cut are redacted too.
  const cut = [...forms].filter((form) => form.length > MIN_CUT_SECRET)
    .sort((a, b) => b.length - a.length).map((form) =>
      `${form.length < SHORT_SECRET ? SHORT_SECRET_START : ""}${cutPrefixes(form)}${QUOTE_CUT}`
    );
  const cutPatterns = cut.length === 0
    ? []
    : [{ pattern: new RegExp(cut.join("|"), "g"), replacement: REDACTED }];
  return [...exact, ...cutPatterns, ...SHAPED_SECRETS, ...CUT_SHAPED_SECRETS];
}

/**
 * The most times a line carries a named secret JSON-escaped: a message quoting JSON, as JSON, in
 * a JSON line.
 */
const MAX_JSON_DEPTH = 3;

/**
 * A pattern matching `secret` in every form a line carries it in, as alternatives of fixed length
 * (no quantifier, so the search stays linear in the line however many `\` and `"` the secret
 * holds). The forms: the secret as written, with its own ASCII percent escapes decoded (`%41` as
 * `A`, as a decoded path parameter shows it), with `\` as `/` (as URL parsing leaves a path), and
 * with its control characters as a text line escapes them (`\x0b`, `\n`); each of those JSON-escaped 0 to {@linkcode MAX_JSON_DEPTH} times (`"` as `\"`, `\\\"` or
 * `\\\\\\\"`); and in each, any character but letters, digits and `-_.~` as that or
 * percent-encoded once or twice (`"` as `%22` or `%2522`, `%` as `%25` or `%2525`), as a URL
 * parser, `encodeURI` or `encodeURIComponent` leaves it. Letters, digits and `-_.~` stand for
 * themselves: a line's other percent escapes of them are decoded before the search (see
 * {@linkcode redactedEncoded}). With the pattern, the forms written out whole (as written,
 * percent-encoded once, twice, and as `encodeURIComponent` leaves them), whose first characters
 * {@linkcode redactionPatterns} redacts where `quoteInput` cut them.
 */
function secretForms(secret: string): { pattern: string; written: string[] } {
  const bases = new Set([
    secret,
    secret.replace(/%([0-7][0-9A-Fa-f])/g, (_, hex) => String.fromCharCode(parseInt(hex, 16))),
    secret.replaceAll("\\", "/"),
    // A text line's message writes its control characters as `\x0b` (see `escapeControls`).
    escapeControls(secret),
  ]);
  // Each character JSON-escaped `depth` times, or percent-encoded (which JSON leaves as it is).
  const forms = new Map<string, string>();
  // Each form written out whole, as the pattern matches it: per form, as written, and (its
  // characters but letters, digits and `-_.~` alike) percent-encoded once and twice; and as
  // `encodeURIComponent` leaves it, once and twice (`!*'()` as written).
  const written = new Set<string>();
  for (const base of bases) {
    if (base.isWellFormed()) {
      written.add(encodeURIComponent(base));
      written.add(encodeURIComponent(encodeURIComponent(base)));
    }
    for (let depth = 0; depth <= MAX_JSON_DEPTH; depth++) {
      const chars = [...base].map((char) => characterForms(char, depth));
      forms.set(
        chars.map(([text]) => text).join(""),
        chars.map(([, pattern]) => pattern).join(""),
      );
      written.add(chars.map(([text]) => text).join(""));
      written.add(chars.map(([text, , once]) => once ?? text).join(""));
      written.add(chars.map(([text, , , twice]) => twice ?? text).join(""));
    }
  }
  // Longest first: where one form begins another (`a\"b` and `a`…), the whole is replaced.
  const pattern = `(?:${
    [...forms].sort(([a], [b]) => b.length - a.length).map(([, form]) => form).join("|")
  })`;
  return { pattern, written: [...written] };
}

/** Two hex digits in either case. */
function hexForms(hex: string): string {
  return [...hex].map((digit) =>
    /[A-Fa-f]/.test(digit) ? `[${digit.toUpperCase()}${digit.toLowerCase()}]` : digit
  ).join("");
}

/**
 * One character JSON-escaped `depth` times, a pattern matching that or the character
 * percent-encoded once or twice (its hex digits in either case), and those two encodings (upper
 * case hex, as `encodeURIComponent` writes them; none for a character that stands for itself).
 */
function characterForms(
  char: string,
  depth: number,
): [written: string, pattern: string, once?: string, twice?: string] {
  let written = char;
  for (let times = 0; times < depth; times++) written = JSON.stringify(written).slice(1, -1);
  if (/[A-Za-z0-9_.~-]/.test(char)) return [written, char];
  // A lone surrogate has no UTF-8: as written only.
  if (!char.isWellFormed()) return [written, escapeRegExp(written)];
  const hexes = [...new TextEncoder().encode(char)].map((byte) =>
    byte.toString(16).toUpperCase().padStart(2, "0")
  );
  const once = hexes.map((hex) => `%${hexForms(hex)}`).join("");
  const twice = hexes.map((hex) => `%25${hexForms(hex)}`).join("");
  return [
    written,
    `(?:${escapeRegExp(written)}|${once}|${twice})`,
    hexes.map((hex) => `%${hex}`).join(""),
    hexes.map((hex) => `%25${hex}`).join(""),
  ];
}

/** Where `quoteInput` cut client input: its ellipsis and the length it gives after it. */
const QUOTE_CUT = String.raw`(?=… \()`;

/** The fewest first characters of a secret cut by `quoteInput` that are redacted. */
const MIN_CUT_SECRET = 4;

/**
 * A pattern matching the longest prefix of `form` of at least {@linkcode MIN_CUT_SECRET}
 * characters and shorter than the whole: nested optional groups, one a character, so its length
 * grows with the secret's (all the prefixes listed would grow with its square).
 */
function cutPrefixes(form: string): string {
  let tail = "";
  for (let index = form.length - 2; index >= MIN_CUT_SECRET; index--) {
    tail = `(?:${escapeRegExp(form[index])}${tail})?`;
  }
  return `${escapeRegExp(form.slice(0, MIN_CUT_SECRET))}${tail}`;
}

/** A run-time secret key (`sk_…`) that `quoteInput` cut before its end. */
const CUT_SHAPED_SECRETS: RedactionPattern[] = [
  {
    pattern: new RegExp(String.raw`${WORD_START}sk_[A-Za-z0-9_-]{1,31}${QUOTE_CUT}`, "g"),
    replacement: `sk_${REDACTED}`,
  },
];

/** A value inside a message: strings as they are, errors as `Name: message`, the rest as JSON. */
function messageValue(value: unknown): string {
  if (typeof value === "string") return value;
  // A finite number's JSON is its string; the common case, without a replacer.
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
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

/**
 * Message templates split once: text, property name, text, … (odd places name a property). Null
 * for a template a plain split would read otherwise than LogTape (escaped braces, `{*}`, paths).
 */
const templates = new Map<string, string[] | null>();

const PLAIN_PLACEHOLDER = /^[A-Za-z_$][\w$]*$/;

function splitTemplate(template: string): string[] | null {
  let parts = templates.get(template);
  if (parts !== undefined) return parts;
  parts = [];
  let at = 0;
  for (let open = template.indexOf("{"); open !== -1; open = template.indexOf("{", at)) {
    const close = template.indexOf("}", open + 1);
    const name = close === -1 ? "" : template.slice(open + 1, close);
    if (!PLAIN_PLACEHOLDER.test(name)) {
      parts = null;
      break;
    }
    parts.push(template.slice(at, open), name);
    at = close + 1;
  }
  if (parts !== null) {
    parts.push(template.slice(at));
    if (parts.some((part, i) => i % 2 === 0 && (part.includes("{") || part.includes("}")))) {
      parts = null;
    }
  }
  // Templates come from code: a few dozen. Bounded anyway.
  if (templates.size < 1024) templates.set(template, parts);
  return parts;
}

/**
 * A record's rendered message. LogTape parses a string template again for every record that
 * reads `message`; a template of plain `{name}` placeholders is split once here and filled from
 * the properties, which is what LogTape's parse gives. Records {@linkcode scrubbedRecord} made
 * carry their own message.
 */
function messageText(record: LogRecord): string {
  const template = record.rawMessage;
  const parts = typeof template === "string" && !scrubbedRecords.has(record)
    ? splitTemplate(template)
    : null;
  if (parts === null) return renderMessage(record.message);
  const properties = record.properties;
  let text = parts[0];
  for (let i = 1; i < parts.length; i += 2) {
    text += messageValue(properties[parts[i]]) + parts[i + 1];
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

/** The properties a JSON line's own fields would clash with. */
const LINE_FIELDS = new Set(["@timestamp", "level", "logger", "message"]);

/** The last timestamp formatted: records of one millisecond share it. */
const lastTime = { ms: Number.NaN, text: "", second: Number.NaN, prefix: "" };

/** Milliseconds as the three digits `toISOString` ends with. */
const MILLIS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, "0"));

function isoTime(ms: number): string {
  if (ms !== lastTime.ms) {
    // Records of one second share the text up to its milliseconds: formatting a date per line
    // was a visible share of a request line.
    const second = Math.floor(ms / 1000);
    if (second !== lastTime.second || !Number.isInteger(ms)) {
      const text = new Date(ms).toISOString();
      lastTime.second = Number.isInteger(ms) ? second : Number.NaN;
      lastTime.prefix = text.slice(0, -4);
      lastTime.text = text;
    } else {
      lastTime.text = `${lastTime.prefix}${MILLIS[ms - second * 1000]}Z`;
    }
    lastTime.ms = ms;
  }
  return lastTime.text;
}

/** Dotted logger names by category: a logger's category is one array for its life. */
const loggerNames = new WeakMap<readonly string[], string>();

function loggerName(category: readonly string[]): string {
  let name = loggerNames.get(category);
  if (name === undefined) {
    name = category.join(".");
    loggerNames.set(category, name);
  }
  return name;
}

/** The line built as an object: for records whose properties clash with its fields or are circular. */
function objectJsonLine(record: LogRecord): string {
  const line = {
    "@timestamp": isoTime(record.timestamp),
    level: record.level,
    logger: loggerName(record.category),
    message: messageText(record),
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

/**
 * One JSON object a line: `@timestamp`, `level`, `logger`, `message` (the
 * rendered text) and the record's properties as top-level fields.
 */
export function jsonLineFormatter(record: LogRecord): string {
  const properties = record.properties;
  for (const name in properties) {
    const value = properties[name];
    // Objects and bigints need the replacer (errors, bigints) and may be circular; a name that is
    // one of the line's own fields takes its place.
    if (
      LINE_FIELDS.has(name) || (typeof value === "object" && value !== null) ||
      typeof value === "bigint" || name === "toJSON" || isDigit(name.charCodeAt(0))
    ) {
      return objectJsonLine(record);
    }
  }
  // Plain values only (most lines, every request line that is no error): the properties' own
  // JSON after the line's fields, the same text as one object holding them all, without building
  // that object (a third of a request line's cost).
  const fields = JSON.stringify(properties);
  return `{"@timestamp":"${isoTime(record.timestamp)}"${lineFieldsAfterTime(record)}${
    JSON.stringify(messageText(record))
  }${fields === "{}" ? "}" : `,${fields.slice(1)}`}\n`;
}

/**
 * Whether a character code is an ASCII digit. A property named like an array index ("404") goes
 * before the line's own fields in an object's JSON: such lines take the object path, whose order
 * that is.
 */
function isDigit(code: number): boolean {
  return code >= 48 && code <= 57;
}

/** `,"level":…,"logger":…,"message":` by level, by category: the same few for every line. */
const linePrefixes = new WeakMap<readonly string[], Map<string, string>>();

function lineFieldsAfterTime(record: LogRecord): string {
  let byLevel = linePrefixes.get(record.category);
  if (byLevel === undefined) {
    byLevel = new Map();
    linePrefixes.set(record.category, byLevel);
  }
  let text = byLevel.get(record.level);
  if (text === undefined) {
    text = `,"level":${JSON.stringify(record.level)},"logger":${
      JSON.stringify(loggerName(record.category))
    },"message":`;
    byLevel.set(record.level, text);
  }
  return text;
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
 * What a text line escapes: every control character but the tab, line breaks and the escape that
 * starts a color among them. A rendered message or value holds what clients and configuration
 * wrote (a path, a quoted config value); a raw `\n` or `\r` there would forge or overwrite a line
 * at the terminal, as an escape sequence would recolor or clear it.
 */
const TEXT_ESCAPES = { sgr: "escape", newlines: "escape" } as const;

/**
 * `text` with its control characters but the tab escaped (`\n`, `\r`, `\x1b`, `\x07`): one line,
 * no terminal sequences. For text lines, and for anything else written to a terminal whole (a
 * startup mistake's line).
 */
export function escapeControls(text: string): string {
  return sanitizeControlSequences(text, TEXT_ESCAPES);
}

/**
 * Text lines for a terminal: time, level, logger and message, then the
 * properties the message does not show as `name=value`. Each record is one
 * line: control characters in the message, its values and the properties
 * (an error's stack too) are escaped, as a JSON line escapes them; the
 * colors are the formatter's own, added after.
 */
export function textLineFormatter(options: { colors?: boolean } = {}): TextFormatter {
  const settings = {
    timestamp: "time" as const,
    // The message's text parts and the category; the values go through `value`.
    sanitize: TEXT_ESCAPES,
    value: (value: unknown) => escapeControls(messageValue(value)),
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
        .map(([name, value]) => `${escapeControls(name)}=${escapeControls(textValue(value))}`);
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

/** Names already tested against {@linkcode SECRET_FIELD}: records repeat the same few. */
const secretNames = new Map<string, boolean>();

function namesSecret(name: string): boolean {
  let secret = secretNames.get(name);
  if (secret === undefined) {
    secret = SECRET_FIELD.test(name);
    // Names come from code and from logged objects; keep the memory bounded.
    if (secretNames.size < 4096) secretNames.set(name, secret);
  }
  return secret;
}

/** What {@linkcode withoutSecrets} dropped and the objects it has seen (for cycles and sharing). */
interface Scrubbing {
  dropped: unknown[];
  seen: Map<object, unknown> | undefined;
}

/**
 * `value` without the properties named like a secret, in objects and arrays
 * at any depth: `value` itself when nothing is dropped, else a copy (a plain
 * object). Errors, dates and built-in collections are kept as they are.
 */
function withoutSecrets(value: unknown, scrubbing: Scrubbing): unknown {
  if (typeof value !== "object" || value === null) return value;
  const seen = scrubbing.seen ??= new Map();
  if (seen.has(value)) return seen.get(value);
  // A cycle back to `value` keeps pointing at the original; the line then has no properties.
  seen.set(value, value);
  let copy: Record<string, unknown> | unknown[] | undefined;
  if (Array.isArray(value)) {
    let items: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const item = withoutSecrets(value[i], scrubbing);
      if (item !== value[i]) (items ??= value.slice())[i] = item;
    }
    copy = items;
  } else {
    if (!traversable(value)) return value;
    copy = scrubbedProperties(value as Record<string, unknown>, scrubbing);
    if (copy === value) copy = undefined;
  }
  if (copy !== undefined) seen.set(value, copy);
  return copy ?? value;
}

/**
 * Whether a line shows `value` through its enumerable properties, so a copy
 * without the secret ones shows the same: plain objects and class instances,
 * not errors (written by name, message, stack and cause), values with their
 * own `toJSON` (dates) and built-in collections and buffers.
 */
function traversable(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  if (prototype === Object.prototype || prototype === null) return true;
  return !(value instanceof Error) &&
    typeof (value as { toJSON?: unknown }).toJSON !== "function" &&
    !(value instanceof Map) && !(value instanceof Set) && !(value instanceof Promise) &&
    !(value instanceof ArrayBuffer) && !ArrayBuffer.isView(value);
}

/** The properties of `object` without those named like a secret; `object` itself when none is. */
function scrubbedProperties(
  object: Record<string, unknown>,
  scrubbing: Scrubbing,
): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const name in object) {
    const value = object[name];
    if (namesSecret(name)) {
      scrubbing.dropped.push(value);
      copy ??= copyBefore(object, name);
      continue;
    }
    const kept = typeof value === "object" && value !== null
      ? withoutSecrets(value, scrubbing)
      : value;
    if (copy === undefined && kept !== value) copy = copyBefore(object, name);
    if (copy !== undefined) copy[name] = kept;
  }
  return copy ?? object;
}

/** A copy of the properties of `object` that come before `name`. */
function copyBefore(object: Record<string, unknown>, name: string): Record<string, unknown> {
  const copy: Record<string, unknown> = {};
  for (const key in object) {
    if (key === name) break;
    copy[key] = object[key];
  }
  return copy;
}

/**
 * `record` without the properties named like a secret; a value they held is
 * `[REDACTED]` in the message too. `record` itself when it has none.
 */
function scrubbedRecord(record: LogRecord): LogRecord {
  const scrubbing: Scrubbing = { dropped: [], seen: undefined };
  const properties = scrubbedProperties(record.properties, scrubbing);
  if (properties === record.properties) return record;
  const { dropped } = scrubbing;
  const message = record.message.map((part, i) =>
    i % 2 === 1 && dropped.includes(part) ? REDACTED : part
  );
  const scrubbed = { ...record, message, properties };
  scrubbedRecords.add(scrubbed);
  return scrubbed;
}

/** Records {@linkcode scrubbedRecord} made, whose message hides what their properties dropped. */
const scrubbedRecords = new WeakSet<LogRecord>();

/**
 * Replaces the secrets `patterns` find in a line. One combined search first:
 * most lines hold none, and are returned as they are after that one scan.
 */
function lineRedactor(patterns: readonly RedactionPattern[]): (line: string) => string {
  // Case-insensitive: it finds at least what each pattern finds.
  const probe = new RegExp(patterns.map(({ pattern }) => `(?:${pattern.source})`).join("|"), "i");
  return (line) => {
    if (probe.test(line)) {
      for (const { pattern, replacement } of patterns) {
        line = line.replaceAll(pattern, replacement);
      }
    }
    return line.includes("%") ? redactedEncoded(line, patterns, probe) : line;
  };
}

/** One or more percent escapes in a row. */
const PERCENT_ESCAPES = /(?:%[0-9A-Fa-f]{2})+/g;

/** What stands, in a line's decoded copy, for a character a pattern redacted. */
const REDACTED_MARK = "\uE000";

/**
 * `line` with the secrets that only its percent-decoded text shows redacted: a key sent partly
 * encoded (`admin-%6Bey…`, or a reserved character that Hono leaves encoded in a path, `%2B`)
 * or a key query parameter whose `?` or name is encoded (`%3Fkey=…`, `t%6Fken=…`). The patterns
 * run on a decoded copy, the characters they redact marked in place (so positions stay), and each
 * marked run is replaced by {@linkcode REDACTED} in `line` as written, whose escapes and JSON stay
 * as they are. `line` itself when the decoded copy shows no secret.
 */
function redactedEncoded(
  line: string,
  patterns: readonly RedactionPattern[],
  probe: RegExp,
): string {
  // starts[i]: where in `line` the text decoded into the copy's unit i starts.
  const starts: number[] = [];
  let decoded = "";
  let copied = 0;
  for (const escapes of line.matchAll(PERCENT_ESCAPES)) {
    for (let index = copied; index < escapes.index; index++) starts.push(index);
    decoded += line.slice(copied, escapes.index);
    decoded += decodeEscapes(escapes[0], escapes.index, starts);
    copied = escapes.index + escapes[0].length;
  }
  if (copied === 0) return line;
  for (let index = copied; index < line.length; index++) starts.push(index);
  decoded += line.slice(copied);
  starts.push(line.length);
  if (!probe.test(decoded)) return line;
  let marked = decoded;
  for (const { pattern, replacement } of patterns) {
    const kept = replacement.slice(0, replacement.indexOf(REDACTED));
    marked = marked.replaceAll(pattern, (match: string, ...groups: unknown[]) => {
      const prefix = kept === "$1" ? String(groups[0] ?? "") : kept;
      return prefix + REDACTED_MARK.repeat(match.length - prefix.length);
    });
  }
  let result = "";
  let from = 0;
  for (let index = 0; index < marked.length; index++) {
    if (marked[index] !== REDACTED_MARK || decoded[index] === REDACTED_MARK) continue;
    let end = index;
    while (end < marked.length && marked[end] === REDACTED_MARK) end++;
    result += line.slice(from, starts[index]) + REDACTED;
    from = starts[end];
    index = end;
  }
  return from === 0 ? line : result + line.slice(from);
}

/**
 * The text of a run of percent `escapes` found at `at` in a line, UTF-8 decoded, pushing where
 * each of its UTF-16 units starts in the line onto `starts`. Bytes that are no UTF-8 stay as
 * written, but for ASCII ones.
 */
function decodeEscapes(escapes: string, at: number, starts: number[]): string {
  let text: string;
  try {
    text = decodeURIComponent(escapes);
  } catch {
    let kept = "";
    for (let index = 0; index < escapes.length; index += 3) {
      const byte = parseInt(escapes.slice(index + 1, index + 3), 16);
      const unit = byte < 0x80 ? String.fromCharCode(byte) : escapes.slice(index, index + 3);
      for (let count = 0; count < unit.length; count++) starts.push(at + index + count);
      kept += unit;
    }
    return kept;
  }
  let offset = at;
  for (const char of text) {
    const codePoint = char.codePointAt(0)!;
    // Both units of a surrogate pair start where its four bytes do.
    for (let count = 0; count < char.length; count++) starts.push(offset);
    offset += 3 * (codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4);
  }
  return text;
}

/** Levels written to stderr (the console's `warn` and `error`); the rest go to stdout. */
const STDERR_LEVELS = new Set<LogLevel>(["warning", "error", "fatal"]);

/** A buffered stdout line is written by then (ms) at the latest. */
const FLUSH_MS = 50;

/** Buffered stdout lines are written once their UTF-8 fills this many bytes. */
const FLUSH_BYTES = 64 * 1024;

/**
 * Lines written to stdout in chunks: a write per line costs a system call
 * each, a large share of a small request. Lines wait at most
 * {@linkcode FLUSH_MS}; a stderr line (warnings and errors) writes what
 * waits first, then itself at once. {@linkcode close} writes what waits and
 * makes later lines go out one by one. Lines wait as UTF-8 in one buffer,
 * encoded as they come: no joined text and no encoded copy of it per chunk.
 */
class BufferedLines {
  #buffer = new Uint8Array(FLUSH_BYTES);
  #length = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #encoder = new TextEncoder();

  write(line: string, level: LogLevel): void {
    if (STDERR_LEVELS.has(level)) {
      this.flush();
      this.#writeAll(Deno.stderr, this.#encoder.encode(line));
      return;
    }
    const { read, written } = this.#encoder.encodeInto(line, this.#buffer.subarray(this.#length));
    if (read === line.length) {
      this.#length += written;
    } else {
      // It does not fit: the whole lines that wait go first (what was encoded of this one is
      // dropped), so another writer to stdout can never land inside a line; then the line, in
      // the buffer when it fits there, else at once.
      this.flush();
      const again = this.#encoder.encodeInto(line, this.#buffer);
      if (again.read === line.length) this.#length = again.written;
      else this.#writeAll(Deno.stdout, this.#encoder.encode(line));
    }
    if (this.#closed || this.#length >= FLUSH_BYTES) this.flush();
    else if (this.#timer === undefined) {
      const timer = setTimeout(this.flush, FLUSH_MS);
      // Waiting lines do not keep the process alive: exit writes them (close()).
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Writes the lines that wait. */
  flush = (): void => {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const length = this.#length;
    this.#length = 0;
    if (length > 0) this.#writeAll(Deno.stdout, this.#buffer.subarray(0, length));
  };

  /** Writes the lines that wait; later lines are written at once. */
  close(): void {
    this.#closed = true;
    this.flush();
  }

  #writeAll(output: typeof Deno.stdout | typeof Deno.stderr, bytes: Uint8Array): void {
    try {
      for (let written = 0; written < bytes.length;) {
        written += output.writeSync(bytes.subarray(written));
      }
    } catch {
      // A closed stdout (its reader went away): logging must not stop the server.
    }
  }
}

/** The redaction of the current configuration, for {@linkcode redactSecrets}. */
let currentRedactor: ((line: string) => string) | undefined;

/** The redaction of secrets known by their shape alone, before any configuration. */
let shapedRedactor: ((line: string) => string) | undefined;

/**
 * `line` with the secrets a log line has redacted: those of the configuration in force (its
 * named secrets too) or, before one, those known by their shape (a `token`, `key`, `access_token`
 * or `api_key` query parameter, `Bearer …`, `whsec_…`, `sk_…`). For a line written outside the
 * logger, such as a startup mistake's.
 *
 * @example
 * ```ts
 * import { redactSecrets } from "./logging.ts";
 *
 * redactSecrets("got 'https://app.example.com/?token=abc'"); // "got 'https://app.example.com/?token=[REDACTED]'"
 * ```
 */
export function redactSecrets(line: string): string {
  const redact = currentRedactor ?? (shapedRedactor ??= lineRedactor(redactionPatterns()));
  return redact(line);
}

/** The lines of the current configuration, for {@linkcode flushLogLines}. */
let currentLines: BufferedLines | undefined;

/**
 * Writes the log lines that wait in the buffer now: before a line written to stderr outside the
 * logger (a startup mistake's), so that a line logged before it is not printed after it.
 */
export function flushLogLines(): void {
  currentLines?.flush();
}

function onDenoDeploy(): boolean {
  try {
    // Asked only when granted: a process without env access must not be prompted for logging.
    const variable = "DENO_DEPLOYMENT_ID";
    if (Deno.permissions.querySync({ name: "env", variable }).state !== "granted") return false;
    return Deno.env.get(variable) !== undefined;
  } catch {
    return false;
  }
}

/** The console method a level is written with, as LogTape's console sink does. */
const CONSOLE_METHODS: Record<LogLevel, keyof LogConsole> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "error",
};

/**
 * Sends the `edgestream` loggers to the console at `level` and up, as JSON
 * lines or text, with secrets redacted (see the module doc). Replaces any
 * earlier configuration.
 *
 * Without `options.console`, lines are written to stdout and stderr
 * directly, stdout lines in chunks at most 50 ms apart; waiting lines are
 * written when the process exits (`Deno.exit`, the end of the program, an
 * uncaught error), at a warning or error line, and when the configuration
 * is replaced. On Deno Deploy each line is its own `console` call, as its
 * log viewer shows one entry per call.
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
  const formatter = format === "json"
    ? jsonLineFormatter
    : textLineFormatter({ colors: !Deno.noColor && options.console === undefined });
  const redact = lineRedactor(redactionPatterns(options.secrets));
  currentRedactor = redact;
  const lines = options.console === undefined && !onDenoDeploy() ? new BufferedLines() : undefined;
  currentLines = lines;
  const console = options.console ?? globalThis.console;
  const write = (record: LogRecord) => {
    const line = redact(formatter(scrubbedRecord(record)));
    if (lines !== undefined) lines.write(line.endsWith("\n") ? line : line + "\n", record.level);
    else console[CONSOLE_METHODS[record.level]](line.replace(/\r?\n$/, ""));
  };
  // An uncaught error ends the process without `unload`: write what waits first.
  const flush = () => lines?.flush();
  if (lines !== undefined) {
    globalThis.addEventListener("error", flush);
    globalThis.addEventListener("unhandledrejection", flush);
  }
  // LogTape disposes sinks when the configuration is replaced and at `unload`.
  const sink = Object.assign(write, {
    [Symbol.dispose]() {
      globalThis.removeEventListener("error", flush);
      globalThis.removeEventListener("unhandledrejection", flush);
      lines?.close();
    },
  });
  // LogTape copies a record's properties before handing it to a sink that may keep it; this one
  // formats the line at once, so it marks itself as LogTape's own immediate sinks are marked
  // (a symbol in the global registry; were it renamed, LogTape would copy again, as before).
  Object.defineProperty(sink, Symbol.for("LogTape.sinkSnapshotPolicy.immediate"), { value: true });
  const level = options.level ?? "info";
  const storage = new AsyncLocalStorage<Record<string, unknown>>();
  const config: Config<"console", never> = {
    reset: true,
    sinks: { console: sink },
    loggers: [
      { category: ["edgestream"], sinks: ["console"], lowestLevel: level },
      // LogTape's own diagnostics: only its failures.
      { category: ["logtape", "meta"], sinks: ["console"], lowestLevel: "warning" },
    ],
    // Lets records logged while serving a request carry its request id.
    contextLocalStorage: storage,
  };
  configureSync(config);
  installed = { config, write, lowest: LOG_LEVELS.indexOf(level), storage };
}

/** What {@linkcode configureLogging} installed last: its configuration, sink, level and context. */
let installed: {
  config: Config<"console", never>;
  write: (record: LogRecord) => void;
  lowest: number;
  storage: AsyncLocalStorage<Record<string, unknown>>;
} | undefined;

/**
 * Whether the configuration {@linkcode configureLogging} installed, in force with no context
 * active, drops a record of the `edgestream` logger `category` at `level`: a caller that would
 * make a record only to write it (the request line) may then skip making it. False whenever
 * LogTape itself would decide (as for {@linkcode writeLogRecord}).
 */
export function dropsRecord(category: readonly string[], level: LogLevel): boolean {
  const target = installedFor(category);
  return target !== undefined && LOG_LEVELS.indexOf(level) < target.lowest;
}

/**
 * The configuration {@linkcode configureLogging} installed when it alone decides a record of the
 * `edgestream` logger `category`: in force, and no context active, or one the record's
 * `properties` carry already ({@linkcode carriesContext}). Else undefined: LogTape must.
 */
function installedFor(
  category: readonly string[],
  properties?: Record<string, unknown>,
): typeof installed {
  const target = installed;
  if (target === undefined || getConfig() !== target.config || category[0] !== "edgestream") {
    return undefined;
  }
  const context = target.storage.getStore();
  if (context !== undefined && (properties === undefined || !carriesContext(properties, context))) {
    return undefined;
  }
  return target;
}

/**
 * Whether `properties` hold every field of the log context `context` with the same value: a record
 * of them then says what LogTape's own call would (it adds the context's fields first, so only the
 * order of the fields differs). A WebSocket frame's line, logged in its upgrade request's context
 * (`requestId`), carries that id itself.
 */
export function carriesContext(
  properties: Record<string, unknown>,
  context: Record<string, unknown>,
): boolean {
  for (const key in context) {
    if (!Object.hasOwn(context, key)) continue;
    if (!Object.hasOwn(properties, key) || properties[key] !== context[key]) return false;
  }
  return true;
}

/**
 * Dispatches `record` of an `edgestream` logger (made whole, as `Logger.emit` takes it) as LogTape
 * would while the configuration {@linkcode configureLogging} installed is in force and no context
 * is active, or one the record carries ({@linkcode carriesContext}): to that configuration's sink,
 * when at its level or above. Returns false, having written nothing, when LogTape must dispatch it
 * (another configuration, an active context the record lacks a field of, scoped configuration,
 * another category, a sink that threw). A request line costs LogTape's
 * dispatch (its category prefix, scoped configuration, filters and sink plan looked up again for
 * every record) about a fifth of what the line costs in all.
 */
export function writeLogRecord(record: LogRecord): boolean {
  const target = installedFor(record.category, record.properties);
  if (target === undefined) return false;
  if (LOG_LEVELS.indexOf(record.level) < target.lowest) return true;
  try {
    target.write(record);
  } catch {
    // LogTape reports a failing sink through its meta logger: let it.
    return false;
  }
  return true;
}
