/**
 * The counters panel: per counter, its recent windows as a time-series chart
 * with one line per group (the top groups by value; how many is chosen in
 * the page) and, for counts and sums, one line of the rest summed, and the
 * current window's top groups and the rest next to it. Both are read with
 * `?top=N` (the server ranks and merges: `GET …/counters/{c}?top=N` and
 * `…/current?top=N`; quantiles counters by their p99) and read again, at
 * most once a second, when the stream's live `window.updated` and
 * `window.closed` messages say the counter moved.
 *
 * @module
 */
import { api } from "./api.js";
import { groupChart, PALETTE_SIZE } from "./charts.js";
import { el, replaceChildren, userText, windowRange } from "./dom.js";
import {
  counterKey,
  CounterSeries,
  describeCounter,
  formatValue,
  groupKey,
  groupLabel,
  windowStepMs,
} from "./model.js";

/** Windows a chart shows (the newest). */
const WINDOWS = 60;

/** Least time (ms) between two reloads of a counter's windows after live messages. */
const RELOAD_EVERY_MS = 1000;

/** Longest wait (ms) between two reads of a counter's current window. */
const CURRENT_REFRESH_MS = 15_000;

function path(stream, counter) {
  return `/v1/streams/${encodeURIComponent(stream)}/counters/${encodeURIComponent(counter)}`;
}

/** Whether a counter's values add up, so the rest of its groups can be drawn summed. */
function isAdditive(definition) {
  const aggregate = definition?.aggregate;
  return aggregate === "count" || (typeof aggregate === "object" && aggregate !== null &&
    "sum" in aggregate);
}

/**
 * The `top` (and for quantiles `by`) query of a counter's reads. A session counter lists its
 * sessions by start (each is one group's own): the server ranks no groups there.
 */
function topQuery(entry, top) {
  if (entry.session) return "";
  return `&top=${top}${entry.quantiles ? "&by=p99" : ""}`;
}

/**
 * A "partial" tag for a window its counter missed events of (added to the stream after they were
 * applied), as the API marks it; nothing for another.
 */
function partialMark(row) {
  if (row.partial !== true) return [];
  return [
    el("span", {
      class: "partial",
      title: "The counter was added after some of this window's events: they are not counted",
    }, "partial"),
    " ",
  ];
}

/** The first `count` of a session counter's sessions (newest first), as a current window. */
function recentSessions(rows, count) {
  return { windows: rows.slice(0, count) };
}

/** The counters of every stream, each a chart and its current window. */
export class CountersView {
  #entries = new Map();
  #top;
  #stopped = false;

