/**
 * Group commit: concurrent ingest requests for the same stream share one
 * store apply. On Redis every apply is one billed command and one round trip,
 * so a hundred browser beacons that arrive together cost one command instead
 * of a hundred.
 *
 * How requests are grouped, per stream and per process:
 * - While no apply of the stream is running, a request is sent at once, alone:
 *   there is no timer, so an idle server adds no latency.
 * - While one is running, later requests wait in the stream's open group,
 *   which is sent as soon as a running apply of the stream ends.
 * - A group holds at most `maxEvents` events and about `maxBytes` bytes (its
 *   requests' stored `Idempotency-Key` replies counted, see {@linkcode approximateRequestBytes}); a
 *   request that would pass either sends the open group at once and opens the
 *   next one (a request larger than the bound goes alone, never split). So
 *   large batches keep going out side by side, as without grouping.
 * - Only requests that agree on every batch-level field (lateness, idle,
 *   dedupe TTL, counters, which events go to the result log) are merged; a
 *   request that differs starts a new group the same way.
 *
 * What each request keeps: its own events in order and its own
 * {@linkcode BatchRequest} (idempotency claim, rate limit), so the store
 * applies, replays or refuses it on its own (the same key twice in one group
 * is `in_flight`); its own slice of the result (outcomes, request result),
 * and its promise settles only once the apply that holds it has returned. A
 * failed or timed-out apply (`StoreUnavailableError`) rejects every
 * request of the group with the same error, whose `outcome` says whether it
 * may have applied. An apply the store refused having written nothing
 * ({@linkcode StoreRefusedError}: Redis found a key of one request's
 * overwritten with another type) is made again one request at a time, so
 * that only the requests it concerns fail. Any other error fails the whole
 * group: a script that failed for another reason may have written part of
 * it, and applying that part again would count it twice.
 *
 * A group applies its requests in the order they were received (their
 * `nowMs`), at the earliest receive time: concurrent requests have no order
 * of their own, and this way no event that took its time from its request's
 * clock is measured against a watermark raised past it by a later clock
 * (`idle`) or a later-received event. Dedupe buckets, pane expiry, log times
 * and stored replies move by at most the wait in the queue.
 *
 * @module
 */
import {
  type ApplyResult,
  type BatchEvent,
  type BatchRequest,
  batchRequests,
  type BatchUpdates,
  type Store,
  type StoreBatch,
  StoreRefusedError,
} from "../store/types.ts";
import { keepTraceContext } from "../telemetry/mod.ts";

/** Options for {@linkcode GroupCommitter}. */
export interface GroupCommitOptions {
  /** Most events one grouped apply carries (a larger request goes alone). @default {1000} */
  maxEvents?: number;
  /**
   * Most bytes one grouped apply carries, as {@linkcode approximateEventBytes},
   * {@linkcode approximateUpdateBytes} and {@linkcode approximateRequestBytes} count them (a
   * larger request goes alone). @default {1048576}
   */
  maxBytes?: number;
}

/** Default of {@linkcode GroupCommitOptions.maxEvents}: the most events one request may send. */
export const DEFAULT_GROUP_MAX_EVENTS = 1_000;

/** Default of {@linkcode GroupCommitOptions.maxBytes}: the largest body one request may send. */
export const DEFAULT_GROUP_MAX_BYTES = 1_048_576;

/** What the committer counts, for tests, benchmarks and telemetry. */
export interface GroupCommitStats {
  /** Batches handed to {@linkcode GroupCommitter.applyBatch}. */
  submitted: number;
  /** Store applies made for them. */
  applies: number;
  /** Batches waiting for a running apply of their stream to end. */
  waiting: number;
}

/**
 * About how many bytes an event adds to a store call besides its counter
 * updates ({@linkcode approximateUpdateBytes}): its id and its logged payload,
 * with a little for the framing.
 */
export function approximateEventBytes(event: BatchEvent): number {
  return 16 + (event.id?.length ?? 0) + (event.payload?.length ?? 0);
}

/**
 * About how many bytes a request adds to a store call besides its events: its counts, its
 * `Idempotency-Key` claim (the hashes and the reply to store, which lists rejected events) and
 * its rate limits. A request of no events (a filter dropped them all) still adds these.
 */
