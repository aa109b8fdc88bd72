// The only way the console builds its page: elements and text nodes. Nothing is ever parsed as
// HTML (no innerHTML, no inline styles or handlers), so a name or a text that came from
// WhatsApp is shown as the characters it is, and a strict Content-Security-Policy holds.

export type Child = Node | string | number | bigint | null | undefined | false;

export interface Props {
  /** Space-separated class names. */
  class?: string;
  /** Attributes, set with setAttribute (`data-*`, `type`, `name`, `aria-*` ...). */
  attrs?: Record<string, string | number | boolean | undefined>;
  /** Event handlers, added with addEventListener. */
  on?: Partial<{ [K in keyof HTMLElementEventMap]: (event: HTMLElementEventMap[K]) => void }>;
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (props.class) element.className = props.class;
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    if (value === undefined || value === false) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const [type, handler] of Object.entries(props.on ?? {})) {
    element.addEventListener(type, handler as EventListener);
  }
  append(element, ...children);
  return element;
}

/** Appends children; strings (and numbers) become text nodes. */
export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** Sets an element's text (never markup). */
export function setText(element: Element, text: string): void {
  element.textContent = text;
}
