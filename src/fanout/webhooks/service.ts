/**
 * The webhook service: registered endpoints, and the background work that
 * gets results to them. It is a fan-out consumer of the ingest path (a log
 * demand for `event.*` and an ingest observer that evaluates alerts early),
 * and a sweep consumer that dispatches result logs and sends due deliveries.
 * Nothing it does runs on the ingest request path.
 *
 * @module
 */
import type { CompiledStream } from "../../config/mod.ts";
import type { AppliedBatch } from "../types.ts";
import type { Store } from "../../store/types.ts";
import { compileExpression, ExpressionError } from "../../transform/mod.ts";
import { AlertWatcher } from "../alerts.ts";
import type {
  Attempt,
  Delivery,
  DeliveryStatus,
  DeliveryStore,
  Endpoint,
  EndpointConfig,
  EndpointState,
  WebhookEventType,
} from "../../store/deliveries.ts";
import { Dispatcher, FILTER_VARIABLES } from "./dispatcher.ts";
import { type RetryDelayOptions, type SendCounts, Sender } from "./sender.ts";
import { generateSecret } from "./signing.ts";
import { UnsafeUrlError, UrlPolicy } from "./ssrf.ts";

/** Event types an endpoint gets when it names none: the low-volume results. */
export const DEFAULT_EVENT_TYPES: readonly WebhookEventType[] = ["window.closed", "alert.fired"];

/** How long (ms) a rotated-out secret keeps signing: 24 h. */
export const SECRET_OVERLAP_MS = 86_400_000;

/** Header names an endpoint may not set: the service owns them. */
const RESERVED_HEADERS = new Set([
  "content-type",
  "content-length",
  "host",
  "user-agent",
  "transfer-encoding",
  "connection",
  "webhook-id",
  "webhook-timestamp",
  "webhook-signature",
]);

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/;

/** An endpoint's registration or change was refused; `field` names the bad input. */
export class InvalidEndpointError extends Error {
  /** The input field at fault. */
  readonly field: string;
  constructor(field: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InvalidEndpointError";
    this.field = field;
  }
}

/** No endpoint or delivery has the id. */
export class WebhookNotFoundError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebhookNotFoundError";
  }
}

/** The request conflicts with the current state (in flight, disabled, changed meanwhile). */
export class WebhookConflictError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebhookConflictError";
  }
}

/** What a new endpoint is registered with; omitted fields take their defaults. */
export interface EndpointInput {
  /** Where deliveries go. */
  url: string;
  /** Types delivered. @default {DEFAULT_EVENT_TYPES} */
  eventTypes?: WebhookEventType[];
  /** Streams heard from; null or omitted for all. */
  streams?: string[] | null;
  /** CEL over `payload` and `data`. */
  filter?: string | null;
  /** Free text. */
  description?: string | null;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Most deliveries per second. */
  rateLimit?: number | null;
  /** Batching of `event.processed`. */
  batch?: { maxEvents: number; maxWaitMs: number } | null;
  /** Registered but not delivered to. @default {false} */
  disabled?: boolean;
}

/** A change to an endpoint: only the fields given change; null clears. */
export type EndpointPatch = Partial<EndpointInput>;

/** A delivery with its attempt log. */
export interface DeliveryWithAttempts extends Delivery {
  /** Attempts, newest first. */
  attemptLog: Attempt[];
}

/** What one {@linkcode WebhookService.sweep} did. */
export interface WebhookSweepReport extends SendCounts {
  /** Deliveries created from the result logs. */
  created: number;
}

