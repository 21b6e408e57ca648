import assert from "node:assert/strict";
import { test } from "node:test";
import { aheadRate } from "../lib/queue";

test("the pace is jobs ahead cleared per second, and unknown until the place moved", () => {
  assert.equal(aheadRate(null, 5, 1000), null);
  assert.equal(aheadRate({ at: 0, ahead: 5 }, 5, 4000), null);
  assert.equal(aheadRate({ at: 0, ahead: 5 }, 6, 4000), null); // more ahead (interactive jobs arrived)
  assert.equal(aheadRate({ at: 0, ahead: 5 }, 1, 2000), 2);
});
