/**
 * The streams panel: per stream, events per second (accepted, duplicates,
 * late, rejected) from the change of its stats between two polls (of
 * `GET /v1/streams`, or of its own `GET /v1/streams/{stream}` with more
 * streams than are shown), drawn as a live sparkline, with the totals.
 *
 * @module
 */
import { sparkline } from "./charts.js";
import { el, replaceChildren, timeOf, userText } from "./dom.js";
import { formatRate, formatValue, RATE_FIELDS, ratesBetween, shownText } from "./model.js";

/** Samples a sparkline keeps (at one poll every 2 s: 3 minutes). */
const SAMPLES = 90;

const RATE_LABELS = {
  accepted: "accepted",
  duplicates: "duplicate",
  late: "late",
  rejected: "rejected",
};

/**
 * The card of a stream stored with a definition this server cannot compile (`servable: false` in
 * `GET /v1/streams`): it has no stats, rates or live results, only why it is not served, until it
 * is replaced (`PUT`) or deleted.
 */
function unservableCard(stream) {
  return el(
    "article",
    { class: "stream unservable", "data-stream": stream.name },
    el(
      "header",
      {},
      el("h3", {}, userText(stream.name)),
      el("span", { class: "live-state", "data-live": stream.name }, "not servable"),
    ),
    el("p", { class: "problem" }, stream.problem ?? "Not served by this server"),
  );
}

/** Cards of the streams, updated from each poll. */
export class StreamsView {
  #cards = new Map();

  /**
   * Builds a card per stream of a `GET /v1/streams` answer into `container` (or the `empty`
   * text, when given, for none).
   */
  constructor(container, streams, { empty = null } = {}) {
    const cards = streams.map((stream) => {
      if (stream.servable === false) return unservableCard(stream);
      const rates = {};
      const rateList = el(
        "dl",
        { class: "rates" },
        RATE_FIELDS.map((field, i) => {
          rates[field] = el("dd", { "data-rate": `${stream.name}/${field}` }, "–");
          return el(
            "div",
            {},
            el("dt", {}, el("span", { class: `swatch c${i}` }), RATE_LABELS[field]),
            rates[field],
          );
        }),
      );
      const live = el("span", { class: "live-state", "data-live": stream.name }, "connecting");
      const spark = el("div", { class: "spark" });
      const totals = el("p", { class: "totals" });
      const card = el(
        "article",
        { class: "stream", "data-stream": stream.name },
        el(
          "header",
          {},
          el("h3", {}, userText(stream.name)),
          // Up to 1024 characters: cut to two lines by the stylesheet, whole in the title; its
          // bidirectional overrides and embeddings shown as escapes, not reordering it.
          stream.description
            ? el(
              "span",
              { class: "muted description", dir: "auto", title: shownText(stream.description) },
              shownText(stream.description),
            )
            : null,
          live,
        ),
        el("div", { class: "stream-body" }, rateList, spark),
        totals,
      );
      this.#cards.set(stream.name, {
        rates,
        live,
        totals,
        chart: null,
        spark,
        samples: [],
        previous: null,
      });
      return card;
    });
    replaceChildren(
      container,
      cards.length || !empty ? cards : el("p", { class: "muted" }, empty),
    );
    // Charts measure their container: build them once the cards are in the page.
    for (const card of this.#cards.values()) {
      card.chart = sparkline(card.spark, RATE_FIELDS.map((field) => RATE_LABELS[field]));
    }
  }

  /** Removes the charts: the cards are being replaced. */
  stop() {
    for (const card of this.#cards.values()) card.chart?.destroy();
  }

  /**
   * Takes the streams of a `GET /v1/streams` answer (or of `GET /v1/streams/{stream}`s) read at
   * `atMs`: a time (ms), or a function of a stream's name giving when its stats were read.
   */
  update(streams, atMs) {
    for (const stream of streams) {
      const card = this.#cards.get(stream.name);
      if (!card) continue;
      const at = typeof atMs === "function" ? atMs(stream.name) : atMs;
      const sample = { atMs: at, stats: stream.stats };
      const rates = ratesBetween(card.previous, sample);
      card.previous = sample;
      const stats = stream.stats;
      replaceChildren(
        card.totals,
        `totals: ${formatValue(stats.accepted)} accepted (${formatValue(stats.applied)} applied, `,
        `${formatValue(stats.filtered)} filtered), ${formatValue(stats.duplicates)} duplicate, `,
        `${formatValue(stats.late)} late, ${formatValue(stats.rejected ?? 0)} rejected`,
        // With its date when not within a day: a stream idle for days would read as moving today.
        stats.watermark ? ` · watermark ${timeOf(stats.watermark)}` : "",
      );
      if (!rates) continue;
      for (const field of RATE_FIELDS) {
        card.rates[field].textContent = `${formatRate(rates[field])}/s`;
      }
      card.samples.push({ atMs: at, rates });
      if (card.samples.length > SAMPLES) card.samples.shift();
      card.chart.update([
        card.samples.map((item) => item.atMs / 1000),
        ...RATE_FIELDS.map((field) => card.samples.map((item) => item.rates[field])),
      ]);
    }
  }

  /**
   * Shows the state of a stream's live subscription: `connected` true (live), false (lost,
   * reconnecting) or "polled" (not followed live, by choice).
   */
  setLiveState(stream, text, connected) {
    const card = this.#cards.get(stream);
    if (!card) return;
    card.live.textContent = text;
    card.live.classList.toggle("ok", connected === true);
    // Polled by choice (past the live ones) is no failure: shown muted, not in the error red.
    card.live.classList.toggle("polled", connected === "polled");
  }
}
