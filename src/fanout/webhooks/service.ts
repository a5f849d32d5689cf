/**
 * The webhook service: the background work that gets results to the
 * endpoints kept by `endpoints.ts`, and what can be done with their
 * deliveries. It is a fan-out consumer of the ingest path (a log demand for
 * `event.*` and an ingest observer that evaluates alerts early), and a sweep
 * consumer that dispatches result logs and sends due deliveries. Nothing it
 * does runs on the ingest request path.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CompiledStream, StreamCatalog } from "../../config/mod.ts";
import type { AppliedBatch, IngestObserver } from "../types.ts";
import { isStoreDown, type Store } from "../../store/types.ts";
import { detached, OutageLog, withinPeriod } from "../../telemetry/mod.ts";
import { AlertWatcher } from "../alerts.ts";
import {
  type Attempt,
  batchedTypes,
  cursorRefused,
  decodeCursor,
  type Delivery,
  type DeliveryStatus,
  type DeliveryStore,
  type Endpoint,
  type Page,
  type PageOptions,
  type WebhookEventType,
} from "../../store/deliveries.ts";
import { Dispatcher, type DispatcherOptions } from "./dispatcher.ts";
import {
  type EndpointInput,
  type EndpointPatch,
  type EndpointPrecondition,
  EndpointRegistry,
  WebhookConflictError,
  WebhookNotFoundError,
} from "./endpoints.ts";
import { type RetryDelayOptions, type SendCounts, Sender, type SenderOptions } from "./sender.ts";
import { UrlPolicy } from "./ssrf.ts";

const logger = getLogger(["edgestream", "webhooks"]);

/** A delivery with its attempt log. */
export interface DeliveryWithAttempts extends Delivery {
  /** Attempts, newest first. */
  attemptLog: Attempt[];
}

/** What one {@linkcode WebhookService.sweep} queued. */
export interface WebhookSweepReport {
  /** Deliveries created from the result logs, stored and left to send in the background. */
  queued: number;
  /**
   * The first failure of a stream's dispatch other than the store being unreachable (logged; the
   * other streams were still dispatched): absent when none failed.
   */
  error?: unknown;
}

/** How soon (ms) a dispatch that found the stream's lease held by another instance runs again. */
const LEASE_RETRY_MS = 100;

/**
 * The {@linkcode SenderOptions} a {@linkcode WebhookService} takes as its own and hands on as
 * given: one list for its options' type and the copy, so that none is taken and then dropped.
 */
const SENDER_OPTIONS = [
  "timeoutMs",
  "disableAfterMs",
  "maxConcurrency",
  "maxInFlight",
  "slowAfterMs",
  "slowForMs",
] as const;

/** Options for {@linkcode WebhookService}. */
export interface WebhookServiceOptions
  extends RetryDelayOptions, Pick<SenderOptions, typeof SENDER_OPTIONS[number]> {
  /** Stream state and result logs. */
  store: Store;
  /** Endpoints, deliveries and queues. */
  deliveries: DeliveryStore;
  /**
   * Compiled streams by name; a `StreamRegistry` (or any catalog with `outlived` and `poll`) also
   * says which were deleted since, and is polled before a dispatch.
   */
  streams: StreamCatalog;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
  /** How much of a stream's log one dispatch takes. @default {20 pages of 500 entries} */
  dispatch?: Pick<DispatcherOptions, "pageSize" | "maxPages">;
  /** Decides which URLs may be used. @default {new UrlPolicy()} */
  policy?: UrlPolicy;
  /** How long (ms) the endpoint list that decides what ingest logs may be stale. @default {5000} */
  endpointCacheMs?: number;
  /** Told about every recorded attempt (for logs and metrics; secrets are not in it). */
  onAttempt?: (delivery: Delivery, attempt: Attempt, endpointDisabled: boolean) => void;
}

