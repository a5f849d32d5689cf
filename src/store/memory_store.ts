/**
 * The embedded store: everything in this process's memory. The default for a
 * laptop and for tests; state is lost on restart and not shared between
 * instances (use the Redis store for that).
 *
 * @module
 */
import { addValue, type AggregateState, emptyState, mergeState } from "../window/aggregate.ts";
import {
  type ApplyResult,
  type ClosedWindow,
  type CloseOptions,
  type CounterMeta,
  type EventOutcome,
  OTHER_GROUP,
  type Store,
  type StoreBatch,
  type StreamStats,
  type WindowRead,
  type WindowValue,
} from "./types.ts";

interface Cell {
  state: AggregateState;
  values?: Set<string>;
}

interface Pane {
  expiresAt: number;
  groups: Map<string, Cell>;
}

interface StreamState {
  watermark: number | null;
  accepted: number;
  applied: number;
  duplicates: number;
  late: number;
  filtered: number;
  overflow: Map<string, number>;
  /** Dedupe ids in insertion order, which is also expiry order for one TTL. */
  seen: Map<string, number>;
  panes: Map<string, Map<number, Pane>>;
  /** Per counter: windows holding data and not yet closed, start → end. */
  open: Map<string, Map<number, number>>;
}

/** Options for {@linkcode MemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock (ms) used for expiry. @default {Date.now} */
  now?: () => number;
  /** How often (ms of the clock) expired panes are swept. @default {1000} */
  sweepEveryMs?: number;
}

/** A {@linkcode Store} held in process memory, bounded by pane TTLs and `maxGroups`. */
export class MemoryStore implements Store {
  readonly kind = "memory";
  #streams = new Map<string, StreamState>();
  #now: () => number;
  #sweepEveryMs: number;
  #nextSweep = 0;

  constructor(options: MemoryStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#sweepEveryMs = options.sweepEveryMs ?? 1_000;
  }

