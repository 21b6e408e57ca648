// Model output as HTML: markdown-it with raw HTML off (every `<` in the output is
// escaped), its own link check (no javascript:, vbscript:, file: or data: links),
// images off (a model's output must not make the browser fetch anything), and fenced
// code highlighted by highlight.js, which escapes what it does not mark up. The HTML
// is built from escaped text and our own tags only, so it is safe for innerHTML.

import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import MarkdownIt from "markdown-it";

const LANGUAGES = { bash, c, cpp, css, diff, go, java, javascript, json, python, rust, sql, typescript, xml, yaml };
for (const [name, lang] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, lang);

const md = new MarkdownIt({ html: false, linkify: false, typographer: false });
md.disable("image");

const escape = (s: string) => md.utils.escapeHtml(s);

// Streaming re-renders the whole text on every token; finished blocks come back
// unchanged, so their highlighting is kept rather than redone.
const cache = new Map<string, string>();
const CACHE_SIZE = 64;

function highlight(code: string, info: string): { html: string; label: string } {
  const name = info.trim().split(/\s+/)[0]?.toLowerCase() ?? "";
  const known = name && hljs.getLanguage(name) ? name : "";
  const key = `${known}\u0000${code}`;
  let html = cache.get(key);
  if (html === undefined) {
    html = known ? hljs.highlight(code, { language: known, ignoreIllegals: true }).value : escape(code);
    if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
    cache.set(key, html);
  }
  return { html, label: known ? (hljs.getLanguage(known)?.name ?? known) : name };
}

md.renderer.rules.fence = (tokens, idx) => {
  const token = tokens[idx];
  const { html, label } = highlight(token.content, token.info);
  const cls = label ? ` language-${escape(label.toLowerCase().replace(/[^a-z0-9+#-]/g, ""))}` : "";
  const what = label ? `${label} code` : "code";
  return (
    `<div class="code-block">` +
    `<div class="code-head"><span class="code-lang">${escape(label || "text")}</span>` +
    `<button type="button" class="secondary copy-code" data-copy-code aria-label="Copy this ${escape(what)}">Copy</button></div>` +
    `<pre tabindex="0" aria-label="${escape(what)}"><code class="hljs${cls}">${html}</code></pre></div>\n`
  );
};

// The output sits under the page's "Output" (h2): its headings start at h3.
for (const rule of ["heading_open", "heading_close"] as const) {
  md.renderer.rules[rule] = (tokens, idx, options, _env, self) => {
    const level = Math.min(6, Number(tokens[idx].tag.slice(1)) + 2);
    tokens[idx].tag = `h${level}`;
    return self.renderToken(tokens, idx, options);
  };
}

// Links open in a new tab and tell the target nothing about this page.
const defaultLinkOpen =
  md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet("rel", "noopener noreferrer nofollow");
  tokens[idx].attrSet("target", "_blank");
  return defaultLinkOpen(tokens, idx, options, env, self);
};

export function renderMarkdown(text: string): string {
  return md.render(text);
}

/** The text of the code block a copy button sits in. */
export function codeOfButton(button: Element): string | null {
  return button.closest(".code-block")?.querySelector("pre code")?.textContent ?? null;
}
