/**
 * Test helper: a dispatch as dispatchers of earlier versions made it, step by step — fix a page's
 * end in the delivery store, create its deliveries, move the cursor — so a test can stop one
 * between steps or run two at once. The current `Dispatcher` adopts a page fixed this way (an
 * older instance may still do it during a rolling deploy).
 *
 * @module
 */
import type { CompiledStream } from "../../../src/config/mod.ts";
import type { PagePlan } from "../../../src/fanout/webhooks/mod.ts";
import type { DeliveryStore, DispatchState } from "../../../src/store/deliveries.ts";
import { compareLogIds, parseLogId, type Store } from "../../../src/store/types.ts";

/**
 * Step 1: reads the page after the cursor and fixes its end in the delivery store (or adopts the
 * page fixed already); null when the log holds nothing new. Starts from `options.state` when
 * given, else reads the stream's dispatch state.
 */
export async function planPage(
  stores: { store: Store; deliveries: DeliveryStore },
  stream: CompiledStream,
  options: { state?: DispatchState; pageSize?: number } = {},
): Promise<PagePlan | null> {
  const { store, deliveries } = stores;
  const pageSize = options.pageSize ?? 500;
  let state = options.state ?? await deliveries.dispatchState(stream.name);
  for (let round = 0; round < 3; round++) {
    const entries = await store.readLog(stream.name, state.cursor, pageSize);
    if (state.planEnd !== null) {
      const end = parseLogId(state.planEnd);
      return {
        stream,
        cursor: state.cursor,
        end: state.planEnd,
        entries: entries.filter((entry) => compareLogIds(parseLogId(entry.id), end) <= 0),
      };
    }
    if (entries.length === 0) return null;
    const proposed = entries[entries.length - 1].id;
    state = await deliveries.beginPage(stream.name, state.cursor, proposed);
    if (state.planEnd === proposed) return { stream, cursor: state.cursor, end: proposed, entries };
    // Another dispatcher planned or moved on meanwhile: read again from where it is.
  }
  return null;
}

/** Step 3 (step 2 is `Dispatcher.deliveriesFor` and `createDeliveries`): moves the cursor past the page. */
export async function commitPage(deliveries: DeliveryStore, plan: PagePlan): Promise<void> {
  await deliveries.commitPage(plan.stream.name, plan.cursor, plan.end);
}
