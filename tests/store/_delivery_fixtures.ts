/**
 * Builders of webhook endpoints and deliveries for the delivery-store tests
 * (`deliveries_test.ts` on both stores, `redis/delivery_scripts_test.ts`).
 *
 * @module
 */
import type { EndpointConfig, NewDelivery } from "../../src/store/deliveries.ts";

/** The clock the delivery-store tests start at. */
export const T0 = Date.parse("2026-01-01T00:00:00Z");

/** An endpoint `id` taking `window.closed` with one secret, with `overrides`. */
export function config(id: string, overrides: Partial<EndpointConfig> = {}): EndpointConfig {
  return {
    id,
    url: `https://example.com/${id}`,
    description: null,
    eventTypes: ["window.closed"],
    streams: null,
    filter: null,
    headers: {},
    rateLimit: null,
    batch: null,
    secrets: [{ secret: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", expiresMs: null }],
    startAfter: {},
    createdMs: T0,
    updatedMs: T0,
    version: 1,
    ...overrides,
  };
}

/** Delivery `n` of stream `s` to `endpointId` (a `window.closed` with non-ASCII text). */
export function delivery(n: number, endpointId = "ep_a", createdMs = T0): NewDelivery {
  return {
    id: `msg_s_${n}.${endpointId}`,
    messageId: `msg_s_${n}`,
    endpointId,
    stream: "s",
    eventType: "window.closed",
    payload: JSON.stringify({ type: "window.closed", n, text: 'ünïcode "quoted"' }),
    createdMs,
  };
}
