/**
 * The list of streams to choose the shown ones from, when there are more than
 * {@linkcode MAX_SHOWN_STREAMS}: a filter by name and a checkbox per stream with its accepted
 * total (from the page's last read of `GET /v1/streams`, every 30 s and at once when the filter
 * changes: no request of its own). It draws the shown streams and at most
 * {@linkcode MAX_LISTED_STREAMS} rows in all, so it costs the same whatever the number of streams; rows are built again only when the names, the shown
 * streams or the filter change, and the totals are updated in place.
 *
 * @module
 */
import { el, replaceChildren, userText } from "./dom.js";
import { formatValue } from "./model.js";
import { listedStreams, MAX_LISTED_STREAMS, MAX_SHOWN_STREAMS } from "./selection.js";

/** The stream chooser of the streams panel. */
export class StreamPicker {
  #elements;
  #onChoose;
  #onFilter;
  #names = [];
  #totals = new Map();
  #shown = [];
  /** What the rows were built from: names, shown streams and filter. */
  #built = "";
  /** name → the element showing its accepted total */
  #totalElements = new Map();

  /**
   * Takes the picker's elements (`fieldset`, `legend`, `filter`, `note`, `list`) and calls
   * `onChoose(names)` with the streams the viewer wants shown, `onFilter()` when the filter
   * changes (the page then reads the totals again).
   */
  constructor(elements, { onChoose, onFilter = () => {} }) {
    this.#elements = elements;
    this.#onChoose = onChoose;
    this.#onFilter = onFilter;
    elements.legend.textContent = `Streams shown (at most ${MAX_SHOWN_STREAMS})`;
    elements.filter.addEventListener("input", () => {
      this.#render();
      this.#onFilter();
    });
    elements.list.addEventListener("change", (event) => {
      const box = event.target;
      if (!(box instanceof globalThis.HTMLInputElement)) return;
      const shown = this.#shown.filter((name) => name !== box.value);
      if (box.checked) shown.push(box.value);
      this.#onChoose(shown);
    });
  }

  /** Takes the streams of a `GET /v1/streams` answer and the names of those shown. */
  update(streams, shown) {
    this.#names = streams.map((stream) => stream.name);
    // null: not servable (stored with a definition this server cannot compile), so no total.
    this.#totals = new Map(
      streams.map((
        stream,
      ) => [stream.name, stream.servable === false ? null : stream.stats?.accepted ?? 0]),
    );
    this.#shown = shown;
    // With no more streams than can be shown, every one is: nothing to choose.
    this.#elements.fieldset.hidden = this.#names.length <= MAX_SHOWN_STREAMS;
    if (this.#elements.fieldset.hidden) return;
    this.#render();
  }

  #render() {
    const filter = this.#elements.filter.value;
    const built = JSON.stringify([this.#names, this.#shown, filter]);
    if (built !== this.#built) {
      this.#built = built;
      this.#build(filter);
    }
    for (const [name, element] of this.#totalElements) {
      const total = this.#totals.get(name);
      const text = total === null ? "not servable" : `${formatValue(total ?? 0)} accepted`;
      if (element.textContent !== text) element.textContent = text;
    }
  }

  #build(filter) {
    const { list, note } = this.#elements;
    // A checkbox just ticked is built again: keep the keyboard on it.
    const focused = list.contains(globalThis.document.activeElement)
      ? globalThis.document.activeElement.value
      : null;
    const { rows, more } = listedStreams(this.#names, this.#shown, filter, MAX_LISTED_STREAMS);
    const shown = new Set(this.#shown);
    const full = this.#shown.length >= MAX_SHOWN_STREAMS;
    this.#totalElements.clear();
    replaceChildren(
      list,
      rows.map((name) => {
        const total = el("span", { class: "muted total" });
        this.#totalElements.set(name, total);
        return el(
          "li",
          { "data-choice": name },
          el(
            "label",
            {},
            el("input", {
              type: "checkbox",
              value: name,
              checked: shown.has(name),
              disabled: full && !shown.has(name),
            }),
            userText(name, { class: "name" }),
            " ",
            total,
          ),
        );
      }),
    );
    if (focused !== null) {
      [...list.querySelectorAll("input")].find((box) => box.value === focused)?.focus();
    }
    const text = pickerNote({
      shown: this.#shown.length,
      streams: this.#names.length,
      more,
      noOther: more === 0 && filter.trim() !== "" && rows.length === this.#shown.length,
    });
    if (note.textContent !== text) note.textContent = text;
  }
}

/**
 * The note under the list: how many streams are shown of how many, and what to do for others.
 * Every number is written as the page writes counts (`1,001`), so `6 of 1,001 streams shown.`
 * and `995 more match` read alike.
 *
 * @param {{shown: number, streams: number, more: number, noOther: boolean}} counts `shown` of
 *   `streams` are shown, `more` matching ones are not listed, `noOther`: the filter matches no
 *   stream but the shown ones
 * @returns {string}
 */
export function pickerNote({ shown, streams, more, noOther }) {
  const parts = [`${formatValue(shown)} of ${formatValue(streams)} streams shown.`];
  if (shown >= MAX_SHOWN_STREAMS) parts.push(`Untick one to choose another.`);
  if (more > 0) parts.push(`${formatValue(more)} more match: narrow the filter.`);
  else if (noOther) parts.push("No other stream matches the filter.");
  return parts.join(" ");
}
