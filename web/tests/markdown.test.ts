// Model output rendered as markdown: safe (no raw HTML, no script links, no images),
// code highlighted by language with a copy button.

import assert from "node:assert/strict";
import { test } from "node:test";
import { renderMarkdown } from "../lib/markdown";

test("raw HTML in the output is escaped, never passed through", () => {
  const html = renderMarkdown('hi <img src=x onerror="alert(1)"> <script>alert(2)</script>');
  assert.ok(!/<img|<script/i.test(html), html);
  assert.ok(html.includes("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"), html);
});

test("javascript: and data: links stay text; http links open safely in a new tab", () => {
  const html = renderMarkdown("[a](javascript:alert(1)) [b](data:text/html,x) [c](https://example.com)");
  assert.ok(!/href="(javascript|data):/i.test(html), html);
  assert.match(html, /<a href="https:\/\/example.com" rel="noopener noreferrer nofollow" target="_blank">c<\/a>/);
});

test("images are not loaded", () => {
  assert.ok(!renderMarkdown("![x](https://example.com/track.png)").includes("<img"));
});

test("fenced code is highlighted by its language, with a copy button", () => {
  const html = renderMarkdown("```python\ndef add(a, b):\n    return a + b\n```\n");
  assert.match(html, /<span class="hljs-keyword">def<\/span>/);
  assert.match(html, /<code class="hljs language-python">/);
  assert.match(html, /<button type="button" class="secondary copy-code" data-copy-code aria-label="Copy this Python code">Copy<\/button>/);
});

test("an unknown or missing language is escaped plain text; an unclosed fence still renders", () => {
  const html = renderMarkdown("```nosuchlang\n<b>x</b>\n```\n");
  assert.ok(html.includes("&lt;b&gt;x&lt;/b&gt;") && !html.includes("<b>"), html);
  const streaming = renderMarkdown("text\n\n```js\nconst a = 1;\n");
  assert.match(streaming, /<span class="hljs-keyword">const<\/span>/);
});

test("a fence's info string cannot inject attributes", () => {
  const html = renderMarkdown('```"><script>x</script>\ncode\n```\n');
  assert.ok(!html.includes("<script>"), html);
});

test("headings start at h3, under the page's Output heading", () => {
  assert.equal(renderMarkdown("# A\n\n##### B\n"), "<h3>A</h3>\n<h6>B</h6>\n");
});
