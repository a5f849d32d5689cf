/**
 * The alerts panel: `alert.fired` messages of the followed streams, newest
 * first, as they arrive.
 *
 * @module
 */
import { clockTime, el } from "./dom.js";
import { formatValue, groupLabel } from "./model.js";

/** Alerts the list keeps. */
const KEEP = 50;

/** A list of fired alerts. */
export class AlertsView {
  #list;
  #count;
  #fired = 0;

  /** Fills `list` (an `<ol>`); `count` shows how many fired since the page opened. */
  constructor(list, count) {
    this.#list = list;
    this.#count = count;
  }

  /** Takes a live message; only `alert.fired` is shown. */
  handle(payload) {
    if (payload.type !== "alert.fired") return;
    const data = payload.data;
    this.#list.querySelector(".empty")?.remove();
    this.#list.prepend(el(
      "li",
      { class: "alert", "data-alert": data.alert },
      el("time", { datetime: payload.timestamp }, clockTime(payload.timestamp)),
      el("b", {}, data.alert),
      el(
        "span",
        {},
        `${data.stream} · ${data.counter} · ${groupLabel(data.group)} = ${formatValue(data.value)}`,
      ),
      el("span", { class: "muted" }, `window ${clockTime(data.start)} – ${clockTime(data.end)}`),
    ));
    while (this.#list.children.length > KEEP) this.#list.lastElementChild.remove();
    this.#fired += 1;
    this.#count.textContent = String(this.#fired);
  }
}
