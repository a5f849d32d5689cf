/**
 * The ingest pipeline shared by every transport (HTTP, WebSocket):
 * validate → event time → dedupe id → transform → counter updates → one
 * atomic store apply. The reply is built only after the store has applied
 * the batch, so nothing acknowledged is lost.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import type { IngestObserver, LogDemand } from "../fanout/types.ts";
import type { BatchEvent, CellUpdate, Store } from "../store/types.ts";
import { TransformError } from "../transform/mod.ts";
import type { FieldError } from "../validate/mod.ts";
import { validateEvent } from "../validate/mod.ts";
import { counterUpdate, readEventTime, readField } from "../window/mod.ts";

/** One item of a body: a parsed value, or why it could not be read. */
export type BodyItem = { ok: true; value: unknown } | {
  ok: false;
  error: FieldError;
};

/** One refused event in a reply. */
export interface Rejection {
  /** Position of the event in the request. */
  index: number;
  /** What is wrong with it. */
  errors: FieldError[];
}

/** The reply to an ingest request. */
export interface IngestReply {
  /** Events acknowledged: applied, duplicate, late or filtered out. */
  accepted: number;
  /** Of those, events whose dedupe id was already seen. */
  duplicates: number;
  /** Of those, events past the lateness bound (not counted in windows). */
  late: number;
  /** Of those, events a transform filter dropped. */
  filtered: number;
  /** Events refused, with reasons. Nothing of them was stored. */
  rejected: Rejection[];
}

/** Longest dedupe id accepted. */
export const MAX_ID_LENGTH = 256;

type Prepared = { ok: true; event: BatchEvent } | { ok: false; errors: FieldError[] } | {
  ok: "filtered";
};

function prepare(
  stream: CompiledStream,
  value: unknown,
  nowMs: number,
  withPayload: boolean,
): Prepared {
  const validation = validateEvent(value, stream.schema);
  if (!validation.ok) return { ok: false, errors: validation.errors };
  const event = validation.event;

  const time = readEventTime(
    stream.timeField === undefined ? undefined : readField(event, stream.timeField),
    nowMs,
  );
  if (!time.ok) return { ok: false, errors: [{ path: stream.timeField!, message: time.message }] };
  if (time.timeMs > nowMs + stream.maxFutureMs) {
    return {
      ok: false,
      errors: [{
        path: stream.timeField!,
        message: `Event time ${
          new Date(time.timeMs).toISOString()
        } is more than ${stream.maxFutureMs} ms in the future`,
      }],
    };
  }

  let id: string | undefined;
  if (stream.dedupe) {
    const raw = readField(event, stream.dedupe.field);
    if (typeof raw === "string" || typeof raw === "number") {
      id = String(raw);
      if (!id.isWellFormed()) {
        return {
          ok: false,
          errors: [{
            path: stream.dedupe.field,
            message: "Dedupe id must be well-formed Unicode (it has a lone surrogate)",
          }],
        };
      }
      if (id.length > MAX_ID_LENGTH) {
        return {
          ok: false,
          errors: [{
            path: stream.dedupe.field,
            message: `Dedupe id is ${id.length} characters; at most ${MAX_ID_LENGTH} are allowed`,
          }],
        };
      }
    } else if (raw !== undefined && raw !== null) {
      return {
        ok: false,
        errors: [{
          path: stream.dedupe.field,
          message: `Dedupe id must be a string or a number, got ${typeof raw}`,
        }],
      };
    }
  }

  let transformed;
  try {
    transformed = stream.transform(event);
  } catch (error) {
    if (error instanceof TransformError) {
      return { ok: false, errors: [{ path: error.path, message: error.message }] };
    }
    throw error;
  }
  if (transformed === null) return { ok: "filtered" };

  const updates: CellUpdate[] = [];
  const errors: FieldError[] = [];
  for (const counter of stream.counters) {
    const result = counterUpdate(counter, transformed, time.timeMs);
    if (!result.ok) errors.push(result.error);
    else if (result.update) updates.push(result.update);
  }
  if (errors.length > 0) return { ok: false, errors };
  const prepared: BatchEvent = { id, timeMs: time.timeMs, updates };
  if (withPayload) prepared.payload = JSON.stringify(transformed);
  return { ok: true, event: prepared };
}

/** What the fan-out consumers ask of an ingest: which events to log, and who to tell. */
export interface IngestFanout {
  /**
   * Which events go to the stream's durable result log with the batch
   * (`event.processed`, `event.late`). @default {none}
   */
  log?: { processed?: boolean; late?: boolean };
  /** Told about every applied batch. */
  observers?: readonly IngestObserver[];
}

/** Options for {@linkcode ingestItems}. */
export interface IngestOptions extends IngestFanout {
  /** Where the batch is applied. */
  store: Store;
  /** Receive time (ms): event time defaults to it, lateness is measured from it. */
  nowMs: number;
}

/** The fan-out consumers whose wishes decide a stream's {@linkcode IngestFanout}. */
export interface FanoutConsumers {
  /** Consumers that may want `event.processed` / `event.late` in the result log. */
  demand: readonly LogDemand[];
  /** Told about every applied batch. */
  observers: readonly IngestObserver[];
}

/** What to log and whom to tell when ingesting into `stream`, given the consumers. */
export function ingestFanoutFor(stream: string, consumers: FanoutConsumers): IngestFanout {
  const processed = consumers.demand.some((item) => item.wants(stream, "event.processed"));
  const late = consumers.demand.some((item) => item.wants(stream, "event.late"));
  return {
    log: processed || late ? { processed, late } : undefined,
    observers: consumers.observers,
  };
}

/**
 * Runs a parsed body through the pipeline and applies it to the store in one
 * atomic step. Throws what the store throws (e.g. `StoreUnavailableError`),
 * in which case nothing was applied.
 */
export async function ingestItems(
  stream: CompiledStream,
  items: readonly BodyItem[],
  options: IngestOptions,
): Promise<IngestReply> {
  const { store, nowMs } = options;
  const withPayload = Boolean(options.log?.processed || options.log?.late);
  const rejected: Rejection[] = [];
  const events: BatchEvent[] = [];
  let filtered = 0;
  items.forEach((item, index) => {
    if (!item.ok) {
      rejected.push({ index, errors: [item.error] });
      return;
    }
    const prepared = prepare(stream, item.value, nowMs, withPayload);
    if (prepared.ok === "filtered") filtered += 1;
    else if (prepared.ok) events.push(prepared.event);
    else rejected.push({ index, errors: prepared.errors });
  });

  let duplicates = 0;
  let late = 0;
  if (events.length > 0 || filtered > 0) {
    const result = await store.applyBatch({
      stream: stream.name,
      nowMs,
      latenessMs: stream.latenessMs,
      idleMs: stream.idleMs,
      dedupeTtlMs: stream.dedupe?.ttlMs ?? 0,
      counters: stream.counterMetas,
      events,
      filtered,
      log: withPayload ? options.log : undefined,
    });
    for (const observer of options.observers ?? []) {
      try {
        observer({ stream, events, outcomes: result.outcomes, nowMs, demand: result.demand });
      } catch (error) {
        console.error("Ingest observer failed:", error);
      }
    }
    for (const outcome of result.outcomes) {
      if (outcome === "duplicate") duplicates += 1;
      else if (outcome === "late") late += 1;
    }
  }
  return { accepted: events.length + filtered, duplicates, late, filtered, rejected };
}
