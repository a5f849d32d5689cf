/**
 * Sending deliveries: claim due deliveries (with a lease, within each
 * endpoint's concurrency cap and rate limit), check the URL again, sign,
 * POST (see `http_post.ts`), and record the attempt with the next retry
 * (Svix's schedule with jitter, or the receiver's `Retry-After`).
 * Sends run concurrently and each finished send claims more, so one slow
 * endpoint occupies only its own slots and never delays the others.
 *
 * A process sends at most `maxInFlight` (64) at once. Endpoints whose
 * receivers never answer hold their slots until the request timeout, so a
 * quarter of the slots (16 of 64) is kept for endpoints with nothing in
 * flight, one each: a claim that would reach past the other three quarters
 * asks the store for at most one delivery per endpoint, and only of an
 * endpoint with none in flight on any instance (`maxConcurrency: 1`). Sends
 * claimed with the endpoint's own cap then hold at most 48 slots, and each
 * endpoint at most one of the 16, so every slot is taken only while 16
 * endpoints or more have sends in flight here (8 could take them all
 * before): with fewer stuck, a healthy endpoint still gets a slot at once.
 *
 * More stuck endpoints than that are told apart by how long their sends take:
 * an endpoint is slow once a send to it took `slowAfterMs` (5 s, or the
 * request timeout if shorter) or has waited that long, until `slowForMs`
 * (60 s) pass without another. Claims give a slow endpoint at most one
 * delivery in flight across instances, and slow endpoints together only what
 * keeps the sends to them (in flight or being claimed) within half the slots
 * (32 of 64): the store gets the slow ids and that share with each claim. Any
 * number of stuck endpoints then leaves the other half to the rest, once the
 * sends they got before they were known slow have ended. This is per
 * process: another instance learns on its own which endpoints are slow.
 *
 * A claim names at most {@linkcode MAX_SLOW_IDS} (1,000) slow endpoints, the
 * most recently slow, so its ids stay within about 40 KB (a store call
 * refused as too large would send nothing): the defaults let about 830 be
 * slow at once, but a short `slowAfterMs` with a long `slowForMs` lets every
 * endpoint be. One slow endpoint left out is claimed as any other (its cap of
 * 8) until it is among the most recently slow again; sends to it in flight
 * still count in the slow endpoints' half.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  type Attempt,
  type Claim,
  type ClaimOptions,
  type DeliveryStore,
  FREE_INTERRUPTIONS,
} from "../../store/deliveries.ts";
import { describeDuration } from "../../config/mod.ts";
import { detached, OutageLog, recordWebhookDelivery } from "../../telemetry/mod.ts";
import { UNSENDABLE_HEADERS } from "./endpoints.ts";
import { DEFAULT_TIMEOUT_MS, type PostResult, postWebhook } from "./http_post.ts";
import { signatureHeaders } from "./signing.ts";
import { UnsafeUrlError, type UrlPolicy } from "./ssrf.ts";

const logger = getLogger(["edgestream", "webhooks"]);

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Delay (ms) before each attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. */
export const RETRY_SCHEDULE_MS: readonly number[] = [
  0,
  5 * SECOND,
  5 * MINUTE,
  30 * MINUTE,
  2 * HOUR,
  5 * HOUR,
  10 * HOUR,
  10 * HOUR,
];

/** Default period (ms) of continuous failure after which an endpoint is disabled: 5 days. */
export const DEFAULT_DISABLE_AFTER_MS = 5 * DAY;

const USER_AGENT = "edgestream-webhooks/0.1";

/**
 * Soonest claim again (ms) for a rate-limited endpoint after a send: its bucket refills all the
 * while, so a fast limit (100/s) loses nothing by claiming what it holds 10 times a second
 * rather than a claim (a store call) per token.
 */
const RATE_WAKE_MIN_MS = 100;

/** Options for {@linkcode retryDelayMs}. */
export interface RetryDelayOptions {
  /** Delay before each attempt. @default {RETRY_SCHEDULE_MS} */
  schedule?: readonly number[];
  /** Relative jitter: ±0.2 spreads a delay over 80–120 %. @default {0.2} */
  jitter?: number;
  /** Random numbers in [0, 1). @default {Math.random} */
  random?: () => number;
}

