/**
 * Storage of the webhook service: endpoints, deliveries with their attempt
 * logs, the per-endpoint due queues and the per-stream dispatch cursors.
 * Two implementations (`memory/delivery_store.ts`, `redis/delivery_store.ts`)
 * pass one contract suite; nothing outside them knows key names.
 *
 * @module
 */

/** Every kind of delivery a webhook endpoint may ask for. */
export type WebhookEventType =
  | "window.closed"
  | "alert.fired"
  | "event.processed"
  | "event.late"
  | "webhook.test";

/** The event types an endpoint may subscribe to, in documentation order. */
export const WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = [
  "window.closed",
  "alert.fired",
  "event.processed",
  "event.late",
  "webhook.test",
];

/** The event types an endpoint's `batch` may group, in documentation order. */
export const BATCHABLE_EVENT_TYPES = ["window.closed", "alert.fired", "event.processed"] as const;

/** An event type an endpoint's `batch` may group. */
export type BatchableEventType = typeof BATCHABLE_EVENT_TYPES[number];

/** How an endpoint's deliveries are grouped. */
export interface EndpointBatch {
  /** Most results in one delivery. */
  maxEvents: number;
  /** Longest wait (ms) for a batch of `event.processed` to fill. */
  maxWaitMs: number;
  /**
   * The types grouped; absent (an endpoint stored before types other than `event.processed`
   * could be grouped) for `event.processed` alone. See {@linkcode batchedTypes}.
   */
  eventTypes?: BatchableEventType[];
}

/** The types an endpoint's `batch` groups (none without one). */
export function batchedTypes(batch: EndpointBatch | null): readonly BatchableEventType[] {
  if (batch === null) return [];
  return batch.eventTypes ?? ["event.processed"];
}

/** A signing secret of an endpoint. */
export interface EndpointSecret {
  /** `whsec_` + base64 of the key bytes. */
  secret: string;
  /** When (ms) it stops signing; null for the current secret. */
  expiresMs: number | null;
}

/** What an endpoint's owner configured; written only through the API. */
export interface EndpointConfig {
  /** `ep_…`, generated. */
  id: string;
  /** Where deliveries are POSTed. */
  url: string;
  /** Free text. */
  description: string | null;
  /** Types delivered to it. */
  eventTypes: WebhookEventType[];
  /** Streams it hears from; null for all. */
  streams: string[] | null;
  /** CEL over `payload` (and `data`); null for none. */
  filter: string | null;
  /** Extra request headers. */
  headers: Record<string, string>;
  /** Most deliveries per second; null for no limit. */
  rateLimit: number | null;
  /** Grouping of results into deliveries; null sends one result per delivery. */
  batch: EndpointBatch | null;
  /** Secrets that sign, the current one first. */
  secrets: EndpointSecret[];
  /** Per stream: the log position at registration; older entries are not delivered. */
  startAfter: Record<string, string | null>;
  /** Creation time (ms). */
  createdMs: number;
  /** Last change (ms). */
  updatedMs: number;
  /** Incremented by every change; updates compare it. */
  version: number;
}

/** What the service learns about an endpoint while delivering. */
export interface EndpointState {
  /** No deliveries are made while true. */
  disabled: boolean;
  /** Why it was disabled (410, failing for too long, by its owner). */
  disabledReason: string | null;
  /** Since when (ms) every attempt failed; null after a success. */
  failingSinceMs: number | null;
}

/** An endpoint with its state. */
export type Endpoint = EndpointConfig & EndpointState;

/** Where a delivery is: waiting for a first try, for a retry, done, or given up. */
export type DeliveryStatus = "pending" | "retrying" | "succeeded" | "dead";

/** A delivery to create: one message for one endpoint. */
export interface NewDelivery {
  /** `<messageId>.<endpointId>`: deterministic, so creating it twice is harmless. */
  id: string;
  /** The `webhook-id`, the same on every attempt. */
  messageId: string;
  /** The endpoint. */
  endpointId: string;
  /** The stream it comes from; null for `webhook.test`. */
  stream: string | null;
  /** Payload type. */
  eventType: WebhookEventType;
  /** The JSON body. */
  payload: string;
  /** Creation time (ms); the first attempt is due then. */
  createdMs: number;
}

