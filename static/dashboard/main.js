/**
 * The dashboard page: asks for a key when the server wants one (kept in
 * `sessionStorage`, never in a URL), then shows the streams' event rates,
 * each counter's windows, alerts as they fire and the webhook endpoints'
 * health. With many streams, cards and counters are drawn for at most
 * `MAX_SHOWN_STREAMS` of them, chosen in a list kept in the URL's fragment; the
 * others cost no chart and no request. Live results come from one SSE
 * subscription per shown stream (the first `MAX_LIVE_STREAMS`); stats,
 * readiness and webhooks are polled.
 *
 * @module
 */
import { AlertsView } from "./alerts.js";
import {
  allStreams,
  ApiError,
  follow,
  forgetKey,
  keyGrant,
  keyProblem,
  readiness,
  readStream,
  rememberKey,
  serverWantsKey,
  storedKey,
} from "./api.js";
import { CountersView } from "./counters.js";
import { clockTime } from "./dom.js";
import { every, everyUntilWoken } from "./poll.js";
import { byName, choiceHash, MAX_SHOWN_STREAMS, parseChoice, shownStreams } from "./selection.js";
import { StreamPicker } from "./stream_picker.js";
import { StreamsView } from "./streams.js";
import { WebhooksView } from "./webhooks.js";

const STATS_EVERY_MS = 2_000;
/**
 * With more streams than are shown, how often the whole list (every stream's stats: one store
 * read each, on the server) is read for the picker's names and totals; the shown streams are read
 * every {@linkcode STATS_EVERY_MS} by their own requests.
 */
const LIST_EVERY_MS = 30_000;
/** How long (ms) typing in the stream filter pauses before the list is read for its totals. */
const FILTER_PAUSE_MS = 500;
const READY_EVERY_MS = 5_000;
const WEBHOOKS_EVERY_MS = 10_000;

/**
 * Streams followed live. Each subscription holds a connection open, and over
 * HTTP/1.1 a browser opens at most 6 to one server; the rest are polled.
 */
const MAX_LIVE_STREAMS = 3;

/** What the Streams panel says when the server lists no stream. */
const NO_STREAMS =
  "No streams yet: add one to the config file, or create one with PUT /v1/streams/{stream}.";

/**
 * What the Streams panel says when no stream is listed to a key with `grant` (`GET /v1/key`): for
 * a key limited to streams, that none of those exists yet, naming them (the first 10), rather
 * than that the server has none; and to create one only if the key's scopes include admin (an
 * admin key limited to streams may `PUT` those), as a read key may not.
 */
function noStreamsFor(grant) {
  if (grant.streams === null) return NO_STREAMS;
  const named = grant.streams.slice(0, 10).join(", ");
  const more = grant.streams.length - 10;
  const create = grant.scopes.includes("admin") ? " Create one with PUT /v1/streams/{stream}." : "";
  return `None of the streams this key may read exists yet: ${named}${
    more > 0 ? `, and ${more} more` : ""
  }.${create}`;
}

const LIVE_TYPES = ["window.updated", "window.closed", "alert.fired"];

function byId(id) {
  return globalThis.document.getElementById(id);
}

function showKeyForm(message) {
  byId("dashboard").hidden = true;
  byId("key-panel").hidden = false;
  byId("key-message").textContent = message;
  byId("key-form").elements.namedItem("key").focus();
}

async function showStoreStatus() {
  const badge = byId("store-status");
  try {
    const ready = await readiness();
    badge.textContent = ready.status === "ready"
      ? `store: ${ready.store} · ready`
      : `store: ${ready.store} · ${ready.status}: ${ready.error ?? ""}`;
    badge.classList.toggle("ok", ready.status === "ready");
    badge.classList.toggle("bad", ready.status !== "ready");
    markStale(
      ready.status === "ready"
        ? null
        // The instance stops (a deploy, a restart): the store may be well; the next read goes to
        // another instance, or to this one started again.
        : ready.status === "shutting_down"
        ? "This server is shutting down"
        // Its webhook endpoints still load: the store may be well, the server soon ready.
        : ready.status === "starting"
        ? "This server is starting"
        : "The store is unavailable",
    );
  } catch (error) {
    badge.textContent = `store: unknown (${error.message})`;
    badge.classList.remove("ok");
    badge.classList.add("bad");
    // No answer at all (the server stopped, the network): the store may well be up.
    markStale("The server cannot be reached");
  }
}

/** Since when (ms) the store has been found down, or null while it answers. */
let staleSince = null;

/**
 * While the store is down, or the server cannot be reached, the values on the page are the last
 * ones read, not current: they are dimmed (the `stale` class on the dashboard) and a line says
 * why (`reason`) and since when, rather than kept as if fresh. A null `reason`: they are fresh.
 */
function markStale(reason) {
  const dashboard = byId("dashboard");
  const note = byId("stale-note");
  if (reason === null) {
    staleSince = null;
    dashboard.classList.remove("stale");
    note.hidden = true;
    return;
  }
  staleSince ??= Date.now();
  dashboard.classList.add("stale");
  note.textContent = `${reason}: values shown are the last read before ${
    clockTime(new Date(staleSince).toISOString())
  } and may be stale.`;
  note.hidden = false;
}

