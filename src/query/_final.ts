/**
 * Which windows and sessions a read calls final, shared by counter and session reads.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import type { StreamStats } from "../store/types.ts";

/**
 * The time before which a window or session is final: the watermark (an idle stream's follows
 * the clock, as the store will raise it on its next write) less the lateness, or the store's
 * `closedThrough` when later (what a close claimed stays final whatever the lateness is now).
 */
export function closedBefore(stream: CompiledStream, stats: StreamStats, nowMs: number): number {
  const floor = stream.idleMs === null ? -Infinity : nowMs - stream.idleMs;
  return Math.max(
    Math.max(stats.watermark ?? -Infinity, floor) - stream.latenessMs,
    stats.closedThrough ?? -Infinity,
  );
}
