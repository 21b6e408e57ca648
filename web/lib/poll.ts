// Asking the API again every few seconds, stopped when the component goes away.

import { type DependencyList, useEffect } from "react";
import { isAbort } from "./api";

/**
 * Runs `step` now and then every `everyMs` until it returns false, throws an abort, or
 * the component unmounts (its signal is aborted then). Other errors are the step's to
 * handle; one that escapes does not stop the polling.
 */
export function usePoll(step: (signal: AbortSignal) => Promise<boolean | void>, everyMs: number, deps: DependencyList): void {
  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      let again: boolean | void = true;
      try {
        again = await step(controller.signal);
      } catch (err) {
        if (isAbort(err)) return;
      }
      if (again !== false && !controller.signal.aborted) timer = setTimeout(tick, everyMs);
    };
    void tick();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
    // The caller names the deps, as for useEffect.
  }, deps);
}
