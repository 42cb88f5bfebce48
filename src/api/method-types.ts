// What an API method is: its parameters (XML-RPC types), who may call it, its help and what it
// runs. Type-only, shared by the method tables and the dispatcher.
import type { Caller } from './identity.js';

export type XmlRpcType = 'string' | 'int' | 'array' | 'struct' | 'boolean';

export interface Param {
  readonly name: string;
  readonly type: XmlRpcType;
  /** May be left out, as may every parameter after it. */
  readonly optional?: boolean;
}

/**
 * Who may call:
 * - anyone: every local user;
 * - known: root, and the node's slivers and delegates;
 * - sliver: the first argument names a sliver; root, that sliver itself, or a delegate named as
 *   one of its controllers;
 * - root: root only;
 * - push: root, or the authority's own delegate account.
 */
export type Access = 'anyone' | 'known' | 'sliver' | 'root' | 'push';

export interface MethodDef {
  readonly name: string;
  readonly params: readonly Param[];
  readonly returns: XmlRpcType;
  readonly access: Access;
  readonly help: string;
  /** The sliver_name may also name an account adopted while no document was in force. */
  readonly adopted?: true;
  run(call: { caller: Caller; args: readonly unknown[] }): Promise<unknown> | unknown;
}
