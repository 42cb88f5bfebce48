// Who may act on what. One rule for the methods' access checks and for what a caller is shown
// (GetXIDs, GetSSHKeys): slices are for local callers (root, their slivers, their delegates); what
// a caller starts on demand (tasks, instances) is its owner's and root's.
import { ownerOf, type Caller } from './identity.js';

/** The kernel's overflow uid: the nobody account, and what a user it cannot map shows as. */
export const NOBODY_UID = 65534;

/** Root, a sliver or a delegate of this node: the callers a slice method may serve. */
export function isKnown(caller: Caller): boolean {
  return caller.kind === 'root' || caller.kind === 'sliver' || caller.kind === 'delegate';
}

/**
 * A user of the node's on-demand work and its image cache: every local user but nobody (and a
 * peer whose user was not found), and a certificate caller (allowed_users is checked before any
 * method is).
 */
export function isUser(caller: Caller): boolean {
  return caller.kind === 'certificate' || (caller.uid >= 0 && caller.uid !== NOBODY_UID);
}

/** Root, the sliver itself, or a delegate its slice names as a controller. */
export function mayActOn(caller: Caller, sliver: { readonly name: string; readonly controllers: readonly string[] }): boolean {
  return caller.kind === 'root' || (caller.kind === 'sliver' && caller.name === sliver.name) ||
    (caller.kind === 'delegate' && caller.name !== null && sliver.controllers.includes(caller.name));
}

/** Whether the caller may see, terminate or remove what `owner` (an ownerOf value) owns: root, or the owner. */
export function mayManage(caller: Caller, owner: string): boolean {
  return caller.kind === 'root' || ownerOf(caller) === owner;
}
