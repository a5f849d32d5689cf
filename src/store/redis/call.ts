/**
 * Calling Redis through `@upstash/redis` the way every Redis-backed store
 * here does: Lua scripts by SHA (EVAL only when Redis does not know them), a
 * timeout on every call, and errors sorted into "Redis refused this" (a bug,
 * 500) and "Redis is unavailable" ({@linkcode StoreUnavailableError}, 503).
 *
 * @module
 */
import { errors, type Redis } from "@upstash/redis";
import {
  StoreRefusedError,
  StoreRequestTooLargeError,
  StoreUnavailableError,
  type UnavailableOutcome,
} from "../types.ts";

/** The SHA-1 of `text` in hex, as Redis names a script. */
export async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The Redis error text inside an `@upstash/redis` error, without the
 * client's ", command was: …" suffix (which repeats the whole request, events
 * included, and must not reach logs or replies).
 */
export function redisErrorText(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/^Command failed: /, "").replace(REQUEST_ECHO, "").slice(0, 300);
}

/** The client's echo of the whole request at the end of an error message. */
const REQUEST_ECHO = /, command was: [\s\S]*$/;

/**
 * Drops the client's echo of the request from `error`'s message and stack, in place: the error is
 * kept as the cause of the one thrown, which the logs print whole (name, message, stack).
 */
function forgetRequest(error: unknown): void {
  if (!(error instanceof Error) || !REQUEST_ECHO.test(error.message)) return;
  restate(error, error.message.replace(REQUEST_ECHO, ""));
}

/** Gives `error` the message `message`, in its stack too, in place. */
function restate(error: Error, message: string): void {
  const before = error.message;
  error.message = message;
  if (error.stack) error.stack = error.stack.replace(before, message);
}

/**
 * Redis error codes that mean "not now, nothing ran" rather than "this command is wrong". OOM:
 * Redis at its `maxmemory` under `noeviction` refuses a script's first write, so nothing ran; keys
 * expiring (an apply's reply after 60 s, dedupe buckets) make room again. Upstash's refusals of a
 * whole HTTP request (its troubleshooting pages): its request quotas (`ERR max requests limit
 * exceeded`, `ERR max daily request limit exceeded`), its connection cap (`ERR max concurrent
 * connections exceeded`) and its request size (`ERR max request size exceeded`, 10 MB: more than
 * one call here sends, but the client sends concurrent calls in one HTTP request, so a retry
 * usually fits).
 */
const NOT_NOW =
  /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|READONLY|OOM)\b|max (daily )?requests? limit|max concurrent connections exceeded|max request size exceeded/i;

/**
 * Upstash's database at its plan's size (`ERR DB capacity quota exceeded`): writes are refused
 * until room is made, but its documentation does not say whether a script's later write can be
 * refused after earlier ones ran, so what was applied is unknown.
 */
const FULL = /DB capacity quota exceeded/i;

/** Upstash refused an HTTP request as too large (see {@linkcode NOT_NOW}). */
const TOO_LARGE = /\bmax request size exceeded\b/i;

/**
 * Whether an error means "Redis answered: this command failed" (a bug to
 * surface as 500), as opposed to Redis being unreachable, overloaded,
 * answering through a failing proxy, or refusing the token (503, retry): `NOAUTH` and `WRONGPASS`
 * read as Redis error replies, yet, as the REST endpoint's HTTP 401, say the setting is wrong and
 * nothing ran ({@linkcode REFUSED_TOKEN}).
 */
export function isCommandError(error: unknown): boolean {
  if (!(error instanceof Error) || error.name !== "UpstashError") return false;
  const text = redisErrorText(error);
  return /^[A-Z][A-Z_]+ /.test(text) && !NOT_NOW.test(text) && !FULL.test(text) &&
    !REFUSED_TOKEN.test(text);
}

/**
 * Whether a failed call applied nothing (see {@linkcode UnavailableOutcome}): only when Redis
 * answered "not now" (LOADING, BUSY, …) instead of running it; that answer may, rarely, come to a
 * send repeated after one that ran. A connection error says nothing of the kind: Deno's `fetch`
 * sends a request once more on a new connection when a kept-alive one closes before any reply,
 * so even a refused connection may follow a send that ran (`tests/store/redis/store_test.ts` has
 * both cases).
 */
export function outcomeOf(error: unknown): UnavailableOutcome {
  const text = redisErrorText(error);
  return NOT_NOW.test(text) || REFUSED_TOKEN.test(text) ? "not_applied" : "unknown";
}

/**
 * A refused token: the REST endpoint's HTTP 401 (`Unauthorized`) or, behind a proxy that passes on
 * Redis's own errors, `NOAUTH` or `WRONGPASS` (Redis error replies, yet no command error: see
 * {@linkcode isCommandError}), each only as the reply's own code, not quoted in another refusal's
 * text (a stream may be named `NOAUTH`). Nothing ran, and nothing will until the setting is fixed
 * (a token cannot be right for one send and wrong for the same one again).
 */
const REFUSED_TOKEN = /^(?:Unauthorized|NOAUTH|WRONGPASS)\b/;

