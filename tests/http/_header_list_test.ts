import assert from "node:assert/strict";
import {
  acceptsEventStream,
  headerListElements,
  upgradeAsksForWebSocket,
} from "../../src/http/_header_list.ts";

Deno.test("headerListElements() leaves out empty elements and the spaces around each (RFC 9110 §5.6.1.2)", () => {
  assert.deepEqual(headerListElements('"2", , "3",'), ['"2"', '"3"']);
  assert.deepEqual(headerListElements(' , W/"1" ,"2"'), ['W/"1"', '"2"']);
  assert.deepEqual(headerListElements(", ,"), []);
  assert.deepEqual(headerListElements(""), []);
  assert.deepEqual(headerListElements(null), []);
  assert.deepEqual(headerListElements(undefined), []);
});

Deno.test("upgradeAsksForWebSocket() finds websocket in any case among the listed protocols", () => {
  for (
    const value of ["websocket", "WebSocket", "websocket, ", ", , WEBSOCKET", "h2c, websocket"]
  ) {
    assert.equal(upgradeAsksForWebSocket(value), true, value);
  }
  for (const value of [null, undefined, "", ",", "h2c", "websocket2", "web socket"]) {
    assert.equal(upgradeAsksForWebSocket(value), false, String(value));
  }
});

Deno.test("acceptsEventStream() finds text/event-stream in any case, not at weight 0 and not as a range", () => {
  for (
    const value of [
      "text/event-stream",
      "TEXT/EVENT-STREAM",
      "Text/Event-Stream; charset=utf-8",
      "text/html, text/event-stream;q=0.5",
      " , text/event-stream ,",
    ]
  ) {
    assert.equal(acceptsEventStream(value), true, value);
  }
  for (
    const value of [
      null,
      undefined,
      "",
      "*/*",
      "text/*",
      "application/json",
      "text/event-stream;q=0",
      "text/event-stream; q=0.000",
      "text/event-streams",
      "application/x-text/event-stream",
    ]
  ) {
    assert.equal(acceptsEventStream(value), false, String(value));
  }
});
