/**
 * Webhook fan-out: consumers register a URL and receive window results,
 * alerts and events as Standard Webhooks deliveries — signed, durable,
 * retried on a schedule, never sent to internal addresses.
 *
 * @example
 * ```ts
 * import { compileConfig } from "../../config/mod.ts";
 * import { MemoryDeliveryStore, MemoryStore } from "../../store/mod.ts";
 * import { UrlPolicy, WebhookService } from "./mod.ts";
 *
 * const store = new MemoryStore();
 * const streams = compileConfig({
 *   streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
 * });
 * const webhooks = new WebhookService({
 *   store,
 *   streams,
 *   deliveries: new MemoryDeliveryStore(),
 *   policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
 * });
 * const { endpoint, secret } = await webhooks.createEndpoint({ url: "http://127.0.0.1:9000/hook" });
 * await webhooks.sweep(); // dispatch result logs into deliveries; sending starts in the background
 * await webhooks.settle(); // wait until what is due has been sent
 * ```
 *
 * @module
 */
export * from "./signing.ts";
export * from "./ssrf.ts";
export * from "./http_post.ts";
export * from "./sender.ts";
export * from "./dispatcher.ts";
export * from "./endpoints.ts";
export * from "./service.ts";
