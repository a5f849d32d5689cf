/**
 * Stream definitions in process memory: for one instance (and tests). The
 * memory store reads versions from it so `applyBatch` reports them as the
 * Redis store does.
 *
 * @module
 */
import {
  type DefinitionStore,
  type DefinitionWrite,
  type DefinitionWriteOptions,
  generationKey,
  type KeepFinal,
  type StoredDefinition,
  type VersionsSince,
  type WriteResult,
} from "../definitions.ts";
import { checkedMax, DEFAULT_STREAMS_MAX, StoredLimitError } from "../limits.ts";

/** Options for {@linkcode MemoryDefinitionStore}. */
export interface MemoryDefinitionStoreOptions {
  /**
   * Most streams created through the API (live records of source `api`) held; a write that
   * would add one past it throws `StoredLimitError`. @default {1000}
   */
  maxApiStreams?: number;
}

/** What a memory definition store's writes reach of the memory store made with it. */
export interface HeldData {
  /**
   * Raises the `closedThrough` of a stream's data (a `generationKey`) as `keep` says, and notes
   * the `version` written in its stats (`StreamStats.definitionVersion`).
   */
  keepFinal(key: string, keep: KeepFinal, version: number): void;
  /** The watermark of a stream's data (a `generationKey`), null without events. */
  watermark(key: string): number | null;
}

/** Whether a record is a live stream created through the API: what the bound counts. */
function countsAsApi(record: Pick<DefinitionWrite, "source" | "deleted"> | undefined): boolean {
  return record !== undefined && record.source === "api" && !record.deleted;
}

/** A {@linkcode DefinitionStore} held in process memory. */
export class MemoryDefinitionStore implements DefinitionStore {
  #records = new Map<string, StoredDefinition>();
  /** Writes so far: the change mark of {@linkcode versionsSince}. */
  #writes = 0;
  #maxApiStreams: number;

  /** The data of the memory store made with this one ({@linkcode holdData}). */
  #data: HeldData | undefined;
  /**
   * Per name, the version of the last `api` write that added counters (see
   * `DefinitionWriteOptions.addedCounters`): a batch under an older one is refused.
   */
  #countersAddedAt = new Map<string, number>();

  constructor(options: MemoryDefinitionStoreOptions = {}) {
    this.#maxApiStreams = checkedMax("maxApiStreams", options.maxApiStreams ?? DEFAULT_STREAMS_MAX);
  }

  get(name: string): Promise<StoredDefinition | null> {
    const record = this.#records.get(name);
    return Promise.resolve(record ? structuredClone(record) : null);
  }

  versions(): Promise<Map<string, number>> {
    return Promise.resolve(
      new Map([...this.#records].map(([name, record]) => [name, record.version])),
    );
  }

  async versionsSince(mark?: string): Promise<VersionsSince> {
    const now = String(this.#writes);
    return { mark: now, versions: mark === now ? null : await this.versions() };
  }

  write(
    name: string,
    record: DefinitionWrite,
    expectedVersion: number,
    options: DefinitionWriteOptions = {},
  ): Promise<WriteResult> {
    const held = this.#records.get(name);
    const current = held?.version ?? 0;
    // No call is sent twice here (as a Redis client may after a lost connection): an identical
    // record one version on is another write's, a conflict as in the Redis store.
    if (current !== expectedVersion) {
      return Promise.resolve({ status: "conflict", version: current });
    }
    if (countsAsApi(record) && !countsAsApi(held)) {
      const count = [...this.#records.values()].filter((each) => countsAsApi(each)).length;
      if (count >= this.#maxApiStreams) {
        return Promise.reject(new StoredLimitError("streams", this.#maxApiStreams, count));
      }
    }
    const version = current + 1;
    // In the same step as the write: no batch comes between (see DefinitionWriteOptions).
    const key = generationKey(name, record.generation);
    if (options.keepFinal) this.#data?.keepFinal(key, options.keepFinal, version);
    const { partialBefore: given, ...rest } = structuredClone(record);
    let partialBefore = given;
    const added = this.#data ? options.addedCounters ?? [] : [];
    if (added.length > 0) {
      const watermark = this.#data!.watermark(key);
      if (watermark !== null) {
        partialBefore = { ...given };
        for (const counter of added) {
          partialBefore[counter] = Math.max(partialBefore[counter] ?? -Infinity, watermark + 1);
        }
      }
      if (countsAsApi(record)) this.#countersAddedAt.set(name, version);
    }
    // As the Redis store reads it back: no entries, no field.
    const bounds = partialBefore && Object.keys(partialBefore).length > 0 ? { partialBefore } : {};
    this.#records.set(name, { ...rest, ...bounds, name, version });
    this.#writes += 1;
    return Promise.resolve({
      status: "written",
      version,
      ...(added.length > 0 ? { partialBefore: { ...partialBefore } } : {}),
    });
  }

  /** Whether a memory store made with this one holds its data ({@linkcode holdData}). */
  get holdsData(): boolean {
    return this.#data !== undefined;
  }

  /**
   * Called by the memory store made with this definition store (the last one made): what a
   * write does in its data in the same step ({@linkcode DefinitionWriteOptions}), synchronously.
   */
  holdData(data: HeldData): void {
    this.#data = data;
  }

  /**
   * Whether a batch applied under version `definitionVersion` of a stream's definition is
   * refused: an `api` write since added counters it lacks (see
   * `DefinitionWriteOptions.addedCounters`). False for none given.
   */
  addedCountersSince(name: string, definitionVersion: number | undefined): boolean {
    const addedAt = this.#countersAddedAt.get(name);
    return definitionVersion !== undefined && addedAt !== undefined && definitionVersion < addedAt;
  }

  /** The version of a stream name, 0 when it has none: what the memory store's apply reports. */
  versionOf(name: string): number {
    return this.#records.get(name)?.version ?? 0;
  }

  /**
   * Whether a stream's record says its data of `generation` is no longer
   * read: the stream was deleted, or created again under another generation.
   * False for a name without a record.
   */
  outlives(name: string, generation: number): boolean {
    const record = this.#records.get(name);
    return record !== undefined && (record.deleted || record.generation !== generation);
  }
}
