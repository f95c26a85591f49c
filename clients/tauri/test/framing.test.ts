import { describe, expect, it } from "vitest";

import { LineDecoder } from "../src/framing.js";

describe("LineDecoder", () => {
  it("returns one line per Tauri data event that carries its newline", () => {
    // Proves the common case: the plugin's events each end in "\n", which is removed.
    const decoder = new LineDecoder();
    expect(decoder.push('{"id":1}\n').lines).toEqual(['{"id":1}']);
    expect(decoder.push('{"id":2}\n').lines).toEqual(['{"id":2}']);
  });

  it("joins a line split across events, including a \\r\\n split between two events", () => {
    // Proves buffering: "...\r" then "\n" (the plugin stops at "\r") gives one line, "\r" stripped.
    const decoder = new LineDecoder();
    expect(decoder.push('{"a":').lines).toEqual([]);
    expect(decoder.push("1}\r").lines).toEqual([]);
    expect(decoder.push("\n").lines).toEqual(['{"a":1}']);
  });

  it("splits several lines in one chunk and ignores blank ones", () => {
    // Proves a raw chunk holding many lines, CRLF and blank lines, yields only the real lines.
    const decoder = new LineDecoder();
    expect(decoder.push("a\r\n\r\n\nb\n  \nc").lines).toEqual(["a", "b"]);
    expect(decoder.end()).toEqual(["c"]);
  });

  it("decodes raw bytes with a multi-byte character split between chunks", () => {
    // Proves `encoding: "raw"` payloads (number arrays) decode as UTF-8 across chunk boundaries.
    const decoder = new LineDecoder();
    const bytes = Array.from(new TextEncoder().encode('"é"\n'));
    expect(decoder.push(bytes.slice(0, 2)).lines).toEqual([]);
    expect(decoder.push(bytes.slice(2)).lines).toEqual(['"é"']);
  });

  it("drops an over-long line and resynchronises at the next newline", () => {
    // Proves the memory bound: a line past the limit is counted and skipped, the next one kept.
    const decoder = new LineDecoder(8);
    const first = decoder.push("0123456789");
    expect(first).toEqual({ lines: [], overflowed: 1 });
    expect(decoder.push("abc\nok\n")).toEqual({ lines: ["ok"], overflowed: 0 });
  });
});
