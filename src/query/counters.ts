/**
 * Reading counters: the windows of a counter over a time range, and the
 * value of the window containing now.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { CompiledStream } from "../config/mod.ts";
import {
  compareGroupKeys,
  type ReadStats,
  type Store,
  type WindowRead,
  type WindowValue,
} from "../store/types.ts";
import { rankWindow, type TopOptions } from "./top.ts";
import {
  type AggregateValue,
  aggregateValue,
  canonicalJson,
  type CompiledCounter,
  currentWindowStart,
  decodeGroup,
  panesOfWindow,
  partialWindow,
  type ValueOptions,
  windowsOfPane,
} from "../window/mod.ts";
import { currentSessions, readSessionRows } from "./sessions.ts";
import { closedBefore } from "../config/mod.ts";
import { statsOfRead } from "./_read_stats.ts";

/** One window of one group, as the API returns it. */
export interface WindowRow {
  /** Window start, ISO-8601. */
  start: string;
  /** Window end (exclusive), ISO-8601. */
  end: string;
  /** Group values by field. */
  group: Record<string, unknown>;
  /** The aggregate's value; null where none exists (min of nothing); an object for quantiles. */
  value: AggregateValue;
  /** True once the watermark has passed end + lateness: the value can no longer change. */
  final: boolean;
  /** Present and true when the value is an estimate (distinct on Redis, quantiles). */
  approximate?: boolean;
  /**
   * Present and true when the window misses events: they were applied before the counter was
   * added to its stream (or added back), see {@linkcode partialWindow}.
   */
  partial?: boolean;
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
  /** Quantiles a quantiles counter reports. @default {DEFAULT_QUANTILES} */
  quantiles?: readonly number[];
  /**
   * Only rows after this one in the listing's order (a window counter's, not a session
   * counter's): of its window, the groups after it; then older windows.
   * @default {from the newest}
   */
  after?: RowPosition;
}

/** Where a row stands in a listing: its window's start and its group key. */
export interface RowPosition {
  /** Window start (ms). */
  startMs: number;
  /** The row's group key (see {@linkcode compareGroupKeys}); null: past every group of the window. */
  group: string | null;
  /**
   * Present for a row whose group key is too long to travel in a URL: `group` is then only the
   * start of its key ({@linkcode compactPosition}), and this the {@linkcode groupKeyDigest} of the
   * whole key, which a read finds among the window's keys with that start.
   */
  groupDigest?: string;
}

/**
 * Longest group key (UTF-16 code units) a position names whole. A cursor is a URL parameter, and
 * the server refuses a request line over 64 KiB (an empty 400 that is not even JSON): a group
 * value of 50,000 characters made a cursor no client could send back.
 */
export const POSITION_KEY_CHARS = 1000;

