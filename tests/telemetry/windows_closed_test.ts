/**
 * `edgestream.windows.closed` (README metrics table) counts each window once, also one closed over
 * several store calls (`CLOSE_CELLS_PER_CALL`) by two sweeps: the one that claimed it and the one
 * that finished it. Run in a child process with Deno's OpenTelemetry export on.
 * (`tests/store/close_chunks_test.ts` checks on both stores that only the claiming call's window
 * is not `continued`.)
 */
import assert from "node:assert/strict";
import { eventually, runWithOtel, startOtlpReceiver, valueWhere } from "./_otlp.ts";

Deno.test("edgestream.windows.closed counts a window closed over two sweeps once", async () => {
  const receiver = startOtlpReceiver();
  try {
    await runWithOtel(receiver, "tests/telemetry/_windows_closed.ts");
    await eventually(() => {
      const points = receiver.points("edgestream.windows.closed");
      assert.equal(
        valueWhere(points, { stream: "s", counter: "n" })?.value,
        1,
        JSON.stringify(points),
      );
    });
  } finally {
    await receiver.close();
  }
});
