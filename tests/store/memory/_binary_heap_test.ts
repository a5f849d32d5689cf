import assert from "node:assert/strict";
import { BinaryHeap } from "../../../src/store/memory/_binary_heap.ts";

/** 500 numbers from a fixed linear congruential sequence, with repeats. */
function numbers(): number[] {
  const out: number[] = [];
  let x = 7;
  for (let i = 0; i < 500; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(x % 200);
  }
  return out;
}

Deno.test("BinaryHeap pops its entries in the order `above` gives (equal numbers among them)", () => {
  const heap = new BinaryHeap<number>((a, b) => a < b);
  const pushed = numbers();
  for (const n of pushed) heap.push(n);
  assert.equal(heap.size, pushed.length);
  const popped: number[] = [];
  for (let top = heap.peek(); top !== undefined; top = heap.peek()) {
    popped.push(top);
    heap.pop();
  }
  assert.deepEqual(popped, [...pushed].sort((a, b) => a - b));
  heap.pop();
  assert.equal(heap.size, 0);
});

Deno.test("BinaryHeap.replaceTop() keeps the 20 smallest in a max-heap, as the memory store's page does", () => {
  const heap = new BinaryHeap<number>((a, b) => a > b);
  const offered = numbers();
  for (const n of offered) {
    if (heap.size < 20) heap.push(n);
    else if (n < heap.peek()!) heap.replaceTop(n);
  }
  assert.equal(heap.peek(), Math.max(...heap.entries()));
  assert.deepEqual(
    [...heap.entries()].sort((a, b) => a - b),
    [...offered].sort((a, b) => a - b).slice(0, 20),
  );
});