/**
 * Nothing answered at the REST URL, or something that is not an Upstash REST endpoint did (the
 * client cannot read its reply as one). "Fetch failed: Requests to port 6000 are blocked" is Deno's
 * fetch refusing a port it never asks (1, 6000, 6665…).
 */
const NOT_REACHED = /^fetch failed\b|^error sending request\b|^Unable to parse response body\b/i;

/**
 * An HTTP error reply whose JSON has no `error` message (another JSON API at the REST URL): the
 * client quotes that field as text, so it reads `[object Object]`, `undefined` or `null`.
 */
const NO_ERROR_MESSAGE = /^(?:\[object \w+\]|undefined|null)$/;

/**
 * Whether `error` is the Upstash client failing to read a 2xx reply (a `TypeError` thrown in the
 * client itself, such as `res.map is not a function`): JSON that is no list of results, as another
 * JSON API at the REST URL answers, which the client reads without a check. Deno's fetch failing
 * is a `TypeError` too, thrown in fetch: {@linkcode NOT_REACHED} says that one.
 */
function unreadableReply(error: unknown): boolean {
  if (!(error instanceof TypeError)) return false;
  const top = error.stack?.split("\n").find((line) => /^\s+at /.test(line));
  return top !== undefined && top.includes("@upstash/redis");
}

/**
 * Where Deno's fetch error says it sent a request: the URL, and the addresses of both ends (`\S*` in
 * the parentheses: a URL has no spaces but may have a `)`).
 */
const FETCH_ENDS = / (?:from \S+ )?for (?:url \(\S*\)|\S+ \(\S*\))(?=:)/;

/** A key of another type or bad text in a field: {@linkcode StoreRefusedError}. */
const WRONG_KEY = /^WRONGTYPE /;

/** Scripts reply JSON text; the client may already have parsed it. */
export function fromJson<T>(value: unknown): T {
  return (typeof value === "string" ? JSON.parse(value) : value) as T;
}

export function asArray<T>(value: unknown): T[] {
  return Array.isArray(value) ? value as T[] : [];
}

/**
 * The part of the client a {@linkcode RedisCalls} needs: `pipeline` only to send a call alone
 * (see {@linkcode ScriptOptions.alone}).
 */
export type RedisScriptClient = Pick<Redis, "evalsha" | "eval"> & Partial<Pick<Redis, "pipeline">>;

/** Options for {@linkcode RedisCalls.script}. */
export interface ScriptOptions {
  /**
   * Send the call in an HTTP request of its own: `@upstash/redis` sends calls made at the same time
   * in one request (auto-pipelining), so a request refused as too large may have been refused for
   * the others; one sent alone (an explicit pipeline of one command) was refused for itself. A
   * script Redis does not know is loaded (`SCRIPT LOAD`, alone) before it, rather than sent with it
   * (`EVAL`). Without the client's `pipeline`, as any call. @default {false}
   */
  alone?: boolean;
}

/**
 * How long (ms) a Redis call may take by default before it fails as unavailable. `storesFromEnv`
 * also gives the client's requests this deadline, so a request is abandoned, not sent again later.
 */
export const REDIS_CALL_TIMEOUT_MS = 5_000;

/** How `@upstash/redis` starts the error of a pipeline's command: `Command 1 [ hmget ] failed: `. */
const PIPELINED_FAILURE = /^Command \d+ \[ \S+ \] failed: /;

/** A pipeline of `@upstash/redis`. */
type Pipeline = ReturnType<Redis["pipeline"]>;

/**
 * Sends the one command `add` puts in `pipeline` in a request of its own, and fails as the client
 * fails a single command (an `UpstashError` "Command failed: …").
 */
async function sendAlone(
  pipeline: Pipeline,
  add: (pipeline: Pipeline) => Pipeline,
): Promise<unknown> {
  const [reply] = await add(pipeline).exec({ keepErrors: true });
  if (reply.error) throw new errors.UpstashError(`Command failed: ${reply.error}`);
  return reply.result;
}

/** Runs Redis calls with a timeout and the project's error mapping. */
export class RedisCalls {
  #redis: RedisScriptClient;
  #timeoutMs: number;
  #shas = new Map<string, Promise<string>>();

