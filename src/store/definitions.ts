/**
 * The contract of stored stream definitions: streams created at run time
 * (`PUT /v1/streams/{stream}`) and the counters of config-file streams, so
 * every instance sharing a store serves the same streams and a redeploy
 * cannot change a counter under existing data.
 *
 * Each record has a `version` that rises on every change of that name
 * (create, replace, delete; across incarnations) and a `generation` that
 * names the incarnation whose data the store keeps: a stream deleted and
 * created again gets a new generation, so its old panes are never read
 * under the new definition. The {@linkcode Store} takes a stream's data key
 * from {@linkcode generationKey}; `applyBatch` reports the version read in
 * the same atomic step ({@linkcode ApplyResult.definitionVersion}).
 *
 * @module
 */

/** Where a stream definition comes from: the config file or the API. */
export type DefinitionSource = "config" | "api";

/** What is kept of one stream name. */
export interface StoredDefinition {
  /** Stream name. */
  name: string;
  /** Where the definition came from. */
  source: DefinitionSource;
  /** Rises on every change of this name (create, replace, delete), starting at 1. */
  version: number;
  /** The incarnation whose data the store keeps; config streams start at 0, API streams at 1. */
  generation: number;
  /** The definition as written (JSON), or null once deleted. */
  definition: unknown;
  /**
   * What identifies each counter's data (window, aggregate, group-by) as
   * JSON text, by counter name, for every counter the stream has counted in
   * this generation (removed ones too): a counter whose identity changes
   * would read panes written under another meaning.
   */
  counters: Record<string, string>;
  /**
   * Per counter added to (or added back to) the stream while it had events in this generation:
   * the event-time bound (ms), its watermark then plus 1, below which the counter missed events;
   * a window starting before it is partial. A counter the stream had from its first event has no
   * entry. Absent: none has one (and in records written by a release before it).
   */
  partialBefore?: Record<string, number>;
  /** Whether the stream was deleted (its data expires by retention). */
  deleted: boolean;
}

/** A record to write: everything but the version, which the store assigns. */
export type DefinitionWrite = Omit<StoredDefinition, "name" | "version">;

/** A replaced definition's time settings: what decides what it called final. */
export interface FinalBy {
  /** Its lateness (ms). */
  latenessMs: number;
  /** Its `idle` (ms): the watermark follows the clock less this; null without. */
  idleMs: number | null;
}

/** What a definition write keeps final ({@linkcode DefinitionWriteOptions.keepFinal}). */
export interface KeepFinal {
  /** The clock (ms) an `idle` counts from. */
  nowMs: number;
  /** The time settings of the definitions replaced. */
  by: FinalBy[];
}

/** Options for {@linkcode DefinitionStore.write}. */
export interface DefinitionWriteOptions {
  /**
   * Keeps final, in the same atomic step as the write, what the definitions it replaces called
   * final of the written generation's data (`generationKey(name, record.generation)`): the
   * stream's `closedThrough` (see `Store.keepFinal`) rises to the latest, over `by`, of its
   * watermark (for one with `idleMs`, at least `nowMs - idleMs`) less `latenessMs`; a batch
   * applied before the write counts, one after it does not. Nothing for a stream without a
   * watermark, nor when the write is refused. A memory definition store does so only for the
   * memory store made with it (its `definitions`). @default {none}
   */
  keepFinal?: KeepFinal;
  /**
   * The counters the written definition adds to the live record it replaces of the same
   * generation (new ones, or removed and now added back): in the same atomic step as the write,
   * each one's bound in the record's `partialBefore` rises to the written generation's watermark
   * then plus 1 (none while it has no watermark), so a batch applied before the write, under the
   * definition replaced, is within it; the result reports the bounds written. And a write of an
   * `api` record that adds some refuses, from then on, a batch applied under an older version of
   * the stream's definition (`StoreBatch.definitionVersion`: one without these counters), with
   * `StreamChangedError`, writing nothing of it: built again on the new definition, its events
   * count in them. A memory definition store does both only with the memory store made with it
   * (its `definitions`). @default {none}
   */
  addedCounters?: string[];
}

/**
 * What {@linkcode DefinitionWriteOptions.keepFinal} makes final of a stream whose watermark is
 * `watermark`: the latest, over its definitions, of the watermark (raised to the clock less
 * `idle`) less the lateness.
 */
