/**
 * The WebSocket ingest connections, kept so a stopping server can end them
 * well. `Deno.serve`'s `shutdown()` waits for HTTP requests but closes
 * upgraded WebSockets at once, which would drop the frames a connection has
 * read and not answered (one may already be applied: the client would send it
 * again). So the server first closes them itself, each answering what it
 * read, waits for their close, and only then shuts down. (Subscription
 * sockets hold no client work; the live hub closes them.)
 *
 * Once closing began, new WebSocket and subscription requests are refused
 * with 503 `shutting_down` and `Retry-After`, so none starts that the
 * shutdown would cut; plain HTTP requests are still served until the
 * listener closes.
 *
 * @module
 */
import { ApiError } from "./errors.ts";

/** A connection that outlives its request. */
export interface HeldConnection {
  /**
   * Answers what it already read, then closes (WebSocket code 1001, with
   * `reason`); resolves once closed.
   */
  shutDown(reason: string): Promise<void>;
}

/**
 * The held connections of one app, and whether it is closing.
 *
 * @example
 * ```ts
 * import { OpenConnections } from "./open_connections.ts";
 *
 * const connections = new OpenConnections();
 * // On SIGTERM, before `server.shutdown()`:
 * await connections.close("Server is shutting down");
 * ```
 */
export class OpenConnections {
  #held = new Set<HeldConnection>();
  #reason: string | null = null;

  #draining = false;

  /** Whether {@linkcode close} was called. */
  get closing(): boolean {
    return this.#reason !== null;
  }

  /**
   * Whether the server is stopping: draining (`EDGESTREAM_DRAIN`: still serving, `/readyz`
   * answering 503 so a load balancer takes this instance out) or closing.
   */
  get stopping(): boolean {
    return this.#draining || this.#reason !== null;
  }

  /** Marks the drain's start: {@linkcode stopping} is true, connections are still taken. */
  drain(): void {
    this.#draining = true;
  }

  /** Connections held now. */
  get size(): number {
    return this.#held.size;
  }

  /** Throws 503 `shutting_down` once closing began, so no new held connection starts. */
  refuseWhileClosing(): void {
    if (this.#reason === null) return;
    throw new ApiError(
      503,
      "shutting_down",
      "Cannot open a connection: the server is shutting down; connect again, another instance takes it",
      { headers: { "Retry-After": "1" } },
    );
  }

  #answersCut = 0;

  /**
   * Frames the store applied during a stop after their connection had closed (the listener's
   * shutdown closes every connection still open at half the bound): they may count, with no ack.
   */
  get answersCut(): number {
    return this.#answersCut;
  }

  /** Told by a connection whose frame the store applied after it closed; counted during a stop. */
  noteAnswerCut(): void {
    if (this.#reason !== null) this.#answersCut += 1;
  }

  /** Holds a connection; false, holding nothing, once closing began (the caller ends it). */
  add(connection: HeldConnection): boolean {
    if (this.#reason !== null) return false;
    this.#held.add(connection);
    return true;
  }

  /** Forgets a connection that ended. */
  delete(connection: HeldConnection): void {
    this.#held.delete(connection);
  }

  /** Refuses new connections and shuts every held one down; resolves once all are closed. */
  async close(reason: string): Promise<void> {
    this.#reason ??= reason;
    await Promise.all([...this.#held].map((connection) => connection.shutDown(reason)));
  }
}

/**
 * The HTTP requests being answered: a handler counts while it runs, until it
 * returns its response. A stopping server is done with HTTP once none runs
 * (see `shutdown.ts`), even while `Deno.serve`'s `shutdown()` still waits
 * for a connection whose client goes on sending a body that was cut (already
 * answered `503 body_interrupted`): that client's bytes would hold the stop
 * until the bound.
 *
 * @example
 * ```ts
 * import { RequestsInFlight } from "./open_connections.ts";
 *
 * const requests = new RequestsInFlight();
 * const handler = requests.track(() => new Response("ok"));
 * await handler(new Request("http://localhost/"));
 * await requests.idle(); // resolves: none running
 * ```
 */
export class RequestsInFlight {
  #running = 0;
  #idle: PromiseWithResolvers<void> | undefined;
  #now: () => number;
  /** When (ms, of `now`) the last request was answered; undefined before one was. */
  #lastAnsweredMs: number | undefined;

  /** Counts with `now` as its clock (ms). @default {performance.now} */
  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? (() => performance.now());
  }

  /** How many requests are being answered now. */
  get running(): number {
    return this.#running;
  }

  /**
   * How long (ms) no request has been answered: since the last one was, `Infinity` before one was,
   * 0 while one is.
   */
  idleForMs(): number {
    if (this.#running > 0) return 0;
    return this.#lastAnsweredMs === undefined ? Infinity : this.#now() - this.#lastAnsweredMs;
  }

  /** `handler`, with each request counted while it runs. */
  track<A extends unknown[]>(
    handler: (request: Request, ...rest: A) => Response | Promise<Response>,
  ): (request: Request, ...rest: A) => Promise<Response> {
    return (request, ...rest) => {
      this.#running += 1;
      try {
        // `then` with both outcomes rather than `finally`, which makes one more promise and
        // closure a request to pass the answer on.
        return Promise.resolve(handler(request, ...rest)).then(this.#answered, this.#failed);
      } catch (error) {
        this.#done();
        return Promise.reject(error);
      }
    };
  }

  /** Resolves once no request is being answered (at once when none is). */
  idle(): Promise<void> {
    if (this.#running === 0) return Promise.resolve();
    this.#idle ??= Promise.withResolvers<void>();
    return this.#idle.promise;
  }

  #answered = (response: Response): Response => {
    this.#done();
    return response;
  };

  #failed = (error: unknown): never => {
    this.#done();
    throw error;
  };

  #done = (): void => {
    this.#running -= 1;
    this.#lastAnsweredMs = this.#now();
    if (this.#running === 0 && this.#idle) {
      this.#idle.resolve();
      this.#idle = undefined;
    }
  };
}
