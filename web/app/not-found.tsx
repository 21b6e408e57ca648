import type { Metadata } from "next";
import Link from "next/link";

export const metadata: Metadata = { title: "Page not found · Monkey Coder" };

export default function NotFound() {
  return (
    <section aria-labelledby="not-found-title">
      <h1 id="not-found-title">Page not found</h1>
      <p>There is no page at this address. It may have been mistyped, or the link is old.</p>
      <ul>
        <li>
          <Link href="/">Submit a new job</Link>
        </li>
        <li>
          <Link href="/jobs/">See your jobs</Link>
        </li>
        <li>
          <Link href="/batches/">See your batches</Link>
        </li>
      </ul>
    </section>
  );
}
