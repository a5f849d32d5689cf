/**
 * The webhook deliveries in the OpenAPI document (its top-level `webhooks`, OpenAPI 3.1): one
 * entry per result type, the body a receiver gets (one result, or a batch of one type) and the
 * Standard Webhooks headers it is signed with, so that a receiver can be generated from the
 * document as a client is. Live subscriptions send the same payloads (`LivePayload`).
 *
 * @module
 */
import { type OpenAPIHono, z } from "@hono/zod-openapi";
import { BATCHABLE_EVENT_TYPES, WEBHOOK_EVENT_TYPES } from "../store/mod.ts";
import { CounterValueSchema } from "./stream_routes.ts";

const iso = (description: string) =>
  z.string().openapi({ description, example: "2026-01-01T10:42:00.000Z" });

/** `data` of a `window.updated` or `window.closed` result. */
const WindowDataSchema = z.object({
  stream: z.string(),
  counter: z.string(),
  aggregate: z.string().openapi({ description: "The counter's aggregate: count, sum, …" }),
  group: z.record(z.string(), z.unknown()).openapi({
    description: "The group's `groupBy` fields and values; `{}` for a counter without groups",
  }),
  start: iso("The window's start (a session's first event)"),
  end: iso("The window's end, exclusive (a session's last event, inclusive)"),
  value: CounterValueSchema,
  approximate: z.literal(true).optional().openapi({
    description: "An estimate (distinct on Redis, quantiles)",
  }),
  partial: z.literal(true).optional().openapi({
    description: "The window misses events applied before its counter was added to the stream",
  }),
}).openapi("WindowResult");

/**
 * `data` of an `alert.fired` result: the window's, and the alert's name. `approximate` marks a
 * distinct count estimated (Redis); a quantiles value says so inside it. (`omit` makes a copy
 * without `WindowResult`'s name, so the document writes its fields out rather than an `allOf`.)
 */
const AlertDataSchema = WindowDataSchema.omit({ approximate: true }).extend({
  approximate: z.literal(true).optional().openapi({
    description: "The value the alert saw is an estimate (a distinct count on Redis)",
  }),
  alert: z.string(),
}).openapi("AlertResult");

/** `data` of an `event.processed` or `event.late` result. */
const EventDataSchema = z.object({
  stream: z.string(),
  time: iso("The event's time"),
  event: z.record(z.string(), z.unknown()).openapi({ description: "The event after transforms" }),
}).openapi("EventResult");

const TYPES = {
  "window.updated": WindowDataSchema,
  "window.closed": WindowDataSchema,
  "alert.fired": AlertDataSchema,
  "event.processed": EventDataSchema,
  "event.late": EventDataSchema,
} as const;

/** One result, as a delivery (or a live message) carries it. */
function payloadOf(type: keyof typeof TYPES, data: z.ZodType, batch: boolean) {
  return z.object({
    type: z.literal(type),
    timestamp: iso(batch ? "When the batch's newest result was logged" : "When it was logged"),
    data: batch ? z.array(data).min(1).max(1000) : data,
  });
}

/** Every result a live subscription or an endpoint taking results one by one gets. */
export const LivePayloadSchema = z.union(
  Object.entries(TYPES).map(([type, data]) =>
    payloadOf(type as keyof typeof TYPES, data, false)
  ) as unknown as [z.ZodType, z.ZodType],
).openapi("LivePayload", {
  description:
    "A result: `window.updated`, `window.closed`, `alert.fired`, `event.processed` or `event.late`",
});

const SIGNED_HEADERS = z.object({
  "webhook-id": z.string().openapi({
    description: "The delivery's id: the same on every retry and redelivery (deduplicate on it)",
    example: "msg_orders_1767264120000-0",
  }),
  "webhook-timestamp": z.string().openapi({
    description: "The attempt's time, in whole seconds since the epoch",
    example: "1767264120",
  }),
  "webhook-signature": z.string().openapi({
    description:
      "`v1,<base64 HMAC-SHA256>` of `<webhook-id>.<webhook-timestamp>.<body>` with the endpoint's secret (Standard Webhooks); two, space-separated, for 24 h after a rotation",
  }),
});

const RECEIVER_ANSWERS = {
  200: { description: "Any 2xx: delivered" },
  410: { description: "Gone: the endpoint is disabled" },
  429: {
    description:
      "Retried on the schedule, or after a longer `Retry-After` (also on 503); any other answer, or none within 15 s, is retried on the schedule",
  },
};

/** Registers a `webhooks` entry per result type, `webhook.test`, and the `LivePayload` schema. */
export function documentDeliveries(app: OpenAPIHono): void {
  app.openAPIRegistry.register("LivePayload", LivePayloadSchema);
  // The result types an endpoint takes (window.updated goes to live subscriptions only).
  for (const type of WEBHOOK_EVENT_TYPES.filter((name) => name !== "webhook.test")) {
    const data = TYPES[type as keyof typeof TYPES];
    const batchable = (BATCHABLE_EVENT_TYPES as readonly string[]).includes(type);
    const one = payloadOf(type as keyof typeof TYPES, data, false);
    const schema = batchable
      ? z.union([one, payloadOf(type as keyof typeof TYPES, data, true)])
      : one;
    app.openAPIRegistry.registerWebhook({
      method: "post",
      path: type,
      operationId: `deliver_${type.replace(".", "_")}`,
      tags: ["webhooks"],
      summary: `${/^[aeiou]/.test(type) ? "An" : "A"} ${type} delivery`,
      description: batchable
        ? `One result, or with the endpoint's \`batch\` naming ${type} a batch: \`data\` an array of up to \`batch.maxEvents\` results of this type, oldest first`
        : "One result a delivery",
      request: {
        headers: SIGNED_HEADERS,
        body: { required: true, content: { "application/json": { schema } } },
      },
      responses: RECEIVER_ANSWERS,
    });
  }
  app.openAPIRegistry.registerWebhook({
    method: "post",
    path: "webhook.test",
    operationId: "deliver_webhook_test",
    tags: ["webhooks"],
    summary: "A test delivery (`POST /v1/webhooks/{id}/test`)",
    request: {
      headers: SIGNED_HEADERS,
      body: {
        required: true,
        content: {
          "application/json": {
            schema: z.object({
              type: z.literal("webhook.test"),
              timestamp: iso("When it was sent"),
              data: z.object({ endpoint: z.string(), message: z.string() }),
            }),
          },
        },
      },
    },
    responses: RECEIVER_ANSWERS,
  });
}