/** SHA-256 of a group key, hex, as {@linkcode RowPosition.groupDigest} holds it. */
export function groupKeyDigest(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/**
 * `position` as a cursor names it: a group key longer than {@linkcode POSITION_KEY_CHARS} cut to
 * that (not inside a character), with the digest of the whole key.
 */
export function compactPosition(position: RowPosition): RowPosition {
  const key = position.group;
  if (key === null || key.length <= POSITION_KEY_CHARS) return position;
  let cut = POSITION_KEY_CHARS;
  // No lone high surrogate at the end: the start is a prefix of the key's UTF-8 bytes too.
  if (/[\uD800-\uDBFF]/.test(key[cut - 1])) cut--;
  return { startMs: position.startMs, group: key.slice(0, cut), groupDigest: groupKeyDigest(key) };
}

/**
 * Whether `group` is a start of a key as {@linkcode compactPosition} cuts it: {@linkcode
 * POSITION_KEY_CHARS} code units, or one fewer where the cut stepped back before a character it
 * would split. A shorter start, written by hand, would have the next page look for its digest
 * among every key of the window that begins with it (all of them, for an empty one), 1,000 a
 * store read: a window of 50,000 groups took 50 reads of every key for one page.
 */
export function isCompactedStart(group: string): boolean {
  return group.length === POSITION_KEY_CHARS || group.length === POSITION_KEY_CHARS - 1;
}

/**
 * The whole key of a compacted position: the window's first key after its start (in
 * {@linkcode compareGroupKeys} order; the cut start of a key is no key) whose digest is the
 * position's. Not found (it expired): the position of its start, so the page goes on there.
 */
async function wholePosition(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  position: RowPosition,
): Promise<RowPosition> {
  const prefix = position.group;
  if (position.groupDigest === undefined || prefix === null) return position;
  const read = [{
    start: position.startMs,
    panes: panesOfWindow(position.startMs, counter.window),
  }];
  let after = prefix;
  for (;;) {
    const values = await context.store.readWindows(stream.name, counter.meta, read, {
      page: { after, limit: 1000 },
    });
    for (const value of values) {
      if (!value.group.startsWith(prefix)) return { startMs: position.startMs, group: prefix };
      if (groupKeyDigest(value.group) === position.groupDigest) {
        return { startMs: position.startMs, group: value.group };
      }
    }
    if (values.length < 1000) return { startMs: position.startMs, group: prefix };
    after = values[values.length - 1].group;
  }
}

/** A page of {@linkcode listWindowsPage}. */
export interface WindowsPage {
  /** Rows, newest window first, groups by group key ({@linkcode compareGroupKeys}) within each. */
  rows: WindowRow[];
  /** Where the next page starts (pass as `after`); null when no rows are left. */
  next: RowPosition | null;
}

/** Options for {@linkcode currentWindow}. */
export interface CurrentOptions extends ValueOptions {
  /** Group filters: field → value as text (`"null"` matches null). @default {all groups} */
  groups?: Record<string, string>;
  /** Only this many groups by value, the rest merged into `others` (no group filters then). */
  top?: number;
  /** Quantiles counters with `top`: the quantile groups are ranked by. @default {0.5} */
  by?: number;
}

/** The groups of a window beyond its top ones, merged. */
export interface OthersRow {
  /** Window start, ISO-8601. */
  start: string;
  /** Window end (exclusive), ISO-8601. */
  end: string;
  /** How many groups the window has, top ones included. */
  groups: number;
  /** The rest's merged value (see `top.ts`), or null when there is no rest. */
  value: AggregateValue;
  /** True once the watermark has passed end + lateness. */
  final: boolean;
  /** Present and true when the value is an estimate. */
  approximate?: boolean;
  /** Present and true when the window misses events (see {@linkcode WindowRow.partial}). */
  partial?: boolean;
}

/** Current time and watermark a read is judged against. */
export interface ReadContext {
  store: Store;
  nowMs: number;
}

/**
 * Whether a group has the filtered values, as a test made once for a read. A filter's text
 * matches a string equal to it, or a number, boolean or null (a missing value) whose JSON text it
 * is, or an object or array whose JSON text it is with its objects' keys in any order; in double
 * quotes, as a JSON string (`"null"`, `"1"`), it matches only that string.
 *
 * Each filter's text is read as JSON here, once: read again for every group it was compared
 * with, a filter of 60 KB took seconds of the event loop over a window of 5,000 groups.
 */
function groupMatcher(
  filters: Record<string, string>,
): (group: Record<string, unknown>) => boolean {
  const checks = Object.entries(filters).map(([field, wanted]) => {
    // Of an object or array: the canonical JSON of the value the text writes, read when first
    // needed (null: no JSON, or one too deep to write again).
    let canonical: string | null | undefined;
    const sameJson = (value: object) => {
      if (canonical === undefined) {
        try {
          canonical = canonicalJson(JSON.parse(wanted));
        } catch {
          canonical = null;
        }
      }
      if (canonical === null) return false;
      try {
        return canonicalJson(value) === canonical;
      } catch {
        return false;
      }
    };
    return { field, wanted, quoted: jsonString(wanted), sameJson };
  });
  return (group) => {
    for (const { field, wanted, quoted, sameJson } of checks) {
      const value = group[field];
      if (quoted !== undefined) {
        if (value !== quoted) return false;
        continue;
      }
      const text = value === null || value === undefined
        ? "null"
        : typeof value === "string"
        ? value
        : JSON.stringify(value);
      // Only an object or array is matched as any JSON text of it (keys in any order); null,
      // whose `typeof` is "object" too, is matched by `null` alone, as a number by its JSON text
      // alone.
      const structured = typeof value === "object" && value !== null;
      if (text !== wanted && !(structured && sameJson(value))) return false;
    }
    return true;
  };
}

/** The string a filter's text writes in JSON (`"…"`), or undefined. */
function jsonString(text: string): string | undefined {
  if (text.length < 2 || text[0] !== '"' || text[text.length - 1] !== '"') return undefined;
  try {
    const value = JSON.parse(text);
    return typeof value === "string" ? value : undefined;
  } catch {
    return undefined;
  }
}

async function rowsFor(
  stream: CompiledStream,
  counter: CompiledCounter,
  starts: number[],
  context: ReadContext,
  filters: Record<string, string>,
  options: ValueOptions & {
    top?: TopOptions;
    /** The stats of an earlier read to judge these windows by. @default {read with them} */
    stats?: ReadStats;
  } = {},
): Promise<{ rows: WindowRow[]; others: OthersRow[]; finalBefore: number; stats: ReadStats }> {
  const { top, stats: given, ...valueOptions } = options;
  // The stats given (read before), or read in the same atomic read as the values (one store
  // call), never after them: a batch applied between the two reads moves the watermark the stats
  // see, and values read before it would be called final without what it added. Values read with
  // or after the stats hold every event those stats call on time.
  const read = await context.store.readWindows(
    stream.name,
    counter.meta,
    starts.map((start) => ({ start, panes: panesOfWindow(start, counter.window) })),
    { ...(top ? { top: top.top } : {}), ...(given ? {} : { stats: true }) },
  );
  const stats = given ?? statsOfRead(context.store, read);
  const finalBefore = closedBefore(stream, stats, context.nowMs);
  const others: OthersRow[] = [];
  let values = read;
  // Rank of each row within its window, when only the top groups are wanted.
  const rankOfRow = new Map<WindowValue, number>();
  if (top) {
    values = [];
    const byStart = Map.groupBy(read, (item) => item.start);
    for (const [start, items] of [...byStart].sort((a, b) => b[0] - a[0])) {
      const ranked = rankWindow(counter, items, top);
      ranked.top.forEach((item, i) => rankOfRow.set(item, i));
      values.push(...ranked.top);
      const end = start + counter.window.sizeMs;
      const row: OthersRow = {
        start: new Date(start).toISOString(),
        end: new Date(end).toISOString(),
        groups: ranked.groups,
        value: ranked.rest && aggregateValue(counter.aggregate, ranked.rest, valueOptions),
        final: end <= finalBefore,
      };
      if (ranked.rest?.approximate) row.approximate = true;
      if (partialWindow(counter, start)) row.partial = true;
      others.push(row);
    }
  }
  // Each row with what it sorts by: its window, then its rank (top) or its group key.
  const rows: Array<{ row: WindowRow; startMs: number; rank: number; key: string }> = [];
  const matches = groupMatcher(filters);
  for (const item of values) {
    const group = decodeGroup(counter.groupBy, item.group);
    if (!matches(group)) continue;
    rows.push({
      row: toRow(counter, item, finalBefore, valueOptions, group),
      startMs: item.start,
      rank: rankOfRow.get(item) ?? 0,
      key: item.group,
    });
  }
  rows.sort((a, b) =>
    b.startMs - a.startMs || (top ? a.rank - b.rank : compareGroupKeys(a.key, b.key))
  );
  return { rows: rows.map((entry) => entry.row), others, finalBefore, stats };
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
    const accept = Object.keys(filters).length === 0 ? undefined : groupMatcher(filters);
    return await readSessionRows(stream, counter, { ...context, ...options, accept, limit });
  }
  return (await listWindowsPage(stream, counter, context, options)).rows;
}

