/**
 * Test helper: edgestream's LogTape records collected in memory instead of
 * printed, for tests that check what is logged.
 *
 * @module
 */
import { configure, type LogLevel, type LogRecord, reset } from "@logtape/logtape";
import { configureLogging, type LoggingOptions } from "../src/telemetry/logging.ts";

/** The message of `record` with its values filled in (strings bare, the rest as JSON). */
export function messageOf(record: LogRecord): string {
  return record.message.map((part, i) =>
    i % 2 === 0 || typeof part === "string" ? String(part) : JSON.stringify(part)
  ).join("");
}

/**
 * Runs `body` with the records of the `edgestream` loggers at `level` and up
 * collected in the array it gets; the logging configuration is reset after.
 */
export async function collectingLogs<T>(
  body: (records: LogRecord[]) => Promise<T>,
  options: { level?: LogLevel } = {},
): Promise<T> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      { category: ["edgestream"], sinks: ["memory"], lowestLevel: options.level ?? "trace" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "fatal" },
    ],
  });
  try {
    return await body(records);
  } finally {
    await reset();
  }
}

/** A line written through `configureLogging`: its text and the console method used. */
export interface WrittenLine {
  method: "debug" | "info" | "warn" | "error";
  text: string;
}

/**
 * Runs `body` with {@linkcode configureLogging} writing to an array instead
 * of the console (JSON lines unless `format` says otherwise); the logging
 * configuration is reset after.
 */
export async function writtenLogs<T>(
  body: (lines: WrittenLine[]) => T | Promise<T>,
  options: Omit<LoggingOptions, "console"> = {},
): Promise<T> {
  const lines: WrittenLine[] = [];
  const write = (method: WrittenLine["method"]) => (text: unknown) =>
    lines.push({ method, text: String(text) });
  configureLogging({
    format: "json",
    ...options,
    console: {
      debug: write("debug"),
      info: write("info"),
      warn: write("warn"),
      error: write("error"),
    },
  });
  try {
    return await body(lines);
  } finally {
    await reset();
  }
}

/** The JSON objects of the lines written by `logger` (e.g. `edgestream.http`). */
// deno-lint-ignore no-explicit-any
export function jsonLines(lines: WrittenLine[], logger?: string): any[] {
  return lines.map((line) => JSON.parse(line.text)).filter((line) =>
    logger === undefined || line.logger === logger
  );
}
