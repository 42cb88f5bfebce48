// A task's output, sent from its spool directory to the Target of its DataStaging: a file: URL of
// this host (written as the CreationFlag says) or an http(s) URL (PUT, as XenBEE's curl upload
// did). A Target with a Compression gets the file compressed first.
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { copyFile, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { httpPut } from '../host/http-put.js';
import { describeFileError } from '../host/file-errors.js';
import { describeError } from '../util/errors.js';
import { transcode } from './compression.js';
import type { CreationFlag, Location } from './xsdl-types.js';
import { describeUri } from './fetch.js';

export interface SendOptions {
  readonly signal: AbortSignal;
  /** An upload that moves nothing for this long is abandoned. */
  readonly timeoutMs: number;
}

/** Sends the file at `path` to `target`; throws an Error naming the target and the reason. */
export async function sendFile(path: string, target: Location, creationFlag: CreationFlag, options: SendOptions): Promise<void> {
  const where = describeUri(target.uri);
  if (target.uri.kind !== 'url') throw new Error(`${where}: a stage-out goes to a URL, not into the image cache`);
  const url = new URL(target.uri.href);
  const packed = target.compression === null ? null : `${path}.${target.compression === 'gzip' ? 'gz' : 'bz2'}`;
  try {
    if (packed !== null) await transcode('pack', target.compression!, path, packed, options.signal);
    const source = packed ?? path;
    if (url.protocol === 'file:') await writeLocal(source, fileURLToPath(url), creationFlag);
    else await upload(url, source, creationFlag, options);
  } catch (error) {
    throw new Error(`${where}: ${describeError(error)}`);
  } finally {
    if (packed !== null) await rm(packed, { force: true });
  }
}

async function writeLocal(source: string, dest: string, creationFlag: CreationFlag): Promise<void> {
  try {
    if (creationFlag === 'append') {
      await pipeline(createReadStream(source), createWriteStream(dest, { flags: 'a' }));
    } else {
      await copyFile(source, dest, creationFlag === 'dontOverwrite' ? constants.COPYFILE_EXCL : 0);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new Error('the file exists and the CreationFlag is dontOverwrite');
    throw new Error(describeFileError(error));
  }
}

async function upload(url: URL, source: string, creationFlag: CreationFlag, options: SendOptions): Promise<void> {
  if (creationFlag === 'append') throw new Error('CreationFlag append is possible only for a file: target');
  // If-None-Match: * asks the server to refuse (412) when something is there already.
  const headers = creationFlag === 'dontOverwrite' ? { 'if-none-match': '*' } : undefined;
  await httpPut(url, source, { signal: options.signal, idleTimeoutMs: options.timeoutMs, headers });
}