export function approximateRequestBytes(request: BatchRequest): number {
  let bytes = 24;
  const claim = request.idempotency;
  if (claim !== undefined) {
    bytes += 48 + claim.keyHash.length + claim.bodyHash.length + claim.reply.length;
  }
  for (const limit of request.rateLimits ?? []) bytes += 40 + limit.key.length;
  return bytes;
}

/** About how many bytes a batch's counter updates add to a store call. */
export function approximateUpdateBytes(updates: BatchUpdates | undefined): number {
  let bytes = 0;
  if (updates === undefined) return bytes;
  for (let at = 0; at < updates.groups.length; at++) {
    const group = updates.groups[at];
    if (group === undefined) continue;
    const value = updates.values[at];
    bytes += 24 + group.length + (typeof value === "string" ? value.length : 0);
  }
  return bytes;
}

interface Member {
  batch: StoreBatch;
  requests: BatchRequest[];
  resolve(result: ApplyResult): void;
  reject(error: unknown): void;
  /** Runs work in the trace context the batch was handed over in. */
  inContext<T>(run: () => T): T;
}

interface Group {
  members: Member[];
  events: number;
  bytes: number;
}

interface StreamQueue {
  /** Applies of this stream the store is running. */
  running: number;
  /** Requests waiting for one of them to end. */
  open: Group | undefined;
}

/** Whether two batches of one stream may share an apply: every batch-level field agrees. */
function sameShape(a: StoreBatch, b: StoreBatch): boolean {
  return a.latenessMs === b.latenessMs &&
    (a.idleMs ?? null) === (b.idleMs ?? null) &&
    a.dedupeTtlMs === b.dedupeTtlMs &&
    // The same compiled definition, not equal counters: a stream deleted and created again with
    // the same counters is another incarnation, stored under another generation
    // (config/registry.ts tells them apart by this array), so they must not share an apply.
    a.counters === b.counters &&
    Boolean(a.log?.processed) === Boolean(b.log?.processed) &&
    Boolean(a.log?.late) === Boolean(b.log?.late) &&
    Boolean(a.log?.ifWanted) === Boolean(b.log?.ifWanted);
}

/**
 * Coalesces concurrent applies of the same stream into one store apply (see
 * the module doc). It has the store's `applyBatch` contract: each caller gets
 * an {@linkcode ApplyResult} for its own batch only, and the same errors.
 *
 * @example
 * ```ts
 * import { GroupCommitter } from "./group_commit.ts";
 * import { MemoryStore } from "../store/mod.ts";
 *
 * const committer = new GroupCommitter(new MemoryStore());
 * const batch = {
 *   stream: "orders", nowMs: Date.now(), latenessMs: 30_000, dedupeTtlMs: 0, counters: [],
 *   events: [{ timeMs: Date.now(), updates: [] }],
 * };
 * // The first goes at once; the two sent while it runs share the next apply.
 * const results = await Promise.all([1, 2, 3].map(() => committer.applyBatch(batch)));
 * console.log(results.map((result) => result.outcomes)); // [["applied"], ["applied"], ["applied"]]
 * console.log(committer.stats); // { submitted: 3, applies: 2, waiting: 0 }
 * ```
 */
export class GroupCommitter implements Pick<Store, "applyBatch"> {
  #store: Pick<Store, "applyBatch">;
  #maxEvents: number;
  #maxBytes: number;
  #queues = new Map<string, StreamQueue>();
  #submitted = 0;
  #applies = 0;

  constructor(store: Pick<Store, "applyBatch">, options: GroupCommitOptions = {}) {
    this.#store = store;
    this.#maxEvents = options.maxEvents ?? DEFAULT_GROUP_MAX_EVENTS;
    this.#maxBytes = options.maxBytes ?? DEFAULT_GROUP_MAX_BYTES;
    if (!Number.isSafeInteger(this.#maxEvents) || this.#maxEvents < 1) {
      throw new RangeError(`maxEvents must be a positive integer, got ${this.#maxEvents}`);
    }
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes < 1) {
      throw new RangeError(`maxBytes must be a positive integer, got ${this.#maxBytes}`);
    }
  }