  constructor(redis: RedisScriptClient, timeoutMs: number) {
    this.#redis = redis;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Runs `run` with the timeout: a Redis error is rethrown naming `what`, as
   * a {@linkcode StoreRefusedError} for `WRONGTYPE` and a plain error else;
   * anything else (unreachable, slow, overloaded) becomes a
   * {@linkcode StoreUnavailableError}. Messages never repeat the request.
   */
  async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new StoreUnavailableError(
              `Redis did not answer ${what} within ${this.#timeoutMs} ms`,
              { outcome: "unknown" },
            ),
          ),
        this.#timeoutMs,
      );
    });
    try {
      return await Promise.race([run(), timeout]);
    } catch (error) {
      if (error instanceof StoreUnavailableError) throw error;
      forgetRequest(error);
      if (isCommandError(error)) {
        const text = redisErrorText(error);
        const message = `Redis refused ${what}: ${text}`;
        throw WRONG_KEY.test(text)
          ? new StoreRefusedError(message, { cause: error })
          : new Error(message, { cause: error });
      }
      const quoted = redisErrorText(error);
      const notUpstash = error instanceof Error && error.name === "UpstashError" &&
        NO_ERROR_MESSAGE.test(quoted);
      // The cause, which the logs print, would read `UpstashError: [object Object]`: the client
      // kept no more of the reply than that text, so the cause says what it was.
      if (notUpstash) {
        restate(
          error,
          `an HTTP error reply without an Upstash error message (its "error" field read as text: '${quoted}')`,
        );
      }
      const unreadable = !NOT_REACHED.test(quoted) && unreadableReply(error);
      const text = REFUSED_TOKEN.test(quoted)
        ? `the token was refused: ${quoted}`
        : notUpstash
        ? "the reply is not an Upstash REST endpoint's (an HTTP error without an error message)"
        : unreadable
        ? `the reply is not an Upstash REST endpoint's (the client cannot read it: ${quoted})`
        : quoted;
      const hint = REFUSED_TOKEN.test(quoted)
        ? " (check UPSTASH_REDIS_REST_TOKEN)"
        : notUpstash || unreadable || NOT_REACHED.test(text)
        ? " (check UPSTASH_REDIS_REST_URL)"
        : TOO_LARGE.test(text)
        ? " (with what was sent at the same time; if it persists, send fewer events a request)"
        : "";
      // Deno's fetch says only "fetch failed"; why (refused, no such host, TLS) is its cause,
      // which also names the URL (`for url (<url>)`, or, for a connection closed once made,
      // `from <local address> for <url> (<address>)`): that is left to the log (the error's
      // cause), not to replies.
      const cause = error instanceof TypeError && error.cause instanceof Error
        ? `: ${error.cause.message.replace(FETCH_ENDS, "").slice(0, 300)}`
        : "";
      const message = `Redis is unavailable (${what}): ${text}${cause}${hint}`;
      // Sent alone it may fit; a caller that can split its work (the webhook dispatch) does.
      if (TOO_LARGE.test(text)) throw new StoreRequestTooLargeError(message, { cause: error });
      throw new StoreUnavailableError(message, { cause: error, outcome: outcomeOf(error) });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Runs a read the client parses itself (HMGET, HGETALL, XRANGE, XREVRANGE) by `send`. With
   * auto-pipelining `@upstash/redis` parses each reply of a pipeline before it looks at its error,
   * and those commands' parsers throw a `TypeError` on a Redis error reply (`WRONGTYPE`: a key of
   * another type), which fails every call sent in that HTTP request alike, as an unreadable reply
   * would. A read failing so is sent again alone (`add` puts it in a pipeline of its own, whose
   * errors the client reports before parsing): Redis's error then fails it as it is (a
   * {@linkcode StoreRefusedError} through {@linkcode call}), and a read that was only sent with
   * it answers. A reply that is truly unreadable (no Upstash REST endpoint) fails again as such.
   * Call it inside {@linkcode call}.
   */
  async read<T>(send: () => Promise<T>, add: (pipeline: Pipeline) => Pipeline): Promise<T> {
    try {
      return await send();
    } catch (error) {
      const pipeline = this.#redis.pipeline;
      if (pipeline === undefined || !unreadableReply(error)) throw error;
      let replies: unknown[];
      try {
        replies = await add(pipeline.call(this.#redis)).exec();
      } catch (again) {
        // As the client fails a single command: "Command failed: WRONGTYPE …".
        if (again instanceof errors.UpstashError) {
          restate(again, again.message.replace(PIPELINED_FAILURE, "Command failed: "));
        }
        throw again;
      }
      // Not one reply for the one command: not an Upstash REST endpoint's reply either.
      if (replies.length !== 1) throw error;
      return replies[0] as T;
    }
  }

  /**
   * Runs a Lua script by SHA, sending its text only when Redis does not know
   * it yet; arguments are sent as JSON. Call it inside {@linkcode call}.
   */
  async script(
    script: string,
    keys: string[],
    argv: unknown[],
    options: ScriptOptions = {},
  ): Promise<unknown> {
    let sha = this.#shas.get(script);
    if (!sha) {
      sha = sha1(script);
      this.#shas.set(script, sha);
    }
    const args = argv.map((arg) => JSON.stringify(arg));
    const alone = options.alone ? this.#redis.pipeline?.bind(this.#redis) : undefined;
    try {
      if (alone) {
        const known = await sha;
        return await sendAlone(alone(), (pipeline) => pipeline.evalsha(known, keys, args));
      }
      return await this.#redis.evalsha(await sha, keys, args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.includes("NOSCRIPT")) throw error;
      if (alone) {
        // Loaded first, alone too, then EVALSHA: an EVAL would carry the script's text with the
        // arguments, and be refused as too large where the call itself fits.
        await sendAlone(alone(), (pipeline) => pipeline.scriptLoad(script));
        const known = await sha;
        return await sendAlone(alone(), (pipeline) => pipeline.evalsha(known, keys, args));
      }
      return await this.#redis.eval(script, keys, args);
    }
  }
}
