// Light or dark: the system's preference (prefers-color-scheme) unless the reader
// picked one, kept in localStorage and set as <html data-theme> before the first paint
// by THEME_SCRIPT (lib/themeScript.ts, run from app/layout.tsx), so a dark page never
// flashes white.

import { useSyncExternalStore } from "react";
import { THEME_STORAGE_KEY as STORAGE_KEY } from "./themeScript";

export type Theme = "system" | "light" | "dark";
const CHANGE_EVENT = "monkey-theme-change";

function read(): Theme {
  try {
    const t = window.localStorage.getItem(STORAGE_KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

export function setTheme(theme: Theme): void {
  try {
    if (theme === "system") window.localStorage.removeItem(STORAGE_KEY);
    else window.localStorage.setItem(STORAGE_KEY, theme);
  } catch {
    // Not kept, but still applied to this page.
  }
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  window.dispatchEvent(new Event(CHANGE_EVENT));
}

function subscribe(onChange: () => void): () => void {
  window.addEventListener(CHANGE_EVENT, onChange);
  window.addEventListener("storage", onChange);
  return () => {
    window.removeEventListener(CHANGE_EVENT, onChange);
    window.removeEventListener("storage", onChange);
  };
}

export function useTheme(): Theme | undefined {
  return useSyncExternalStore<Theme | undefined>(subscribe, read, () => undefined);
}

export const NEXT_THEME: Record<Theme, Theme> = { system: "light", light: "dark", dark: "system" };
