/**
 * The dashboard's pure logic, without DOM or network: turning stream stats
 * into rates, keeping a counter's windows per group and choosing the groups
 * to draw. Tested in Deno (tests/static/dashboard/model_test.ts).
 *
 * @module
 */

/** The stats fields shown as rates, in display order. */
export const RATE_FIELDS = ["accepted", "duplicates", "late", "rejected"];

/**
 * Events per second of each {@linkcode RATE_FIELDS} field between two stats
 * samples `{atMs, stats}`; null when there is no earlier sample. A counter
 * that went down (the server restarted) counts from zero.
 *
 * @param {{atMs: number, stats: Record<string, unknown>} | null} previous
 * @param {{atMs: number, stats: Record<string, unknown>}} current
 * @returns {Record<string, number> | null}
 */
export function ratesBetween(previous, current) {
  if (!previous || current.atMs <= previous.atMs) return null;
  const seconds = (current.atMs - previous.atMs) / 1000;
  const rates = {};
  for (const field of RATE_FIELDS) {
    const now = Number(current.stats[field] ?? 0);
    const before = Number(previous.stats[field] ?? 0);
    rates[field] = (now >= before ? now - before : now) / seconds;
  }
  return rates;
}

/**
 * A group object as a short label: `DE`, `DE · web`, `(all)` for no grouping. A value that is not
 * text (null, a number, a boolean, an object or array) is its JSON (`String()` of an object read
 * `[object Object]`, whatever it held), and text that is JSON itself (`"1"`, `"null"`, `"[1]"`) is
 * quoted: the string `1` is another group than the number 1, as a read's `group.` filter tells
 * (`group.g="1"`), and the two would read alike. So is text that is empty, has white space at
 * either end (`""`, `" "`, `"DE "`) or holds a character that shows nothing or reorders the text
 * (see {@linkcode UNSEEN}), which is written as its escape (`"a\nb"`, `"DE\u200b"`,
 * `"\u202egnp.exe"`): shown bare it read blank (uPlot's legend wrote its default `Value` for an
 * empty label), as `DE`, as `a b`, or (after a right-to-left override) backwards, as `exe.png`.
 * With more than one value each is isolated (U+2068 … U+2069), so right-to-left text in one does
 * not move the others.
 */
export function groupLabel(group) {
  const values = Object.values(group ?? {});
  if (values.length === 0) return "(all)";
  if (values.length === 1) return valueLabel(values[0]);
  return values.map((value) => `\u2068${valueLabel(value)}\u2069`).join(" · ");
}

/**
 * Characters that show nothing, read as another or reorder the text after them: controls, format
 * characters (zero-width spaces and joiners, the byte order mark, the soft hyphen, bidirectional
 * marks, embeddings, overrides and isolates), line and paragraph separators, spaces other than
 * U+0020 (a no-break space reads as one) and the other default-ignorable code points (variation
 * selectors, Hangul fillers). {@linkcode escapeUnseen} keeps those that are part of ordinary text.
 */
const UNSEEN = String.raw`[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]|(?! )\p{Zs}`;

/**
 * A letter of a script whose letters a zero-width (non-)joiner can join or part, as in Persian
 * `می‌خواهم` or Devanagari `क्‍ष`: not Latin, Greek, Cyrillic or CJK, where one changes nothing
 * seen (`D\u200dE` reads as `DE`).
 */
const JOINING_LETTER = String
  .raw`[\p{L}--[\p{Script=Latin}\p{Script=Greek}\p{Script=Cyrillic}\p{Script=Han}\p{Script=Hangul}\p{Script=Hiragana}\p{Script=Katakana}]]`;

/**
 * The invisible characters that are part of ordinary text, each matched whole so it stays as it
 * is: an emoji flag's tag sequence (U+1F3F4, tags U+E0020–U+E007E, the cancel tag U+E007F, as in
 * England's flag); a zero-width non-joiner or joiner between two letters (and their marks) of
 * {@linkcode JOINING_LETTER}; a zero-width joiner between two emoji (`👨‍👩‍👧`, `❤️‍🔥`, after a
 * skin tone too); a text or emoji variation selector after an emoji (`❤️`, `☺︎`) or in a keycap
 * (`1️⃣`); an ideographic space between two other characters (`東京\u3000駅`).
 */
const SHOWN = [
  String.raw`\u{1f3f4}[\u{e0020}-\u{e007e}]+\u{e007f}`,
  String.raw`(?<=${JOINING_LETTER}\p{M}*)[\u200c\u200d](?=\p{M}*${JOINING_LETTER})`,
  String
    .raw`(?<=[\p{Extended_Pictographic}\p{Emoji_Modifier}\ufe0f\u{e007f}])\u200d(?=\p{Extended_Pictographic})`,
  String.raw`(?<=[\p{Emoji}--[\x00-\x7f]])[\ufe0e\ufe0f]`,
  String.raw`(?<=[0-9#*])\ufe0f(?=\u20e3)`,
  String.raw`(?<!^)\u3000(?!$)`,
].join("|");

