// A few elements as XML text, laid out the way Python's minidom pretty-printed pragma's vc-out.xml:
// an `<?xml version="1.0" ?>` line, two-space indentation, attributes in alphabetical order (Python 2's
// ElementTree sorted them), a text-only element on one line. Images made for pragma parse vc-out.xml
// with their own scripts, so keeping its layout costs nothing and rules out one kind of surprise.
import { escapeXml } from '../runtimes/libvirt/domain-xml.js';

export interface XmlNode {
  readonly name: string;
  readonly attributes: Readonly<Record<string, string | number>>;
  /** Child elements, or the element's text. */
  readonly content: readonly XmlNode[] | string;
}

export function element(name: string, attributes: Record<string, string | number> = {}, content: readonly XmlNode[] | string = []): XmlNode {
  return { name, attributes, content };
}

function renderNode(node: XmlNode, indent: string, path: string): string[] {
  const here = `${path}/${node.name}`;
  const attributes = Object.keys(node.attributes)
    .sort()
    .map((key) => ` ${key}="${escapeXml(String(node.attributes[key]), `${here}@${key}`, true)}"`)
    .join('');
  if (typeof node.content === 'string') return [`${indent}<${node.name}${attributes}>${escapeXml(node.content, here)}</${node.name}>`];
  if (node.content.length === 0) return [`${indent}<${node.name}${attributes}/>`];
  return [
    `${indent}<${node.name}${attributes}>`,
    ...node.content.flatMap((child) => renderNode(child, `${indent}  `, here)),
    `${indent}</${node.name}>`,
  ];
}

/** The document whose root is `root`, ending with a newline. */
export function xmlDocument(root: XmlNode): string {
  return ['<?xml version="1.0" ?>', ...renderNode(root, '', ''), ''].join('\n');
}
