/**
 * The webhooks panel (admin key): each endpoint with its delivery health
 * from `GET /v1/webhooks/{id}/deliveries` — the success rate of the
 * attempts of its last 100 deliveries (those cut off by a stopping instance,
 * outcome `interrupted`, left out: not the receiver's doing), the last failed
 * attempt, how many deliveries are pending (or retrying) and dead, when the
 * oldest one still waiting was first tried (its `firstAttemptAt`) and how many
 * had their last attempts cut off (`interruptions`, the most in a row) — and a
 * button that replays its failed and dead deliveries
 * (`POST /v1/webhooks/{id}/replay`).
 *
 * @module
 */
import { api, keyGrant, mayMend, serverHasWebhooks, statusOf } from "./api.js";
import { clockTime, el, replaceChildren, timeOf } from "./dom.js";
import { shownText } from "./model.js";

/** Deliveries whose attempts give the success rate. */
const RECENT = 100;

/** Most deliveries counted per status; more show as `200+`. */
const COUNT_LIMIT = 200;

const REPLAY_PERIODS = [
  ["1 h", 3_600_000],
  ["24 h", 86_400_000],
  ["7 days", 7 * 86_400_000],
];

function deliveriesPath(id, query) {
  return `/v1/webhooks/${encodeURIComponent(id)}/deliveries?${new URLSearchParams(query)}`;
}

/** The newest `COUNT_LIMIT` deliveries of `status`, and whether there may be more. */
async function deliveriesOf(id, status) {
  const body = await api(deliveriesPath(id, { status, limit: String(COUNT_LIMIT) }));
  return { deliveries: body.deliveries, more: body.deliveries.length >= COUNT_LIMIT };
}

function countText(count) {
  return count >= COUNT_LIMIT ? `${COUNT_LIMIT}+` : String(count);
}

/**
 * What `interruptions` say of `deliveries`: how many had their last attempts cut off by a
 * stopping instance, and the most such attempts in a row.
 */
function interruptedOf(deliveries) {
  const cut = deliveries.map((delivery) => delivery.interruptions ?? 0).filter((n) => n > 0);
  return { deliveries: cut.length, mostInARow: Math.max(0, ...cut) };
}

/** Health of one endpoint from its deliveries. */
export async function endpointHealth(id) {
  const [recent, pending, retrying, dead] = await Promise.all([
    api(deliveriesPath(id, { limit: String(RECENT) })),
    deliveriesOf(id, "pending"),
    deliveriesOf(id, "retrying"),
    deliveriesOf(id, "dead"),
  ]);
  const waiting = [...pending.deliveries, ...retrying.deliveries];
  // Newest first: past COUNT_LIMIT of a status, older ones (tried earlier) were not read.
  const firstTried = waiting.map((delivery) => delivery.firstAttemptAt)
    .filter((at) => typeof at === "string")
    .sort((a, b) => Date.parse(a) - Date.parse(b))[0];
  const attempts = recent.deliveries.flatMap((delivery) => delivery.attemptLog)
    .filter((attempt) => attempt.outcome !== "interrupted");
  const succeeded = attempts.filter((attempt) => attempt.outcome === "succeeded").length;
  const failed = attempts
    .filter((attempt) => attempt.outcome !== "succeeded")
    .sort((a, b) => Date.parse(b.at) - Date.parse(a.at))[0];
  return {
    attempts: attempts.length,
    successRate: attempts.length ? succeeded / attempts.length : null,
    lastError: failed ? { at: failed.at, text: failed.error ?? `HTTP ${failed.status}` } : null,
    pending: waiting.length,
    dead: dead.deliveries.length,
    waitingSince: firstTried ? { at: firstTried, orEarlier: pending.more || retrying.more } : null,
    interrupted: {
      waiting: interruptedOf(waiting),
      dead: interruptedOf(dead.deliveries),
    },
  };
}