  #stream(name: string): StreamState {
    let state = this.#streams.get(name);
    if (!state) {
      state = {
        watermark: null,
        accepted: 0,
        applied: 0,
        duplicates: 0,
        late: 0,
        filtered: 0,
        overflow: new Map(),
        seen: new Map(),
        panes: new Map(),
        open: new Map(),
      };
      this.#streams.set(name, state);
    }
    return state;
  }

  applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    const now = batch.nowMs;
    this.#sweep(now);
    const stream = this.#stream(batch.stream);
    this.#forgetExpiredIds(stream, now);
    const outcomes: EventOutcome[] = [];
    for (const event of batch.events) {
      if (event.id !== undefined && batch.dedupeTtlMs > 0) {
        const expiresAt = stream.seen.get(event.id);
        if (expiresAt !== undefined && expiresAt > now) {
          outcomes.push("duplicate");
          stream.duplicates += 1;
          continue;
        }
        stream.seen.delete(event.id);
        stream.seen.set(event.id, now + batch.dedupeTtlMs);
      }
      if (stream.watermark !== null && event.timeMs < stream.watermark - batch.latenessMs) {
        outcomes.push("late");
        stream.late += 1;
        continue;
      }
      if (stream.watermark === null || event.timeMs > stream.watermark) {
        stream.watermark = event.timeMs;
      }
      for (const update of event.updates) {
        this.#applyUpdate(stream, batch.counters[update.counter], update, now);
      }
      outcomes.push("applied");
      stream.applied += 1;
    }
    stream.accepted += batch.events.length + batch.filtered;
    stream.filtered += batch.filtered;
    return Promise.resolve({ outcomes, watermark: stream.watermark });
  }

  #applyUpdate(
    stream: StreamState,
    counter: CounterMeta,
    update: { pane: number; group: string; value?: number | string },
    now: number,
  ): void {
    let panes = stream.panes.get(counter.name);
    if (!panes) {
      panes = new Map();
      stream.panes.set(counter.name, panes);
    }
    let pane = panes.get(update.pane);
    if (!pane || pane.expiresAt <= now) {
      pane = { expiresAt: 0, groups: new Map() };
      panes.set(update.pane, pane);
      this.#openWindows(stream, counter, update.pane);
    }
    pane.expiresAt = now + counter.ttlMs;
    let group = update.group;
    let cell = pane.groups.get(group);
    if (!cell && pane.groups.size >= counter.maxGroups) {
      group = OTHER_GROUP;
      cell = pane.groups.get(group);
      stream.overflow.set(counter.name, (stream.overflow.get(counter.name) ?? 0) + 1);
    }
    if (!cell) {
      cell = { state: emptyState() };
      if (counter.aggregate === "distinct") cell.values = new Set();
      pane.groups.set(group, cell);
    }
    if (counter.aggregate === "distinct") {
      cell.state.count += 1;
      cell.values!.add(String(update.value));
      cell.state.distinct = cell.values!.size;
    } else {
      addValue(cell.state, typeof update.value === "number" ? update.value : undefined);
    }
  }

  #openWindows(stream: StreamState, counter: CounterMeta, pane: number): void {
    let open = stream.open.get(counter.name);
    if (!open) {
      open = new Map();
      stream.open.set(counter.name, open);
    }
    const newest = Math.floor(pane / counter.hopMs) * counter.hopMs;
    for (let start = newest; start + counter.sizeMs > pane; start -= counter.hopMs) {
      if (!open.has(start)) open.set(start, start + counter.sizeMs);
    }
  }

  closeWindows(
    stream: string,
    counters: CounterMeta[],
    options: CloseOptions,
  ): Promise<ClosedWindow[]> {
    const state = this.#streams.get(stream);
    const closed: ClosedWindow[] = [];
    if (!state || state.watermark === null) return Promise.resolve(closed);
    const cutoff = state.watermark - options.latenessMs;
    const limit = options.limit ?? 100;
    for (const counter of counters) {
      const open = state.open.get(counter.name);
      if (!open) continue;
      const due = [...open].filter(([, end]) => end <= cutoff)
        .sort((a, b) => a[0] - b[0]).slice(0, limit);
      const panes = state.panes.get(counter.name) ?? new Map<number, Pane>();
      const now = this.#now();
      for (const [start, end] of due) {
        open.delete(start);
        const inWindow = [...panes.keys()].filter((pane) => pane >= start && pane < end);
        closed.push({
          counter: counter.name,
          start,
          end,
          groups: mergePanes(panes, inWindow, now),
        });
      }
    }
    return Promise.resolve(closed);
  }

  #forgetExpiredIds(stream: StreamState, now: number): void {
    for (const [id, expiresAt] of stream.seen) {
      if (expiresAt > now) break;
      stream.seen.delete(id);
    }
  }

  #sweep(now: number): void {
    if (now < this.#nextSweep) return;
    this.#nextSweep = now + this.#sweepEveryMs;
    for (const stream of this.#streams.values()) {
      for (const panes of stream.panes.values()) {
        for (const [start, pane] of panes) {
          if (pane.expiresAt <= now) panes.delete(start);
        }
      }
    }
  }

  panes(stream: string, counter: CounterMeta, fromMs: number, toMs: number): Promise<number[]> {
    const now = this.#now();
    const panes = this.#streams.get(stream)?.panes.get(counter.name);
    const starts: number[] = [];
    for (const [start, pane] of panes ?? []) {
      if (start >= fromMs && start < toMs && pane.expiresAt > now) starts.push(start);
    }
    return Promise.resolve(starts.sort((a, b) => a - b));
  }

  readWindows(stream: string, counter: CounterMeta, windows: WindowRead[]): Promise<WindowValue[]> {
    const now = this.#now();
    const panes = this.#streams.get(stream)?.panes.get(counter.name);
    const out: WindowValue[] = [];
    if (!panes) return Promise.resolve(out);
    for (const window of windows) {
      for (const { group, state } of mergePanes(panes, window.panes, now)) {
        out.push({ start: window.start, group, state });
      }
    }
    return Promise.resolve(out);
  }

  stats(stream: string, counters: CounterMeta[]): Promise<StreamStats> {
    const state = this.#streams.get(stream);
    const overflow: Record<string, number> = {};
    for (const counter of counters) overflow[counter.name] = state?.overflow.get(counter.name) ?? 0;
    return Promise.resolve({
      watermark: state?.watermark ?? null,
      accepted: state?.accepted ?? 0,
      applied: state?.applied ?? 0,
      duplicates: state?.duplicates ?? 0,
      late: state?.late ?? 0,
      filtered: state?.filtered ?? 0,
      overflow,
    });
  }

  ping(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#streams.clear();
    return Promise.resolve();
  }
}

/** Merges the live panes among `starts` into one state per group. */
function mergePanes(
  panes: Map<number, Pane>,
  starts: Iterable<number>,
  now: number,
): Array<{ group: string; state: AggregateState }> {
  const merged = new Map<string, Cell>();
  for (const start of starts) {
    const pane = panes.get(start);
    if (!pane || pane.expiresAt <= now) continue;
    for (const [group, cell] of pane.groups) {
      let into = merged.get(group);
      if (!into) {
        into = { state: emptyState() };
        if (cell.values) into.values = new Set();
        merged.set(group, into);
      }
      mergeState(into.state, cell.state);
      if (cell.values) {
        for (const value of cell.values) into.values!.add(value);
        into.state.distinct = into.values!.size;
      }
    }
  }
  return [...merged].map(([group, cell]) => ({ group, state: cell.state }));
}
