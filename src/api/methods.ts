// The Node Manager API's dispatcher: a call's method looked up, its arguments counted and typed,
// its caller authorised, then run (method-defs.ts is the table; node-api.ts does the work).
import { isKnown, isUser, mayActOn } from './authorization.js';
import { ApiFault, FaultCode, invalidArgument } from './faults.js';
import { describeCaller, type Caller } from './identity.js';
import { nodeMethodDefs } from './method-defs.js';
import type { MethodDef, Param, XmlRpcType } from './method-types.js';
import { nodeApi, type NodeApiDeps } from './node-api.js';
import { logLimiter } from '../util/log-limiter.js';

/** A subject refused again within this long is counted, not logged again. */
const REFUSAL_LOG_WINDOW_MS = 10 * 60_000;

export interface ApiMethods {
  /** Runs one call as the caller: its result, or an ApiFault. */
  call(caller: Caller, method: string, params: readonly unknown[]): Promise<unknown>;
  readonly names: readonly string[];
  /** Whether the method's answer depends on nothing but the database, its arguments and the caller. */
  readsOnlyDatabase(method: string): boolean;
}

const TYPE_NAMES: Record<XmlRpcType, string> = { string: 'a string', bytes: 'a string or base64', int: 'an integer', array: 'an array', struct: 'a struct', boolean: 'a boolean' };

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
    : param.type === 'bytes' ? typeof value === 'string' || Buffer.isBuffer(value)
    : param.type === 'int' ? Number.isInteger(value)
    : param.type === 'boolean' ? typeof value === 'boolean'
    : param.type === 'array' ? Array.isArray(value)
    : value !== null && typeof value === 'object' && !Array.isArray(value) && !Buffer.isBuffer(value) && !(value instanceof Date);
  if (!ok) throw invalidArgument(position, param.name, `expected ${TYPE_NAMES[param.type]}, got ${typeOf(value)}`);
}

/** How many parameters a call must give at least. */
const required = (def: MethodDef) => def.params.filter((p) => !p.optional).length;

export function createApiMethods(deps: NodeApiDeps): ApiMethods {
  const api = nodeApi(deps);
  const table = new Map<string, MethodDef>();
  const define = (def: MethodDef) => table.set(def.name, def);
  const name = (args: readonly unknown[]) => args[0] as string;

  define({
    name: 'Help', params: [], returns: 'string', access: 'anyone', readsOnlyDatabase: true,
    help: 'Returns the list of methods with their arguments and descriptions.',
    run: () => [...table.values()].map((m) => `${m.name}(${m.params.map((p) => (p.optional ? `[${p.name}]` : p.name)).join(', ')}): ${m.help}`).join('\n\n') + '\n',
  });
  for (const def of nodeMethodDefs(api, deps)) define(def);

  define({
    name: 'system.listMethods', params: [], returns: 'array', access: 'anyone', readsOnlyDatabase: true,
    help: 'Returns the names of every method.',
    run: () => [...table.keys()].sort(),
  });
  define({
    name: 'system.methodHelp', params: [{ name: 'method', type: 'string' }], returns: 'string', access: 'anyone', readsOnlyDatabase: true,
    help: 'Returns the description of a method.',
    run: ({ args }) => known(args[0] as string).help,
  });
  define({
    name: 'system.methodSignature', params: [{ name: 'method', type: 'string' }], returns: 'array', access: 'anyone', readsOnlyDatabase: true,
    help: 'Returns the method\'s signatures: [[return type, argument types...]].',
    run: ({ args }) => {
      const m = known(args[0] as string);
      // One signature per number of arguments the method takes, and per form of a 'bytes' one.
      const least = required(m);
      return Array.from({ length: m.params.length - least + 1 }, (_, k) => m.params.slice(0, least + k))
        .flatMap((params) => params.reduce<string[][]>(
          (signatures, p) => signatures.flatMap((s) => (p.type === 'bytes' ? [[...s, 'string'], [...s, 'base64']] : [[...s, p.type]])),
          [[m.returns]],
        ));
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
      case 'user':
        if (!isUser(caller)) throw denied();
        return;
      case 'known':
        if (!isKnown(caller)) throw denied();
        return;
      case 'root':
        if (caller.kind !== 'root') throw denied();
        return;
      case 'push':
        if (caller.kind !== 'root' && !(caller.kind === 'delegate' && caller.name === deps.authorityDelegate)) throw denied();
        return;
      case 'sliver': {
        // Before the name is looked up: a caller that may act on no sliver learns nothing of which exist.
        if (!isKnown(caller)) throw denied();
        const target = api.sliverRecord(name(args));
        // The method checks who may destroy an adopted account (root alone).
        if (!target && def.adopted && api.adoptedRecord(name(args))) return;
        if (!target) throw invalidArgument(1, 'sliver_name', `no sliver named ${JSON.stringify(name(args))} on this node`);
        if (!mayActOn(caller, target)) throw denied();
        return;
      }
    }
  };

  // A refused client may well retry in a loop: the subject is named once per window, with the count.
  const refusals = logLimiter({ windowMs: REFUSAL_LOG_WINDOW_MS, now: () => deps.now().getTime() });
  const notAllowed = (subject: string, method: string): ApiFault => {
    const admitted = refusals.admit(subject);
    if (admitted.log) {
      deps.logger.warn('api certificate refused: subject not in allowed users', {
        subject, method: method.slice(0, 64), refused_since_last: admitted.repeats, file: deps.allowedUsers?.path ?? 'none',
      });
    }
    return new ApiFault(FaultCode.permissionDenied, `certificate ${subject}: Permission denied: the subject is not listed in the node's allowed users.`, true);
  };

  return {
    names: [...table.keys()],
    readsOnlyDatabase: (method) => table.get(method)?.readsOnlyDatabase === true,
    async call(caller, method, params) {
      // Checked at every call, before anything else: a subject added to allowed_users or taken out
      // of it counts from the next call on, even on a connection that is open already.
      if (caller.kind === 'certificate' && !(await deps.allowedUsers?.allows(caller.subject))) throw notAllowed(caller.subject, method);
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
