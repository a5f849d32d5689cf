/**
 * The dispatcher turns a stream's durable result log into deliveries. Per
 * stream it reads the page after its cursor, fixes the page's end in the
 * delivery store, creates one delivery per entry and matching endpoint with
 * a deterministic id (`msg_<stream>_<logEntryId>` + endpoint), then moves
 * the cursor. A crash between any two steps repeats the page and creates
 * nothing twice; two dispatchers on one stream adopt the same page. A lease
 * keeps a second instance from doing the work twice, but nothing depends on it.
 *
 * @module
 */
import type { CompiledStream } from "../../config/mod.ts";
import { compareLogIds, parseLogId } from "../../store/types.ts";
import type { LogEntry, Store } from "../../store/types.ts";
import { type CompiledExpression, compileExpression } from "../../transform/mod.ts";
import { publicPayload } from "../payload.ts";
import type {
  DeliveryStore,
  DispatchState,
  Endpoint,
  NewDelivery,
  WebhookEventType,
} from "../../store/deliveries.ts";

/** Variables an endpoint's `filter` sees: the whole payload, and its `data`. */
export const FILTER_VARIABLES = ["payload", "data"] as const;

/** Options for {@linkcode Dispatcher}. */
export interface DispatcherOptions {
  /** Clock (ms): creation time of deliveries. @default {Date.now} */
  now?: () => number;
  /** Log entries per page. @default {500} */
  pageSize?: number;
  /** Most pages per stream in one {@linkcode Dispatcher.dispatch}. @default {20} */
  maxPages?: number;
  /** How long (ms) the per-stream lease lasts. @default {30000} */
  leaseMs?: number;
}

/** Options for {@linkcode Dispatcher.dispatch}. */
export interface DispatchOptions {
  /** Told, after each page, how many deliveries it stored (when any), before the next page. */
  onStored?: (count: number) => void;
  /**
   * Told when the stream's lease is held elsewhere (a sweep, another instance), so nothing was
   * dispatched: what that holder read before this entry was logged may not include it.
   */
  onLeaseHeld?: () => void;
}

/** A page of a stream's log, fixed in the delivery store. */
export interface PagePlan {
  /** The stream. */
  stream: CompiledStream;
  /** The cursor the page follows. */
  cursor: string | null;
  /** Id of the page's last entry. */
  end: string;
  /** The page's entries. */
  entries: LogEntry[];
}

function isAfter(id: string, than: string | null | undefined): boolean {
  return than === null || than === undefined || compareLogIds(parseLogId(id), parseLogId(than)) > 0;
}

function isWebhookType(type: string): type is WebhookEventType {
  return type === "window.closed" || type === "alert.fired" || type === "event.processed" ||
    type === "event.late";
}

/** Turns result logs into deliveries. */
export class Dispatcher {
  #store: Store;
  #deliveries: DeliveryStore;
  #now: () => number;
  #pageSize: number;
  #maxPages: number;
  #leaseMs: number;
  #filters = new Map<string, { key: string; filter: CompiledExpression | null }>();

  constructor(store: Store, deliveries: DeliveryStore, options: DispatcherOptions = {}) {
    this.#store = store;
    this.#deliveries = deliveries;
    this.#now = options.now ?? Date.now;
    this.#pageSize = options.pageSize ?? 500;
    this.#maxPages = options.maxPages ?? 20;
    this.#leaseMs = options.leaseMs ?? 30_000;
  }

