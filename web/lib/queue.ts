// A queued job's wait, estimated from how fast its place on the queue moves.

/** Jobs ahead per second, from the first and latest samples; null until it moved. */
export function aheadRate(first: { at: number; ahead: number } | null, ahead: number, now: number): number | null {
  if (!first || ahead >= first.ahead || now <= first.at) return null;
  return (first.ahead - ahead) / ((now - first.at) / 1000);
}
