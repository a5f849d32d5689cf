/**
 * Test harness for telemetry: a local OTLP/HTTP receiver (`Deno.serve` on a
 * free port taking `http/json` exports at `/v1/metrics`, `/v1/traces` and
 * `/v1/logs`), readers for what it received, and a way to run a Deno program
 * with Deno's OpenTelemetry export pointed at it.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** An attribute value as OTLP JSON carries it. */
type AnyValue = {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
};
type KeyValue = { key: string; value: AnyValue };

/** One data point of a metric, flattened. */
export interface Point {
  /** Its attributes. */
  attributes: Record<string, string | number | boolean>;
  /** Sum or gauge value. */
  value?: number;
  /** Histogram count. */
  count?: number;
  /** Histogram sum. */
  sum?: number;
  /** Aggregation temporality of a sum or histogram: 1 delta, 2 cumulative. */
  temporality?: number;
  /** Histogram bucket bounds. */
  bounds?: number[];
}

/** One exported span, flattened. */
export interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  scope: string;
  attributes: Record<string, string | number | boolean>;
  links: Array<{ traceId: string; spanId: string }>;
  status: { code?: number; message?: string };
}

function valueOf(value: AnyValue): string | number | boolean {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  return JSON.stringify(value);
}

function attributesOf(list: KeyValue[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((list ?? []).map((item) => [item.key, valueOf(item.value)]));
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** A running receiver. */
export interface OtlpReceiver {
  /** `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  endpoint: string;
  /** Every request body received, by path, in arrival order. */
  bodies: Array<{ path: string; text: string }>;
  /**
   * The data points of metric `name` (scope `edgestream`) in the newest
   * export that has it: with cumulative temporality, the totals so far.
   */
  points(name: string): Point[];
  /** Every span received. */
  spans(): ExportedSpan[];
  /** Stops the receiver. */
  close(): Promise<void>;
}

/** Starts an OTLP/HTTP JSON receiver on a free port. */
export function startOtlpReceiver(): OtlpReceiver {
  const bodies: Array<{ path: string; text: string }> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = new URL(request.url).pathname;
    if (request.method !== "POST" || !path.startsWith("/v1/")) {
      return new Response("not found", { status: 404 });
    }
    bodies.push({ path, text: await request.text() });
    return Response.json({});
  });
  const parsed = (path: string): Json[] =>
    bodies.filter((body) => body.path === path).map((body) => JSON.parse(body.text));
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    bodies,
    points(name) {
      const exports = parsed("/v1/metrics");
      for (let i = exports.length - 1; i >= 0; i--) {
        for (const resource of exports[i].resourceMetrics ?? []) {
          for (const scope of resource.scopeMetrics ?? []) {
            if (scope.scope?.name !== "edgestream") continue;
            for (const metric of scope.metrics ?? []) {
              if (metric.name !== name) continue;
              const data = metric.sum ?? metric.gauge ?? metric.histogram;
              return (data?.dataPoints ?? []).map((point: Json) => ({
                attributes: attributesOf(point.attributes),
                value: point.asDouble ??
                  (point.asInt === undefined ? undefined : Number(point.asInt)),
                count: point.count === undefined ? undefined : Number(point.count),
                sum: point.sum,
                temporality: data.aggregationTemporality,
                bounds: point.explicitBounds,
              }));
            }
          }
        }
      }
      return [];
    },
    spans() {
      const out: ExportedSpan[] = [];
      for (const body of parsed("/v1/traces")) {
        for (const resource of body.resourceSpans ?? []) {
          for (const scope of resource.scopeSpans ?? []) {
            for (const span of scope.spans ?? []) {
              out.push({
                traceId: span.traceId,
                spanId: span.spanId,
                parentSpanId: span.parentSpanId ?? "",
                name: span.name,
                scope: scope.scope?.name ?? "",
                attributes: attributesOf(span.attributes),
                links: (span.links ?? []).map((link: Json) => ({
                  traceId: link.traceId,
                  spanId: link.spanId,
                })),
                status: span.status ?? {},
              });
            }
          }
        }
      }
      return out;
    },
    close: () => server.shutdown(),
  };
}

/** The value of the point whose attributes include all of `attributes`, or undefined. */
export function valueWhere(
  points: readonly Point[],
  attributes: Record<string, string>,
): Point | undefined {
  return points.find((point) =>
    Object.entries(attributes).every(([key, value]) => point.attributes[key] === value)
  );
}

/**
 * Polls `check` until it returns without throwing, or rethrows its last
 * error after `timeoutMs`.
 */
export async function eventually<T>(check: () => T, timeoutMs = 15_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return check();
    } catch (error) {
      if (performance.now() > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * The environment that turns Deno's OpenTelemetry export on, to
 * `receiver` in `http/json`, with metrics every 300 ms and spans every 200 ms.
 */
export function otelEnv(receiver: OtlpReceiver): Record<string, string> {
  return {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_METRIC_EXPORT_INTERVAL: "300",
    OTEL_BSP_SCHEDULE_DELAY: "200",
    OTEL_SERVICE_NAME: "edgestream-test",
  };
}

/**
 * Runs a Deno program (a path under the repository) to its end with the
 * export to `receiver` on; throws with its output when it fails.
 */
export async function runWithOtel(receiver: OtlpReceiver, path: string): Promise<string> {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", "--allow-net", "--allow-env", "--allow-read", path],
    cwd: root,
    env: { ...Deno.env.toObject(), NO_COLOR: "1", ...otelEnv(receiver) },
    clearEnv: true,
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`${path} exited with ${output.code}:\n${text}`);
  return text;
}
