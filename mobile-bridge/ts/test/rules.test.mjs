// Unit tests of the transceive rules, the server-message decoder and hex.

import { describe, test } from "node:test";
import assert from "node:assert/strict";

import {
  CardTimeoutError,
  MAX_FRAME,
  TagLostError,
  classifyTransceiveError,
  decodeServerMessage,
  fromHex,
  isExpected,
  runBatch,
  swHex,
  toHex,
  utf8Length,
} from "../dist/index.js";

const h = (s) => fromHex(s);
const cmd = (apdu, expect = []) => ({ apdu: h(apdu), expect: expect.map((x) => parseInt(x, 16)) });

/** A card that answers from a table keyed by the command's INS byte. */
function tableCard(answers) {
  const sent = [];
  let inFlight = 0;
  let overlapped = false;
  const fn = async (apdu) => {
    if (inFlight++ > 0) overlapped = true;
    sent.push(toHex(apdu));
    await new Promise((r) => setTimeout(r, 1));
    inFlight--;
    const a = answers[toHex(apdu.subarray(1, 2))];
    if (a instanceof Error) throw a;
    if (typeof a === "function") return a();
    return h(a ?? "9100");
  };
  return { fn, sent, overlapped: () => overlapped };
}

describe("isExpected", () => {
  const cases = [
    { name: "default 9000", expect: [], sw: 0x9000, want: true },
    { name: "default 9100", expect: [], sw: 0x9100, want: true },
    { name: "default 91AF stops", expect: [], sw: 0x91af, want: false },
    { name: "default 6700 stops", expect: [], sw: 0x6700, want: false },
    { name: "listed 91AF", expect: [0x91af], sw: 0x91af, want: true },
    { name: "list replaces the default", expect: [0x91af], sw: 0x9100, want: false },
    { name: "several", expect: [0x9100, 0x91af], sw: 0x9100, want: true },
  ];
  for (const c of cases) test(c.name, () => assert.equal(isExpected(c.expect, c.sw), c.want));
});

describe("runBatch", () => {
  const cases = [
    {
      name: "all expected: every command sent",
      cmds: [cmd("905A000003014499"), cmd("90AA000000", ["91AF"]), cmd("90AF000000")],
      answers: { "5A": "9100", AA: "0102030491AF", AF: "AABB9100" },
      rapdus: ["9100", "0102030491AF", "AABB9100"],
    },
    {
      name: "stops after the first unexpected status (default list)",
      cmds: [cmd("905A000003014499"), cmd("90AA000000"), cmd("90AF000000")],
      answers: { "5A": "9100", AA: "0102030491AF" },
      rapdus: ["9100", "0102030491AF"],
    },
    {
      name: "stops at a status outside the expect list",
      cmds: [cmd("900C000000", ["9100"]), cmd("90C7000000")],
      answers: { "0C": "91AE" },
      rapdus: ["91AE"],
    },
    {
      name: "ISO error status stops",
      cmds: [cmd("00A4040000"), cmd("9060000000")],
      answers: { A4: "6A82" },
      rapdus: ["6A82"],
    },
    {
      name: "tag lost mid-batch keeps earlier responses",
      cmds: [cmd("905A000003014499"), cmd("906C000001"), cmd("90C7000000")],
      answers: { "5A": "9100", "6C": new TagLostError() },
      rapdus: ["9100"],
      error: "tag_lost",
      commands: 2,
    },
    {
      name: "tag lost recognised by name (another copy of the class)",
      cmds: [cmd("906C000001")],
      answers: { "6C": Object.assign(new Error("gone"), { name: "TagLostError" }) },
      rapdus: [],
      error: "tag_lost",
    },
    {
      name: "card timeout",
      cmds: [cmd("906C000001")],
      answers: { "6C": new CardTimeoutError() },
      rapdus: [],
      error: "timeout",
    },
    {
      name: "other failure is io",
      cmds: [cmd("905A000003014499"), cmd("906C000001")],
      answers: { "6C": new Error("reader unplugged") },
      rapdus: ["9100"],
      error: "io",
    },
    {
      name: "response without a status word is io",
      cmds: [cmd("906C000001")],
      answers: { "6C": () => new Uint8Array([0x91]) },
      rapdus: [],
      error: "io",
    },
    {
      name: "plain number[] response accepted (react-native-nfc-manager)",
      cmds: [cmd("906C000001"), cmd("906C000001")],
      answers: { "6C": () => [0x01, 0x91, 0x00] },
      rapdus: ["019100", "019100"],
    },
    {
      name: "string response is io",
      cmds: [cmd("906C000001")],
      answers: { "6C": () => "9100" },
      rapdus: [],
      error: "io",
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const card = tableCard(c.answers);
      const out = await runBatch(c.cmds, card.fn, { commandTimeoutMs: 1000 });
      assert.deepEqual(out.rapdus.map(toHex), c.rapdus);
      assert.equal(out.error, c.error);
      assert.equal(out.commands, c.commands ?? (c.error ? c.rapdus.length + 1 : c.rapdus.length));
      assert.equal(card.sent.length, out.commands);
      assert.equal(card.overlapped(), false, "commands must not overlap");
      for (let i = 0; i < card.sent.length; i++) assert.equal(card.sent[i], toHex(c.cmds[i].apdu));
    });
  }

  test("per-command timeout reports timeout and aborts the command", async () => {
    let signal;
    const out = await runBatch([cmd("906C000001"), cmd("906C000001")], (_apdu, ctx) => {
      signal = ctx.signal;
      return new Promise(() => {}); // never answers
    }, { commandTimeoutMs: 20 });
    assert.equal(out.error, "timeout");
    assert.equal(out.commands, 1);
    assert.equal(signal.aborted, true);
  });

  test("classifyError maps library errors", async () => {
    const out = await runBatch([cmd("906C000001")], async () => {
      throw new Error("Tag was lost.");
    }, { commandTimeoutMs: 0, classifyError: (e) => (/lost/i.test(e.message) ? "tag_lost" : undefined) });
    assert.equal(out.error, "tag_lost");
    assert.equal(classifyTransceiveError(new Error("x"), () => undefined), "io");
  });

  test("a function that throws synchronously is io, not an exception", async () => {
    const out = await runBatch([cmd("906C000001")], () => {
      throw new Error("sync");
    }, { commandTimeoutMs: 100 });
    assert.equal(out.error, "io");
  });
});

