/**
 * The stats a read of values asked for with them (`ReadOptions.stats`), read in the same atomic
 * step: what says which of those values are final.
 *
 * @module
 */
import type { ReadStats, Store } from "../store/types.ts";

/**
 * The stats `values` came with. Throws when the store left them out: read apart, after the
 * values, a batch between would have values read before it called final without what it added.
 */
export function statsOfRead(store: Store, values: { stats?: ReadStats }): ReadStats {
  if (values.stats === undefined) {
    throw new Error(`Store '${store.kind}' returned a read without the stats asked with it`);
  }
  return values.stats;
}
