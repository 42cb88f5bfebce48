// XML-RPC on the wire, with the `xmlrpc` package's deserializer and serializer. The request body
// is read whole (bounded) before decoding, so that the limit, the DOCTYPE refusal and a single
// answer per request are ours to guarantee rather than the stream's.
import { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import { ApiFault, FaultCode } from './faults.js';

const require = createRequire(import.meta.url);
// The package is CommonJS without ESM entry points for its parts.
const Deserializer = require('xmlrpc/lib/deserializer') as new () => {
  deserializeMethodCall(stream: Readable, callback: (error: Error | null, method?: string, params?: unknown[]) => void): void;
};
const Serializer = require('xmlrpc/lib/serializer') as {
  serializeMethodResponse(value: unknown): string;
  serializeFault(fault: { faultCode: number; faultString: string }): string;
};

export interface MethodCall {
  readonly method: string;
  readonly params: readonly unknown[];
}

/** Decodes one XML-RPC method call; rejects with a fault that says what is wrong with it. */
export function decodeCall(body: Buffer): Promise<MethodCall> {
  // The deserializer (sax) does not expand entities it does not know, but a DOCTYPE has no
  // business in a method call: refuse it outright rather than reason about what sax does.
  const head = body.toString('latin1');
  if (/<!DOCTYPE|<!ENTITY/i.test(head)) {
    return Promise.reject(new ApiFault(FaultCode.invalidRequest, 'a DOCTYPE or ENTITY declaration is not allowed in a request'));
  }
  return new Promise((resolve, reject) => {
    let answered = false;
    const once = (fn: () => void) => {
      if (answered) return;
      answered = true;
      fn();
    };
    try {
      new Deserializer().deserializeMethodCall(Readable.from([body]), (error, method, params) => {
        if (error) {
          const malformed = /Unexpected|Invalid character|Unclosed|Text data outside|Non-whitespace|unexpected end/i.test(error.message);
          once(() => reject(new ApiFault(malformed ? FaultCode.notWellFormed : FaultCode.invalidRequest, `malformed request: ${error.message.split('\n')[0]}`)));
          return;
        }
        try {
          const clean = (params ?? []).map((p) => plainValue(p, 1));
          once(() => resolve({ method: method!, params: clean }));
        } catch (problem) {
          once(() => reject(problem));
        }
      });
    } catch (error) {
      once(() => reject(new ApiFault(FaultCode.notWellFormed, `malformed request: ${(error as Error).message.split('\n')[0]}`)));
    }
  });
}

/** Deeper than this, a request is refused: no method takes anything nested half as deep. */
const MAX_DEPTH = 32;

/**
 * The decoded value rebuilt from own properties only: the deserializer builds a struct by
 * assignment, so a member named "__proto__" would otherwise become the struct's prototype.
 */
function plainValue(value: unknown, depth: number): unknown {
  if (depth > MAX_DEPTH) throw new ApiFault(FaultCode.invalidRequest, `malformed request: values nested more than ${MAX_DEPTH} deep`);
  if (Array.isArray(value)) return value.map((v) => plainValue(v, depth + 1));
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value) || value instanceof Date) return value;
  return Object.fromEntries(Object.keys(value).map((k) => [k, plainValue((value as Record<string, unknown>)[k], depth + 1)]));
}

/** The response for a value; a value XML cannot carry becomes a fault instead. */
export function encodeResponse(value: unknown): string {
  try {
    return Serializer.serializeMethodResponse(value);
  } catch (error) {
    return encodeFault(FaultCode.internal, `the answer cannot be written as XML-RPC: ${(error as Error).message}`);
  }
}

export function encodeFault(code: number, message: string): string {
  try {
    return Serializer.serializeFault({ faultCode: code, faultString: message });
  } catch {
    // A message with characters XML cannot hold (it may quote the caller's input).
    const printable = message.replace(/[^\x09\x0a\x0d\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]/g, '?');
    return Serializer.serializeFault({ faultCode: code, faultString: printable });
  }
}
