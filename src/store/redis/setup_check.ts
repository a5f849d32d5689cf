/**
 * What a redis-server must keep for the Redis store's promises, checked once at startup with
 * `CONFIG GET`: the append-only file (`appendonly yes`), without which a redis-server killed or
 * crashed loses what it acknowledged since its last snapshot (and, with no save points either,
 * one restarted in any way comes back empty), and `maxmemory-policy noeviction`,
 * without which Redis at its `maxmemory` drops keys: stream data, or (`allkeys-*`) definitions, API
 * keys and webhook endpoints, which have no TTL. Upstash refuses `CONFIG` (and is durable): a REST
 * URL of Upstash's (`*.upstash.io`) is not asked ({@linkcode asksSetup}). A server that renamed it
 * refuses it too: then nothing is said. A Redis that does not answer it (unreachable, `LOADING`,
 * a token refused: `Unauthorized`, `NOAUTH`, `WRONGPASS`) is said to be not checked, in one
 * warning, with a script or write refusal that did come back. And whether it runs a Lua script the
 * way the store does, which every write here is: by SHA (`EVALSHA`, every call) and by text
 * (`EVAL`, when Redis does not have it yet): an ACL user without `@scripting`, or without just one
 * of the two, or a server that renamed one, is refused every write (or, without `EVAL` only, after
 * its next restart). And whether it takes a write at all, by the `/readyz` ping's own script
 * ({@linkcode READY_SCRIPT}, one key kept for a second): a read-only replica (`READONLY`), a Redis
 * out of memory under `noeviction` (`OOM`) or an ACL user without write commands (`NOPERM`) refuses
 * every ingest.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { isCommandError, redisErrorText, sha1 } from "./call.ts";
import { PING_SCRIPT, READY_SCRIPT } from "./store.ts";

/**
 * Whether the Redis behind the REST URL `restUrl` is asked its settings: not Upstash's own
 * (a host under `upstash.io`), which refuses `CONFIG` and keeps data durably; a bridge in front
 * of a redis-server is.
 */
export function asksSetup(restUrl: string): boolean {
  if (!URL.canParse(restUrl)) return true;
  const host = new URL(restUrl).hostname.toLowerCase().replace(/\.$/, "");
  return host !== "upstash.io" && !host.endsWith(".upstash.io");
}

/** Options of {@linkcode redisSetupWarnings}. */
export interface RedisSetupOptions {
  /** The store's key prefix, whose `<prefix>:{@ready}` key the write check sets. @default {"es"} */
  prefix?: string;
}

/**
 * Returns one warning per unsafe setting the Redis behind `redis` reports, and one when it refuses
 * the `/readyz` ping's write; none when it refuses `CONFIG GET` (a Redis error: renamed, an ACL).
 * When it does not answer `CONFIG GET` at all (unreachable, still loading, the token refused), one
 * warning saying that its settings were not checked (the check is made once, at startup), alone
 * unless a script or the write was refused all the same (one `CONFIG GET` failing while another
 * command came back refused): then that refusal follows it.
 *
 * @example
 * ```ts
 * import { Redis } from "@upstash/redis";
 *
 * const redis = new Redis({ url: "http://127.0.0.1:8079", token: "dev" });
 * for (const warning of await redisSetupWarnings(redis)) console.warn(warning);
 * ```
 */
export async function redisSetupWarnings(
  redis: Pick<Redis, "exec">,
  options: RedisSetupOptions = {},
): Promise<string[]> {
  const [settings, scripting, writing] = await Promise.all([
    Promise.all(SETTINGS.map((name) => configValue(redis, name))).then(
      (values) => ({ values }),
      (error: unknown) => ({ error }),
    ),
    scriptingRefusal(redis),
    writeRefusal(redis, options.prefix ?? "es"),
  ]);
  const refusals: string[] = [];
  if (scripting !== undefined) {
    refusals.push(
      `Redis refused a Lua script (${scripting}): edgestream applies every write as one, by EVALSHA (and EVAL when Redis does not have it yet), so nothing can be stored; allow both, not renamed (an ACL user needs +@scripting, or +evalsha +eval)`,
    );
  } else if (writing !== undefined) {
    refusals.push(
      `Redis refuses writes (${writing}): every ingest and /readyz answers 503 until it takes them; ${
        writeAdvice(writing)
      }`,
    );
  }
  // Unanswered, the scripts mostly were too: one line says what is not known, not one per check;
  // a refusal that came back all the same is known and said after it.
  if ("error" in settings) return [notChecked(settings.error, refusals.length > 0), ...refusals];
  const [appendonly, save, policy, maxmemory] = settings.values;
  const warnings = refusals;
  if (appendonly !== undefined && appendonly !== "yes") {
    // No save points (`save ""`): no snapshot is ever taken, not even at a clean shutdown, so
    // "since its last snapshot" would be everything, whatever way it stops.
    warnings.push(
      save !== undefined && save.trim() === ""
        ? `Redis has appendonly ${appendonly}: with no save points either (save ''), it keeps nothing on disk, so a redis-server restarted, even cleanly, comes back empty: every event acknowledged, stream definition, API key and webhook endpoint is gone; set appendonly yes (see the README's Redis persistence and eviction)`
        : `Redis has appendonly ${appendonly}: a redis-server killed or crashed loses every event acknowledged since its last snapshot; set appendonly yes (see the README's Redis persistence and eviction)`,
    );
  }
  if (policy !== undefined && policy !== "noeviction") {
    // `maxmemory 0` is no limit: nothing is evicted until one is set (`CONFIG SET` at run time
    // too), so the warning stands, saying when it starts.
    warnings.push(
      maxmemory === "0"
        ? `Redis has maxmemory-policy ${policy} with maxmemory 0 (no limit): nothing is evicted yet, but once maxmemory is set, at it Redis deletes keys edgestream relies on (counted data, or stream definitions, API keys and webhook endpoints, kept without a TTL) instead of refusing writes; set maxmemory-policy noeviction (see the README's Redis persistence and eviction)`
        : `Redis has maxmemory-policy ${policy}: at its maxmemory it deletes keys edgestream relies on (counted data, or stream definitions, API keys and webhook endpoints, kept without a TTL) instead of refusing writes; set maxmemory-policy noeviction (see the README's Redis persistence and eviction)`,
    );
  }
  return warnings;
}

