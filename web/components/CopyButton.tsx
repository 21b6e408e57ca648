"use client";

// Copies a text to the clipboard; the button says for two seconds whether it did.

import { useState } from "react";
import { copyText } from "@/lib/clipboard";

export default function CopyButton({ text, label, testId }: { text: string; label: string; testId?: string }) {
  const [done, setDone] = useState<string>("");
  return (
    <button
      type="button"
      className="secondary small-button"
      data-testid={testId}
      onClick={async () => {
        try {
          await copyText(text);
          setDone("Copied");
        } catch {
          setDone("Could not copy");
        }
        setTimeout(() => setDone(""), 2000);
      }}
    >
      {done || label}
    </button>
  );
}