/** A delivery and where it is. */
export interface Delivery extends NewDelivery {
  /** Where it is. */
  status: DeliveryStatus;
  /** Attempts made, over every replay (`interrupted` ones included). */
  attempts: number;
  /**
   * Attempts made since it was created or last replayed that used a try (all but the first
   * {@linkcode FREE_INTERRUPTIONS} `interrupted` ones in a row); picks the retry delay.
   */
  tries: number;
  /**
   * `interrupted` attempts in a row: since the last attempt that was not cut off, or since it
   * was created or last replayed. Past {@linkcode FREE_INTERRUPTIONS}, each uses a try.
   */
  interruptions: number;
  /**
   * When (ms) its first attempt started, over every replay; null before one (and, on Redis, for
   * a delivery first attempted before this was recorded). Kept when that attempt leaves the
   * attempt log (which holds the newest {@linkcode MAX_ATTEMPTS_LOGGED}).
   */
  firstAttemptMs: number | null;
  /** When (ms) the next attempt is due; null when none is planned. */
  nextAttemptMs: number | null;
  /**
   * HTTP status of the last attempt that was not cut off (`interrupted` ones are in the attempt
   * log only); null before one or when it got no response.
   */
  lastStatus: number | null;
  /** Why the last attempt that was not cut off failed; null when it succeeded or before one. */
  lastError: string | null;
  /** Last change (ms). */
  updatedMs: number;
}

/** One attempt of a delivery, as the attempt log shows it. */
export interface Attempt {
  /** 1 for the first attempt, counting over replays. */
  attempt: number;
  /** When it started (ms). */
  timeMs: number;
  /** How long it took (ms). */
  durationMs: number;
  /** HTTP status; null without a response. */
  status: number | null;
  /** Why it failed (network, timeout, refused address, redirect…); null on success. */
  error: string | null;
  /** Start of the response body, at most 2 KB. */
  responseExcerpt: string;
  /**
   * Where the delivery went: `succeeded`, `retrying` (a retry is planned), `dead` (none is), or
   * `interrupted`: its sender stopped before the receiver answered (which may have got it) and
   * gave the claim back (see {@linkcode DeliveryStore.releaseClaim}). The first
   * {@linkcode FREE_INTERRUPTIONS} in a row use no try: the delivery is sent again at once, its
   * status and retry schedule unchanged. Each one after them uses a try, as a failed attempt
   * does: `nextAttemptMs` is the retry's time, or null when none is left (the delivery is dead).
   */
  outcome: "succeeded" | "retrying" | "dead" | "interrupted";
  /** When (ms) the next attempt is due; null when none is. */
  nextAttemptMs: number | null;
}

/** A due delivery claimed for one attempt. */
export interface Claim {
  /** The delivery as it was when claimed. */
  delivery: Delivery;
  /** Its endpoint. */
  endpoint: Endpoint;
  /** Proves the claim when recording the attempt. */
  token: string;
}

/** Options for {@linkcode DeliveryStore.claimDue}. */
export interface ClaimOptions {
  /** Now (ms): deliveries due at or before it are claimed. */
  nowMs: number;
  /** Most deliveries to claim. */
  limit: number;
  /** A claim not recorded within this long (ms) expires; the delivery is due again. */
  leaseMs: number;
  /** Most claims in flight per endpoint, across instances. */
  maxConcurrency: number;
  /**
   * Endpoints held back as slow: each at most one claim in flight (across instances, in place
   * of `maxConcurrency`), and all of them together at most `limit` of this call's claims; those
   * left out hold back no other endpoint's claims. @default {no endpoint is slow}
   */
  slow?: SlowEndpoints;
}

/** Slow endpoints of a claim (see {@linkcode ClaimOptions.slow}). */
export interface SlowEndpoints {
  /** Their ids. */
  endpointIds: readonly string[];
  /** Most claims of them, together, in this call (0: none). */
  limit: number;
}

/** The result of one attempt, to record. */
export interface AttemptRecord {
  /** The delivery. */
  deliveryId: string;
  /** Its endpoint. */
  endpointId: string;
  /** The claim's token; a stale claim records nothing. */
  token: string;
  /** The attempt as logged. */
  attempt: Attempt;
  /** Now (ms). */
  nowMs: number;
  /** Disable the endpoint with this reason (410 Gone). */
  disableReason?: string;
  /** Disable the endpoint when it has been failing this long (ms). */
  disableAfterMs: number;
  /** Reason given when the endpoint is disabled for failing too long. */
  failingReason: string;
}