/**
 * {@linkcode listWindows} of a window counter as a page: its rows and where the next page
 * starts, so a window of more groups than one reply holds can be read whole.
 *
 * A page costs about its rows: windows are read newest first, a few at a time
 * ({@linkcode PANES_PER_READ}), until the page is full, and without group filters the store
 * merges only the page's groups (see the store's `ReadOptions.page`), finding them in one pass over
 * the group keys of the windows it reads. With group filters each window read is read whole.
 */
export async function listWindowsPage(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  options: ListOptions = {},
): Promise<WindowsPage> {
  const limit = options.limit ?? 100;
  const after = options.after && await wholePosition(stream, counter, context, options.after);
  // From the cursor's window on, or past it when the cursor says it was read whole.
  const bounded = after
    ? {
      ...options,
      toMs: Math.min(
        options.toMs ?? 8.64e15,
        after.group === null ? after.startMs : after.startMs + 1,
      ),
    }
    : options;
  const starts = await windowStarts(stream, counter, context, bounded);
  if (starts.length === 0) return { rows: [], next: null };
  const filters = options.groups ?? {};
  const filtered = Object.keys(filters).length > 0;
  const matches = groupMatcher(filters);
  // The stats with the first read of windows, in the same atomic store call (see rowsFor).
  let stats: ReadStats | undefined;
  const found: WindowValue[] = [];
  let taken = 0;
  while (found.length <= limit && taken < starts.length) {
    const batch: WindowRead[] = [];
    let panes = 0;
    while (taken < starts.length && (batch.length === 0 || panes < PANES_PER_READ)) {
      const start = starts[taken++];
      const read = { start, panes: panesOfWindow(start, counter.window) };
      panes += read.panes.length;
      batch.push(read);
    }
    // Of the cursor's window, only the groups after its row.
    const skip = after !== undefined && after.group !== null && batch[0].start === after.startMs
      ? after.group
      : undefined;
    // Unfiltered, the store pages the groups; filtered, every group is read and filtered here.
    const read = await context.store.readWindows(stream.name, counter.meta, batch, {
      ...(filtered ? {} : { page: { after: skip, limit: limit + 1 - found.length } }),
      ...(stats === undefined ? { stats: true } : {}),
    });
    stats ??= statsOfRead(context.store, read);
    if (!filtered) {
      found.push(...read);
      continue;
    }
    // The filter first: a sort of only the groups it keeps.
    const values = read.filter(
      (value) =>
        (skip === undefined || value.start !== batch[0].start ||
          compareGroupKeys(value.group, skip) > 0) &&
        matches(decodeGroup(counter.groupBy, value.group)),
    );
    values.sort((a, b) => b.start - a.start || compareGroupKeys(a.group, b.group));
    found.push(...values.slice(0, limit + 1 - found.length));
  }
  // No window read (a limit below 0 from a caller): nothing to judge.
  if (stats === undefined) return { rows: [], next: null };
  const page = found.slice(0, limit);
  const finalBefore = closedBefore(stream, stats, context.nowMs);
  let next: RowPosition | null = null;
  if (found.length > limit) {
    const last = page.at(-1)!;
    next = { startMs: last.start, group: last.group };
  } else if (taken < starts.length) {
    // Every row of the windows read is in the page: on from the window after them.
    next = { startMs: starts[taken - 1], group: null };
  }
  return { rows: page.map((item) => toRow(counter, item, finalBefore, options)), next };
}

