/**
 * Run by `log_trimmed_test.ts` with the OpenTelemetry export on: results two streams' result logs
 * trimmed at their hard bound before dispatch, reported as the dispatcher reports them.
 */
import { reportTrimmed } from "../../src/fanout/webhooks/dispatcher.ts";

reportTrimmed("orders", 3);
reportTrimmed("orders", 2);
reportTrimmed("clicks", 1);
// Nothing lost: nothing counted, no warning.
reportTrimmed("quiet", 0);
// Long enough for an export (OTEL_METRIC_EXPORT_INTERVAL is 300 ms).
await new Promise((resolve) => setTimeout(resolve, 1_000));