/** Options for {@linkcode WebhookService}. */
export interface WebhookServiceOptions extends RetryDelayOptions {
  /** Stream state and result logs. */
  store: Store;
  /** Endpoints, deliveries and queues. */
  deliveries: DeliveryStore;
  /** Compiled streams by name. */
  streams: Map<string, CompiledStream>;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
  /** Decides which URLs may be used. @default {new UrlPolicy()} */
  policy?: UrlPolicy;
  /** Request timeout (ms). @default {15000} */
  timeoutMs?: number;
  /** Disable an endpoint after failing continuously this long (ms). @default {5 days} */
  disableAfterMs?: number;
  /** Most attempts in flight per endpoint, across instances. @default {8} */
  maxConcurrency?: number;
  /** Most attempts in flight in this process. @default {64} */
  maxInFlight?: number;
  /** How long (ms) the endpoint list that decides what ingest logs may be stale. @default {5000} */
  endpointCacheMs?: number;
  /** Told about every recorded attempt (for logs and metrics; secrets are not in it). */
  onAttempt?: (delivery: Delivery, attempt: Attempt, endpointDisabled: boolean) => void;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Webhook fan-out: endpoints, dispatch of result logs, signed deliveries.
 *
 * @example
 * ```ts
 * const webhooks = new WebhookService({ store, deliveries: new MemoryDeliveryStore(), streams });
 * const app = createApp({ streams, store, keys, webhooks });
 * const { endpoint, secret } = await webhooks.createEndpoint({ url: "https://example.com/hook" });
 * ```
 */
export class WebhookService {
  #store: Store;
  #deliveries: DeliveryStore;
  #streams: Map<string, CompiledStream>;
  #now: () => number;
  #policy: UrlPolicy;
  #dispatcher: Dispatcher;
  #sender: Sender;
  #watcher: AlertWatcher;
  #cacheMs: number;
  #endpoints: Endpoint[] = [];
  #loadedMs = -Infinity;
  #refreshing: Promise<void> | null = null;
  #timers = new Map<string, { timer: ReturnType<typeof setTimeout>; atMs: number }>();
  #running = new Map<string, Promise<void>>();
  #rerun = new Set<string>();
  #closed = false;

