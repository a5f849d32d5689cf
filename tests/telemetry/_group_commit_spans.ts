/**
 * Run by `tracing_test.ts` with the OpenTelemetry export on: group commit
 * over an instrumented store whose applies take a while. The request of span
 * `g1` goes alone; those of `g2` and `g3` arrive while it runs and share the
 * next apply, which starts when `g1`'s ends.
 */
import { GroupCommitter } from "../../src/ingest/mod.ts";
import { type ApplyResult, MemoryStore, type StoreBatch } from "../../src/store/mod.ts";
import { attachIngestSpan, InstrumentedStore, traceIngest } from "../../src/telemetry/mod.ts";

class SlowStore extends MemoryStore {
  override async applyBatch(batch: StoreBatch): Promise<ApplyResult> {
    await new Promise((resolve) => setTimeout(resolve, 100));
    return await super.applyBatch(batch);
  }
}

const committer = new GroupCommitter(new InstrumentedStore(new SlowStore()));
const now = Date.now();
// One compiled definition's counters: batches of one stream share an apply only with the same.
const counters: StoreBatch["counters"] = [];

function send(span: string, nowMs: number): Promise<unknown> {
  return traceIngest({ stream: span, transport: "http" }, () => {
    const request = { events: 1, filtered: 0 };
    attachIngestSpan(request);
    return committer.applyBatch({
      stream: "g",
      nowMs,
      latenessMs: 0,
      dedupeTtlMs: 0,
      counters,
      events: [{ timeMs: nowMs }],
      requests: [request],
    });
  });
}

const first = send("g1", now);
await new Promise((resolve) => setTimeout(resolve, 20));
await Promise.all([first, send("g3", now + 2), send("g2", now + 1)]);
console.log(JSON.stringify(committer.stats));
