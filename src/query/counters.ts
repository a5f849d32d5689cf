/**
 * Reading counters: the windows of a counter over a time range, and the
 * value of the window containing now.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import type { Store } from "../store/types.ts";
import {
  aggregateValue,
  type CompiledCounter,
  currentWindowStart,
  decodeGroup,
  panesOfWindow,
  windowsOfPane,
} from "../window/mod.ts";
import { currentSessions, readSessionRows } from "./sessions.ts";

/** One window of one group, as the API returns it. */
export interface WindowRow {
  /** Window start, ISO-8601. */
  start: string;
  /** Window end (exclusive), ISO-8601. */
  end: string;
  /** Group values by field. */
  group: Record<string, unknown>;
  /** The aggregate's value; null where none exists (min of nothing). */
  value: number | null;
  /** True once the watermark has passed end + lateness: the value can no longer change. */
  final: boolean;
  /** Present and true when the value is an estimate (distinct on Redis). */
  approximate?: boolean;
}

/** Options for {@linkcode listWindows}. */
export interface ListOptions {
  /** Earliest window start (ms). @default {everything retained} */
  fromMs?: number;
  /** Windows must start before this (ms). @default {no bound} */
  toMs?: number;
  /** Group filters: field → value as text (`"null"` matches null). */
  groups?: Record<string, string>;
  /** Most rows returned. @default {100} */
  limit?: number;
}

/** Current time and watermark a read is judged against. */
export interface ReadContext {
  store: Store;
  nowMs: number;
}

function matchesGroup(group: Record<string, unknown>, filters: Record<string, string>): boolean {
  for (const [field, wanted] of Object.entries(filters)) {
    const value = group[field];
    const text = value === null || value === undefined
      ? "null"
      : typeof value === "string"
      ? value
      : JSON.stringify(value);
    if (text !== wanted) return false;
  }
  return true;
}

async function rowsFor(
  stream: CompiledStream,
  counter: CompiledCounter,
  starts: number[],
  context: ReadContext,
  filters: Record<string, string>,
): Promise<WindowRow[]> {
  const [values, stats] = await Promise.all([
    context.store.readWindows(
      stream.name,
      counter.meta,
      starts.map((start) => ({ start, panes: panesOfWindow(start, counter.window) })),
    ),
    context.store.stats(stream.name, []),
  ]);
  // An idle stream's watermark follows the clock (as the store will raise it on its next write).
  const floor = stream.idleMs === null ? -Infinity : context.nowMs - stream.idleMs;
  const watermark = Math.max(stats.watermark ?? -Infinity, floor);
  const closedBefore = watermark - stream.latenessMs;
  const rows: Array<WindowRow & { startMs: number }> = [];
  for (const item of values) {
    const group = decodeGroup(counter.groupBy, item.group);
    if (!matchesGroup(group, filters)) continue;
    const end = item.start + counter.window.sizeMs;
    const row: WindowRow & { startMs: number } = {
      startMs: item.start,
      start: new Date(item.start).toISOString(),
      end: new Date(end).toISOString(),
      group,
      value: aggregateValue(counter.aggregate, item.state),
      final: end <= closedBefore,
    };
    if (item.state.approximate) row.approximate = true;
    rows.push(row);
  }
  rows.sort((a, b) => b.startMs - a.startMs || compareGroups(a.group, b.group));
  return rows.map(({ startMs: _, ...row }) => row);
}

function compareGroups(a: Record<string, unknown>, b: Record<string, unknown>): number {
  const left = JSON.stringify(a);
  const right = JSON.stringify(b);
  return left < right ? -1 : left > right ? 1 : 0;
}

/** Windows of a counter, newest first, with their groups (sessions by start, for session counters). */
export async function listWindows(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  options: ListOptions = {},
): Promise<WindowRow[]> {
  const limit = options.limit ?? 100;
  if (counter.window.kind === "session") {
    const filters = options.groups ?? {};
    const accept = Object.keys(filters).length === 0
      ? undefined
      : (group: Record<string, unknown>) => matchesGroup(group, filters);
    return await readSessionRows(stream, counter, { ...context, ...options, accept, limit });
  }
  const fromMs = options.fromMs ?? -8.64e15;
  const toMs = options.toMs ?? 8.64e15;
  // Panes that can belong to a window starting in [from, to).
  const paneList = await context.store.panes(stream.name, counter.meta, {
    fromMs: Math.max(fromMs, -8.64e15),
    toMs: Math.min(toMs + counter.window.sizeMs, 8.64e15),
  });
  const starts = new Set<number>();
  for (const pane of paneList) {
    for (const start of windowsOfPane(pane, counter.window)) {
      if (start >= fromMs && start < toMs) starts.add(start);
    }
  }
  const newestFirst = [...starts].sort((a, b) => b - a).slice(0, limit);
  if (newestFirst.length === 0) return [];
  const rows = await rowsFor(stream, counter, newestFirst, context, options.groups ?? {});
  return rows.slice(0, limit);
}

/**
 * The window containing now (for sliding windows: the last `size`), per
 * group; for session counters the open sessions.
 */
export async function currentWindow(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  groups: Record<string, string> = {},
): Promise<{ start: string; end: string; rows: WindowRow[] }> {
  if (counter.window.kind === "session") {
    const accept = (group: Record<string, unknown>) => matchesGroup(group, groups);
    return await currentSessions(stream, counter, { ...context, accept });
  }
  const start = currentWindowStart(context.nowMs, counter.window);
  const rows = await rowsFor(stream, counter, [start], context, groups);
  return {
    start: new Date(start).toISOString(),
    end: new Date(start + counter.window.sizeMs).toISOString(),
    rows,
  };
}
