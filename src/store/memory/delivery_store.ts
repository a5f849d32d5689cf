/**
 * The embedded delivery store: endpoints, deliveries and queues in this
 * process's memory. For a laptop and tests; lost on restart and not shared
 * between instances (use the Redis delivery store for that).
 *
 * @module
 */
import {
  type Attempt,
  type AttemptRecord,
  type Claim,
  type ClaimOptions,
  type ClaimRelease,
  comparePositions,
  type CursorPosition,
  decodeCursor,
  DEFAULT_RETENTION_MS,
  type DeleteEndpointOptions,
  type Delivery,
  type DeliveryCallOptions,
  type DeliveryCounts,
  type DeliveryStatus,
  type DeliveryStore,
  type DispatchOpening,
  type DispatchState,
  encodeCursor,
  type Endpoint,
  type EndpointConfig,
  type EndpointState,
  MAX_ATTEMPTS_LOGGED,
  type NewDelivery,
  type OpenDispatchOptions,
  type Page,
  type PageOptions,
  type PutEndpointOptions,
  type RetryResult,
  type StoredPage,
  type StoredPageResult,
} from "../deliveries.ts";
import { checkedMax, DEFAULT_WEBHOOKS_MAX, StoredLimitError } from "../limits.ts";
import { refillFrom } from "./_refill_from.ts";
import { BinaryHeap } from "./_binary_heap.ts";

/** Options for {@linkcode MemoryDeliveryStore}. */
export interface MemoryDeliveryStoreOptions {
  /** Clock (ms) for leases and retention. @default {Date.now} */
  now?: () => number;
  /** How long (ms) deliveries and attempt logs are kept after their last change. @default {7 days} */
  retentionMs?: number;
  /** Most endpoints held; a creation past it throws `StoredLimitError`. @default {1000} */
  maxEndpoints?: number;
}

interface StoredDelivery {
  delivery: Delivery;
  attempts: Attempt[];
  claim: { token: string; untilMs: number } | null;
  expiresMs: number;
}

/** A {@linkcode DeliveryStore} in process memory. */
export class MemoryDeliveryStore implements DeliveryStore {
  readonly kind = "memory";
  #now: () => number;
  #retentionMs: number;
  #maxEndpoints: number;
  #configs = new Map<string, EndpointConfig>();
  #states = new Map<string, EndpointState>();
  #deliveries = new Map<string, StoredDelivery>();
  /** Per endpoint: delivery id → due time (ms), including claimed ones at their lease end. */
  #due = new Map<string, DueQueue>();
  /** Per endpoint: claimed delivery id → lease end (ms). */
  #inflight = new Map<string, Map<string, number>>();
  /** Per endpoint: dead delivery id → when it is forgotten (ms), for counting. */
  #dead = new Map<string, Map<string, number>>();
  /** Per endpoint: delivery positions, ascending by creation time, then id (the list order reversed). */
  #byEndpoint = new Map<string, CursorPosition[]>();
  #buckets = new Map<string, { tokens: number; atMs: number }>();
  #dispatch = new Map<string, DispatchState>();
  #leases = new Map<string, { token: string; untilMs: number }>();
  #tokens = 0;
  #nextForget = -Infinity;
  /** The endpoint list's version: counts the changes of endpoints (see `listEndpointsVersioned`). */
  #endpointsVersion = 0;

  constructor(options: MemoryDeliveryStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
    this.#maxEndpoints = checkedMax("maxEndpoints", options.maxEndpoints ?? DEFAULT_WEBHOOKS_MAX);
  }