/** A count of deliveries and what their `interruptions` and `firstAttemptAt` add to it. */
function countCell(count, notes) {
  return el(
    "td",
    { class: "num" },
    countText(count),
    notes.filter(Boolean).map((note) => el("small", { class: "muted note" }, note)),
  );
}

function interruptedText({ deliveries, mostInARow }) {
  if (deliveries === 0) return null;
  return `${deliveries} interrupted${mostInARow > 1 ? ` (up to ${mostInARow} in a row)` : ""}`;
}

/**
 * The control focused in a row of `region` (its period or its replay button): returns what
 * focuses that control of the same endpoint's row once the rows are drawn again (the region when
 * there is none), so a redraw does not drop the keyboard's place. Nothing to do when focus is
 * elsewhere (or on the region, which stays).
 */
function focusedControl(region) {
  const active = globalThis.document.activeElement;
  if (!active || active === region || !region.contains(active)) return () => {};
  const id = active.closest("[data-webhook]")?.getAttribute("data-webhook");
  const control = active.tagName === "SELECT"
    ? "select"
    : active.matches(".replay")
    ? ".replay"
    : null;
  if (id === undefined || control === null) return () => region.focus({ preventScroll: true });
  return () => {
    const row = [...region.querySelectorAll("[data-webhook]")]
      .find((candidate) => candidate.getAttribute("data-webhook") === id);
    // The region, when the row is gone or drawn without its controls (its health unread).
    (row?.querySelector(control) ?? region).focus({ preventScroll: true });
  };
}

/** Shows an endpoint's replay state (`kept`: busy, its last result) on the row drawn for it. */
function showReplay(kept) {
  const { button, result } = kept.shown;
  button.setAttribute("aria-disabled", String(kept.busy));
  result.textContent = kept.busy ? "replaying…" : kept.result;
}

/** The webhook endpoints table's columns. */
const COLUMNS = ["endpoint", "success", "last error", "pending", "dead", "replay"];

/** The webhook endpoints table. */
export class WebhooksView {
  #container;
  #note;
  /** Per endpoint: the last replay's outcome and the chosen period, kept across redraws. */
  #replays = new Map();
  /**
   * The region the table scrolls in where the page is too narrow for whole column names (a
   * phone), named and reachable by keyboard to scroll it with the arrow keys. Made once: its
   * scroll position and its focus outlive the redraws.
   */
  #region = null;
  /** When (ISO) the table shown was read. */
  #readAt = null;
  /**
   * Per endpoint: its last health read and when (ISO), drawn again when a read of it fails in a
   * way the next read may mend.
   */
  #healths = new Map();

  /** Renders into `container`; `note` says why the table is missing when it is. */
  constructor(container, note) {
    this.#container = container;
    this.#note = note;
  }

  /**
   * Why the webhook list is not for this page (no webhooks on the server, a key that may not list
   * them), or null when it is; undefined until known. Asked before the list, so that a key that
   * may not read it is never refused (a 403 or 404 is a console error in every browser).
   */
  #unavailable = undefined;

  /** Learns once why the list is not for this page, if it is not; false when that could not be read. */
  async #checkAccess() {
    if (this.#unavailable !== undefined) return true;
    if (!serverHasWebhooks()) {
      this.#unavailable = "Webhooks are not enabled on this server.";
      return true;
    }
    let grant;
    try {
      grant = await keyGrant();
    } catch (error) {
      this.#note.textContent = `Cannot read what this key may do: ${error.message}; retrying`;
      return false;
    }
    // Listing webhooks names no stream: an admin key limited to streams may not either.
    this.#unavailable = !grant.scopes.includes("admin")
      ? "Webhook health needs an admin key."
      : grant.streams !== null
      ? `Webhook health needs an admin key for all streams (this one is limited to ${
        grant.streams.join(", ")
      }).`
      : null;
    return true;
  }

