/**
 * The streams an instance serves: the config file's (authoritative,
 * read-only through the API) and those created at run time through the API,
 * kept in a {@linkcode DefinitionStore} shared by every instance.
 *
 * How a change reaches every instance within 5 s without adding a store
 * call to ingest:
 * - every apply reports the stream's definition version, read in the same
 *   atomic step ({@linkcode ApplyResult.definitionVersion}); an instance
 *   holding an older one reloads that definition in the background;
 * - a timer polls the versions of all names (one store call every
 *   {@linkcode RegistryOptions.pollMs}), which finds new, changed and
 *   deleted streams on instances that receive no events for them;
 * - an unknown name on ingest or read is looked up once, and remembered as
 *   unknown for {@linkcode RegistryOptions.missTtlMs}, with at most
 *   {@linkcode RegistryOptions.lookupsPerSecond} lookups a second, so unknown
 *   names cannot hammer the store.
 *
 * Each incarnation of a stream has a generation; the store keeps its data
 * under {@linkcode generationKey}, so a stream deleted and created again
 * starts empty. {@linkcode StreamRegistry.wrap} gives the store every other
 * module uses: it takes stream names and adds the generation.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  type AlertFiring,
  type ApplyResult,
  type ClosedWindows,
  type CloseOptions,
  type CounterMeta,
  type DefinitionSource,
  type DefinitionStore,
  finalThrough,
  type FiredAlerts,
  type FireOptions,
  generationKey,
  isStoreDown,
  type KeepFinal,
  type LogEntry,
  type LogPosition,
  type LogRecord,
  MemoryDefinitionStore,
  type ReadOptions,
  type ReadStats,
  type ResultLogBounds,
  type SessionRange,
  type SessionValues,
  type Store,
  type StoreBatch,
  type StoredDefinition,
  StoreUnavailableError,
  StreamChangedError,
  type StreamStats,
  type TimeRange,
  type WindowRead,
  type WindowValues,
} from "../store/mod.ts";
import { OutageLog, withinPeriod } from "../telemetry/mod.ts";
import {
  AS_STORED,
  closeTimeOf,
  type CompiledStream,
  compileStreamDefinition,
  ConfigError,
  emptyPathPartProblem,
  emptyPathParts,
  type FormerCounter,
  largeSchemaExpansion,
  malformedDuration,
  malformedOrigin,
  malformedSchemaKeyword,
  oversizedPatterns,
  receiveTimeMaxFuture,
  repeatedGroupBy,
  repeatedGroupByProblem,
  sessionMaxGroups,
  shortWindowProblem,
  shortWindows,
  unknownAlertField,
  unknownCounterFieldProblem,
} from "./compile.ts";
import { LookupBudget } from "./lookup_budget.ts";
import { keysTakenAt } from "./schema.ts";
import { closedBefore } from "./final.ts";

const logger = getLogger(["edgestream", "streams"]);

/** Why a stream definition change was refused; `code` is the API error code. */
export type DefinitionProblem =
  | "invalid_definition"
  | "stream_from_config"
  | "counter_changed"
  | "stream_not_found"
  | "definition_conflict"
  | "stream_lookup_busy"
  | "precondition_failed";

/**
 * What a change of a stream's definition expects of the stored one (HTTP's
 * `If-Match` and `If-None-Match: *`), so that two admins editing the same
 * stream do not silently overwrite each other.
 */
export interface DefinitionPrecondition {
  /** One of these versions must be the stream's, which must exist (none given: it never holds). */
  versions?: readonly number[];
  /**
   * Versions named by weak entity tags only (`W/"3"`): `If-Match` compares strongly, so they
   * match no version; a refusal names them. @default {none}
   */
  weakVersions?: readonly number[];
  /** The stream must exist (any version). */
  exists?: boolean;
  /** The stream must not exist (create only). */
  absent?: boolean;
}

function checkPrecondition(
  name: string,
  record: StoredDefinition | null,
  expected: DefinitionPrecondition | undefined,
): void {
  if (!expected) return;
  const unmet = unmetPrecondition(
    expected,
    record !== null && !record.deleted ? record.version : null,
  );
  if (unmet !== undefined) {
    throw new StreamDefinitionError(
      "precondition_failed",
      `Stream '${name}' ${unmet}`,
    );
  }
}

/**
 * What of `expected` does not hold of a thing at `version` (null: it does not exist), with what
 * to do, worded to follow its name in a refusal (`is not at version 3 (it is at version 4): read
 * it again and retry`), or undefined when it holds: for a stream's and a webhook endpoint's
 * `If-Match`/`If-None-Match`. `If-None-Match: *` on one that exists is not told to retry, which
 * cannot succeed while it exists.
 */
export function unmetPrecondition(
  expected: DefinitionPrecondition,
  version: number | null,
): string | undefined {
  const live = version !== null;
  const now = live ? `is at version ${version}` : "does not exist";
  let problem: string | undefined;
  if (expected.absent && live) problem = "exists";
  else if ((expected.exists || expected.versions) && !live) problem = "does not exist";
  else if (expected.versions && live && !expected.versions.includes(version)) {
    problem = expected.versions.length === 0
      ? "is at no version named by a strong tag"
      : `is not at version ${expected.versions.join(" or ")}`;
  }
  if (problem === undefined) return undefined;
  const stated = problem === "does not exist" ? problem : `${problem} (it ${now})`;
  const weak = expected.weakVersions?.length
    ? `; a weak tag (${
      expected.weakVersions.map((one) => `W/"${one}"`).join(", ")
    }) matches no version, as If-Match compares strongly: send '"<version>"'`
    : "";
  const advice = problem === "exists"
    ? "If-None-Match: * holds only while it does not exist"
    : "read it again and retry";
  return `${stated}${weak}: ${advice}`;
}

/** A stream definition change was refused. */
export class StreamDefinitionError extends Error {
  /** What was wrong. */
  readonly code: DefinitionProblem;

  constructor(code: DefinitionProblem, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StreamDefinitionError";
    this.code = code;
  }
}

/** A config stream whose counters conflict with those the store holds for its name. */
export class ConfigConflictError extends ConfigError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigConflictError";
  }
}

/** A config error about one stream's definition, its paths relative to the definition. */
function definitionProblem(name: string, error: ConfigError): string {
  // The definition itself (a PUT of null, say) is the body's root.
  return error.message.replace(/^Invalid config: /, "").replaceAll(`streams.${name}.`, "")
    .replaceAll(`streams.${name}:`, "(root):");
}

/**
 * What a refused `PUT` body adds when it is wrapped as a config file wraps a definition
 * (`{"streams": {"<name>": …}}` or `{"<name>": …}`, a key no definition takes), or is the stream
 * as `GET /v1/streams/{stream}` answers it, its definition under `"definition"` (an admin's
 * read, edit and send back with the read's `ETag` in `If-Match`): send what it wraps. Empty
 * otherwise.
 */
function wrappedHint(name: string, raw: unknown): string {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return "";
  const taken = keysTakenAt(["streams", name]) ?? [];
  const wrapper = ["streams", name].find((key) => Object.hasOwn(raw, key) && !taken.includes(key));
  if (wrapper !== undefined) {
    return `; the body is one stream's definition, what a config file's streams.${name} holds, ` +
      `not wrapped in {"${wrapper}": …}`;
  }
  const definition = Object.hasOwn(raw, "definition")
    ? (raw as Record<string, unknown>).definition
    : undefined;
  if (
    typeof definition === "object" && definition !== null && !Array.isArray(definition) &&
    !taken.includes("definition")
  ) {
    return `; the body is one stream's definition, not the stream as GET /v1/streams/${name} ` +
      `answers it: send what its "definition" holds`;
  }
  return "";
}

/** A stream stored through the API that this release cannot compile. */
export interface UnservableStream {
  /** The stored definition's version. */
  version: number;
  /** Why it does not compile. */
  error: string;
}

/**
 * Streams by name as the routes read them. A registry that knows more than the streams it serves
 * (where each came from, its incarnation, streams it stores but cannot serve, names it may look
 * up) says so through the optional methods, as {@linkcode StreamRegistry} does; a plain map has
 * none of them, and is read as config streams of generation 0, with nothing else stored.
 */
