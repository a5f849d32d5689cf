/**
 * The webhook endpoint registry: checks what an endpoint is registered
 * with (a URL the SSRF policy admits, known streams, a valid CEL filter,
 * no header edgestream sets itself) and creates, changes, deletes and lists
 * endpoints in the delivery store, including rotation of signing secrets.
 * Changes are versioned, so concurrent ones never overwrite each other. It
 * sends nothing: `service.ts` delivers to what is registered here.
 *
 * @module
 */
import {
  type CompiledStream,
  type DefinitionPrecondition,
  lookUpStream,
  type StreamCatalog,
  unmetPrecondition,
} from "../../config/mod.ts";
import { listNames, quoteInput } from "../../telemetry/logging.ts";
import type { Store } from "../../store/types.ts";
import { compileExpression, ExpressionError } from "../../transform/mod.ts";
import {
  type BatchableEventType,
  batchedTypes,
  type DeliveryStore,
  type Endpoint,
  type EndpointBatch,
  type EndpointConfig,
  type EndpointState,
  type Page,
  type PageOptions,
  type WebhookEventType,
} from "../../store/deliveries.ts";
import { FILTER_VARIABLES, NOTHING_DISPATCHED, reportTrimmed } from "./dispatcher.ts";
import { generateSecret } from "./signing.ts";
import { UnsafeUrlError, UrlPolicy } from "./ssrf.ts";

/** Event types an endpoint gets when it names none: the low-volume results. */
export const DEFAULT_EVENT_TYPES: readonly WebhookEventType[] = ["window.closed", "alert.fired"];

/** How long (ms) a rotated-out secret keeps signing: 24 h. */
export const SECRET_OVERLAP_MS = 86_400_000;

/**
 * Longest webhook URL (characters), as given and as stored: encoding can make a URL longer
 * (`é` is `%C3%A9`), so the stored form is checked too, and every URL shown can be sent back.
 */
export const MAX_URL_LENGTH = 2048;

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

/**
 * Header names no delivery can send: node:http (a host name's deliveries) refuses a `Trailer`
 * on a body of known length, so every delivery to such a URL would fail. Registration refuses
 * them; the sender leaves out one an earlier release stored.
 */
export const UNSENDABLE_HEADERS: ReadonlySet<string> = new Set(["trailer"]);

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Longest header name an endpoint may send. */
const MAX_HEADER_NAME_LENGTH = 128;
/** Most headers an endpoint may send. */
export const MAX_HEADERS = 32;
/** Longest header value (characters, bytes alike: a value is ASCII) an endpoint may send. */
export const MAX_HEADER_VALUE_LENGTH = 4096;

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
  /** What is missing: an endpoint, or a delivery. */
  readonly what: "endpoint" | "delivery";
  constructor(what: "endpoint" | "delivery", message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebhookNotFoundError";
    this.what = what;
  }
}

/** The request conflicts with the current state (in flight, disabled, changed meanwhile). */
export class WebhookConflictError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebhookConflictError";
  }
}

/**
 * What a change or deletion of an endpoint expects of the stored one (HTTP's `If-Match`, and
 * `If-None-Match: *`, `absent`, which no change of an endpoint that exists meets), so that two
 * admins changing the same endpoint do not silently overwrite each other, as a stream's
 * `DefinitionPrecondition` has it.
 */
export type EndpointPrecondition = DefinitionPrecondition;

/** An endpoint's precondition ({@linkcode EndpointPrecondition}) does not hold: nothing changed. */
export class WebhookPreconditionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WebhookPreconditionError";
  }
}