  /**
   * Builds a panel per counter of the streams of a `GET /v1/streams` answer (or says `empty`,
   * when given, for no streams).
   */
  constructor(container, streams, { top = 5, empty = null } = {}) {
    this.#top = top;
    const articles = [];
    for (const stream of streams) {
      for (const counter of stream.counters ?? []) {
        const key = counterKey(stream.name, counter);
        const chart = el("div", { class: "chart", "data-chart": key });
        const range = el("p", { class: "muted window-range" }, "…");
        const current = el("ol", { class: "current-values", "data-current": key });
        const status = el("p", { class: "muted counter-status" });
        const partialNote = el("p", { class: "muted partial-note", hidden: true });
        articles.push(el(
          "article",
          { class: "counter", "data-counter": key },
          el(
            "header",
            {},
            el("h3", {}, userText(stream.name), " · ", userText(counter)),
            el("span", { class: "muted" }, describeCounter(stream.definition?.counters?.[counter])),
          ),
          el(
            "div",
            { class: "counter-body" },
            chart,
            el("aside", { class: "current" }, el("h4", {}, "Current window"), range, current),
          ),
          partialNote,
          status,
        ));
        const definition = stream.definition?.counters?.[counter];
        this.#entries.set(key, {
          stepMs: windowStepMs(definition),
          stream: stream.name,
          counter,
          quantiles: typeof definition?.aggregate === "object" &&
            "quantiles" in (definition.aggregate ?? {}),
          session: definition?.window?.session !== undefined,
          series: new CounterSeries(WINDOWS, { additive: isAdditive(definition) }),
          chartElement: chart,
          partialNote,
          chart: null,
          range,
          currentElement: current,
          status,
          current: null,
          timer: null,
          currentDue: 0,
          overdueWait: 1000,
          lastCurrentRead: 0,
          reloadTimer: null,
          lastReload: 0,
          drawPending: false,
          drawn: false,
        });
      }
    }
    replaceChildren(
      container,
      articles.length
        ? articles
        : el("p", { class: "muted" }, streams.length || !empty ? "No counters configured." : empty),
    );
    for (const entry of this.#entries.values()) {
      entry.chart = groupChart(entry.chartElement, { stepMs: entry.stepMs });
    }
  }

  /**
   * Stops reading: the panels are being replaced (the streams changed). A read on its way then
   * draws nothing (a chart drawn into a destroyed one would be a new uPlot, never destroyed).
   */
  stop() {
    this.#stopped = true;
    for (const entry of this.#entries.values()) {
      clearTimeout(entry.timer);
      clearTimeout(entry.reloadTimer);
      entry.chart?.destroy();
    }
  }

  /** Shows the top `count` groups in every chart and current window (read again with that top). */
  setTop(count) {
    this.#top = count;
    const streams = new Set([...this.#entries.values()].map((entry) => entry.stream));
    for (const stream of streams) this.load(stream);
  }

  /** (Re)loads the windows and the current window of every counter of `stream`. */
  async load(stream) {
    const entries = [...this.#entries.values()].filter((entry) => entry.stream === stream);
    await Promise.all(entries.map(async (entry) => {
      await this.#readWindows(entry);
      await this.#readCurrent(entry);
    }));
  }

  async #readWindows(entry) {
    if (this.#stopped) return;
    clearTimeout(entry.reloadTimer);
    entry.lastReload = Date.now();
    try {
      const body = await api(
        `${path(entry.stream, entry.counter)}?limit=${WINDOWS}${topQuery(entry, this.#top)}`,
      );
      if (this.#stopped) return;
      entry.series.clear();
      for (const row of body.windows) entry.series.set(row);
      for (const row of body.others ?? []) entry.series.setOthers(row);
      // The newest sessions, newest first, stand for a session counter's current window.
      if (entry.session) entry.current = recentSessions(body.windows, this.#top);
      entry.status.textContent = "";
      this.#scheduleDraw(entry);
    } catch (error) {
      if (this.#stopped) return;
      entry.status.textContent = `Cannot read windows: ${error.message}`;
      // Not drawn yet: it holds no chart's height (see the CSS), its status says why.
      if (!entry.drawn) entry.chartElement.classList.add("unread");
    }
  }

  /** Takes a live message of `stream`. */
  handle(stream, payload) {
    if (this.#stopped) return;
    if (payload.type !== "window.updated" && payload.type !== "window.closed") return;
    const entry = this.#entries.get(counterKey(stream, payload.data.counter));
    if (!entry) return;
    // The server ranks and merges the groups: read again, at most once a second.
    clearTimeout(entry.reloadTimer);
    entry.reloadTimer = setTimeout(
      () => this.#readWindows(entry),
      Math.max(0, entry.lastReload + RELOAD_EVERY_MS - Date.now()),
    );
    this.#scheduleCurrent(entry, Math.max(0, entry.lastCurrentRead + 1000 - Date.now()));
  }

  /** Reads the current window in `delayMs`, unless a read is already due sooner. */
  #scheduleCurrent(entry, delayMs) {
    if (this.#stopped) return;
    const due = Date.now() + delayMs;
    // A message that came while a read was on its way keeps its sooner read.
    if (entry.timer !== null && entry.currentDue <= due) return;
    clearTimeout(entry.timer);
    entry.currentDue = due;
    entry.timer = setTimeout(() => this.#readCurrent(entry), delayMs);
  }

  async #readCurrent(entry) {
    clearTimeout(entry.timer);
    entry.timer = null;
    entry.lastCurrentRead = Date.now();
    // A session counter's open sessions can be many: its newest come with the windows read.
    if (entry.session || this.#stopped) return;
    try {
      const current = await api(
        `${path(entry.stream, entry.counter)}/current?${topQuery(entry, this.#top).slice(1)}`,
      );
      if (this.#stopped) return;
      entry.current = current;
      this.#drawCurrent(entry);
    } catch (error) {
      if (this.#stopped) return;
      entry.range.textContent = `cannot read: ${error.message}`;
    }
    // Read again when the window ends, by this browser's clock. A window already over by it (the
    // stream's events trail the clock, or the server's clock does) says nothing of when the next
    // one starts: then 1 s, 2 s, 4 s… up to CURRENT_REFRESH_MS, rather than every second.
    const endsIn = entry.current ? Date.parse(entry.current.end) - Date.now() + 250 : Infinity;
    if (endsIn > 0) {
      entry.overdueWait = 1000;
      this.#scheduleCurrent(entry, Math.min(CURRENT_REFRESH_MS, Math.max(1000, endsIn)));
    } else {
      this.#scheduleCurrent(entry, entry.overdueWait);
      entry.overdueWait = Math.min(CURRENT_REFRESH_MS, entry.overdueWait * 2);
    }
  }

  #scheduleDraw(entry) {
    if (entry.drawPending) return;
    entry.drawPending = true;
    globalThis.requestAnimationFrame(() => {
      entry.drawPending = false;
      // Stopped since the read: its chart is destroyed.
      if (!this.#stopped) this.#draw(entry);
    });
  }

  #draw(entry) {
    entry.drawn = true;
    entry.chartElement.classList.remove("unread");
    const { labels, keys, data, rest } = entry.series.chartData(this.#top);
    const partial = entry.series.partialStarts();
    entry.shownKeys = keys;
    entry.chart.update({ labels, data, partial, rest });
    entry.partialNote.hidden = partial.length === 0;
    entry.partialNote.textContent = partial.length === 0
      ? ""
      : `Shaded: ${
        partial.length === 1 ? "a partial window" : `${partial.length} partial windows`
      } (the counter was added after some of their events, which it did not count)`;
    if (labels.length === 0) entry.status.textContent = "No windows yet: send events.";
    else if (entry.status.textContent.startsWith("No windows")) entry.status.textContent = "";
    // The current window's swatches follow the chart's colours.
    this.#drawCurrent(entry);
  }

  #drawCurrent(entry) {
    const current = entry.current;
    if (!current) return;
    entry.range.textContent = entry.session
      ? `newest ${current.windows.length} session(s)`
      : windowRange(current.start, current.end);
    // Ranked by the server, highest first.
    const shown = current.windows.filter((row) => row.value !== null);
    // Matched to the chart's lines by group, not label: two groups may read alike.
    const keys = entry.shownKeys ?? [];
    const items = shown.map((row) => {
      const group = groupLabel(row.group);
      const label = entry.session
        ? [userText(group), ` ${windowRange(row.start, row.end, "–")}`]
        : userText(group);
      const colour = keys.indexOf(groupKey(row.group));
      return el(
        "li",
        {},
        el("span", { class: `swatch ${colour >= 0 ? `c${colour % PALETTE_SIZE}` : "cx"}` }),
        el("span", { class: "group" }, label),
        " ",
        ...partialMark(row),
        el("b", { class: "value" }, formatValue(row.value)),
      );
    });
    const others = current.others;
    if (others && others.value !== null) {
      const rest = others.groups - current.windows.length;
      // The rest summed has its own colour, the one of its line (and of groups drawn in no line).
      items.push(el(
        "li",
        { class: "others" },
        el("span", { class: "swatch cx" }),
        el("span", { class: "group" }, `others (${rest} more ${rest === 1 ? "group" : "groups"})`),
        " ",
        ...partialMark(others),
        el("b", { class: "value" }, formatValue(others.value)),
      ));
    }
    if (items.length === 0) items.push(el("li", { class: "muted" }, "—"));
    replaceChildren(entry.currentElement, items);
  }
}
