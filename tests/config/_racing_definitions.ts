/**
 * A definition store for tests that lets a test run something between a write's caller and the
 * store: another instance's write, a batch moving the watermark.
 *
 * @module
 */
import type { DefinitionStore } from "../../src/store/mod.ts";

/** A definition store that runs `beforeWrite` (once armed) before the next write it passes on. */
export class RacingDefinitions implements DefinitionStore {
  beforeWrite: (() => Promise<void>) | undefined;
  #inner: DefinitionStore;
  constructor(inner: DefinitionStore) {
    this.#inner = inner;
  }
  get holdsData() {
    return this.#inner.holdsData;
  }
  get(name: string) {
    return this.#inner.get(name);
  }
  versions() {
    return this.#inner.versions();
  }
  versionsSince(mark?: string) {
    return this.#inner.versionsSince(mark);
  }
  async write(...args: Parameters<DefinitionStore["write"]>) {
    const run = this.beforeWrite;
    this.beforeWrite = undefined;
    await run?.();
    return this.#inner.write(...args);
  }
}
