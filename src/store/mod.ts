/**
 * Storage: the contracts every store keeps (`Store` for windows and result
 * logs, `DeliveryStore` for webhook endpoints and deliveries) and their two
 * implementations, in memory for one process and on Redis for many. Only this
 * folder knows Redis commands, Lua and key layouts.
 *
 * @example
 * ```ts
 * import { MemoryDeliveryStore, MemoryStore } from "./mod.ts";
 *
 * const store = new MemoryStore();
 * const deliveries = new MemoryDeliveryStore();
 * console.log(await store.stats("orders", []), await deliveries.listEndpoints());
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./aggregate_state.ts";
export * from "./sketch.ts";
export * from "./deliveries.ts";
export * from "./memory/store.ts";
export * from "./memory/delivery_store.ts";
export * from "./redis/store.ts";
export * from "./redis/delivery_store.ts";
export * from "./definitions.ts";
export * from "./memory/definition_store.ts";
export * from "./redis/definition_store.ts";
export * from "./keys.ts";
export * from "./memory/key_store.ts";
export * from "./redis/key_store.ts";
export { asksSetup, redisSetupWarnings } from "./redis/setup_check.ts";
export { REDIS_CALL_TIMEOUT_MS } from "./redis/call.ts";
export * from "./limits.ts";