  /** Counts so far; `waiting` is the number of batches queued right now. */
  get stats(): GroupCommitStats {
    let waiting = 0;
    for (const queue of this.#queues.values()) waiting += queue.open?.members.length ?? 0;
    return { submitted: this.#submitted, applies: this.#applies, waiting };
  }

  /**
   * Applies `batch` as part of the next store apply of its stream, and
   * resolves with its own part of the result once that apply returned.
   */
  applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    let requests: BatchRequest[];
    try {
      requests = batchRequests(batch);
    } catch (error) {
      return Promise.reject(error);
    }
    this.#submitted += 1;
    return new Promise((resolve, reject) => {
      // Its apply may start from another request's context (see #send): run it in its own.
      const member: Member = { batch, requests, resolve, reject, inContext: keepTraceContext() };
      let queue = this.#queues.get(batch.stream);
      if (!queue) {
        queue = { running: 0, open: undefined };
        this.#queues.set(batch.stream, queue);
      }
      const events = batch.events.length;
      const bytes = batch.events.reduce((sum, event) => sum + approximateEventBytes(event), 0) +
        approximateUpdateBytes(batch.updates) +
        requests.reduce((sum, request) => sum + approximateRequestBytes(request), 0);
      const open = queue.open;
      if (
        open && sameShape(open.members[0].batch, batch) &&
        open.events + events <= this.#maxEvents && open.bytes + bytes <= this.#maxBytes
      ) {
        open.members.push(member);
        open.events += events;
        open.bytes += bytes;
        return;
      }
      // Full, or of another shape: it goes now rather than wait behind this one.
      if (open) {
        queue.open = undefined;
        this.#send(batch.stream, queue, open);
      }
      const group: Group = { members: [member], events, bytes };
      if (queue.running === 0) this.#send(batch.stream, queue, group);
      else queue.open = group;
    });
  }

  #send(stream: string, queue: StreamQueue, group: Group): void {
    queue.running += 1;
    this.#applies += 1;
    this.#run(group).finally(() => {
      queue.running -= 1;
      const next = queue.open;
      if (next) {
        queue.open = undefined;
        this.#send(stream, queue, next);
      } else if (queue.running === 0) {
        this.#queues.delete(stream);
      }
    });
  }

  async #run(group: Group): Promise<void> {
    // Concurrent requests have no order of their own (one socket's frames
    // never share a group): apply them in receive order, so that none is
    // measured against a watermark a later-received event raised.
    const members = group.members.sort((a, b) => a.batch.nowMs - b.batch.nowMs);
    let result: ApplyResult;
    try {
      try {
        // In the first member's trace: its ingest span is the apply span's parent, the others
        // are linked (telemetry/tracing.ts).
        result = await members[0].inContext(() => this.#store.applyBatch(merge(members)));
      } catch (error) {
        if (members.length === 1 || !(error instanceof StoreRefusedError)) throw error;
        // Refused, nothing written: each request alone, in the same order.
        for (const member of members) {
          await member.inContext(() => this.#store.applyBatch(member.batch))
            .then(member.resolve, member.reject);
        }
        return;
      }
      const requests = members.reduce((sum, member) => sum + member.requests.length, 0);
      if (result.requests.length !== requests || result.outcomes.length !== group.events) {
        throw new Error(
          `Store answered ${result.requests.length} requests and ${result.outcomes.length} outcomes for ${requests} requests and ${group.events} events`,
        );
      }
    } catch (error) {
      for (const member of members) member.reject(error);
      return;
    }
    let event = 0;
    let request = 0;
    for (const member of members) {
      const events = member.batch.events.length;
      member.resolve({
        outcomes: result.outcomes.slice(event, event + events),
        requests: result.requests.slice(request, request + member.requests.length),
        watermark: result.watermark,
        demand: result.demand,
      });
      event += events;
      request += member.requests.length;
    }
  }
}

/**
 * One batch of a group's members (sorted by receive time): their events and
 * requests in that order, at the earliest receive time.
 */
function merge(members: Member[]): StoreBatch {
  const first = members[0].batch;
  if (members.length === 1) return first;
  const events: BatchEvent[] = [];
  const requests: BatchRequest[] = [];
  // The members share their counters (sameShape): their update columns follow one another.
  const updates: BatchUpdates = { panes: [], groups: [], values: [] };
  const width = first.counters.length;
  for (const member of members) {
    const columns = member.batch.updates;
    const size = member.batch.events.length * width;
    for (let at = 0; at < size; at++) {
      updates.panes.push(columns?.panes[at] ?? 0);
      updates.groups.push(columns?.groups[at]);
      updates.values.push(columns?.values[at]);
    }
    for (const event of member.batch.events) events.push(event);
    for (const request of member.requests) requests.push(request);
  }
  return { ...first, events, updates, requests, filtered: undefined };
}
