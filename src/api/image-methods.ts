// The image cache's API methods: AddImage and RemoveImage for root, GetImages for every user
// (remote certificate callers included). The cache does the work; these check the arguments and turn its errors into faults.
import type { ImageCache, ImageEntry } from '../images/cache.js';
import { ImageError, isImageType, IMAGE_TYPES } from '../images/index.js';
import { ApiFault, FaultCode, invalidArgument } from './faults.js';
import type { MethodDef } from './method-types.js';

function fault(error: unknown): ApiFault {
  if (error instanceof ApiFault) return error;
  if (error instanceof ImageError) {
    // What the caller can fix (a bad URI, a checksum that does not match, an entry in use) is an
    // invalid argument; a network or disk failure is the node's.
    return new ApiFault(error.kind === 'failed' ? FaultCode.internal : FaultCode.invalidArgument, error.message);
  }
  return new ApiFault(FaultCode.internal, `image cache: ${(error as Error)?.message ?? String(error)}`);
}

/** The entry as the API shows it: every field, as a struct. */
const shown = (e: ImageEntry): Record<string, string | number> => ({ ...e });

export function imageMethods(images: ImageCache | undefined): MethodDef[] {
  const cache = (): ImageCache => {
    if (!images) throw new ApiFault(FaultCode.internal, 'the image cache is not configured on this node');
    return images;
  };
  /** A method body whose cache errors become faults. */
  const guarded = (work: (args: readonly unknown[]) => unknown) => async ({ args }: { args: readonly unknown[] }) => {
    try {
      return await work(args);
    } catch (error) {
      throw fault(error);
    }
  };
  return [
    {
      name: 'AddImage',
      params: [
        { name: 'uri', type: 'string' },
        { name: 'type', type: 'string' },
        { name: 'description', type: 'string' },
        { name: 'sha256', type: 'string', optional: true },
        { name: 'name', type: 'string', optional: true },
      ],
      returns: 'struct',
      access: 'root',
      help: `Fetches an http, https or file URI into the node's image cache and returns its entry; type is one of ${IMAGE_TYPES.join(', ')}. `
        + 'sha256 (64 hex digits, or empty) is checked when given; name defaults to the last part of the URI. A URI cached already returns its entry; '
        + 'least recently used entries that no sliver uses are evicted to make room. Returns once the file is in the cache.',
      run: guarded(async (args) => {
        const [uri, type, description, sha256, name] = args as [string, string, string, string?, string?];
        if (!isImageType(type)) throw invalidArgument(2, 'type', `${JSON.stringify(type)} is not one of ${IMAGE_TYPES.join(', ')}`);
        return shown(await cache().add({ uri, type, description, sha256, name }));
      }),
    },
    {
      name: 'GetImages',
      params: [],
      returns: 'array',
      access: 'user',
      help: "Returns the entries of the node's image cache: name, uri, type, description, sha256, bytes, path, format, added, lastUsed.",
      run: guarded(() => cache().list().map(shown)),
    },
    {
      name: 'RemoveImage',
      params: [{ name: 'ref', type: 'string' }],
      returns: 'struct',
      access: 'root',
      help: 'Removes an entry of the image cache, named by its name or URI, and returns it; refused while a sliver uses it.',
      run: guarded(async (args) => shown(await cache().remove(args[0] as string))),
    },
  ];
}
