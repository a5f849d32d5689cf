/**
 * Where and why a JSON text is not JSON, said without quoting the text
 * ({@linkcode jsonSyntaxProblem}), and the scanner that finds the place again when the engine's
 * message would quote it ({@linkcode jsonErrorIndex}). Read by `http/body.ts` for its 400 replies
 * and by `config/compile.ts` for a config file that is not JSON (the startup line must not quote
 * a file that is no config, `/etc/shadow`).
 *
 * @module
 */

/** What is wrong with a JSON text, and where: {@linkcode jsonSyntaxProblem}. */
export interface JsonSyntaxProblem {
  /** What the parser found or expected, with no text of the body (`Unexpected character`). */
  reason: string;
  /** Line of the text (from 1). */
  line: number;
  /** Column in that line (from 1, in UTF-16 units). */
  column: number;
}

/**
 * A reason of V8's that quotes no text of the body: letters, and punctuation it expected in
 * quotes (`Expected ',' or '}' after property value`). `Unexpected token 's', ..."Key":s3cr3t-val"...
 * is not valid JSON` quotes the body, and so does older engines' `Unexpected token s in JSON at
 * position 14`, whose letter is the body's though the rest of the pattern would take it: hence
 * the lookahead refusing a reason that starts `Unexpected token`.
 */
const QUOTELESS_REASON = /^(?!Unexpected token\b)[A-Za-z -]+(?:'[,:}\]]'[A-Za-z -]*)*$/;

/**
 * Why `JSON.parse` refused `text` (its `error`), without the body's text, which the engine's
 * message may quote (about 10 characters either side of the unexpected one: part of a secret
 * header of a webhook, personal data of an event), and the reply and the request's log line would
 * carry. The engine's reason is kept when it quotes nothing, with its position; otherwise the
 * position is found again ({@linkcode jsonErrorIndex}) and the reason is `Unexpected character`
 * (or `Unexpected end`). Undefined when no position is found.
 */
export function jsonSyntaxProblem(error: unknown, text: string): JsonSyntaxProblem | undefined {
  const message = error instanceof Error ? error.message : "";
  const engine = /(?: in JSON)? at position (\d+)(?: \(line \d+ column \d+\))?$/.exec(message);
  const engineReason = engine === null ? "" : message.slice(0, engine.index);
  let reason: string;
  let index: number | undefined;
  if (engine !== null && QUOTELESS_REASON.test(engineReason)) {
    reason = engineReason;
    index = Number(engine[1]);
  } else {
    index = jsonErrorIndex(text);
    if (index === undefined) return undefined;
    reason = index === text.length ? "Unexpected end" : "Unexpected character";
  }
  const lineStart = text.lastIndexOf("\n", index - 1) + 1;
  let line = 1;
  for (let at = text.indexOf("\n"); at !== -1 && at < lineStart; at = text.indexOf("\n", at + 1)) {
    line++;
  }
  return { reason, line, column: index - lineStart + 1 };
}

// Character codes (UTF-16) that JSON's grammar names.
const TAB = 0x09;
const LINE_FEED = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;
const SLASH = 0x2f;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

// What jsonErrorIndex() expects next. VALUE: a value; ITEM: a value or ']' (after '['); KEY: a
// key or '}' (after '{'); NAME: a key (after ',' in an object); AFTER_KEY: ':'; AFTER_VALUE: ','
// or the close, or the end.
const VALUE = 0;
const ITEM = 1;
const KEY = 2;
const NAME = 3;
const AFTER_KEY = 4;
const AFTER_VALUE = 5;

/**
 * Index (UTF-16) of the first character at which `text` stops being JSON (RFC 8259): its length
 * when it ends too soon, undefined when it is JSON. Iterative, so nesting has no limit; linear,
 * over character codes (`charCodeAt` past the end is `NaN`, which no test below takes).
 */