  putEndpoint(config: EndpointConfig, options: PutEndpointOptions): Promise<Endpoint | null> {
    const current = this.#configs.get(config.id);
    if (
      options.expectVersion === null
        ? current !== undefined
        : current?.version !== options.expectVersion
    ) {
      return Promise.resolve(null);
    }
    if (
      options.expectDisabled !== undefined && current !== undefined &&
      this.#states.get(config.id)!.disabled !== options.expectDisabled
    ) {
      return Promise.resolve(null);
    }
    if (current === undefined && this.#configs.size >= this.#maxEndpoints) {
      return Promise.reject(
        new StoredLimitError("webhooks", this.#maxEndpoints, this.#configs.size),
      );
    }
    this.#configs.set(config.id, structuredClone(config));
    this.#endpointsVersion += 1;
    const state = this.#states.get(config.id) ??
      { disabled: false, disabledReason: null, failingSinceMs: null };
    this.#states.set(config.id, { ...state, ...options.state });
    return Promise.resolve(this.#endpoint(config.id));
  }

  getEndpoint(id: string): Promise<Endpoint | null> {
    return Promise.resolve(this.#endpoint(id));
  }

  #endpoint(id: string): Endpoint | null {
    const config = this.#configs.get(id);
    if (!config) return null;
    return { ...structuredClone(config), ...this.#states.get(id)! };
  }

  async listEndpoints(): Promise<Endpoint[]> {
    return (await this.listEndpointsVersioned()).endpoints;
  }

  listEndpointsVersioned(): Promise<{ endpoints: Endpoint[]; version: string }> {
    return Promise.resolve({
      endpoints: this.#endpoints(),
      version: String(this.#endpointsVersion),
    });
  }

  #endpoints(): Endpoint[] {
    return [...this.#configs.keys()].map((id) => this.#endpoint(id)!).sort(comparePositions);
  }

  async pageEndpoints(options: PageOptions): Promise<Page<Endpoint>> {
    const after = options.cursor == null ? null : decodeCursor("endpoints", options.cursor);
    const all = await this.listEndpoints();
    const rest = after === null ? all : all.filter((item) => comparePositions(item, after) > 0);
    const items = rest.slice(0, options.limit);
    const last = items[items.length - 1];
    return {
      items,
      nextCursor: rest.length > options.limit ? encodeCursor("endpoints", last) : null,
    };
  }

  deleteEndpoint(id: string, options: DeleteEndpointOptions = {}): Promise<boolean> {
    const expected = options.expectVersion;
    if (expected !== undefined && this.#configs.get(id)?.version !== expected) {
      return Promise.resolve(false);
    }
    const existed = this.#configs.delete(id);
    if (existed) this.#endpointsVersion += 1;
    // Its deliveries can no longer be read or sent: held for their week, they would only grow.
    for (const position of this.#byEndpoint.get(id) ?? []) this.#deliveries.delete(position.id);
    this.#states.delete(id);
    this.#due.delete(id);
    this.#inflight.delete(id);
    this.#buckets.delete(id);
    this.#byEndpoint.delete(id);
    this.#dead.delete(id);
    return Promise.resolve(existed);
  }

  forgetDispatch(stream: string): Promise<void> {
    this.#dispatch.delete(stream);
    return Promise.resolve();
  }

  /** How many streams' dispatch states are held (for tests and monitoring). */
  get dispatches(): number {
    return this.#dispatch.size;
  }

  dispatchState(stream: string): Promise<DispatchState> {
    return Promise.resolve({ ...this.#dispatchOf(stream) });
  }

  #dispatchOf(stream: string): DispatchState {
    return this.#dispatch.get(stream) ?? { cursor: null, planEnd: null };
  }

  beginPage(stream: string, cursor: string | null, end: string): Promise<DispatchState> {
    const state = this.#dispatchOf(stream);
    if (state.cursor === cursor && state.planEnd === null) {
      this.#dispatch.set(stream, { cursor, planEnd: end });
    }
    return this.dispatchState(stream);
  }

  commitPage(stream: string, cursor: string | null, end: string): Promise<boolean> {
    const state = this.#dispatchOf(stream);
    if (state.cursor !== cursor) return Promise.resolve(false);
    this.#dispatch.set(stream, { cursor: end, planEnd: null });
    return Promise.resolve(true);
  }

  acquireLease(name: string, ttlMs: number): Promise<string | null> {
    return Promise.resolve(this.#acquireLease(name, ttlMs));
  }

  #acquireLease(name: string, ttlMs: number): string | null {
    const now = this.#now();
    const lease = this.#leases.get(name);
    if (lease && lease.untilMs > now) return null;
    const token = `lease-${++this.#tokens}`;
    this.#leases.set(name, { token, untilMs: now + ttlMs });
    return token;
  }

  releaseLease(name: string, token: string): Promise<void> {
    if (this.#leases.get(name)?.token === token) this.#leases.delete(name);
    return Promise.resolve();
  }

  // One synchronous step, as atomic as the Redis script.
  openDispatch(stream: string, options: OpenDispatchOptions): Promise<DispatchOpening> {
    const changed = options.unlessVersion !== undefined &&
      options.unlessVersion !== String(this.#endpointsVersion);
    const endpoints = options.listEndpoints || changed ? this.#endpoints() : null;
    const lease = endpoints === null || endpoints.length > 0
      ? this.#acquireLease(options.lease, options.leaseMs)
      : null;
    return Promise.resolve({
      endpoints,
      lease,
      state: { ...this.#dispatchOf(stream) },
      endpointsVersion: String(this.#endpointsVersion),
    });
  }

  // One synchronous step up to the first await (createDeliveries and claimDue do their work
  // before they return), as atomic as the Redis script.
  // `options.alone` asks nothing of this store: it refuses no call as too large.
  async storePage(
    stream: string,
    page: StoredPage,
    _options: DeliveryCallOptions = {},
  ): Promise<StoredPageResult | null> {
    const state = this.#dispatchOf(stream);
    if (state.cursor !== page.cursor || (state.planEnd !== null && state.planEnd !== page.end)) {
      return null;
    }
    if (
      page.endpointsVersion !== undefined &&
      page.endpointsVersion !== String(this.#endpointsVersion)
    ) {
      return { created: 0, claims: [], endpointsChanged: true };
    }
    const created = this.createDeliveries(page.deliveries);
    this.#dispatch.set(stream, { cursor: page.end, planEnd: null });
    const release = page.releaseLease;
    if (release && this.#leases.get(release.name)?.token === release.token) {
      this.#leases.delete(release.name);
    }
    const claims = page.claim ? this.claimDue(page.claim) : Promise.resolve([]);
    return { created: await created, claims: await claims };
  }

  createDeliveries(
    deliveries: readonly NewDelivery[],
    options: DeliveryCallOptions = {},
  ): Promise<number> {
    const now = this.#now();
    this.#forgetExpired(now);
    let created = 0;
    for (const item of deliveries) {
      if (this.#deliveries.has(item.id)) continue;
      if (options.onlyToStoredEndpoints && !this.#configs.has(item.endpointId)) continue;
      this.#deliveries.set(item.id, {
        delivery: {
          ...item,
          status: "pending",
          attempts: 0,
          tries: 0,
          interruptions: 0,
          firstAttemptMs: null,
          nextAttemptMs: item.createdMs,
          lastStatus: null,
          lastError: null,
          updatedMs: item.createdMs,
        },
        attempts: [],
        claim: null,
        expiresMs: now + this.#retentionMs,
      });
      this.#queueOf(item.endpointId).set(item.id, item.createdMs);
      let list = this.#byEndpoint.get(item.endpointId);
      if (!list) {
        list = [];
        this.#byEndpoint.set(item.endpointId, list);
      }
      const position = { createdMs: item.createdMs, id: item.id };
      // Mostly appended: deliveries are created in time order.
      list.splice(firstAfter(list, position), 0, position);
      created += 1;
    }
    return Promise.resolve(created);
  }

  #queueOf(endpointId: string): DueQueue {
    let queue = this.#due.get(endpointId);
    if (!queue) {
      queue = new DueQueue();
      this.#due.set(endpointId, queue);
    }
    return queue;
  }

  #forgetExpired(now: number): void {
    if (now < this.#nextForget) return;
    this.#nextForget = now + 1_000;
    for (const [id, stored] of this.#deliveries) {
      if (stored.expiresMs > now) continue;
      this.#deliveries.delete(id);
      this.#due.get(stored.delivery.endpointId)?.delete(id);
    }
    for (const [endpointId, positions] of this.#byEndpoint) {
      const kept = positions.filter((position) => this.#deliveries.has(position.id));
      if (kept.length !== positions.length) this.#byEndpoint.set(endpointId, kept);
    }
  }

  #live(id: string): StoredDelivery | undefined {
    const stored = this.#deliveries.get(id);
    if (!stored || stored.expiresMs <= this.#now()) return undefined;
    return stored;
  }

  getDelivery(id: string): Promise<Delivery | null> {
    const stored = this.#live(id);
    return Promise.resolve(stored ? { ...stored.delivery } : null);
  }

  listDeliveries(
    endpointId: string,
    options: PageOptions & { status?: DeliveryStatus },
  ): Promise<Page<Delivery>> {
    try {
      return Promise.resolve(this.#pageDeliveries(endpointId, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #pageDeliveries(
    endpointId: string,
    options: PageOptions & { status?: DeliveryStatus },
  ): Page<Delivery> {
    const after = options.cursor == null ? null : decodeCursor("deliveries", options.cursor);
    const items: Delivery[] = [];
    const positions = this.#byEndpoint.get(endpointId) ?? [];
    // Newest first: walk down from the last position before the cursor's.
    let i = after === null ? positions.length - 1 : firstAfter(positions, after) - 1;
    if (after !== null && i >= 0 && comparePositions(positions[i], after) === 0) i -= 1;
    for (; i >= 0; i--) {
      const stored = this.#live(positions[i].id);
      if (!stored) continue;
      if (options.status && stored.delivery.status !== options.status) continue;
      if (items.length === options.limit) {
        return { items, nextCursor: encodeCursor("deliveries", items[items.length - 1]) };
      }
      items.push({ ...stored.delivery });
    }
    return { items, nextCursor: null };
  }

  listAttempts(deliveryId: string): Promise<Attempt[]> {
    return Promise.resolve((this.#live(deliveryId)?.attempts ?? []).map((item) => ({ ...item })));
  }

  claimDue(options: ClaimOptions): Promise<Claim[]> {
    const { nowMs, limit, leaseMs, maxConcurrency } = options;
    const slow = new Set(options.slow?.endpointIds ?? []);
    let slowLeft = options.slow?.limit ?? 0;
    const claims: Claim[] = [];
    const order = [...this.#due].map(([endpointId, queue]) => ({
      endpointId,
      queue,
      first: queue.earliest(),
    })).filter((item) => item.first <= nowMs).sort((a, b) => a.first - b.first);
    for (const { endpointId, queue } of order) {
      if (claims.length >= limit) break;
      const isSlow = slow.has(endpointId);
      // Left due as it is, as if not visited: the slow ones' share of this call is used up.
      if (isSlow && slowLeft <= 0) continue;
      const endpoint = this.#endpoint(endpointId);
      if (!endpoint) {
        this.#due.delete(endpointId);
        continue;
      }
      if (endpoint.disabled) {
        for (const id of queue.takeDue(nowMs, Infinity)) {
          queue.delete(id);
          const stored = this.#live(id);
          if (!stored) continue;
          Object.assign(stored.delivery, {
            status: "dead",
            nextAttemptMs: null,
            lastError: "Endpoint is disabled",
            updatedMs: nowMs,
          });
          // A lapsed claim must not record over the dead status later.
          stored.claim = null;
          this.#markDead(stored);
          this.#inflightOf(endpointId).delete(id);
        }
        continue;
      }
      const inflight = this.#inflightOf(endpointId);
      for (const [id, untilMs] of inflight) if (untilMs <= nowMs) inflight.delete(id);
      let available = Math.min(
        (isSlow ? Math.min(1, maxConcurrency) : maxConcurrency) - inflight.size,
        limit - claims.length,
      );
      if (isSlow) available = Math.min(available, slowLeft);
      const bucket = this.#bucket(endpoint, nowMs);
      if (bucket) available = Math.min(available, Math.floor(bucket.tokens));
      for (const id of available > 0 ? queue.takeDue(nowMs, available) : []) {
        const stored = this.#live(id);
        if (!stored) {
          queue.delete(id);
          continue;
        }
        const token = `claim-${++this.#tokens}`;
        stored.claim = { token, untilMs: nowMs + leaseMs };
        queue.set(id, nowMs + leaseMs);
        inflight.set(id, nowMs + leaseMs);
        if (bucket) bucket.tokens -= 1;
        if (isSlow) slowLeft -= 1;
        claims.push({ delivery: { ...stored.delivery }, endpoint, token });
      }
    }
    return Promise.resolve(claims);
  }

  #inflightOf(endpointId: string): Map<string, number> {
    let inflight = this.#inflight.get(endpointId);
    if (!inflight) {
      inflight = new Map();
      this.#inflight.set(endpointId, inflight);
    }
    return inflight;
  }

  /**
   * The endpoint's token bucket refilled to `nowMs`, or null without a rate limit. A `nowMs`
   * behind the bucket's update refills nothing and takes nothing away, and the bucket goes on
   * refilling from that update when it is ahead by at most a burst's worth of time (see
   * refillFrom): moved back to `nowMs`, the clock ahead refilled the time between them again.
   */
  #bucket(endpoint: Endpoint, nowMs: number): { tokens: number; atMs: number } | null {
    const rate = endpoint.rateLimit;
    if (rate === null) return null;
    const burst = Math.max(1, rate);
    const bucket = this.#buckets.get(endpoint.id) ?? { tokens: burst, atMs: nowMs };
    bucket.tokens = Math.min(burst, bucket.tokens + Math.max(0, nowMs - bucket.atMs) * rate / 1000);
    bucket.atMs = refillFrom(nowMs, bucket.atMs, burst * 1000 / rate);
    this.#buckets.set(endpoint.id, bucket);
    return bucket;
  }

  recordAttempt(record: AttemptRecord): Promise<{ recorded: boolean; disabled: boolean }> {
    const stored = this.#live(record.deliveryId);
    if (!stored || stored.claim?.token !== record.token) {
      return Promise.resolve({ recorded: false, disabled: false });
    }
    const { attempt, nowMs } = record;
    stored.claim = null;
    Object.assign(stored.delivery, {
      status: attempt.outcome,
      attempts: stored.delivery.attempts + 1,
      tries: stored.delivery.tries + 1,
      interruptions: 0,
      firstAttemptMs: stored.delivery.attempts === 0
        ? attempt.timeMs
        : stored.delivery.firstAttemptMs,
      nextAttemptMs: attempt.nextAttemptMs,
      lastStatus: attempt.status,
      lastError: attempt.error,
      updatedMs: nowMs,
    });
    this.#logAttempt(stored, attempt, nowMs);
    this.#inflight.get(record.endpointId)?.delete(record.deliveryId);
    if (attempt.outcome === "dead") this.#markDead(stored);
    const queue = this.#queueOf(record.endpointId);
    if (attempt.outcome === "retrying" && attempt.nextAttemptMs !== null) {
      queue.set(record.deliveryId, attempt.nextAttemptMs);
    } else {
      queue.delete(record.deliveryId);
    }
    const state = this.#states.get(record.endpointId);
    let disabled = false;
    if (state) {
      if (attempt.outcome === "succeeded") {
        state.failingSinceMs = null;
      } else {
        state.failingSinceMs ??= nowMs;
        const reason = record.disableReason ??
          (nowMs - state.failingSinceMs >= record.disableAfterMs ? record.failingReason : null);
        if (reason !== null && !state.disabled) {
          state.disabled = true;
          state.disabledReason = reason;
          // A change the endpoint's readers see, as a PATCH disabling it is: updatedMs says when.
          const config = this.#configs.get(record.endpointId);
          if (config) this.#configs.set(record.endpointId, { ...config, updatedMs: nowMs });
          // A change of the endpoint list: a dispatch by a list read before makes its page again.
          this.#endpointsVersion += 1;
          disabled = true;
        }
      }
    }
    return Promise.resolve({ recorded: true, disabled });
  }

  /** Logs `attempt` as the newest (keeping MAX_ATTEMPTS_LOGGED), kept the retention from now. */
  #logAttempt(stored: StoredDelivery, attempt: Attempt, nowMs: number): void {
    stored.attempts.unshift({ ...attempt });
    stored.attempts.length = Math.min(stored.attempts.length, MAX_ATTEMPTS_LOGGED);
    stored.expiresMs = nowMs + this.#retentionMs;
  }

  releaseClaim(release: ClaimRelease): Promise<boolean> {
    const stored = this.#live(release.deliveryId);
    if (!stored || stored.claim?.token !== release.token) return Promise.resolve(false);
    stored.claim = null;
    this.#inflight.get(release.endpointId)?.delete(release.deliveryId);
    const queue = this.#queueOf(release.endpointId);
    queue.set(release.deliveryId, stored.delivery.nextAttemptMs ?? this.#now());
    if (release.cutOff) {
      const { attempt, nowMs, usesTry } = release.cutOff;
      const delivery = stored.delivery;
      // lastStatus and lastError stay the receiver's: the cut-off is in the attempt log.
      Object.assign(delivery, {
        attempts: delivery.attempts + 1,
        interruptions: delivery.interruptions + 1,
        firstAttemptMs: delivery.attempts === 0 ? attempt.timeMs : delivery.firstAttemptMs,
        updatedMs: nowMs,
      });
      this.#logAttempt(stored, attempt, nowMs);
      if (usesTry) {
        delivery.tries += 1;
        delivery.nextAttemptMs = attempt.nextAttemptMs;
        if (attempt.nextAttemptMs === null) {
          delivery.status = "dead";
          queue.delete(release.deliveryId);
          this.#markDead(stored);
        } else {
          delivery.status = "retrying";
          queue.set(release.deliveryId, attempt.nextAttemptMs);
        }
      }
    }
    return Promise.resolve(true);
  }

  retry(deliveryId: string, nowMs: number): Promise<RetryResult> {
    const stored = this.#live(deliveryId);
    if (!stored) return Promise.resolve("not_found");
    if (stored.claim && stored.claim.untilMs > nowMs) return Promise.resolve("in_flight");
    this.#requeue(stored, nowMs);
    return Promise.resolve("requeued");
  }

  #markDead(stored: StoredDelivery): void {
    const endpointId = stored.delivery.endpointId;
    let dead = this.#dead.get(endpointId);
    if (!dead) {
      dead = new Map();
      this.#dead.set(endpointId, dead);
    }
    dead.set(stored.delivery.id, stored.expiresMs);
  }

  #requeue(stored: StoredDelivery, nowMs: number): void {
    this.#dead.get(stored.delivery.endpointId)?.delete(stored.delivery.id);
    stored.claim = null;
    Object.assign(stored.delivery, {
      status: "pending",
      tries: 0,
      interruptions: 0,
      nextAttemptMs: nowMs,
      updatedMs: nowMs,
    });
    stored.expiresMs = nowMs + this.#retentionMs;
    this.#queueOf(stored.delivery.endpointId).set(stored.delivery.id, nowMs);
  }

  replay(endpointId: string, options: { sinceMs: number; nowMs: number }): Promise<number> {
    let count = 0;
    for (const { id } of this.#byEndpoint.get(endpointId) ?? []) {
      const stored = this.#live(id);
      if (!stored || stored.delivery.createdMs < options.sinceMs) continue;
      if (stored.delivery.status !== "retrying" && stored.delivery.status !== "dead") continue;
      if (stored.claim && stored.claim.untilMs > options.nowMs) continue;
      this.#requeue(stored, options.nowMs);
      count += 1;
    }
    return Promise.resolve(count);
  }

  countDeliveries(): Promise<DeliveryCounts> {
    const now = this.#now();
    let pending = 0;
    let dead = 0;
    for (const queue of this.#due.values()) pending += queue.size;
    for (const ids of this.#dead.values()) {
      for (const [id, forgetMs] of ids) {
        if (forgetMs > now) dead += 1;
        else ids.delete(id);
      }
    }
    return Promise.resolve({ pending, dead });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The index of the first position in ascending `list` that sorts after `position`. */
function firstAfter(list: readonly CursorPosition[], position: CursorPosition): number {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (comparePositions(list[middle], position) <= 0) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** Whether due time `a` comes before `b`: the due queue's heap order. */
function dueEarlier(a: [number, string], b: [number, string]): boolean {
  return a[0] < b[0];
}

/**
 * Delivery ids by due time: a map holds each id's due time, a binary heap
 * orders them; heap entries whose time no longer matches the map are stale
 * and skipped, so changing a due time is one push.
 */
class DueQueue {
  #due = new Map<string, number>();
  #heap = new BinaryHeap<[number, string]>(dueEarlier);

  set(id: string, dueMs: number): void {
    this.#due.set(id, dueMs);
    this.#heap.push([dueMs, id]);
  }

  delete(id: string): void {
    this.#due.delete(id);
  }

  /** How many ids it holds. */
  get size(): number {
    return this.#due.size;
  }

  #dropStale(): void {
    for (let top = this.#heap.peek(); top; top = this.#heap.peek()) {
      const [dueMs, id] = top;
      if (this.#due.get(id) === dueMs) return;
      this.#heap.pop();
    }
  }

  /** The earliest due time, or Infinity when empty. */
  earliest(): number {
    this.#dropStale();
    return this.#heap.peek()?.[0] ?? Infinity;
  }

  /**
   * Up to `limit` ids due at or before `nowMs`, earliest first. The caller
   * sets a new due time for each or deletes it.
   */
  takeDue(nowMs: number, limit: number): string[] {
    const out: string[] = [];
    const seen = new Set<string>();
    while (out.length < limit) {
      this.#dropStale();
      const top = this.#heap.peek();
      if (!top || top[0] > nowMs) break;
      const [, id] = top;
      this.#heap.pop();
      if (seen.has(id)) continue;
      seen.add(id);
      out.push(id);
    }
    return out;
  }
}
