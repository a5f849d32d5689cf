/**
 * The dispatcher turns a stream's durable result log into deliveries. Per
 * stream it reads the page after its cursor and, in one atomic store step,
 * creates one delivery per entry and matching endpoint with a deterministic
 * id (`msg_<stream>_<logEntryId>` + endpoint) and moves the cursor past the
 * page. A crash before that step repeats the page; a dispatcher that finds
 * the cursor moved reads again from there, so nothing is created twice. A
 * page fixed in the delivery store before its deliveries were stored (as
 * earlier versions dispatch, step by step) is adopted as it was fixed. A lease keeps a second instance from doing the
 * work twice, but nothing depends on it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CompiledStream } from "../../config/mod.ts";
import {
  compareLogIds,
  MAX_LOG_ENTRIES,
  parseLogId,
  StoreRequestTooLargeError,
} from "../../store/types.ts";
import type { LogEntry, Store } from "../../store/types.ts";
import {
  type CompiledExpression,
  compileExpression,
  notBoolReason,
  oversizedExpressionPatterns,
} from "../../transform/mod.ts";
import { withOversizedPatterns } from "../../validate/mod.ts";
import {
  recordLogTrimmed,
  recordWebhookUnstorable,
  WarningLimit,
  withinPeriod,
} from "../../telemetry/mod.ts";
import { publicPayload } from "../payload.ts";
import {
  batchedTypes,
  type Claim,
  type ClaimOptions,
  type DeliveryStore,
  type Endpoint,
  type NewDelivery,
  type WebhookEventType,
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
  /**
   * Most bytes of deliveries (payloads and ids, about) one page's store call carries, with its
   * claim's slow endpoint ids (a page they would take past it goes without the claim): a page
   * whose deliveries are larger is cut short (to one entry at least; one entry's, or those of a
   * page fixed before, go in several calls), and a store call refused as too large (Upstash's max
   * request size) is cut by half again, for the life of the dispatcher. @default {PAGE_BYTES}
   */
  maxPageBytes?: number;
}

/**
 * Most bytes of deliveries a page's store call carries by default: a tenth of Upstash's max
 * request size (10 MB), since a payload is escaped twice on its way (a Lua argument in a JSON
 * body) and the client may send other calls in the same request.
 */
export const PAGE_BYTES = 1_048_576;

/** About the bytes a store call takes for `deliveries`: payloads, ids and the item's frame. */
function deliveryBytes(deliveries: readonly NewDelivery[]): number {
  let bytes = 0;
  for (const delivery of deliveries) {
    bytes += delivery.payload.length + delivery.id.length + delivery.messageId.length +
      delivery.endpointId.length + 64;
  }
  return bytes;
}

/**
 * About the bytes a claim's slow endpoint ids add to a store call: each id, quoted (the quotes
 * escaped again in the request's JSON) and a comma; 0 without a claim or slow ids.
 */
function slowIdBytes(claim: ClaimOptions | null): number {
  let bytes = 0;
  for (const id of claim?.slow?.endpointIds ?? []) bytes += id.length + 5;
  return bytes;
}

/** `deliveries` in order, cut into shares of at most `bytes` each (one delivery at least). */
function sharesOf(deliveries: readonly NewDelivery[], bytes: number): NewDelivery[][] {
  const shares: NewDelivery[][] = [];
  let share: NewDelivery[] = [];
  let size = 0;
  for (const delivery of deliveries) {
    const own = deliveryBytes([delivery]);
    if (share.length > 0 && size + own > bytes) {
      shares.push(share);
      share = [];
      size = 0;
    }
    share.push(delivery);
    size += own;
  }
  if (share.length > 0) shares.push(share);
  return shares;
}

