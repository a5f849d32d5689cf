/**
 * Patterns written by users (JSON Schema `pattern` and `patternProperties`, CEL `matches()`)
 * matched in time linear in the text: by RE2's algorithm (`re2js`), never by backtracking. A
 * backtracking engine (V8's) takes exponential time on some pattern and text pairs
 * (`^([a-z]+\.?)+@x$` against forty letters and a `!` holds the event loop for seconds, and
 * every request with it): any client who may send an event could stall the process.
 *
 * RE2 syntax is what CEL specifies for `matches()`. It has no lookaround and no backreferences:
 * a pattern with them is refused when it is compiled. `.` and classes match whole code points.
 *
 * @module
 */
import { RE2JS } from "re2js";

/** A pattern RE2 cannot compile (bad syntax, lookaround, backreferences). */
export class PatternError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PatternError";
  }
}

/** What a compiled pattern offers: whether it matches somewhere in a text. */
export interface LinearPattern {
  /** Whether the pattern matches anywhere in `text` (unanchored, as `RegExp.test`). */
  test(text: string): boolean;
}

/**
 * `pattern` with the JavaScript escapes RE2 writes otherwise: `\uXXXX` (a surrogate pair as one
 * code point) as `\x{XXXX}`, and `[^]` (any character) as `[\s\S]`. Escaped backslashes and
 * character classes are skipped over, so only real escapes change.
 */
export function toRe2Syntax(pattern: string): string {
  let out = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i];
    if (char === "\\") {
      const unit = /^u([0-9a-fA-F]{4})/.exec(pattern.slice(i + 1, i + 6));
      if (!unit) {
        out += pattern.slice(i, i + 2);
        i += 1;
        continue;
      }
      let code = parseInt(unit[1], 16);
      const low = /^\\u([dD][c-fC-F][0-9a-fA-F]{2})/.exec(pattern.slice(i + 6, i + 12));
      if (code >= 0xd800 && code <= 0xdbff && low) {
        code = 0x10000 + ((code - 0xd800) << 10) + (parseInt(low[1], 16) - 0xdc00);
        i += 6;
      }
      out += `\\x{${code.toString(16)}}`;
      i += 5;
    } else if (!inClass && pattern.startsWith("[^]", i)) {
      out += "[\\s\\S]";
      i += 2;
    } else {
      if (char === "[") inClass = true;
      else if (char === "]") inClass = false;
      out += char;
    }
  }
  return out;
}

/** Patterns compiled while {@linkcode withPatternCache} runs, by source. */
let patternCache: Map<string, LinearPattern> | undefined;

/**
 * Runs `build` (synchronous) with each pattern {@linkcode compileLinearPattern} compiles kept and
 * given again for the same source, then forgets them: a schema's pattern is compiled by the
 * check of the schema, by zod and by Ajv, once between them. What is kept is bounded by what
 * `build` compiles.
 */
export function withPatternCache<T>(build: () => T): T {
  if (patternCache !== undefined) return build();
  patternCache = new Map();
  try {
    return build();
  } finally {
    patternCache = undefined;
  }
}

/** Compiles `pattern` for linear-time matching; throws {@linkcode PatternError}. */
export function compileLinearPattern(pattern: string): LinearPattern {
  const cached = patternCache?.get(pattern);
  if (cached !== undefined) return cached;
  try {
    const compiled = RE2JS.compile(toRe2Syntax(pattern));
    patternCache?.set(pattern, compiled);
    return compiled;
  } catch (error) {
    throw new PatternError(
      `Pattern ${JSON.stringify(pattern)} is not supported: ${
        (error as Error).message
      } (patterns use RE2 syntax, matched in linear time: no lookaround or backreferences)`,
      { cause: error },
    );
  }
}

const OriginalRegExp = RegExp;

/**
 * A `RegExp` whose `test` runs the same pattern by RE2 (see the module doc). Made only by
 * {@linkcode withLinearRegExp} for libraries that build their own `RegExp` from a user's
 * pattern and call `test` on it.
 */
class LinearRegExp extends OriginalRegExp {
  #linear: LinearPattern;

  constructor(pattern: string | RegExp, flags?: string) {
    const source = typeof pattern === "string" ? pattern : pattern.source;
    super(source, flags);
    // With flags it is the library's own (zod's emoji format, with `u`): users' come without.
    this.#linear = flags ? { test: (text) => super.test(text) } : compileLinearPattern(source);
  }

  // A literal made while the swap lasts is still a RegExp.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof OriginalRegExp;
  }

  // Only `test`: what zod calls on a pattern (its `exec`, `match` and the rest stay V8's).
  override test(text: string): boolean {
    return this.#linear.test(String(text));
  }
}

/** Ajv's `code.regExp`: its `pattern` and `patternProperties` compiled for linear time. */
export const linearRegExpEngine: ((pattern: string, flags: string) => LinearPattern) & {
  code: string;
} = Object.assign((pattern: string) => compileLinearPattern(pattern), {
  code: "compileLinearPattern",
});

/**
 * Runs `build` (synchronous) with `new RegExp(…)` making patterns that {@linkcode LinearRegExp}
 * tests, then restores `RegExp`: for a library that compiles user patterns itself (zod's
 * `z.fromJSONSchema`). Regular expression literals are not affected. A pattern RE2 cannot
 * compile throws {@linkcode PatternError} from `build`.
 */
export function withLinearRegExp<T>(build: () => T): T {
  globalThis.RegExp = LinearRegExp as unknown as RegExpConstructor;
  try {
    return build();
  } finally {
    globalThis.RegExp = OriginalRegExp;
  }
}
