// Each page names itself in the tab: "Job job_… (running) · Monkey Coder".

import { useEffect } from "react";

export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · Monkey Coder` : "Monkey Coder";
  }, [title]);
}
