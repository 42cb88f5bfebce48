// Getting the authority's document into the database: fetch (or push), parse, validate, apply,
// remember as the last good one. A bad or older document changes nothing.
import { join } from 'node:path';
import { DocumentTooLargeError, fetchDocument, FetchError, redactUrl } from '../authority/fetch.js';
import { loadLastGood, saveLastGood } from '../authority/last-good.js';
import type { Config } from '../config/config.js';
import { applyDocument } from '../db/records.js';
import type { RecordWriter } from '../db/record-writer.js';
import type { DatabaseStore } from '../db/store.js';
import type { SyncOutcome } from '../db/types.js';
import type { Logger } from '../log.js';
import { DocumentError, parseSlicesDocument } from '../slices/parse.js';
import { describeError } from '../util/errors.js';
import type { SyncStatusFile } from './sync-status.js';
import { serialQueue } from '../util/serial.js';

export interface DocumentSyncDeps {
  readonly config: Config;
  readonly store: DatabaseStore;
  readonly records: RecordWriter;
  readonly syncStatus: SyncStatusFile;
  readonly logger: Logger;
  readonly now: () => Date;
}

/** A document's validators, for a conditional GET of the next one. */
type Validators = { etag: string | null; lastModified: string | null };

export interface AcceptResult {
  readonly outcome: SyncOutcome;
  readonly detail: string;
}

export interface DocumentSync {
  /** Fetches from the configured authority and applies; resolves false when the authority failed us. */
  fetchAndApply(): Promise<boolean>;
  /** Applies a document that arrived by other means (the authority's push, the last good copy). */
  accept(body: Buffer, source: string, validators?: { etag: string | null; lastModified: string | null }): Promise<AcceptResult>;
  /** Re-applies the last good document kept on disk, if any; for a database rebuilt from scratch. */
  restoreLastGood(): Promise<AcceptResult | null>;
}

export function lastGoodDir(config: Config): string {
  return join(config.stateDir, 'authority');
}

/** Records a sync's outcome with the timestamp of the document in force after it. */
function recordSync(deps: DocumentSyncDeps, outcome: SyncOutcome, detail: string, from: string): void {
  deps.syncStatus.record({
    at: deps.now().toISOString(),
    outcome,
    detail,
    source: from,
    documentTimestamp: deps.store.data.records['timestamp']?.timestamp ?? null,
  });
}

/**
 * Parses, validates and applies one document (one at a time: the caller queues them). What was
 * accepted is the outcome; its validators, if it came with any, are for the next conditional GET.
 */
async function acceptOne(
  deps: DocumentSyncDeps, body: Buffer, from: string, fetchedValidators?: Validators,
): Promise<AcceptResult & { validators?: Validators }> {
  const { config, store, logger } = deps;
  let doc;
  try {
    doc = parseSlicesDocument(body, { nodeId: config.nodeId, maxBytes: config.documentMaxBytes, source: from });
  } catch (error) {
    if (!(error instanceof DocumentError)) throw error;
    logger.error('document rejected', { source: from, error: error.message });
    recordSync(deps, 'rejected', error.message, from);
    return { outcome: 'rejected', detail: error.message };
  }
  for (const skipped of doc.skipped) {
    logger.warn('document entry skipped', { source: from, what: skipped.what, reason: skipped.reason });
  }
  const nowSeconds = Math.floor(deps.now().getTime() / 1000);
  const outcome = applyDocument(store.data, doc, nowSeconds);
  if (outcome.kind === 'older') {
    const detail = `document timestamp ${outcome.offered} is older than ${outcome.inForce} in force; ignored`;
    logger.warn('document older than the one in force', { source: from, offered: outcome.offered, in_force: outcome.inForce });
    recordSync(deps, 'older', detail, from);
    return { outcome: 'older', detail };
  }
  // Keep the document before the database points at it, so a restart always finds it. One that
  // cannot be kept (a full disk) is not applied: the records in force stay, and it comes again.
  try {
    await saveLastGood(lastGoodDir(config), {
      body,
      etag: fetchedValidators?.etag ?? null,
      lastModified: fetchedValidators?.lastModified ?? null,
      url: from,
      timestamp: doc.timestamp,
    });
  } catch (error) {
    const detail = `the document could not be kept in ${lastGoodDir(config)} (${describeError(error)}); not applied, the records in force stay`;
    logger.error('document not applied', { source: from, error: detail });
    recordSync(deps, 'unwritable', detail, from);
    return { outcome: 'unwritable', detail };
  }
  // Applied again to the records as they are now: what the API changed while the document was
  // being kept (loans, Create, a ticket) is the node's own and stays.
  let applied = outcome;
  deps.records.apply({ kind: 'document', from }, (records) => {
    const again = applyDocument({ ...store.data, records }, doc, nowSeconds);
    if (again.kind === 'older') return records; // only accept applies documents, one at a time
    applied = again;
    return again.database.records;
  });
  const { changes } = applied;
  const changed = changes.added.length + changes.updated.length + changes.removed.length;
  const detail =
    `${doc.slivers.length} slivers, ${doc.delegates.length} delegates for node ${config.nodeId} ` +
    `(of ${doc.slicesSeen} slices); +${changes.added.length} ~${changes.updated.length} -${changes.removed.length}` +
    (doc.skipped.length ? `; ${doc.skipped.length} entries skipped` : '');
  recordSync(deps, changed === 0 ? 'unchanged' : 'applied', detail, from);
  logger.info('document applied', {
    source: from, timestamp: doc.timestamp, added: changes.added.length, updated: changes.updated.length,
    removed: changes.removed.length, kept_newer: changes.keptNewer.length, skipped: doc.skipped.length,
  });
  return { outcome: changed === 0 ? 'unchanged' : 'applied', detail, ...(fetchedValidators ? { validators: fetchedValidators } : {}) };
}


