"use client";

// Renders its children with the stored API key, or asks for one.

import Link from "next/link";
import { useApiKey } from "@/lib/key";

export default function RequireKey({ children }: { children: (key: string) => React.ReactNode }) {
  const key = useApiKey();
  if (key === undefined) return <p aria-busy="true">Loading…</p>;
  if (!key) {
    return (
      <div className="notice" role="status">
        This page needs an API key. <Link href="/key/">Enter your API key</Link> first.
      </div>
    );
  }
  return <>{children(key)}</>;
}
