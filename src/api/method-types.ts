// What an API method is: its parameters (XML-RPC types), who may call it, its help and what it
// runs. Type-only, shared by the method tables and the dispatcher.
import type { Caller } from './identity.js';

/**
 * A parameter's type. 'bytes' is a string or a base64: where the exact bytes matter (a signed
 * document), since XML reads a string's line ends as \n and base64 keeps them.
 */
export type XmlRpcType = 'string' | 'bytes' | 'int' | 'array' | 'struct' | 'boolean';

export interface Param {
  readonly name: string;
  readonly type: XmlRpcType;
  /** May be left out, as may every parameter after it. */
  readonly optional?: boolean;
}

/**
 * Who may call:
 * - anyone: every caller: every local user, and the certificate subjects allowed_users lists;
 * - user: root, every local user but nobody, slivers, delegates and allowed certificate subjects:
 *   the on-demand methods (tasks, instances) and the image cache's listing;
 * - known: root, and the node's slivers and delegates;
 * - sliver: the first argument names a sliver; root, that sliver itself, or a delegate named as
 *   one of its controllers;
 * - root: root only;
 * - push: root, or the authority's own delegate account.
 * Every level but anyone and user refuses a certificate caller: slices are for local and ssh callers.
 */
export type Access = 'anyone' | 'user' | 'known' | 'sliver' | 'root' | 'push';

export interface MethodDef {
  readonly name: string;
  readonly params: readonly Param[];
  readonly returns: XmlRpcType;
  readonly access: Access;
  readonly help: string;
  /** The sliver_name may also name an account adopted while no document was in force. */
  readonly adopted?: true;
  /**
   * The answer depends on nothing but the node's database, the arguments and the caller (no host
   * read, no change): it may be given again from api/answer-cache.ts until the database changes.
   */
  readonly readsOnlyDatabase?: true;
  run(call: { caller: Caller; args: readonly unknown[] }): Promise<unknown> | unknown;
}