  /**
   * Reads the endpoints and their health, and redraws. Answers `false` when
   * reading again cannot help: the key may not list webhooks (it lacks the
   * admin scope or is limited to streams; it was 403), or the server has no
   * webhooks (404). Both hold until the page is loaded again, as a new key or
   * a new server config reloads it.
   */
  async refresh() {
    if (!await this.#checkAccess()) return true;
    if (this.#unavailable !== null) {
      this.#note.textContent = this.#unavailable;
      return false;
    }
    const readAt = new Date().toISOString();
    let endpoints;
    let more = false;
    try {
      const list = await api("/v1/webhooks");
      endpoints = list.webhooks;
      // One page (the oldest 100): each endpoint shown costs 4 reads every 10 s, so not all of a
      // deployment's 1,000; the note says some are not shown rather than leave them unseen.
      more = typeof list.nextCursor === "string";
    } catch (error) {
      const status = statusOf(error);
      const refused = status === 401 || status === 403;
      // A failure the next read may mend (the network, 408, 429, 5xx) keeps the last table, its
      // scroll and focus with it: only the note says so, and how old the table is. So does a key
      // refused since (revoked: 401; 403): the table is what the user saw, as the stream cards
      // stay when their reads fail; a new key reloads the page.
      if (!mayMend(status) && !refused) {
        replaceChildren(this.#container);
        this.#healths.clear();
      }
      // Still shown (only a successful read puts a table in, with its time).
      const kept = this.#container.hasChildNodes()
        ? `; showing the read of ${clockTime(this.#readAt)}`
        : "";
      // A 403 says why: a read key lacks the scope, and an admin key limited to streams may read
      // no route that names none (it was told it needed an admin key, which it is).
      const why = status === 403 ? ` for all streams (${error.message})` : "";
      this.#note.textContent = refused
        ? `Webhook health needs an admin key${why}${kept || "."}`
        : status === 404
        ? "Webhooks are not enabled on this server."
        : `Cannot read webhooks: ${error.message}${kept}`;
      return status !== 403 && status !== 404;
    }
    this.#note.textContent = more
      ? `Showing the ${endpoints.length} oldest endpoints; more are registered: GET /v1/webhooks lists them all.`
      : endpoints.length
      ? ""
      : "No webhook endpoints: register one with POST /v1/webhooks.";
    // Every endpoint's health first, then every row at once: a period chosen meanwhile is drawn
    // as chosen.
    const healths = await Promise.all(
      endpoints.map((endpoint) =>
        endpointHealth(endpoint.id).then((health) => ({ health }), (error) => ({ error }))
      ),
    );
    if (!endpoints.length) {
      replaceChildren(this.#container);
      this.#healths.clear();
      return true;
    }
    const rows = endpoints.map((endpoint, i) => {
      const { health, error } = healths[i];
      if (health) {
        this.#healths.set(endpoint.id, { health, readAt });
        return this.#row(endpoint, health);
      }
      // A failure the next read may mend (the network, 408, 429, 5xx) keeps the endpoint's last
      // health in its row, controls and all, with a note of the failure and of the read shown.
      const last = this.#healths.get(endpoint.id);
      if (last && mayMend(statusOf(error))) {
        return this.#row(
          endpoint,
          last.health,
          `Cannot read deliveries: ${error.message}; showing the read of ${timeOf(last.readAt)}`,
        );
      }
      this.#healths.delete(endpoint.id);
      return el(
        "tr",
        { "data-webhook": endpoint.id },
        el("td", {}, endpoint.url),
        el(
          "td",
          { colspan: String(COLUMNS.length - 1) },
          `Cannot read deliveries: ${error.message}`,
        ),
      );
    });
    this.#region ??= el("div", {
      class: "table-scroll",
      role: "region",
      "aria-label": "Webhook endpoints",
      tabindex: "0",
    });
    const region = this.#region;
    const refocus = focusedControl(region);
    replaceChildren(
      region,
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, COLUMNS.map((title) => el("th", {}, title)))),
        el("tbody", {}, rows),
      ),
    );
    if (region.parentNode !== this.#container) replaceChildren(this.#container, region);
    refocus();
    this.#readAt = readAt;
    // Endpoints gone (deleted) are forgotten, unless their replay is still being answered.
    const listed = new Set(endpoints.map((endpoint) => endpoint.id));
    for (const [id, kept] of this.#replays) {
      if (!listed.has(id) && !kept.busy) this.#replays.delete(id);
    }
    for (const id of this.#healths.keys()) {
      if (!listed.has(id)) this.#healths.delete(id);
    }
    return true;
  }

  /** An endpoint's row; `stale` says why its health is an older read's, when it is. */
  #row(endpoint, health, stale = null) {
    // Every row has the same controls: their names say whose they are, for a screen reader's list
    // of buttons and fields, where the row is not read with them.
    const name = shownText(endpoint.description || endpoint.url);
    const period = el(
      "select",
      { "aria-label": `Replay deliveries of ${name} created within` },
      REPLAY_PERIODS.map(([label, ms]) => el("option", { value: String(ms) }, label)),
    );
    const kept = this.#replays.get(endpoint.id) ??
      { period: String(86_400_000), result: "", busy: false, shown: null };
    this.#replays.set(endpoint.id, kept);
    period.value = kept.period;
    period.addEventListener("change", () => kept.period = period.value);
    const result = el("span", { class: "muted replay-result" });
    // Busy while its replay is asked: marked with aria-disabled, not disabled, which would drop
    // the keyboard's focus; a redrawn row shows it busy too, and the answer goes to the row shown.
    const button = el(
      "button",
      { type: "button", class: "replay", "aria-label": `Replay failed deliveries of ${name}` },
      "Replay failed",
    );
    kept.shown = { button, result };
    showReplay(kept);
    button.addEventListener("click", async () => {
      if (kept.busy) return;
      kept.busy = true;
      showReplay(kept);
      try {
        const since = new Date(Date.now() - Number(kept.period)).toISOString();
        const body = await api(`/v1/webhooks/${encodeURIComponent(endpoint.id)}/replay`, {
          method: "POST",
          body: { since },
        });
        kept.result = `requeued ${body.requeued}`;
      } catch (error) {
        kept.result = error.message;
      } finally {
        kept.busy = false;
        showReplay(kept);
      }
    });
    const rate = health.successRate === null
      ? "—"
      : `${Math.round(health.successRate * 100)}% of ${health.attempts}`;
    return el(
      "tr",
      { "data-webhook": endpoint.id, class: endpoint.disabled ? "disabled" : false },
      el(
        "td",
        {},
        // Up to 1024 characters: cut to two lines by the stylesheet, whole in the title.
        // Its bidirectional overrides and embeddings shown as escapes, not reordering it.
        endpoint.description
          ? el(
            "b",
            { class: "description", dir: "auto", title: shownText(endpoint.description) },
            shownText(endpoint.description),
          )
          : null,
        el("span", { class: "url" }, endpoint.url),
        endpoint.disabled
          ? el("span", { class: "badge bad" }, `disabled: ${endpoint.disabledReason ?? "by hand"}`)
          : null,
        stale ? el("small", { class: "muted note health-kept" }, stale) : null,
      ),
      el("td", { class: "num" }, rate),
      el(
        "td",
        { class: "error-text" },
        // With its date when not from the last day, as "first tried" (an endpoint may fail for days).
        health.lastError ? `${timeOf(health.lastError.at)} ${health.lastError.text}` : "—",
      ),
      countCell(health.pending, [
        health.waitingSince
          ? `first tried ${timeOf(health.waitingSince.at)}${
            health.waitingSince.orEarlier ? " or earlier" : ""
          }`
          : null,
        interruptedText(health.interrupted.waiting),
      ]),
      countCell(health.dead, [interruptedText(health.interrupted.dead)]),
      el("td", {}, period, " ", button, " ", result),
    );
  }
}
