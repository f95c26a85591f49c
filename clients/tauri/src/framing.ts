/**
 * Line framing for the sidecar's stdout and stderr, free of I/O.
 *
 * The shell plugin emits one `data` event per line it reads, newline included, but a line can
 * still reach the webview in several pieces: the plugin's reader stops at `\r` when a read ends
 * between `\r` and `\n` (so `...\r` and `\n` arrive as two events), and `encoding: "raw"` hands
 * over whatever bytes one read returned. The decoder therefore buffers, splits on `\n` only,
 * strips one trailing `\r`, and drops blank lines.
 */

/** The sidecar accepts request lines up to 16 MiB; its answers are far smaller. */
export const DEFAULT_MAX_LINE_CHARS = 16 * 1024 * 1024;

/** What {@link LineDecoder.push} found in a chunk. */
export interface DecodedLines {
  /** Complete lines, without their terminator, blank ones left out. */
  lines: string[];
  /** How many over-long lines were discarded while decoding this chunk. */
  overflowed: number;
}

/**
 * Turns a stream of text chunks into lines.
 *
 * A line longer than `maxLineChars` is discarded (counted in `overflowed`), and decoding
 * resynchronises at the next `\n`.
 */
export class LineDecoder {
  readonly #maxLineChars: number;
  #parts: string[] = [];
  #size = 0;
  #discarding = false;
  #textDecoder: TextDecoder | undefined;

  constructor(maxLineChars: number = DEFAULT_MAX_LINE_CHARS) {
    this.#maxLineChars = maxLineChars;
  }

  /** Feed one chunk (a string, or bytes from `encoding: "raw"`); return the lines it completed. */
  push(chunk: string | Uint8Array | number[]): DecodedLines {
    const text = typeof chunk === "string" ? chunk : this.#decodeBytes(chunk);
    const lines: string[] = [];
    let overflowed = 0;
    let start = 0;
    for (;;) {
      const newline = text.indexOf("\n", start);
      if (newline === -1) {
        overflowed += this.#append(text.slice(start));
        break;
      }
      overflowed += this.#append(text.slice(start, newline));
      if (this.#discarding) {
        this.#discarding = false;
      } else {
        const line = stripCarriageReturn(this.#parts.join(""));
        if (line.trim() !== "") lines.push(line);
      }
      this.#parts = [];
      this.#size = 0;
      start = newline + 1;
    }
    return { lines, overflowed };
  }

  /** Return the unterminated rest (at end of stream) and reset. */
  end(): string[] {
    const rest = this.#discarding ? "" : stripCarriageReturn(this.#parts.join(""));
    this.#parts = [];
    this.#size = 0;
    this.#discarding = false;
    this.#textDecoder = undefined;
    return rest.trim() === "" ? [] : [rest];
  }

  #decodeBytes(bytes: Uint8Array | number[]): string {
    this.#textDecoder ??= new TextDecoder("utf-8");
    const view = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
    return this.#textDecoder.decode(view, { stream: true });
  }

  /** Append to the current line; return 1 when this made the line overflow. */
  #append(piece: string): number {
    if (piece === "" || this.#discarding) return 0;
    this.#size += piece.length;
    if (this.#size > this.#maxLineChars) {
      this.#parts = [];
      this.#size = 0;
      this.#discarding = true;
      return 1;
    }
    this.#parts.push(piece);
    return 0;
  }
}

function stripCarriageReturn(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
