/**
 * The sweep: periodic work that is not tied to a request. Today it closes
 * windows that became final; every instance may run it, the store makes
 * sure each window closes exactly once.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import type { ClosedWindow, Store } from "../store/types.ts";

/** What one sweep did, per stream. */
export interface SweepReport {
  /** Windows closed by this sweep, with their final values. */
  closed: Array<ClosedWindow & { stream: string }>;
}

/** Runs one sweep over every stream. */
export async function sweepOnce(
  streams: Iterable<CompiledStream>,
  store: Store,
): Promise<SweepReport> {
  const closed: SweepReport["closed"] = [];
  for (const stream of streams) {
    if (stream.counters.length === 0) continue;
    const windows = await store.closeWindows(stream.name, stream.counterMetas, {
      latenessMs: stream.latenessMs,
    });
    for (const window of windows) closed.push({ ...window, stream: stream.name });
  }
  return { closed };
}
