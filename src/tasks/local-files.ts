// Who may name the node's own files in a task or an instance. The daemon fetches and sends their
// files as root: a file: URL given by any other owner would let it read any file of the host into
// its guest (a stage-in, a kernel, a disk image the image cache takes in) and write any file with
// what its guest made (a stage-out), /etc/shadow and /root/.ssh included. So file: URLs are root's
// only; other owners give http(s) URLs or image-cache entries, which root adds (AddImage is root's).
import type { Location, XsdlJob } from './xsdl-types.js';

/** The owner name of root's tasks (api/identity.ts ownerOf). */
const ROOT_OWNER = 'root';

const FILE_URL = /^file:/i;

/** Every file: URL of a job (boot files, stage-in sources, stage-out targets), in document order. Pure. */
export function localFileUrls(job: XsdlJob): string[] {
  const { kernel, initrd, image } = job.instance;
  const locations: (Location | null)[] = [kernel, initrd, image, ...job.stageIn.map((f) => f.source), ...job.stageOut.map((f) => f.target)];
  return locations.flatMap((location) => (location?.uri.kind === 'url' && FILE_URL.test(location.uri.href) ? [location.uri.href] : []));
}

/**
 * Why `owner` may not have the node fetch or send `references` (URLs, or image-cache names, which
 * are not files): the file: URLs among them named; null when it may (root, or none of them). Pure.
 */
export function localFilesRefusal(owner: string, references: readonly (string | null)[]): string | null {
  if (owner === ROOT_OWNER) return null;
  const urls = references.filter((ref): ref is string => ref !== null && FILE_URL.test(ref.trim()));
  if (urls.length === 0) return null;
  return `file: URLs name the node's own files, which only root may have the node read or write (it does so as root): ` +
    `${urls.map((url) => JSON.stringify(url)).join(', ')}; give an http: or https: URL or an image-cache entry instead`;
}