/**
 * What the panels are built from: the streams' names, descriptions (in the cards' headers) and
 * counters, by name (instances behind one address may list the same streams in another order).
 */
function layoutOf(streams) {
  return JSON.stringify(
    streams.map((stream) => [
      stream.name,
      stream.description ?? null,
      stream.definition?.counters ?? {},
      // One not servable has a card of its own, redrawn once it is replaced.
      stream.servable === false ? stream.problem ?? "" : null,
    ])
      .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0),
  );
}

/**
 * Builds the streams and counters panels for `streams` (the shown ones, in name order) and
 * follows them (the first `MAX_LIVE_STREAMS` live, the rest polled) until `stop()`. `empty`
 * is what the panels say when there is none.
 */
function showStreams(streams, { alerts, top, empty }) {
  const streamsView = new StreamsView(byId("streams"), streams, { empty });
  // One not servable (stored with a definition this server cannot compile) has no counters to
  // read, nor results to follow: its card says why.
  const served = streams.filter((stream) => stream.servable !== false);
  const counters = new CountersView(byId("counters"), served, {
    top,
    empty: streams.length > 0 ? null : empty,
  });
  const stops = [];
  served.forEach((stream, i) => {
    if (i >= MAX_LIVE_STREAMS) {
      streamsView.setLiveState(
        stream.name,
        `polled (live for the first ${MAX_LIVE_STREAMS})`,
        "polled",
      );
      const timer = setInterval(() => counters.load(stream.name), WEBHOOKS_EVERY_MS);
      counters.load(stream.name);
      stops.push(() => clearInterval(timer));
      return;
    }
    stops.push(follow(stream.name, {
      types: LIVE_TYPES,
      onMessage(payload) {
        // Sent on every (re)connection: reload what may have been missed.
        if (payload.type === "subscribed") counters.load(stream.name);
        else {
          counters.handle(stream.name, payload);
          alerts.handle(payload);
        }
      },
      onState: (text, connected) => streamsView.setLiveState(stream.name, text, connected),
    }));
  });
  return {
    layout: layoutOf(streams),
    streamsView,
    counters,
    stop() {
      for (const stop of stops) stop();
      counters.stop();
      streamsView.stop();
    },
  };
}

/**
 * The latest {@linkcode start}: one that an earlier is still reading for, or waiting to try again,
 * goes on alone (a key given again while the stream list cannot be read would otherwise start the
 * dashboard twice: every poll and subscription doubled).
 */
let startRun = 0;
let startRetry;
/** Whether the dashboard started: it starts once a page. */
let started = false;