/** An ordinary-text sequence of {@linkcode SHOWN} (group 1), or else one {@linkcode UNSEEN}. */
const UNSEEN_OR_SHOWN = new RegExp(`(${SHOWN})|${UNSEEN}`, "gv");

/**
 * Text with each character that shows nothing or reorders the text (see {@linkcode UNSEEN}) as its
 * escape (`DE\u200b`, `\u202egnp.exe`), but for those in ordinary text ({@linkcode SHOWN}):
 * joiners in Persian or an emoji, an emoji's variation selector, a flag's tags, an ideographic
 * space between words. A joiner or selector alone, first or last, or between other characters,
 * is escaped.
 */
function escapeUnseen(text) {
  return text.replace(
    UNSEEN_OR_SHOWN,
    (match, shown) => shown ?? [...match].map(escapeOf).join(""),
  );
}

/**
 * The bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069): each
 * reorders the text after it, to the end of its paragraph or of its isolate.
 */
const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069]/gu;

/** A character as its escape: `\u200b`, `\u{e0001}` beyond U+FFFF. */
function escapeOf(character) {
  const code = character.codePointAt(0).toString(16);
  return code.length <= 4 ? `\\u${code.padStart(4, "0")}` : `\\u{${code}}`;
}

/**
 * Users' free text (a description) with its bidirectional embeddings, overrides and isolates
 * written as their escapes (`\u202e`): shown, one reversed the text after it, which could read as
 * something else.
 */
export function shownText(text) {
  return String(text).replace(BIDI_CONTROLS, escapeOf);
}

/** Text as JSON, with its invisible characters as escapes (JSON escapes those below U+0020). */
function quoted(text) {
  return `"${escapeUnseen(JSON.stringify(text).slice(1, -1))}"`;
}

/** One group value as {@linkcode groupLabel} writes it. */
function valueLabel(value) {
  if (typeof value !== "string") return JSON.stringify(value) ?? String(value);
  if (value === "" || value.trim() !== value || escapeUnseen(value) !== value) return quoted(value);
  try {
    JSON.parse(value);
  } catch {
    return value;
  }
  return JSON.stringify(value);
}

/** A number for display: whole numbers as they are, others with at most 2 decimals. */
export function formatValue(value) {
  value = chartValue(value);
  if (value === null || value === undefined) return "—";
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return value.toLocaleString("en", { maximumFractionDigits: 2 });
}

/** A rate for display: `0`, `0.4`, `12`, `1,250`. */
export function formatRate(value) {
  if (!value) return "0";
  return value < 10 ? value.toFixed(1).replace(/\.0$/, "") : Math.round(value).toLocaleString("en");
}

/**
 * The number a chart draws for a value: the value itself, or a quantiles
 * counter's p99 (the dashboard ranks those by `by=p99` too).
 */
export function chartValue(value) {
  if (value !== null && typeof value === "object") return value.p99 ?? null;
  return value ?? null;
}

/**
 * Label of the line of the groups beyond the top ones. It is no group's label as such: a group may
 * be named `others`, so the line also has a colour and a dash of its own (charts.js).
 */
export const OTHERS_LABEL = "others (the rest summed)";

/** A group object as the key its line and its current window's row are matched by. */
export function groupKey(group) {
  return JSON.stringify(group ?? {});
}

/**
 * One counter's windows, per group: what its chart draws. Rows come from
 * `GET …/counters/{counter}?top=N` (`{start, group, value}`, and per window
 * `others`: the rest merged). For counters whose values add up (count and
 * sum) the chart draws one more line, the rest summed: the server's others
 * plus the window's top groups the chart does not draw.
 */
export class CounterSeries {
  /** group key → {label, values: Map(start ms → value)} */
  #groups = new Map();
  /** start ms → the server's merged value of the groups beyond its top */
  #others = new Map();
  /** Starts (ms) of the windows the API marks `"partial": true` (in any group's row) */
  #partial = new Set();
  #maxWindows;
  #additive;

  /** Keeps at most `maxWindows` window starts (the newest); `additive` draws the rest summed. */
  constructor(maxWindows = 60, { additive = false } = {}) {
    this.#maxWindows = maxWindows;
    this.#additive = additive;
  }

  /** Sets the value of one window of one group. */
  set(row) {
    const key = groupKey(row.group);
    let entry = this.#groups.get(key);
    if (!entry) {
      entry = { label: groupLabel(row.group), values: new Map() };
      this.#groups.set(key, entry);
    }
    entry.values.set(Date.parse(row.start), chartValue(row.value));
    if (row.partial === true) this.#partial.add(Date.parse(row.start));
  }

  /** Sets the merged value of one window's groups beyond its top (`{start, value}`). */
  setOthers(row) {
    this.#others.set(Date.parse(row.start), chartValue(row.value));
    if (row.partial === true) this.#partial.add(Date.parse(row.start));
  }

