/**
 * Hex helpers: the protocol carries binary data as hex without separators,
 * in either case. Decoding is strict because every frame from the network
 * is untrusted.
 */

const DIGITS = "0123456789ABCDEF";

/** Encodes bytes as upper-case hex, the form the reference bridge sends. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    s += DIGITS[b >> 4] + DIGITS[b & 15];
  }
  return s;
}

/**
 * Decodes hex of either case. Returns undefined (never throws) for odd
 * length or a non-hex character, so callers turn it into a protocol error
 * with context.
 */
export function fromHex(s: string): Uint8Array | undefined {
  if (s.length % 2 !== 0) return undefined;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = nibble(s.charCodeAt(2 * i));
    const lo = nibble(s.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) return undefined;
    out[i] = (hi << 4) | lo;
  }
  return out;
}

function nibble(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 65 && c <= 70) return c - 55; // A-F
  if (c >= 97 && c <= 102) return c - 87; // a-f
  return -1;
}

/** Formats a status word as the 4 hex digits used in `expect` lists. */
export function swHex(sw: number): string {
  return toHex(new Uint8Array([sw >> 8, sw & 0xff]));
}