  /**
   * Dispatches a stream's log up to its end (at most `maxPages` pages) to
   * `endpoints`; returns how many deliveries were created. Does nothing when
   * another instance holds the stream's lease (then `options.onLeaseHeld` is
   * told), or when `endpoints` (which may still be loading) turn out empty.
   */
  async dispatch(
    stream: CompiledStream,
    endpoints: readonly Endpoint[] | Promise<readonly Endpoint[]>,
    options: DispatchOptions = {},
  ): Promise<number> {
    const leaseName = `dispatch:${stream.name}`;
    // The lease, the stream's dispatch state and the endpoints are independent: waiting for
    // them together costs one store round trip instead of three on the way to an alert.
    // Reading the state before the lease is taken is safe: beginPage and commitPage only act
    // on the cursor they were given, and a page adopted from an old state creates nothing twice.
    const [leased, state, listed] = await Promise.allSettled([
      this.#deliveries.acquireLease(leaseName, this.#leaseMs),
      this.#deliveries.dispatchState(stream.name),
      endpoints,
    ]);
    const lease = leased.status === "fulfilled" ? leased.value : null;
    try {
      if (leased.status === "rejected") throw leased.reason;
      if (state.status === "rejected") throw state.reason;
      if (listed.status === "rejected") throw listed.reason;
    } catch (error) {
      if (lease !== null) await this.#deliveries.releaseLease(leaseName, lease);
      throw error;
    }
    if (lease === null) {
      options.onLeaseHeld?.();
      return 0;
    }
    let created = 0;
    try {
      if (listed.value.length === 0) return 0;
      for (let page = 0; page < this.#maxPages; page++) {
        const plan = await this.planPage(stream, { state: page === 0 ? state.value : undefined });
        if (plan === null) break;
        const stored = await this.#deliveries.createDeliveries(
          this.deliveriesFor(plan, listed.value),
        );
        created += stored;
        // Stored deliveries can be sent now; later pages need not hold them up.
        if (stored > 0) options.onStored?.(stored);
        await this.commitPage(plan);
      }
    } finally {
      await this.#deliveries.releaseLease(leaseName, lease);
    }
    return created;
  }

  /**
   * Step 1: reads the page after the cursor and fixes its end in the
   * delivery store (or adopts the page already fixed); null when the log
   * holds nothing new. Starts from `options.state` when given (read
   * already), else reads the stream's dispatch state.
   */
  async planPage(
    stream: CompiledStream,
    options: { state?: DispatchState } = {},
  ): Promise<PagePlan | null> {
    let state = options.state ?? await this.#deliveries.dispatchState(stream.name);
    for (let round = 0; round < 3; round++) {
      const entries = await this.#store.readLog(stream.name, state.cursor, this.#pageSize);
      if (state.planEnd !== null) {
        const end = state.planEnd;
        return {
          stream,
          cursor: state.cursor,
          end,
          entries: entries.filter((entry) => !isAfter(entry.id, end)),
        };
      }
      if (entries.length === 0) return null;
      const proposed = entries[entries.length - 1].id;
      state = await this.#deliveries.beginPage(stream.name, state.cursor, proposed);
      if (state.planEnd === proposed) {
        return { stream, cursor: state.cursor, end: proposed, entries };
      }
      // Another dispatcher planned or moved on meanwhile: read again from where it is.
    }
    return null;
  }

  /** Step 2: the deliveries of a page for the endpoints that match its entries. */
  deliveriesFor(plan: PagePlan, endpoints: readonly Endpoint[]): NewDelivery[] {
    const { stream } = plan;
    const createdMs = this.#now();
    const out: NewDelivery[] = [];
    const batches = new Map<Endpoint, Array<{ entry: LogEntry; data: unknown }>>();
    const listening = endpoints.filter((endpoint) =>
      !endpoint.disabled && (endpoint.streams === null || endpoint.streams.includes(stream.name))
    );
    if (listening.length === 0) return out;
    for (const entry of plan.entries) {
      const type = entry.record.type;
      if (!isWebhookType(type)) continue;
      const targets = listening.filter((endpoint) =>
        endpoint.eventTypes.includes(type) && isAfter(entry.id, endpoint.startAfter[stream.name])
      );
      if (targets.length === 0) continue;
      const payload = publicPayload(stream, entry);
      if (payload === null) continue;
      const body = JSON.stringify(payload);
      const messageId = `msg_${stream.name}_${entry.id}`;
      for (const endpoint of targets) {
        if (!this.#matches(endpoint, payload)) continue;
        if (type === "event.processed" && endpoint.batch !== null) {
          let batch = batches.get(endpoint);
          if (!batch) {
            batch = [];
            batches.set(endpoint, batch);
          }
          batch.push({ entry, data: payload.data });
          continue;
        }
        out.push({
          id: `${messageId}.${endpoint.id}`,
          messageId,
          endpointId: endpoint.id,
          stream: stream.name,
          eventType: type,
          payload: body,
          createdMs,
        });
      }
    }
    for (const [endpoint, items] of batches) {
      const size = endpoint.batch!.maxEvents;
      for (let i = 0; i < items.length; i += size) {
        const chunk = items.slice(i, i + size);
        const first = chunk[0].entry;
        const last = chunk[chunk.length - 1].entry;
        const messageId = `msg_${stream.name}_${first.id}_${last.id}`;
        out.push({
          id: `${messageId}.${endpoint.id}`,
          messageId,
          endpointId: endpoint.id,
          stream: stream.name,
          eventType: "event.processed",
          payload: JSON.stringify({
            type: "event.processed",
            timestamp: new Date(last.timeMs).toISOString(),
            data: chunk.map((item) => item.data),
          }),
          createdMs,
        });
      }
    }
    return out;
  }

  /** Step 3: moves the cursor past the page. */
  async commitPage(plan: PagePlan): Promise<void> {
    await this.#deliveries.commitPage(plan.stream.name, plan.cursor, plan.end);
  }

  #matches(endpoint: Endpoint, payload: { data: unknown }): boolean {
    if (endpoint.filter === null) return true;
    const key = `${endpoint.version}:${endpoint.filter}`;
    let cached = this.#filters.get(endpoint.id);
    if (!cached || cached.key !== key) {
      let filter: CompiledExpression | null = null;
      try {
        filter = compileExpression(endpoint.filter, FILTER_VARIABLES);
      } catch {
        // Checked at registration; a filter that no longer compiles matches nothing.
      }
      cached = { key, filter };
      this.#filters.set(endpoint.id, cached);
    }
    if (!cached.filter) return false;
    try {
      return cached.filter({ payload, data: payload.data }) === true;
    } catch {
      return false;
    }
  }
}
