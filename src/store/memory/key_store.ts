/**
 * Run-time API keys in this process's memory: for one instance and tests.
 *
 * @module
 */
import type { Page, PageOptions } from "../deliveries.ts";
import {
  type ApiKeyRecord,
  compareKeys,
  KeyConflictError,
  type KeyStore,
  pageOfKeys,
} from "../keys.ts";
import { checkedMax, DEFAULT_KEYS_MAX, StoredLimitError } from "../limits.ts";

/** Options for {@linkcode MemoryKeyStore}. */
export interface MemoryKeyStoreOptions {
  /** Most keys held; a creation past it throws `StoredLimitError`. @default {10000} */
  maxKeys?: number;
}

/** {@linkcode KeyStore} in memory. */
export class MemoryKeyStore implements KeyStore {
  /** Always `memory`. */
  readonly kind = "memory";
  #byId = new Map<string, ApiKeyRecord>();
  #byHash = new Map<string, string>();
  #maxKeys: number;

  constructor(options: MemoryKeyStoreOptions = {}) {
    this.#maxKeys = checkedMax("maxKeys", options.maxKeys ?? DEFAULT_KEYS_MAX);
  }

  createKey(record: ApiKeyRecord): Promise<void> {
    const held = this.#byId.get(record.id);
    // The very record again is the same call sent twice, as the Redis store takes it.
    if (held && JSON.stringify(held) === JSON.stringify(record)) return Promise.resolve();
    if (held || this.#byHash.has(record.hash)) {
      return Promise.reject(new KeyConflictError(`Key '${record.id}' exists already`));
    }
    if (this.#byId.size >= this.#maxKeys) {
      return Promise.reject(new StoredLimitError("keys", this.#maxKeys, this.#byId.size));
    }
    // Stored as JSON, as Redis stores it: absent fields stay absent.
    this.#byId.set(record.id, JSON.parse(JSON.stringify(record)));
    this.#byHash.set(record.hash, record.id);
    return Promise.resolve();
  }

  keyByHash(hash: string): Promise<ApiKeyRecord | null> {
    const id = this.#byHash.get(hash);
    return this.getKey(id ?? "");
  }

  getKey(id: string): Promise<ApiKeyRecord | null> {
    const record = this.#byId.get(id);
    return Promise.resolve(record ? structuredClone(record) : null);
  }

  listKeys(): Promise<ApiKeyRecord[]> {
    return Promise.resolve(
      [...this.#byId.values()].map((item) => structuredClone(item)).sort(compareKeys),
    );
  }

  async pageKeys(options: PageOptions): Promise<Page<ApiKeyRecord>> {
    return pageOfKeys(await this.listKeys(), options);
  }

  deleteKey(id: string): Promise<boolean> {
    const record = this.#byId.get(id);
    if (!record) return Promise.resolve(false);
    this.#byId.delete(id);
    this.#byHash.delete(record.hash);
    return Promise.resolve(true);
  }
}
