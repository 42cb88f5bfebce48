// The MAC/IP pool of libvirt slivers, pure: the pool file's text into entries, and leases of those
// entries to slivers, one per interface. The file has XenBEE's `mac-addresses` format:
//
//   # MAC              IP               comment
//   52:54:00:00:00:01  192.0.2.11/24    # web front
//
// A bad line is reported and left out rather than failing the whole pool: the other entries still
// serve, and the operator sees which line to fix.
import { isIP } from 'node:net';
import type { AddressLease } from '../db/types.js';

export interface PoolEntry {
  /** Lower case, colon separated: aa:bb:cc:dd:ee:ff. */
  readonly mac: string;
  /** Canonical text of the address (IPv6 compressed, lower case), without prefix. */
  readonly ip: string;
  /** The /prefix written after the address; null when none was given. */
  readonly prefix: number | null;
  /** Text after `#` on the line, trimmed; '' when none. */
  readonly comment: string;
  /** 1-based line of the file. */
  readonly line: number;
}

export interface ParsedAddressPool {
  readonly entries: PoolEntry[];
  /** One line each: `source:line: reason`. */
  readonly problems: string[];
}

// A lease is a record of the node database, where its type lives.
export type { AddressLease };

/** Leases as people read them: `MAC IP[/prefix]`, comma separated, in interface order. */
export function describeLeases(leases: readonly AddressLease[]): string {
  return leases.map((l) => `${l.mac} ${l.ip}${l.prefix === null ? '' : `/${l.prefix}`}`).join(', ');
}

export type AllocationResult = { ok: true; leases: AddressLease[] } | { ok: false; reason: string };

const MAC_PATTERN = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i;

/** A unicast MAC in canonical form, or the reason it is not one. */
export function parseMac(text: string): { ok: true; mac: string } | { ok: false; reason: string } {
  const m = MAC_PATTERN.exec(text);
  if (!m) return { ok: false, reason: `"${text}" is not a MAC address (six hex pairs separated by ':')` };
  const octets = [m[1], m[3], m[4], m[5], m[6], m[7]] as string[];
  const mac = octets.join(':').toLowerCase();
  // The low bit of the first octet marks group addresses; an interface cannot have one.
  if (parseInt(octets[0]!, 16) & 1) return { ok: false, reason: `MAC ${mac} is a multicast address` };
  if (mac === '00:00:00:00:00:00') return { ok: false, reason: 'MAC 00:00:00:00:00:00 is not a usable address' };
  return { ok: true, mac };
}

/** The canonical text of an IPv4 or IPv6 address, or null when `text` is not one. */
export function canonicalIp(text: string): string | null {
  const family = isIP(text);
  if (family === 4) return text;
  // A zone (fe80::1%eth0) names a link of one host; it has no place in a pool.
  if (family !== 6 || text.includes('%')) return null;
  // The URL parser writes IPv6 in its one canonical form (RFC 5952), so equal addresses compare equal.
  return new URL(`http://[${text}]/`).hostname.slice(1, -1);
}

function parseAddress(text: string): { ok: true; ip: string; prefix: number | null } | { ok: false; reason: string } {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const ip = canonicalIp(address);
  if (ip === null) return { ok: false, reason: `"${address}" is not an IPv4 or IPv6 address` };
  if (slash < 0) return { ok: true, ip, prefix: null };
  const prefixText = text.slice(slash + 1);
  const max = isIP(address) === 4 ? 32 : 128;
  if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return { ok: false, reason: `"/${prefixText}" is not a prefix length for ${address} (0-${max})` };
  }
  return { ok: true, ip, prefix: Number(prefixText) };
}

/** Entries of a pool file in file order; `source` names the file in the problems. */
export function parseAddressPool(text: string, source: string): ParsedAddressPool {
  const entries: PoolEntry[] = [];
  const problems: string[] = [];
  const macLines = new Map<string, number>();
  const ipLines = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = index + 1;
    const problem = (reason: string) => problems.push(`${source}:${line}: ${reason}`);
    const hash = raw.indexOf('#');
    const fields = (hash < 0 ? raw : raw.slice(0, hash)).trim().split(/\s+/).filter((f) => f !== '');
    const comment = hash < 0 ? '' : raw.slice(hash + 1).trim();
    if (fields.length === 0) return;
    if (fields.length !== 2) {
      problem(`expected "MAC IP [# comment]", found ${fields.length} field${fields.length === 1 ? '' : 's'}`);
      return;
    }
    const mac = parseMac(fields[0]!);
    if (!mac.ok) return void problem(mac.reason);
    const address = parseAddress(fields[1]!);
    if (!address.ok) return void problem(address.reason);
    const macLine = macLines.get(mac.mac);
    if (macLine !== undefined) return void problem(`MAC ${mac.mac} is already given on line ${macLine}; this line is ignored`);
    const ipLine = ipLines.get(address.ip);
    if (ipLine !== undefined) return void problem(`IP ${address.ip} is already given on line ${ipLine}; this line is ignored`);
    macLines.set(mac.mac, line);
    ipLines.set(address.ip, line);
    entries.push({ mac: mac.mac, ip: address.ip, prefix: address.prefix, comment, line });
  });
  return { entries, problems };
}

