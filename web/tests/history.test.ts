import assert from "node:assert/strict";
import { test } from "node:test";
import { linePath, niceMax } from "../lib/chart";
import { mergeSamples, oldestWait, rollingThroughput, throughputPerMin } from "../lib/history";
import type { QueueSample } from "../lib/types";

const sample = (at: number, depth = 0): QueueSample => ({
  at,
  interval_s: 10,
  queues: [{ queue: "llm", priorities: { interactive: { depth } } }],
});

test("samples merge by time, each once, and the ones older than the hour go", () => {
  const merged = mergeSamples([sample(100), sample(110, 1)], [sample(110, 2), sample(120)], 105_000);
  assert.deepEqual(
    merged.map((s) => [s.at, s.queues[0].priorities?.interactive?.depth]),
    [
      [110, 2],
      [120, 0],
    ],
  );
});

test("throughput is per minute over the sample's own interval", () => {
  assert.equal(throughputPerMin(5, 10), 30);
  assert.equal(throughputPerMin(undefined, 10), null); // an API from before the count
  assert.equal(throughputPerMin(3, 0), null);
  assert.equal(oldestWait({ queue: "q", priorities: { a: { oldest_age_s: 3 }, b: { oldest_age_s: null } } }), 3);
  assert.equal(oldestWait({ queue: "q" }), 0);
});

test("the chart's scale is round and its lines break where a sample is missing", () => {
  assert.deepEqual([0, 1, 3, 7, 12, 51, 100].map(niceMax), [1, 1, 5, 10, 20, 100, 100]);
  const d = linePath([0, 1000, 2000, 3000], [0, 10, null, 10], 0, 3000, 10);
  assert.deepEqual(d.split(" ").map((p) => p[0]), ["M", "L", "M"]);
  assert.match(d, /^M4\.0,136\.0 L201\.3,4\.0 M596\.0,4\.0$/);
});

test("throughput is a rate over the trailing window, not one interval's burst", () => {
  const at = (t: number, finished: number): QueueSample => ({
    at: t,
    interval_s: 10,
    queues: [{ queue: "llm", finished }],
  });
  const samples = [at(10, 0), at(20, 30), at(30, 0), at(40, 0), at(50, 0)];
  // 30 jobs over the samples of the 30 s up to each one (20 s of them at first), then none.
  assert.deepEqual(rollingThroughput(samples, "llm", 30), [0, 90, 60, 60, 0]);
  assert.deepEqual(rollingThroughput(samples, "gpu", 30), [null, null, null, null, null]);
});
