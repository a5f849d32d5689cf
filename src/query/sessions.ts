/**
 * Reading session counters: their sessions, open and closed (within
 * retention), as window rows whose `end` is the time of the last event.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import { compareGroupKeys, type Store } from "../store/types.ts";
import { aggregateValue, type CompiledCounter, decodeGroup, partialWindow } from "../window/mod.ts";
import { closedBefore } from "../config/mod.ts";
import { statsOfRead } from "./_read_stats.ts";

/** One session of one group, as the API returns it (the same shape as a window row). */
export interface SessionRow {
  /** Time of the session's first event, ISO-8601. */
  start: string;
  /** Time of its last event (inclusive), ISO-8601. */
  end: string;
  /** Group values by field. */
  group: Record<string, unknown>;
  /** The aggregate's value over the session's events. */
  value: number | null;
  /** True once the session is final: closed, or the watermark passed end + gap + lateness. */
  final: boolean;
  /** Present and true when the value is an estimate (distinct on Redis). */
  approximate?: boolean;
  /** Present and true when the session may miss events (see {@linkcode partialWindow}). */
  partial?: boolean;
}

/** What {@linkcode readSessionRows} needs. */
export interface SessionReadOptions {
  /** The store to read. */
  store: Store;
  /** The clock (ms), for an idle stream's watermark. */
  nowMs: number;
  /** Earliest start (ms). @default {everything retained} */
  fromMs?: number;
  /** Sessions must start before this (ms). @default {no bound} */
  toMs?: number;
  /** Keeps only the groups it accepts. @default {every group} */
  accept?: (group: Record<string, unknown>) => boolean;
  /** Most rows; without `accept` the store reads no more than these. @default {all} */
  limit?: number;
  /**
   * Reads only the sessions not closed yet (at most the counter's `maxSessions`), not the closed
   * ones retained. @default {false}
   */
  open?: boolean;
}

/** Sessions of a session counter, newest start first (ties by group), with `final` judged now. */
export async function readSessionRows(
  stream: CompiledStream,
  counter: CompiledCounter,
  options: SessionReadOptions,
): Promise<SessionRow[]> {
  const gapMs = counter.meta.session?.gapMs ?? 0;
  // The stats in the same atomic read as the sessions (one store call), never apart: sessions
  // read before a batch that the stats then see would be called final without what it added.
  const sessions = await options.store.readSessions(stream.name, counter.meta, {
    fromMs: Math.max(options.fromMs ?? -8.64e15, -8.64e15),
    toMs: Math.min(options.toMs ?? 8.64e15, 8.64e15),
    limit: options.accept ? undefined : options.limit,
    ...(options.open ? { open: true } : {}),
    stats: true,
  });
  const finalBefore = closedBefore(stream, statsOfRead(options.store, sessions), options.nowMs);
  const rows: Array<SessionRow & { startMs: number; key: string }> = [];
  for (const session of sessions) {
    const group = decodeGroup(counter.groupBy, session.group);
    if (options.accept && !options.accept(group)) continue;
    const row: SessionRow & { startMs: number; key: string } = {
      startMs: session.start,
      key: session.group,
      start: new Date(session.start).toISOString(),
      end: new Date(session.end).toISOString(),
      group,
      // Quantiles are refused on session counters (config/compile.ts): a number or null.
      value: aggregateValue(counter.aggregate, session.state) as number | null,
      final: session.closed || session.end + gapMs <= finalBefore,
    };
    if (session.state.approximate) row.approximate = true;
    if (partialWindow(counter, session.start)) row.partial = true;
    rows.push(row);
  }
  // The stores' order (ties by group key), so a limit they applied cuts where this one would.
  rows.sort((a, b) => b.startMs - a.startMs || compareGroupKeys(a.key, b.key));
  return rows.slice(0, options.limit ?? rows.length).map(({ startMs: _, key: __, ...row }) => row);
}

/**
 * The open sessions of a session counter (those not final yet), and the span
 * they cover: from the earliest start to the latest end + gap (when they stop
 * growing); `now`–`now` when there are none.
 */
export async function currentSessions(
  stream: CompiledStream,
  counter: CompiledCounter,
  options: SessionReadOptions,
): Promise<{ start: string; end: string; rows: SessionRow[] }> {
  // Closed sessions are final: only the open ones are read, at most maxSessions, however many
  // closed ones the counter retains.
  const rows = (await readSessionRows(stream, counter, { ...options, open: true }))
    .filter((row) => !row.final);
  const gapMs = counter.meta.session?.gapMs ?? 0;
  if (rows.length === 0) {
    const now = new Date(options.nowMs).toISOString();
    return { start: now, end: now, rows };
  }
  let start = Infinity;
  let end = -Infinity;
  for (const row of rows) {
    start = Math.min(start, Date.parse(row.start));
    end = Math.max(end, Date.parse(row.end) + gapMs);
  }
  return { start: new Date(start).toISOString(), end: new Date(end).toISOString(), rows };
}
