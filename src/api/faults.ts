// The faults the API answers with. The method-level codes are the original node manager's; the
// request-level ones are the codes XML-RPC servers commonly use for requests that never got as
// far as a method.
export const FaultCode = {
  /** No such method. */
  unknownMethod: 100,
  /** The method was called with too few or too many arguments. */
  argumentCount: 101,
  /** An argument is of the wrong type or names nothing usable; the message says which. */
  invalidArgument: 102,
  /** No task, reservation or instance of that ticket or id on the node. */
  unknownTask: 103,
  /** The task's state does not allow what was asked (confirming a running task, removing one not done). */
  taskState: 104,
  /** The task or instances do not fit in the node's capacity budget; the message gives the numbers. */
  noCapacity: 105,
  /** The caller may not do this. */
  permissionDenied: 108,
  /** The request is not well-formed XML, or is larger than the limit. */
  notWellFormed: -32700,
  /** The request declares an encoding other than UTF-8. */
  unsupportedEncoding: -32701,
  /** Well-formed XML that is not an XML-RPC method call. */
  invalidRequest: -32600,
  /** The node failed to do what was asked; the message says why. */
  internal: -32603,
} as const;

export class ApiFault extends Error {
  constructor(
    readonly code: number,
    message: string,
    /**
     * Already logged where it was raised (with its own limit on repeats): the transport's line
     * for every fault is then a debug one, so a client in a loop cannot flood the log through it.
     */
    readonly logged = false,
  ) {
    super(message);
    this.name = 'ApiFault';
  }
}

export function invalidArgument(position: number, what: string, problem: string): ApiFault {
  return new ApiFault(FaultCode.invalidArgument, `Invalid argument ${position} (${what}): ${problem}`);
}
