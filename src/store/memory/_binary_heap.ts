/**
 * The binary heap of the memory stores: the delivery store's due queue (earliest due time on top)
 * and the store's page of the smallest group keys (a max-heap of them, the largest on top).
 *
 * @module
 */

/**
 * Entries in an array kept as a binary heap by `above(a, b)`: true when `a` belongs nearer the top
 * than `b`. Entries that neither is above keep no particular order.
 */
export class BinaryHeap<T> {
  readonly #above: (a: T, b: T) => boolean;
  readonly #items: T[] = [];

  constructor(above: (a: T, b: T) => boolean) {
    this.#above = above;
  }

  /** How many entries it holds. */
  get size(): number {
    return this.#items.length;
  }

  /** The top entry: one no other is above; undefined when empty. */
  peek(): T | undefined {
    return this.#items[0];
  }

  /** The entries, in heap order (not sorted). */
  entries(): readonly T[] {
    return this.#items;
  }

  /** Adds `entry`. */
  push(entry: T): void {
    const items = this.#items;
    items.push(entry);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#above(items[i], items[parent])) break;
      [items[parent], items[i]] = [items[i], items[parent]];
      i = parent;
    }
  }

  /** Removes the top entry; nothing when empty. */
  pop(): void {
    const items = this.#items;
    const last = items.pop();
    if (items.length === 0) return;
    this.replaceTop(last!);
  }

  /** Puts `entry` in the top entry's place (the heap must not be empty) and sifts it down. */
  replaceTop(entry: T): void {
    const items = this.#items;
    items[0] = entry;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let top = i;
      if (left < items.length && this.#above(items[left], items[top])) top = left;
      if (right < items.length && this.#above(items[right], items[top])) top = right;
      if (top === i) break;
      [items[top], items[i]] = [items[i], items[top]];
      i = top;
    }
  }
}
