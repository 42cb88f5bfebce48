// The Node Manager API's methods: what each takes, who may call it, and what it does. Methods
// read the database and change only the node's own records; the host is changed by the account
// supervisors, to which a method hands its work before it returns.
import { ApiFault, FaultCode, invalidArgument } from './faults.js';
import { describeCaller, type Caller } from './identity.js';
import { imageMethods } from './image-methods.js';
import { acceptTicket, nodeApi, type NodeApiDeps } from './node-api.js';

type XmlRpcType = 'string' | 'int' | 'array' | 'struct' | 'boolean';

interface Param {
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
type Access = 'anyone' | 'known' | 'sliver' | 'root' | 'push';

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

export interface ApiMethods {
  /** Runs one call as the caller: its result, or an ApiFault. */
  call(caller: Caller, method: string, params: readonly unknown[]): Promise<unknown>;
  readonly names: readonly string[];
}

const TYPE_NAMES: Record<XmlRpcType, string> = { string: 'a string', int: 'an integer', array: 'an array', struct: 'a struct', boolean: 'a boolean' };

function typeOf(value: unknown): string {
  if (value === null) return 'nil';
  if (Array.isArray(value)) return 'an array';
  if (Buffer.isBuffer(value)) return 'base64';
  if (value instanceof Date) return 'a dateTime';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a double';
  if (typeof value === 'object') return 'a struct';
  return `a ${typeof value}`;
}

function checkType(value: unknown, param: Param, position: number): void {
  const ok =
    param.type === 'string' ? typeof value === 'string'
    : param.type === 'int' ? Number.isInteger(value)
    : param.type === 'boolean' ? typeof value === 'boolean'
    : param.type === 'array' ? Array.isArray(value)
    : value !== null && typeof value === 'object' && !Array.isArray(value) && !Buffer.isBuffer(value) && !(value instanceof Date);
  if (!ok) throw invalidArgument(position, param.name, `expected ${TYPE_NAMES[param.type]}, got ${typeOf(value)}`);
}

const SLIVER: Param = { name: 'sliver_name', type: 'string' };
/** How many parameters a call must give at least. */
const required = (def: MethodDef) => def.params.filter((p) => !p.optional).length;

export function createApiMethods(deps: NodeApiDeps): ApiMethods {
  const api = nodeApi(deps);
  const table = new Map<string, MethodDef>();
  const define = (def: MethodDef) => table.set(def.name, def);
  const name = (args: readonly unknown[]) => args[0] as string;

  define({
    name: 'Help', params: [], returns: 'string', access: 'anyone',
    help: 'Returns the list of methods with their arguments and descriptions.',
    run: () => [...table.values()].map((m) => `${m.name}(${m.params.map((p) => (p.optional ? `[${p.name}]` : p.name)).join(', ')}): ${m.help}`).join('\n\n') + '\n',
  });
  define({
    name: 'GetXIDs', params: [], returns: 'struct', access: 'known',
    help: 'Returns {sliver name: uid} for the slivers the caller may act on (every sliver, for root).',
    run: ({ caller }) => api.xids(caller),
  });
  define({
    name: 'GetSSHKeys', params: [], returns: 'struct', access: 'known',
    help: 'Returns {sliver name: authorized_keys text} for the slivers the caller may act on.',
    run: ({ caller }) => api.sshKeys(caller),
  });
  define({
    name: 'Create', params: [SLIVER], returns: 'int', access: 'sliver',
    help: 'Creates a delegated sliver (one the authority lists as instantiation "delegated"); returns 1 once queued.',
    run: ({ caller, args }) => api.create(caller, name(args)),
  });
  define({
    name: 'Destroy', params: [SLIVER], returns: 'int', access: 'sliver', adopted: true,
    help: 'Destroys a delegated sliver (until the next Create), or, for root, an account adopted while no document was in force; returns 1 once queued.',
    run: ({ caller, args }) => api.destroy(caller, name(args)),
  });
  define({
    name: 'Start', params: [SLIVER], returns: 'int', access: 'sliver',
    help: 'Starts a sliver stopped with Stop (login enabled, initscript run); returns 1 once queued.',
    run: ({ caller, args }) => api.setStopped(caller, name(args), false),
  });
  define({
    name: 'Stop', params: [SLIVER], returns: 'int', access: 'sliver',
    help: 'Stops a sliver: login disabled, every process killed; it stays stopped until Start. Returns 1 once queued.',
    run: ({ caller, args }) => api.setStopped(caller, name(args), true),
  });
  define({
    name: 'ReCreate', params: [SLIVER], returns: 'int', access: 'sliver',
    help: 'Destroys a sliver and creates it afresh (a new home), then starts it; returns 1 once queued.',
    run: ({ caller, args }) => api.recreate(caller, name(args)),
  });
  define({
    name: 'GetEffectiveRSpec', params: [SLIVER], returns: 'struct', access: 'sliver',
    help: 'Returns the resources the sliver has with loans applied (given and received) and defaults filled in.',
    run: ({ args }) => api.effectiveRspec(name(args)),
  });
  define({
    name: 'GetRSpec', params: [SLIVER], returns: 'struct', access: 'sliver',
    help: 'Returns the resources the authority gave the sliver, before loans.',
    run: ({ args }) => api.record(name(args)).rspec,
  });
  define({
    name: 'GetLoans', params: [SLIVER], returns: 'array', access: 'sliver',
    help: 'Returns the loans the sliver gives, as [recipient, resource, amount] triples.',
    run: ({ args }) => api.record(name(args)).loans.map((l) => [l.recipient, l.resource, l.amount]),
  });
  define({
    name: 'SetLoans', params: [SLIVER, { name: 'loans', type: 'array' }], returns: 'int', access: 'sliver',
    help: 'Replaces the loans the sliver gives with [recipient, resource, amount] triples; every loan must fit, or none is set. Limits are re-applied without a restart.',
    run: ({ caller, args }) => api.setLoans(caller, name(args), args[1] as unknown[]),
  });
  define({
    name: 'GetRecord', params: [SLIVER], returns: 'struct', access: 'sliver',
    help: 'Returns the node\'s record of the sliver.',
    run: ({ args }) => api.record(name(args)),
  });
  define({
    name: 'GetSliverStatus', params: [SLIVER], returns: 'struct', access: 'sliver',
    help: 'Returns the sliver\'s state on the node, its last error, its effective rspec, and the limits in force as read back from the host (cgroup, traffic classes, bytes sent this period, disk).',
    run: ({ args }) => api.sliverStatus(name(args)),
  });
  define({
    name: 'Ticket', params: [{ name: 'ticket', type: 'string' }], returns: 'int', access: 'known',
    help: 'Delivers a slice ticket signed by the authority: its sliver record is kept (newer than any held) and applied.',
    run: ({ caller, args }) => acceptTicket(deps, caller, args[0] as string, 'Ticket'),
  });
  define({
    name: 'AdminTicket', params: [{ name: 'ticket', type: 'string' }], returns: 'int', access: 'root',
    help: 'Delivers a slice ticket as Ticket does, for root only.',
    run: ({ caller, args }) => acceptTicket(deps, caller, args[0] as string, 'AdminTicket'),
  });
  define({
    name: 'DumpDatabase', params: [], returns: 'string', access: 'root',
    help: 'Returns the node database as JSON text.',
    run: () => JSON.stringify(deps.store.data, null, 2),
  });
  define({
    name: 'DeliverSlices', params: [{ name: 'document', type: 'string' }, { name: 'signature', type: 'string' }], returns: 'struct', access: 'push',
    help: 'The authority\'s push: a whole slices.xml with a detached signature (base64 RSA-SHA256 over its bytes). Applied as a fetched document is.',
    run: ({ caller, args }) => api.deliverSlices(caller, args[0] as string, args[1] as string),
  });
  // The node's image cache (libvirt slivers start from it).
  for (const def of imageMethods(deps.images)) define(def);
  // The original's names, kept for its clients.
  define({ ...table.get('Create')!, name: 'CreateSliver', help: 'The same as Create.' });
  define({ ...table.get('Destroy')!, name: 'DeleteSliver', help: 'The same as Destroy.' });

  define({
    name: 'system.listMethods', params: [], returns: 'array', access: 'anyone',
    help: 'Returns the names of every method.',
    run: () => [...table.keys()].sort(),
  });
  define({
    name: 'system.methodHelp', params: [{ name: 'method', type: 'string' }], returns: 'string', access: 'anyone',
    help: 'Returns the description of a method.',
    run: ({ args }) => known(args[0] as string).help,
  });
  define({
    name: 'system.methodSignature', params: [{ name: 'method', type: 'string' }], returns: 'array', access: 'anyone',
    help: 'Returns the method\'s signatures: [[return type, argument types...]].',
    run: ({ args }) => {
      const m = known(args[0] as string);
      // One signature per number of arguments the method takes.
      const least = required(m);
      return Array.from({ length: m.params.length - least + 1 }, (_, k) => [m.returns, ...m.params.slice(0, least + k).map((p) => p.type)]);
    },
  });

  function known(method: string): MethodDef {
    const m = table.get(method);
    if (!m) throw invalidArgument(1, 'method', `no method named ${JSON.stringify(method)}`);
    return m;
  }

  const authorize = (def: MethodDef, caller: Caller, args: readonly unknown[]): void => {
    const denied = () => new ApiFault(FaultCode.permissionDenied, `${describeCaller(caller)}: Permission denied for ${def.name}.`);
    switch (def.access) {
      case 'anyone':
        return;
      case 'known':
        if (caller.kind === 'nobody') throw denied();
        return;
      case 'root':
        if (caller.kind !== 'root') throw denied();
        return;
      case 'push':
        if (caller.kind !== 'root' && !(caller.kind === 'delegate' && caller.name === deps.authorityDelegate)) throw denied();
        return;
      case 'sliver': {
        if (caller.kind === 'nobody') throw denied();
        const target = api.sliverRecord(name(args));
        // The method checks who may destroy an adopted account (root alone).
        if (!target && def.adopted && api.adoptedRecord(name(args))) return;
        if (!target) throw invalidArgument(1, 'sliver_name', `no sliver named ${JSON.stringify(name(args))} on this node`);
        if (caller.kind === 'root') return;
        if (caller.kind === 'sliver' && caller.name === target.name) return;
        if (caller.kind === 'delegate' && caller.name !== null && target.controllers.includes(caller.name)) return;
        throw denied();
      }
    }
  };

  return {
    names: [...table.keys()],
    async call(caller, method, params) {
      const def = table.get(method);
      if (!def) throw new ApiFault(FaultCode.unknownMethod, `Invalid API method ${JSON.stringify(method)}; Help lists the methods.`);
      const least = required(def);
      if (params.length < least || params.length > def.params.length) {
        const expecting = least === def.params.length ? `${least}` : `${least} to ${def.params.length}`;
        throw new ApiFault(FaultCode.argumentCount, `Invalid argument count for ${def.name}: got ${params.length}, expecting ${expecting}.`);
      }
      params.forEach((value, i) => checkType(value, def.params[i]!, i + 1));
      authorize(def, caller, params);
      return def.run({ caller, args: params });
    },
  };
}