/**
 * Delay (ms) before the next attempt after `tries` failed ones, with jitter;
 * null when the schedule is used up (the delivery is dead).
 *
 * @example
 * ```ts
 * retryDelayMs(1, { random: () => 0.5 }); // 5000
 * retryDelayMs(8); // null
 * ```
 */
export function retryDelayMs(tries: number, options: RetryDelayOptions = {}): number | null {
  const schedule = options.schedule ?? RETRY_SCHEDULE_MS;
  if (tries >= schedule.length) return null;
  const jitter = options.jitter ?? 0.2;
  const random = options.random ?? Math.random;
  return Math.round(schedule[tries] * (1 + jitter * (2 * random() - 1)));
}

/** Resolves like `promise`, or rejects with `error()` after `ms` or when `signal` aborts. */
async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  error: () => Error,
  signal: AbortSignal,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(error()), ms);
        onAbort = () => reject(error());
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Most slow endpoint ids a claim names (the most recently slow): 1,000, about 40 KB of ids of 35
 * characters, more than the default slow settings let be slow at once (about 830), so the ids can
 * never take a store call past Upstash's max request size, whatever the settings.
 */
export const MAX_SLOW_IDS = 1_000;

/** Options for {@linkcode Sender}. */
export interface SenderOptions extends RetryDelayOptions {
  /** Checks URLs again before every attempt. */
  policy: UrlPolicy;
  /** Clock (ms): attempt timestamps and due times. @default {Date.now} */
  now?: () => number;
  /** Request timeout (ms). @default {15000} */
  timeoutMs?: number;
  /** Disable an endpoint after failing continuously this long (ms). @default {5 days} */
  disableAfterMs?: number;
  /** Most attempts in flight per endpoint, across instances. @default {8} */
  maxConcurrency?: number;
  /**
   * Most attempts in flight in this process. A quarter of them (rounded down) goes only to
   * endpoints with nothing in flight, one each; slow endpoints get at most half of them (rounded
   * down), one each. @default {64}
   */
  maxInFlight?: number;
  /**
   * An endpoint is slow once a send to it has taken this long (ms), or the request timeout if
   * that is shorter: when the send ends, or while it is still waiting. Claims give a slow endpoint
   * at most one delivery in flight across instances, and slow endpoints together at most half of
   * `maxInFlight`; a claim names at most the {@linkcode MAX_SLOW_IDS} (1,000) most recently slow
   * (the others get their usual cap). @default {5000}
   */
  slowAfterMs?: number;
  /** How long (ms) an endpoint stays slow after its last slow send. @default {60000} */
  slowForMs?: number;
  /** Told about every recorded attempt. */
  onAttempt?: (claim: Claim, attempt: Attempt, disabled: boolean) => void;
  /**
   * Told about unexpected failures (the store was unavailable).
   * @default {logged: the store unavailable said as an outage, at warning (see `OutageLog`); anything else at error}
   */
  onError?: (error: unknown) => void;
}

/** Counts of what a {@linkcode Sender} did. */
export interface SendCounts {
  /** Attempts made and answered or failed (one cut off by {@linkcode Sender.close} is not counted). */
  attempted: number;
  /** Of those, successes. */
  succeeded: number;
  /** Of those, failures (to retry or dead). */
  failed: number;
}

