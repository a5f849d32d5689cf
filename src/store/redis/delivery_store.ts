/**
 * The Redis delivery store: endpoints, deliveries and queues shared by every
 * instance through `@upstash/redis`. Every operation is one EVALSHA of an
 * atomic Lua script (see `_delivery_scripts.ts` for the key layout).
 *
 * @module
 */
import {
  asArray,
  fromJson,
  REDIS_CALL_TIMEOUT_MS,
  RedisCalls,
  type RedisScriptClient,
  type ScriptOptions,
} from "./call.ts";
import {
  ACQUIRE_LEASE_SCRIPT,
  BEGIN_PAGE_SCRIPT,
  CLAIM_SCRIPT,
  COMMIT_PAGE_SCRIPT,
  COUNT_SCRIPT,
  CREATE_SCRIPT,
  CURSOR_SCRIPT,
  DELETE_ENDPOINT_SCRIPT,
  GET_DELIVERY_SCRIPT,
  GET_ENDPOINTS_SCRIPT,
  LIST_ATTEMPTS_SCRIPT,
  LIST_DELIVERIES_SCRIPT,
  LIST_ENDPOINTS_SCRIPT,
  OPEN_DISPATCH_SCRIPT,
  PAGE_ENDPOINTS_SCRIPT,
  PUT_ENDPOINT_SCRIPT,
  RECORD_SCRIPT,
  RELEASE_CLAIM_SCRIPT,
  RELEASE_LEASE_SCRIPT,
  REPLAY_SCRIPT,
  RETRY_SCRIPT,
  STORE_PAGE_SCRIPT,
} from "./_delivery_scripts.ts";
import {
  type Attempt,
  type AttemptRecord,
  type Claim,
  type ClaimOptions,
  type ClaimRelease,
  type CursorList,
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
  MAX_ATTEMPTS_LOGGED,
  type NewDelivery,
  type OpenDispatchOptions,
  type Page,
  type PageOptions,
  type PutEndpointOptions,
  type RetryResult,
  type StoredPage,
  type StoredPageResult,
  type WebhookEventType,
} from "../deliveries.ts";
import { checkedMax, DEFAULT_WEBHOOKS_MAX, StoredLimitError } from "../limits.ts";
import { StoreUnavailableError } from "../types.ts";

/** How long (ms) a lease call whose reply was lost waits for the lease's give-back. */
const GIVE_BACK_WAIT_MS = 1_000;

/** The part of the `@upstash/redis` client the delivery store uses. */
export type { RedisScriptClient };

/** Options for {@linkcode RedisDeliveryStore}. */
export interface RedisDeliveryStoreOptions {
  /** Key prefix, shared with the stream store. @default {"es"} */
  prefix?: string;
  /** A call that takes longer fails with `StoreUnavailableError`. @default {5000} */
  timeoutMs?: number;
  /** How long (ms) deliveries and attempt logs are kept after their last change. @default {7 days} */
  retentionMs?: number;
  /** How long (ms) a dispatch cursor lives after its last move. @default {30 days} */
  cursorTtlMs?: number;
  /** Clock (ms) for trimming the per-endpoint delivery index. @default {Date.now} */
  now?: () => number;
  /**
   * Most index entries one page of deliveries looks at; a page with a status
   * filter may then come back short, its `nextCursor` going on from there.
   * @default {5000}
   */
  listScan?: number;
  /** Most endpoints held; a creation past it throws `StoredLimitError`. @default {1000} */
  maxEndpoints?: number;
  /**
   * Most index entries (deliveries) one call of a replay looks at: a replay goes over an
   * endpoint's deliveries in calls of this many, each atomic, so that none holds Redis for the
   * whole history. @default {1000}
   */
  replayScan?: number;
}

type Hash = Record<string, string>;

function optionalNumber(text: string | undefined): number | null {
  return text === undefined || text === "" ? null : Number(text);
}

function toDelivery(hash: Hash): Delivery {
  return {
    id: hash.id,
    messageId: hash.mid,
    endpointId: hash.ep,
    stream: hash.stream === "" ? null : hash.stream,
    eventType: hash.type as WebhookEventType,
    payload: hash.payload,
    createdMs: Number(hash.created),
    status: hash.status as DeliveryStatus,
    attempts: Number(hash.attempts),
    tries: Number(hash.tries),
    interruptions: Number(hash.intr ?? 0),
    firstAttemptMs: optionalNumber(hash.first),
    nextAttemptMs: optionalNumber(hash.next),
    lastStatus: optionalNumber(hash.lst),
    lastError: hash.lerr ? hash.lerr : null,
    updatedMs: Number(hash.updated),
  };
}

