/**
 * Building DOM nodes without HTML strings, so stream names, group values and
 * error messages from the server are always text, never markup.
 *
 * @module
 */

/**
 * Creates an element: `attributes` are set as attributes (`class`,
 * `data-*`, `aria-*`, …; `hidden`/`disabled` when true), `children` are
 * nodes or text (null and false are skipped).
 */
export function el(tag, attributes = {}, ...children) {
  const element = globalThis.document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== false));
  return element;
}

/**
 * A name or group value from users, which may be right-to-left or very long: in a `<bdi>`, so its
 * direction does not reorder the text beside it, clamped to one line by the `.clamp` rule with an
 * ellipsis, the whole of it in `title`.
 */
export function userText(text, attributes = {}) {
  const value = String(text);
  return el("bdi", {
    ...attributes,
    class: ["clamp", attributes.class].filter(Boolean).join(" "),
    title: value,
  }, value);
}

/** Replaces an element's children. */
export function replaceChildren(element, ...children) {
  element.replaceChildren(...children.flat().filter((child) => child !== null && child !== false));
}

/** `10:41:05` in the viewer's time zone. */
export function clockTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

/** `12/1/2026, 10:41:05`: the date and time, in the viewer's time zone. */
function dateTime(iso) {
  return new Date(iso).toLocaleString([], { hour12: false });
}

/** A day in milliseconds. */
const DAY_MS = 86_400_000;

/**
 * A window's ends, `10:41:00 – 10:42:00` in the viewer's time zone; a window of a day or longer
 * (tumbling 1d, a sliding 24h) with the date of each (`1/1/2026, 00:00:00 – 1/2/2026, 00:00:00`):
 * its times alone would read alike at both ends. `separator` goes between them.
 */
export function windowRange(start, end, separator = " – ") {
  const long = Date.parse(end) - Date.parse(start) >= DAY_MS;
  const at = (iso) => long ? dateTime(iso) : clockTime(iso);
  return `${at(start)}${separator}${at(end)}`;
}

/**
 * `10:41:05` within a day of now, else with its date (`12/1/2026, 10:41:05`), in the viewer's
 * time zone: a delivery may have been retried for days.
 */
export function timeOf(iso, nowMs = Date.now()) {
  return Math.abs(nowMs - Date.parse(iso)) < DAY_MS ? clockTime(iso) : dateTime(iso);
}