export function finalThrough(
  watermark: number,
  keep: KeepFinal,
): number {
  return Math.max(
    ...keep.by.map(({ latenessMs, idleMs }) =>
      (idleMs === null ? watermark : Math.max(watermark, keep.nowMs - idleMs)) - latenessMs
    ),
  );
}

/** Result of {@linkcode DefinitionStore.write}. */
export type WriteResult =
  | {
    /** The record was written. */
    status: "written";
    /** Its new version. */
    version: number;
    /**
     * The partial-window bounds written, when {@linkcode DefinitionWriteOptions.addedCounters}
     * raised some: the record's `partialBefore` (else as given).
     */
    partialBefore?: Record<string, number>;
  }
  | {
    /** Another write came first: the current version is not the expected one. */
    status: "conflict";
    /** The current version (0 when the name has no record). */
    version: number;
  };

/** What {@linkcode DefinitionStore.versionsSince} answers. */
export interface VersionsSince {
  /** The index's change mark now: what to pass to the next call. */
  mark: string;
  /** Every name's version, or null when the index did not change since the mark given. */
  versions: Map<string, number> | null;
}

/** Storage of stream definitions, shared by every instance that shares the store. */
export interface DefinitionStore {
  /**
   * Whether a write does in the streams' data, in its own atomic step, what
   * {@linkcode DefinitionWriteOptions} asks (`keepFinal`, `addedCounters`): a Redis one does (the
   * data in the same Redis, under the same prefix), a memory one only once the memory store made
   * with it holds its data (its `definitions`).
   */
  readonly holdsData: boolean;
  /** The record of a stream name (also a deleted one), or null when there is none. */
  get(name: string): Promise<StoredDefinition | null>;
  /**
   * The version of every recorded name, deleted ones too: what an instance
   * polls to find new and changed streams. One round trip.
   */
  versions(): Promise<Map<string, number>>;
  /**
   * {@linkcode versions}, only when the index changed since `mark` (what the
   * last call answered; none: read it anyway). One round trip; when nothing
   * changed it carries only the mark, whatever the number of names. A mark
   * tells nothing of writes by a release before it, so a poller still reads
   * the whole index now and then.
   */
  versionsSince(mark?: string): Promise<VersionsSince>;
  /**
   * Writes a record if the name's current version is `expectedVersion` (0:
   * no record yet), atomically; its version becomes `expectedVersion + 1`.
   * Otherwise writes nothing and reports the current version, except when the
   * record at `expectedVersion + 1` was written by this very call (a Redis client sending it again
   * after a connection lost once Redis ran it): that reports it as written. An identical record
   * another call wrote is a conflict: this call did not write it. A write that would add a live
   * stream of source `api` (create one, or make a deleted or config record one) throws
   * `StoredLimitError`, writing nothing, when the store's bound of such streams is held already;
   * config streams do not count. See {@linkcode DefinitionWriteOptions.keepFinal}.
   */
  write(
    name: string,
    record: DefinitionWrite,
    expectedVersion: number,
    options?: DefinitionWriteOptions,
  ): Promise<WriteResult>;
  /**
   * Brings the index (what {@linkcode versions} reads) up to `record`, the name's record as just
   * read, as the index step of the write that made it would have: a write answered `503`, or cut
   * short by its process's end, between the record and that step leaves the index behind it, so
   * the other instances' polls do not see the change. Never lowers the index: a record older than
   * its entry changes nothing. At the entry's version it sets the name's place among the API
   * streams as the record says again (what that write's step set, unless that step was lost).
   * Absent where the index is the records themselves (the memory store).
   */
  reindex?(name: string, record: StoredDefinition): Promise<void>;
}

const GENERATION_SEPARATOR = "#";

/**
 * The name a {@linkcode Store} keeps a stream incarnation's data under:
 * the stream name for generation 0 (config streams, as before generations
 * existed), `name#<generation>` after. Stream names cannot hold `#`.
 */
export function generationKey(stream: string, generation: number): string {
  return generation === 0 ? stream : `${stream}${GENERATION_SEPARATOR}${generation}`;
}

/** Splits a {@linkcode generationKey} back into the stream name and generation. */
export function splitGenerationKey(key: string): { stream: string; generation: number } {
  const at = key.lastIndexOf(GENERATION_SEPARATOR);
  if (at < 0) return { stream: key, generation: 0 };
  return { stream: key.slice(0, at), generation: Number(key.slice(at + 1)) };
}