/** The position a script reads after, from a cursor of `list` (null: from the start). */
function afterArg(list: CursorList, cursor: string | null | undefined): CursorPosition | false {
  if (cursor === undefined || cursor === null) return false;
  const { createdMs, id } = decodeCursor(list, cursor);
  return { createdMs, id };
}

/** The cursor of a script's `next` (`[score, id]` or false). */
function nextCursor(list: CursorList, next: [string | number, string] | false): string | null {
  return next === false ? null : encodeCursor(list, { createdMs: Number(next[0]), id: next[1] });
}

function toEndpoint(json: unknown, state: unknown): Endpoint {
  const config = fromJson<EndpointConfig>(json);
  const fields = (Array.isArray(state) ? {} : state ?? {}) as Hash;
  // Disabled by an attempt since the config was written: that is its last change.
  const disabledMs = optionalNumber(fields.upd);
  return {
    ...config,
    updatedMs: disabledMs === null ? config.updatedMs : Math.max(config.updatedMs, disabledMs),
    disabled: fields.dis === "1",
    disabledReason: fields.why ?? null,
    failingSinceMs: optionalNumber(fields.fail),
  };
}

/** The claims of a script's reply (see `CLAIM_SCRIPT`). */
function toClaims(rows: unknown): Claim[] {
  return asArray<[Hash, unknown, unknown, string]>(rows).map(([hash, json, state, token]) => ({
    delivery: toDelivery(hash),
    endpoint: toEndpoint(json, state),
    token,
  }));
}

/** Deliveries as the scripts take them (see `CREATE_SCRIPT`). */
function deliveryItems(deliveries: readonly NewDelivery[]): unknown[] {
  return deliveries.map((d) => [
    d.id,
    d.messageId,
    d.endpointId,
    d.stream ?? "",
    d.eventType,
    d.payload,
    d.createdMs,
  ]);
}

/** A {@linkcode DeliveryStore} in Redis, shared by every instance that uses the same prefix. */
export class RedisDeliveryStore implements DeliveryStore {
  readonly kind = "redis";
  #redis: RedisScriptClient;
  #prefix: string;
  #retentionMs: number;
  #cursorTtlMs: number;
  #now: () => number;
  #listScan: number;
  #replayScan: number;
  #calls: RedisCalls;
  #maxEndpoints: number;

  constructor(redis: RedisScriptClient, options: RedisDeliveryStoreOptions = {}) {
    this.#maxEndpoints = checkedMax("maxEndpoints", options.maxEndpoints ?? DEFAULT_WEBHOOKS_MAX);
    this.#redis = redis;
    this.#prefix = `${options.prefix ?? "es"}:{wh}:`;
    this.#calls = new RedisCalls(redis, options.timeoutMs ?? REDIS_CALL_TIMEOUT_MS);
    this.#retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
    this.#cursorTtlMs = options.cursorTtlMs ?? 30 * 86_400_000;
    this.#now = options.now ?? Date.now;
    this.#listScan = options.listScan ?? 5_000;
    this.#replayScan = checkedMax("replayScan", options.replayScan ?? 1_000);
  }

  /** The hash-tagged prefix of every key: `es:{wh}:`. */
  get keyPrefix(): string {
    return this.#prefix;
  }