/**
 * Panes one store read of a page covers (at least one window): a tumbling counter's windows are
 * one pane each, a sliding 1d counter's with 1m precision 1,440. On Redis one read is one script,
 * which blocks Redis while it runs: every reader of many windows (pages, `top`, the alerts'
 * evaluation after ingest) reads them this many panes at a time.
 */
export const PANES_PER_READ = 4096;

/**
 * `store.readWindows` of the windows starting at `starts` of one counter, in the runs
 * {@linkcode windowBatches} makes ({@linkcode PANES_PER_READ} panes a read, at least one window),
 * one read after another: their values, in the order the reads give them.
 */
export async function readWindowsInTurn(
  store: Store,
  stream: string,
  counter: CompiledCounter,
  starts: number[],
): Promise<WindowValue[]> {
  const values: WindowValue[] = [];
  for (const batch of windowBatches(starts, counter)) {
    const reads = batch.map((start) => ({ start, panes: panesOfWindow(start, counter.window) }));
    values.push(...await store.readWindows(stream, counter.meta, reads));
  }
  return values;
}

/**
 * The row of one group's value in one window, the one way every listing builds it; `group` is
 * the item's group decoded, when the caller has it already (to filter by it).
 */
function toRow(
  counter: CompiledCounter,
  item: WindowValue,
  finalBefore: number,
  valueOptions: ValueOptions,
  group: Record<string, unknown> = decodeGroup(counter.groupBy, item.group),
): WindowRow {
  const end = item.start + counter.window.sizeMs;
  const row: WindowRow = {
    start: new Date(item.start).toISOString(),
    end: new Date(end).toISOString(),
    group,
    value: aggregateValue(counter.aggregate, item.state, valueOptions),
    final: end <= finalBefore,
  };
  if (item.state.approximate) row.approximate = true;
  if (partialWindow(counter, item.start)) row.partial = true;
  return row;
}