export interface StreamCatalog extends ReadonlyMap<string, CompiledStream> {
  /**
   * Every stream stored through the API whose definition this instance cannot compile, by name:
   * what `GET /v1/streams` lists beside the served ones (see {@linkcode StreamRegistry}).
   */
  unservableStreams?(): Iterable<[string, UnservableStream]>;
  /** Why the stored API stream `name` is not served (its definition does not compile), if so. */
  unservable?(name: string): UnservableStream | undefined;
  /** The stored version of `name` when it is another deployment's config stream, not served here. */
  definedElsewhere?(name: string): { version: number } | undefined;
  /** A served stream's source and version (`GET /v1/streams/{stream}`). */
  describe?(name: string): Pick<RegisteredStream, "source" | "version"> | undefined;
  /** The generation of a stream's data (0 for an unknown name). */
  generationOf?(name: string): number;
  /**
   * The generation a batch built from a served definition (its `counters`) belongs to; without
   * it, every batch is of its stream's one incarnation.
   */
  generationOfBatch?(batch: { stream: string; counters: readonly CounterMeta[] }): number;
  /**
   * Whether a batch was built from an incarnation of its stream no longer served (deleted, or
   * deleted and created again, since); without it, none is.
   */
  outlived?(batch: Pick<StoreBatch, "stream" | "counters">): boolean;
  /** A stream not held (yet), looked up where the definitions are kept. */
  find?(name: string): Promise<CompiledStream | undefined>;
  /** Reads where the definitions are kept now, and serves the streams stored since. */
  poll?(): Promise<void>;
}

/** A served stream and where it came from. */
export interface RegisteredStream {
  /** The compiled stream. */
  stream: CompiledStream;
  /** The config file or the API. */
  source: DefinitionSource;
  /** Its definition version in the store (0 before the config was registered). */
  version: number;
  /** Its incarnation; the store keeps its data under {@linkcode generationKey}. */
  generation: number;
}

/** Options for {@linkcode StreamRegistry}. */
export interface RegistryOptions {
  /** Where definitions are shared. @default {a private MemoryDefinitionStore} */
  definitions?: DefinitionStore;
  /** Clock (ms) for the negative cache and the lookup budget. @default {Date.now} */
  now?: () => number;
  /** How often the versions are polled by {@linkcode StreamRegistry.startPolling}. @default {2000} */
  pollMs?: number;
  /** How long an unknown name is remembered as unknown. @default {5000} */
  missTtlMs?: number;
  /** Most unknown names remembered; the oldest go first. @default {10000} */
  maxMisses?: number;
  /** Most store lookups of unknown names a second. @default {20} */
  lookupsPerSecond?: number;
  /**
   * The store of the streams' data (the one given to {@linkcode StreamRegistry.wrap}): a
   * definition that adds a counter to a stream with events reads the stream's watermark there, to
   * mark the windows the counter missed as partial. Without it no window is marked partial.
   */
  data?: Store;
}

/** What identifies a counter's data: its window, aggregate and group-by, as JSON text. */
export function counterIdentities(stream: CompiledStream): Record<string, string> {
  const identities: Record<string, string> = {};
  for (const counter of stream.counters) {
    identities[counter.name] = JSON.stringify({
      window: counter.window,
      aggregate: counter.aggregate,
      groupBy: counter.groupBy,
    });
  }
  return identities;
}

/** The counters whose identity differs between two sets (present in both). */
function changedCounters(
  stored: Record<string, string>,
  next: Record<string, string>,
): string[] {
  return Object.keys(next).filter((name) =>
    Object.hasOwn(stored, name) && stored[name] !== next[name]
  );
}

/**
 * The identities to store with a new definition of a live stream: every
 * counter it has counted in this generation, removed ones too, so a name
 * removed and added again with another meaning is refused as a change (its
 * panes would be read under the new meaning).
 */
/** Whether two JSON values are the same, whatever the order of their objects' keys. */
function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a, sortedKeys) === JSON.stringify(b, sortedKeys);
}

