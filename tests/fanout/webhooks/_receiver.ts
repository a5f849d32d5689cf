/**
 * A real webhook receiver for tests: an HTTP server on 127.0.0.1, port 0,
 * that verifies every request with `new Webhook(secret).verify(rawBody,
 * headers)` from `npm:standardwebhooks` and answers as the test says.
 */
import FakeTimers from "@sinonjs/fake-timers";
import { Webhook } from "standardwebhooks";

/** One request the receiver got. */
export interface Received {
  /** Request path. */
  path: string;
  /** `webhook-id`. */
  id: string;
  /** `webhook-timestamp`, whole seconds. */
  timestamp: number;
  /** `webhook-signature`. */
  signature: string;
  /** All headers. */
  headers: Headers;
  /** The raw body. */
  body: string;
  /** The parsed body. */
  // deno-lint-ignore no-explicit-any
  payload: any;
  /** The secrets (of {@linkcode Receiver.secrets}) whose signature verified. */
  verifiedWith: string[];
}

/** Decides the answer to a request; the default answers 204. */
export type Responder = (request: Received, index: number) => Response | Promise<Response>;

/** A webhook receiver on a real port. */
export class Receiver {
  /** Everything received, in order. */
  readonly received: Received[] = [];
  /** Secrets to verify with. */
  secrets: string[] = [];
  /** How to answer. */
  respond: Responder = () => new Response(null, { status: 204 });
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #port = 0;
  #clock: () => number;
  #waiters: Array<{ count: number; resolve: () => void }> = [];

  /** `clock` is the time verification happens at (the sender's clock). */
  private constructor(clock: () => number) {
    this.#clock = clock;
  }

  /** Starts a receiver; `clock` is the time (ms) signatures are checked against. */
  static async start(clock: () => number = Date.now): Promise<Receiver> {
    const receiver = new Receiver(clock);
    await receiver.up();
    return receiver;
  }

  /** The URL of a path on this receiver. */
  url(path = "/hook"): string {
    return `http://127.0.0.1:${this.#port}${path}`;
  }

  /** Requests received on a path. */
  on(path = "/hook"): Received[] {
    return this.received.filter((item) => item.path === path);
  }

  /** Resolves once `count` requests have arrived in total. */
  waitFor(count: number): Promise<void> {
    if (this.received.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ count, resolve }));
  }

  #verify(body: string, headers: Headers): string[] {
    const object = Object.fromEntries(headers);
    // The verifier checks the timestamp against Date.now(): check as of the sender's clock.
    const clock = FakeTimers.install({ now: this.#clock(), toFake: ["Date"] });
    try {
      return this.secrets.filter((secret) => {
        try {
          new Webhook(secret).verify(body, object);
          return true;
        } catch {
          return false;
        }
      });
    } finally {
      clock.uninstall();
    }
  }

  async #handle(request: Request): Promise<Response> {
    const body = await request.text();
    let payload: unknown = undefined;
    try {
      payload = JSON.parse(body);
    } catch {
      // Recorded as undefined; the test sees it.
    }
    const received: Received = {
      path: new URL(request.url).pathname,
      id: request.headers.get("webhook-id") ?? "",
      timestamp: Number(request.headers.get("webhook-timestamp")),
      signature: request.headers.get("webhook-signature") ?? "",
      headers: request.headers,
      body,
      payload,
      verifiedWith: this.#verify(body, request.headers),
    };
    const index = this.received.length;
    this.received.push(received);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (this.received.length < waiter.count) return true;
      waiter.resolve();
      return false;
    });
    return await this.respond(received, index);
  }

  /** Starts listening (again, on the same port after {@linkcode down}). */
  up(): Promise<void> {
    return new Promise((resolve) => {
      this.#server = Deno.serve({
        hostname: "127.0.0.1",
        port: this.#port,
        onListen: ({ port }) => {
          this.#port = port;
          resolve();
        },
      }, (request) => this.#handle(request));
    });
  }

  /** Stops listening: connections are refused until {@linkcode up}. */
  async down(): Promise<void> {
    await this.#server?.shutdown();
    this.#server = null;
  }

  /** Stops the receiver. */
  close(): Promise<void> {
    return this.down();
  }
}