/** Throws {@linkcode WebhookPreconditionError} when `expected` does not hold of `endpoint`. */
function checkPrecondition(
  id: string,
  endpoint: Endpoint | null,
  expected: EndpointPrecondition | undefined,
): void {
  if (!expected) return;
  const unmet = unmetPrecondition(expected, endpoint ? endpoint.version : null);
  if (unmet !== undefined) {
    throw new WebhookPreconditionError(
      `Webhook endpoint '${id}' ${unmet}`,
    );
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
  /**
   * Grouping of results into deliveries; without `eventTypes`, it groups `event.processed`
   * when the endpoint takes it, and otherwise its `window.closed` and `alert.fired`.
   */
  batch?: EndpointBatch | null;
  /** Registered but not delivered to. @default {false} */
  disabled?: boolean;
}

/** A change to an endpoint: only the fields given change; null clears. */
export type EndpointPatch = Partial<EndpointInput>;

/** Options for {@linkcode EndpointRegistry}. */
export interface EndpointRegistryOptions {
  /** Stream state: a new endpoint's deliveries start after each result log's last entry. */
  store: Store;
  /** Compiled streams by name: the ones an endpoint may name. */
  streams: ReadonlyMap<string, CompiledStream>;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
  /** Decides which URLs may be registered. @default {new UrlPolicy()} */
  policy?: UrlPolicy;
  /** Awaited after every stored change, before the change returns. @default {nothing} */
  onChange?: () => Promise<unknown>;
}

/** How many streams' logs a registration marks and reads at once (two store calls each). */
const LOG_CALLS = 16;

/** Runs `work` on each of `items`, at most `limit` at a time; rejects as the first that fails. */
async function forEachAtMost<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Webhook endpoints: checked input, stored with versions, secrets rotated.
 *
 * @example
 * ```ts
 * import { compileConfig } from "../../config/mod.ts";
 * import { MemoryDeliveryStore, MemoryStore } from "../../store/mod.ts";
 * import { EndpointRegistry } from "./endpoints.ts";
 *
 * const streams = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * });
 * const endpoints = new EndpointRegistry(new MemoryDeliveryStore(), {
 *   store: new MemoryStore(),
 *   streams,
 * });
 * const { endpoint, secret } = await endpoints.create({ url: "https://example.com/hook" });
 * await endpoints.update(endpoint.id, { disabled: true });
 * ```
 */
export class EndpointRegistry {
  #deliveries: DeliveryStore;
  #store: Store;
  #streams: StreamCatalog;
  #now: () => number;
  #policy: UrlPolicy;
  #onChange: () => Promise<unknown>;

  constructor(deliveries: DeliveryStore, options: EndpointRegistryOptions) {
    this.#deliveries = deliveries;
    this.#store = options.store;
    this.#streams = options.streams;
    this.#now = options.now ?? Date.now;
    this.#policy = options.policy ?? new UrlPolicy();
    this.#onChange = options.onChange ?? (() => Promise.resolve());
  }

  /**
   * `url` as `fetch` will request it (WHATWG `new URL(url).href`: spaces and `<>` percent-encoded,
   * the host in lower case, no fragment), when the policy allows it: what is stored and shown is
   * what is called.
   */
  async #checkUrl(url: string, verb: Verb): Promise<string> {
    // Checked here, not by the body's schema, so that the bound as sent and as encoded (below)
    // are one 400 invalid_webhook.
    if (url.length > MAX_URL_LENGTH) {
      throw new InvalidEndpointError(
        "url",
        `Cannot ${verb} webhook as 'url' is ${url.length} characters, longer than ${MAX_URL_LENGTH}`,
      );
    }
    try {
      const checked = (await this.#policy.check(url)).url;
      // A fragment never leaves the client: kept, it would show a URL no delivery calls.
      checked.hash = "";
      if (checked.href.length > MAX_URL_LENGTH) {
        throw new InvalidEndpointError(
          "url",
          `Cannot ${verb} webhook as 'url' is ${checked.href.length} characters as fetch requests ` +
            `it (percent-encoded), longer than ${MAX_URL_LENGTH}`,
        );
      }
      return checked.href;
    } catch (error) {
      if (error instanceof UnsafeUrlError) {
        throw new InvalidEndpointError("url", `Cannot ${verb} webhook as ${error.message}`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  async #checkFields(input: EndpointPatch, verb: Verb): Promise<void> {
    for (const name of input.streams ?? []) {
      // A stream another instance created at run time may not be served here yet.
      if (!await lookUpStream(this.#streams, name)) {
        throw new InvalidEndpointError(
          "streams",
          `Cannot ${verb} webhook as 'streams' names an unknown stream: ${
            quoteInput(name)
          }; streams are: ${listNames([...this.#streams.keys()].sort()) || "(none)"}`,
        );
      }
    }
    if (input.filter !== undefined && input.filter !== null) {
      try {
        compileExpression(input.filter, FILTER_VARIABLES, { returns: "bool" });
      } catch (error) {
        if (!(error instanceof ExpressionError)) throw error;
        throw new InvalidEndpointError(
          "filter",
          `Cannot ${verb} webhook as 'filter' is not valid: ${error.message}`,
          { cause: error },
        );
      }
    }
    // Checked here with every other header problem, so that each is one 400 invalid_webhook.
    const headerCount = Object.keys(input.headers ?? {}).length;
    if (headerCount > MAX_HEADERS) {
      throw new InvalidEndpointError(
        "headers",
        `Cannot ${verb} webhook as 'headers' has ${headerCount} headers, more than ${MAX_HEADERS}`,
      );
    }
    const named = new Map<string, string>();
    for (const name of Object.keys(input.headers ?? {})) {
      // Names are quoted shortened: the body may hold one of up to 1 MiB. A token first: its
      // characters are ASCII, so the length below is in characters and bytes alike (100 emoji, 200
      // UTF-16 code units, were said to be longer than 128 characters).
      if (!HEADER_NAME.test(name)) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header name '${quoteInput(name)}' is not a valid token`,
        );
      }
      if (name.length > MAX_HEADER_NAME_LENGTH) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header name '${
            quoteInput(name)
          }' is longer than ${MAX_HEADER_NAME_LENGTH} characters`,
        );
      }
      // Header names are one name in any case: only one of two would be sent.
      const other = named.get(name.toLowerCase());
      if (other !== undefined) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as headers '${other}' and '${name}' are one header (names are case-insensitive)`,
        );
      }
      named.set(name.toLowerCase(), name);
      if (RESERVED_HEADERS.has(name.toLowerCase())) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header '${name}' is set by edgestream`,
        );
      }
      if (UNSENDABLE_HEADERS.has(name.toLowerCase())) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header '${name}' cannot be sent: ` +
            "a delivery's body has a Content-Length, so it has no trailers",
        );
      }
    }
    for (const [name, value] of Object.entries(input.headers ?? {})) {
      if (value.length > MAX_HEADER_VALUE_LENGTH) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header '${name}' has a value of ${value.length} characters, ` +
            `longer than ${MAX_HEADER_VALUE_LENGTH}`,
        );
      }
      // A NUL is no line break: the control characters' check below names it.
      if (/[\r\n]/.test(value)) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header '${name}' holds a line break`,
        );
      }
      // Headers accepts them, but fetch and node:http both refuse to send them: every delivery
      // would fail.
      const control = [...value].find((char) => (char < " " && char !== "\t") || char === "\x7f");
      if (control !== undefined) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header '${name}' holds a control character (U+${
            control.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")
          }); only tab, space and visible characters can be sent`,
        );
      }
      // Past U+00FF fetch refuses to send it: every delivery would fail. From U+0080, fetch (an
      // IP-literal host) sends it as one Latin-1 byte and node:http (a host name) as UTF-8: the
      // endpoint would read another value by the host its URL names.
      if ([...value].some((char) => char > "\x7e")) {
        throw new InvalidEndpointError(
          "headers",
          `Cannot ${verb} webhook as header '${name}' is not a valid header value (only characters up to U+007E; encode others, e.g. percent-encoding)`,
        );
      }
    }
  }

  /**
   * Registers an endpoint; returns it with its new secret, which is shown
   * only here and on rotation. Throws {@linkcode InvalidEndpointError}.
   */
  async create(input: EndpointInput): Promise<{ endpoint: Endpoint; secret: string }> {
    await this.#checkFields(input, "register");
    const url = await this.#checkUrl(input.url, "register");
    const eventTypes = [...new Set(input.eventTypes ?? DEFAULT_EVENT_TYPES)];
    // Checked before the logs are held: a refused registration holds none, which no sweep would
    // let go while no endpoint exists.
    const batch = batchOf(input.batch ?? null, eventTypes, "register");
    const now = this.#now();
    // #checkFields looked each named stream up: one another instance created is served here by
    // now (the registry's find adopts it), so it gets its start too.
    const startAfter = await this.#starts(input.streams ?? null);
    const secret = generateSecret();
    const config: EndpointConfig = {
      id: `ep_${crypto.randomUUID().replaceAll("-", "")}`,
      url,
      description: input.description ?? null,
      eventTypes,
      // Named twice, a stream is kept once, as eventTypes are (and a key's streams).
      streams: input.streams ? [...new Set(input.streams)] : null,
      filter: input.filter ?? null,
      headers: input.headers ?? {},
      rateLimit: input.rateLimit ?? null,
      batch,
      secrets: [{ secret, expiresMs: null }],
      startAfter,
      createdMs: now,
      updatedMs: now,
      version: 1,
    };
    const state: Partial<EndpointState> = input.disabled
      ? { disabled: true, disabledReason: "Disabled by its owner" }
      : { disabled: false };
    const written = await this.#deliveries.putEndpoint(config, { expectVersion: null, state });
    // Null only when the endpoint exists already: a store that retried the write past its kept
    // reply's life (Redis: 60 s) found what its first try created. The id is freshly random, so
    // that endpoint is this one: read back. Gone again (deleted since by its id): not found.
    const endpoint = written ?? await this.#deliveries.getEndpoint(config.id);
    if (!endpoint) {
      throw new WebhookNotFoundError("endpoint", `No webhook endpoint has id '${config.id}'`);
    }
    await this.#onChange();
    return { endpoint, secret };
  }

  /**
   * Where an endpoint starts in each stream's log (of `names`, by default every stream served):
   * after its last entry now. A log it hears from is held for dispatch before its start is read,
   * so a close before the next dispatch trims none of what it is to get (see
   * `Store.markDispatched`). Streams apart from each other, LOG_CALLS at a time.
   */
  async #starts(
    streams: readonly string[] | null,
    names?: readonly string[],
  ): Promise<Record<string, string | null>> {
    names ??= streams === null ? await this.#everyStream() : [...this.#streams.keys()];
    const lastIds = new Map<string, string | null>();
    await forEachAtMost(names, LOG_CALLS, async (name) => {
      if (!streams || streams.includes(name)) {
        reportTrimmed(name, await this.#store.markDispatched(name, NOTHING_DISPATCHED));
      }
      lastIds.set(name, await this.#store.lastLogId(name));
    });
    // In the streams' order, whichever call ended first.
    return Object.fromEntries(names.map((name) => [name, lastIds.get(name) ?? null]));
  }

  /**
   * Every stream that exists: those served here, and those another instance created that this
   * one serves not yet (the definitions are read now), so an endpoint hearing all starts on each.
   */
  async #everyStream(): Promise<string[]> {
    await this.#streams.poll?.();
    return [...this.#streams.keys()];
  }

  /** Every endpoint, oldest first. */
  list(): Promise<Endpoint[]> {
    return this.#deliveries.listEndpoints();
  }

  /** A page of the endpoints, oldest first; throws `InvalidCursorError` for a bad cursor. */
  page(options: PageOptions): Promise<Page<Endpoint>> {
    return this.#deliveries.pageEndpoints(options);
  }

  /** One endpoint; throws {@linkcode WebhookNotFoundError}. */
  async get(id: string): Promise<Endpoint> {
    const endpoint = await this.#deliveries.getEndpoint(id);
    if (!endpoint) throw new WebhookNotFoundError("endpoint", `No webhook endpoint has id '${id}'`);
    return endpoint;
  }

  /**
   * One endpoint, whose `expected` holds; throws {@linkcode WebhookPreconditionError} (before
   * "not found": `If-Match` on an endpoint that does not exist is a 412, as for a stream), then
   * {@linkcode WebhookNotFoundError}.
   */
  async #getExpected(id: string, expected: EndpointPrecondition | undefined): Promise<Endpoint> {
    const endpoint = await this.#deliveries.getEndpoint(id);
    checkPrecondition(id, endpoint, expected);
    if (!endpoint) throw new WebhookNotFoundError("endpoint", `No webhook endpoint has id '${id}'`);
    return endpoint;
  }

  async #change(
    id: string,
    change: (endpoint: Endpoint) => { config: EndpointConfig; state?: Partial<EndpointState> },
    expected?: EndpointPrecondition,
  ): Promise<Endpoint> {
    for (let round = 0; round < 5; round++) {
      // Each round reads the endpoint again: a write that lost the compare-and-set to another
      // finds the version moved, so an If-Match that named the one read is a 412, not a retry.
      const endpoint = await this.#getExpected(id, expected);
      const { config, state } = change(endpoint);
      const next = { ...config, version: endpoint.version + 1, updatedMs: this.#now() };
      // Only over the state read: a 410 disabling it meanwhile moves no version, and a change
      // decided on it enabled (enabling it without a restart, or the owner's disable replacing
      // the 410's reason) must decide again.
      const written = await this.#deliveries.putEndpoint(next, {
        expectVersion: endpoint.version,
        expectDisabled: endpoint.disabled,
        state,
      });
      if (written) {
        await this.#onChange();
        // What this change wrote, as the store wrote it, not whatever is stored by now: another
        // change landing since must not be answered as this one (its ETag and fields), nor a
        // delete since answer a change that applied with a 404.
        return written;
      }
    }
    throw new WebhookConflictError(`Webhook endpoint '${id}' kept changing; try again`);
  }

  /**
   * Changes an endpoint; `disabled: false` re-enables it. Throws like
   * {@linkcode EndpointRegistry.create}, and with {@linkcode WebhookPreconditionError} when
   * `expected` does not hold (nothing changed).
   */
  async update(
    id: string,
    patch: EndpointPatch,
    expected?: EndpointPrecondition,
  ): Promise<Endpoint> {
    await this.#checkFields(patch, "change");
    const url = patch.url === undefined ? undefined : await this.#checkUrl(patch.url, "change");
    /** The endpoint's configuration with the patch's fields; throws for a batch it refuses. */
    const changed = (endpoint: Endpoint): EndpointConfig => {
      const config = configOf(endpoint);
      if (url !== undefined) config.url = url;
      if (patch.eventTypes !== undefined) config.eventTypes = [...new Set(patch.eventTypes)];
      if (patch.streams !== undefined) {
        config.streams = patch.streams && [...new Set(patch.streams)];
      }
      if (patch.filter !== undefined) config.filter = patch.filter;
      if (patch.description !== undefined) config.description = patch.description;
      if (patch.headers !== undefined) config.headers = patch.headers;
      if (patch.rateLimit !== undefined) config.rateLimit = patch.rateLimit;
      if (patch.batch !== undefined) {
        config.batch = batchOf(patch.batch, config.eventTypes, "change");
      } else if (patch.eventTypes !== undefined) {
        // The types it groups stay (an endpoint stored with a batch its types no longer allow,
        // before this check, keeps working for patches of other fields).
        const batch = config.batch &&
          { ...config.batch, eventTypes: [...batchedTypes(config.batch)] };
        config.batch = batchOf(batch, config.eventTypes, "change");
      }
      return config;
    };
    // Enabled again, it starts as a new registration does, after what its streams logged so
    // far: a result logged while it was disabled, even one no dispatch took before now, is not
    // sent to it. Hearing a stream it did not, it starts there as a registration does too: a
    // result that stream logged before the change, even one no dispatch took yet, is not sent
    // to it; the streams it heard keep their starts.
    let restart: Record<string, string | null> | null = null;
    let added: Record<string, string | null> = {};
    let current: Endpoint | undefined;
    if (patch.disabled === false || patch.streams !== undefined) {
      current = await this.#getExpected(id, expected);
      // Checked before the logs are held: a refused change holds none (see create()).
      changed(current);
      const streams = patch.streams === undefined ? current.streams : patch.streams;
      if (patch.disabled === false && current.disabled) {
        restart = await this.#starts(streams);
      } else if (patch.streams !== undefined) {
        const newly = [...new Set(streams ?? await this.#everyStream())]
          .filter((name) => !hears(current!, name));
        if (newly.length > 0) added = await this.#starts(newly, newly);
      }
    }
    /** The endpoint's config and state with the patch; throws StartsMissing as said below. */
    const write = (
      endpoint: Endpoint,
    ): { config: EndpointConfig; state?: Partial<EndpointState> } => {
      const config = changed(endpoint);
      let state: Partial<EndpointState> | undefined;
      let restarted = false;
      if (patch.disabled === false) {
        state = { disabled: false, disabledReason: null, failingSinceMs: null };
        // Disabled (by a 410, say) since this change read it enabled: enabled again, it restarts.
        if (endpoint.disabled && restart === null) throw new RestartMissing(config.streams);
        if (endpoint.disabled && restart !== null) {
          // A stream it hears that was served after the starts were read has none yet.
          const appeared = [...this.#streams.keys()].filter((name) =>
            (config.streams === null || config.streams.includes(name)) &&
            !Object.hasOwn(restart!, name)
          );
          if (appeared.length > 0) throw new StartsMissing(appeared);
          config.startAfter = restart;
          restarted = true;
        }
      } else if (patch.disabled === true && !endpoint.disabled) {
        state = { disabled: true, disabledReason: "Disabled by its owner" };
      }
      if (patch.streams !== undefined && !restarted) {
        const starts: [string, string | null][] = [];
        const appeared: string[] = [];
        for (const name of config.streams ?? this.#streams.keys()) {
          if (hears(endpoint, name)) continue;
          if (!Object.hasOwn(added, name)) {
            // Changed meanwhile to hear fewer streams: this change read no start for that one.
            if (hears(current!, name)) {
              throw new WebhookConflictError(
                `Webhook endpoint '${id}' changed meanwhile; try again`,
              );
            }
            appeared.push(name);
            continue;
          }
          starts.push([name, added[name]]);
        }
        if (appeared.length > 0) throw new StartsMissing(appeared);
        // Entries, not assignments: a stream may be named like an object's own member.
        config.startAfter = Object.fromEntries([...Object.entries(config.startAfter), ...starts]);
      }
      return { config, state };
    };
    // A stream served since the starts were read (a background poll found one another instance
    // created) has no start read yet, though the endpoint did not change: its start is read and
    // the change written again (a change hearing more streams, or enabling it again). A few rounds: each needs a stream created within the one before.
    for (let round = 0; round < 5; round++) {
      try {
        return await this.#change(id, write, expected);
      } catch (error) {
        if (error instanceof RestartMissing) {
          restart = await this.#starts(error.streams);
          continue;
        }
        if (!(error instanceof StartsMissing)) throw error;
        const more = await this.#starts(error.streams, error.streams);
        if (restart !== null) {
          restart = Object.fromEntries([...Object.entries(restart), ...Object.entries(more)]);
        }
        added = Object.fromEntries([...Object.entries(added), ...Object.entries(more)]);
      }
    }
    throw new WebhookConflictError(`Webhook endpoint '${id}' kept changing; try again`);
  }

  /**
   * Deletes an endpoint; throws {@linkcode WebhookNotFoundError}, or
   * {@linkcode WebhookPreconditionError} when `expected` does not hold (nothing deleted: the
   * version read is compared again by the store in the step that deletes).
   */
  async delete(id: string, expected?: EndpointPrecondition): Promise<void> {
    if (!expected) {
      if (!await this.#deliveries.deleteEndpoint(id)) {
        throw new WebhookNotFoundError("endpoint", `No webhook endpoint has id '${id}'`);
      }
      await this.#onChange();
      return;
    }
    for (let round = 0; round < 5; round++) {
      const endpoint = await this.#getExpected(id, expected);
      if (await this.#deliveries.deleteEndpoint(id, { expectVersion: endpoint.version })) {
        await this.#onChange();
        return;
      }
    }
    throw new WebhookConflictError(`Webhook endpoint '${id}' kept changing; try again`);
  }

  /**
   * Replaces the signing secret; the one it replaces keeps signing alongside
   * the new one for 24 h, and any older one stops at once, so a delivery
   * carries at most two signatures however often the secret is rotated.
   * Returns the new secret, when the replaced one stops and the version the rotation wrote (its
   * `ETag`). Throws {@linkcode WebhookPreconditionError} when `expected` does not hold (nothing
   * rotated), and {@linkcode WebhookNotFoundError}.
   */
  async rotateSecret(
    id: string,
    expected?: EndpointPrecondition,
  ): Promise<{ secret: string; previousExpiresMs: number; version: number }> {
    const secret = generateSecret();
    const previousExpiresMs = this.#now() + SECRET_OVERLAP_MS;
    // The version this rotation wrote (#change answers it, not one read after): should another
    // change land between the two, its tag must not be answered as this one's, or an If-Match
    // sent with it would overwrite that change unseen.
    const { version } = await this.#change(id, (endpoint) => {
      const config = configOf(endpoint);
      const current = config.secrets.find((item) => item.expiresMs === null) ??
        config.secrets[0];
      config.secrets = [
        { secret, expiresMs: null },
        ...(current ? [{ secret: current.secret, expiresMs: previousExpiresMs }] : []),
      ];
      return { config };
    }, expected);
    return { secret, previousExpiresMs, version };
  }
}