  #run(what: string, script: string, arg: unknown, options?: ScriptOptions): Promise<unknown> {
    return this.#calls.call(what, () => this.#calls.script(script, [this.#prefix], [arg], options));
  }

  async putEndpoint(config: EndpointConfig, options: PutEndpointOptions): Promise<Endpoint | null> {
    const state: Record<string, unknown> = {};
    if (options.state?.disabled !== undefined) state.disabled = options.state.disabled;
    if (options.state?.disabledReason !== undefined) state.reason = options.state.disabledReason;
    if (options.state?.failingSinceMs !== undefined) state.failing = options.state.failingSinceMs;
    const json = JSON.stringify(config);
    const reply = await this.#run("putEndpoint", PUT_ENDPOINT_SCRIPT, {
      id: config.id,
      json,
      expect: options.expectVersion ?? -1,
      created: config.createdMs,
      rate: config.rateLimit ?? false,
      state,
      disabledIs: options.expectDisabled,
      tk: crypto.randomUUID(),
      max: this.#maxEndpoints,
    });
    // A number (as text from some clients) when nothing was written, else the state as written.
    const written = fromJson<unknown>(reply);
    if (typeof written === "number") {
      if (written < 0) throw new StoredLimitError("webhooks", this.#maxEndpoints, -written);
      return null;
    }
    return toEndpoint(json, written);
  }

  async #endpoints(ids: string[]): Promise<Endpoint[]> {
    const rows = asArray<[unknown, unknown]>(
      fromJson(await this.#run("getEndpoints", GET_ENDPOINTS_SCRIPT, { ids })),
    );
    return rows.map(([json, state]) => toEndpoint(json, state));
  }

  async getEndpoint(id: string): Promise<Endpoint | null> {
    return (await this.#endpoints([id]))[0] ?? null;
  }

  async listEndpoints(): Promise<Endpoint[]> {
    return (await this.listEndpointsVersioned()).endpoints;
  }

  async listEndpointsVersioned(): Promise<{ endpoints: Endpoint[]; version: string }> {
    const reply = fromJson<{ rows: unknown; version: unknown }>(
      await this.#run("listEndpoints", LIST_ENDPOINTS_SCRIPT, {}),
    );
    return {
      // An empty Lua table comes back as {}, not [].
      endpoints: asArray<[unknown, unknown]>(reply.rows).map(([json, state]) =>
        toEndpoint(json, state)
      ),
      version: String(reply.version),
    };
  }

  async pageEndpoints(options: PageOptions): Promise<Page<Endpoint>> {
    const after = afterArg("endpoints", options.cursor);
    const reply = fromJson<{ rows: Array<[unknown, unknown]>; next: [string, string] | false }>(
      await this.#run("pageEndpoints", PAGE_ENDPOINTS_SCRIPT, {
        limit: options.limit,
        after: after && { score: after.createdMs, id: after.id },
      }),
    );
    return {
      items: asArray<[unknown, unknown]>(reply.rows).map(([json, state]) =>
        toEndpoint(json, state)
      ),
      nextCursor: nextCursor("endpoints", reply.next),
    };
  }

  async deleteEndpoint(id: string, options: DeleteEndpointOptions = {}): Promise<boolean> {
    const tk = crypto.randomUUID();
    const expect = options.expectVersion ?? false;
    return Number(await this.#run("deleteEndpoint", DELETE_ENDPOINT_SCRIPT, { id, tk, expect })) ===
      1;
  }

  async dispatchState(stream: string): Promise<DispatchState> {
    const [cursor, plan] = fromJson<[string, string]>(
      await this.#run("dispatchState", CURSOR_SCRIPT, { stream }),
    );
    return { cursor: cursor === "" ? null : cursor, planEnd: plan === "" ? null : plan };
  }

  async beginPage(stream: string, cursor: string | null, end: string): Promise<DispatchState> {
    const [current, plan] = fromJson<[string, string]>(
      await this.#run("beginPage", BEGIN_PAGE_SCRIPT, {
        stream,
        cursor: cursor ?? "",
        last: end,
        ttl: this.#cursorTtlMs,
      }),
    );
    return { cursor: current === "" ? null : current, planEnd: plan === "" ? null : plan };
  }

  async commitPage(stream: string, cursor: string | null, end: string): Promise<boolean> {
    const reply = await this.#run("commitPage", COMMIT_PAGE_SCRIPT, {
      stream,
      cursor: cursor ?? "",
      last: end,
      ttl: this.#cursorTtlMs,
    });
    return Number(reply) === 1;
  }

  async acquireLease(name: string, ttlMs: number): Promise<string | null> {
    const token = crypto.randomUUID();
    const reply = await this.#leasing(
      { name, token, ttlMs },
      () => this.#run("acquireLease", ACQUIRE_LEASE_SCRIPT, { name, token, ttl: ttlMs }),
    );
    return Number(reply) === 1 ? token : null;
  }

  /**
   * Runs a call that may take the lease `name` under `token` for `ttlMs`. When its reply is lost
   * or late, the call may have run, or may run yet (still on its way to Redis): the lease is then
   * held by a token nobody has, and whoever needs it would wait out its life. So it is given back
   * (it is ours only if taken), as far as Redis answers now; given back before that call ran, the
   * token is kept as given back for the lease's life, so the call takes nothing when it runs.
   */
  async #leasing<T>(
    lease: { name: string; token: string; ttlMs: number },
    run: () => Promise<T>,
  ): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof StoreUnavailableError && error.outcome === "unknown") {
        // Waited for a while only: a Redis that did not answer may not answer this either, and
        // the caller need not wait out a second deadline (the release goes on meanwhile).
        let timer: ReturnType<typeof setTimeout> | undefined;
        const { name, token, ttlMs } = lease;
        await Promise.race([
          this.#run("releaseLease", RELEASE_LEASE_SCRIPT, { name, token, gone: ttlMs })
            .catch(() => {}),
          new Promise((resolve) => timer = setTimeout(resolve, GIVE_BACK_WAIT_MS)),
        ]);
        clearTimeout(timer);
      }
      throw error;
    }
  }

  async releaseLease(name: string, token: string): Promise<void> {
    await this.#run("releaseLease", RELEASE_LEASE_SCRIPT, { name, token, gone: false });
  }

  async openDispatch(stream: string, options: OpenDispatchOptions): Promise<DispatchOpening> {
    const token = crypto.randomUUID();
    const reply = await this.#leasing(
      { name: options.lease, token, ttlMs: options.leaseMs },
      () =>
        this.#run("openDispatch", OPEN_DISPATCH_SCRIPT, {
          stream,
          lease: options.lease,
          token,
          ttl: options.leaseMs,
          list: options.listEndpoints ?? false,
          unless: options.unlessVersion ?? false,
        }),
    );
    const [leased, cursor, plan, rows, version] = fromJson<
      [number, string, string, unknown, unknown]
    >(reply);
    return {
      // An empty Lua table comes back as {}, not [].
      endpoints: rows === false
        ? null
        : asArray<[unknown, unknown]>(rows).map(([json, state]) => toEndpoint(json, state)),
      lease: leased === 1 ? token : null,
      state: { cursor: cursor === "" ? null : cursor, planEnd: plan === "" ? null : plan },
      endpointsVersion: String(version),
    };
  }

  async storePage(
    stream: string,
    page: StoredPage,
    options: DeliveryCallOptions = {},
  ): Promise<StoredPageResult | null> {
    const { claim } = page;
    const reply = fromJson<{ created: number; claims: unknown }>(
      await this.#run("storePage", STORE_PAGE_SCRIPT, {
        stream,
        cursor: page.cursor ?? "",
        last: page.end,
        ttl: this.#cursorTtlMs,
        now: this.#now(),
        retention: this.#retentionMs,
        items: deliveryItems(page.deliveries),
        lease: page.releaseLease ?? false,
        claim: claim ? this.#claimArgs(claim) : false,
        version: page.endpointsVersion ?? false,
        tk: crypto.randomUUID(),
      }, options),
    );
    if (reply.created === -1) return null;
    if (reply.created === -2) return { created: 0, claims: [], endpointsChanged: true };
    return { created: reply.created, claims: toClaims(reply.claims) };
  }

  #claimArgs(options: ClaimOptions): Record<string, unknown> {
    return {
      now: options.nowMs,
      limit: options.limit,
      lease: options.leaseMs,
      conc: options.maxConcurrency,
      token: crypto.randomUUID(),
      slow: options.slow && options.slow.endpointIds.length > 0
        ? { ids: options.slow.endpointIds, limit: options.slow.limit }
        : false,
    };
  }

  async createDeliveries(
    deliveries: readonly NewDelivery[],
    options: DeliveryCallOptions = {},
  ): Promise<number> {
    if (deliveries.length === 0) return 0;
    const reply = await this.#run("createDeliveries", CREATE_SCRIPT, {
      now: this.#now(),
      retention: this.#retentionMs,
      onlyStored: options.onlyToStoredEndpoints ?? false,
      items: deliveryItems(deliveries),
    }, options);
    return Number(reply);
  }

  async getDelivery(id: string): Promise<Delivery | null> {
    const hash = fromJson<Hash | unknown[]>(
      await this.#run("getDelivery", GET_DELIVERY_SCRIPT, { id }),
    );
    if (Array.isArray(hash) || !hash.id) return null;
    return toDelivery(hash);
  }

  async listDeliveries(
    endpointId: string,
    options: PageOptions & { status?: DeliveryStatus },
  ): Promise<Page<Delivery>> {
    const after = afterArg("deliveries", options.cursor);
    const reply = fromJson<{ rows: Hash[]; next: [string, string] | false }>(
      await this.#run("listDeliveries", LIST_DELIVERIES_SCRIPT, {
        ep: endpointId,
        limit: options.limit,
        status: options.status ?? false,
        scan: Math.max(this.#listScan, options.limit + 1),
        after: after && { score: after.createdMs, id: after.id },
      }),
    );
    return {
      items: asArray<Hash>(reply.rows).map(toDelivery),
      nextCursor: nextCursor("deliveries", reply.next),
    };
  }

  async listAttempts(deliveryId: string): Promise<Attempt[]> {
    const rows = asArray<unknown>(
      await this.#run("listAttempts", LIST_ATTEMPTS_SCRIPT, { id: deliveryId }),
    );
    return rows.map((row) => fromJson<Attempt>(row));
  }

  async claimDue(options: ClaimOptions): Promise<Claim[]> {
    return toClaims(
      fromJson(
        await this.#run("claimDue", CLAIM_SCRIPT, {
          ...this.#claimArgs(options),
          retention: this.#retentionMs,
        }),
      ),
    );
  }

  async recordAttempt(record: AttemptRecord): Promise<{ recorded: boolean; disabled: boolean }> {
    const { attempt } = record;
    const [recorded, disabled] = fromJson<[number, number]>(
      await this.#run("recordAttempt", RECORD_SCRIPT, {
        id: record.deliveryId,
        ep: record.endpointId,
        token: record.token,
        now: record.nowMs,
        outcome: attempt.outcome,
        next: attempt.nextAttemptMs ?? false,
        status: attempt.status ?? false,
        err: attempt.error ?? false,
        attempt: JSON.stringify(attempt),
        at: attempt.timeMs,
        retention: this.#retentionMs,
        maxLog: MAX_ATTEMPTS_LOGGED,
        tk: crypto.randomUUID(),
        disable: record.disableReason ?? false,
        disableAfter: record.disableAfterMs,
        failingReason: record.failingReason,
      }),
    );
    return { recorded: recorded === 1, disabled: disabled === 1 };
  }

  async releaseClaim(release: ClaimRelease): Promise<boolean> {
    const { cutOff } = release;
    const reply = await this.#run("releaseClaim", RELEASE_CLAIM_SCRIPT, {
      id: release.deliveryId,
      ep: release.endpointId,
      token: release.token,
      now: this.#now(),
      tk: crypto.randomUUID(),
      cut: cutOff
        ? {
          attempt: JSON.stringify(cutOff.attempt),
          at: cutOff.attempt.timeMs,
          next: cutOff.attempt.nextAttemptMs ?? false,
          usesTry: cutOff.usesTry === true,
          now: cutOff.nowMs,
          retention: this.#retentionMs,
          maxLog: MAX_ATTEMPTS_LOGGED,
        }
        : false,
    });
    return Number(reply) === 1;
  }

  async retry(deliveryId: string, nowMs: number): Promise<RetryResult> {
    const reply = await this.#run("retry", RETRY_SCRIPT, {
      id: deliveryId,
      now: nowMs,
      retention: this.#retentionMs,
      tk: crypto.randomUUID(),
    });
    // The client may have parsed the JSON string reply already.
    const text = String(reply);
    return (text.startsWith('"') ? JSON.parse(text) : text) as RetryResult;
  }

  async replay(endpointId: string, options: { sinceMs: number; nowMs: number }): Promise<number> {
    // A page of the index a call, each atomic, oldest first: one script over a long history would
    // hold Redis for all of it. Each goes on after the last entry the one before looked at, so
    // every delivery is looked at once.
    let count = 0;
    let after: { score: number; id: string } | false = false;
    do {
      const reply: { count: number; next: [string | number, string] | false } = fromJson(
        await this.#run("replay", REPLAY_SCRIPT, {
          ep: endpointId,
          since: options.sinceMs,
          now: options.nowMs,
          retention: this.#retentionMs,
          scan: this.#replayScan,
          after,
          tk: crypto.randomUUID(),
        }),
      );
      count += Number(reply.count);
      after = reply.next === false ? false : { score: Number(reply.next[0]), id: reply.next[1] };
    } while (after !== false);
    return count;
  }

  async countDeliveries(): Promise<DeliveryCounts> {
    const [pending, dead] = fromJson<[number, number]>(
      await this.#run("countDeliveries", COUNT_SCRIPT, { now: this.#now() }),
    );
    return { pending, dead };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
