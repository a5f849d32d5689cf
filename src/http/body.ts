/**
 * Reading ingest bodies: one JSON event, a JSON array of events, or NDJSON
 * lines; with byte limits enforced while reading and strict UTF-8.
 *
 * @module
 */
import { gunzip, inflate as inflateZlib, inflateRaw } from "node:zlib";
import type { Context, MiddlewareHandler } from "hono";
import { duplicateKeyProblem, formatPath, protoKeyPaths } from "../config/mod.ts";
import type { BodyItem } from "../ingest/mod.ts";
import { quoteInput } from "../telemetry/logging.ts";
import { jsonSyntaxProblem } from "../validate/mod.ts";
import { routeServes } from "./_served.ts";

/** Why a body was refused as a whole; `errors.ts` maps each code to its HTTP status. */
export type BodyErrorCode =
  | "unsupported_media_type"
  | "payload_too_large"
  | "body_timeout"
  | "body_interrupted"
  | "too_many_events"
  | "invalid_utf8"
  | "invalid_json"
  | "invalid_body"
  | "empty_body"
  | "empty_batch";

/** A body refused as a whole (not one bad event, which becomes a failed item). */
export class BodyError extends Error {
  /** Machine-readable reason, also the error code of the response. */
  readonly code: BodyErrorCode;
  /** What a client needs to send it again, as the response's `error.details` (`maxEvents`). */
  readonly details?: Record<string, unknown>;

  constructor(
    code: BodyErrorCode,
    message: string,
    options?: ErrorOptions & { details?: Record<string, unknown> },
  ) {
    super(message, options);
    this.name = "BodyError";
    this.code = code;
    if (options?.details) this.details = options.details;
  }
}

/** Limits for {@linkcode readLimitedBody} and {@linkcode parseEvents}. */
export interface BodyLimits {
  /** Largest body in bytes. @default {1048576} */
  maxBodyBytes?: number;
  /** Largest single event in bytes (of its JSON text). @default {65536} */
  maxEventBytes?: number;
  /** Most events in one body. @default {1000} */
  maxEvents?: number;
  /** Longest time to receive an HTTP body, in ms (408 past it). @default {10000} */
  bodyTimeoutMs?: number;
}

/** Default limits. */
export const DEFAULT_LIMITS: Required<BodyLimits> = {
  maxBodyBytes: 1024 * 1024,
  maxEventBytes: 64 * 1024,
  maxEvents: 1000,
  bodyTimeoutMs: 10_000,
};

/** How a body is framed. */
export type BodyFormat = "json" | "ndjson";

/** How {@linkcode bodyFormat} reads a `Content-Type` beyond JSON and NDJSON. */
export interface BodyFormatOptions {
  /** `text/plain` is read as JSON (a beacon's body). */
  plainTextAsJson?: boolean;
  /** One more type the 415's message names as taken (`text/plain (JSON)`). */
  alsoTaken?: string;
}

/**
 * Maps a `Content-Type` header to a body format, or throws 415 naming the types taken.
 */
export function bodyFormat(
  contentType: string | undefined,
  options: BodyFormatOptions = {},
): BodyFormat {
  const [type, ...parameters] = (contentType ?? "").split(";");
  const mediaType = type.trim().toLowerCase();
  // Bodies are read as UTF-8: another charset said would be misread, not converted.
  if (parameters.length > 0) refuseOtherCharset(parameters);
  if (mediaType === "application/json") return "json";
  if (mediaType === "text/plain" && options.plainTextAsJson) return "json";
  if (mediaType === "application/x-ndjson" || mediaType === "application/ndjson") return "ndjson";
  const { alsoTaken } = options;
  const taken = alsoTaken === undefined
    ? "application/json, application/x-ndjson or application/ndjson"
    : `application/json, application/x-ndjson, application/ndjson or ${alsoTaken}`;
  throw new BodyError(
    "unsupported_media_type",
    `Content-Type must be ${taken}, got '${mediaType ? quoteInput(mediaType) : "(none)"}'`,
  );
}

/** Throws 415 when a `charset` parameter (of a `Content-Type`'s) names anything but UTF-8. */
export function refuseOtherCharset(parameters: readonly string[]): void {
  for (const parameter of parameters) {
    const [name, value = ""] = parameter.split("=");
    if (name.trim().toLowerCase() !== "charset") continue;
    const charset = value.trim().replace(/^"(.*)"$/, "$1").toLowerCase();
    if (charset !== "utf-8" && charset !== "utf8") {
      throw new BodyError(
        "unsupported_media_type",
        `Bodies are read as UTF-8: Content-Type charset must be utf-8, got '${
          quoteInput(charset)
        }'`,
      );
    }
  }
}