/** Options for {@linkcode Dispatcher.dispatch}. */
export interface DispatchOptions {
  /**
   * Told, after each page, how many deliveries it stored (when any) and how many claims its store
   * call handed to `claims`, before the next page.
   */
  onStored?: (count: number, claimed: number) => void;
  /**
   * Told when the stream's lease is held elsewhere (a sweep, another instance), so nothing was
   * dispatched: what that holder read before this entry was logged may not include it.
   */
  onLeaseHeld?: () => void;
  /**
   * Where what a page's store call claims goes: each page asks `reserve` for
   * slots (at most its deliveries) and hands the claims to `take`, so that an
   * alert's delivery is claimed in the round trip that stores it.
   */
  claims?: ClaimSink;
  /**
   * Read the log from where this dispatcher last left the cursor while the lease is taken,
   * rather than after (one round trip less when the cursor is still there, a wasted read when
   * it is not or when nothing is dispatched). @default {false}
   */
  readAhead?: boolean;
  /**
   * Dispatch only when the log moved: when its last entry is the one this dispatcher's last
   * complete dispatch of the stream left the cursor at (nothing was logged since) and its mark is
   * not due, do nothing at the cost of one log read ({@linkcode Store.lastLogId}) rather than
   * the lease, a log read and the lease's release. For the sweep, which goes over every stream
   * (an idle one too). @default {false}
   */
  ifLogMoved?: boolean;
  /**
   * Leave the mark of what this dispatch moved ({@linkcode Store.markDispatched}) to the next
   * dispatch without it (the sweep's), unless this dispatcher has not marked the stream for
   * {@linkcode MARK_EVERY_MS} or {@linkcode markAfterEntries} entries (a tenth of the entries the
   * store's logs retain) were dispatched since its last mark. For the dispatches an ingest or an
   * alert starts, so a stream whose every ingest is dispatched (`event.processed` endpoints)
   * costs its store no mark an ingest. The
   * mark only lags what was dispatched, never passes it: the log then holds what was dispatched
   * since a little longer, and trims nothing that was not dispatched. @default {false}
   */
  deferMark?: boolean;
  /**
   * The version the `endpoints` given to {@linkcode Dispatcher.dispatch} were listed at
   * ({@linkcode DeliveryStore.listEndpointsVersioned}): when an endpoint changed since, the store
   * call that takes the lease lists them again and the dispatch goes by that list, so an endpoint
   * registered (or changed to hear the stream, or enabled again) after the caller listed them
   * gets the results logged after that. @default {undefined: not compared}
   */
  endpointsVersion?: string;
}