describe("decodeServerMessage", () => {
  const good = [
    { name: "ready", frame: '{"type":"ready","session_id":"s1","kind":"topup","prompt":"Tap"}', check: (m) => m.sessionId === "s1" && m.prompt === "Tap" },
    {
      name: "transceive with expect",
      frame: '{"type":"transceive","id":3,"capdus":[{"apdu":"905a00000301449900"},{"apdu":"90AA000000","expect":["91af","9100"]}]}',
      check: (m) => m.id === 3 && m.capdus.length === 2 && toHex(m.capdus[0].apdu) === "905A00000301449900" && m.capdus[1].expect.join() === [0x91af, 0x9100].join() && m.capdus[0].expect.length === 0,
    },
    { name: "expect null", frame: '{"type":"transceive","id":1,"capdus":[{"apdu":"90600000","expect":null}]}', check: (m) => m.capdus[0].expect.length === 0 },
    { name: "prompt with progress", frame: '{"type":"prompt","text":"Hold","progress":0.5}', check: (m) => m.text === "Hold" && m.progress === 0.5 },
    { name: "prompt progress clamped", frame: '{"type":"prompt","text":"Hold","progress":7}', check: (m) => m.progress === 1 },
    {
      name: "result top-up",
      frame: '{"type":"result","ok":true,"kind":"topup","session_id":"s","topup_id":"t","status":"applied","amount":500,"currency":"EUR","balance":1500}',
      check: (m) => m.ok && m.topupId === "t" && m.balance === 1500 && m.amount === 500,
    },
    {
      name: "result failed",
      frame: '{"type":"result","ok":false,"kind":"topup","session_id":"s","error":{"code":"card_busy","message":"Busy"}}',
      check: (m) => !m.ok && m.error.code === "card_busy",
    },
    { name: "result failed without error body", frame: '{"type":"result","ok":false,"kind":"topup","session_id":"s"}', check: (m) => m.error.code === "unknown" },
    {
      name: "result balance with records",
      frame: '{"type":"result","ok":true,"kind":"balance","session_id":"s","card_uid":"04AB","balance":5,"records":[{"kind":"topup","timestamp":1,"amount":5,"raw":"00"}]}',
      check: (m) => m.cardUid === "04AB" && m.records[0].amount === 5,
    },
    { name: "unknown fields ignored", frame: '{"type":"prompt","text":"x","future":{"a":[1]}}', check: (m) => m.type === "prompt" },
    { name: "unknown type", frame: '{"type":"telemetry","x":1}', check: (m) => m.type === "unknown" && m.wireType === "telemetry" },
    { name: "frame of exactly 16 KiB", frame: pad('{"type":"prompt","text":"', '"}', MAX_FRAME), check: (m) => m.type === "prompt" },
  ];
  for (const c of good) {
    test(`accepts ${c.name}`, () => {
      const d = decodeServerMessage(c.frame);
      assert.equal(d.ok, true, d.error);
      assert.ok(c.check(d.message), JSON.stringify(d.message));
    });
  }

  const bad = [
    ["bad JSON", '{"type":', /bad JSON/],
    ["array", "[1,2]", /not a JSON object/],
    ["null", "null", /not a JSON object/],
    ["string", '"ready"', /not a JSON object/],
    ["no type", '{"id":1}', /without a type/],
    ["numeric type", '{"type":5}', /without a type/],
    ["ready without session_id", '{"type":"ready","kind":"topup"}', /session_id/],
    ["transceive odd hex", '{"type":"transceive","id":1,"capdus":[{"apdu":"906"}]}', /bad hex/],
    ["transceive non hex", '{"type":"transceive","id":1,"capdus":[{"apdu":"90zz0000"}]}', /bad hex/],
    ["transceive apdu number", '{"type":"transceive","id":1,"capdus":[{"apdu":9060}]}', /hex string/],
    ["transceive short apdu", '{"type":"transceive","id":1,"capdus":[{"apdu":"9060"}]}', /2 bytes/],
    ["transceive long apdu", `{"type":"transceive","id":1,"capdus":[{"apdu":"${"00".repeat(262)}"}]}`, /262 bytes/],
    ["transceive no capdus", '{"type":"transceive","id":1,"capdus":[]}', /0 command APDUs/],
    ["transceive capdus object", '{"type":"transceive","id":1,"capdus":{}}', /must be a list/],
    ["transceive 65 capdus", `{"type":"transceive","id":1,"capdus":[${Array(65).fill('{"apdu":"90600000"}').join(",")}]}`, /65 command APDUs/],
    ["transceive id 0", '{"type":"transceive","id":0,"capdus":[{"apdu":"90600000"}]}', /positive integer/],
    ["transceive id fraction", '{"type":"transceive","id":1.5,"capdus":[{"apdu":"90600000"}]}', /positive integer/],
    ["transceive id string", '{"type":"transceive","id":"1","capdus":[{"apdu":"90600000"}]}', /positive integer/],
    ["transceive expect 3 digits", '{"type":"transceive","id":1,"capdus":[{"apdu":"90600000","expect":["910"]}]}', /4 hex digits/],
    ["transceive expect not hex", '{"type":"transceive","id":1,"capdus":[{"apdu":"90600000","expect":["91XX"]}]}', /4 hex digits/],
    ["transceive expect string", '{"type":"transceive","id":1,"capdus":[{"apdu":"90600000","expect":"9100"}]}', /must be a list/],
    ["transceive capdu not object", '{"type":"transceive","id":1,"capdus":["90600000"]}', /not an object/],
    ["prompt text number", '{"type":"prompt","text":5}', /text must be a string/],
    ["prompt progress string", '{"type":"prompt","text":"x","progress":"half"}', /progress/],
    ["result ok string", '{"type":"result","ok":"yes","kind":"topup","session_id":"s"}', /ok must be/],
    ["result balance string", '{"type":"result","ok":true,"kind":"topup","session_id":"s","balance":"5"}', /balance must be an integer/],
    ["result balance fraction", '{"type":"result","ok":true,"kind":"topup","session_id":"s","balance":1.5}', /balance must be an integer/],
    ["result error string", '{"type":"result","ok":false,"kind":"topup","session_id":"s","error":"boom"}', /error must be an object/],
    ["oversized", pad('{"type":"prompt","text":"', '"}', MAX_FRAME + 1), /exceeds 16384/],
    ["oversized in UTF-8 only", `{"type":"prompt","text":"${"€".repeat(6000)}"}`, /exceeds 16384/],
  ];
  for (const [name, frame, re] of bad) {
    test(`refuses ${name}`, () => {
      const d = decodeServerMessage(frame);
      assert.equal(d.ok, false, JSON.stringify(d.message));
      assert.match(d.error, re);
    });
  }
});

describe("hex and sizes", () => {
  test("round trip and case", () => {
    assert.equal(toHex(new Uint8Array([0, 0x0f, 0xa0, 0xff])), "000FA0FF");
    assert.deepEqual(fromHex("000fA0Ff"), new Uint8Array([0, 0x0f, 0xa0, 0xff]));
    assert.equal(fromHex("0"), undefined);
    assert.equal(fromHex("0g"), undefined);
    assert.equal(fromHex(" 00"), undefined);
    assert.deepEqual(fromHex(""), new Uint8Array());
    assert.equal(swHex(0x91af), "91AF");
  });
  test("utf8Length matches Buffer.byteLength", () => {
    for (const s of ["", "abc", "é", "€", "😀", "a😀b€", "\ud800", "x\udc00y"]) {
      assert.equal(utf8Length(s), Buffer.byteLength(s, "utf8"), JSON.stringify(s));
    }
  });
});

/** A frame of exactly n bytes: head, filler, tail. */
function pad(head, tail, n) {
  return head + "a".repeat(n - head.length - tail.length) + tail;
}