/** A change enabling an endpoint found it disabled, though it read it enabled: no restart read. */
class RestartMissing extends Error {
  /** The streams it hears once changed; null for all. */
  readonly streams: string[] | null;
  constructor(streams: string[] | null) {
    super("No restart read for an endpoint disabled since it was read");
    this.name = "RestartMissing";
    this.streams = streams;
  }
}

/** A change's streams that were served after it read their starts (none read for them yet). */
class StartsMissing extends Error {
  /** The streams without a start. */
  readonly streams: string[];
  constructor(streams: string[]) {
    super(`No start read for streams served since: ${streams.join(", ")}`);
    this.name = "StartsMissing";
    this.streams = streams;
  }
}

/** What a request to the registry does, as its errors say. */
type Verb = "register" | "change";

/**
 * The batch an endpoint taking `eventTypes` is stored with, its grouped types given: those
 * asked for, each of which it must take, or, when none are named, `event.processed` when it
 * takes it (as before other types could be grouped), else its `window.closed` and `alert.fired`.
 * A batch grouping none of the types the endpoint takes would do nothing, and is refused.
 */
function batchOf(
  batch: EndpointBatch | null,
  eventTypes: readonly WebhookEventType[],
  verb: Verb,
): EndpointBatch | null {
  if (batch === null) return null;
  let grouped: BatchableEventType[];
  if (batch.eventTypes !== undefined) {
    grouped = [...new Set(batch.eventTypes)];
    const missing = grouped.filter((type) => !eventTypes.includes(type));
    if (missing.length > 0) {
      throw new InvalidEndpointError(
        "batch",
        // A batch stored without eventTypes holds the default it had: the message names both.
        `Cannot ${verb} webhook as 'batch' groups ${missing.join(", ")} ('batch.eventTypes': ` +
          `${grouped.join(", ")}), which 'eventTypes' (${eventTypes.join(", ")}) lacks: add it ` +
          `there, or send 'batch' with 'eventTypes' it takes, or 'batch': null`,
      );
    }
  } else if (eventTypes.includes("event.processed")) {
    grouped = ["event.processed"];
  } else {
    grouped = (["window.closed", "alert.fired"] as const).filter((type) =>
      eventTypes.includes(type)
    );
    if (grouped.length === 0) {
      throw new InvalidEndpointError(
        "batch",
        `Cannot ${verb} webhook as 'batch' groups window.closed, alert.fired and ` +
          `event.processed deliveries and 'eventTypes' (${
            eventTypes.join(", ")
          }) has none: add one or leave batch out`,
      );
    }
  }
  return { maxEvents: batch.maxEvents, maxWaitMs: batch.maxWaitMs, eventTypes: grouped };
}

/** Whether `endpoint` hears from `stream`. */
function hears(endpoint: Endpoint, stream: string): boolean {
  return endpoint.streams === null || endpoint.streams.includes(stream);
}

function configOf(endpoint: Endpoint): EndpointConfig {
  const { disabled: _d, disabledReason: _r, failingSinceMs: _f, ...config } = endpoint;
  return structuredClone(config);
}