/** Takes claims made by the dispatch for a sender (see `Sender.reserve`). */
export interface ClaimSink {
  /** Claim options for at most `most` claims, or null for none. */
  reserve(most: number): ClaimOptions | null;
  /** The claims made with `reserved` (none when the call failed). */
  take(reserved: ClaimOptions, claims: readonly Claim[]): void;
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

const logger = getLogger(["edgestream", "webhooks"]);

/** Most time (ms) between two marks of a stream's log by one dispatcher (see {@linkcode Store.markDispatched}). */
export const MARK_EVERY_MS = 60_000;

/**
 * Most entries a dispatcher dispatches of a stream's log between two marks when it defers them
 * ({@linkcode DispatchOptions.deferMark}), for a store whose logs retain `retain` entries
 * ({@linkcode Store.logBounds}): a tenth of them (one at least), so a log holds at most that many
 * dispatched entries beyond those it retains, and what its hard bound trims after a stale mark,
 * and counts as lost, is what a timely mark would have let it trim but at most these.
 */
export function markAfterEntries(retain: number): number {
  return Math.max(1, Math.floor(retain / 10));
}

/** {@linkcode markAfterEntries} of the default log bound ({@linkcode MAX_LOG_ENTRIES}): 10,000. */
export const MARK_AFTER_ENTRIES = markAfterEntries(MAX_LOG_ENTRIES);

/** A log id before every entry: marked as dispatched, it holds a whole log. */
export const NOTHING_DISPATCHED = "0-0";

/**
 * Counts and warns about results a stream's log trimmed at its hard bound before they were
 * dispatched (what {@linkcode Store.markDispatched} returned).
 */
export function reportTrimmed(stream: string, lost: number): void {
  if (lost <= 0) return;
  recordLogTrimmed(stream, lost);
  logger.warn(
    "Stream {stream}'s result log reached its hard bound and trimmed {lost} results before " +
      "they were dispatched to its webhooks: they are lost to them",
    { stream, lost },
  );
}

/**
 * Counts and logs a delivery of `stream` the store refused as too large in a call of its own,
 * which no call can carry: it is dropped so that the stream's dispatch goes on.
 */
export function reportUnstorable(stream: string, delivery: NewDelivery): void {
  recordWebhookUnstorable(stream);
  logger.error(
    "Webhook delivery {delivery} of stream {stream} to endpoint {endpoint} ({bytes} bytes) is " +
      "larger than the store takes in one call: it is dropped, and the stream's dispatch goes on",
    {
      delivery: delivery.id,
      stream,
      endpoint: delivery.endpointId,
      bytes: deliveryBytes([delivery]),
    },
  );
}

/** A result an endpoint's batch takes: its entry, and its payload's timestamp and data. */
interface BatchItem {
  entry: LogEntry;
  timestamp: string;
  data: unknown;
}

/** Least time (ms) between two warnings about one endpoint's failing filter. */
const FILTER_WARNING_EVERY_MS = 60_000;

/** Turns result logs into deliveries. */
export class Dispatcher {
  #store: Store;
  #deliveries: DeliveryStore;
  #now: () => number;
  #pageSize: number;
  #maxPages: number;
  #leaseMs: number;
  /** Bytes a page's deliveries may take (see {@linkcode DispatcherOptions.maxPageBytes}). */
  #pageBytes: number;
  /** Entries dispatched between two deferred marks at most (see {@linkcode markAfterEntries}). */
  #markAfter: number;
  /** Endpoint id → its compiled filter; those of endpoints no longer listed go (#keepFiltersOf). */
  #filters = new Map<string, { key: string; filter: CompiledExpression | null }>();
  /** Warnings about failing filters, per cached filter (a changed filter warns anew). */
  #filterWarnings: WarningLimit<object>;
  /** Per stream: where this dispatcher last left the cursor, for reading ahead. */
  #cursors = new Map<string, string>();
  /** Per stream: when this dispatcher last marked how far the log was dispatched. */
  #marked = new Map<string, number>();
  /**
   * Per stream whose mark this dispatcher deferred ({@linkcode DispatchOptions.deferMark}): the
   * entries it dispatched since its last mark.
   */
  #deferred = new Map<string, number>();
  /**
   * Per stream: the log id (null: none) this dispatcher's last dispatch that went to the end of
   * the log left the cursor at (see {@linkcode DispatchOptions.ifLogMoved}).
   */
  #done = new Map<string, string | null>();
  /**
   * Per stream: the definition the state above was kept for. Another one (the stream deleted and
   * created again, or changed) starts afresh: see {@linkcode Dispatcher.retain}.
   */
  #definitions = new Map<string, CompiledStream>();

  constructor(store: Store, deliveries: DeliveryStore, options: DispatcherOptions = {}) {
    this.#store = store;
    this.#deliveries = deliveries;
    this.#now = options.now ?? Date.now;
    this.#filterWarnings = new WarningLimit(FILTER_WARNING_EVERY_MS, () => this.#now());
    this.#pageSize = options.pageSize ?? 500;
    this.#maxPages = options.maxPages ?? 20;
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#pageBytes = options.maxPageBytes ?? PAGE_BYTES;
    this.#markAfter = markAfterEntries(store.logBounds.retain);
  }

