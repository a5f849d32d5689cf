/**
 * The counters panel: per counter, its recent windows as a time-series chart
 * with one line per group (the top groups by value; how many is chosen in
 * the page), kept up to date from the stream's live `window.updated` and
 * `window.closed` messages, and the current window's values next to it
 * (`GET …/current`, updated by the same messages).
 *
 * @module
 */
import { api } from "./api.js";
import { groupChart, PALETTE } from "./charts.js";
import { clockTime, el, replaceChildren } from "./dom.js";
import {
  counterKey,
  CounterSeries,
  describeCounter,
  formatValue,
  groupLabel,
  windowStepMs,
} from "./model.js";

/** Windows a chart shows (the newest). */
const WINDOWS = 60;

/** Rows read per counter when (re)loading its history. */
const HISTORY_ROWS = 1000;

/** Longest wait (ms) between two reads of a counter's current window. */
const CURRENT_REFRESH_MS = 15_000;

function path(stream, counter) {
  return `/v1/streams/${encodeURIComponent(stream)}/counters/${encodeURIComponent(counter)}`;
}

/** The counters of every stream, each a chart and its current window. */
export class CountersView {
  #entries = new Map();
  #top;

  /** Builds a panel per counter of the streams of a `GET /v1/streams` answer. */
  constructor(container, streams, { top = 5 } = {}) {
    this.#top = top;
    const articles = [];
    for (const stream of streams) {
      for (const counter of stream.counters) {
        const key = counterKey(stream.name, counter);
        const chart = el("div", { class: "chart", "data-chart": key });
        const range = el("p", { class: "muted window-range" }, "…");
        const current = el("ol", { class: "current-values", "data-current": key });
        const status = el("p", { class: "muted counter-status" });
        articles.push(el(
          "article",
          { class: "counter", "data-counter": key },
          el(
            "header",
            {},
            el("h3", {}, `${stream.name} · ${counter}`),
            el("span", { class: "muted" }, describeCounter(stream.definition?.counters?.[counter])),
          ),
          el(
            "div",
            { class: "counter-body" },
            chart,
            el("aside", { class: "current" }, el("h4", {}, "Current window"), range, current),
          ),
          status,
        ));
        this.#entries.set(key, {
          stepMs: windowStepMs(stream.definition?.counters?.[counter]),
          stream: stream.name,
          counter,
          series: new CounterSeries(WINDOWS),
          chartElement: chart,
          chart: null,
          range,
          currentElement: current,
          status,
          current: null,
          timer: null,
          lastCurrentRead: 0,
          drawPending: false,
        });
      }
    }
    replaceChildren(
      container,
      articles.length ? articles : el("p", { class: "muted" }, "No counters configured."),
    );
    for (const entry of this.#entries.values()) {
      entry.chart = groupChart(entry.chartElement, { stepMs: entry.stepMs });
    }
  }

  /** Shows the top `count` groups in every chart and current window. */
  setTop(count) {
    this.#top = count;
    for (const entry of this.#entries.values()) {
      this.#draw(entry);
      this.#drawCurrent(entry);
    }
  }

  /** (Re)loads the windows and the current window of every counter of `stream`. */
  async load(stream) {
    const entries = [...this.#entries.values()].filter((entry) => entry.stream === stream);
    await Promise.all(entries.map(async (entry) => {
      try {
        const body = await api(`${path(entry.stream, entry.counter)}?limit=${HISTORY_ROWS}`);
        entry.series.clear();
        for (const row of body.windows) entry.series.set(row);
        entry.status.textContent = "";
        this.#scheduleDraw(entry);
      } catch (error) {
        entry.status.textContent = `Cannot read windows: ${error.message}`;
      }
      await this.#readCurrent(entry);
    }));
  }

  /** Takes a live message of `stream`. */
  handle(stream, payload) {
    if (payload.type !== "window.updated" && payload.type !== "window.closed") return;
    const entry = this.#entries.get(counterKey(stream, payload.data.counter));
    if (!entry) return;
    entry.series.set(payload.data);
    this.#scheduleDraw(entry);
    const current = entry.current;
    if (current && payload.data.start === current.start) {
      const group = JSON.stringify(payload.data.group);
      const rows = current.windows.filter((row) => JSON.stringify(row.group) !== group);
      rows.push({ group: payload.data.group, value: payload.data.value });
      current.windows = rows;
      this.#drawCurrent(entry);
    } else if (payload.type === "window.updated") {
      // Another window moved: the current one may have changed (a new
      // window began, or a sliding window slid). Read it again, at most once a second.
      this.#scheduleCurrent(entry, Math.max(0, entry.lastCurrentRead + 1000 - Date.now()));
    }
  }

  #scheduleCurrent(entry, delayMs) {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => this.#readCurrent(entry), delayMs);
  }

  async #readCurrent(entry) {
    clearTimeout(entry.timer);
    entry.lastCurrentRead = Date.now();
    try {
      entry.current = await api(`${path(entry.stream, entry.counter)}/current`);
      this.#drawCurrent(entry);
    } catch (error) {
      entry.range.textContent = `cannot read: ${error.message}`;
    }
    // Read again when the window ends (by the server's clock, so never sooner than 1 s).
    const endsIn = entry.current ? Date.parse(entry.current.end) - Date.now() + 250 : Infinity;
    this.#scheduleCurrent(entry, Math.min(CURRENT_REFRESH_MS, Math.max(1000, endsIn)));
  }

  #scheduleDraw(entry) {
    if (entry.drawPending) return;
    entry.drawPending = true;
    globalThis.requestAnimationFrame(() => {
      entry.drawPending = false;
      this.#draw(entry);
    });
  }

  #draw(entry) {
    const { labels, data } = entry.series.chartData(this.#top);
    entry.shownLabels = labels;
    entry.chart.update({ labels, data });
    if (labels.length === 0) entry.status.textContent = "No windows yet: send events.";
    else if (entry.status.textContent.startsWith("No windows")) entry.status.textContent = "";
    // The current window's swatches follow the chart's colours.
    this.#drawCurrent(entry);
  }

  #drawCurrent(entry) {
    const current = entry.current;
    if (!current) return;
    entry.range.textContent = `${clockTime(current.start)} – ${clockTime(current.end)}`;
    const rows = current.windows
      .filter((row) => row.value !== null)
      .sort((a, b) => b.value - a.value);
    const shown = rows.slice(0, this.#top);
    const labels = entry.shownLabels ?? [];
    const items = shown.map((row) => {
      const label = groupLabel(row.group);
      const colour = labels.indexOf(label);
      return el(
        "li",
        {},
        el("span", { class: `swatch ${colour >= 0 ? `c${colour % PALETTE.length}` : "cx"}` }),
        el("span", { class: "group" }, label),
        " ",
        el("b", { class: "value" }, formatValue(row.value)),
      );
    });
    if (rows.length > shown.length) {
      items.push(el("li", { class: "muted" }, `+${rows.length - shown.length} more groups`));
    }
    if (items.length === 0) items.push(el("li", { class: "muted" }, "—"));
    replaceChildren(entry.currentElement, items);
  }
}
