/**
 * Ending a server WebSocket's connection without its client's help. Deno's `WebSocket.close()`
 * sends the close frame and then waits, with no bound, for the client's: a client that never
 * answers it keeps the connection (and a file descriptor) open for as long as it likes. Deno offers
 * no public way to end it sooner; its own idle timeout ends a socket that answers no ping by
 * closing the socket's resource, and {@linkcode dropSocket} closes it the same way (through
 * `Deno[Deno.internal]`, not public API: feature-detected, and a drop that fails is logged).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { WarningLimit } from "../telemetry/mod.ts";

const logger = getLogger(["edgestream", "http"]);

/** The part of Deno's runtime core that closes a resource. */
interface ResourceCloser {
  tryClose(rid: number): void;
}

/** Deno's runtime core, where this Deno exposes it (`Deno[Deno.internal].core`). */
function runtimeCore(): ResourceCloser | undefined {
  const deno = Deno as unknown as Record<symbol, unknown> & { internal?: symbol };
  if (typeof deno.internal !== "symbol") return undefined;
  const internals = deno[deno.internal] as { core?: Partial<ResourceCloser> } | undefined;
  const core = internals?.core;
  return typeof core?.tryClose === "function" ? core as ResourceCloser : undefined;
}

/** The resource id of a Deno WebSocket, kept under a symbol described `[[rid]]`. */
function resourceOf(socket: WebSocket): number | undefined {
  const key = Object.getOwnPropertySymbols(socket).find((symbol) =>
    symbol.description === "[[rid]]"
  );
  if (key === undefined) return undefined;
  const rid = (socket as unknown as Record<symbol, unknown>)[key];
  return typeof rid === "number" ? rid : undefined;
}

/** The warnings logged already: each is logged once a process, as every later drop says the same. */
const warned = new Set<string>();

function warnOnce(text: string): void {
  if (warned.has(text)) return;
  warned.add(text);
  logger.warn(text);
}

/** Options of {@linkcode dropSocket}. */
export interface DropSocketOptions {
  /** How long (ms) the socket's `close` event may take before the drop is said to have failed. @default {2000} */
  checkMs?: number;
}

/**
 * Ends the connection of a server WebSocket now: its resource is closed, as Deno's idle timeout
 * does, so the TCP connection ends and the socket's `close` event follows. For a socket whose close
 * frame was sent and whose client does not answer it. Returns whether it could ask: a Deno that
 * keeps its socket's resource out of reach leaves the connection as it is; so may one whose
 * resource no longer ends the connection, seen when no `close` event follows within `checkMs`.
 * Either is logged once, as a warning.
 */
export function dropSocket(socket: WebSocket, options: DropSocketOptions = {}): boolean {
  const core = runtimeCore();
  const rid = resourceOf(socket);
  if (core === undefined || rid === undefined) {
    warnOnce(
      "Cannot drop a WebSocket whose client does not answer its close frame: this Deno keeps the socket's connection out of reach; it stays open until the client closes it",
    );
    return false;
  }
  core.tryClose(rid);
  if (socket.readyState !== WebSocket.CLOSED) {
    const check = setTimeout(() => {
      if (socket.readyState === WebSocket.CLOSED) return;
      warnOnce(
        "Dropping a WebSocket whose client does not answer its close frame did not end it: this Deno no longer ends a connection whose resource is closed; it stays open until the client closes it",
      );
    }, options.checkMs ?? 2_000);
    socket.addEventListener("close", () => clearTimeout(check), { once: true });
  }
  return true;
}

/**
 * Closes a server WebSocket with `code` and `reason`, and drops its connection (see
 * {@linkcode dropSocket}) if its client has not answered the close frame within `graceMs`.
 */
export function closeWithin(
  socket: WebSocket,
  close: { code: number; reason: string; graceMs: number },
): void {
  socket.close(close.code, close.reason);
  if (socket.readyState === WebSocket.CLOSED) return;
  const timer = setTimeout(() => {
    if (socket.readyState !== WebSocket.CLOSED) dropSocket(socket);
  }, close.graceMs);
  socket.addEventListener("close", () => clearTimeout(timer), { once: true });
}

/** Refused WebSockets a process holds at once, by default: see {@linkcode RefusedSockets}. */
export const DEFAULT_MAX_REFUSED_SOCKETS = 1_000;

/** How often a bound of refused WebSockets that stays reached is said again. */
const REFUSED_FULL_WARN_EVERY_MS = 60_000;

/** Options of {@linkcode RefusedSockets}. */
export interface RefusedSocketsOptions {
  /** The clock (ms) of the warning said at most once a minute. @default {performance.now} */
  now?: () => number;
}

/**
 * The WebSockets a process upgraded only to close them with 1008 and the reason of their refusal
 * (browsers read no refused upgrade's status), from the upgrade until the connection ends: each
 * holds its connection up to its grace (`refusedCloseMs`) while its client does not answer the
 * close frame, and holds no place of any other bound. Past `max` at once, a refusal is answered
 * before the upgrade instead, as plain HTTP: so a client sending refused upgrades as fast as it
 * can holds at most `max` connections, not its rate times the grace. A refusal at `max` is logged
 * as a warning naming the bound, the first time and then at most once a minute.
 */
export class RefusedSockets {
  /** Most refused WebSockets held at once. */
  readonly max: number;
  #held = 0;
  #warnings: WarningLimit<RefusedSockets>;

  /** `max`: most refused WebSockets held at once. @default {DEFAULT_MAX_REFUSED_SOCKETS} */
  constructor(max: number = DEFAULT_MAX_REFUSED_SOCKETS, options: RefusedSocketsOptions = {}) {
    this.max = max;
    this.#warnings = new WarningLimit(REFUSED_FULL_WARN_EVERY_MS, options.now);
  }

  /** Refused WebSockets held now. */
  get held(): number {
    return this.#held;
  }

  /** Holds one more until `release()` (called once or more), or returns undefined at `max`. */
  take(): { release(): void } | undefined {
    if (this.#held >= this.max) {
      // Else unseen: the clients it refuses see a failed connection, and no status.
      if (this.#warnings.due(this)) {
        logger.warn(
          "The process holds {max} refused WebSockets, its bound: a refusal is answered before the upgrade, as plain HTTP, until a refused connection ends",
          { max: this.max },
        );
      }
      return undefined;
    }
    this.#held += 1;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#held -= 1;
      },
    };
  }
}