function sortedKeys(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  return Object.fromEntries(
    Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

/**
 * Most counter names a live stream's record keeps: those it has now and those it had (see
 * {@linkcode everCounted}). Without it, a `PUT` naming 64 new counters each time, by a key limited
 * to its stream, grew the record every instance polls and compiles without end.
 */
export const MAX_COUNTED_NAMES = 1024;

function everCounted(
  record: StoredDefinition,
  next: Record<string, string>,
): Record<string, string> {
  return { ...record.counters, ...next };
}

/** The counters a definition as written has now (its `counters` object's keys). */
function definedCounters(definition: unknown): string[] {
  const counters = (definition as { counters?: unknown } | null)?.counters;
  return counters !== null && typeof counters === "object" ? Object.keys(counters) : [];
}

/**
 * Sets each counter's {@linkcode CompiledCounter.partialBefore} from a record's bounds (none: no
 * counter missed events). Values only: the counters keep their shape.
 */
function markPartial(
  stream: CompiledStream,
  bounds: Record<string, number> | undefined,
  counted: Record<string, string> = {},
): CompiledStream {
  for (const counter of stream.counters) {
    counter.partialBefore = bounds && Object.hasOwn(bounds, counter.name)
      ? bounds[counter.name]
      : null;
  }
  const former = formerCounters(stream, counted, bounds);
  if (former.length > 0) stream.formerCounters = former;
  else delete stream.formerCounters;
  return stream;
}

/**
 * The counters of `counted` (a record's identities: every counter of its incarnation) that
 * `stream` no longer has, as their identities describe them; one whose identity does not read
 * as one (written by another release) is left out, its results unread as before.
 */
function formerCounters(
  stream: CompiledStream,
  counted: Record<string, string>,
  bounds: Record<string, number> | undefined,
): FormerCounter[] {
  const former: FormerCounter[] = [];
  for (const [name, identity] of Object.entries(counted)) {
    if (stream.counters.some((counter) => counter.name === name)) continue;
    let parsed: Partial<FormerCounter>;
    try {
      parsed = JSON.parse(identity);
    } catch {
      continue;
    }
    const { window, aggregate, groupBy } = parsed;
    if (
      typeof window?.kind !== "string" || typeof aggregate?.kind !== "string" ||
      !Array.isArray(groupBy)
    ) continue;
    const partialBefore = bounds && Object.hasOwn(bounds, name) ? bounds[name] : null;
    former.push({ name, window, aggregate, groupBy, partialBefore });
  }
  return former;
}

function counterChangedMessage(
  stream: string,
  counters: string[],
  identities: { stored: StoredDefinition; next: Record<string, string> },
): string {
  const name = counters[0];
  const [stored, now] = [identities.stored.counters[name], identities.next[name]];
  const held = (identities.stored.definition as { counters?: object } | null)?.counters ?? {};
  if (!Object.hasOwn(held, name)) {
    return `Stream '${stream}' had a counter '${name}' with another window, aggregate or groupBy before it was removed (stored: ${stored}, now: ${now}); a name keeps its meaning while the stream lives, as its data may still be read under it, so add the counter under a new name`;
  }
  return `Stream '${stream}' cannot change the window, aggregate or groupBy of counter '${name}' (stored: ${stored}, now: ${now}); its data was counted under the stored one, so add a new counter instead`;
}
const WRITE_ATTEMPTS = 5;

/**
 * Longest time (ms) between two polls that read the whole definition index. In between a poll
 * reads it only when its change mark moved; writes by a release that sets no mark (older
 * instances during a rolling deploy) are found by the next whole read.
 */
export const INDEX_READ_MS = 30_000;

/**
 * The streams this instance serves, by name: a `ReadonlyMap` of compiled
 * streams that changes as definitions change. It has every optional method of
 * {@linkcode StreamCatalog} (`Required`), so a renamed one fails the type check
 * instead of leaving the routes with a plain map's answer.
 *
 * @example
 * ```ts
 * import { compileConfig, StreamRegistry } from "./mod.ts";
 *
 * const registry = new StreamRegistry(compileConfig({ streams: {} }));
 * await registry.put("clicks", {
 *   counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
 * });
 * console.log([...registry.keys()]); // ["clicks"]
 * ```
 */
export class StreamRegistry implements Required<StreamCatalog> {
  #config: ReadonlyMap<string, CompiledStream>;
  #entries = new Map<string, RegisteredStream>();
  #definitions: DefinitionStore;
  #now: () => number;
  #pollMs: number;
  #missTtlMs: number;
  #maxMisses: number;
  /**
   * Unknown names → when the look-up that found them unknown began (ms); looked up again
   * `missTtlMs` later.
   */
  #misses = new Map<string, number>();
  #lookups: LookupBudget;
  /** Versions seen for names not served (deleted, or another deploy's config). */
  #seen = new Map<string, number>();
  #loading = new Map<string, Promise<CompiledStream | undefined>>();
  /** Config streams recorded in the store, being recorded, or found in conflict with it. */
  #recorded = new Map<string, true | Promise<void> | ConfigConflictError>();
  /** API streams stored with a definition this release cannot compile, and why. */
  #unservable = new Map<string, UnservableStream>();
  /** Names another deployment's config file recorded (not this instance's file) → their version. */
  #foreign = new Map<string, number>();
  /**
   * Generation of each served definition, by its compiled counters, the list and each counter (a
   * sweep closes some of a stream's counters at a time; see generationOfBatch).
   */
  #generations = new WeakMap<readonly CounterMeta[] | CounterMeta, number>();
  /** Version of each served definition, by its compiled counters (see versionOfBatch). */
  #versions = new WeakMap<readonly CounterMeta[], number>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #polling: Promise<void> | undefined;
  /** The failures to record each config stream not recorded yet, by name. */
  #recordLogs = new Map<string, OutageLog>();
  #pollLog = new OutageLog(logger, {
    failed: "Cannot poll stream definitions: {error}",
    recovered: "Stream definitions polled again",
  });
  /** The definition index as the last poll that read it found it, with its change mark. */
  #index: { mark: string; versions: Map<string, number>; readAtMs: number } | undefined;
  /** The store of the streams' data ({@linkcode RegistryOptions.data}): where a watermark is read. */
  #data: Store | undefined;

  constructor(config: ReadonlyMap<string, CompiledStream>, options: RegistryOptions = {}) {
    this.#config = config;
    for (const stream of config.values()) {
      this.#serve({ stream, source: "config", version: 0, generation: 0 });
    }
    this.#definitions = options.definitions ?? new MemoryDefinitionStore();
    this.#now = options.now ?? Date.now;
    this.#pollMs = options.pollMs ?? 2_000;
    this.#missTtlMs = options.missTtlMs ?? 5_000;
    this.#maxMisses = options.maxMisses ?? 10_000;
    this.#lookups = new LookupBudget(options.lookupsPerSecond ?? 20, this.#now);
    this.#data = options.data;
  }

  /**
   * Takes `store` as the store of the streams' data ({@linkcode RegistryOptions.data}) when the
   * registry was built without one; `createApp` gives it the store it serves, so a registry
   * handed to it still marks partial windows. A data store already given stays.
   */
  useDataStore(store: Store): void {
    this.#data ??= store;
  }

  // ReadonlyMap<string, CompiledStream>: what the route modules, the live hub,
  // the sweep and the webhook service read.
  get size(): number {
    return this.#entries.size;
  }
  get(name: string): CompiledStream | undefined {
    return this.#entries.get(name)?.stream;
  }
  has(name: string): boolean {
    return this.#entries.has(name);
  }
  *keys(): MapIterator<string> {
    yield* this.#entries.keys();
  }
  *values(): MapIterator<CompiledStream> {
    for (const entry of this.#entries.values()) yield entry.stream;
  }
  *entries(): MapIterator<[string, CompiledStream]> {
    for (const [name, entry] of this.#entries) yield [name, entry.stream];
  }
  [Symbol.iterator](): MapIterator<[string, CompiledStream]> {
    return this.entries();
  }
  forEach(
    callback: (
      value: CompiledStream,
      key: string,
      map: ReadonlyMap<string, CompiledStream>,
    ) => void,
  ): void {
    for (const [name, entry] of this.#entries) callback(entry.stream, name, this);
  }

  /** A served stream with its source, version and generation. */
  describe(name: string): RegisteredStream | undefined {
    return this.#entries.get(name);
  }

  /** The generation of a stream's data (0 for an unknown name). */
  generationOf(name: string): number {
    return this.#entries.get(name)?.generation ?? 0;
  }

  /**
   * The generation a batch belongs to: that of the definition it was built
   * from (its `counters` are that compiled stream's, or some of them), so a
   * request that was being ingested (or a sweep that was closing) while the
   * stream was deleted and created again lands in the old incarnation, never
   * in the new one.
   */
  generationOfBatch(batch: { stream: string; counters: readonly CounterMeta[] }): number {
    const first = batch.counters[0];
    return this.#generations.get(batch.counters) ??
      (first === undefined ? undefined : this.#generations.get(first)) ??
      this.generationOf(batch.stream);
  }

  /**
   * The version of the definition a batch was built from: the one served when its `counters` are
   * that one's (a config stream's file keeps them across versions), else that of the definition
   * served before whose they are (a reload came between the batch and its apply). The store
   * refuses a batch older than a write that added counters (see `StoreBatch.definitionVersion`).
   */
  versionOfBatch(batch: Pick<StoreBatch, "stream" | "counters">): number | undefined {
    const entry = this.#entries.get(batch.stream);
    if (entry !== undefined && entry.stream.counterMetas === batch.counters) {
      return this.definitionVersionOf(batch.stream);
    }
    return this.#versions.get(batch.counters) ?? entry?.version;
  }

  /**
   * The version of the definition this instance serves for `name`: for a config stream, that of
   * the record of its own file (a later record, another deployment's, is noted but not served);
   * undefined when none is served.
   */
  definitionVersionOf(name: string): number | undefined {
    const entry = this.#entries.get(name);
    if (entry === undefined) return undefined;
    // A config stream's is its file's record's once recorded (its entry's version follows later
    // records, see #adopt); an API stream's, its entry's (see #serve).
    return entry.stream.definitionVersion ?? entry.version;
  }

  /**
   * Whether a batch was built from an incarnation of its stream this
   * instance no longer serves: the stream was deleted, or deleted and
   * created again, since (see {@linkcode StreamChangedError}).
   */
  outlived(batch: Pick<StoreBatch, "stream" | "counters">): boolean {
    const generation = this.#generations.get(batch.counters);
    if (generation === undefined) return false;
    return this.#entries.get(batch.stream)?.generation !== generation;
  }

  /**
   * Reads a stream's record again and serves what it says; resolves once
   * done. A read of its own, not one already running, which may have started
   * before the change that made the caller ask.
   */
  async reload(name: string): Promise<void> {
    this.#adopt(name, await this.#definitions.get(name));
  }

  /**
   * Why a stream stored through the API is not served: its stored definition
   * does not compile in this release (a pattern written before patterns had to
   * run in linear time, say). `undefined` for any other name.
   */
  unservable(name: string): UnservableStream | undefined {
    return this.#unservable.get(name);
  }

  /**
   * Every stream stored through the API that this instance found it cannot compile (see
   * {@linkcode unservable}), by name: what `GET /v1/streams` lists beside the served ones, so an
   * operator finds it to replace or delete it.
   */
  *unservableStreams(): MapIterator<[string, UnservableStream]> {
    yield* this.#unservable.entries();
  }

  /**
   * Whether `name` is recorded in the store as a stream of another deployment's config file
   * (another `EDGESTREAM_CONFIG` on the same store), which this instance's file lacks: it is not
   * served here, as this instance cannot know that file's intent. The stored version, or
   * `undefined` for any other name.
   */
  definedElsewhere(name: string): { version: number } | undefined {
    const version = this.#foreign.get(name);
    return version === undefined ? undefined : { version };
  }

  #serve(entry: RegisteredStream): void {
    this.#unservable.delete(entry.stream.name);
    this.#foreign.delete(entry.stream.name);
    this.#entries.set(entry.stream.name, entry);
    this.#noteGeneration(entry.stream.counterMetas, entry.generation);
    this.#versions.set(entry.stream.counterMetas, entry.version);
    // What a read holding the stream judges by (see closedBefore); a config stream's is set when
    // its file is recorded (see #recordOnce).
    if (entry.source === "api") entry.stream.definitionVersion = entry.version;
  }

  /**
   * The stream called `name`, looking it up in the store when it is not
   * served yet (a stream another instance just created). Unknown names are
   * remembered for `missTtlMs`, and lookups are bounded per second: past the
   * bound (requests for many unknown names) a name not known either way
   * throws `StreamDefinitionError` `stream_lookup_busy`, to be tried again,
   * rather than be answered unknown while it may exist.
   */
  async find(name: string): Promise<CompiledStream | undefined> {
    const held = this.#entries.get(name);
    if (held) return held.stream;
    const now = this.#now();
    const missedAt = this.#misses.get(name);
    // Not when the clock is before it (stepped back): else a stream created on another instance
    // would stay unknown here until the clock passed that time again, bar the poll.
    if (missedAt !== undefined && withinPeriod(now, missedAt, this.#missTtlMs)) return undefined;
    if (!this.#loading.has(name) && !this.#lookups.take()) {
      throw new StreamDefinitionError(
        "stream_lookup_busy",
        `Stream '${name}' is not served by this instance yet, and it looks up no more than ${this.#lookups.perSecond} unknown names a second: try again in a second`,
      );
    }
    let found: CompiledStream | undefined;
    try {
      found = await this.#load(name);
    } catch (error) {
      // A read, before the request does anything: whatever it was to do, none of it was.
      if (!(error instanceof StoreUnavailableError) || error.outcome === "not_applied") throw error;
      throw new StoreUnavailableError(error.message, { cause: error, outcome: "not_applied" });
    }
    if (!found) this.#rememberMiss(name, now);
    return found;
  }

  #rememberMiss(name: string, now: number): void {
    this.#misses.delete(name);
    this.#misses.set(name, now);
    if (this.#misses.size > this.#maxMisses) {
      this.#misses.delete(this.#misses.keys().next().value!);
    }
  }

  /** Reads a name's record and serves what it says (single flight per name). */
  #load(name: string): Promise<CompiledStream | undefined> {
    let pending = this.#loading.get(name);
    if (!pending) {
      pending = this.#definitions.get(name).then((record) => this.#adopt(name, record)).finally(
        () => this.#loading.delete(name),
      );
      this.#loading.set(name, pending);
    }
    return pending;
  }

  /** Serves a stored record: an API stream is compiled, a deleted one dropped. */
  #adopt(name: string, record: StoredDefinition | null): CompiledStream | undefined {
    const held = this.#entries.get(name);
    if (this.#config.has(name)) {
      // The file is authoritative here: note the version, so it is not reloaded again. A record
      // deleted, taken by the API or recorded under another generation (a force delete, another
      // deployment) is recorded again by the next apply, read or poll, and a conflict found with
      // an earlier record is checked again.
      if (held && record && record.version > held.version) {
        const moved = record.deleted || record.source !== "config" ||
          record.generation !== held.generation;
        held.version = record.version;
        const state = this.#recorded.get(name);
        if (state instanceof ConfigConflictError || (state === true && moved)) {
          this.#recorded.delete(name);
        }
        this.#closeByLater(held, moved ? undefined : record);
      }
      return held?.stream;
    }
    if (record === null || record.deleted || record.source === "config") {
      this.#unservable.delete(name);
      if (record && !record.deleted) this.#foreign.set(name, record.version);
      else this.#foreign.delete(name);
      if (record) this.#seen.set(name, record.version);
      this.#entries.delete(name);
      return undefined;
    }
    if (held && held.version >= record.version) return held.stream;
    // A read that started before this instance deleted (or replaced) the stream may end after
    // it: a record older than one already seen must not bring the stream back.
    if (!held && record.version <= (this.#seen.get(name) ?? 0)) return undefined;
    let stream: CompiledStream;
    try {
      // As it was stored: a groupBy field named twice (refused since) is served as it counted, a
      // schema keyword not of its kind, an origin no browser sends, a duration with a fraction
      // of a millisecond or a unit given twice, a window shorter than a second, patterns past
      // the definition's budget or a pattern's own, an alert or a counter reading a field it can
      // never have, or a field path with an empty part (refused since) compiled as it was.
      stream = markPartial(
        compileStreamDefinition(name, record.definition, AS_STORED),
        record.partialBefore,
        record.counters,
      );
    } catch (error) {
      // Written by an older release (a pattern since refused, say) or a newer one. Not served
      // here, as on an instance that never held it: one held before must not keep taking events
      // by a definition the store no longer has. Noted once, until a newer version.
      logger.error("Cannot compile stored stream '{stream}' version {version}: {error}", {
        stream: name,
        version: record.version,
        error,
      });
      this.#seen.set(name, record.version);
      this.#entries.delete(name);
      // The API's now, not another deployment's config stream's (a record this instance saw
      // before a force delete and this write elsewhere, between two of its polls): its 409 says
      // why this definition is not served.
      this.#foreign.delete(name);
      this.#unservable.set(name, {
        version: record.version,
        error: error instanceof ConfigError ? definitionProblem(name, error) : String(error),
      });
      return undefined;
    }
    // Served as stored, though a PUT of it now is refused: said once a version loaded, so that
    // an admin finds it (a config file's are startup warnings).
    const counterField = unknownCounterFieldProblem(stream);
    const problems = [
      malformedSchemaKeyword(stream),
      largeSchemaExpansion(stream),
      malformedOrigin(stream),
      malformedDuration(stream),
      oversizedPatterns(stream),
      unknownAlertField(stream),
      sessionMaxGroups(stream),
      receiveTimeMaxFuture(stream),
      counterField &&
      `${counterField.problem} (the field is always missing: ${counterField.consequence}); ${counterField.fix}`,
    ];
    for (const problem of problems) {
      if (problem === undefined) continue;
      logger.warn(
        "Stored stream '{stream}' version {version}: {problem}; served as stored before this check; replace it with PUT /v1/streams/{stream}, which refuses it as it is",
        { stream: name, version: record.version, problem },
      );
    }
    // Unlike those, a PUT may keep such a counter as it is (it cannot be made longer and keep its
    // data), as a groupBy field named twice.
    for (const short of shortWindows(stream)) {
      logger.warn(
        "Stored stream '{stream}' version {version}: {problem}; served as stored before this check (its windows may close later and later behind its events); a PUT may keep this counter as it is, but adds none this short",
        { stream: name, version: record.version, problem: shortWindowProblem(name, short) },
      );
    }
    for (const empty of emptyPathParts(stream)) {
      const put = empty.counter === undefined
        ? `replace it with PUT /v1/streams/${name}, which refuses it as it is`
        : "a PUT may keep this counter as it is, but adds none with such a path";
      logger.warn(
        "Stored stream '{stream}' version {version}: {problem}; served as stored before this check (it reads the key written so, else the parts in turn); {put}",
        { stream: name, version: record.version, problem: emptyPathPartProblem(name, empty), put },
      );
    }
    this.#serve({ stream, source: "api", version: record.version, generation: record.generation });
    this.#misses.delete(name);
    return stream;
  }

  /**
   * What a config stream's sweep closes by once another deployment's file replaced its record
   * (`later`, same generation, not deleted; see {@linkcode CompiledStream.closeTerms}): this
   * instance keeps serving its file, but the store refuses a close by the file's version while
   * that record kept final, so if that deployment is withdrawn no instance would close the
   * stream's windows. Cleared (`later` undefined) when the record moved elsewhere (deleted, the
   * API's, another generation) and when this instance records its file again (see #recordOnce).
   * A record this release cannot compile (a newer release's, with an option it does not know)
   * still gives its lateness and idle, read from its `time` alone (see {@linkcode closeTimeOf}).
   * Only when those cannot be read either are there no terms: the sweep closes by the file's
   * version, which the store refuses while that record kept final, until an instance that serves
   * the record closes the stream, this one restarts, or the record moves.
   */
  #closeByLater(held: RegisteredStream, later: StoredDefinition | undefined): void {
    const own = held.stream;
    if (later === undefined) {
      delete own.closeTerms;
      return;
    }
    // The same parsers and defaults as compiling it: a record this release cannot compile still
    // gives its lateness and idle.
    const stored = closeTimeOf(later.definition);
    // Once a version: the config branch of #adopt runs once for each later one.
    if (stored === undefined) {
      delete own.closeTerms;
      logger.error(
        "Cannot read the lateness and idle of config stream '{stream}' version {version}, which another deployment's file recorded: this instance's sweeps close by its own file's version, which the store refuses while a later definition kept final, until it restarts or the record moves",
        { stream: own.name, version: later.version },
      );
      return;
    }
    own.closeTerms = {
      latenessMs: Math.max(own.latenessMs, stored.latenessMs),
      // The watermark follows the clock only past the longer idle; null (never) is the longest.
      idleMs: own.idleMs === null || stored.idleMs === null
        ? null
        : Math.max(own.idleMs, stored.idleMs),
      definitionVersion: later.version,
    };
  }

  /**
   * Told the store's definition version of a stream (from an apply): a newer
   * one than served is reloaded in the background.
   */
  noteVersion(name: string, version: number): void {
    const known = this.#entries.get(name)?.version ?? this.#seen.get(name) ?? 0;
    if (version <= known || this.#loading.has(name)) return;
    this.#load(name).catch((error) =>
      logger.error("Cannot reload stream '{stream}': {error}", { stream: name, error })
    );
  }

  /** Resolves once the reloads started so far are done. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#loading.values(), this.#polling]);
  }

  /**
   * Reads every name's version once (the index itself only when it changed since the last poll,
   * and at least every {@linkcode INDEX_READ_MS}) and reloads the new and changed ones. One at a
   * time, each after those called before it (the timer's, a webhook sweep's): overlapping, an
   * older whole read ending last would put back an index without a stream created since. Polls
   * called while one waits to start share it: it starts after each was called, so it reads what
   * each would, in one read.
   */
  poll(): Promise<void> {
    if (this.#pollWaiting !== undefined) return this.#pollWaiting;
    const run: Promise<void> = this.#pollTail.then(() => {
      // Started: a poll called from now on may have been asked for by a change it misses.
      this.#pollWaiting = undefined;
      return this.#pollOnce();
    });
    this.#pollWaiting = run;
    this.#pollTail = run.catch(() => {});
    return run;
  }

  /** The last poll called, settled: where the next waits (see {@linkcode poll}). */
  #pollTail: Promise<void> = Promise.resolve();
  /** The poll called that has not started yet, which a poll called now joins. */
  #pollWaiting: Promise<void> | undefined;

  async #pollOnce(): Promise<void> {
    const nowMs = this.#now();
    // Not within the period when the clock is before the last read (stepped back): else the
    // whole read would be put off by the length of the step.
    const due = this.#index === undefined ||
      !withinPeriod(nowMs, this.#index.readAtMs, INDEX_READ_MS);
    const read = await this.#definitions.versionsSince(due ? undefined : this.#index!.mark);
    if (read.versions !== null) this.#index = { ...read, versions: read.versions, readAtMs: nowMs };
    else this.#index!.mark = read.mark;
    const versions = this.#index!.versions;
    const loads: Promise<unknown>[] = [];
    for (const [name, version] of versions) {
      const known = this.#entries.get(name)?.version ?? this.#seen.get(name) ?? 0;
      if (version > known) loads.push(this.#load(name));
    }
    // Only a whole read says a name is gone: a stream an older release created (it moves no
    // mark) may be served by a lookup since the last one, and is not in the list kept.
    if (read.versions !== null) {
      for (const [name, entry] of this.#entries) {
        if (entry.source === "api" && !versions.has(name)) this.#entries.delete(name);
      }
      for (const name of this.#unservable.keys()) {
        if (!versions.has(name)) this.#unservable.delete(name);
      }
      for (const name of this.#foreign.keys()) {
        if (!versions.has(name)) this.#foreign.delete(name);
      }
    }
    await Promise.all(loads);
    // After the loads, which may have found a config stream's record moved (see #adopt).
    await this.#recordUnrecorded();
  }

  /** Tries to record the config streams not recorded yet (the store was unreachable). */
  async #recordUnrecorded(): Promise<void> {
    for (const name of this.#config.keys()) {
      const state = this.#recorded.get(name);
      if (state === true || state instanceof ConfigConflictError) continue;
      try {
        await this.#record(name);
        this.#recordLogs.delete(name);
        logger.info("Recorded config stream '{stream}' in the store", { stream: name });
      } catch (error) {
        // Not recorded yet: its first event tries again, and so does the next poll; the rest
        // of this poll (streams created at run time) goes on.
        if (error instanceof ConfigConflictError) {
          logger.error("Config stream '{stream}' takes no events: {error}", {
            stream: name,
            error: error.message,
          });
        } else {
          // Every poll tries again: the store unavailable is said when that starts and once a
          // minute (the line above says when it worked).
          let log = this.#recordLogs.get(name);
          if (log === undefined) {
            log = new OutageLog(logger, {
              failed: "Cannot record config stream '{stream}' yet: {error}",
            });
            this.#recordLogs.set(name, log);
          }
          log.failure(error, { stream: name });
        }
      }
    }
  }

  /** Polls every `pollMs` until {@linkcode stop}; a failed poll is logged and retried next time. */
  startPolling(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      if (this.#polling) return;
      // The store unavailable is a warning, as a sweep's failure is, said when the outage starts
      // and ends and once a minute between: the next poll tries again.
      this.#polling = this.poll().then(
        () => this.#pollLog.success(),
        (error) => this.#pollLog.failure(error),
      ).finally(() => this.#polling = undefined);
    }, this.#pollMs);
  }

  /** Stops polling. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Records the config file's streams in the store and checks them against
   * what it holds: a config stream whose counter changed its window,
   * aggregate or groupBy throws {@linkcode ConfigConflictError} naming the
   * stream and counter. Run at startup; a stream it could not record (the
   * store unreachable) is recorded before its first apply (see
   * {@linkcode recordConfigStream}) and tried again by every poll.
   */
  async registerConfig(): Promise<void> {
    for (const name of this.#config.keys()) await this.#record(name);
  }

  /** Whether the config stream `name` is recorded in the store (true for any other name). */
  isRecorded(name: string): boolean {
    return this.#recorded.get(name) === true || !this.#config.has(name);
  }

  /**
   * Records the config stream `name` unless it is: what an apply to it waits
   * for, so no event is counted before the store's counters were checked.
   * Throws the store's error while it cannot be reached, and
   * {@linkcode StreamDefinitionError} `counter_changed` when the stored
   * counters conflict with the file's (the stream then takes no events here).
   */
  async recordConfigStream(name: string): Promise<void> {
    try {
      await this.#record(name);
    } catch (error) {
      if (error instanceof ConfigConflictError) {
        throw new StreamDefinitionError("counter_changed", error.message, { cause: error });
      }
      if (error instanceof ConfigError) {
        throw new StoreUnavailableError(error.message, { cause: error, outcome: "not_applied" });
      }
      // Recording comes before the events are applied: whatever the store did, they were not.
      if (error instanceof StoreUnavailableError && error.outcome !== "not_applied") {
        throw new StoreUnavailableError(error.message, { cause: error, outcome: "not_applied" });
      }
      throw error;
    }
  }

  /**
   * Forgets that the config stream `name` is recorded: its record was found
   * deleted or taken by another incarnation (a `DELETE ?force=true` while
   * this file still holds it), so the next apply records it again, under a
   * generation of its own, before its events are counted.
   */
  unrecord(name: string): void {
    if (this.#config.has(name) && this.#recorded.get(name) === true) this.#recorded.delete(name);
  }

  /** {@linkcode registerConfig} for one stream, one call at a time; a conflict is kept. */
  #record(name: string): Promise<void> {
    const state = this.#recorded.get(name);
    if (state === true) return Promise.resolve();
    if (state instanceof ConfigConflictError) return Promise.reject(state);
    if (state !== undefined) return state;
    const recording = this.#recordOnce(name).then(
      () => void this.#recorded.set(name, true),
      (error) => {
        if (error instanceof ConfigConflictError) this.#recorded.set(name, error);
        else this.#recorded.delete(name);
        throw error;
      },
    );
    this.#recorded.set(name, recording);
    return recording;
  }

  /**
   * The config stream `name` serves `record`, its own file's as recorded (by `#recordOnce`):
   * its version and generation, its counters' partial bounds. Its own file's version, later than
   * any other deployment's: the sweep closes by its own terms.
   */
  #servesOwnRecord(
    name: string,
    record: Pick<StoredDefinition, "version" | "generation" | "partialBefore" | "counters">,
  ): void {
    const entry = this.#entries.get(name)!;
    entry.version = record.version;
    entry.stream.definitionVersion = record.version;
    delete entry.stream.closeTerms;
    entry.generation = record.generation;
    markPartial(entry.stream, record.partialBefore, record.counters);
    this.#noteGeneration(entry.stream.counterMetas, record.generation);
  }

  #noteGeneration(counters: readonly CounterMeta[], generation: number): void {
    this.#generations.set(counters, generation);
    for (const counter of counters) this.#generations.set(counter, generation);
  }

  async #recordOnce(name: string): Promise<void> {
    const stream = this.#config.get(name)!;
    const counters = counterIdentities(stream);
    for (let attempt = 1;; attempt++) {
      const record = await this.#definitions.get(name);
      const live = record !== null && !record.deleted;
      if (live && record.source === "config") {
        const changed = changedCounters(record.counters, counters);
        if (changed.length > 0) {
          throw new ConfigConflictError(
            counterChangedMessage(name, changed, { stored: record, next: counters }),
          );
        }
        if (
          sameJson(record.definition, stream.definition) &&
          sameJson(record.counters, everCounted(record, counters))
        ) {
          // Recorded as it is (a restart, another instance of the deployment): its data is the
          // record's generation's, which need not be 0 (a name taken over, recorded again).
          this.#servesOwnRecord(name, record);
          return;
        }
      }
      // Generation 0 for a name never stored keeps the data of deployments from before generations.
      const generation = record === null
        ? 0
        : live && record.source === "config"
        ? record.generation
        : record.generation + 1;
      // A redeploy whose file calls less final than the one recorded (a raised lateness, say)
      // keeps final what that one did, as a PUT does.
      const keepFinal = live && record.source === "config"
        ? await this.#keepFinal(name, record, stream)
        : undefined;
      const { bounds, added } = await this.#partialBounds(name, record, stream, generation);
      const counted = live && record.source === "config" ? everCounted(record, counters) : counters;
      const result = await this.#definitions.write(
        name,
        {
          source: "config",
          generation,
          definition: stream.definition,
          counters: counted,
          partialBefore: bounds,
          deleted: false,
        },
        record?.version ?? 0,
        { keepFinal, addedCounters: added },
      );
      if (result.status === "written") {
        // Raised by the write from the watermark then, when the definition store holds the data.
        const partialBefore = result.partialBefore ?? bounds;
        this.#servesOwnRecord(name, {
          version: result.version,
          generation,
          partialBefore,
          counters: counted,
        });
        if (live && record.source === "api") {
          // The file is authoritative, but taking a stream the API made is worth a word.
          logger.warn(
            "Stream '{stream}' of the config file replaces the stream of that name created through the API (version {version}); it starts empty, and the API stream's data is not read again",
            { stream: name, version: record.version },
          );
        }
        return;
      }
      if (attempt >= WRITE_ATTEMPTS) {
        throw new ConfigError(
          `Cannot record stream '${name}': its stored definition kept changing (version ${result.version})`,
        );
      }
    }
  }

  /**
   * Creates or replaces an API stream from a definition as a config file
   * would hold it. Refuses a config stream's name, an invalid definition,
   * and a change of an existing counter's window, aggregate or groupBy.
   */
  async put(
    name: string,
    raw: unknown,
    expected?: DefinitionPrecondition,
  ): Promise<{ created: boolean; registered: RegisteredStream }> {
    this.#refuseConfig(name);
    let stream: CompiledStream;
    try {
      stream = compileStreamDefinition(name, raw, {
        repeatedGroupBy: true,
        shortWindows: true,
        emptyPathParts: true,
      });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      throw new StreamDefinitionError(
        "invalid_definition",
        `Invalid stream definition: ${definitionProblem(name, error)}${wrappedHint(name, raw)}`,
        { cause: error },
      );
    }
    const repeated = repeatedGroupBy(stream);
    const short = shortWindows(stream);
    const empty = emptyPathParts(stream);
    const counters = counterIdentities(stream);
    for (let attempt = 1;; attempt++) {
      const record = await this.#definitions.get(name);
      const live = record !== null && !record.deleted;
      if (live && record.source === "config") {
        // Not this instance's file (#refuseConfig): another deployment's.
        this.#foreign.set(name, record.version);
        throw new StreamDefinitionError(
          "stream_from_config",
          `Stream '${name}' is defined in another deployment's config file (not this instance's); change it there and redeploy`,
        );
      }
      // A groupBy field named twice or a window shorter than a second only in a counter the
      // stream counted so already (stored before that was refused): kept as it is, so the
      // stream's other parts can still change (fixing the counter would change its identity).
      const added = ({ counter }: { counter: string }) =>
        !live || !Object.hasOwn(record.counters, counter) ||
        record.counters[counter] !== counters[counter];
      const refusedShort = short.find(added);
      // A field path with an empty part likewise, but in time.field or dedupe.field, which a PUT
      // may change.
      const refusedEmpty = empty.find((item) =>
        item.counter === undefined || added({ counter: item.counter })
      );
      const refused = refusedEmpty
        ? emptyPathPartProblem(name, refusedEmpty)
        : refusedShort
        ? shortWindowProblem(name, refusedShort)
        : repeated.filter(added).map((item) => repeatedGroupByProblem(name, item))[0];
      if (refused !== undefined) {
        throw new StreamDefinitionError(
          "invalid_definition",
          `Invalid stream definition: ${definitionProblem(name, new ConfigError(refused))}`,
        );
      }
      await this.#checkPrecondition(name, record, expected);
      // Every counter name the record keeps after this change (removed ones too), once.
      const counted = live ? everCounted(record, counters) : counters;
      if (live) {
        const changed = changedCounters(record.counters, counters);
        if (changed.length > 0) {
          throw new StreamDefinitionError(
            "counter_changed",
            counterChangedMessage(name, changed, { stored: record, next: counters }),
          );
        }
        const names = Object.keys(counted).length;
        if (names > MAX_COUNTED_NAMES && names > Object.keys(record.counters).length) {
          throw new StreamDefinitionError(
            "invalid_definition",
            `Invalid stream definition: counters: the stream would have had ${names} counter names while it lives, past the ${MAX_COUNTED_NAMES} its record keeps (each name keeps its meaning, removed ones too); reuse a removed counter's name as it was, or delete the stream and create it again to start over`,
          );
        }
      }
      if (
        live && sameJson(record.definition, raw) && sameJson(record.counters, counted)
      ) {
        // The definition stored, sent again (a deploy script applying its files): no change,
        // so the version stays and other admins' entity tags still hold. A PUT sent again after
        // one answered 503 whose index step was lost brings the index up to the record.
        await this.#reindex(name, record);
        const held = this.#entries.get(name);
        if (held?.version === record.version) return { created: false, registered: held };
        const registered: RegisteredStream = {
          stream: markPartial(stream, record.partialBefore, record.counters),
          source: "api",
          version: record.version,
          generation: record.generation,
        };
        this.#serve(registered);
        this.#misses.delete(name);
        return { created: false, registered };
      }
      const keepFinal = live ? await this.#keepFinal(name, record, stream) : undefined;
      const generation = live ? record.generation : (record?.generation ?? 0) + 1;
      const partial = await this.#partialBounds(name, record, stream, generation);
      const result = await this.#definitions.write(
        name,
        {
          source: "api",
          generation,
          definition: raw,
          counters: counted,
          partialBefore: partial.bounds,
          deleted: false,
        },
        record?.version ?? 0,
        { keepFinal, addedCounters: partial.added },
      );
      if (result.status === "written") {
        // Raised by the write from the watermark then, when the definition store holds the data.
        const partialBefore = result.partialBefore ?? partial.bounds;
        const registered: RegisteredStream = {
          stream: markPartial(stream, partialBefore, counted),
          source: "api",
          version: result.version,
          generation,
        };
        this.#serve(registered);
        this.#misses.delete(name);
        return { created: !live, registered };
      }
      if (attempt >= WRITE_ATTEMPTS) throw this.#conflict(name, result.version);
    }
  }

  /**
   * Deletes an API stream; its data expires by retention. With `force`, also
   * the record of a config-file stream this instance's file does not hold
   * (another deployment's, or one no deployment declares any more).
   */
  async remove(
    name: string,
    options: { force?: boolean; expected?: DefinitionPrecondition } = {},
  ): Promise<void> {
    this.#refuseConfig(name);
    for (let attempt = 1;; attempt++) {
      const record = await this.#definitions.get(name);
      // Before "not found": If-Match on a stream that does not exist is a 412, as for PUT.
      await this.#checkPrecondition(name, record, options.expected);
      if (record === null || record.deleted) {
        this.#entries.delete(name);
        this.#unservable.delete(name);
        this.#foreign.delete(name);
        // A DELETE sent again after one answered 503 (or cut short) whose record was written but
        // not its index step: the index follows now, so the other instances' polls see the
        // deletion rather than serve the stream until they ingest into it.
        if (record !== null) await this.#reindex(name, record);
        throw new StreamDefinitionError("stream_not_found", `Stream '${name}' does not exist`);
      }
      // Another deployment's: its file may still hold it. One that none does any more (its record
      // stays) is freed by an admin who says so.
      if (record.source === "config" && !options.force) {
        this.#foreign.set(name, record.version);
        throw new StreamDefinitionError(
          "stream_from_config",
          `Stream '${name}' is defined in another deployment's config file (not this instance's); remove it there and redeploy (once no deployment's file holds it, DELETE it with ?force=true)`,
        );
      }
      const result = await this.#definitions.write(name, {
        source: "api",
        generation: record.generation,
        definition: null,
        counters: {},
        deleted: true,
      }, record.version);
      if (result.status === "written") {
        this.#entries.delete(name);
        this.#unservable.delete(name);
        this.#foreign.delete(name);
        this.#seen.set(name, result.version);
        return;
      }
      if (attempt >= WRITE_ATTEMPTS) throw this.#conflict(name, result.version);
    }
  }

  /**
   * Brings the definition store's index up to `record` (see `DefinitionStore.reindex`). The store
   * out of reach ({@linkcode isStoreDown}) throws its {@linkcode StoreUnavailableError} (a `503`):
   * the request is sent again precisely to repair the index, so it must not answer as if it had;
   * another failure (the call refused as too large included) is logged and changes nothing of the
   * answer, which the record read decided.
   */
  async #reindex(name: string, record: StoredDefinition): Promise<void> {
    try {
      await this.#definitions.reindex?.(name, record);
    } catch (error) {
      if (isStoreDown(error)) throw error;
      logger.warn(
        "Cannot bring the definition index up to stream '{stream}' version {version}: {error}",
        {
          stream: name,
          version: record.version,
          error,
        },
      );
    }
  }

  /**
   * The partial-window bounds to write with a new definition of `name` in `generation`: those of
   * its record when it is that generation's, and for each counter the definition adds to the
   * record's (new, or removed and now added back) the stream's watermark now plus 1 when it has
   * events: the events applied so far, all at or before that watermark, are not in the counter.
   * A new generation starts empty: none. Without a store to read ({@linkcode RegistryOptions.data}),
   * no bound is added. `added` names those counters: a definition store that holds the data
   * ({@linkcode DefinitionStore.holdsData}) raises their bounds from the watermark in the write's
   * own atomic step (see `DefinitionWriteOptions.addedCounters`; a batch applied until the write
   * is not in them either), so the stats are read here only for one that does not.
   */
  async #partialBounds(
    name: string,
    record: StoredDefinition | null,
    stream: CompiledStream,
    generation: number,
  ): Promise<{ bounds: Record<string, number>; added: string[] }> {
    if (record === null || record.deleted || record.generation !== generation) {
      return { bounds: {}, added: [] };
    }
    const bounds = { ...record.partialBefore };
    const had = new Set(definedCounters(record.definition));
    const added = stream.counters.filter((counter) => !had.has(counter.name))
      .map((counter) => counter.name);
    if (added.length === 0 || this.#data === undefined || this.#definitions.holdsData) {
      return { bounds, added };
    }
    const { watermark } = await this.#data.stats(generationKey(name, generation), []);
    if (watermark === null) return { bounds, added };
    for (const counter of added) bounds[counter] = watermark + 1;
    return { bounds, added };
  }

  /**
   * Before `next` replaces the live `record` of `name` (by a PUT, or by a redeploy of the config
   * file that holds it): what the stream's reads called final under the stored definition (and the
   * one this instance serves of that incarnation, when not `next` itself) stays final when `next`
   * would call less so (a raised lateness, a longer `idle` or none). Returns what the write of
   * `next` asks the store to keep final in the same atomic step (see
   * {@linkcode DefinitionWriteOptions.keepFinal}), so a batch applied under the stored definition
   * until the write counts too, and nothing when the write is refused. Only for a definition
   * store that does not hold the data ({@linkcode DefinitionStore.holdsData}: a memory one not
   * made with the memory store), which keeps nothing so, the store marks closed now what those
   * called final (see {@linkcode Store.keepFinal}), one read of the stream's stats and one write
   * when it moves the mark, even when the write is then refused. Nothing when `next` calls no less
   * final, or without a store to write ({@linkcode RegistryOptions.data}).
   */
  async #keepFinal(
    name: string,
    record: StoredDefinition,
    next: CompiledStream,
  ): Promise<KeepFinal | undefined> {
    if (this.#data === undefined) return undefined;
    const before: CompiledStream[] = [];
    const held = this.#entries.get(name);
    // A config stream's served entry is the file's, `next` itself. One of another incarnation
    // (deleted and created again elsewhere since this instance's last poll) called nothing of
    // this one's data final.
    const served = held !== undefined && held.stream !== next &&
      held.generation === record.generation;
    if (served) before.push(held.stream);
    // The stored definition: the one served when it is that version, compiled only otherwise.
    if (!served || held.version !== record.version) {
      try {
        before.push(compileStreamDefinition(name, record.definition, AS_STORED));
      } catch {
        // Not compiled by this release: nothing of it was served here (see #adopt).
      }
    }
    const reopens = before.some((stream) =>
      stream.latenessMs < next.latenessMs ||
      (stream.idleMs !== null &&
        (next.idleMs === null || stream.idleMs + stream.latenessMs < next.idleMs + next.latenessMs))
    );
    if (!reopens) return undefined;
    const by = before.map(({ latenessMs, idleMs }) => ({ latenessMs, idleMs }));
    // The write raises closedThrough itself, and only when it is made.
    if (this.#definitions.holdsData) return { nowMs: this.#now(), by };
    const key = generationKey(name, record.generation);
    const stats = await this.#data.stats(key, []);
    const now = this.#now();
    const keep = { nowMs: now, by };
    if (stats.watermark !== null) {
      // What the write keeps final, by the same rule; the store's closedThrough, which `before`
      // called final too, moves no mark: closedBefore(next) counts it already. By `next`'s own
      // lateness whatever version the stats hold: no definition is later than the one written.
      const kept = finalThrough(stats.watermark, keep);
      const { watermark, closedThrough } = stats;
      if (kept > closedBefore(next, { watermark, closedThrough }, now)) {
        await this.#data.keepFinal(key, kept);
      }
    }
    return keep;
  }

  #refuseConfig(name: string): void {
    if (this.#config.has(name)) {
      throw new StreamDefinitionError(
        "stream_from_config",
        `Stream '${name}' is defined in the config file; change it there and redeploy`,
      );
    }
  }

  /**
   * {@linkcode checkPrecondition}; when it fails, this instance serves what the store holds
   * first, so the ETag read again here is the one a retry needs, and the index is brought up to
   * the record read (`#reindex`): a conditional PUT or DELETE sent again after its
   * index step was lost fails its precondition (the record moved past the tag it names), and
   * repairs the index all the same.
   */
  async #checkPrecondition(
    name: string,
    record: StoredDefinition | null,
    expected: DefinitionPrecondition | undefined,
  ): Promise<void> {
    try {
      checkPrecondition(name, record, expected);
    } catch (error) {
      if (!this.#config.has(name)) this.#adopt(name, record);
      if (record !== null) await this.#reindex(name, record);
      throw error;
    }
  }

  #conflict(name: string, version: number): StreamDefinitionError {
    return new StreamDefinitionError(
      "definition_conflict",
      `Stream '${name}' was changed by another request meanwhile (now version ${version}); retry`,
    );
  }

  /**
   * The store every module uses: it takes stream names, keeps each
   * incarnation's data under its generation, and reports the definition
   * versions applies read back to this registry. Wrapping twice gives the
   * same store.
   */
  wrap(store: Store): Store {
    if (store instanceof RegistryStore && store.registry === this) return store;
    return new RegistryStore(store, this);
  }
}

