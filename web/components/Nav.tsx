"use client";

import Link from "next/link";
import { usePathname } from "next/navigation";
import { useApiKey } from "@/lib/key";
import { NEXT_THEME, setTheme, useTheme } from "@/lib/theme";

const LINKS = [
  { href: "/", label: "New job" },
  { href: "/jobs/", label: "Jobs" },
  { href: "/batches/", label: "Batches" },
  { href: "/operators/", label: "Queues" },
  { href: "/webhooks/", label: "Webhooks" },
  { href: "/key/", label: "API key" },
];

export default function Nav() {
  const pathname = usePathname();
  const key = useApiKey();
  const theme = useTheme();
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
        {theme ? (
          <button
            type="button"
            className="secondary theme-toggle"
            data-testid="theme-toggle"
            onClick={() => setTheme(NEXT_THEME[theme])}
            title="Light, dark, or as the system says"
          >
            Theme: {theme}
          </button>
        ) : null}
      </nav>
    </header>
  );
}