/** A claim to give back, its attempt not made or cut off before an answer. */
export interface ClaimRelease {
  /** The delivery. */
  deliveryId: string;
  /** Its endpoint. */
  endpointId: string;
  /** The claim's token; a stale claim releases nothing. */
  token: string;
  /**
   * The attempt cut off, when its POST had started (the receiver may have got it), to log in
   * the same step: its `outcome` is `interrupted`. Absent when nothing was sent. With
   * `usesTry` (the delivery had {@linkcode FREE_INTERRUPTIONS} interruptions in a row already,
   * as its claim showed), the attempt uses a try: the delivery is `retrying`, due at the
   * attempt's `nextAttemptMs`, or `dead` when that is null.
   */
  cutOff?: { attempt: Attempt; nowMs: number; usesTry?: boolean };
}

/** Where a stream's dispatch is: the log cursor and the page being dispatched. */
export interface DispatchState {
  /** Last log entry whose deliveries exist; null before the first. */
  cursor: string | null;
  /** Last entry of the page being dispatched after `cursor`; null when none is. */
  planEnd: string | null;
}

/** Options for {@linkcode DeliveryStore.openDispatch}. */
export interface OpenDispatchOptions {
  /** Name of the lease to take. */
  lease: string;
  /** How long (ms) the lease lasts. */
  leaseMs: number;
  /** List every endpoint too, and take no lease when there is none. @default {false} */
  listEndpoints?: boolean;
  /**
   * Without `listEndpoints`: the version the caller's own list of endpoints was read at (see
   * {@linkcode DeliveryStore.listEndpointsVersioned}). When the store's is another (an endpoint
   * was created, changed or deleted since), the call lists every endpoint all the same, as with
   * `listEndpoints`, so that a dispatch never goes by a list older than its lease: an endpoint
   * registered since would miss the results logged after its registration.
   * @default {undefined: not compared}
   */
  unlessVersion?: string;
}

/** What {@linkcode DeliveryStore.openDispatch} found. */
export interface DispatchOpening {
  /** Every endpoint, oldest first, when asked for; else null. */
  endpoints: Endpoint[] | null;
  /** The lease's token; null when it is held elsewhere, or when no endpoint exists. */
  lease: string | null;
  /** Where the stream's dispatch is. */
  state: DispatchState;
  /**
   * The endpoint list's version, read in the same step (see
   * {@linkcode DeliveryStore.listEndpointsVersioned}): that of `endpoints` when listed.
   */
  endpointsVersion: string;
}

/** A page of a stream's log to store with {@linkcode DeliveryStore.storePage}. */
export interface StoredPage {
  /** The cursor the page follows. */
  cursor: string | null;
  /** Id of the page's last entry: the cursor afterwards. */
  end: string;
  /** The page's deliveries. */
  deliveries: readonly NewDelivery[];
  /** A lease to give back in the same step once the page is stored (the dispatch's last page). */
  releaseLease?: { name: string; token: string };
  /** Claim due deliveries in the same step, as {@linkcode DeliveryStore.claimDue} does. */
  claim?: ClaimOptions;
  /**
   * The endpoint list's version the deliveries were made for: the page is stored only while it
   * is still the store's (no endpoint was created, changed or deleted since), so that none
   * registered meanwhile misses the page's results logged after its registration.
   * @default {undefined: not compared}
   */
  endpointsVersion?: string;
}

/**
 * Options of the delivery store's calls that carry deliveries ({@linkcode DeliveryStore.storePage},
 * {@linkcode DeliveryStore.createDeliveries}).
 */
export interface DeliveryCallOptions {
  /**
   * Send the call in a request of its own (on Redis, not pipelined with calls made at the same
   * time), so that a refusal as too large (`StoreRequestTooLargeError`) is this call's
   * own. @default {false}
   */
  alone?: boolean;
  /**
   * {@linkcode DeliveryStore.createDeliveries} creates none for an endpoint not stored (deleted
   * since the caller read it), in the same atomic step: a delivery for it would be read and sent
   * by no one. @default {false}
   */
  onlyToStoredEndpoints?: boolean;
}

/** What {@linkcode DeliveryStore.storePage} did. */
export interface StoredPageResult {
  /** How many of the page's deliveries it created. */
  created: number;
  /** What it claimed (only when asked with `claim`). */
  claims: Claim[];
  /**
   * Set when nothing was done as an endpoint was created, changed or deleted since
   * `page.endpointsVersion`: the page's deliveries are to be made again for the endpoints now.
   */
  endpointsChanged?: true;
}

/** Options for {@linkcode DeliveryStore.deleteEndpoint}. */
export interface DeleteEndpointOptions {
  /** The version the stored endpoint must have for the delete to happen. @default {any} */
  expectVersion?: number;
}

