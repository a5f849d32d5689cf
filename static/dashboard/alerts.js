/**
 * The alerts panel: `alert.fired` messages of the followed streams, newest
 * first, as they arrive.
 *
 * @module
 */
import { clockTime, el, userText, windowRange } from "./dom.js";
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
      el("b", {}, userText(data.alert)),
      // Names and the group are users' text, each isolated: a right-to-left group followed by
      // " = 6" took the value to its left ("6 = …").
      el(
        "span",
        {},
        userText(data.stream),
        " · ",
        userText(data.counter),
        " · ",
        userText(groupLabel(data.group)),
        ` = ${formatValue(data.value)}`,
      ),
      el("span", { class: "muted" }, `window ${windowRange(data.start, data.end)}`),
    ));
    while (this.#list.children.length > KEEP) this.#list.lastElementChild.remove();
    this.#fired += 1;
    this.#count.textContent = String(this.#fired);
  }
}