/** Starts of the windows with live panes in `[fromMs, toMs)`, newest first. */
async function windowStarts(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  options: ListOptions,
): Promise<number[]> {
  const fromMs = options.fromMs ?? -8.64e15;
  const toMs = options.toMs ?? 8.64e15;
  // Panes that can belong to a window starting in [from, to).
  const paneList = await context.store.panes(stream.name, counter.meta, {
    fromMs: Math.max(fromMs, -8.64e15),
    toMs: Math.min(toMs + counter.window.sizeMs, 8.64e15),
  });
  // Newest pane first: the windows of a pane are consecutive starts (oldest first), and those not
  // older than the oldest start taken so far were taken with a newer pane, so each start is
  // taken once without a set (a sliding 1d window of 1m panes: 1,440 windows a pane).
  const starts: number[] = [];
  let oldest = Infinity;
  for (let i = paneList.length - 1; i >= 0; i--) {
    const windows = windowsOfPane(paneList[i], counter.window);
    for (let j = windows.length - 1; j >= 0; j--) {
      const start = windows[j];
      if (start >= oldest) continue;
      oldest = start;
      if (start >= fromMs && start < toMs) starts.push(start);
    }
  }
  return starts;
}

/** Result of {@linkcode listTopWindows}. */
export interface TopWindows {
  /** Per window, newest first, its top groups, highest value first. */
  windows: WindowRow[];
  /** Per window, newest first, the rest of its groups merged, and its group count. */
  others: OthersRow[];
}

/**
 * Windows of a counter, newest first, each with only its `top` groups by
 * value (ties by group key) and the rest merged into `others`.
 */
export async function listTopWindows(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  options: Omit<ListOptions, "groups"> & TopOptions,
): Promise<TopWindows> {
  const limit = options.limit ?? 100;
  const starts = await windowStarts(stream, counter, context, options);
  const newestFirst = starts.slice(0, limit);
  const result: TopWindows = { windows: [], others: [] };
  // The stats once, with the first read of windows, the later reads judged by them (see rowsFor).
  let stats: ReadStats | undefined;
  // A few windows a store read, as a page reads them: one read of a thousand windows of a sliding
  // day would merge 1,440,000 panes' groups in one Redis script, blocking Redis all that time.
  for (const batch of windowBatches(newestFirst, counter)) {
    const read = await rowsFor(stream, counter, batch, context, {}, {
      quantiles: options.quantiles,
      top: { top: options.top, by: options.by },
      stats,
    });
    stats = read.stats;
    result.windows.push(...read.rows);
    result.others.push(...read.others);
  }
  return result;
}