  /**
   * Dispatches a stream's log up to its end (at most `maxPages` pages) to
   * `endpoints`, or, when `endpoints` is null, to every endpoint listed in
   * the same store call that takes the lease; returns how many deliveries
   * were created. Does nothing when another instance holds the stream's lease
   * (then `options.onLeaseHeld` is told), or when there are no endpoints.
   *
   * Each page costs one atomic store call ({@linkcode DeliveryStore.storePage},
   * which also claims for `options.claims`), the first one with the lease in
   * one more ({@linkcode DeliveryStore.openDispatch}), besides the log reads:
   * on the way to an alert that is two delivery store round trips and one log
   * read, which `options.readAhead` makes while the lease is taken.
   */
  async dispatch(
    stream: CompiledStream,
    endpoints: readonly Endpoint[] | null,
    options: DispatchOptions = {},
  ): Promise<number> {
    if (endpoints !== null && endpoints.length === 0) return 0;
    if (this.#definitions.get(stream.name) !== stream) {
      // Another definition than the state was kept for: see retain().
      this.forget(stream.name);
      this.#definitions.set(stream.name, stream);
    }
    const done = this.#done.get(stream.name);
    if (options.ifLogMoved && done !== undefined && this.#markedSince(stream.name)) {
      if (await this.#store.lastLogId(stream.name) === done) {
        // Dispatched to the end already (its deliveries stored), the mark deferred: made now.
        if (done !== null && this.#deferred.has(stream.name)) await this.#mark(stream.name, done);
        return 0;
      }
    }
    this.#done.delete(stream.name);
    const leaseName = `dispatch:${stream.name}`;
    const known = this.#cursors.get(stream.name);
    const ahead = options.readAhead && known !== undefined
      ? this.#store.readLog(stream.name, known, this.#pageSize)
      : null;
    // Not awaited when the state shows another cursor: its failure then matters to nobody.
    ahead?.catch(() => {});
    const opened = await this.#deliveries.openDispatch(stream.name, {
      lease: leaseName,
      leaseMs: this.#leaseMs,
      listEndpoints: endpoints === null,
      unlessVersion: endpoints === null ? undefined : options.endpointsVersion,
    });
    // Listed by the store call when asked, or when the endpoints changed since `endpoints`.
    let listed = opened.endpoints ?? endpoints ?? [];
    // The version of `listed`: a page is stored only while no endpoint changed since.
    let version = opened.endpointsVersion;
    this.#keepFiltersOf(listed);
    // No endpoints: openDispatch took no lease, and there is nothing to do.
    if (listed.length === 0) return 0;
    const lease = opened.lease;
    if (lease === null) {
      options.onLeaseHeld?.();
      return 0;
    }
    let state = opened.state;
    // How far the log is dispatched, as this dispatch knows it.
    let through = state.cursor;
    let created = 0;
    let released = false;
    let toEnd = false;
    /** Entries of the pages this dispatch stored. */
    let dispatched = 0;
    /**
     * Ids of deliveries the store refused as too large in a call of their own: in a request that
     * may have carried other calls (`refusedOnce`: the client pipelines calls made at the same
     * time), then in a request of its own (`unstorable`: no call can carry them; dropped, see
     * reportUnstorable).
     */
    const refusedOnce = new Set<string>();
    const unstorable = new Set<string>();
    /** Whether a call carrying only `calls` goes in a request of its own: see tooLarge(). */
    const alone = (calls: readonly NewDelivery[]) =>
      calls.length === 1 && refusedOnce.has(calls[0].id);
    /** `delivery`, refused as too large in a call of its own: sent alone next, or dropped. */
    const tooLarge = (delivery: NewDelivery) => {
      if (!refusedOnce.has(delivery.id)) {
        refusedOnce.add(delivery.id);
        return;
      }
      unstorable.add(delivery.id);
      reportUnstorable(stream.name, delivery);
    };
    const deliveriesOf = (plan: PagePlan) =>
      this.deliveriesFor(plan, listed).filter((delivery) => !unstorable.has(delivery.id));
    try {
      for (let page = 0, refused = 0; page < this.#maxPages && refused < 3;) {
        const entries = ahead !== null && page === 0 && refused === 0 &&
            state.cursor === known && state.planEnd === null
          ? await ahead
          : await this.#store.readLog(stream.name, state.cursor, this.#pageSize);
        // A page fixed by a dispatcher that stopped before storing it (or an older version)
        // ends where it was fixed, whatever the log holds now.
        const end = state.planEnd ?? entries.at(-1)?.id;
        if (end === undefined) {
          // The log holds nothing after the cursor: dispatched to its end.
          toEnd = true;
          break;
        }
        let plan = {
          stream,
          cursor: state.cursor,
          end,
          entries: entries.filter((entry) => !isAfter(entry.id, end)),
        };
        let deliveries = deliveriesOf(plan);
        // Too large for one store call: the page ends earlier (a page fixed by an older version
        // is stored as it was fixed).
        let cut = false;
        while (
          state.planEnd === null && plan.entries.length > 1 &&
          deliveryBytes(deliveries) > this.#pageBytes
        ) {
          const kept = plan.entries.slice(0, Math.ceil(plan.entries.length / 2));
          plan = { ...plan, end: kept.at(-1)!.id, entries: kept };
          deliveries = deliveriesOf(plan);
          cut = true;
        }
        // One entry whose deliveries (one per endpoint, or per batch) are still too large for one
        // store call, or a fixed page (its end cannot move) whose deliveries are: all but the last
        // share are created first, in calls small enough, and the last goes with the cursor's move.
        // Their ids are the page's entries' and the endpoint's, so a dispatch cut off in between
        // creates none twice, and the cursor moves past the page only once all of them exist.
        const shared = plan.entries.length === 1 || state.planEnd !== null;
        if (shared && deliveryBytes(deliveries) > this.#pageBytes) {
          const shares = sharesOf(deliveries, this.#pageBytes);
          let share: NewDelivery[] = [];
          try {
            for (share of shares.slice(0, -1)) {
              const made = await this.#deliveries.createDeliveries(share, { alone: alone(share) });
              created += made;
              if (made > 0) options.onStored?.(made, 0);
            }
          } catch (error) {
            if (!(error instanceof StoreRequestTooLargeError)) throw error;
            // A share of one delivery refused: sent alone, then dropped (no call can carry it).
            if (share.length === 1) {
              tooLarge(share[0]);
              continue;
            }
            this.#pageBytes = Math.min(this.#pageBytes, Math.floor(deliveryBytes(share) / 2));
            this.#warnTooLarge(stream.name, plan.entries.length);
            continue;
          }
          deliveries = shares.at(-1)!;
        }
        const last = state.planEnd === null && !cut && entries.length < this.#pageSize;
        let reserved = deliveries.length > 0
          ? options.claims?.reserve(deliveries.length) ?? null
          : null;
        // The claim's slow endpoint ids (at most 1,000, about 40 KB) count in the page's bytes: a
        // page they would take past them, or a delivery sent alone after a refusal, goes without
        // the claim (its sender claims them itself: onStored), so the ids never take a call past
        // the page's bytes and no delivery is dropped for them.
        const slowBytes = slowIdBytes(reserved);
        if (
          slowBytes > 0 &&
          (alone(deliveries) || deliveryBytes(deliveries) + slowBytes > this.#pageBytes)
        ) {
          options.claims!.take(reserved!, []);
          reserved = null;
        }
        let result;
        try {
          result = await this.#deliveries.storePage(stream.name, {
            cursor: plan.cursor,
            end: plan.end,
            deliveries,
            releaseLease: last ? { name: leaseName, token: lease } : undefined,
            claim: reserved ?? undefined,
            endpointsVersion: version,
          }, { alone: alone(deliveries) });
        } catch (error) {
          // Refused whole, nothing stored: the same page would be refused at every dispatch, so
          // pages are made smaller (as long as this one has entries to spare) and it goes again.
          // (One entry's or a fixed page's deliveries are then created in shares: above.)
          const smaller = (state.planEnd === null && plan.entries.length > 1) ||
            (shared && deliveries.length > 1);
          if (!(error instanceof StoreRequestTooLargeError)) throw error;
          // One delivery refused: sent alone, then dropped (no call can carry it).
          if (!smaller && deliveries.length === 1) {
            tooLarge(deliveries[0]);
            continue;
          }
          if (!smaller) throw error;
          this.#pageBytes = Math.min(this.#pageBytes, Math.floor(deliveryBytes(deliveries) / 2));
          this.#warnTooLarge(stream.name, plan.entries.length);
          continue;
        } finally {
          if (reserved !== null) options.claims!.take(reserved, result?.claims ?? []);
        }
        if (result?.endpointsChanged) {
          // An endpoint was created, changed or deleted since `listed` was read, nothing stored:
          // the page is made again for the endpoints now (one registered meanwhile gets the
          // results logged after its registration).
          refused += 1;
          ({ endpoints: listed, version } = await this.#deliveries.listEndpointsVersioned());
          this.#keepFiltersOf(listed);
          if (listed.length === 0) break;
          continue;
        }
        const stored = result?.created ?? null;
        if (stored === null) {
          // Another dispatcher stored or fixed a page meanwhile: go on from where it is.
          refused += 1;
          state = await this.#deliveries.dispatchState(stream.name);
          through = state.cursor;
          continue;
        }
        this.#cursors.set(stream.name, plan.end);
        through = plan.end;
        created += stored;
        dispatched += plan.entries.length;
        // Stored deliveries can be sent now; later pages need not hold them up.
        if (stored > 0) options.onStored?.(stored, result?.claims.length ?? 0);
        if (last) {
          released = true;
          toEnd = true;
          break;
        }
        state = { cursor: plan.end, planEnd: null };
        page += 1;
      }
    } finally {
      if (!released) await this.#deliveries.releaseLease(leaseName, lease);
    }
    // What this dispatch moved, or an earlier one of this dispatcher whose mark it deferred.
    const deferred = this.#deferred.get(stream.name);
    // (A log never dispatched has no mark to catch up: a hold's deferred mark waits for an entry.)
    const moved = through !== opened.state.cursor || (deferred !== undefined && through !== null);
    const unmarked = (deferred ?? 0) + dispatched;
    if (
      !this.#markedSince(stream.name) ||
      (moved && (!options.deferMark || unmarked >= this.#markAfter))
    ) {
      // Before any entry is dispatched the hold keeps them all ("0-0" precedes every id).
      await this.#mark(stream.name, through ?? NOTHING_DISPATCHED);
    } else if (moved) {
      // Deferred: the store's mark stays behind what was dispatched, never ahead of it.
      this.#deferred.set(stream.name, unmarked);
    }
    if (toEnd) this.#done.set(stream.name, through);
    return created;
  }

  #warnTooLarge(stream: string, entries: number): void {
    logger.warn(
      "The store refused a webhook dispatch page of {entries} results of stream {stream} " +
        "as too large: pages now carry at most {bytes} bytes of deliveries",
      { stream, entries, bytes: this.#pageBytes },
    );
  }

  /** How many streams this dispatcher keeps state for (for tests and monitoring). */
  get streams(): number {
    return this.#names().size;
  }

  #names(): Set<string> {
    return new Set([
      ...this.#cursors.keys(),
      ...this.#marked.keys(),
      ...this.#deferred.keys(),
      ...this.#done.keys(),
      ...this.#definitions.keys(),
    ]);
  }

  /**
   * Forgets what this dispatcher kept about the streams `served` does not hold as it was
   * dispatched: one deleted keeps nothing, and one deleted and created again (or changed) is
   * held and marked anew, as a stream this dispatcher never saw, rather than taken for marked
   * already by the old incarnation's marks. Returns the names forgotten that `served` lacks.
   */
  retain(served: ReadonlyMap<string, CompiledStream>): string[] {
    const gone: string[] = [];
    for (const name of this.#names()) {
      const stream = served.get(name);
      const known = this.#definitions.get(name);
      if (stream === undefined) gone.push(name);
      if (stream === undefined || (known !== undefined && known !== stream)) this.forget(name);
    }
    return gone;
  }

  /** Forgets everything this dispatcher kept about `stream`. */
  forget(stream: string): void {
    this.#cursors.delete(stream);
    this.#marked.delete(stream);
    this.#deferred.delete(stream);
    this.#done.delete(stream);
    this.#definitions.delete(stream);
  }

  /**
   * Tells the store that no dispatch holds the stream's log any more (no endpoint is
   * registered), so it keeps only its newest entries again. Resolves whether the store took it.
   */
  release(stream: string): Promise<boolean> {
    this.#marked.delete(stream);
    this.#deferred.delete(stream);
    return this.#mark(stream, null);
  }

  /**
   * Holds the stream's log for dispatch (see {@linkcode Store.markDispatched}) unless this
   * dispatcher marked it already.
   */
  async hold(stream: string): Promise<void> {
    if (this.#marked.has(stream)) return;
    // The store's mark may lag what was dispatched (a process that deferred its marks stopped
    // before its sweep), and this hold keeps it there: the next dispatch without `deferMark`
    // marks its cursor even when it moves nothing, as if a mark had been deferred.
    if (await this.#mark(stream, NOTHING_DISPATCHED)) this.#deferred.set(stream, 0);
  }

  #markedSince(stream: string): boolean {
    const at = this.#marked.get(stream);
    // A clock before the mark's time (the wall clock stepped back) is not since it: else marks
    // would wait until the clock passed that time again, and the log keep what it could trim.
    const now = this.#now();
    return at !== undefined && withinPeriod(now, at, MARK_EVERY_MS);
  }

  /**
   * Marks how far the stream's log was dispatched, which lets its store trim what is behind,
   * and says what its hard bound trimmed before dispatch. A failure only delays the trimming.
   */
  async #mark(stream: string, through: string | null): Promise<boolean> {
    let lost: number;
    try {
      lost = await this.#store.markDispatched(stream, through);
    } catch (error) {
      logger.warn("Cannot mark how far stream {stream}'s result log was dispatched: {error}", {
        stream,
        error: error instanceof Error ? error.message : String(error),
      });
      return false;
    }
    if (through !== null) {
      this.#marked.set(stream, this.#now());
      this.#deferred.delete(stream);
    }
    reportTrimmed(stream, lost);
    return true;
  }

  /**
   * The deliveries of a page for the endpoints that match its entries: one per entry and
   * endpoint, or, for the types an endpoint's `batch` groups, one per type and up to
   * `maxEvents` of the page's entries that pass its filter, whose `data` is their `data` in log
   * order. A batch's id is made of its first and last entry's, so a page dispatched again
   * makes the same deliveries.
   */
  deliveriesFor(plan: PagePlan, endpoints: readonly Endpoint[]): NewDelivery[] {
    const { stream } = plan;
    const createdMs = this.#now();
    const out: NewDelivery[] = [];
    /** Per endpoint and type (in the order the page first has them), what it batches. */
    const batches = new Map<Endpoint, Map<WebhookEventType, BatchItem[]>>();
    const listening = endpoints.filter((endpoint) =>
      !endpoint.disabled && (endpoint.streams === null || endpoint.streams.includes(stream.name))
    );
    if (listening.length === 0) return out;
    /** Adds the delivery of message `messageId` (one result, or a batch) to `endpoint`. */
    const deliver = (
      messageId: string,
      delivery: { endpoint: Endpoint; type: WebhookEventType; payload: string },
    ) => {
      out.push({
        id: `${messageId}.${delivery.endpoint.id}`,
        messageId,
        endpointId: delivery.endpoint.id,
        stream: stream.name,
        eventType: delivery.type,
        payload: delivery.payload,
        createdMs,
      });
    };
    // Where each endpoint starts in this stream's log: none for a stream created after it
    // registered, also one named as an object's own member (`toString`), which a plain lookup
    // of `startAfter` would find on its prototype.
    const starts = new Map(listening.map((endpoint) => [
      endpoint,
      Object.hasOwn(endpoint.startAfter, stream.name) ? endpoint.startAfter[stream.name] : null,
    ]));
    for (const entry of plan.entries) {
      const type = entry.record.type;
      if (!isWebhookType(type)) continue;
      const targets = listening.filter((endpoint) =>
        endpoint.eventTypes.includes(type) && isAfter(entry.id, starts.get(endpoint))
      );
      if (targets.length === 0) continue;
      const payload = publicPayload(stream, entry);
      if (payload === null) continue;
      let body: string | undefined;
      const messageId = `msg_${stream.name}_${entry.id}`;
      for (const endpoint of targets) {
        // The filter sees each result alone, batched or not.
        if (!this.#matches(endpoint, payload)) continue;
        if ((batchedTypes(endpoint.batch) as readonly string[]).includes(type)) {
          let byType = batches.get(endpoint);
          if (!byType) {
            byType = new Map();
            batches.set(endpoint, byType);
          }
          let batch = byType.get(type);
          if (!batch) {
            batch = [];
            byType.set(type, batch);
          }
          batch.push({ entry, timestamp: payload.timestamp, data: payload.data });
          continue;
        }
        body ??= JSON.stringify(payload);
        deliver(messageId, { endpoint, type, payload: body });
      }
    }
    for (const [endpoint, byType] of batches) {
      const size = endpoint.batch!.maxEvents;
      for (const [type, items] of byType) {
        for (let i = 0; i < items.length; i += size) {
          const chunk = items.slice(i, i + size);
          const first = chunk[0].entry;
          const last = chunk[chunk.length - 1];
          // Entries are of one type each, so two types' batches never share their ends.
          const messageId = `msg_${stream.name}_${first.id}_${last.entry.id}`;
          deliver(messageId, {
            endpoint,
            type,
            payload: JSON.stringify({
              type,
              timestamp: last.timestamp,
              data: chunk.map((item) => item.data),
            }),
          });
        }
      }
    }
    return out;
  }

  /** How many compiled endpoint filters this dispatcher keeps (for tests and monitoring). */
  get filters(): number {
    return this.#filters.size;
  }

  /**
   * Forgets the compiled filters of endpoints not in `listed` (deleted): the cache held one per
   * endpoint ever dispatched to, so creating and deleting endpoints grew it for good. With every
   * cached one listed there are at most as many as listed: only then is nothing looked up.
   */
  #keepFiltersOf(listed: readonly Endpoint[]): void {
    if (this.#filters.size <= listed.length) return;
    const ids = new Set(listed.map((endpoint) => endpoint.id));
    for (const id of this.#filters.keys()) if (!ids.has(id)) this.#filters.delete(id);
  }

  #matches(endpoint: Endpoint, payload: { data: unknown }): boolean {
    if (endpoint.filter === null) return true;
    const key = `${endpoint.version}:${endpoint.filter}`;
    let cached = this.#filters.get(endpoint.id);
    if (!cached || cached.key !== key) {
      cached = { key, filter: compiledFilter(endpoint, endpoint.filter) };
      this.#filters.set(endpoint.id, cached);
    }
    if (!cached.filter) return false;
    try {
      const result = cached.filter({ payload, data: payload.data });
      // A result that is no bool (`data.value` alone, whose type registration cannot know) fails
      // too, as an alert's condition does: it cannot say "send", and would drop every payload
      // unsaid.
      const notBool = notBoolReason("The filter", result);
      if (notBool !== null) throw new Error(notBool);
      return result === true;
    } catch (error) {
      // Sent nowhere, as a filter that answers false; said at most once a minute per endpoint.
      if (this.#filterWarnings.due(cached)) {
        logger.warn(
          "Webhook {endpoint}'s filter failed on a payload of type {eventType}, which was not sent to it: {error}",
          {
            endpoint: endpoint.id,
            eventType: (payload as { type?: unknown }).type,
            error: error instanceof Error ? error.message : String(error),
          },
        );
      }
      return false;
    }
  }
}

/**
 * `endpoint`'s filter (`source`) compiled, once a version: one registered before its patterns'
 * classes were counted, or with a pattern past `MAX_PATTERN_SIZE` (refused at registration
 * since), is served as it was, said once (as a stored stream's); one that no longer compiles
 * matches nothing, said once too.
 */
function compiledFilter(endpoint: Endpoint, source: string): CompiledExpression | null {
  let filter: CompiledExpression;
  try {
    filter = withOversizedPatterns(() =>
      compileExpression(source, FILTER_VARIABLES, { uncountedPatternClasses: true })
    );
  } catch (error) {
    // Checked at registration, by the checks of then: one that no longer compiles (literal patterns
    // past 16,000 together without their classes' ranges, registered before that bound) matches
    // nothing, said once a version rather than dropping every payload unseen.
    logger.warn(
      "Webhook {endpoint} version {version}'s 'filter' no longer compiles, so nothing is sent to it: {error}; replace it with PATCH /v1/webhooks/{endpoint}",
      {
        endpoint: endpoint.id,
        version: endpoint.version,
        error: error instanceof Error ? error.message : String(error),
      },
    );
    return null;
  }
  const problem = oversizedExpressionPatterns(source, FILTER_VARIABLES);
  if (problem !== undefined) {
    logger.warn(
      "Webhook {endpoint} version {version}'s 'filter': {problem}; served as registered before this check; replace it with PATCH /v1/webhooks/{endpoint}, which refuses it as it is",
      { endpoint: endpoint.id, version: endpoint.version, problem },
    );
  }
  return filter;
}
