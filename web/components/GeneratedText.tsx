"use client";

// A job's generated text, rendered as markdown while it streams (lib/markdown.ts keeps
// it safe), with a copy button per code block, copy and download of the whole text, a
// raw-text view, and the window following the end of the stream until the reader
// scrolls away from it.

import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { copyText, downloadText } from "@/lib/clipboard";

type Markdown = typeof import("@/lib/markdown");

// The renderer (markdown-it and highlight.js, about 70 KB gzipped) loads after the page:
// until it is there, the text shows raw.
function useMarkdown(): Markdown | null {
  const [md, setMd] = useState<Markdown | null>(null);
  useEffect(() => {
    let live = true;
    import("@/lib/markdown").then((m) => live && setMd(m)).catch(() => undefined);
    return () => {
      live = false;
    };
  }, []);
  return md;
}

// The end of the output counts as in view when it is this close to the window's bottom.
const SLACK_PX = 48;

function useFollow(ref: React.RefObject<HTMLElement | null>, active: boolean, content: string) {
  const [following, setFollowing] = useState(true);
  // Where our own last scroll left the window: a scroll event there is ours, not the reader's.
  const autoY = useRef<number | null>(null);

  const toEnd = useCallback(() => {
    const el = ref.current;
    if (!el) return;
    const below = el.getBoundingClientRect().bottom - window.innerHeight + 16;
    if (below <= 0) return;
    // Instant, not smooth: a smooth scroll's first steps would read as scrolling away.
    window.scrollBy({ top: below, behavior: "instant" as ScrollBehavior });
    autoY.current = window.scrollY;
  }, [ref]);

  // Growing text moves the end without a scroll event; only the reader's scrolling
  // decides: away from the end stops following, back to it follows again.
  useEffect(() => {
    if (!active) return;
    const onScroll = () => {
      if (autoY.current !== null && Math.abs(window.scrollY - autoY.current) < 2) return;
      autoY.current = null;
      const el = ref.current;
      setFollowing(!el || el.getBoundingClientRect().bottom <= window.innerHeight + SLACK_PX);
    };
    window.addEventListener("scroll", onScroll, { passive: true });
    return () => window.removeEventListener("scroll", onScroll);
  }, [active, ref]);

  useEffect(() => {
    if (active && following) toEnd();
  }, [active, following, content, toEnd]);

  const resume = useCallback(() => {
    setFollowing(true);
    toEnd();
  }, [toEnd]);
  return { following, resume };
}

interface Props {
  text: string;
  streaming: boolean;
  over: boolean;
  jobId: string;
}

export default function GeneratedText({ text, streaming, over, jobId }: Props) {
  const [raw, setRaw] = useState(false);
  const [said, setSaid] = useState("");
  const boxRef = useRef<HTMLDivElement>(null);
  const md = useMarkdown();
  const showRaw = raw || md === null;
  const html = useMemo(() => (showRaw || !md ? "" : md.renderMarkdown(text)), [showRaw, md, text]);
  const { following, resume } = useFollow(boxRef, streaming, text);

  useEffect(() => {
    if (!said) return;
    const t = setTimeout(() => setSaid(""), 2500);
    return () => clearTimeout(t);
  }, [said]);

  async function copy(what: string, label: string) {
    try {
      await copyText(what);
      setSaid(`${label} copied to the clipboard.`);
    } catch (err) {
      setSaid(`Could not copy: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  // One listener for every code block's button: the HTML is rebuilt on each token.
  function onClick(e: React.MouseEvent) {
    const button = (e.target as Element).closest("[data-copy-code]");
    if (!button) return;
    const code = md?.codeOfButton(button) ?? null;
    if (code !== null) void copy(code, "Code");
  }

  return (
    <div className="generated">
      <div className="output-tools">
        <button type="button" className="secondary small-button" onClick={() => copy(text, "Output")} disabled={!text}>
          Copy output
        </button>
        <button
          type="button"
          className="secondary small-button"
          onClick={() => downloadText(text, `${jobId}.md`, "text/markdown")}
          disabled={!text}
        >
          Download .md
        </button>
        <div className="field inline">
          <input id="raw-text" type="checkbox" checked={raw} onChange={(e) => setRaw(e.target.checked)} />
          <label htmlFor="raw-text">Raw text</label>
        </div>
        <span role="status" className="muted small" data-testid="copy-status">
          {said}
        </span>
      </div>
      <div ref={boxRef} aria-busy={streaming}>
        {showRaw ? (
          <pre className="output raw" data-testid="job-output" aria-label="Generated text">
            {text}
          </pre>
        ) : (
          <div
            className={`output markdown${streaming ? " streaming" : ""}`}
            data-testid="job-output"
            aria-label="Generated text"
            role="region"
            onClick={onClick}
            dangerouslySetInnerHTML={{ __html: html }}
          />
        )}
        {!text ? (
          <p className="muted">{over ? "(no text)" : "Waiting for the first token…"}</p>
        ) : null}
      </div>
      {streaming && !following ? (
        <button type="button" className="follow-button" onClick={resume} data-testid="follow-output">
          Follow the output ↓
        </button>
      ) : null}
    </div>
  );
}
