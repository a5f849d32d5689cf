/**
 * Run by `webhook_unstorable_test.ts` with the OpenTelemetry export on: deliveries of two streams
 * dropped at dispatch as larger than any store call, reported as the dispatcher reports them.
 */
import { reportUnstorable } from "../../src/fanout/webhooks/dispatcher.ts";
import type { NewDelivery } from "../../src/store/deliveries.ts";

function delivery(stream: string, n: number): NewDelivery {
  return {
    id: `msg_${stream}_${n}-0.ep_a`,
    messageId: `msg_${stream}_${n}-0`,
    endpointId: "ep_a",
    stream,
    eventType: "window.closed",
    payload: "{}",
    createdMs: 0,
  };
}

reportUnstorable("orders", delivery("orders", 1));
reportUnstorable("orders", delivery("orders", 2));
reportUnstorable("clicks", delivery("clicks", 1));
// Long enough for an export (OTEL_METRIC_EXPORT_INTERVAL is 300 ms).
await new Promise((resolve) => setTimeout(resolve, 1_000));
