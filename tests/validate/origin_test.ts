import assert from "node:assert/strict";
import { webOrigin } from "../../src/validate/origin.ts";

Deno.test("webOrigin() serializes an origin as browsers send it, and refuses what no browser sends", () => {
  assert.equal(webOrigin("https://App.Example.com/"), "https://app.example.com");
  assert.equal(webOrigin("http://localhost:8080"), "http://localhost:8080");
  assert.equal(webOrigin("https://shop.example:443"), "https://shop.example");
  assert.equal(webOrigin("http://[::1]:3000"), "http://[::1]:3000");
  for (
    const text of [
      "https://*.example.com",
      "https://a!b.example",
      "https://user:pw@shop.example",
      "https://user@shop.example",
      "https://shop.example/page",
      "https://shop.example?x",
      "ftp://shop.example",
      "shop.example",
      "",
    ]
  ) {
    assert.equal(webOrigin(text), undefined, text);
  }
});
