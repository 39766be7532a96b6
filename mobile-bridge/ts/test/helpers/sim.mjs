// Test environment: builds relayd and simserve, runs relayd in dev mode on
// a loopback port, and drives simulated cards through simserve's line
// protocol.

import { spawn, execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { TagLostError, fromHex, toHex } from "../../dist/index.js";

const run = promisify(execFile);

/** Repository root: mobile-bridge/ts/test/helpers → four levels up. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

/**
 * Builds relayd and simserve into dir with `go build`, unless RELAYD_BIN /
 * SIMSERVE_BIN name prebuilt binaries.
 */
export async function buildBinaries(dir) {
  const out = { relayd: process.env.RELAYD_BIN, simserve: process.env.SIMSERVE_BIN };
  const jobs = [];
  for (const [name, pkg] of [
    ["relayd", "./server/cmd/relayd"],
    ["simserve", "./mobile-bridge/cmd/simserve"],
  ]) {
    if (out[name]) continue;
    out[name] = path.join(dir, name);
    jobs.push(run("go", ["build", "-o", out[name], pkg], { cwd: repoRoot, maxBuffer: 16 << 20 }));
  }
  await Promise.all(jobs);
  return out;
}

/** A running relayd in dev mode with one operator API key. */
export class Relay {
  static async start(bin, dataDir) {
    const apiKey = "test_" + randomBytes(16).toString("hex");
    const hash = createHash("sha256").update(apiKey).digest("hex");
    const args = ["-mode", "dev", "-addr", "127.0.0.1:0", "-data-dir", dataDir, "-api-key-hashes", hash, "-log-level", "info"];
    const proc = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
    const r = new Relay(proc, apiKey, dataDir);
    r.addr = await new Promise((resolve, reject) => {
      const lines = createInterface({ input: proc.stderr });
      r.log = [];
      lines.on("line", (line) => {
        r.log.push(line);
        if (r.log.length > 500) r.log.shift();
        try {
          const e = JSON.parse(line);
          if (e.msg === "relayd listening") resolve(e.addr);
        } catch {
          // not a log entry
        }
      });
      proc.on("exit", (code) => reject(new Error(`relayd exited ${code}:\n${r.log.join("\n")}`)));
      proc.on("error", reject);
    });
    r.base = `http://${r.addr}`;
    r.bridgeURL = `ws://${r.addr}/v1/bridge`;
    r.keys = path.join(dataDir, "dev-keys.json");
    for (;;) {
      const res = await fetch(`${r.base}/readyz`).catch(() => undefined);
      if (res?.ok) break;
      await new Promise((s) => setTimeout(s, 50));
    }
    return r;
  }

  constructor(proc, apiKey, dataDir) {
    this.proc = proc;
    this.apiKey = apiKey;
    this.dataDir = dataDir;
  }

  /** Calls the operator API; returns {status, body}. */
  async api(method, p, body, headers = {}) {
    const res = await fetch(this.base + p, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, "Content-Type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  }

  /** Creates a top-up and returns the API's answer (with bridge_token). */
  async createTopUp(amount, cardUID) {
    const r = await this.api("POST", "/v1/topups", { amount, currency: "EUR", card_uid: cardUID }, { "Idempotency-Key": randomBytes(8).toString("hex") });
    if (r.status !== 201) throw new Error(`create top-up: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async stop() {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once("exit", resolve));
    this.proc.kill("SIGTERM");
    await exited;
  }
}

/** One simulated card behind a simserve process. */
export class SimCard {
  static async start(bin, { keys, uid, initial = 0, profile = "an12113-ev2" }) {
    const proc = spawn(bin, ["-keys", keys, "-uid", uid, "-initial", String(initial), "-profile", profile], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const c = new SimCard(proc);
    const ready = await c.next();
    if (!ready.startsWith("ready ")) throw new Error(`simserve: ${ready} ${c.stderr}`);
    c.uidHex = ready.slice(6);
    c.uid = fromHex(c.uidHex);
    return c;
  }

  constructor(proc) {
    this.proc = proc;
    this.waiting = [];
    this.stderr = "";
    proc.stderr.on("data", (d) => (this.stderr += d));
    createInterface({ input: proc.stdout }).on("line", (l) => this.waiting.shift()?.resolve(l));
    proc.on("exit", () => {
      for (const w of this.waiting.splice(0)) w.reject(new Error(`simserve exited: ${this.stderr}`));
    });
    this.apdus = 0;
  }

  next() {
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /** Sends one request line and returns the answer line. */
  async request(line) {
    const p = this.next();
    this.proc.stdin.write(line + "\n");
    return p;
  }

  /** The bridge's transceive function: tag_lost becomes TagLostError. */
  transceive = async (apdu) => {
    this.apdus++;
    const r = await this.request("apdu " + toHex(apdu));
    if (r === "err tag_lost") throw new TagLostError();
    if (!r.startsWith("ok ")) throw new Error(`simserve: ${r}`);
    return fromHex(r.slice(3));
  };

  async value() {
    const r = await this.request("value");
    if (!r.startsWith("ok ")) throw new Error(r);
    return Number(r.slice(3));
  }

  async ok(line) {
    const r = await this.request(line);
    if (r !== "ok") throw new Error(`${line}: ${r}`);
  }

  close() {
    this.proc.stdin.end();
  }
}

/** A fresh temporary directory, removed by the returned function. */
export async function tempDir() {
  const dir = await mkdtemp(path.join(tmpdir(), "desfire-bridge-ts-"));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
