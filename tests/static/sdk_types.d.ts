/** Types of `static/sdk/sdk.js` for its tests. */
export interface Tracker {
  track(stream: string, event: Record<string, unknown>): Record<string, string>;
  flush(): Promise<{ held: number }>;
  beacon(): void;
  settled(): Promise<void>;
  close(): Promise<{ kept: number }>;
  readonly held: number;
  readonly dropped: number;
}
export function createTracker(options: {
  key: string;
  endpoint?: string;
  dedupeField?: string;
  maxBatch?: number;
  flushMs?: number;
  maxRetries?: number;
  retryBaseMs?: number;
  maxHeld?: number;
  heldRetryMs?: number;
  idempotencyTtlMs?: number;
  onRejected?: (report: {
    stream: string;
    events: Array<Record<string, unknown>>;
    rejected: Array<{ index: number; errors: Array<{ path: string; message: string }> }>;
    rejectedCount: number;
  }) => void;
  onRefused?: (report: {
    stream: string;
    events: Array<Record<string, unknown>>;
    status: number;
    code: string | null;
    message: string | null;
  }) => void;
}): Tracker;
export function init(options: Parameters<typeof createTracker>[0]): Tracker;
export function track(stream: string, event: Record<string, unknown>): Record<string, string>;
export function flush(): Promise<{ held: number }>;
export function close(): Promise<{ kept: number }>;
export interface SubscribeError extends Error {
  status?: number;
  code?: string;
}
export function subscribe(stream: string, options: {
  key?: string;
  endpoint?: string;
  types?: string[];
  counter?: string;
  filter?: string;
  onMessage?: (message: Record<string, unknown>) => void;
  onError?: (error: SubscribeError) => void;
  retryBaseMs?: number;
  maxRetryMs?: number;
  notFoundRetryMs?: number;
}): { close(): void };
export class SseParser {
  push(chunk: string): Array<{ event: string; data: string; id: string | null }>;
}
