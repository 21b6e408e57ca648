"use client";

import Link from "next/link";
import { usePathname } from "next/navigation";
import { useApiKey } from "@/lib/key";

const LINKS = [
  { href: "/", label: "New job" },
  { href: "/jobs/", label: "Jobs" },
  { href: "/batches/", label: "Batches" },
  { href: "/key/", label: "API key" },
];

export default function Nav() {
  const pathname = usePathname();
  const key = useApiKey();
  const here = (href: string) => pathname === href || pathname === href.replace(/\/$/, "");
  return (
    <header className="site-header">
      <nav aria-label="Main">
        <Link href="/" className="brand">
          Monkey Coder
        </Link>
        <ul>
          {LINKS.map((l) => (
            <li key={l.href}>
              <Link href={l.href} aria-current={here(l.href) ? "page" : undefined}>
                {l.label}
              </Link>
            </li>
          ))}
        </ul>
        <span className="key-state" data-testid="key-state">
          {key === undefined ? "" : key ? `key …${key.slice(-4)}` : "no key"}
        </span>
      </nav>
    </header>
  );
}