/** Options for {@linkcode DeliveryStore.putEndpoint}. */
export interface PutEndpointOptions {
  /** The version the stored endpoint must have; null: it must not exist yet. */
  expectVersion: number | null;
  /** State to set with it (on creation, or to re-enable). */
  state?: Partial<EndpointState>;
  /**
   * The `disabled` the stored endpoint must have, compared in the step that writes (a disable by
   * {@linkcode DeliveryStore.recordAttempt} moves no version): a change decided on an endpoint
   * read enabled is not written over a 410's disable. @default {either}
   */
  expectDisabled?: boolean;
}

/**
 * Options for one page of a list: at most `limit` items after `cursor`.
 * Lists are in a stable order by a sort key of each item (its creation time,
 * then its id), and a cursor names a position in that order, not an offset.
 */
export interface PageOptions {
  /** Most items on the page (at least 1). */
  limit: number;
  /** The previous page's `nextCursor`; absent or null for the first page. */
  cursor?: string | null;
}

/**
 * One page of a list. Following `nextCursor` until it is null returns every
 * item that exists from the first page to the last exactly once, in the
 * list's order, whatever is added or removed between pages: an item added
 * meanwhile shows once if it sorts after the page being read, else not at
 * all. A page may hold fewer than `limit` items, even none, while
 * `nextCursor` is not null (a store may bound the work of one call); only
 * `nextCursor: null` says the list ended, and a page that ends the list says
 * so itself.
 */
export interface Page<T> {
  /** The items, in the list's order. */
  items: T[];
  /** Where the next page starts; null when the list ended. Opaque: pass it back as it is. */
  nextCursor: string | null;
}

/** The lists a cursor can belong to. */
export type CursorList = "endpoints" | "deliveries" | "keys";

/** A position in a list: the sort key of the last item a page returned. */
export interface CursorPosition {
  /** Creation time (ms) of the item. */
  createdMs: number;
  /** Its id, which orders items created in the same millisecond. */
  id: string;
}

/** A cursor that no page of the list gave out: garbled, made up, or for another list. */
export class InvalidCursorError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InvalidCursorError";
  }
}

const CURSOR_LETTER: Record<CursorList, string> = { endpoints: "e", deliveries: "d", keys: "k" };
const CURSOR_TEXT = /^([edk])\.(0|[1-9][0-9]{0,15})\.(\P{Cc}{1,1024})$/u;

/** An {@linkcode InvalidCursorError} for `cursor` (shown shortened), saying why. */
export function cursorRefused(cursor: string, why: string): InvalidCursorError {
  const shown = cursor.length > 64 ? `${cursor.slice(0, 64)}…` : cursor;
  return new InvalidCursorError(`Cannot read cursor '${shown}': ${why}`);
}

/** `text` as an opaque cursor: base64url of its UTF-8, without padding. */
export function cursorOfText(text: string): string {
  return new TextEncoder().encode(text).toBase64({ alphabet: "base64url", omitPadding: true });
}

/**
 * The text of a cursor {@linkcode cursorOfText} wrote. Throws
 * {@linkcode InvalidCursorError} for one that is not base64url of UTF-8 text.
 */
export function textOfCursor(cursor: string): string {
  try {
    if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw new Error("not base64url");
    return new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.fromBase64(cursor, { alphabet: "base64url" }),
    );
  } catch {
    throw cursorRefused(cursor, "expected base64url text from 'nextCursor'");
  }
}

/**
 * The opaque cursor of a position in a list: base64url of
 * `<list letter>.<createdMs>.<id>`, so it can be checked, not guessed at.
 */
export function encodeCursor(list: CursorList, position: CursorPosition): string {
  const text = `${CURSOR_LETTER[list]}.${position.createdMs}.${position.id}`;
  return cursorOfText(text);
}

/**
 * The position a cursor of `list` names. Throws {@linkcode InvalidCursorError}
 * for anything {@linkcode encodeCursor} would not have written for that list.
 */
export function decodeCursor(list: CursorList, cursor: string): CursorPosition {
  const refuse = (why: string): never => {
    throw cursorRefused(cursor, why);
  };
  const match = CURSOR_TEXT.exec(textOfCursor(cursor));
  const createdMs = Number(match?.[2]);
  if (!match || !Number.isSafeInteger(createdMs)) refuse("not a cursor this API gave out");
  if (match![1] !== CURSOR_LETTER[list]) refuse(`it is not a cursor of the ${list} list`);
  const position = { createdMs, id: match![3] };
  // One position, one cursor: a re-encoding that differs was not written by us.
  if (encodeCursor(list, position) !== cursor) refuse("not a cursor this API gave out");
  return position;
}

