// Scalar values of a job: whole numbers (sizes, counts, seconds), booleans, and JSDL's range
// values, which ask for a set of acceptable amounts where the node needs exactly one.
import { quoted } from '../util/text.js';
import { checkAttributes, readChildren, trimmedText, type ChildSpec, type Reading } from './xsdl-elements.js';
import { refuse, type XmlElement } from './xsdl-tree.js';

/**
 * The element's text as a whole number >= 0 of `unit`. JSDL types these as xsd:double, but a
 * fraction of a byte, a CPU or a second means nothing here, and "2.5E8" is refused rather than
 * rounded.
 */
export function readWhole(element: XmlElement, unit: string): number {
  const text = trimmedText(element);
  // xsd:double allows a leading "+"; "+5" is still five.
  if (/^\+?\d{1,16}$/.test(text)) {
    const value = Number(text);
    if (Number.isSafeInteger(value)) return value;
  }
  const why = /^\+?\d+$/.test(text) ? 'is too large'
    : /^-\s*\d/.test(text) ? 'is negative'
      : /^[+-]?(\d+\.?\d*|\.\d+)e[+-]?\d+$/i.test(text) ? 'has an exponent; write it out in digits'
        : /^[+-]?(\d+\.?\d*|\.\d+)$/.test(text) ? 'is not a whole number' : 'is not a number';
  return refuse(element, `${quoted(text, 40)} ${why}; a whole number of ${unit} >= 0 is expected`);
}

/** xsd:boolean. */
export function readBoolean(element: XmlElement): boolean {
  checkAttributes(element, []);
  const text = trimmedText(element);
  if (text === 'true' || text === '1') return true;
  if (text === 'false' || text === '0') return false;
  return refuse(element, `${quoted(text, 40)} is not a boolean (true, false, 1 or 0)`);
}

const RANGE_VALUE: ChildSpec = {
  'jsdl:Exact': 'many', 'jsdl:LowerBoundedRange': 'optional', 'jsdl:UpperBoundedRange': 'optional', 'jsdl:Range': 'many',
};

/** One bound: its value moved inwards by one when exclusive (the quantities are whole numbers). */
function readBound(element: XmlElement, unit: string, inward: 1 | -1): number {
  checkAttributes(element, ['exclusiveBound']);
  const value = readWhole(element, unit);
  const exclusive = element.attributes.get('exclusiveBound');
  if (exclusive === undefined || exclusive === 'false' || exclusive === '0') return value;
  if (exclusive === 'true' || exclusive === '1') return value + inward;
  return refuse(element, `exclusiveBound ${quoted(exclusive, 40)} is not a boolean (true, false, 1 or 0)`);
}

/**
 * The one amount a JSDL range value (TotalCPUCount, TotalPhysicalMemory) resolves to, by a rule
 * that gives the same answer for the same document on every node (XenBEE picked among several
 * Exacts at random):
 * 1. the first jsdl:Exact, in document order;
 * 2. else the least lower bound among jsdl:LowerBoundedRange and each jsdl:Range's LowerBound
 *    (the least the job accepts, so that the node's capacity goes furthest);
 * 3. else the jsdl:UpperBoundedRange.
 * An exclusive bound counts as the next whole number inside it. Every value given is checked,
 * also those the rule does not pick. An amount below `min` is refused.
 */
export function readRange(reading: Reading, element: XmlElement, unit: string, min: number): number {
  checkAttributes(element, []);
  const children = readChildren(reading, element, RANGE_VALUE);
  const exacts = children.all('jsdl:Exact').map((exact) => {
    checkAttributes(exact, ['epsilon']);
    return { value: readWhole(exact, unit), at: exact };
  });
  const lowers: { value: number; at: XmlElement }[] = [];
  const lowerRange = children.opt('jsdl:LowerBoundedRange');
  if (lowerRange !== null) lowers.push({ value: readBound(lowerRange, unit, 1), at: lowerRange });
  for (const range of children.all('jsdl:Range')) {
    checkAttributes(range, []);
    const bounds = readChildren(reading, range, { 'jsdl:LowerBound': 'one', 'jsdl:UpperBound': 'one' });
    const lower = readBound(bounds.one('jsdl:LowerBound'), unit, 1);
    const upper = readBound(bounds.one('jsdl:UpperBound'), unit, -1);
    if (lower > upper) refuse(range, `holds no whole number of ${unit} (from ${lower} to ${upper}, bounds included)`);
    lowers.push({ value: lower, at: range });
  }
  const upperRange = children.opt('jsdl:UpperBoundedRange');
  const upper = upperRange === null ? null : { value: readBound(upperRange, unit, -1), at: upperRange };

  const least = lowers.reduce<(typeof lowers)[number] | null>((a, b) => (a === null || b.value < a.value ? b : a), null);
  const chosen = exacts[0] ?? least ?? upper;
  if (chosen === null) {
    refuse(element, 'gives no amount (jsdl:Exact, jsdl:LowerBoundedRange, jsdl:UpperBoundedRange or jsdl:Range)');
  }
  if (chosen.value < min) refuse(chosen.at, `resolves to ${chosen.value} ${unit}; at least ${min} is needed`);
  return chosen.value;
}
