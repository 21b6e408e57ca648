// A static export: no server-side features, every page is a file in out/.
// Pages take their parameters from query strings (/job/?id=...), so no dynamic
// segments are needed, and trailingSlash maps /job/ to out/job/index.html.

/** @type {import('next').NextConfig} */
const nextConfig = {
  output: "export",
  trailingSlash: true,
  reactStrictMode: true,
  poweredByHeader: false,
  images: { unoptimized: true },
};

export default nextConfig;
