// Batch helpers: the OpenAI-compatible files and batches endpoints, which a server
// may not offer yet (they answer 404 then).

import { ApiError, apiFetch } from "./api";
import { saveBlob } from "./clipboard";

export const BATCHES_UNAVAILABLE = "Batches are not available on this server.";

/**
 * A 404 from a collection endpoint (/v1/files, /v1/batches) means the feature is
 * missing; so does a 405, which is what a POST gets when the API serves this UI at
 * "/" and has no such route (the static files answer it).
 */
export function unavailable(err: unknown): boolean {
  return err instanceof ApiError && (err.status === 404 || err.status === 405);
}

export const BATCH_ENDPOINTS = ["/v1/chat/completions", "/v1/embeddings"] as const;

/** Line numbers (1-based) of non-empty lines that are not JSON objects. */
export function badJsonlLines(text: string): number[] {
  const bad: number[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const v: unknown = JSON.parse(line);
      if (!v || typeof v !== "object" || Array.isArray(v)) bad.push(i + 1);
    } catch {
      bad.push(i + 1);
    }
  });
  return bad;
}

/** Fetches a file's content with the key and hands it to the browser as a download. */
export async function downloadFile(fileId: string, key: string, filename: string): Promise<void> {
  const res = await apiFetch(`/v1/files/${encodeURIComponent(fileId)}/content`, { key });
  saveBlob(await res.blob(), filename);
}
