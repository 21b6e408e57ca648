"use client";

import { useTitle } from "@/lib/title";

/** useTitle for server components (the 404 page). */
export default function SetTitle({ text }: { text: string }) {
  useTitle(text);
  return null;
}
