// The SSE reader against a small local HTTP server that plays the API's part:
// drops, Last-Event-ID resumption, the fall back to polling, fatal answers.

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let handler: Handler = (_req, res) => res.end();
let server: Server;
let sse: typeof import("../lib/sse");

before(async () => {
  server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  // API_BASE is read when lib/api loads, so the environment comes first.
  process.env.NEXT_PUBLIC_API_URL = `http://127.0.0.1:${port}`;
  sse = await import("../lib/sse");
});

after(() => server.close());

const event = (id: string, type: string, data: unknown) => `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
const job = (status: string) => ({ id: "job_1", object: "job", kind: "generate", model: "debug/echo", status });

interface Seen {
  events: { id?: string; event: string; data: string }[];
  polled: string[];
  modes: string[];
  fatal: string[];
}

function follow(opts: Partial<Parameters<typeof sse.followJob>[2]> = {}): Promise<Seen> {
  const seen: Seen = { events: [], polled: [], modes: [], fatal: [] };
  return new Promise((resolve) => {
    const stop = sse.followJob(
      "job_1",
      {
        onEvent: (ev) => seen.events.push(ev),
        onPoll: (j) => seen.polled.push(j.status),
        onMode: (m) => {
          seen.modes.push(m);
          if (m === "closed") {
            stop();
            resolve(seen);
          }
        },
        onFatal: (err) => {
          seen.fatal.push(`${err.status} ${err.message}`);
          stop();
          resolve(seen);
        },
      },
      { key: "mk-test", retryMs: 10, pollMs: 10, ...opts },
    );
  });
}

describe("SseParser", () => {
  test("parses fields across chunk boundaries, CRLF, comments and multi-line data", () => {
    const p = new sse.SseParser();
    const text = 'retry: 500\r\n\r\n: keep-alive\r\nid: 1-0\r\nevent: token\r\ndata: {"text":"a"}\r\n\r\ndata: x\ndata: y\n\n';
    const events = [];
    for (let i = 0; i < text.length; i += 3) events.push(...p.feed(text.slice(i, i + 3)));
    assert.deepEqual(events, [
      { event: "token", data: '{"text":"a"}', id: "1-0" },
      { event: "message", data: "x\ny", id: undefined },
    ]);
    assert.equal(p.retry, 500);
  });
});

describe("followJob", () => {
  test("reconnects with Last-Event-ID after a drop and repeats nothing", async () => {
    const seenIds: (string | undefined)[] = [];
    handler = (req, res) => {
      assert.equal(req.headers.authorization, "Bearer mk-test");
      const last = req.headers["last-event-id"] as string | undefined;
      seenIds.push(last);
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      if (!last) {
        res.end(event("1-0", "token", { text: "a", index: 0 }) + event("1-1", "token", { text: "b", index: 1 }));
      } else {
        // A server that replays one event too many: the reader must skip it.
        res.end(event("1-1", "token", { text: "b", index: 1 }) + event("1-2", "done", job("succeeded")));
      }
    };
    const seen = await follow();
    assert.deepEqual(seenIds, [undefined, "1-1"]);
    assert.deepEqual(seen.events.map((e) => e.id), ["1-0", "1-1", "1-2"]);
    assert.ok(seen.modes.includes("reconnecting"));
    assert.equal(seen.modes.at(-1), "closed");
  });

  test("polls the job when the stream keeps failing", async () => {
    let streams = 0;
    let polls = 0;
    handler = (req, res) => {
      if (req.url?.endsWith("/events")) {
        streams += 1;
        res.writeHead(500, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ error: { type: "internal", message: "boom" } }));
        return;
      }
      polls += 1;
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify(job(polls < 3 ? "running" : "succeeded")));
    };
    const seen = await follow({ maxFailures: 3 });
    assert.equal(streams, 3);
    assert.deepEqual(seen.polled, ["running", "running", "succeeded"]);
    assert.ok(seen.modes.includes("polling"));
    assert.equal(seen.modes.at(-1), "closed");
  });

  test("stops at once on 401 with the server's message", async () => {
    handler = (_req, res) => {
      res.writeHead(401, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: { type: "unauthorized", message: "invalid API key" } }));
    };
    const seen = await follow();
    assert.deepEqual(seen.fatal, ["401 invalid API key"]);
  });
});
