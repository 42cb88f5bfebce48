// Who may act on a sliver: root, the sliver itself, or a delegate its slice names as a controller.
// One rule for the methods' access check and for what a caller is shown (GetXIDs, GetSSHKeys).
import type { Caller } from './identity.js';

export function mayActOn(caller: Caller, sliver: { readonly name: string; readonly controllers: readonly string[] }): boolean {
  return caller.kind === 'root' || (caller.kind === 'sliver' && caller.name === sliver.name) ||
    (caller.kind === 'delegate' && caller.name !== null && sliver.controllers.includes(caller.name));
}