/**
 * The stream called `name` of `streams`; a {@linkcode StreamRegistry} looks
 * an unknown name up in the store (see {@linkcode StreamRegistry.find}).
 */
export async function lookUpStream(
  streams: StreamCatalog,
  name: string,
): Promise<CompiledStream | undefined> {
  return streams.get(name) ?? await streams.find?.(name);
}

/** A {@linkcode Store} that adds each stream's generation and watches definition versions. */
class RegistryStore implements Store {
  readonly registry: StreamRegistry;
  #store: Store;

  constructor(store: Store, registry: StreamRegistry) {
    this.#store = store;
    this.registry = registry;
  }

  get kind(): string {
    return this.#store.kind;
  }

  get logBounds(): ResultLogBounds {
    return this.#store.logBounds;
  }

  #key(stream: string): string {
    return generationKey(stream, this.registry.generationOf(stream));
  }

  /**
   * The key of a stream whose windows are read, closed or fired on: a config
   * stream not recorded yet is recorded (and checked) first, as for an apply,
   * so an instance whose file conflicts with the store's counters neither
   * closes the store's windows by its own definition nor reads them (409).
   * With `counters`, the key of the incarnation they are of, as for an apply
   * (see {@linkcode StreamRegistry.generationOfBatch}).
   */
  async #checkedKey(stream: string, counters?: readonly CounterMeta[]): Promise<string> {
    if (!this.registry.isRecorded(stream)) await this.registry.recordConfigStream(stream);
    if (counters === undefined) return this.#key(stream);
    return generationKey(stream, this.registry.generationOfBatch({ stream, counters }));
  }

  /**
   * After the store said a stream's record was deleted or taken elsewhere: a config stream (its
   * file still holds it) is recorded anew by its next use; another is served as the store holds
   * it now, so that a request made again finds it.
   */
  async #readAgain(stream: string): Promise<void> {
    if (this.registry.describe(stream)?.source === "config") this.registry.unrecord(stream);
    else await this.registry.reload(stream).catch(() => {});
  }

  async applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    // A config stream not recorded yet (the store was unreachable at startup) is now, first.
    if (!this.registry.isRecorded(batch.stream)) {
      await this.registry.recordConfigStream(batch.stream);
    }
    // Deleted (and maybe created again) here since the batch was built: its data would count
    // nowhere. The store checks the same for changes made elsewhere.
    if (this.registry.outlived(batch)) {
      throw new StreamChangedError(
        batch.stream,
        this.registry.describe(batch.stream)?.version ?? 0,
      );
    }
    const stream = generationKey(batch.stream, this.registry.generationOfBatch(batch));
    let result: ApplyResult;
    try {
      // Recorded above (a config stream) or read (an API stream): a store that holds the
      // definitions refuses the batch when the record is missing.
      // The version built on: a later one stored keeps final what this one's reads call so.
      const definitionVersion = this.registry.versionOfBatch(batch);
      result = await this.#store.applyBatch({
        ...batch,
        stream,
        recorded: true,
        definitionVersion,
      });
    } catch (error) {
      if (error instanceof StreamChangedError) {
        if (error.version === 0) {
          logger.warn(
            "The definition record of stream '{stream}' is missing from the store (restored from an older snapshot, or evicted under a maxmemory-policy other than noeviction?); the batch was refused and the definition is read again",
            { stream: batch.stream },
          );
        }
        await this.#readAgain(batch.stream);
      }
      throw error;
    }
    if (result.definitionVersion) this.registry.noteVersion(batch.stream, result.definitionVersion);
    return result;
  }
  async panes(stream: string, counter: CounterMeta, range: TimeRange): Promise<number[]> {
    return await this.#store.panes(await this.#checkedKey(stream), counter, range);
  }
  async readWindows(
    stream: string,
    counter: CounterMeta,
    windows: WindowRead[],
    options?: ReadOptions,
  ): Promise<WindowValues> {
    const values = await this.#store.readWindows(
      await this.#checkedKey(stream),
      counter,
      windows,
      options,
    );
    if (values.stats) this.#noted(stream, values.stats);
    return values;
  }
  async readSessions(
    stream: string,
    counter: CounterMeta,
    range: SessionRange,
  ): Promise<SessionValues> {
    const values = await this.#store.readSessions(await this.#checkedKey(stream), counter, range);
    if (values.stats) this.#noted(stream, values.stats);
    return values;
  }
  /**
   * Closes by `options`; when it carries the version of the stream the caller holds and a later
   * one kept final (see {@linkcode CloseOptions.definitionVersion}), nothing is closed and the
   * later definition is loaded. Without a version, that of the definition served once the stream
   * is recorded: a config stream not recorded has none until its first close records it.
   */
  async closeWindows(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
  ): Promise<ClosedWindows> {
    // Of the definition the caller closes by (its `counters`), as for an apply: the close of a
    // stream deleted and created again since the caller read it goes to the old incarnation,
    // which the store says is gone, never to the new one by the old one's terms.
    const key = await this.#checkedKey(stream, counters);
    // The caller built its options before the check recorded the stream (its file's lateness is
    // the record's): without the version, a later definition written since would go unchecked.
    const definitionVersion = options.definitionVersion ??
      this.registry.definitionVersionOf(stream);
    // Recorded by the check (a config stream) or read (an API stream), as for an apply: a store
    // that holds the definitions closes nothing when the record is missing.
    const closed = await this.#store.closeWindows(key, counters, {
      ...options,
      recorded: true,
      ...(definitionVersion === undefined ? {} : { definitionVersion }),
    });
    if (closed.laterDefinition !== undefined) {
      this.registry.noteVersion(stream, closed.laterDefinition);
    }
    // Deleted (or deleted and created again) elsewhere since this instance read it: as for an
    // apply refused so, so the next sweep does not run the whole close again for nothing. A
    // record missing is said as the apply says it: no one deleted it, and nothing closes.
    if (closed.recordMissing) {
      logger.warn(
        "The definition record of stream '{stream}' is missing from the store (restored from an older snapshot, or evicted under a maxmemory-policy other than noeviction?); the close was refused and the definition is read again",
        { stream },
      );
    }
    if (closed.gone) await this.#readAgain(stream);
    return closed;
  }
  async keepFinal(stream: string, throughMs: number): Promise<void> {
    return await this.#store.keepFinal(await this.#checkedKey(stream), throughMs);
  }
  async fireAlerts(
    stream: string,
    firings: AlertFiring[],
    options: FireOptions = {},
  ): Promise<FiredAlerts> {
    // Of the definition the firings were evaluated by, as a close: a stream deleted and created
    // again since goes to the old incarnation, which the store says is gone, never to the new one
    // (its log, and its fired markers that would hold back the new one's own firings).
    const fired = await this.#store.fireAlerts(
      await this.#checkedKey(stream, options.counters),
      firings,
    );
    // Refused so: the record read again now, as after a refused close, so that this instance
    // stops serving the incarnation gone before its next poll.
    if (fired.gone) await this.#readAgain(stream);
    return fired;
  }
  appendLog(stream: string, records: LogRecord[]): Promise<void> {
    return this.#store.appendLog(this.#key(stream), records);
  }
  readLog(stream: string, afterId: string | null, limit: number): Promise<LogEntry[]> {
    return this.#store.readLog(this.#key(stream), afterId, limit);
  }
  lastLogId(stream: string): Promise<string | null> {
    return this.#store.lastLogId(this.#key(stream));
  }
  logPosition(stream: string): Promise<LogPosition> {
    return this.#store.logPosition(this.#key(stream));
  }
  markDispatched(stream: string, throughId: string | null): Promise<number> {
    return this.#store.markDispatched(this.#key(stream), throughId);
  }
  signalDemand(stream: string, types: readonly string[], ttlMs: number): Promise<void> {
    return this.#store.signalDemand(this.#key(stream), types, ttlMs);
  }
  /**
   * The store's stats; a definition later than the one served here that kept final in its write
   * ({@linkcode StreamStats.definitionVersion}) is loaded. A read compares that version with the
   * one of the stream it holds ({@linkcode closedBefore}), not with the one served now: a reload
   * may come between its resolving the stream and this read.
   */
  async stats(stream: string, counters: CounterMeta[]): Promise<StreamStats> {
    return this.#noted(stream, await this.#store.stats(this.#key(stream), counters));
  }
  /**
   * `stats` (of {@linkcode stats}, or read with values: `ReadOptions.stats`) as they are, their
   * definition version noted: a later one than served here is loaded.
   */
  #noted<S extends ReadStats>(stream: string, stats: S): S {
    if (stats.definitionVersion !== undefined) {
      this.registry.noteVersion(stream, stats.definitionVersion);
    }
    return stats;
  }
  ping(): Promise<void> {
    return this.#store.ping();
  }
  close(): Promise<void> {
    return this.#store.close();
  }
}
