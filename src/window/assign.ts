/**
 * Window math. Every counter stores its events in panes (sub-buckets) of a
 * fixed width; a window is the union of the consecutive panes it spans. One
 * event therefore updates exactly one pane per counter whatever the window
 * kind, and hopping and sliding windows are exact at pane granularity.
 *
 * @module
 */
import type { WindowSpec } from "./spec.ts";

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const rest = a % b;
    a = b;
    b = rest;
  }
  return a;
}

/** Floors `timeMs` to a multiple of `stepMs` (also for negative times). */
export function alignDown(timeMs: number, stepMs: number): number {
  return Math.floor(timeMs / stepMs) * stepMs;
}

/** Width (ms) of the panes a window spec is stored in. */
export function paneWidth(spec: WindowSpec): number {
  switch (spec.kind) {
    case "tumbling":
      return spec.sizeMs;
    case "hopping":
      // Most hopping windows are a whole number of hops: no gcd loop on the hot path.
      return spec.sizeMs % spec.everyMs === 0 ? spec.everyMs : gcd(spec.sizeMs, spec.everyMs);
    case "sliding":
      return spec.precisionMs;
    case "session":
      // A session update's "pane" is the event time itself.
      return 1;
  }
}

/** Distance (ms) between the starts of two consecutive windows. */
export function hopWidth(spec: WindowSpec): number {
  switch (spec.kind) {
    case "tumbling":
      return spec.sizeMs;
    case "hopping":
      return spec.everyMs;
    case "sliding":
      return spec.precisionMs;
    case "session":
      return 1;
  }
}

/** Start (ms) of the pane that holds an event at `timeMs`. */
export function paneStart(timeMs: number, spec: WindowSpec): number {
  return alignDown(timeMs, paneWidth(spec));
}

/**
 * Returns the start (ms) of every window that contains `timeMs`, oldest first.
 *
 * @example
 * ```ts
 * assignWindows(90_000, { kind: "hopping", sizeMs: 120_000, everyMs: 60_000 });
 * // [0, 60000]
 * ```
 */
export function assignWindows(timeMs: number, spec: WindowSpec): number[] {
  if (spec.kind === "session") throw new RangeError("Session windows have no fixed windows");
  const hop = hopWidth(spec);
  const newest = alignDown(timeMs, hop);
  const starts: number[] = [];
  for (let start = newest; start + spec.sizeMs > timeMs; start -= hop) starts.push(start);
  return starts.reverse();
}

/** Starts of the panes that make up the window beginning at `windowStart`. */
export function panesOfWindow(windowStart: number, spec: WindowSpec): number[] {
  if (spec.kind === "session") throw new RangeError("Session windows have no fixed windows");
  const width = paneWidth(spec);
  const panes: number[] = [];
  for (let start = windowStart; start < windowStart + spec.sizeMs; start += width) {
    panes.push(start);
  }
  return panes;
}

/** Starts of the windows that contain the pane beginning at `pane`, oldest first. */
export function windowsOfPane(pane: number, spec: WindowSpec): number[] {
  return assignWindows(pane, spec);
}

/**
 * Start of the window that `current` reads at `nowMs`: for tumbling the window
 * containing now; for hopping the one containing now that ends soonest (the
 * one covering the most recent full `size`); for sliding the last `size`
 * ending at the current pane's end.
 */
export function currentWindowStart(nowMs: number, spec: WindowSpec): number {
  return assignWindows(nowMs, spec)[0];
}
