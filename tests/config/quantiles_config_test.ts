import assert from "node:assert/strict";
import { compileConfig, ConfigError } from "../../src/config/mod.ts";

function counter(aggregate: unknown) {
  return { streams: { s: { counters: { q: { window: { tumbling: "1m" }, aggregate } } } } };
}

Deno.test("a quantiles aggregate compiles with accuracy 0.01 unless it names one", () => {
  const plain = compileConfig(counter({ quantiles: "ms" })).get("s")!.counters[0];
  assert.deepEqual(plain.aggregate, { kind: "quantiles", field: "ms", accuracy: 0.01 });
  assert.equal(plain.meta.accuracy, 0.01);
  const fine = compileConfig(counter({ quantiles: "ms", accuracy: 0.001 })).get("s")!.counters[0];
  assert.deepEqual(fine.aggregate, { kind: "quantiles", field: "ms", accuracy: 0.001 });
});

Deno.test("a quantiles accuracy outside 0.001 to 0.1 is refused with its path", () => {
  for (const accuracy of [0, 0.0005, 0.2, 1]) {
    assert.throws(
      () => compileConfig(counter({ quantiles: "ms", accuracy })),
      (error) => error instanceof ConfigError && /accuracy/.test(error.message),
      String(accuracy),
    );
  }
});