/**
 * Webhook fan-out: endpoints, dispatch of result logs, signed deliveries.
 *
 * @example
 * ```ts
 * import { compileConfig } from "../../config/mod.ts";
 * import { MemoryDeliveryStore, MemoryStore } from "../../store/mod.ts";
 * import { WebhookService } from "./service.ts";
 *
 * const streams = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * });
 * const store = new MemoryStore();
 * const webhooks = new WebhookService({ store, deliveries: new MemoryDeliveryStore(), streams });
 * const { endpoint, secret } = await webhooks.createEndpoint({ url: "https://example.com/hook" });
 * ```
 */
export class WebhookService {
  #deliveries: DeliveryStore;
  #streams: StreamCatalog;
  #now: () => number;
  #registry: EndpointRegistry;
  #dispatcher: Dispatcher;
  #sender: Sender;
  #watcher: AlertWatcher;
  #cacheMs: number;
  /** Whether prepare() listed the endpoints for the sweep that follows it. */
  #prepared = false;
  /**
   * The endpoint list in use, the version it was read at, and the number of the load that read
   * it: of overlapping loads, the one started last is kept (see #listEndpoints).
   */
  #listed: Listed = { endpoints: [], version: "", load: 0 };
  /** How many loads of the endpoint list were started. */
  #loads = 0;
  /**
   * Loads started up to this number may lack a change (0: none): one failed, or an endpoint was
   * disabled by an attempt while they were in flight. Such a load leaves the list due, not kept
   * for the cache's period.
   */
  #dueThrough = 0;
  /**
   * Per stream: what the cached endpoints want of its batches, worked out from the list once, so
   * that a batch's log demand, the observer's idle and its dispatch do not each scan every
   * endpoint; emptied whenever the list is loaded.
   */
  #demand = new Map<string, StreamDemand>();
  #loadedMs = -Infinity;
  #refreshing: Promise<void> | null = null;
  #timers = new Map<string, { timer: ReturnType<typeof setTimeout>; atMs: number }>();
  #running = new Map<string, Promise<void>>();
  #rerun = new Set<string>();
  /** Per stream: the end of this process's dispatches in their order (see #inTurn). */
  #turns = new Map<string, Promise<void>>();
  #closed = false;
  /** Failures of the sweep's hold of the result logs, said once an outage and once a minute. */
  #holdLog = new OutageLog(logger, {
    failed: "Cannot hold the result logs for webhook dispatch: {error}",
    recovered: "Result logs held for webhook dispatch again",
    now: () => this.#now(),
  });
  /** Failures of the endpoint list's reloads, likewise. */
  #loadLog = new OutageLog(logger, {
    failed: "Cannot load webhook endpoints: {error}",
    recovered: "Webhook endpoints loaded again",
    now: () => this.#now(),
  });
  /**
   * The store unavailable to a dispatch after an ingest or an alert, as the sweep's outages are
   * said: at `warning` when it starts, at most once a minute while it lasts, at `info` when a
   * dispatch works again.
   */
  #dispatchLog = new OutageLog(logger, {
    failed: "Webhook dispatch failed: {error}",
    recovered: "Webhook dispatches run again",
    now: () => this.#now(),
  });
  /** Whether a result log may still be held for dispatch (see `Dispatcher.release`). */
  #holding = true;

  constructor(options: WebhookServiceOptions) {
    this.#deliveries = options.deliveries;
    this.#streams = options.streams;
    this.#now = options.now ?? Date.now;
    const policy = options.policy ?? new UrlPolicy();
    this.#cacheMs = options.endpointCacheMs ?? 5_000;
    this.#registry = new EndpointRegistry(options.deliveries, {
      store: options.store,
      streams: options.streams,
      now: this.#now,
      policy,
      // Ingest's log demand and the observer read the cached list: a change shows at once. A
      // reload that fails leaves the list due (the next look reloads it) and does not fail the
      // change, which is stored: a 503 would have a client create the endpoint again, and lose
      // the secret shown only in the reply.
      onChange: () =>
        this.refreshEndpoints().catch((error) => {
          logger.warn(
            "Webhook endpoint list not reloaded after a change ({error}): stored, it is read again at the next look",
            { error: String(error) },
          );
        }),
    });
    this.#dispatcher = new Dispatcher(options.store, options.deliveries, {
      ...options.dispatch,
      now: this.#now,
    });
    const onAttempt = options.onAttempt;
    this.#sender = new Sender(options.deliveries, {
      policy,
      now: this.#now,
      schedule: options.schedule,
      jitter: options.jitter,
      random: options.random,
      ...senderOptionsOf(options),
      onAttempt: (claim, attempt, disabled) => {
        if (disabled) {
          // A reload in flight may have read the list before this disable: due when it answers.
          this.#dueThrough = this.#loads;
          this.#loadedMs = -Infinity;
        }
        onAttempt?.(claim.delivery, attempt, disabled);
      },
    });
    this.#watcher = new AlertWatcher(options.store, {
      now: this.#now,
      // A check of a stream deleted since its batch fires nothing (when the streams are served).
      served: options.streams,
      // Off the ingest request path already: no timer to wait for.
      onFired: (stream) => this.#dispatchNow(stream),
    });
    this.observer = Object.assign((batch: AppliedBatch) => this.#observe(batch), {
      idle: (stream: CompiledStream) => this.#idleFor(stream),
    });
  }

  // --- Fan-out consumer -------------------------------------------------------------------

  /** Log demand: whether an enabled endpoint wants `type` events of `stream` (cached list). */
  wants(stream: string, type: "event.processed" | "event.late"): boolean {
    this.#refreshIfStale();
    const demand = this.#demandOf(stream);
    return type === "event.processed" ? demand.processed : demand.late;
  }

  #listens(endpoint: Endpoint, stream: string, type: WebhookEventType): boolean {
    return !endpoint.disabled && endpoint.eventTypes.includes(type) &&
      (endpoint.streams === null || endpoint.streams.includes(stream));
  }

  /** What the cached endpoints want of `stream`'s batches (one scan of the list, then kept). */
  #demandOf(stream: string): StreamDemand {
    let demand = this.#demand.get(stream);
    if (demand) return demand;
    demand = { processed: false, late: false, waitMs: null, lateWaitMs: null };
    for (const endpoint of this.#listed.endpoints) {
      const takesProcessed = this.#listens(endpoint, stream, "event.processed");
      const takesLate = this.#listens(endpoint, stream, "event.late");
      if (!takesProcessed && !takesLate) continue;
      demand.processed ||= takesProcessed;
      demand.late ||= takesLate;
      // Only a batch of event.processed waits: one of other types goes with the next dispatch,
      // as does an event.late, never batched, of an endpoint that batches its event.processed.
      const wait = batchedTypes(endpoint.batch).includes("event.processed")
        ? endpoint.batch!.maxWaitMs
        : 0;
      demand.waitMs = Math.min(demand.waitMs ?? wait, wait);
      const lateWait = takesLate ? 0 : wait;
      demand.lateWaitMs = Math.min(demand.lateWaitMs ?? lateWait, lateWait);
    }
    this.#demand.set(stream, demand);
    return demand;
  }

  /**
   * Ingest observer: alerts for the touched windows, and a dispatch when events were logged. Idle
   * for a stream without live alerts that no endpoint takes `event.*` of (cached list).
   */
  readonly observer: IngestObserver;

  /** Whether {@linkcode observer} would do nothing with a batch of `stream` now. */
  #idleFor(stream: CompiledStream): boolean {
    if (this.#closed) return true;
    if (stream.liveAlerts.size > 0) return false;
    return this.#demandOf(stream.name).waitMs === null;
  }

  #observe(batch: AppliedBatch): void {
    if (this.#closed) return;
    this.#watcher.observe(batch);
    const demand = this.#demandOf(batch.stream.name);
    const delayMs = batch.outcomes.includes("late") ? demand.lateWaitMs : demand.waitMs;
    if (delayMs !== null) this.#scheduleDispatch(batch.stream.name, delayMs);
  }

  /**
   * Sweep consumer: dispatches every stream's log into stored deliveries and
   * resolves, saying how many it created; what is due (those, and retries) is
   * then sent in the background, so a slow receiver holds up no sweep.
   * {@linkcode idle} and {@linkcode close} wait for those sends, and
   * {@linkcode settle} makes them.
   */
  async sweep(): Promise<WebhookSweepReport> {
    // Listed once a sweep: by its prepare() when that found the list stale, else here. After
    // prepare(), the list in use is the one it loaded, or one a change's reload loaded since.
    const prepared = this.#prepared;
    this.#prepared = false;
    const { endpoints, version } = prepared ? this.#listed : await this.#listEndpoints();
    // A stream deleted through another instance is not dispatched again here either: with
    // endpoints to dispatch to, the streams served are read again first (one read of the
    // definition index), as this instance's close of a quiet stream does not read its record.
    if (endpoints.length > 0) await this.#pollServed();
    // A stream deleted (or created again) since: what this process kept of it goes.
    await this.#forgetGone();
    let queued = 0;
    let failed: { error: unknown } | undefined;
    if (endpoints.length === 0 && this.#holding) {
      // The last endpoint went (or this process just started without one): the result logs
      // need not keep what no dispatch took, once, until an endpoint comes.
      let released = true;
      for (const stream of this.#streams.values()) {
        if (!await this.#inTurn(stream.name, () => this.#dispatcher.release(stream.name))) {
          released = false;
        }
      }
      this.#holding = !released;
    } else if (endpoints.length > 0) {
      this.#holding = true;
    }
    // Without endpoints there is nothing to dispatch, and no webhook key is written; a
    // later endpoint starts after its registration point anyway.
    try {
      for (const stream of endpoints.length > 0 ? this.#streams.values() : []) {
        try {
          queued += await this.#inTurn(
            stream.name,
            // An idle stream's log has not moved since this process dispatched it: one read.
            // Listed again in the call that takes the lease when an endpoint changed since (one
            // registered while this sweep closed windows must get the results they log).
            () =>
              this.#dispatcher.dispatch(stream, endpoints, {
                ifLogMoved: true,
                endpointsVersion: version,
              }),
          );
        } catch (error) {
          // The store unreachable fails every stream alike: the sweep's caller logs it once.
          // Anything else is this stream's own (a page the store refuses, say): the streams
          // after it in the list are still dispatched, or one would stall all of them.
          if (isStoreDown(error)) throw error;
          logger.error("Webhook dispatch of stream {stream} failed: {error}", {
            stream: stream.name,
            error,
          });
          failed ??= { error };
        }
      }
    } finally {
      // Overlapping sweeps do not send twice: the sender runs one claim loop, and a
      // claimed delivery is leased to its claimer, in this process as in others.
      this.#sender.kick();
    }
    return failed ? { queued, error: failed.error } : { queued };
  }

  /**
   * Sweep consumer, before windows close: while endpoints exist, holds for dispatch the result
   * log of each stream this process has not marked yet (a stream created since, or this process
   * just started), so that the close trims none of what they are to get. A failure is logged and
   * only leaves those logs unheld.
   */
  async prepare(): Promise<void> {
    this.#prepared = false;
    if (this.#closed) return;
    try {
      let endpoints = this.#listed.endpoints;
      if (this.#listStale()) {
        endpoints = (await this.#listEndpoints()).endpoints;
        // The sweep that follows dispatches to this list rather than listing again.
        this.#prepared = true;
      }
      if (endpoints.length > 0) {
        // Before holding: a stream created again under a deleted one's name is held anew.
        await this.#forgetGone();
        for (const stream of this.#streams.values()) {
          await this.#inTurn(stream.name, () => this.#dispatcher.hold(stream.name));
        }
      }
    } catch (error) {
      this.#holdLog.failure(error);
      return;
    }
    this.#holdLog.success();
  }

  /**
   * Brings the served streams up to where their definitions are kept, when they are a registry.
   * A failure is left to the registry's own polls to say (the dispatch goes on with what it
   * serves, as it did before).
   */
  async #pollServed(): Promise<void> {
    await this.#streams.poll?.().catch(() => {});
  }

  /**
   * Forgets the dispatch state of the streams deleted since (in this process, and in a delivery
   * store of this process only), and this process's of those changed or created again.
   */
  async #forgetGone(): Promise<void> {
    for (const stream of this.#dispatcher.retain(this.#streams)) {
      await this.#deliveries.forgetDispatch?.(stream);
    }
  }

  /** How many streams the dispatch keeps state for: those served, not those deleted since. */
  get dispatchedStreams(): number {
    return this.#dispatcher.streams;
  }

  /** Sends everything due; resolves once no send is in flight, with the attempts made meanwhile. */
  settle(): Promise<SendCounts> {
    return this.#sender.deliverDue();
  }

  /** Reloads the endpoint list from the delivery store. */
  async refreshEndpoints(): Promise<Endpoint[]> {
    return (await this.#listEndpoints()).endpoints;
  }

  /**
   * Reloads the endpoint list, with the version it was read at. A load that started before the
   * list in use was loaded (a background reload read before a change, answered after the
   * change's own reload) leaves that newer list in place and resolves with it: else the older
   * list would be kept as fresh for the cache's period, and ingest log no `event.processed` for
   * an endpoint just created or enabled.
   */
  async #listEndpoints(): Promise<Listed> {
    const load = ++this.#loads;
    let listed: { endpoints: Endpoint[]; version: string };
    try {
      listed = await this.#deliveries.listEndpointsVersioned();
    } catch (error) {
      // The list in use, and one a load started before this one brings, may lack what this load
      // was to bring (a change's reload failed): due again, not kept for the cache's period.
      this.#dueThrough = Math.max(this.#dueThrough, load);
      this.#loadedMs = -Infinity;
      throw error;
    }
    if (load < this.#listed.load) return this.#listed;
    this.#listed = { ...listed, load };
    this.#demand.clear();
    this.#loadedMs = load > this.#dueThrough ? this.#now() : -Infinity;
    return this.#listed;
  }

  /**
   * Whether the endpoint list is older than the cache keeps it, or was loaded at a time after the
   * clock's (the wall clock stepped back): else it would be kept until the clock passed that time
   * again (an hour for a step of an hour), and endpoints changed meanwhile on another instance
   * unseen.
   */
  #listStale(): boolean {
    return !withinPeriod(this.#now(), this.#loadedMs, this.#cacheMs);
  }

  #refreshIfStale(): void {
    if (this.#closed || this.#refreshing || !this.#listStale()) return;
    // Outside the request that asked (an ingest's log demand): the list serves later requests
    // too, and its failure is no part of that request, in its log line or its trace.
    this.#refreshing = detached(() =>
      this.refreshEndpoints()
        .then(() => this.#loadLog.success(), (error) => this.#loadLog.failure(error))
        .finally(() => this.#refreshing = null)
    );
  }

  #scheduleDispatch(stream: string, delayMs: number): void {
    if (this.#closed) return;
    const atMs = performance.now() + delayMs;
    const pending = this.#timers.get(stream);
    if (pending && pending.atMs <= atMs) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.#timers.delete(stream);
      this.#runDispatch(stream);
    }, delayMs);
    this.#timers.set(stream, { timer, atMs });
  }

  /** Dispatches a stream now (or right after its running dispatch), dropping a planned one. */
  #dispatchNow(stream: string): void {
    const pending = this.#timers.get(stream);
    if (pending) {
      clearTimeout(pending.timer);
      this.#timers.delete(stream);
    }
    this.#runDispatch(stream);
  }

  /**
   * Runs a dispatch of `stream` once this process's earlier ones (alert, sweep) are done, so
   * that they never find each other holding the stream's lease and wait for a retry.
   */
  #inTurn<T>(stream: string, dispatch: () => Promise<T>): Promise<T> {
    const before = this.#turns.get(stream);
    const run = before ? before.then(dispatch) : dispatch();
    const done = run.then(() => {}, () => {});
    this.#turns.set(stream, done);
    done.then(() => {
      if (this.#turns.get(stream) === done) this.#turns.delete(stream);
    });
    return run;
  }

  #runDispatch(name: string): void {
    const stream = this.#streams.get(name);
    if (!stream || this.#closed) return;
    if (this.#running.has(name)) {
      this.#rerun.add(name);
      return;
    }
    const run = this.#inTurn(name, async () => {
      // Listed fresh (an endpoint registered elsewhere just now must get these entries) in the
      // store call that takes the lease: with none, that call is all the dispatch does. Each
      // page's deliveries go out once stored: an alert need not wait for the later pages.
      await this.#dispatcher.dispatch(stream, null, {
        readAhead: this.#listed.endpoints.length > 0,
        // An ingest's or an alert's dispatch leaves its mark to the sweep (one a sweep, not one
        // an ingest); the sweep's dispatch marks what any of them moved.
        deferMark: true,
        claims: this.#sender,
        // What the store call did not claim (beyond the free slots) goes out through the sender's
        // own claims; when it claimed as many as it stored, each finished send claims more.
        onStored: (count, claimed) => {
          if (claimed < count) this.#sender.kick();
        },
        // The holder may have read the log before this run's entries: try again soon rather
        // than leave them to the next sweep (seconds away).
        onLeaseHeld: () => this.#scheduleDispatch(name, LEASE_RETRY_MS),
      });
    })
      .then(() => this.#dispatchLog.success({ stream: name }), (error) => {
        // The store out of reach is an outage, said as a sweep's is (once a minute while it
        // lasts): nothing is lost, the result log keeps what was not dispatched and the cursor
        // where the dispatch stopped (a page is stored with the cursor's move in one step), and
        // the next sweep, or the stream's next dispatch, dispatches it from there. Anything else
        // (a defect, bad data, a call refused as too large) is said each time.
        this.#dispatchLog.failure(error, { stream: name });
      })
      .finally(() => {
        this.#running.delete(name);
        if (this.#rerun.delete(name)) this.#runDispatch(name);
      });
    this.#running.set(name, run);
  }

  /** Starts sending due deliveries in the background. */
  kick(): void {
    this.#sender.kick();
  }

  /** Resolves when no alert evaluation, dispatch or send is pending or running. */
  async idle(): Promise<void> {
    for (;;) {
      await this.#watcher.idle();
      await this.#refreshing;
      if (this.#timers.size > 0) {
        const earliest = Math.min(...[...this.#timers.values()].map((item) => item.atMs));
        await new Promise((resolve) =>
          setTimeout(resolve, Math.max(0, earliest - performance.now()))
        );
        continue;
      }
      if (this.#running.size > 0) {
        await Promise.all(this.#running.values());
        continue;
      }
      await this.#sender.idle();
      if (this.#timers.size === 0 && this.#running.size === 0) return;
    }
  }

  /**
   * Whether a send is in flight (or deliveries are being claimed for one): what a stop cut off
   * then leaves undone. A dispatch storing deliveries is not counted: one cut is done again, its
   * deliveries the same.
   */
  get sending(): boolean {
    return this.#sender.busy;
  }

  /**
   * Stops the background work and waits for what is running. When
   * `options.signal` aborts first (a stopping process running out of time),
   * the sends still waiting for an answer are cut off and their claims given
   * back to the delivery store, so another instance sends them at once
   * instead of after their lease (30 s).
   */
  async close(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#closed = true;
    for (const { timer } of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    await this.#watcher.close();
    await this.#refreshing;
    await Promise.all(this.#running.values());
    await this.#sender.close(options);
  }

  // --- Endpoints (kept by the registry) ---------------------------------------------------

  /**
   * Registers an endpoint; returns it with its new secret, which is shown
   * only here and on rotation. Throws {@linkcode InvalidEndpointError}.
   */
  createEndpoint(input: EndpointInput): Promise<{ endpoint: Endpoint; secret: string }> {
    return this.#registry.create(input);
  }

  /** Every endpoint, oldest first. */
  listEndpoints(): Promise<Endpoint[]> {
    return this.#registry.list();
  }

  /** A page of the endpoints, oldest first; throws `InvalidCursorError` for a bad cursor. */
  pageEndpoints(options: PageOptions): Promise<Page<Endpoint>> {
    return this.#registry.page(options);
  }

  /** One endpoint; throws {@linkcode WebhookNotFoundError}. */
  getEndpoint(id: string): Promise<Endpoint> {
    return this.#registry.get(id);
  }

  /** Changes an endpoint; `disabled: false` re-enables it. Throws like {@linkcode createEndpoint}. */
  updateEndpoint(
    id: string,
    patch: EndpointPatch,
    expected?: EndpointPrecondition,
  ): Promise<Endpoint> {
    return this.#registry.update(id, patch, expected);
  }

  /**
   * Deletes an endpoint; throws {@linkcode WebhookNotFoundError}, or
   * {@linkcode WebhookPreconditionError} when `expected` does not hold.
   */
  deleteEndpoint(id: string, expected?: EndpointPrecondition): Promise<void> {
    return this.#registry.delete(id, expected);
  }

  /**
   * Replaces the signing secret; the old one keeps signing alongside the new
   * one for 24 h. Returns the new secret, when the old one stops and the version written;
   * throws {@linkcode WebhookPreconditionError} when `expected` does not hold.
   */
  rotateSecret(
    id: string,
    expected?: EndpointPrecondition,
  ): Promise<{ secret: string; previousExpiresMs: number; version: number }> {
    return this.#registry.rotateSecret(id, expected);
  }

  // --- Deliveries -------------------------------------------------------------------------

  /**
   * Queues a `webhook.test` delivery to an endpoint and starts sending it; throws
   * {@linkcode WebhookNotFoundError} for an endpoint that is not there, or was deleted meanwhile.
   */
  async sendTest(id: string): Promise<Delivery> {
    const endpoint = await this.getEndpoint(id);
    if (endpoint.disabled) {
      throw new WebhookConflictError(`Webhook endpoint '${id}' is disabled; enable it first`);
    }
    const now = this.#now();
    const messageId = `msg_test_${crypto.randomUUID().replaceAll("-", "")}`;
    const deliveryId = `${messageId}.${id}`;
    const created = await this.#deliveries.createDeliveries([{
      id: deliveryId,
      messageId,
      endpointId: id,
      stream: null,
      eventType: "webhook.test",
      payload: JSON.stringify({
        type: "webhook.test",
        timestamp: new Date(now).toISOString(),
        data: { endpoint: id, message: "Test delivery from edgestream" },
      }),
      createdMs: now,
    }], { onlyToStoredEndpoints: true });
    // Its id is new: none created means a DELETE since the endpoint was read left no delivery for
    // it. Said so at once, with nothing read back and no sender woken for it.
    if (created === 0) throw endpointNotFound(id);
    this.#sender.kick();
    const delivery = await this.#deliveries.getDelivery(deliveryId);
    // The endpoint was deleted since the delivery was created: its deliveries are gone with it.
    if (!delivery) throw endpointNotFound(id);
    return delivery;
  }

  /**
   * A page of an endpoint's deliveries with their attempt logs, newest first;
   * throws {@linkcode WebhookNotFoundError}, and `InvalidCursorError` for a bad cursor.
   */
  async listDeliveries(
    id: string,
    options: PageOptions & { status?: DeliveryStatus },
  ): Promise<Page<DeliveryWithAttempts>> {
    await this.getEndpoint(id);
    // A delivery's id ends with its endpoint's: another endpoint's cursor was not given out here.
    if (
      options.cursor != null && !decodeCursor("deliveries", options.cursor).id.endsWith(`.${id}`)
    ) {
      throw cursorRefused(options.cursor, "it is a cursor of another endpoint's deliveries");
    }
    const page = await this.#deliveries.listDeliveries(id, options);
    const items = await Promise.all(page.items.map(async (delivery) => ({
      ...delivery,
      attemptLog: await this.#deliveries.listAttempts(delivery.id),
    })));
    return { items, nextCursor: page.nextCursor };
  }

  /** Re-sends an endpoint's failed (retrying) and dead deliveries created since `sinceMs`. */
  async replay(id: string, sinceMs: number): Promise<number> {
    const endpoint = await this.getEndpoint(id);
    if (endpoint.disabled) {
      throw new WebhookConflictError(`Webhook endpoint '${id}' is disabled; enable it first`);
    }
    const count = await this.#deliveries.replay(id, { sinceMs, nowMs: this.#now() });
    if (count > 0) this.#sender.kick();
    return count;
  }

  /**
   * Re-sends one delivery now, with a fresh retry schedule; throws {@linkcode WebhookNotFoundError}
   * (a delivery's) for one not there, or whose endpoint was deleted, also meanwhile.
   */
  async retryDelivery(deliveryId: string): Promise<DeliveryWithAttempts> {
    const delivery = await this.#deliveries.getDelivery(deliveryId);
    if (!delivery) throw new WebhookNotFoundError("delivery", `No delivery has id '${deliveryId}'`);
    const endpoint = await this.#deliveries.getEndpoint(delivery.endpointId);
    if (!endpoint) {
      // Deleted since the delivery was read: its deliveries are not found, as once it is deleted.
      throw new WebhookNotFoundError(
        "delivery",
        `Delivery '${deliveryId}' belongs to endpoint '${delivery.endpointId}', which was deleted`,
      );
    }
    if (endpoint.disabled) {
      throw new WebhookConflictError(
        `Webhook endpoint '${endpoint.id}' is disabled; enable it first`,
      );
    }
    const result = await this.#deliveries.retry(deliveryId, this.#now());
    if (result === "not_found") {
      throw new WebhookNotFoundError("delivery", `No delivery has id '${deliveryId}'`);
    }
    if (result === "in_flight") {
      throw new WebhookConflictError(`Delivery '${deliveryId}' is being sent right now`);
    }
    this.#sender.kick();
    // Read back as `getDelivery` does: an endpoint deleted since leaves no delivery to show.
    return await this.getDelivery(deliveryId);
  }

  /** One delivery with its attempt log; throws {@linkcode WebhookNotFoundError}. */
  async getDelivery(deliveryId: string): Promise<DeliveryWithAttempts> {
    const delivery = await this.#deliveries.getDelivery(deliveryId);
    if (!delivery) throw new WebhookNotFoundError("delivery", `No delivery has id '${deliveryId}'`);
    return { ...delivery, attemptLog: await this.#deliveries.listAttempts(deliveryId) };
  }
}

/** The error of a test delivery to endpoint `id`, deleted before or just after it was created. */
function endpointNotFound(id: string): WebhookNotFoundError {
  return new WebhookNotFoundError("endpoint", `No webhook endpoint has id '${id}'`);
}

/** What the cached endpoint list wants of one stream's batches. */
interface StreamDemand {
  /** An enabled endpoint takes its `event.processed`. */
  processed: boolean;
  /** An enabled endpoint takes its `event.late`. */
  late: boolean;
  /**
   * How long a dispatch after a batch without a late event waits (ms); null: no endpoint takes
   * `event.*`.
   */
  waitMs: number | null;
  /** Likewise after a batch with a late event: an endpoint taking `event.late` does not wait. */
  lateWaitMs: number | null;
}

/** An endpoint list as loaded: the endpoints, the version read with them, the load's number. */
interface Listed {
  endpoints: Endpoint[];
  version: string;
  /** Which load read it (loads are numbered as they start; 0: none yet). */
  load: number;
}

/** The {@linkcode SENDER_OPTIONS} of `options`, each as given (undefined: the sender's default). */
function senderOptionsOf(
  options: WebhookServiceOptions,
): Pick<SenderOptions, typeof SENDER_OPTIONS[number]> {
  const picked: Pick<SenderOptions, typeof SENDER_OPTIONS[number]> = {};
  for (const key of SENDER_OPTIONS) picked[key] = options[key];
  return picked;
}