function tooLarge(limit: number): BodyError {
  return new BodyError("payload_too_large", `Body exceeds the ${limit}-byte limit`);
}

/** Options for {@linkcode readLimitedBody}. */
export interface ReadBodyOptions {
  /**
   * Longest time to receive the whole body, in ms; past it the read is
   * cancelled with 408 `body_timeout`, so a client that trickles bytes cannot
   * hold a connection open. @default {10000}
   */
  timeoutMs?: number;
}

/** A body read in progress, and how to stop it when its time is up. */
interface BodyRead {
  /** `performance.now()` time it must be done by. */
  deadline: number;
  expire(): void;
  /** Its neighbours in {@linkcode BodyDeadlines}' list while it is in it. */
  previous?: BodyRead;
  next?: BodyRead;
  /** True while it is in the list. */
  listed?: boolean;
}

/**
 * The deadlines of the body reads in progress, checked by one interval instead of a timer per
 * request: setting and clearing a timer cost more than reading a small body. The interval keeps
 * running between reads (it stops at the first check that finds none, so steady traffic does not
 * start and stop it for each request) and keeps the process alive only while a read is in
 * progress. A read is stopped within a quarter of its timeout (at most 1 s) after its deadline.
 * The reads are a linked list: adding and removing one is a few writes, where a `Set` hashed
 * each read and rebuilt its table as it emptied and filled (about 2% of a small request's CPU).
 */
class BodyDeadlines {
  #first: BodyRead | undefined;
  #count = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #periodMs = Infinity;

