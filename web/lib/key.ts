// The API key lives in the browser's localStorage, under one name. Pages read it
// through useApiKey(), which is undefined until the browser has been asked (the
// static export is rendered without a window), then the key or null.

import { useSyncExternalStore } from "react";

const STORAGE_KEY = "monkey.apiKey";
const CHANGE_EVENT = "monkey-api-key-change";

export function readKey(): string | null {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function saveKey(key: string): void {
  window.localStorage.setItem(STORAGE_KEY, key);
  window.dispatchEvent(new Event(CHANGE_EVENT));
}

export function forgetKey(): void {
  window.localStorage.removeItem(STORAGE_KEY);
  window.dispatchEvent(new Event(CHANGE_EVENT));
}

function subscribe(onChange: () => void): () => void {
  // "storage" fires when another tab changes the key; our own event covers this tab.
  window.addEventListener("storage", onChange);
  window.addEventListener(CHANGE_EVENT, onChange);
  return () => {
    window.removeEventListener("storage", onChange);
    window.removeEventListener(CHANGE_EVENT, onChange);
  };
}

export function useApiKey(): string | null | undefined {
  return useSyncExternalStore<string | null | undefined>(subscribe, readKey, () => undefined);
}