async function start() {
  if (started) return;
  clearTimeout(startRetry);
  const run = ++startRun;
  const wantsKey = serverWantsKey();
  byId("mode").textContent = wantsKey ? "API key in this tab" : "open mode: no key needed";
  byId("forget-key").hidden = !storedKey();
  if (wantsKey && !storedKey()) {
    showKeyForm("This server needs an API key (read scope; admin for webhooks).");
    return;
  }
  let streams;
  try {
    streams = (await allStreams()).streams;
  } catch (error) {
    if (run !== startRun) return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      forgetKey();
      byId("forget-key").hidden = true;
      showKeyForm(`Key refused: ${error.message}`);
      return;
    }
    byId("page-status").textContent = `Cannot read streams: ${error.message}; retrying`;
    startRetry = setTimeout(start, READY_EVERY_MS);
    return;
  }
  if (run !== startRun) return;
  started = true;
  byId("page-status").textContent = "";
  byId("key-panel").hidden = true;
  byId("dashboard").hidden = false;

  const topGroups = byId("top-groups");
  const alerts = new AlertsView(byId("alerts"), byId("alert-count"));
  const webhooks = new WebhooksView(byId("webhooks"), byId("webhooks-note"));
  let shown = null;
  /** The names of the streams shown, as the last {@linkcode apply} chose them. */
  let shownNames = [];
  let latest = streams;
  /** name → when (ms) the stats of `latest` for it were read */
  const readAt = new Map();
  let listReadAt = Date.now();
  /** Whether the next read is of the whole list (the filter was used, or a stream went). */
  let listWanted = false;
  let filterPause;
  let chosen = parseChoice(globalThis.location.hash);

  function noteRead(list, atMs) {
    for (const stream of list) readAt.set(stream.name, atMs);
  }
  noteRead(streams, listReadAt);

  /** What the Streams panel says when no stream is listed: see {@linkcode noStreamsFor}. */
  let noStreams = NO_STREAMS;
  let grantAsked = false;

  /**
   * Shows the panels of the chosen streams of `all` (a `GET /v1/streams` answer's list, each
   * stream's stats read at `readAt`), building them again when the choice changed or those
   * streams were created, deleted or redefined since.
   */
  function apply(all) {
    latest = all;
    if (all.length === 0 && !grantAsked) {
      // None listed: the server may have none, or this key may read none of those it has.
      grantAsked = true;
      keyGrant().then((grant) => {
        noStreams = noStreamsFor(grant);
        // Drawn again with the text for this key, if still none is listed.
        if (noStreams !== NO_STREAMS && latest.length === 0 && shown !== null) {
          shown.stop();
          shown = null;
          apply(latest);
        }
      }, () => {
        // Asked again at the next read that lists none.
        grantAsked = false;
      });
    }
    const names = shownStreams(all.map((stream) => stream.name), chosen);
    const byStream = new Map(all.map((stream) => [stream.name, stream]));
    const list = names.map((name) => byStream.get(name));
    if (shown === null || layoutOf(list) !== shown.layout) {
      shown?.stop();
      shown = showStreams(list, {
        alerts,
        top: Number(topGroups.value),
        empty: all.length > 0 ? "No stream chosen: tick some in the list above." : noStreams,
      });
    }
    shownNames = names;
    picker.update(all, names);
    // Cards built for a new choice show the totals of the last read at once.
    shown.streamsView.update(all, (name) => readAt.get(name));
  }

  const picker = new StreamPicker({
    fieldset: byId("stream-picker"),
    legend: byId("stream-picker-legend"),
    filter: byId("stream-filter"),
    note: byId("stream-picker-note"),
    list: byId("stream-choices"),
  }, {
    onChoose(names) {
      chosen = byName(names);
      // Kept in the fragment, never sent to the server: a reload or a shared link shows the same.
      globalThis.history.replaceState(null, "", choiceHash(chosen));
      apply(latest);
      wake();
    },
    onFilter() {
      // Fresh totals for the streams the filter lists, once typing pauses: a read of the whole
      // list costs the server a command a stream, so not one a keystroke.
      listWanted = true;
      clearTimeout(filterPause);
      filterPause = setTimeout(wake, FILTER_PAUSE_MS);
    },
  });
  globalThis.addEventListener("hashchange", () => {
    chosen = parseChoice(globalThis.location.hash);
    apply(latest);
    wake();
  });
  topGroups.addEventListener("change", () => shown?.counters.setTop(Number(topGroups.value)));

  /**
   * Reads the stats every 2 s: with at most {@linkcode MAX_SHOWN_STREAMS} streams, the whole
   * list (each is shown); with more, the shown streams, each by `GET /v1/streams/{stream}`, and
   * the whole list every {@linkcode LIST_EVERY_MS}, at once when the filter is used or a shown
   * stream is gone. So the page's cost does not grow with the number of streams at the 2 s rate.
   */
  async function readStats() {
    try {
      if (shown === null) {
        apply(streams);
      } else if (
        listWanted || latest.length <= MAX_SHOWN_STREAMS ||
        Date.now() - listReadAt >= LIST_EVERY_MS
      ) {
        listWanted = false;
        const all = (await allStreams()).streams;
        listReadAt = Date.now();
        noteRead(all, listReadAt);
        apply(all);
      } else {
        // One not servable has no stats to read: the list's entry stands until the next read of it.
        const unservable = new Set(
          latest.filter((stream) => stream.servable === false).map((stream) => stream.name),
        );
        const names = shownNames.filter((name) => !unservable.has(name));
        const read = await Promise.all(names.map((name) => readStream(name)));
        const atMs = Date.now();
        const fresh = new Map();
        const gone = new Set();
        names.forEach((name, i) => read[i] === null ? gone.add(name) : fresh.set(name, read[i]));
        noteRead(fresh.values(), atMs);
        if (gone.size > 0) listWanted = true;
        apply(
          latest.filter((stream) => !gone.has(stream.name))
            .map((stream) => fresh.get(stream.name) ?? stream),
        );
        if (gone.size > 0) wake();
      }
      byId("page-status").textContent = "";
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        // The key was refused since it was given (revoked, expired, or forgotten by a restarted
        // memory store): ask for another rather than read with it for good. Reads go on without
        // one, each refused in the page ("no_key", no request), until a key reloads the page.
        if (error.code !== "no_key") {
          forgetKey();
          byId("forget-key").hidden = true;
          byId("page-status").textContent = "";
          showKeyForm(`Key refused: ${error.message}`);
        }
        return;
      }
      byId("page-status").textContent = `Cannot read stream stats: ${error.message}`;
    }
  }
  const wake = everyUntilWoken(STATS_EVERY_MS, readStats);
  every(WEBHOOKS_EVERY_MS, () => webhooks.refresh());
}

byId("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = event.currentTarget.elements.namedItem("key");
  const key = input.value.trim();
  input.value = "";
  if (!key) return;
  // Else every read failed in the browser, "Cannot read streams: Failed to execute 'fetch'…",
  // retried every 5 s with the key kept, as if the server could not be reached.
  const problem = keyProblem(key);
  if (problem) {
    showKeyForm(problem);
    return;
  }
  rememberKey(key);
  // A key asked for again once the dashboard ran (the last was refused): the panels, polls and
  // subscriptions start afresh with it.
  if (started) location.reload();
  else start();
});
byId("forget-key").addEventListener("click", () => {
  forgetKey();
  location.reload();
});

every(READY_EVERY_MS, showStoreStatus);
start();