  add(read: BodyRead, timeoutMs: number): void {
    read.previous = undefined;
    read.next = this.#first;
    if (this.#first) this.#first.previous = read;
    this.#first = read;
    read.listed = true;
    this.#count++;
    const periodMs = Math.min(1_000, Math.max(5, Math.ceil(timeoutMs / 4)));
    if (periodMs < this.#periodMs) {
      clearInterval(this.#timer);
      this.#periodMs = periodMs;
      this.#timer = setInterval(this.#check, periodMs);
    } else if (this.#count === 1) Deno.refTimer(this.#timer!);
  }

  delete(read: BodyRead): void {
    if (!this.#unlink(read)) return;
    if (this.#count === 0 && this.#timer !== undefined) Deno.unrefTimer(this.#timer);
  }

  /** Takes `read` out of the list; false when it was not in it. */
  #unlink(read: BodyRead): boolean {
    if (!read.listed) return false;
    if (read.previous) read.previous.next = read.next;
    else this.#first = read.next;
    if (read.next) read.next.previous = read.previous;
    read.previous = read.next = undefined;
    read.listed = false;
    this.#count--;
    return true;
  }

  #check = (): void => {
    const now = performance.now();
    for (let read = this.#first; read !== undefined;) {
      const next = read.next;
      if (read.deadline <= now) {
        this.#unlink(read);
        read.expire();
      }
      read = next;
    }
    if (this.#count === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#periodMs = Infinity;
    }
  };
}

const bodyDeadlines = new BodyDeadlines();

/**
 * Reads a request body, refusing (413) as soon as it passes `maxBodyBytes`
 * and (408) when it takes longer than `timeoutMs` to arrive (noticed within a
 * quarter of `timeoutMs`, at most 1 s, after it). A body sent with
 * `Content-Encoding: gzip` or `deflate` is decompressed, within the same
 * limit (no bytes are an empty body, as without the header); any other encoding is 415.
 */
export function readLimitedBody(
  request: Request,
  maxBodyBytes: number,
  options: ReadBodyOptions = {},
): Promise<Uint8Array> {
  let encoding: CompressionFormat | null;
  try {
    // Lower case: see the note in `_header_list.ts`.
    encoding = contentEncoding(request.headers.get("content-encoding"));
  } catch (error) {
    return Promise.reject(error);
  }
  const bytes = readEncodedBody(request, maxBodyBytes, options);
  // No bytes are an empty body whatever `Content-Encoding` says, as without one (and as
  // `noBody` reads them): gzip's decompressor would call them a corrupt stream (400).
  return encoding === null
    ? bytes
    : bytes.then((body) => body.byteLength === 0 ? body : inflate(body, encoding, maxBodyBytes));
}

/** The compression a `Content-Encoding` names (null: none); throws 415 for any other. */
function contentEncoding(header: string | null): CompressionFormat | null {
  const name = header?.trim().toLowerCase() ?? "";
  if (name === "" || name === "identity") return null;
  if (name === "gzip" || name === "x-gzip") return "gzip";
  if (name === "deflate") return "deflate";
  throw new BodyError(
    "unsupported_media_type",
    `Content-Encoding '${quoteInput(header ?? "")}' is not supported: send gzip, deflate or none`,
  );
}

/**
 * A compressed body decompressed, refused (413) as soon as it passes `maxBodyBytes`
 * decompressed, 400 `invalid_body` when it is not what its `Content-Encoding` says (`deflate`
 * zlib-wrapped or raw, see {@linkcode hasZlibHeader}). A gzip body
 * may be several members one after the other, as RFC 1952 allows (what `cat a.gz b.gz` makes):
 * their contents are read in order. node:zlib's inflater stops at the limit (a 300 MB body of
 * zeros costs about the limit), where the web's `DecompressionStream` takes one gzip member only.
 */
async function inflate(
  body: Uint8Array,
  format: CompressionFormat,
  maxBodyBytes: number,
): Promise<Uint8Array> {
  const options = { maxOutputLength: maxBodyBytes };
  try {
    const out = await new Promise<Uint8Array>((resolve, reject) => {
      const done = (error: Error | null, result: Uint8Array) =>
        error ? reject(error) : resolve(result);
      if (format === "gzip") gunzip(body, options, done);
      else if (hasZlibHeader(body)) inflateZlib(body, options, done);
      else inflateRaw(body, options, done);
    });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (error) {
    if ((error as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new BodyError(
        "payload_too_large",
        `Body exceeds the ${maxBodyBytes}-byte limit once decompressed`,
      );
    }
    throw new BodyError(
      "invalid_body",
      `Body is not valid ${format} (Content-Encoding): ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/**
 * Whether a `deflate` body starts with a zlib header (RFC 1950: method 8, a window of at most
 * 32 KiB, the two bytes a multiple of 31), as HTTP's `deflate` is: the checks zlib's inflater makes
 * of the header, so a body goes raw exactly when zlib would refuse its header, as browsers do. Some
 * clients send the deflate data without it (raw, RFC 1951): such a body is inflated as it is. Raw
 * deflate carries no check: plain JSON labelled `deflate` fails to inflate (`invalid_body`), but
 * bytes that do inflate are read as any body (`invalid_utf8`, `invalid_json` when they are not).
 */
function hasZlibHeader(body: Uint8Array): boolean {
  return body.byteLength >= 2 && (body[0] & 0x0f) === 8 && body[0] >> 4 <= 7 &&
    (body[0] * 256 + body[1]) % 31 === 0;
}

/** `chunks` as one array of `size` bytes (one chunk as it is). */
function joined(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** {@linkcode readLimitedBody} of the bytes as they came. */
function readEncodedBody(
  request: Request,
  maxBodyBytes: number,
  options: ReadBodyOptions,
): Promise<Uint8Array> {
  // Lower case: see the note in `_header_list.ts`.
  const lengthHeader = request.headers.get("content-length");
  const declared = lengthHeader === null ? NaN : Number(lengthHeader);
  if (Number.isFinite(declared) && declared > maxBodyBytes) {
    return Promise.reject(tooLarge(maxBodyBytes));
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_LIMITS.bodyTimeoutMs;
  // Before `request.body`: its getter turns a body the runtime already holds whole (a small one
  // on a kept-alive connection) into a ReadableStream that `bytes()` then reads back, where
  // `bytes()` alone hands the held bytes over (and is empty for a request without a body).
  if (Number.isInteger(declared) && declared >= 0) {
    return readDeclared(request, { declared, maxBodyBytes, timeoutMs });
  }
  const body = request.body;
  if (!body) return Promise.resolve(new Uint8Array());
  return readChunks(body, { maxBodyBytes, timeoutMs });
}

/** A body without a Content-Length, read chunk by chunk and stopped at the limit. */
async function readChunks(
  body: ReadableStream<Uint8Array>,
  options: { maxBodyBytes: number; timeoutMs: number },
): Promise<Uint8Array> {
  const { maxBodyBytes, timeoutMs } = options;
  const reader = body.getReader();
  let timedOut = false;
  const read: BodyRead = {
    deadline: performance.now() + timeoutMs,
    expire() {
      timedOut = true;
      reader.cancel().catch(() => {});
    },
  };
  bodyDeadlines.add(read, timeoutMs);
  try {
    const chunks: Uint8Array[] = [];
    let size = 0;
    while (true) {
      const { done, value } = await reader.read().catch((error) => {
        if (timedOut) return { done: true as const, value: undefined };
        throw interrupted(`after ${size} bytes`, error);
      });
      if (timedOut) {
        throw new BodyError(
          "body_timeout",
          `Body did not arrive within ${timeoutMs} ms (received ${size} bytes)`,
        );
      }
      if (done) break;
      size += value.byteLength;
      if (size > maxBodyBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(maxBodyBytes);
      }
      chunks.push(value);
    }
    return joined(chunks, size);
  } finally {
    bodyDeadlines.delete(read);
  }
}

function interrupted(when: string, error: unknown): BodyError {
  // The connection broke, or the server is shutting down (Deno.serve's shutdown() ends the bodies
  // still arriving): nothing was applied.
  return new BodyError(
    "body_interrupted",
    `Body was cut off ${when}: ${
      error instanceof Error ? error.message : error
    }; nothing was applied, send it again`,
    { cause: error },
  );
}

/**
 * A body with a Content-Length, which the runtime holds it to: read whole by the runtime in one
 * call (a stream read chunk by chunk costs several µs more per request). Past its deadline the
 * request is answered 408 while the read is left to end with the connection.
 */
function readDeclared(
  request: Request,
  options: { declared: number; maxBodyBytes: number; timeoutMs: number },
): Promise<Uint8Array> {
  const { declared, maxBodyBytes, timeoutMs } = options;
  // One promise settled by whichever comes first, the body or its deadline (a race of two
  // promises costs two more per request); the later one finds it settled and changes nothing.
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  const read: BodyRead = {
    deadline: performance.now() + timeoutMs,
    expire: () =>
      reject(
        new BodyError(
          "body_timeout",
          `Body did not arrive within ${timeoutMs} ms (Content-Length ${declared})`,
        ),
      ),
  };
  bodyDeadlines.add(read, timeoutMs);
  request.bytes().then((body) => {
    bodyDeadlines.delete(read);
    // A runtime holds the body to its Content-Length; a Request made in process need not be.
    if (body.byteLength > maxBodyBytes) reject(tooLarge(maxBodyBytes));
    else resolve(body);
  }, (error) => {
    bodyDeadlines.delete(read);
    reject(interrupted(`before its ${declared} declared bytes arrived`, error));
  });
  return promise;
}

// The byte order mark is kept here and dropped by withoutByteOrderMark, which a WebSocket frame
// (text already decoded) goes through too.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const replacingDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * A body's text without the byte order mark (U+FEFF) it may start with, as some editors and
 * Windows tools write: the mark is not part of the JSON. One mark, as a TextDecoder drops.
 */
export function withoutByteOrderMark(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Decodes strict UTF-8, without a leading byte order mark, or throws 400 `invalid_utf8`. */
export function decodeUtf8(bytes: Uint8Array): string {
  // The replacing decoder is several times faster than the strict one, and marks every invalid
  // sequence with U+FFFD: text without one was valid. Text with one (which valid UTF-8 may also
  // hold) is decoded again strictly.
  const text = replacingDecoder.decode(bytes);
  if (!text.includes("\uFFFD")) return withoutByteOrderMark(text);
  try {
    return withoutByteOrderMark(decoder.decode(bytes));
  } catch {
    throw new BodyError("invalid_utf8", "Body is not valid UTF-8");
  }
}

function tooManyEvents(count: number, max: number): BodyError {
  return new BodyError(
    "too_many_events",
    `Batch has ${count} events; at most ${max} are allowed per request`,
    { details: { maxEvents: max } },
  );
}

function eventTooLarge(bytes: number, limit: number): BodyItem {
  return {
    ok: false,
    error: { path: "", message: `Event is ${bytes} bytes; the limit is ${limit} bytes` },
  };
}

/**
 * The event `value`, or its refusal when its compact JSON is over `maxEventBytes` of UTF-8: the
 * same measure however it came (alone, in an array, on an NDJSON line), so neither whitespace
 * nor escapes in what was sent count. Measured only when `measure` (see {@linkcode mayHoldLarge}).
 */
function sized(value: unknown, measure: boolean, maxEventBytes: number): BodyItem {
  if (!measure) return { ok: true, value };
  const bytes = utf8Length(JSON.stringify(value) ?? "");
  return bytes > maxEventBytes ? eventTooLarge(bytes, maxEventBytes) : { ok: true, value };
}

/**
 * Whether an event in `text` may be over `maxEventBytes` as compact JSON, so events need
 * measuring. A UTF-16 unit is at most 3 bytes of it (an escape is no longer there than in the
 * text), except in a number with an exponent: `1e20`, 4 units, is 21 bytes. One event (alone or
 * an NDJSON line) is measured from a sixth of the limit, so exactly; the events of a batch from a
 * third, so that a batch of small events is not serialized again (`batch`): there, numbers
 * written with exponents can make an event up to 5.25 times its text unmeasured.
 */
function mayHoldLarge(text: string, maxEventBytes: number, batch = false): boolean {
  return text.length > maxEventBytes / (batch ? 3 : 6);
}

/** Byte length of a string's UTF-8 encoding, without encoding it. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code <= 0xdbff && code >= 0xd800 && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4;
      i++;
    } else bytes += 3; // Also a lone surrogate, which UTF-8 encodes as U+FFFD.
  }
  return bytes;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const problem = jsonSyntaxProblem(error, text);
    throw new BodyError(
      "invalid_json",
      problem === undefined
        ? "Body is not valid JSON"
        : `Body is not valid JSON: ${problem.reason} at line ${problem.line}, column ${problem.column}`,
    );
  }
}

/** An NDJSON line of a body: its text trimmed, as sent (`raw`), and its number (from 1). */
interface NdjsonLine {
  /** The line without the spaces around it. */
  line: string;
  /** The line as sent, which columns count in. */
  raw: string;
  /** The line's number in the body (from 1, blank lines counted). */
  number: number;
}

/**
 * The message of an NDJSON line that `JSON.parse` refused with `error`: where, in the line as
 * sent, and why, without its text.
 */
function lineJsonMessage(error: unknown, { line, raw, number }: NdjsonLine): string {
  const problem = jsonSyntaxProblem(error, line);
  if (problem === undefined) return `Line ${number} is not valid JSON`;
  const indent = raw.length - raw.trimStart().length;
  return `Line ${number} is not valid JSON: ${problem.reason} at column ${problem.column + indent}`;
}

/**
 * Splits a decoded body into events. Request-level problems (empty, not
 * JSON, a scalar, too many events) throw an {@linkcode BodyError}; problems
 * with one NDJSON line become a failed item, so the other lines still count.
 */
export function parseEvents(text: string, format: BodyFormat, limits: BodyLimits = {}): BodyItem[] {
  const maxEvents = limits.maxEvents ?? DEFAULT_LIMITS.maxEvents;
  const maxEventBytes = limits.maxEventBytes ?? DEFAULT_LIMITS.maxEventBytes;
  if (text.trim() === "") {
    throw new BodyError("empty_body", "Body is empty: send at least one event");
  }
  if (format === "ndjson") {
    // Blank lines are skipped; errors name the line's number in the body.
    const lines = text.split("\n")
      .map((raw, index) => ({ line: raw.trim(), raw, number: index + 1 }))
      .filter(({ line }) => line !== "");
    if (lines.length > maxEvents) throw tooManyEvents(lines.length, maxEvents);
    // Each item names its line, so a rejection can (`line`): its index among the events skips
    // the blank ones.
    return lines.map(({ line, raw, number }): BodyItem => {
      try {
        const item = sized(JSON.parse(line), mayHoldLarge(line, maxEventBytes), maxEventBytes);
        item.line = number;
        return item;
      } catch (error) {
        return {
          ok: false,
          error: {
            path: "",
            message: lineJsonMessage(error, { line, raw, number }),
          },
          line: number,
        };
      }
    });
  }
  return eventsOfJson(parseEventsJson(text), text, limits);
}

/**
 * The JSON value of an events body sent as JSON. One whose first line is an object on its own,
 * with more after it, is NDJSON sent as JSON (`curl -d` with `application/json`): its
 * `invalid_json` says which `Content-Type` reads it.
 */
function parseEventsJson(text: string): unknown {
  try {
    return parseJson(text);
  } catch (error) {
    if (!(error instanceof BodyError) || !firstLineIsObject(text)) throw error;
    throw new BodyError(
      "invalid_json",
      `${error.message} (one JSON event a line is NDJSON: send it with Content-Type: application/x-ndjson)`,
    );
  }
}

/** Whether the first non-blank line of `text` is a JSON object alone. */
function firstLineIsObject(text: string): boolean {
  const start = text.trimStart();
  const end = start.indexOf("\n");
  if (end === -1) return false;
  try {
    const value = JSON.parse(start.slice(0, end));
    return typeof value === "object" && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

/** The keys of the WebSocket ingest envelope, `{seq?, idempotencyKey?, events}`. */
export const ENVELOPE_KEYS: ReadonlySet<string> = new Set(["events", "seq", "idempotencyKey"]);

/**
 * Whether `value` has the WebSocket ingest envelope's shape: an object with `events` and no other
 * keys than `seq` and `idempotencyKey`. A frame of it is the envelope; an HTTP body of it is one
 * event with those fields, as any object is.
 */
export function hasEnvelopeShape(value: unknown): boolean {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  return Object.hasOwn(value, "events") &&
    Object.keys(value).every((key) => ENVELOPE_KEYS.has(key));
}

/**
 * Whether an ingest body, `text` read as `items`, is one object (or one NDJSON line) with the
 * WebSocket envelope's shape ({@linkcode hasEnvelopeShape}): not an array holding one.
 */
export function isEnvelopeBody(text: string, items: readonly BodyItem[]): boolean {
  if (items.length !== 1) return false;
  const [item] = items;
  // The shape first: it fails at once for nearly every body (no `events`), which is on the hot path.
  return item.ok && hasEnvelopeShape(item.value) &&
    (item.line !== undefined || !text.trimStart().startsWith("["));
}

/**
 * Splits a parsed JSON body (one event or an array of events) into events,
 * with the same checks as {@linkcode parseEvents}; `text` is the JSON text
 * it was parsed from, which sizes a single event.
 */
export function eventsOfJson(body: unknown, text: string, limits: BodyLimits = {}): BodyItem[] {
  const maxEvents = limits.maxEvents ?? DEFAULT_LIMITS.maxEvents;
  const maxEventBytes = limits.maxEventBytes ?? DEFAULT_LIMITS.maxEventBytes;
  if (Array.isArray(body)) {
    if (body.length === 0) {
      throw new BodyError("empty_batch", "Batch is empty: send at least one event");
    }
    if (body.length > maxEvents) throw tooManyEvents(body.length, maxEvents);
    const measure = mayHoldLarge(text, maxEventBytes, true);
    return body.map((value): BodyItem => sized(value, measure, maxEventBytes));
  }
  if (typeof body === "object" && body !== null) {
    return [sized(body, mayHoldLarge(text, maxEventBytes), maxEventBytes)];
  }
  throw new BodyError(
    "invalid_body",
    `Body must be a JSON object or an array of objects, got ${
      body === null ? "null" : typeof body
    }`,
  );
}

/** Where {@linkcode limitBody} leaves the time a route's body may take to arrive. */
const BODY_TIMEOUT_VARIABLE = "edgestream.bodyTimeoutMs";

/**
 * Middleware for the API's own routes (keys, webhooks, streams, admin): a body over `maxBytes` is
 * refused (413 `payload_too_large`) before a route runs (but with GET and HEAD, whose body the
 * runtime drops), as ingest refuses its own: by its
 * `Content-Length` when it has one, else read as it arrives, within `maxBytes` and `timeoutMs`
 * (408 `body_timeout`: a stalled body holds no route open), and handed to the route as read.
 * The route's reader ({@linkcode readJsonText}, {@linkcode noBody}) takes `timeoutMs` from here.
 */
export function limitBody(
  options: { maxBytes?: number; timeoutMs?: number } = {},
): MiddlewareHandler {
  const maxBytes = options.maxBytes ?? DEFAULT_LIMITS.maxBodyBytes;
  const timeoutMs = options.timeoutMs ?? DEFAULT_LIMITS.bodyTimeoutMs;
  return async (c, next) => {
    // No route takes the method (a POST to a GET-only path): its 405 or 404, the body unread.
    if (!routeServes(c)) return next();
    c.set(BODY_TIMEOUT_VARIABLE, timeoutMs);
    const request = c.req.raw;
    // The runtime drops a GET's or HEAD's body (a Deno `Request` of either has none): nothing is
    // read, so its Content-Length refuses nothing.
    if (request.method === "GET" || request.method === "HEAD") return next();
    const length = request.headers.get("Content-Length");
    if (length !== null && !request.headers.has("Transfer-Encoding")) {
      if (Number(length) > maxBytes) throw tooLarge(maxBytes);
    } else if (request.body !== null) {
      // As sent (Content-Encoding too): the route's reader decodes it.
      const body = await readEncodedBody(request, maxBytes, { timeoutMs });
      c.req.raw = new Request(request, { body: body as Uint8Array<ArrayBuffer> });
    }
    await next();
  };
}

/** How long the request's body may take to arrive ({@linkcode limitBody}'s `timeoutMs`). */
export function bodyTimeoutOf(c: Context): number {
  return (c.get(BODY_TIMEOUT_VARIABLE) as number | undefined) ?? DEFAULT_LIMITS.bodyTimeoutMs;
}

/**
 * The text of a JSON request body, read the one way every route that takes JSON reads it (but
 * ingest, which also takes NDJSON, see {@linkcode bodyFormat}): a `Content-Type` other than
 * `application/json`, or with a `charset` other than UTF-8, is 415 `unsupported_media_type`
 * (none is taken when `untyped` and the body is empty: an optional body left out); the body is
 * read by {@linkcode readLimitedBody} (413 past `maxBytes`, 408, `Content-Encoding`) and decoded
 * as strict UTF-8 (400 `invalid_utf8`, where a lenient decoder would store U+FFFD in place of
 * the bad bytes). Nothing is parsed: an empty body is "".
 */
export async function readJsonText(
  request: Request,
  maxBytes: number,
  options: { untyped?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  // Lower case: see the note in `_header_list.ts`.
  const contentType = request.headers.get("content-type");
  if (contentType !== null || !options.untyped) refuseOtherThanJson(contentType);
  const text = decodeUtf8(
    await readLimitedBody(request, maxBytes, { timeoutMs: options.timeoutMs }),
  );
  if (contentType === null && text !== "") refuseOtherThanJson(contentType);
  return text;
}

/** Throws 415 unless `contentType` is `application/json`, with no charset but UTF-8. */
function refuseOtherThanJson(contentType: string | null): void {
  const [type, ...parameters] = (contentType ?? "").split(";");
  const mediaType = type.trim().toLowerCase();
  if (mediaType !== "application/json") {
    throw new BodyError(
      "unsupported_media_type",
      `Content-Type must be application/json, got '${
        mediaType ? quoteInput(mediaType) : "(none)"
      }'`,
    );
  }
  refuseOtherCharset(parameters);
}

/**
 * The JSON value of an operation's body `text`: one that is empty (or blank) is none, `{}`, where
 * the operation takes none (`optional`), else 400 `empty_body`; one that does not parse is 400
 * `invalid_json` with the parser's reason.
 */
export function parseJsonBody(text: string, optional: boolean): unknown {
  if (text.trim() === "") {
    if (optional) return {};
    throw new BodyError("empty_body", "Body is empty: send a JSON object");
  }
  return parseJson(text);
}

/**
 * Where a text of `value` (a string, or an object's key) holds a lone surrogate (`"\\ud800"`), and
 * which, or undefined when none does. Such text has no UTF-8 form, and Redis's JSON decoder refuses
 * a record that holds one: a key's or webhook endpoint's description with one made every list of
 * them (and the webhook's creation and dispatch) fail with a 500 on Redis.
 */
function loneSurrogateProblem(value: unknown): string | undefined {
  // Each node's path as a link to its parent's, spelled out only for what is found (as
  // protoKeyPaths does): a copy per node would make a body nested n deep cost n².
  type Link = { step: PropertyKey; parent: Link | null } | null;
  const stack: Array<[unknown, Link]> = [[value, null]];
  while (stack.length > 0) {
    const [node, link] = stack.pop()!;
    if (typeof node === "string" && !node.isWellFormed()) return loneSurrogateAt(link, node);
    if (typeof node !== "object" || node === null) continue;
    for (const key of Object.keys(node)) {
      const step = Array.isArray(node) ? Number(key) : key;
      if (!key.isWellFormed()) return loneSurrogateAt(link, key, "a key");
      stack.push([(node as Record<string, unknown>)[key], { step, parent: link }]);
    }
  }
  return undefined;
}

function loneSurrogateAt(
  link: { step: PropertyKey; parent: unknown } | null,
  text: string,
  what = "text",
): string {
  const path: PropertyKey[] = [];
  for (let at = link; at !== null; at = at.parent as typeof link) path.push(at.step);
  const lone = [...text].find((char) => !char.isWellFormed())!;
  const where = path.length === 0 ? "" : `${formatPath(path.reverse())}: `;
  return `${where}${what} holds the lone surrogate U+${
    lone.charCodeAt(0).toString(16).toUpperCase()
  }, which is no Unicode character`;
}

/**
 * Middleware for an operation whose body is JSON (keys, webhooks): reads it with
 * {@linkcode readJsonText} before the route's schema check, which then parses that text, so every
 * such route refuses a wrong `Content-Type` or `charset` (415) and bytes that are not UTF-8 (400
 * `invalid_utf8`) as `PUT /v1/streams/{stream}` and ingest do, and changes nothing then.
 * `optional`: the operation also takes no body at all.
 */
export function jsonBody(
  options: { optional?: boolean; maxBytes?: number } = {},
): MiddlewareHandler {
  const maxBytes = options.maxBytes ?? DEFAULT_LIMITS.maxBodyBytes;
  return async (c, next) => {
    const text = await readJsonText(c.req.raw, maxBytes, {
      untyped: options.optional,
      timeoutMs: bodyTimeoutOf(c),
    });
    // Parsed here first, so an empty body and one that does not parse are answered as ingest and
    // a stream's PUT answer them (`empty_body`; `invalid_json` with the parser's reason), not
    // with Hono's bare "Malformed JSON"; an empty one where none is taken is read as `{}`.
    const value = parseJsonBody(text, options.optional === true);
    // What the route's schema would drop without a word: a key given twice (JSON keeps the last)
    // and a `__proto__` key (zod leaves it out of a record), as a stream's definition refuses them.
    const problem = duplicateKeyProblem(text) ??
      protoKeyPaths(value).map((path) => `${path}: key '__proto__' is not taken`)[0] ??
      loneSurrogateProblem(value);
    if (problem !== undefined) {
      throw new BodyError("invalid_body", `Invalid request body: ${quoteInput(problem)}`);
    }
    // Hono's request reads its body once and keeps the promise of it (its type says the value):
    // the schema check's `c.req.json()` parses this text, not the raw bytes (which are spent). The
    // text as sent, not JSON.stringify(value): that writes a 1e400 (Infinity) as null, which the
    // schema would take as "none" (a key for every stream, a webhook's filter cleared).
    (c.req.bodyCache as { text?: Promise<string> }).text = Promise.resolve(
      text.trim() === "" ? JSON.stringify(value) : text,
    );
    // The route's own media-type gate (`@hono/zod-openapi`'s) matches the header with a pattern
    // that refuses forms the check above takes (`application/json ;charset=utf-8`,
    // `application/json;`), with a 415 that would say it "must be application/json": past that
    // check the type is JSON, so the gate is shown it as such. So is a body left out where none is
    // taken: the gate, finding no type, looks for a body in the text cached above (`{}`).
    showJsonType(c);
    await next();
  };
}

/** Makes `c.req.header("Content-Type")` answer `application/json` (the raw headers are immutable). */
function showJsonType(c: Context): void {
  const header = c.req.header.bind(c.req) as (name?: string) => string | undefined;
  c.req.header =
    ((name?: string) =>
      name?.toLowerCase() === "content-type"
        ? "application/json"
        : header(name)) as typeof c.req.header;
}

/**
 * Middleware for an operation that takes no body: none, or `{}`, passes; a
 * body of a `Content-Type` other than `application/json` (or none), or with a
 * `charset` other than UTF-8, is 415 `unsupported_media_type`, as on every
 * route that takes JSON; one that is not JSON is 400 `invalid_json`, and any
 * other JSON 400 `invalid_body`, rather than being ignored. No bytes are none
 * whatever `Content-Type` and `Content-Encoding` say (there is nothing to read
 * or decode; `fetch` calls an empty string `text/plain`); a body is decoded as
 * {@linkcode readLimitedBody} decodes one. Only a request of the operation's
 * `method` is read: with another, the path's `405` (naming the methods it takes)
 * comes first, as on every path, the body left unread.
 */
export function noBody(method: string): MiddlewareHandler {
  return async (c, next) => {
    const request = c.req.raw;
    if (request.method !== method.toUpperCase()) return await next();
    const maxBytes = DEFAULT_LIMITS.maxBodyBytes;
    const sent = await readEncodedBody(request, maxBytes, { timeoutMs: bodyTimeoutOf(c) });
    if (sent.byteLength === 0) return await next();
    refuseOtherThanJson(request.headers.get("Content-Type"));
    const encoding = contentEncoding(request.headers.get("Content-Encoding"));
    const bytes = encoding === null ? sent : await inflate(sent, encoding, maxBytes);
    const text = decodeUtf8(bytes).trim();
    if (text !== "") {
      const value = parseJson(text);
      const empty = typeof value === "object" && value !== null && !Array.isArray(value) &&
        Object.keys(value).length === 0;
      if (!empty) {
        throw new BodyError("invalid_body", "This operation takes no body: send none, or {}");
      }
    }
    await next();
  };
}
