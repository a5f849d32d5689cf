import assert from "node:assert/strict";
import fc from "fast-check";
import { jsonErrorIndex, jsonSyntaxProblem } from "../../src/validate/json_error.ts";

Deno.test("jsonErrorIndex() finds where JSON.parse refuses a text, and nothing where it reads one", () => {
  const pieces = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    '"',
    "a",
    "1",
    "0",
    "-",
    ".",
    "e",
    "+",
    " ",
    "\\",
    "u",
    "t",
    "r",
    "n",
    "\n",
    "\u0001",
    // The rest of the literals, whole and in part (else "false" or "null" would take five or four
    // pieces in a row, and be compared with the engine's reading next to never).
    "f",
    "l",
    "s",
    "true",
    "false",
    "null",
    // The other whitespace, the other short escapes and the hex digits of either case, also
    // after the start of a string's escape.
    "\t",
    "\r",
    "/",
    "b",
    "A",
    "E",
    "F",
    '"\\',
    '"\\u00',
    "1E",
  ];
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...pieces), { maxLength: 16 }), (parts) => {
      const text = parts.join("");
      let message: string | undefined;
      try {
        JSON.parse(text);
      } catch (error) {
        message = (error as Error).message;
      }
      const index = jsonErrorIndex(text);
      assert.equal(
        index === undefined,
        message === undefined,
        `${JSON.stringify(text)}: ${message}`,
      );
      if (message === undefined) return;
      const context = `${JSON.stringify(text)}: ${message}`;
      const engine = / at position (\d+)/.exec(message);
      // The engine's message says where, or (the cases where jsonSyntaxProblem() takes the
      // scanner's index) names the unexpected character, or says the text ended too soon.
      const token = /^Unexpected token '([^]*?)', /.exec(message);
      // A string it finds unterminated it names by its end.
      if (engine) assert.equal(index, Number(engine[1]), context);
      else if (token) assert.equal(text[index!], token[1], context);
      else if (message === "Unexpected end of JSON input") {
        assert.equal(index, text.length, context);
      } else assert.fail(`an engine message of no known form: ${context}`);
    }),
    { numRuns: 5000 },
  );
  assert.equal(jsonErrorIndex("[".repeat(100_000)), 100_000, "nesting has no limit");
});

Deno.test("jsonSyntaxProblem() does not keep an older engine's reason that names the body's character", () => {
  // Older V8: `Unexpected token s in JSON at position 13`, whose `s` is the body's (of a secret
  // here); letters and spaces only, as a reason that quotes nothing.
  const text = '{"X-Api-Key":s3cr3t}';
  const problem = jsonSyntaxProblem(
    new SyntaxError("Unexpected token s in JSON at position 13"),
    text,
  );
  assert.deepEqual(problem, { reason: "Unexpected character", line: 1, column: 14 });
  // A reason that quotes nothing is kept, with the engine's position.
  assert.deepEqual(
    jsonSyntaxProblem(new SyntaxError("Unexpected string in JSON at position 13"), text),
    { reason: "Unexpected string", line: 1, column: 14 },
  );
});
