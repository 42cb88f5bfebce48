// The cache's entries as a table for people (nodemgr image ls, nodemgr status).
import { formatBytes } from '../util/text.js';
import type { ImageEntry } from './index.js';

const COLUMNS = ['NAME', 'TYPE', 'FORMAT', 'SIZE', 'LAST USED', 'URI', 'DESCRIPTION'] as const;

/** One line per entry, by name; the description last since it is free text. */
export function formatImageTable(entries: readonly ImageEntry[]): string {
  if (entries.length === 0) return 'no cached images';
  const rows: string[][] = [
    [...COLUMNS],
    ...[...entries]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((e) => [e.name, e.type, e.format, formatBytes(e.bytes), e.lastUsed.replace(/\.\d+Z$/, 'Z'), e.uri, e.description || '-']),
  ];
  const widths = COLUMNS.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  '));
  const total = entries.reduce((sum, e) => sum + e.bytes, 0);
  return `${lines.join('\n')}\n${entries.length} ${entries.length === 1 ? 'entry' : 'entries'}, ${formatBytes(total)}`;
}