/** Claims due deliveries and sends them. */
export class Sender {
  #store: DeliveryStore;
  #policy: UrlPolicy;
  #now: () => number;
  #retry: RetryDelayOptions;
  #timeoutMs: number;
  #disableAfterMs: number;
  #maxConcurrency: number;
  #maxInFlight: number;
  /** Of those, the slots kept for endpoints with nothing in flight, one each. */
  #keptSlots: number;
  /** Of those, the most that sends to slow endpoints hold. */
  #slowSlots: number;
  #slowAfterMs: number;
  #slowForMs: number;
  /**
   * Until when (`performance.now()`) each endpoint that was slow lately stays slow, in the order
   * they were last found slow (so by that time too): the last ones are the most recently slow.
   */
  #slowUntil = new Map<string, number>();
  #onAttempt: NonNullable<SenderOptions["onAttempt"]>;
  #onError: (error: unknown) => void;
  /** Ends an outage of the store the default `onError` logged. */
  #storeAnswered: () => void;
  /** Each send (or claim given back) in flight, with its endpoint. */
  #inflight = new Map<Promise<void>, { endpointId: string }>();
  /**
   * The sends waiting for their receiver (their lookup, their POST): endpoint and start
   * (`performance.now()`). One whose answer came stays in {@linkcode #inflight} while the store
   * records it, which says nothing of the endpoint.
   */
  #waiting = new Set<{ endpointId: string; started: number }>();
  /** Endpoints already warned about a header they cannot send (said once, not per delivery). */
  #warnedUnsendable = new Set<string>();
  /** Slots held for claims made elsewhere (see {@linkcode reserve}). */
  #reserved = 0;
  /** Of those, the ones slow endpoints may take. */
  #slowReserved = 0;
  #pumping: Promise<void> | null = null;
  #again = false;
  #closed = false;
  /** When each rate-limited endpoint that was just sent to has a token again (`performance.now()`). */
  #rateWakes = new Map<string, number>();
  #rateTimer: ReturnType<typeof setTimeout> | undefined;
  /** Aborted when {@linkcode close} gives up on the sends in flight. */
  #stopping = new AbortController();
  #counts: SendCounts = { attempted: 0, succeeded: 0, failed: 0 };

  constructor(store: DeliveryStore, options: SenderOptions) {
    this.#store = store;
    this.#policy = options.policy;
    this.#now = options.now ?? Date.now;
    this.#retry = { schedule: options.schedule, jitter: options.jitter, random: options.random };
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#disableAfterMs = options.disableAfterMs ?? DEFAULT_DISABLE_AFTER_MS;
    this.#maxConcurrency = options.maxConcurrency ?? 8;
    this.#maxInFlight = options.maxInFlight ?? 64;
    this.#keptSlots = Math.floor(this.#maxInFlight / 4);
    this.#slowSlots = Math.floor(this.#maxInFlight / 2);
    this.#slowAfterMs = Math.min(options.slowAfterMs ?? 5_000, this.#timeoutMs);
    this.#slowForMs = options.slowForMs ?? 60_000;
    this.#onAttempt = options.onAttempt ?? (() => {});
    // The store unavailable fails every claim and record alike (each send in flight's, then the
    // claim after it): said when the outage starts, once a minute while it lasts and when the
    // store answers again, as the sweep's failures are, not as an error with its stacks each time.
    const outage = new OutageLog(logger, {
      failed: "Webhook delivery failed: {error}",
      recovered: "Webhook deliveries claimed and recorded again",
    });
    this.#storeAnswered = () => outage.success();
    this.#onError = options.onError ?? ((error) => outage.failure(error));
  }

  /** Lease (ms) of a claim: longer than the request may take. */
  get leaseMs(): number {
    return this.#timeoutMs + 15_000;
  }

