/** The stream picker's note (static/dashboard/stream_picker.js), which the page shows under the list. */
import assert from "node:assert/strict";
import { pickerNote } from "../../../static/dashboard/stream_picker.js";

Deno.test("pickerNote() writes every count as the page does, with a thousands separator: '6 of 1,001 streams shown' as '995 more match' (it wrote 1001)", () => {
  assert.equal(
    pickerNote({ shown: 6, streams: 1001, more: 995, noOther: false }),
    "6 of 1,001 streams shown. Untick one to choose another. 995 more match: narrow the filter.",
  );
  assert.equal(
    pickerNote({ shown: 6, streams: 12_345, more: 1_234, noOther: false }),
    "6 of 12,345 streams shown. Untick one to choose another. 1,234 more match: narrow the filter.",
  );
});

Deno.test("pickerNote() asks to untick only when the most streams are shown, and says when the filter matches no other", () => {
  assert.equal(
    pickerNote({ shown: 2, streams: 300, more: 0, noOther: true }),
    "2 of 300 streams shown. No other stream matches the filter.",
  );
  assert.equal(
    pickerNote({ shown: 2, streams: 300, more: 0, noOther: false }),
    "2 of 300 streams shown.",
  );
});