/**
 * `starts` (newest first) in runs of consecutive windows, as {@linkcode listWindowsPage} reads
 * them: each run takes windows until they cover {@linkcode PANES_PER_READ} panes (at least one).
 */
function windowBatches(starts: number[], counter: CompiledCounter): number[][] {
  const perWindow = panesOfWindow(0, counter.window).length;
  const size = Math.ceil(PANES_PER_READ / perWindow);
  const batches: number[][] = [];
  for (let at = 0; at < starts.length; at += size) batches.push(starts.slice(at, at + size));
  return batches;
}

/** Options for {@linkcode currentWindowPage}. */
export interface CurrentPageOptions extends ValueOptions {
  /** Most rows. @default {100} */
  limit?: number;
  /**
   * Only the rows after this one ({@linkcode WindowsPage.next} of the page before): its window's,
   * which was current at the first page, whatever the time now. Its `startMs` is a start of one of
   * the counter's windows. @default {the window containing now, from its first group}
   */
  after?: RowPosition;
  /** Group filters: field → value as text (`"null"` matches null). @default {all groups} */
  groups?: Record<string, string>;
}

/**
 * A page of the rows of a window counter's current window (not a session counter's), by group
 * key: the window containing now, or the one the page before read (`after`), with its span.
 */
export async function currentWindowPage(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  options: CurrentPageOptions = {},
): Promise<WindowsPage & { start: string; end: string }> {
  if (counter.window.kind === "session") {
    throw new Error(`Counter '${counter.name}' is a session counter: its rows are not paged`);
  }
  const start = options.after?.startMs ?? currentWindowStart(context.nowMs, counter.window);
  const page = await listWindowsPage(stream, counter, context, {
    fromMs: start,
    toMs: start + 1,
    limit: options.limit,
    after: options.after,
    groups: options.groups,
    quantiles: options.quantiles,
  });
  return {
    ...page,
    start: new Date(start).toISOString(),
    end: new Date(start + counter.window.sizeMs).toISOString(),
  };
}

/**
 * The window containing now (for sliding windows: the last `size`), per
 * group; for session counters the open sessions.
 */
export async function currentWindow(
  stream: CompiledStream,
  counter: CompiledCounter,
  context: ReadContext,
  options: CurrentOptions = {},
): Promise<{ start: string; end: string; rows: WindowRow[]; others?: OthersRow }> {
  if (counter.window.kind === "session") {
    const accept = groupMatcher(options.groups ?? {});
    return await currentSessions(stream, counter, { ...context, accept });
  }
  const start = currentWindowStart(context.nowMs, counter.window);
  const { rows, others, finalBefore } = await rowsFor(
    stream,
    counter,
    [start],
    context,
    options.groups ?? {},
    {
      quantiles: options.quantiles,
      top: options.top === undefined ? undefined : { top: options.top, by: options.by },
    },
  );
  const current: { start: string; end: string; rows: WindowRow[]; others?: OthersRow } = {
    start: new Date(start).toISOString(),
    end: new Date(start + counter.window.sizeMs).toISOString(),
    rows,
  };
  if (options.top !== undefined && others[0]) {
    current.others = others[0];
  } else if (options.top !== undefined) {
    // A window without groups: nothing to rank, but final (and partial) as it would be with some.
    const end = start + counter.window.sizeMs;
    current.others = {
      start: current.start,
      end: current.end,
      groups: 0,
      value: null,
      final: end <= finalBefore,
    };
    if (partialWindow(counter, start)) current.others.partial = true;
  }
  return current;
}