/**
 * Redis's refusal of {@linkcode PING_SCRIPT} (`return "PONG"`: no key, no write, not the `/readyz`
 * script) by text (`EVAL`) or by SHA (`EVALSHA`), as the store runs every script (`NOPERM …`,
 * `ERR unknown command …`), or undefined when it runs both or cannot be reached (the store's own
 * errors say that). Not knowing the SHA (`NOSCRIPT`: a script cache flushed meanwhile) is no
 * refusal: the command itself is allowed.
 */
async function scriptingRefusal(redis: Pick<Redis, "exec">): Promise<string | undefined> {
  const commands: Array<[string, string, string]> = [
    ["EVAL", PING_SCRIPT, "0"],
    ["EVALSHA", await sha1(PING_SCRIPT), "0"],
  ];
  for (const command of commands) {
    try {
      await redis.exec(command);
    } catch (error) {
      const text = redisErrorText(error);
      if (/^(NOPERM|ERR unknown command)\b/i.test(text)) return text;
    }
  }
  return undefined;
}

/**
 * Redis's refusal of the `/readyz` ping ({@linkcode READY_SCRIPT}, which sets `<prefix>:{@ready}`
 * for a second) as a write refused ({@linkcode WRITE_REFUSED}), or undefined when it runs, fails
 * otherwise or cannot be reached (the store's own errors say that).
 */
async function writeRefusal(
  redis: Pick<Redis, "exec">,
  prefix: string,
): Promise<string | undefined> {
  try {
    await redis.exec(["EVAL", READY_SCRIPT, "1", `${prefix}:{@ready}`]);
  } catch (error) {
    const text = redisErrorText(error).split("\n")[0].replace(SCRIPT_TRAILER, "");
    if (WRITE_REFUSED.test(text)) return text;
  }
  return undefined;
}

/**
 * A refused write: a read-only replica, out of memory under `noeviction`, or an ACL user without
 * the command (`NOPERM`; Redis 7.0 says it inside a script as `ERR The user executing the script
 * can't run this command…`).
 */
const WRITE_REFUSED =
  /^(READONLY|OOM|NOPERM)\b|^ERR The user executing the script can't run this command/;

/** Where Redis says an error came from in a script (`script: <sha>, on @user_script:1.`). */
const SCRIPT_TRAILER = /\s*script: [0-9a-f]{40}, on @user_script:\d+\.?$/;

/** What to do about a refused write, by the refusal's error code. */
function writeAdvice(refusal: string): string {
  if (refusal.startsWith("READONLY")) {
    return "it is a read-only replica: point UPSTASH_REDIS_REST_URL at the primary";
  }
  if (refusal.startsWith("OOM")) {
    return "it is at its maxmemory: raise maxmemory or free memory (keep maxmemory-policy noeviction, see the README's Redis persistence and eviction)";
  }
  return "allow its ACL user write commands (+@write, with +@scripting and +@read)";
}

/** The settings {@linkcode redisSetupWarnings} asks with `CONFIG GET`, in the order it reads them. */
const SETTINGS = ["appendonly", "save", "maxmemory-policy", "maxmemory"] as const;

/**
 * The warning of a Redis that did not answer `CONFIG GET` (`error`: unreachable, loading, the
 * token refused), on one line: nothing of its setup is known, but for a script or write refusal
 * that came back all the same (`refused`), said in a warning of its own.
 */
function notChecked(error: unknown, refused: boolean): string {
  const cause = error instanceof Error && error.cause instanceof Error
    ? `: ${error.cause.message.slice(0, 300)}`
    : "";
  const text = `${redisErrorText(error)}${cause}`.replace(/\s+/g, " ");
  const unknown = refused ? "" : ", runs scripts and takes writes";
  return `Redis setup not checked: CONFIG GET failed (${text}), so whether Redis keeps what it acknowledges (appendonly, maxmemory-policy)${unknown} is not known; it is asked only at startup (see the README's Redis persistence and eviction)`;
}

/**
 * A setting's value, or undefined when `CONFIG GET` is refused (a Redis error: renamed, an ACL) or
 * does not know it; throws what failed when Redis did not answer it: unreachable, not now
 * (`LOADING`, …) or the token refused (`NOAUTH` and `WRONGPASS` too, which read as Redis errors
 * but say that Redis was not asked: no command error, see `isCommandError`).
 */
async function configValue(
  redis: Pick<Redis, "exec">,
  name: string,
): Promise<string | undefined> {
  let reply: unknown;
  try {
    reply = await redis.exec(["CONFIG", "GET", name]);
  } catch (error) {
    if (isCommandError(error)) return undefined;
    throw error;
  }
  if (!Array.isArray(reply)) return undefined;
  for (let index = 0; index + 1 < reply.length; index += 2) {
    if (String(reply[index]).toLowerCase() === name) return String(reply[index + 1]);
  }
  return undefined;
}
