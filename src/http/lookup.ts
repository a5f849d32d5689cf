/** Finding the stream and counter a request names, with the errors every route gives. */
import type { CompiledStream } from "../config/mod.ts";
import type { CompiledCounter } from "../window/mod.ts";
import { ApiError } from "./errors.ts";

/** The stream called `name`, or 404 `stream_not_found`. */
export function findStream(streams: Map<string, CompiledStream>, name: string): CompiledStream {
  const stream = streams.get(name);
  if (!stream) throw new ApiError(404, "stream_not_found", `Stream '${name}' is not configured`);
  return stream;
}

/** Where the counter name came from: the path (404) or a query parameter (400). */
export type CounterSource = "path" | "query";

/** The counter called `name`, or an error that lists the stream's counters. */
export function findCounter(
  stream: CompiledStream,
  name: string,
  source: CounterSource = "path",
): CompiledCounter {
  const counter = stream.counters.find((item) => item.name === name);
  if (counter) return counter;
  const message = `Stream '${stream.name}' has no counter '${name}'; it has: ${
    stream.counters.map((item) => item.name).join(", ") || "(none)"
  }`;
  throw source === "path"
    ? new ApiError(404, "counter_not_found", message)
    : new ApiError(400, "invalid_query", message);
}