const HOLDERS_SHOWN = 5;

function holderList(slivers: readonly string[]): string {
  const shown = slivers.slice(0, HOLDERS_SHOWN).join(', ');
  const more = slivers.length - HOLDERS_SHOWN;
  return more > 0 ? `${shown} and ${more} other${more === 1 ? '' : 's'}` : shown;
}

/**
 * Leases for interfaces 0..count-1 of `sliver`: the ones it holds already are kept as they are (so
 * asking again changes nothing), the missing ones get the first free entries in file order. An
 * entry is free when neither its MAC nor its IP is leased to anyone. Either every missing
 * interface gets an address or none does. Returns all of the sliver's leases, by interface.
 * `poolName` names the pool in the reason (the file's path).
 */
export function allocateAddresses(
  entries: readonly PoolEntry[],
  leases: readonly AddressLease[],
  sliver: string,
  count: number,
  nowIso: string,
  poolName = 'the address pool',
): AllocationResult {
  if (!Number.isSafeInteger(count) || count < 0) return { ok: false, reason: `interface count must be a non-negative integer, got ${count}` };
  if (sliver === '') return { ok: false, reason: 'sliver name is empty' };
  const own = leases.filter((l) => l.sliver === sliver);
  const held = new Set(own.map((l) => l.iface));
  const missing: number[] = [];
  for (let iface = 0; iface < count; iface++) if (!held.has(iface)) missing.push(iface);
  const byIface = (a: AddressLease, b: AddressLease) => a.iface - b.iface;
  if (missing.length === 0) return { ok: true, leases: [...own].sort(byIface) };

  const takenMacs = new Set(leases.map((l) => l.mac.toLowerCase()));
  const takenIps = new Set(leases.map((l) => canonicalIp(l.ip) ?? l.ip));
  const free = entries.filter((e) => !takenMacs.has(e.mac) && !takenIps.has(e.ip));
  if (free.length < missing.length) {
    if (entries.length === 0) return { ok: false, reason: `address pool ${poolName} has no usable addresses` };
    const holders = [...new Set(leases.filter((l) => l.sliver !== sliver).map((l) => l.sliver))].sort();
    const to = holders.length > 0 ? ` (to ${holderList(holders)})` : '';
    const reason =
      free.length === 0
        ? `address pool exhausted: all ${entries.length} addresses of ${poolName} are leased${to}`
        : `address pool exhausted: ${sliver} needs ${missing.length} more addresses but only ${free.length} of the ${entries.length} in ${poolName} are free; the others are leased${to}`;
    return { ok: false, reason };
  }
  const added = missing.map((iface, i): AddressLease => {
    const e = free[i]!;
    return { mac: e.mac, ip: e.ip, prefix: e.prefix, sliver, iface, since: nowIso };
  });
  return { ok: true, leases: [...own, ...added].sort(byIface) };
}

/** The leases that remain once `sliver` has gone. */
export function releaseAddresses(leases: readonly AddressLease[], sliver: string): AddressLease[] {
  return leases.filter((l) => l.sliver !== sliver);
}

/**
 * Leases whose MAC/IP pair the pool no longer lists (the file was edited). The sliver keeps using
 * them until it goes, since taking an address from a running guest would cut it off; they are
 * reported so the operator knows the file and the guests disagree.
 */
export function staleLeases(entries: readonly PoolEntry[], leases: readonly AddressLease[]): AddressLease[] {
  const pairs = new Set(entries.map((e) => `${e.mac} ${e.ip}`));
  return leases.filter((l) => !pairs.has(`${l.mac.toLowerCase()} ${canonicalIp(l.ip) ?? l.ip}`));
}

/**
 * The leases a guest's interfaces already use (by MAC, in interface order) that the records lost
 * (a database rebuilt): recorded again so that no other guest is given them. A MAC the pool does
 * not list (its IP is unknown) or that is leased to another sliver is reported, not recorded.
 */
export function reclaimAddresses(
  entries: readonly PoolEntry[],
  leases: readonly AddressLease[],
  sliver: string,
  macs: readonly string[],
  nowIso: string,
): { leases: AddressLease[]; problems: string[] } {
  const byMac = new Map(entries.map((e) => [e.mac, e]));
  const leased = new Map(leases.map((l) => [l.mac.toLowerCase(), l]));
  const reclaimed: AddressLease[] = [];
  const problems: string[] = [];
  macs.forEach((raw, iface) => {
    const mac = raw.toLowerCase();
    const holder = leased.get(mac);
    if (holder?.sliver === sliver) return;
    if (holder) {
      problems.push(`${sliver} interface ${iface} uses ${mac}, which is leased to ${holder.sliver}`);
      return;
    }
    const entry = byMac.get(mac);
    if (!entry) {
      problems.push(`${sliver} interface ${iface} uses ${mac}, which the address pool does not list`);
      return;
    }
    reclaimed.push({ mac: entry.mac, ip: entry.ip, prefix: entry.prefix, sliver, iface, since: nowIso });
  });
  return { leases: reclaimed, problems };
}
