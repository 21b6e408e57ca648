import type { Metadata, Viewport } from "next";
import Nav from "@/components/Nav";
import { THEME_SCRIPT } from "@/lib/themeScript";
import "./globals.css";

// No metadata title: Next applies it after the page's own effects and would put back
// "Monkey Coder" over the page's title (lib/title.ts). The default is the <title> below.
export const metadata: Metadata = {
  description: "Submit long AI generation jobs and watch them run.",
};

export const viewport: Viewport = {
  width: "device-width",
  initialScale: 1,
};

export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en" suppressHydrationWarning>
      <head>
        <title>Monkey Coder</title>
        <script dangerouslySetInnerHTML={{ __html: THEME_SCRIPT }} />
      </head>
      <body>
        <a className="skip-link" href="#main">
          Skip to content
        </a>
        <Nav />
        <main id="main" tabIndex={-1}>
          {children}
        </main>
      </body>
    </html>
  );
}
