/**
 * Which windows and sessions a stream's definition calls final: shared by reads (`query/`) and by
 * a definition change, which keeps final what the definition it replaces called so.
 *
 * @module
 */
import type { ReadStats } from "../store/types.ts";
import type { CompiledStream } from "./compile.ts";

/**
 * The time before which a window or session is final: the watermark (an idle stream's follows
 * the clock, as the store will raise it on its next write) less the lateness, or the store's
 * `closedThrough` when later (what a close claimed, or a definition change kept final, stays
 * final whatever the lateness is now). Only `closedThrough` when a definition later than
 * `stream`'s kept final ({@linkcode ReadStats.definitionVersion} past
 * {@linkcode CompiledStream.definitionVersion}): judged by the stream the read holds, not the one
 * served when the stats are read, as a reload may come between the two.
 */
export function closedBefore(
  stream: Pick<CompiledStream, "idleMs" | "latenessMs" | "definitionVersion">,
  stats: ReadStats,
  nowMs: number,
): number {
  // A definition older than the stored one: its lateness may be lower than the one that now
  // decides what is late.
  if ((stats.definitionVersion ?? 0) > (stream.definitionVersion ?? 0)) {
    return stats.closedThrough ?? -Infinity;
  }
  return Math.max(
    (watermarkAt(stream, stats.watermark, nowMs) ?? -Infinity) - stream.latenessMs,
    stats.closedThrough ?? -Infinity,
  );
}

/**
 * A stream's watermark at `nowMs`: the store's, or for an idle stream the clock less `idle`
 * when later (its next close or batch raises the store's to that). Null before any batch.
 */
export function watermarkAt(
  stream: Pick<CompiledStream, "idleMs">,
  watermark: number | null,
  nowMs: number,
): number | null {
  if (watermark === null || stream.idleMs === null) return watermark;
  return Math.max(watermark, nowMs - stream.idleMs);
}