  constructor(options: WebhookServiceOptions) {
    this.#store = options.store;
    this.#deliveries = options.deliveries;
    this.#streams = options.streams;
    this.#now = options.now ?? Date.now;
    this.#policy = options.policy ?? new UrlPolicy();
    this.#cacheMs = options.endpointCacheMs ?? 5_000;
    this.#dispatcher = new Dispatcher(options.store, options.deliveries, { now: this.#now });
    const onAttempt = options.onAttempt;
    this.#sender = new Sender(options.deliveries, {
      policy: this.#policy,
      now: this.#now,
      schedule: options.schedule,
      jitter: options.jitter,
      random: options.random,
      timeoutMs: options.timeoutMs,
      disableAfterMs: options.disableAfterMs,
      maxConcurrency: options.maxConcurrency,
      maxInFlight: options.maxInFlight,
      onAttempt: (claim, attempt, disabled) => {
        if (disabled) this.#loadedMs = -Infinity;
        onAttempt?.(claim.delivery, attempt, disabled);
      },
    });
    this.#watcher = new AlertWatcher(options.store, {
      onFired: (stream) => this.#scheduleDispatch(stream, 0),
    });
    this.observer = this.observer.bind(this);
  }

  // --- Fan-out consumer -------------------------------------------------------------------

  /** Log demand: whether an enabled endpoint wants `type` events of `stream` (cached list). */
  wants(stream: string, type: "event.processed" | "event.late"): boolean {
    this.#refreshIfStale();
    return this.#endpoints.some((endpoint) => this.#listens(endpoint, stream, type));
  }

  #listens(endpoint: Endpoint, stream: string, type: WebhookEventType): boolean {
    return !endpoint.disabled && endpoint.eventTypes.includes(type) &&
      (endpoint.streams === null || endpoint.streams.includes(stream));
  }

  /** Ingest observer: alerts for the touched windows, and a dispatch when events were logged. */
  observer(batch: AppliedBatch): void {
    if (this.#closed) return;
    this.#watcher.observe(batch);
    const name = batch.stream.name;
    let delayMs: number | null = null;
    for (const endpoint of this.#endpoints) {
      if (
        !this.#listens(endpoint, name, "event.processed") &&
        !this.#listens(endpoint, name, "event.late")
      ) continue;
      const wait = endpoint.batch?.maxWaitMs ?? 0;
      delayMs = delayMs === null ? wait : Math.min(delayMs, wait);
    }
    if (delayMs !== null) this.#scheduleDispatch(name, delayMs);
  }

  /** Sweep consumer: dispatches every stream's log and sends what is due. */
  async sweep(): Promise<WebhookSweepReport> {
    const endpoints = await this.refreshEndpoints();
    let created = 0;
    // Without endpoints there is nothing to dispatch, and no webhook key is written; a
    // later endpoint starts after its registration point anyway.
    for (const stream of endpoints.length > 0 ? this.#streams.values() : []) {
      created += await this.#dispatcher.dispatch(stream, endpoints);
    }
    const counts = await this.#sender.deliverDue();
    return { created, ...counts };
  }

  /** Reloads the endpoint list from the delivery store. */
  async refreshEndpoints(): Promise<Endpoint[]> {
    this.#endpoints = await this.#deliveries.listEndpoints();
    this.#loadedMs = this.#now();
    return this.#endpoints;
  }

  #refreshIfStale(): void {
    if (this.#closed || this.#refreshing || this.#now() - this.#loadedMs < this.#cacheMs) return;
    this.#refreshing = this.refreshEndpoints()
      .then(() => {}, (error) => {
        console.error(`edgestream: cannot load webhook endpoints: ${describe(error)}`);
      })
      .finally(() => this.#refreshing = null);
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

  #runDispatch(name: string): void {
    const stream = this.#streams.get(name);
    if (!stream || this.#closed) return;
    if (this.#running.has(name)) {
      this.#rerun.add(name);
      return;
    }
    const run = (async () => {
      const endpoints = await this.#deliveries.listEndpoints();
      if (endpoints.length === 0) return;
      const created = await this.#dispatcher.dispatch(stream, endpoints);
      if (created > 0) this.#sender.kick();
    })()
      .catch((error) => console.error(`edgestream: webhook dispatch failed: ${describe(error)}`))
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

  /** Stops the background work and waits for what is running. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const { timer } of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    await this.#watcher.close();
    await this.#refreshing;
    await Promise.all(this.#running.values());
    await this.#sender.close();
  }

  // --- Endpoints --------------------------------------------------------------------------

  async #checkUrl(url: string): Promise<void> {
    try {
      await this.#policy.check(url);
    } catch (error) {
      if (error instanceof UnsafeUrlError) {
        throw new InvalidEndpointError("url", `Cannot register webhook as ${error.message}`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  #checkFields(input: EndpointPatch): void {
    for (const name of input.streams ?? []) {
      if (!this.#streams.has(name)) {
        throw new InvalidEndpointError(
          "streams",
          `Cannot register webhook as 'streams' names an unknown stream: ${name}; streams are: ${
            [...this.#streams.keys()].join(", ") || "(none)"
          }`,
        );
      }
    }
    if (input.filter !== undefined && input.filter !== null) {
      try {
        compileExpression(input.filter, FILTER_VARIABLES);
      } catch (error) {
        if (!(error instanceof ExpressionError)) throw error;
        throw new InvalidEndpointError(
          "filter",
          `Cannot register webhook as 'filter' is not valid: ${error.message}`,
          { cause: error },
        );
      }
    }
    for (const name of Object.keys(input.headers ?? {})) {
      if (!HEADER_NAME.test(name)) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot register webhook as header name '${name}' is not a valid token`,
        );
      }
      if (RESERVED_HEADERS.has(name.toLowerCase())) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot register webhook as header '${name}' is set by edgestream`,
        );
      }
    }
    for (const [name, value] of Object.entries(input.headers ?? {})) {
      if (/[\r\n\0]/.test(value)) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot register webhook as header '${name}' holds a line break`,
        );
      }
    }
  }

  /**
   * Registers an endpoint; returns it with its new secret, which is shown
   * only here and on rotation. Throws {@linkcode InvalidEndpointError}.
   */
  async createEndpoint(input: EndpointInput): Promise<{ endpoint: Endpoint; secret: string }> {
    this.#checkFields(input);
    await this.#checkUrl(input.url);
    const now = this.#now();
    const startAfter: Record<string, string | null> = {};
    for (const name of this.#streams.keys()) startAfter[name] = await this.#store.lastLogId(name);
    const secret = generateSecret();
    const config: EndpointConfig = {
      id: `ep_${crypto.randomUUID().replaceAll("-", "")}`,
      url: input.url,
      description: input.description ?? null,
      eventTypes: [...new Set(input.eventTypes ?? DEFAULT_EVENT_TYPES)],
      streams: input.streams ?? null,
      filter: input.filter ?? null,
      headers: input.headers ?? {},
      rateLimit: input.rateLimit ?? null,
      batch: input.batch ?? null,
      secrets: [{ secret, expiresMs: null }],
      startAfter,
      createdMs: now,
      updatedMs: now,
      version: 1,
    };
    const state: Partial<EndpointState> = input.disabled
      ? { disabled: true, disabledReason: "Disabled by its owner" }
      : { disabled: false };
    await this.#deliveries.putEndpoint(config, { expectVersion: null, state });
    await this.refreshEndpoints();
    return { endpoint: (await this.#deliveries.getEndpoint(config.id))!, secret };
  }

  /** Every endpoint, oldest first. */
  listEndpoints(): Promise<Endpoint[]> {
    return this.#deliveries.listEndpoints();
  }

  /** One endpoint; throws {@linkcode WebhookNotFoundError}. */
  async getEndpoint(id: string): Promise<Endpoint> {
    const endpoint = await this.#deliveries.getEndpoint(id);
    if (!endpoint) throw new WebhookNotFoundError(`No webhook endpoint has id '${id}'`);
    return endpoint;
  }

  async #change(
    id: string,
    change: (endpoint: Endpoint) => { config: EndpointConfig; state?: Partial<EndpointState> },
  ): Promise<Endpoint> {
    for (let round = 0; round < 5; round++) {
      const endpoint = await this.getEndpoint(id);
      const { config, state } = change(endpoint);
      const next = { ...config, version: endpoint.version + 1, updatedMs: this.#now() };
      if (await this.#deliveries.putEndpoint(next, { expectVersion: endpoint.version, state })) {
        await this.refreshEndpoints();
        return await this.getEndpoint(id);
      }
    }
    throw new WebhookConflictError(`Webhook endpoint '${id}' kept changing; try again`);
  }

  /** Changes an endpoint; `disabled: false` re-enables it. Throws like {@linkcode createEndpoint}. */
  async updateEndpoint(id: string, patch: EndpointPatch): Promise<Endpoint> {
    this.#checkFields(patch);
    if (patch.url !== undefined) await this.#checkUrl(patch.url);
    return await this.#change(id, (endpoint) => {
      const config = configOf(endpoint);
      if (patch.url !== undefined) config.url = patch.url;
      if (patch.eventTypes !== undefined) config.eventTypes = [...new Set(patch.eventTypes)];
      if (patch.streams !== undefined) config.streams = patch.streams;
      if (patch.filter !== undefined) config.filter = patch.filter;
      if (patch.description !== undefined) config.description = patch.description;
      if (patch.headers !== undefined) config.headers = patch.headers;
      if (patch.rateLimit !== undefined) config.rateLimit = patch.rateLimit;
      if (patch.batch !== undefined) config.batch = patch.batch;
      let state: Partial<EndpointState> | undefined;
      if (patch.disabled === false) {
        state = { disabled: false, disabledReason: null, failingSinceMs: null };
      } else if (patch.disabled === true && !endpoint.disabled) {
        state = { disabled: true, disabledReason: "Disabled by its owner" };
      }
      return { config, state };
    });
  }

  /** Deletes an endpoint; throws {@linkcode WebhookNotFoundError}. */
  async deleteEndpoint(id: string): Promise<void> {
    if (!await this.#deliveries.deleteEndpoint(id)) {
      throw new WebhookNotFoundError(`No webhook endpoint has id '${id}'`);
    }
    await this.refreshEndpoints();
  }

  /**
   * Replaces the signing secret; the old one keeps signing alongside the new
   * one for 24 h. Returns the new secret and when the old one stops.
   */
  async rotateSecret(id: string): Promise<{ secret: string; previousExpiresMs: number }> {
    const secret = generateSecret();
    const previousExpiresMs = this.#now() + SECRET_OVERLAP_MS;
    await this.#change(id, (endpoint) => {
      const config = configOf(endpoint);
      const now = this.#now();
      config.secrets = [
        { secret, expiresMs: null },
        ...config.secrets
          .filter((item) => item.expiresMs === null || item.expiresMs > now)
          .map((item) => ({
            secret: item.secret,
            expiresMs: item.expiresMs === null
              ? previousExpiresMs
              : Math.min(item.expiresMs, previousExpiresMs),
          })),
      ];
      return { config };
    });
    return { secret, previousExpiresMs };
  }

  /** Queues a `webhook.test` delivery to an endpoint and starts sending it. */
  async sendTest(id: string): Promise<Delivery> {
    const endpoint = await this.getEndpoint(id);
    if (endpoint.disabled) {
      throw new WebhookConflictError(`Webhook endpoint '${id}' is disabled; enable it first`);
    }
    const now = this.#now();
    const messageId = `msg_test_${crypto.randomUUID().replaceAll("-", "")}`;
    const deliveryId = `${messageId}.${id}`;
    await this.#deliveries.createDeliveries([{
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
    }]);
    this.#sender.kick();
    return (await this.#deliveries.getDelivery(deliveryId))!;
  }

  /** An endpoint's deliveries with their attempt logs, newest first. */
  async listDeliveries(
    id: string,
    options: { limit: number; status?: DeliveryStatus },
  ): Promise<DeliveryWithAttempts[]> {
    await this.getEndpoint(id);
    const deliveries = await this.#deliveries.listDeliveries(id, options);
    return await Promise.all(deliveries.map(async (delivery) => ({
      ...delivery,
      attemptLog: await this.#deliveries.listAttempts(delivery.id),
    })));
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

  /** Re-sends one delivery now, with a fresh retry schedule. */
  async retryDelivery(deliveryId: string): Promise<DeliveryWithAttempts> {
    const delivery = await this.#deliveries.getDelivery(deliveryId);
    if (!delivery) throw new WebhookNotFoundError(`No delivery has id '${deliveryId}'`);
    const endpoint = await this.#deliveries.getEndpoint(delivery.endpointId);
    if (!endpoint) {
      throw new WebhookNotFoundError(
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
      throw new WebhookNotFoundError(`No delivery has id '${deliveryId}'`);
    }
    if (result === "in_flight") {
      throw new WebhookConflictError(`Delivery '${deliveryId}' is being sent right now`);
    }
    this.#sender.kick();
    return {
      ...(await this.#deliveries.getDelivery(deliveryId))!,
      attemptLog: await this.#deliveries.listAttempts(deliveryId),
    };
  }

  /** One delivery with its attempt log; throws {@linkcode WebhookNotFoundError}. */
  async getDelivery(deliveryId: string): Promise<DeliveryWithAttempts> {
    const delivery = await this.#deliveries.getDelivery(deliveryId);
    if (!delivery) throw new WebhookNotFoundError(`No delivery has id '${deliveryId}'`);
    return { ...delivery, attemptLog: await this.#deliveries.listAttempts(deliveryId) };
  }
}

function configOf(endpoint: Endpoint): EndpointConfig {
  const { disabled: _d, disabledReason: _r, failingSinceMs: _f, ...config } = endpoint;
  return structuredClone(config);
}