export function createDocumentSync(deps: DocumentSyncDeps): DocumentSync {
  const { config, store, logger } = deps;
  const source = redactUrl(new URL(config.authorityUrl));
  // Validators of the document in force, for conditional GETs; only a document that was
  // accepted may be skipped next time.
  let validators: Validators | null = null;
  let validatorsLoaded = false;

  const loadKept = () =>
    loadLastGood(lastGoodDir(config), (reason) => logger.warn('last good document unusable', { reason }));

  // One document at a time: a push and a fetch never apply over each other.
  const documents = serialQueue();
  const accept: DocumentSync['accept'] = (body, from, fetchedValidators) => documents.run(async () => {
    const { validators: accepted, ...result } = await acceptOne(deps, body, from, fetchedValidators);
    if (accepted) validators = accepted;
    return result;
  });

  return {
    accept,

    async fetchAndApply() {
      if (!validatorsLoaded) {
        validatorsLoaded = true;
        const lastGood = await loadKept();
        const inForce = store.data.records['timestamp']?.timestamp ?? null;
        if (lastGood && lastGood.url === source && lastGood.timestamp === inForce) {
          validators = { etag: lastGood.etag, lastModified: lastGood.lastModified };
        }
      }
      try {
        const result = await fetchDocument({
          url: config.authorityUrl,
          caFile: config.authorityCaFile,
          timeoutMs: config.authorityTimeoutMs,
          maxBytes: config.documentMaxBytes,
          etag: validators?.etag ?? null,
          lastModified: validators?.lastModified ?? null,
        });
        if (result.kind === 'not-modified') {
          recordSync(deps, 'unchanged', 'not modified since the last fetch', source);
          logger.debug('document not modified', { source });
          return true;
        }
        const accepted = await accept(result.body, source, { etag: result.etag, lastModified: result.lastModified });
        // A document that could not be kept is tried again with backoff, as a failed fetch is.
        return accepted.outcome !== 'rejected' && accepted.outcome !== 'unwritable';
      } catch (error) {
        if (!(error instanceof FetchError)) throw error;
        if (error instanceof DocumentTooLargeError) {
          // The authority answered: what it sent is refused, as a malformed document is.
          logger.error('document rejected', { source, error: error.message });
          recordSync(deps, 'rejected', error.message, source);
          return false;
        }
        logger.warn('authority unreachable', { source, error: describeError(error) });
        recordSync(deps, 'unreachable', describeError(error), source);
        return false;
      }
    },

    async restoreLastGood() {
      const lastGood = await loadKept();
      if (!lastGood) return null;
      logger.info('restoring the last good document', { source: lastGood.url, saved_at: lastGood.savedAt });
      return accept(lastGood.body, lastGood.url, { etag: lastGood.etag, lastModified: lastGood.lastModified });
    },
  };
}
