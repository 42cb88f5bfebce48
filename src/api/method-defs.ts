// The Node Manager API's methods, as a table: parameters, who may call, help, and what each runs
// (node-api.ts does the work). Methods read the database and change only the node's own records;
// the host is changed by the account supervisors, to which a method hands its work.
import type { MethodDef, Param, XmlRpcType } from './method-types.js';
import { imageMethods } from './image-methods.js';
import { taskMethods } from './task-methods.js';
import { clusterMethods } from './cluster-methods.js';
import { acceptTicket, type NodeApi, type NodeApiDeps } from './node-api.js';
import type { Caller } from './identity.js';

const SLIVER: Param = { name: 'sliver_name', type: 'string' };
const TICKET: Param = { name: 'ticket', type: 'string' };
const READS_ONLY_DATABASE = { readsOnlyDatabase: true } as const;

/** A method whose first argument names the sliver it acts on. */
function onSliver(
  name: string, returns: XmlRpcType, help: string, run: (caller: Caller, sliver: string, args: readonly unknown[]) => unknown,
  more: { params?: readonly Param[]; adopted?: true; readsOnlyDatabase?: true } = {},
): MethodDef {
  return {
    name, params: [SLIVER, ...(more.params ?? [])], returns, access: 'sliver', help,
    ...(more.adopted ? { adopted: true } : {}), ...(more.readsOnlyDatabase ? { readsOnlyDatabase: true } : {}),
    run: ({ caller, args }) => run(caller, args[0] as string, args),
  };
}

/** Every method of the node but the introspection ones (methods.ts adds those). */
export function nodeMethodDefs(api: NodeApi, deps: NodeApiDeps): MethodDef[] {
  const create = onSliver('Create', 'int', 'Creates a delegated sliver (one the authority lists as instantiation "delegated"); returns 1 once queued.',
    (caller, sliver) => api.create(caller, sliver));
  const destroy = onSliver('Destroy', 'int', 'Destroys a delegated sliver (until the next Create), or, for root, an account adopted while no document was in force; returns 1 once queued.',
    (caller, sliver) => api.destroy(caller, sliver), { adopted: true });
  return [
    {
      name: 'GetXIDs', params: [], returns: 'struct', access: 'known', readsOnlyDatabase: true,
      help: 'Returns {sliver name: uid} for the slivers the caller may act on (every sliver, for root).',
      run: ({ caller }) => api.xids(caller),
    },
    {
      name: 'GetSSHKeys', params: [], returns: 'struct', access: 'known', readsOnlyDatabase: true,
      help: 'Returns {sliver name: authorized_keys text} for the slivers the caller may act on.',
      run: ({ caller }) => api.sshKeys(caller),
    },
    create,
    destroy,
    onSliver('Start', 'int', 'Starts a sliver stopped with Stop (login enabled, initscript run); returns 1 once queued.',
      (caller, sliver) => api.setStopped(caller, sliver, false)),
    onSliver('Stop', 'int', 'Stops a sliver: login disabled, every process killed; it stays stopped until Start. Returns 1 once queued.',
      (caller, sliver) => api.setStopped(caller, sliver, true)),
    onSliver('ReCreate', 'int', 'Destroys a sliver and creates it afresh (a new home), then starts it; returns 1 once queued.',
      (caller, sliver) => api.recreate(caller, sliver)),
    onSliver('GetEffectiveRSpec', 'struct', 'Returns the resources the sliver has with loans applied (given and received) and defaults filled in.',
      (_caller, sliver) => api.effectiveRspec(sliver), READS_ONLY_DATABASE),
    onSliver('GetRSpec', 'struct', 'Returns the resources the authority gave the sliver, before loans.',
      (_caller, sliver) => api.record(sliver).rspec, READS_ONLY_DATABASE),
    onSliver('GetLoans', 'array', 'Returns the loans the sliver gives, as [recipient, resource, amount] triples.',
      (_caller, sliver) => api.record(sliver).loans.map((l) => [l.recipient, l.resource, l.amount]), READS_ONLY_DATABASE),
    onSliver('SetLoans', 'int', 'Replaces the loans the sliver gives with [recipient, resource, amount] triples; every loan must fit, or none is set. Limits are re-applied without a restart.',
      (caller, sliver, args) => api.setLoans(caller, sliver, args[1] as unknown[]), { params: [{ name: 'loans', type: 'array' }] }),
    onSliver('GetRecord', 'struct', 'Returns the node\'s record of the sliver.', (_caller, sliver) => api.record(sliver), READS_ONLY_DATABASE),
    onSliver('GetSliverStatus', 'struct', 'Returns the sliver\'s state on the node, its last error, its effective rspec, and the limits in force as read back from the host (cgroup, traffic classes, bytes sent this period, disk).',
      (_caller, sliver) => api.sliverStatus(sliver)),
    {
      name: 'Ticket', params: [TICKET], returns: 'int', access: 'known',
      help: 'Delivers a slice ticket signed by the authority: its sliver record is kept (newer than any held) and applied.',
      run: ({ caller, args }) => acceptTicket(deps, caller, args[0] as string, 'Ticket'),
    },
    {
      name: 'AdminTicket', params: [TICKET], returns: 'int', access: 'root',
      help: 'Delivers a slice ticket as Ticket does, for root only.',
      run: ({ caller, args }) => acceptTicket(deps, caller, args[0] as string, 'AdminTicket'),
    },
    {
      name: 'DumpDatabase', params: [], returns: 'string', access: 'root',
      help: 'Returns the node database as JSON text.',
      run: () => JSON.stringify(deps.store.data, null, 2),
    },
    {
      name: 'DeliverSlices', params: [{ name: 'document', type: 'bytes' }, { name: 'signature', type: 'string' }], returns: 'struct', access: 'push',
      help: 'The authority\'s push: a whole slices.xml (a string, or base64 to keep its bytes exactly: XML reads a string\'s line ends as LF) with a detached signature (base64 RSA-SHA256 over its bytes). Applied as a fetched document is.',
      run: ({ caller, args }) => api.deliverSlices(caller, args[0] as string | Buffer, args[1] as string),
    },
    // The node's image cache (libvirt slivers start from it).
    ...imageMethods(deps.images),
    // On-demand work: XenBEE's tasks and Condor Cloud's instances, owned by their callers.
    ...taskMethods(deps.tasks, deps.images, deps.now),
    // Virtual clusters: pragma_boot's frontend and computes, owned by their callers.
    ...clusterMethods(deps.clusters),
    // The original's names, kept for its clients.
    { ...create, name: 'CreateSliver', help: 'The same as Create.' },
    { ...destroy, name: 'DeleteSliver', help: 'The same as Destroy.' },
  ];
}