/** Compares positions in creation order, then by id (byte order for ASCII ids, as Redis does). */
export function comparePositions(a: CursorPosition, b: CursorPosition): number {
  return a.createdMs - b.createdMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** What {@linkcode DeliveryStore.retry} did. */
export type RetryResult = "requeued" | "not_found" | "in_flight";

/** What {@linkcode DeliveryStore.countDeliveries} reports. */
export interface DeliveryCounts {
  /** Deliveries waiting to be sent: pending or retrying (claimed ones included). */
  pending: number;
  /** Dead deliveries still kept (until the retention period after they died ends). */
  dead: number;
}

/** Storage of endpoints, deliveries, attempts, due queues and dispatch cursors. */
export interface DeliveryStore {
  /** Short name (`memory`, `redis`). */
  readonly kind: string;

  /**
   * Creates or replaces an endpoint if its version (and `disabled`, when given) is as expected;
   * returns the endpoint as this write left it (`config` with the state stored in the same step),
   * or null when not as expected. A creation throws `StoredLimitError` (creating nothing) when the
   * store's bound of endpoints is held already.
   */
  putEndpoint(config: EndpointConfig, options: PutEndpointOptions): Promise<Endpoint | null>;
  /** An endpoint with its state, or null. */
  getEndpoint(id: string): Promise<Endpoint | null>;
  /** Every endpoint, oldest first. */
  listEndpoints(): Promise<Endpoint[]>;
  /**
   * Every endpoint, oldest first, read in one step with the endpoint list's version: another one
   * after any endpoint was created, changed ({@linkcode putEndpoint}, or disabled by
   * {@linkcode recordAttempt}) or deleted (see {@linkcode OpenDispatchOptions.unlessVersion}).
   */
  listEndpointsVersioned(): Promise<{ endpoints: Endpoint[]; version: string }>;
  /**
   * A page of the endpoints, oldest first (by creation time, then id); see
   * {@linkcode Page}. Throws {@linkcode InvalidCursorError} for a cursor not
   * given out by this method.
   */
  pageEndpoints(options: PageOptions): Promise<Page<Endpoint>>;
  /**
   * Deletes an endpoint and its queue; false when there was none. Its deliveries are found no
   * more: {@linkcode getDelivery} gives null, {@linkcode retry} `not_found`,
   * {@linkcode listAttempts} none (a store may keep them until they expire, unread). With
   * `expectVersion`, only while the stored endpoint is at that version (compared in the store, in
   * the step that deletes): false, deleting nothing, when it is not.
   */
  deleteEndpoint(id: string, options?: DeleteEndpointOptions): Promise<boolean>;

  /** Where a stream's dispatch is. */
  dispatchState(stream: string): Promise<DispatchState>;
  /**
   * Forgets the dispatch state of a stream that was deleted, so a process that creates and
   * deletes streams keeps none of theirs. Only a store of one process has it: a shared store's
   * state expires on its own (another instance may serve the name again already).
   */
  forgetDispatch?(stream: string): Promise<void>;
  /**
   * Fixes the page after `cursor` to end at `end`, unless a page is already
   * planned (then that one stays) or the cursor moved; returns the state.
   */
  beginPage(stream: string, cursor: string | null, end: string): Promise<DispatchState>;
  /** Moves the cursor from `cursor` to `end` and clears the plan; false when it moved already. */
  commitPage(stream: string, cursor: string | null, end: string): Promise<boolean>;
  /** Takes a named lease for `ttlMs` when nobody holds it; returns its token or null. */
  acquireLease(name: string, ttlMs: number): Promise<string | null>;
  /** Gives a lease back if `token` still holds it. */
  releaseLease(name: string, token: string): Promise<void>;
  /**
   * In one call: lists every endpoint when asked, or when the endpoints
   * changed since `options.unlessVersion` (and then, when there is none,
   * takes no lease), takes the named lease for `leaseMs` when nobody holds
   * it, and reads the stream's dispatch state.
   */
  openDispatch(stream: string, options: OpenDispatchOptions): Promise<DispatchOpening>;
  /**
   * In one atomic step: creates the page's deliveries that do not exist yet
   * and moves the cursor from `page.cursor` to `page.end` (clearing the plan),
   * then gives `page.releaseLease` back and claims what is due when asked by
   * `page.claim`. Does nothing and returns null when the cursor moved, or
   * when a page ending elsewhere is planned (see {@linkcode beginPage}); does
   * nothing and says `endpointsChanged` when the endpoint list's version is
   * no longer `page.endpointsVersion`.
   */
  storePage(
    stream: string,
    page: StoredPage,
    options?: DeliveryCallOptions,
  ): Promise<StoredPageResult | null>;

  /** Creates the deliveries that do not exist yet, due at their creation time; returns how many. */
  createDeliveries(
    deliveries: readonly NewDelivery[],
    options?: DeliveryCallOptions,
  ): Promise<number>;
  /** A delivery, or null (also once its endpoint is deleted). */
  getDelivery(id: string): Promise<Delivery | null>;
  /**
   * A page of an endpoint's deliveries (of one status, when given), newest
   * first (by creation time, then id, both descending); see {@linkcode Page}.
   * Throws {@linkcode InvalidCursorError} for a cursor not given out by this
   * method.
   */
  listDeliveries(
    endpointId: string,
    options: PageOptions & { status?: DeliveryStatus },
  ): Promise<Page<Delivery>>;
  /** A delivery's attempts, newest first. */
  listAttempts(deliveryId: string): Promise<Attempt[]>;
  /**
   * Claims due deliveries of endpoints below their concurrency cap and rate
   * limit, oldest due first per endpoint, with a lease: while it lasts no
   * other claim gets them. Due deliveries of a disabled endpoint become dead.
   */
  claimDue(options: ClaimOptions): Promise<Claim[]>;
  /**
   * Records an attempt made under a claim: the delivery's new status, the
   * attempt log (its first attempt's time in `firstAttemptMs`), the next due
   * time, `interruptions` back to 0, and the endpoint's health (disabling it
   * when asked or when it has failed for too long). Returns whether the claim
   * was still valid, and whether the endpoint got disabled.
   */
  recordAttempt(record: AttemptRecord): Promise<{ recorded: boolean; disabled: boolean }>;
  /**
   * Gives a claim back (a stopping process that will not make or finish its
   * attempt): the delivery is due again at the time it was due when claimed,
   * as if never claimed, and its endpoint's concurrency slot is free, so the
   * next claim gets it at once instead of after the lease. Status, tries (the
   * retry schedule) and the endpoint's health stay as they were; the token no
   * longer records. Without `cutOff` nothing else changes. With it (a POST
   * that had started), the same step logs that attempt as the attempt log's
   * newest, as {@linkcode recordAttempt} does (at most
   * {@linkcode MAX_ATTEMPTS_LOGGED} kept; the delivery and its log kept for
   * the retention period from `cutOff.nowMs`), counts it in `attempts` and
   * `interruptions`, sets `firstAttemptMs` when it is the first and
   * `updatedMs`, and keeps `lastStatus` and `lastError` (the receiver's last
   * answer or failure). With `cutOff.usesTry` it also counts in `tries`, and
   * the delivery is `retrying` and due at the attempt's `nextAttemptMs`, or,
   * when that is null, `dead` (the endpoint's health still unchanged).
   * Returns false, changing nothing, when the token no longer holds the claim.
   */
  releaseClaim(release: ClaimRelease): Promise<boolean>;
  /**
   * Makes a delivery due now with a fresh retry schedule (tries and interruptions 0);
   * `not_found` for none, also once its endpoint is deleted.
   */
  retry(deliveryId: string, nowMs: number): Promise<RetryResult>;
  /** Makes an endpoint's `retrying` and `dead` deliveries created since `sinceMs` due now. */
  replay(endpointId: string, options: { sinceMs: number; nowMs: number }): Promise<number>;
  /**
   * Counts the deliveries of existing endpoints that wait to be sent and the
   * dead ones, over all endpoints, without reading the deliveries: its cost
   * grows with the number of endpoints only.
   */
  countDeliveries(): Promise<DeliveryCounts>;
  /** Releases resources. */
  close(): Promise<void>;
}

/** Most attempts an attempt log keeps per delivery: the newest; older ones are dropped. */
export const MAX_ATTEMPTS_LOGGED = 50;

/**
 * How many `interrupted` attempts in a row use no try. Each one after them uses a try, so a
 * delivery cut off at every shutdown (a receiver that never answers before the process stops)
 * still goes through the retry schedule and dies, instead of being sent again forever.
 */
export const FREE_INTERRUPTIONS = 3;

/** How long deliveries and attempt logs are kept by default: 7 days. */
export const DEFAULT_RETENTION_MS = 7 * 86_400_000;
