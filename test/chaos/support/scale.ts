// How hard the reliability campaign pushes. `npm test` (and CI) runs every campaign at a small
// scale; `npm run test:chaos` sets NODEMGR_CHAOS=full and runs them at the scale the README reports.
export const fullScale = process.env['NODEMGR_CHAOS'] === 'full';

/** `ci` at the small scale, `full` under `npm run test:chaos`. */
export function scaled(ci: number, full: number): number {
  return fullScale ? full : ci;
}