  /**
   * Starts (seconds, as the chart's x) of the windows drawn that are partial: their counter was
   * added after some of their events, which it did not count.
   */
  partialStarts() {
    return this.starts().filter((start) => this.#partial.has(start)).map((start) => start / 1000);
  }

  /** Every window start held, ascending, at most the newest `maxWindows`. */
  starts() {
    const all = new Set();
    for (const entry of this.#groups.values()) {
      for (const start of entry.values.keys()) all.add(start);
    }
    const sorted = [...all].sort((a, b) => a - b);
    return sorted.slice(Math.max(0, sorted.length - this.#maxWindows));
  }

  /**
   * The `count` groups with the largest values over the windows held (their
   * maximum, so a group that peaked stays visible), largest first.
   */
  topGroups(count) {
    const starts = new Set(this.starts());
    const ranked = [...this.#groups.entries()].map(([key, entry]) => {
      let peak = -Infinity;
      for (const [start, value] of entry.values) {
        if (starts.has(start) && value !== null && value > peak) peak = value;
      }
      return { key, label: entry.label, peak };
    }).filter((item) => item.peak > -Infinity);
    ranked.sort((a, b) => b.peak - a.peak || a.label.localeCompare(b.label));
    return ranked.slice(0, count);
  }

  /**
   * uPlot data for the top `count` groups: `{labels, keys, data, rest}` with
   * `data = [starts in seconds, values of group 1, …]` (null where a group
   * has no window), `keys` the groups' {@linkcode groupKey}s in the same order, and `rest` true
   * when the last line is the rest summed (labelled {@linkcode OTHERS_LABEL}, with no key).
   */
  chartData(count) {
    const starts = this.starts();
    const top = this.topGroups(count);
    const data = [starts.map((start) => start / 1000)];
    for (const group of top) {
      const values = this.#groups.get(group.key).values;
      data.push(starts.map((start) => values.has(start) ? values.get(start) : null));
    }
    const labels = top.map((group) => group.label);
    const keys = top.map((group) => group.key);
    let rest = false;
    if (this.#additive) {
      const drawn = new Set(top.map((group) => group.key));
      const summed = starts.map((start) => {
        let sum = this.#others.get(start) ?? null;
        for (const [key, entry] of this.#groups) {
          const value = entry.values.get(start);
          if (!drawn.has(key) && typeof value === "number") sum = (sum ?? 0) + value;
        }
        return sum;
      });
      if (summed.some((value) => value !== null)) {
        labels.push(OTHERS_LABEL);
        data.push(summed);
        rest = true;
      }
    }
    return { labels, keys, data, rest };
  }

  /** Drops every window (before a reload). */
  clear() {
    this.#groups.clear();
    this.#others.clear();
    this.#partial.clear();
  }
}

/** `{stream}/{counter}`: the key of one counter on the page. */
export function counterKey(stream, counter) {
  return `${stream}/${counter}`;
}

/**
 * How a counter's definition reads: `count by country · tumbling 1m`. A field path is any text: one
 * holding a character that shows nothing or reorders the text (see {@linkcode escapeUnseen}) is
 * quoted as JSON with it as its escape (`by "country\u200b"`, `by "\u202eyrtnuoc"`), so two
 * fields read apart (a field named `country\u200b`, with a backslash, reads bare) and none
 * reverses the rest; so is one that is empty, has white space at either end or starts with `"`.
 */
export function describeCounter(definition) {
  if (!definition) return "";
  const field = (path) => {
    path = String(path);
    const plain = path !== "" && path.trim() === path && !path.startsWith('"');
    return plain && escapeUnseen(path) === path ? path : quoted(path);
  };
  const aggregate = typeof definition.aggregate === "string"
    ? definition.aggregate
    : Object.entries(definition.aggregate ?? {}).map(([kind, path]) =>
      `${kind}(${field(path)})`
    )[0];
  const window = definition.window ?? {};
  const shape = window.tumbling
    ? `tumbling ${window.tumbling}`
    : window.hopping
    ? `hopping ${window.hopping} every ${window.every}`
    : window.sliding
    ? `sliding ${window.sliding}`
    : window.session
    ? `sessions, gap ${window.session}`
    : "";
  const by = definition.groupBy?.length ? ` by ${definition.groupBy.map(field).join(", ")}` : "";
  return `${aggregate}${by} · ${shape}`;
}

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** A duration such as `1h30m` in ms; null when it cannot be read. */
export function durationMs(text) {
  const parts = [...String(text ?? "").matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (parts.length === 0) return null;
  return parts.reduce((sum, [, amount, unit]) => sum + Number(amount) * UNIT_MS[unit], 0);
}

/** Time (ms) between two window starts of a counter's definition. */
export function windowStepMs(definition) {
  const window = definition?.window ?? {};
  return durationMs(window.tumbling ?? window.every ?? window.precision) ?? 60_000;
}