export function jsonErrorIndex(text: string): number | undefined {
  const length = text.length;
  // The character codes of the open '{' and '[', innermost last.
  const open: number[] = [];
  let state = VALUE;
  let i = 0;
  for (;;) {
    let code = text.charCodeAt(i);
    while (isJsonWhitespace(code)) code = text.charCodeAt(++i);
    if (i >= length) return state === AFTER_VALUE && open.length === 0 ? undefined : length;
    if (state === AFTER_VALUE) {
      if (open.length === 0) return i;
      const inObject = open[open.length - 1] === OPEN_BRACE;
      if (code === COMMA) state = inObject ? NAME : VALUE;
      else if (code === (inObject ? CLOSE_BRACE : CLOSE_BRACKET)) open.pop();
      else return i;
      i++;
      continue;
    }
    if (state === AFTER_KEY) {
      if (code !== COLON) return i;
      state = VALUE;
      i++;
      continue;
    }
    if ((state === ITEM && code === CLOSE_BRACKET) || (state === KEY && code === CLOSE_BRACE)) {
      open.pop();
      state = AFTER_VALUE;
      i++;
      continue;
    }
    if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      if (state === KEY || state === NAME) return i;
      open.push(code);
      state = code === OPEN_BRACE ? KEY : ITEM;
      i++;
      continue;
    }
    let end: number;
    if (code === QUOTE) end = stringEnd(text, i);
    else if (state === KEY || state === NAME) return i;
    else if (code === MINUS || isDigit(code)) end = numberEnd(text, i);
    else end = literalEnd(text, i);
    if (end < 0) return -1 - end;
    state = state === KEY || state === NAME ? AFTER_KEY : AFTER_VALUE;
    i = end;
  }
}

/** Whether `code` is JSON whitespace: space, tab, line feed or carriage return. */
function isJsonWhitespace(code: number): boolean {
  return code === SPACE || code === LINE_FEED || code === CARRIAGE_RETURN || code === TAB;
}

/** Whether `code` is a decimal digit. */
function isDigit(code: number): boolean {
  return code >= ZERO && code <= NINE;
}

/** Whether `code` is a hexadecimal digit (either case). */
function isHexDigit(code: number): boolean {
  return (code >= ZERO && code <= NINE) || (code >= 0x41 && code <= 0x46) ||
    (code >= 0x61 && code <= 0x66);
}

/** Whether `code` may follow a backslash in a string other than as `\u`: `"` `\` `/` b f n r t. */
function isShortEscape(code: number): boolean {
  return code === QUOTE || code === BACKSLASH || code === SLASH || code === 0x62 || code === 0x66 ||
    code === 0x6e || code === 0x72 || code === 0x74;
}

/** The index after the digits from `start` on (`start` when there are none). */
function digitsEnd(text: string, start: number): number {
  let at = start;
  while (isDigit(text.charCodeAt(at))) at++;
  return at;
}

/**
 * The index after the string that starts at `start` (its '"'), or -1 minus the index where it
 * goes wrong (the length when it is not closed).
 */
function stringEnd(text: string, start: number): number {
  const length = text.length;
  for (let at = start + 1; at < length; at++) {
    const code = text.charCodeAt(at);
    if (code === QUOTE) return at + 1;
    if (code < SPACE) return -1 - at;
    if (code !== BACKSLASH) continue;
    at++;
    if (text.charCodeAt(at) === 0x75) { // u
      for (let digit = 1; digit <= 4; digit++) {
        if (!isHexDigit(text.charCodeAt(at + digit))) return -1 - (at + digit);
      }
      at += 4;
    } else if (!isShortEscape(text.charCodeAt(at))) return -1 - at;
  }
  return -1 - length;
}

/** The index after the number that starts at `start`, or -1 minus the index where it goes wrong. */
function numberEnd(text: string, start: number): number {
  let at = start;
  if (text.charCodeAt(at) === MINUS) at++;
  if (text.charCodeAt(at) === ZERO) at++;
  else if (isDigit(text.charCodeAt(at))) at = digitsEnd(text, at);
  else return -1 - at;
  if (text.charCodeAt(at) === DOT) {
    if (!isDigit(text.charCodeAt(++at))) return -1 - at;
    at = digitsEnd(text, at);
  }
  const exponent = text.charCodeAt(at);
  if (exponent === 0x65 || exponent === 0x45) { // e, E
    const sign = text.charCodeAt(++at);
    if (sign === PLUS || sign === MINUS) at++;
    if (!isDigit(text.charCodeAt(at))) return -1 - at;
    at = digitsEnd(text, at);
  }
  return at;
}

/**
 * The index after the `true`, `false` or `null` that starts at `start`, or -1 minus the index of
 * the first character that does not spell one (at most the length: the end does not).
 */
function literalEnd(text: string, start: number): number {
  const first = text.charCodeAt(start);
  const word = first === 0x74 ? "true" : first === 0x66 ? "false" : first === 0x6e ? "null" : "";
  if (word === "") return -1 - start;
  for (let at = 1; at < word.length; at++) {
    if (text.charCodeAt(start + at) !== word.charCodeAt(at)) return -1 - (start + at);
  }
  return start + word.length;
}
