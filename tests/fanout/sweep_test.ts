/**
 * How a failed sweep is logged: the store unavailable (the next sweep tries again) at warning, as
 * a request's 503 is; anything else (a defect, bad data) at error.
 */
import assert from "node:assert/strict";
import { logSweepError } from "../../src/fanout/sweep.ts";
import { StoreUnavailableError } from "../../src/store/types.ts";
import { collectingLogs, messageOf } from "../_logs.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import type { Endpoint } from "../../src/store/deliveries.ts";
import { MemoryDeliveryStore } from "../../src/store/memory/delivery_store.ts";
import { MemoryDefinitionStore } from "../../src/store/memory/definition_store.ts";
import { setup } from "./webhooks/_setup.ts";

Deno.test("logSweepError() logs an unavailable store at warning and anything else at error, naming the stream", async () => {
  const records = await collectingLogs(async (records) => {
    logSweepError(new StoreUnavailableError("Redis is unavailable (closeWindows): OOM"), "orders");
    logSweepError(new StoreUnavailableError("Redis did not answer"));
    logSweepError(new Error("Redis refused closeWindows: ERR bad"), "orders");
    logSweepError(new TypeError("boom"));
    return await Promise.resolve([...records]);
  });
  assert.deepEqual(records.map((record) => [record.level, messageOf(record).split(": ")[0]]), [
    ["warning", "Sweep of stream 'orders' failed"],
    ["warning", "Sweep failed"],
    ["error", "Sweep of stream 'orders' failed"],
    ["error", "Sweep failed"],
  ]);
});

Deno.test("a sweep's webhook hold and a definitions poll log an unavailable store at warning, anything else at error", async () => {
  class FailingDeliveries extends MemoryDeliveryStore {
    error: Error = new Error("unset");
    override listEndpoints(): Promise<Endpoint[]> {
      return Promise.reject(this.error);
    }
  }
  class FailingDefinitions extends MemoryDefinitionStore {
    error: Error = new Error("unset");
    override versions(): Promise<Map<string, number>> {
      return Promise.reject(this.error);
    }
  }
  const deliveries = new FailingDeliveries();
  const definitions = new FailingDefinitions();
  const { webhooks, close } = await setup({ deliveries });
  const registry = new StreamRegistry(compileConfig({ streams: {} }), { definitions, pollMs: 5 });
  const levels = async () => {
    // A sweep's first step: the endpoint list (stale in a new service), then the holds.
    await webhooks.prepare();
    // One poll of the stream definitions, then no more.
    registry.startPolling();
    await new Promise((resolve) => setTimeout(resolve, 20));
    registry.stop();
  };
  try {
    const records = await collectingLogs(async (records) => {
      for (
        const error of [
          new StoreUnavailableError("Redis is unavailable (getEndpoints): OOM"),
          new Error("Redis refused getEndpoints: ERR bad"),
        ]
      ) {
        deliveries.error = error;
        definitions.error = error;
        await levels();
      }
      return [...records];
    });
    const seen = new Set(
      records.map((record) => `${record.level} ${messageOf(record).split(": ")[0]}`),
    );
    assert.deepEqual([...seen].sort(), [
      "error Cannot hold the result logs for webhook dispatch",
      "error Cannot poll stream definitions",
      "warning Cannot hold the result logs for webhook dispatch",
      "warning Cannot poll stream definitions",
    ]);
  } finally {
    registry.stop();
    await close();
  }
});
