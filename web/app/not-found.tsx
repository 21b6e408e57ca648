import Link from "next/link";
import SetTitle from "@/components/SetTitle";

export default function NotFound() {
  return (
    <section aria-labelledby="not-found-title">
      <SetTitle text="Page not found" />
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