  /**
   * `endpoint`'s headers without those no delivery can send (a `Trailer`, which registration
   * refuses but an earlier release stored): sent, every delivery to a host name would fail.
   * Warns once per endpoint naming it.
   */
  #sendableHeaders(endpoint: Claim["endpoint"]): Record<string, string> {
    const entries = Object.entries(endpoint.headers);
    const leftOut = entries.filter(([name]) => UNSENDABLE_HEADERS.has(name.toLowerCase()));
    if (leftOut.length === 0) return endpoint.headers;
    if (!this.#warnedUnsendable.has(endpoint.id)) {
      this.#warnedUnsendable.add(endpoint.id);
      for (const [name] of leftOut) {
        logger.warn(
          "Webhook endpoint {endpoint} has header '{header}', stored by an earlier release: it cannot be sent (a delivery's body has a Content-Length, so it has no trailers) and is left out; PATCH /v1/webhooks/{endpoint} with headers without it to stop this warning",
          { endpoint: endpoint.id, header: name },
        );
      }
    }
    return Object.fromEntries(
      entries.filter(([name]) => !UNSENDABLE_HEADERS.has(name.toLowerCase())),
    );
  }

  /**
   * Makes one attempt of a claimed delivery and records it. Resolves to null
   * when {@linkcode close} cut it off before an answer: the claim is then
   * given back, for the next claim to send at once. A cut-off POST that had
   * started (the receiver may have got it) is logged with outcome
   * `interrupted` in the same step; one cut off before sending (during the
   * URL check) is not.
   */
  async attempt(claim: Claim): Promise<Attempt | null> {
    const { delivery, endpoint } = claim;
    const startMs = this.#now();
    const started = performance.now();
    const stopping = this.#stopping.signal;
    let result: PostResult;
    // Waiting for the receiver (or the lookup), not for the store: only that makes it slow.
    const waiting = { endpointId: endpoint.id, started };
    this.#waiting.add(waiting);
    try {
      try {
        // The lookup counts against the attempt's timeout, so a hung resolver
        // cannot outlive the claim's lease (and let another instance send too).
        const checked = await withTimeout(
          this.#policy.check(endpoint.url),
          this.#timeoutMs,
          () =>
            new UnsafeUrlError(
              `'url' host did not resolve within ${describeDuration(this.#timeoutMs)}`,
            ),
          stopping,
        );
        const secrets = endpoint.secrets
          .filter((item) => item.expiresMs === null || item.expiresMs > startMs)
          .map((item) => item.secret);
        const headers = {
          ...this.#sendableHeaders(endpoint),
          "content-type": "application/json",
          "user-agent": USER_AGENT,
          ...await signatureHeaders(secrets, delivery.messageId, startMs, delivery.payload),
        };
        // Stopped before anything was sent: nothing to log.
        if (stopping.aborted) return await this.#release(claim);
        result = await postWebhook(endpoint.url, headers, delivery.payload, {
          // What the lookup left of the timeout: the whole attempt stays within it, and so well
          // within the claim's lease (timeout + 15 s), however slow the resolver was.
          timeoutMs: Math.max(1, Math.ceil(this.#timeoutMs - (performance.now() - started))),
          namedTimeoutMs: this.#timeoutMs,
          nowMs: startMs,
          // Connect where the check looked (DNS rebinding); allow-listed hosts were not resolved.
          address: checked.addresses[0],
          signal: stopping,
        });
        // No answer because the process stops: whether the receiver got it is unknown, and the
        // next claim sends it again with the same webhook-id, as after a lease ends. The attempt
        // log shows this one, so the operator sees what the receiver may have seen.
        if (stopping.aborted && result.status === null) {
          return await this.#release(claim, { startMs, started });
        }
      } catch (error) {
        // Thrown before the POST (postWebhook never throws): nothing was sent.
        if (stopping.aborted) return await this.#release(claim);
        // Any other failure to send is an attempt that failed too: left unrecorded, the delivery
        // would be claimed again after every lease, forever, never retried on schedule nor dead.
        // Not the receiver's doing, so it is logged as well.
        if (!(error instanceof UnsafeUrlError)) this.#onError(error);
        result = {
          status: null,
          error: error instanceof UnsafeUrlError
            ? `Refused: ${error.message}`
            : `Cannot send: ${error instanceof Error ? error.message : String(error)}`,
          excerpt: "",
          retryAfterMs: null,
        };
      }
    } finally {
      this.#waiting.delete(waiting);
    }
    const elapsedMs = performance.now() - started;
    // Whatever the answer: what counts is how long the lookup and the POST held the slot.
    if (elapsedMs >= this.#slowAfterMs) this.#markSlow(endpoint.id, performance.now());
    const durationMs = Math.round(elapsedMs);
    const nowMs = this.#now();
    const succeeded = result.status !== null && result.status >= 200 && result.status < 300;
    const gone = result.status === 410;
    let outcome: Attempt["outcome"] = "succeeded";
    let nextAttemptMs: number | null = null;
    if (!succeeded) {
      const delay = gone ? null : retryDelayMs(delivery.tries + 1, this.#retry);
      if (delay === null) outcome = "dead";
      else {
        outcome = "retrying";
        // Retry-After may defer the schedule, never hurry it: a receiver answering 429 with
        // `Retry-After: 1` would otherwise use up every attempt in seconds.
        nextAttemptMs = nowMs + Math.max(result.retryAfterMs ?? 0, delay);
      }
    }
    const attempt: Attempt = {
      attempt: delivery.attempts + 1,
      timeMs: startMs,
      durationMs,
      status: result.status,
      error: result.error,
      responseExcerpt: result.excerpt,
      outcome,
      nextAttemptMs,
    };
    const disableReason = gone ? "Endpoint answered 410 Gone" : undefined;
    const failingReason = `Every attempt failed for ${describeDuration(this.#disableAfterMs)}`;
    const { recorded, disabled } = await this.#store.recordAttempt({
      deliveryId: delivery.id,
      endpointId: endpoint.id,
      token: claim.token,
      attempt,
      nowMs,
      disableReason,
      disableAfterMs: this.#disableAfterMs,
      failingReason,
    });
    this.#storeAnswered();
    if (disabled) {
      // Said once, by the attempt that disabled it: from then on the endpoint gets no deliveries
      // and its failures stop, which an alert on failed attempts alone would take for a recovery.
      logger.warn(
        "Webhook endpoint {endpoint} is disabled: {reason}; it gets no deliveries until it is enabled again (PATCH /v1/webhooks/{endpoint} with disabled: false)",
        { endpoint: endpoint.id, reason: disableReason ?? failingReason },
      );
    }
    if (recorded) {
      recordWebhookDelivery(outcome === "retrying" ? "failed" : outcome, elapsedMs / 1000);
      this.#counts.attempted += 1;
      if (succeeded) this.#counts.succeeded += 1;
      else this.#counts.failed += 1;
      this.#onAttempt(claim, attempt, disabled);
    }
    return attempt;
  }

  /** Starts claiming and sending in the background; returns at once. */
  kick(): void {
    if (this.#closed) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    // The loop claims for every endpoint, long after the request that kicked it (a replay, say)
    // was answered: outside that request's trace and log context.
    this.#pumping = detached(() =>
      this.#pump()
        .catch((error) => this.#onError(error))
        .finally(() => {
          this.#pumping = null;
          if (this.#again) this.kick();
        })
    );
  }

  async #pump(): Promise<void> {
    do {
      this.#again = false;
      // Its slots are held while it waits for the store, like a dispatch's (reserve), so the
      // two together never start more than maxInFlight sends.
      const reserved = this.reserve(Infinity);
      if (reserved === null) return;
      let claims: Claim[] = [];
      try {
        claims = await this.#store.claimDue(reserved);
        this.#storeAnswered();
      } finally {
        this.take(reserved, claims);
      }
      if (claims.length === reserved.limit) this.#again = true;
    } while (this.#again && !this.#closed);
  }

  /**
   * Holds up to `most` of this process's free send slots for a claim made in
   * another store call (a dispatch that claims what it stores in the same
   * round trip); returns the claim options to use, or null when no slot is
   * free or the sender is closing. Hand the result to {@linkcode take} in
   * every case, with no claims when the call failed.
   *
   * Slots up to the last quarter are claimed with the endpoint's cap; once
   * only that quarter is free, with a cap of 1 (see the module doc), so
   * endpoints stuck on sends cannot take the slots a healthy one needs.
   * Slow endpoints get 1 each, and only while sends to them hold (or
   * claims may take) fewer than half the slots.
   */
  reserve(most: number): ClaimOptions | null {
    const held = this.#inflight.size + this.#reserved;
    const open = this.#maxInFlight - this.#keptSlots - held;
    const limit = Math.min(most, open > 0 ? open : this.#maxInFlight - held);
    if (this.#closed || limit <= 0) return null;
    const { slow, named } = this.#slowEndpoints();
    // Sends to every slow endpoint count, named in this claim or not.
    let slowHeld = this.#slowReserved;
    for (const send of this.#inflight.values()) if (slow.has(send.endpointId)) slowHeld += 1;
    const slowLimit = slow.size === 0
      ? 0
      : Math.max(0, Math.min(limit, this.#slowSlots - slowHeld));
    this.#reserved += limit;
    this.#slowReserved += slowLimit;
    return {
      nowMs: this.#now(),
      limit,
      leaseMs: this.leaseMs,
      maxConcurrency: open > 0 ? this.#maxConcurrency : 1,
      ...(slow.size > 0 ? { slow: { endpointIds: named, limit: slowLimit } } : {}),
    };
  }

  /** Counts `endpointId` slow until {@linkcode SenderOptions.slowForMs} after `nowMs`, as the most recent. */
  #markSlow(endpointId: string, nowMs: number): void {
    // Deleted first so it moves to the end: the map stays in the order endpoints were found slow.
    this.#slowUntil.delete(endpointId);
    this.#slowUntil.set(endpointId, nowMs + this.#slowForMs);
  }

  /**
   * The endpoints slow now: a send to them took {@linkcode SenderOptions.slowAfterMs} within
   * the last {@linkcode SenderOptions.slowForMs}, or one in flight has waited that long
   * (remembered from now on); `named`, the {@linkcode MAX_SLOW_IDS} of them most recently slow,
   * for a claim to carry.
   */
  #slowEndpoints(): { slow: Set<string>; named: string[] } {
    const nowMs = performance.now();
    for (const send of this.#waiting) {
      if (nowMs - send.started >= this.#slowAfterMs) this.#markSlow(send.endpointId, nowMs);
    }
    const slow = new Set<string>();
    for (const [endpointId, untilMs] of this.#slowUntil) {
      if (untilMs <= nowMs) this.#slowUntil.delete(endpointId);
      else slow.add(endpointId);
    }
    const ids = [...slow];
    return { slow, named: ids.length > MAX_SLOW_IDS ? ids.slice(-MAX_SLOW_IDS) : ids };
  }

  /** Sends claims made with {@linkcode reserve}'s options, and frees the slots they held. */
  take(reserved: ClaimOptions, claims: readonly Claim[]): void {
    this.#reserved -= reserved.limit;
    this.#slowReserved -= reserved.slow?.limit ?? 0;
    this.#wakeForRate(claims);
    // Claimed while closing: give them back unsent rather than hold them for the lease.
    for (const claim of claims) {
      detached(() =>
        this.#track(
          claim.endpoint.id,
          this.#closed ? this.#release(claim) : this.attempt(claim),
        )
      );
    }
  }

  /**
   * A rate-limited endpoint may have more due than its bucket let go: claims again once it
   * has a token again (1 / `rateLimit` s after these, at least 100 ms), rather than leave the
   * rest to the next sweep, seconds (or, with sweeps off, a cron's minute) away. A claim then
   * that finds none due, or another instance got the token, sets no further wake.
   */
  #wakeForRate(claims: readonly Claim[]): void {
    if (this.#closed) return;
    let changed = false;
    for (const { endpoint } of claims) {
      if (endpoint.rateLimit === null) continue;
      const delayMs = Math.max(RATE_WAKE_MIN_MS, Math.ceil(SECOND / endpoint.rateLimit));
      this.#rateWakes.set(endpoint.id, performance.now() + delayMs);
      changed = true;
    }
    if (changed) this.#armRateTimer();
  }

  #armRateTimer(): void {
    clearTimeout(this.#rateTimer);
    this.#rateTimer = undefined;
    if (this.#closed || this.#rateWakes.size === 0) return;
    const delayMs = Math.max(0, Math.min(...this.#rateWakes.values()) - performance.now());
    this.#rateTimer = setTimeout(() => {
      const nowMs = performance.now();
      for (const [id, atMs] of this.#rateWakes) if (atMs <= nowMs) this.#rateWakes.delete(id);
      this.#armRateTimer();
      this.kick();
    }, delayMs);
    // Never what keeps a process alive: a stopping process closes the sender anyway.
    Deno.unrefTimer(this.#rateTimer);
  }

  /** Counts `work` (a send to the endpoint, or a claim given back) as in flight until it settles. */
  #track(endpointId: string, work: Promise<unknown>): void {
    const task: Promise<void> = work
      .then(() => {}, (error) => this.#onError(error))
      .finally(() => {
        this.#inflight.delete(task);
        this.kick();
      });
    this.#inflight.set(task, { endpointId });
  }

  /** Sends everything due now, and what becomes claimable meanwhile; resolves when done. */
  async deliverDue(): Promise<SendCounts> {
    const before = { ...this.#counts };
    this.kick();
    await this.idle();
    return {
      attempted: this.#counts.attempted - before.attempted,
      succeeded: this.#counts.succeeded - before.succeeded,
      failed: this.#counts.failed - before.failed,
    };
  }

  /** Whether a claim or a send is running (what {@linkcode Sender.idle} waits for). */
  get busy(): boolean {
    return this.#pumping !== null || this.#inflight.size > 0;
  }

  /** Resolves when no claim and no send is running. */
  async idle(): Promise<void> {
    while (this.busy) {
      await Promise.race([...this.#inflight.keys(), ...(this.#pumping ? [this.#pumping] : [])]);
    }
  }

  /**
   * Gives a claim back; resolves to null, what an attempt cut off returns.
   * With `posted` (when the cut-off POST started: wall clock, and
   * `performance.now()`), logs that attempt in the same step, outcome
   * `interrupted`: counted in the delivery's `attempts` and in the attempts
   * metric. The first {@linkcode FREE_INTERRUPTIONS} in a row use no try
   * (the retry schedule and status stay); each later one uses a try as a
   * failure does (retried on the schedule, or dead when none is left), so a
   * delivery cut off at every shutdown cannot be sent again forever.
   */
  async #release(claim: Claim, posted?: { startMs: number; started: number }): Promise<null> {
    const release = {
      deliveryId: claim.delivery.id,
      endpointId: claim.endpoint.id,
      token: claim.token,
    };
    if (!posted) {
      await this.#store.releaseClaim(release);
      return null;
    }
    const elapsedMs = performance.now() - posted.started;
    const nowMs = this.#now();
    const { delivery } = claim;
    const cutOff = "Cut off: this instance stopped before the receiver answered";
    const usesTry = delivery.interruptions >= FREE_INTERRUPTIONS;
    let error = `${cutOff}; sent again at once`;
    let nextAttemptMs: number | null = nowMs;
    if (usesTry) {
      const delay = retryDelayMs(delivery.tries + 1, this.#retry);
      const nth = `interruption ${
        delivery.interruptions + 1
      } in a row (over ${FREE_INTERRUPTIONS})`;
      nextAttemptMs = delay === null ? null : nowMs + delay;
      error = delay === null
        ? `${cutOff}; ${nth} uses a try, and none is left: dead`
        : `${cutOff}; ${nth} uses a try: retried on the schedule`;
    }
    const attempt: Attempt = {
      attempt: delivery.attempts + 1,
      timeMs: posted.startMs,
      durationMs: Math.round(elapsedMs),
      status: null,
      error,
      responseExcerpt: "",
      outcome: "interrupted",
      nextAttemptMs,
    };
    if (await this.#store.releaseClaim({ ...release, cutOff: { attempt, nowMs, usesTry } })) {
      recordWebhookDelivery("interrupted", elapsedMs / 1000);
      this.#onAttempt(claim, attempt, false);
    }
    return null;
  }

  /**
   * Stops claiming and waits for the sends in flight. When `options.signal`
   * aborts first, the sends still waiting for an answer are cut off and their
   * claims given back (see {@linkcode DeliveryStore.releaseClaim}), so
   * another instance sends them at once instead of after the lease; each
   * shows in its delivery's attempt log with outcome `interrupted`.
   */
  async close(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#rateTimer);
    this.#rateWakes.clear();
    const { signal } = options;
    const stop = () => this.#stopping.abort();
    if (signal?.aborted) stop();
    else signal?.addEventListener("abort", stop, { once: true });
    try {
      await this.idle();
    } finally {
      signal?.removeEventListener("abort", stop);
    }
  }
}
