import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * Servers a spec starts for itself, configured as a deployment would be:
 * the `cleanroom` binary (`CLEANROOM_BIN`, set by scripts/test.sh) with the
 * settings under test, and coturn (Debian's `turnserver`). Each is stopped
 * by the spec that started it.
 */
const ROOT = path.resolve(__dirname, '..', '..');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

export interface Spawned {
  port: number;
  /** The process id (for benchmarks reading its CPU time). */
  pid: number | undefined;
  /** Everything it printed so far, colours removed. */
  log(): string;
  stop(): Promise<void>;
}

function spawned(proc: ChildProcess, port: number, dir: string | undefined): Spawned {
  let out = '';
  proc.stdout?.on('data', (d) => (out += String(d)));
  proc.stderr?.on('data', (d) => (out += String(d)));
  return {
    port,
    pid: proc.pid,
    log: () => strip(out),
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((resolve) => proc.once('exit', resolve));
        proc.kill('SIGTERM');
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
        if (proc.exitCode === null) proc.kill('SIGKILL');
      }
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until `probe` says yes (or the process died, or 60 s passed). */
async function until(what: string, server: Spawned, proc: ChildProcess, probe: () => Promise<boolean>) {
  const deadline = Date.now() + 60_000;
  while (!(await probe())) {
    if (proc.exitCode !== null) throw new Error(`${what} exited (${proc.exitCode}):\n${server.log()}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready within 60 s:\n${server.log()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Whether `host:port` takes a TCP connection. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * The cleanroom binary on `0.0.0.0:<free port>` with SQLite in a temp
 * folder, the debug API on, and `env` on top. Ready once the port takes
 * connections and the log says it listens.
 */
export async function startCleanroom(env: Record<string, string>): Promise<Spawned> {
  const bin = process.env.CLEANROOM_BIN;
  if (!bin || !fs.existsSync(bin)) throw new Error(`CLEANROOM_BIN (${bin}) is not the built server; run scripts/test.sh`);
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cleanroom-e2e-'));
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    RUST_LOG: 'info,tower_http=warn,sqlx=warn',
    CLEANROOM_ADDR: `0.0.0.0:${port}`,
    DATABASE_URL: `sqlite://${dir}/cleanroom.db?mode=rwc`,
    CLEANROOM_DEBUG_API: '1',
    ...env,
  };
  delete childEnv.REDIS_URL; // live state in the process
  const proc = spawn(bin, [], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const server = spawned(proc, port, dir);
  await until('cleanroom', server, proc, async () => /listening on/.test(server.log()) && accepts('127.0.0.1', port));
  return server;
}

/**
 * coturn on `host` (TCP and UDP on a free port), relaying from `host`, with
 * the TURN REST scheme (`use-auth-secret`): it accepts exactly the
 * credentials Cleanroom makes from `secret`.
 */
export async function startCoturn(host: string, secret: string): Promise<Spawned> {
  try {
    execFileSync('turnserver', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('turnserver not found (apt-get install coturn; scripts/test.sh does)');
  }
  const port = await freePort();
  const proc = spawn(
    'turnserver',
    [
      '-n',
      `--listening-ip=${host}`,
      `--listening-port=${port}`,
      `--relay-ip=${host}`,
      '--min-port=49300',
      '--max-port=49400',
      '--use-auth-secret',
      `--static-auth-secret=${secret}`,
      '--realm=cleanroom.test',
      '--fingerprint',
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--no-multicast-peers',
      '--allow-loopback-peers',
      '--log-file=stdout',
      '--simple-log',
      '--verbose',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const server = spawned(proc, port, undefined);
  await until('coturn', server, proc, () => accepts(host, port));
  return server;
}

/** base64(SHA-256(SPKI)) of the self-signed certificate, from the server's log. */
export function spkiPin(server: Spawned): string {
  const pin = /spki_sha256=([A-Za-z0-9+/=]{44})/.exec(server.log())?.[1];
  if (!pin) throw new Error(`no spki_sha256 in the log:\n${server.log()}`);
  return pin;
}

/** The PostgreSQL and Redis the Test command runs against (scripts/test.sh). */
const POSTGRES = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * One deployment of several nodes: a fresh PostgreSQL database, a Redis
 * prefix and a cookie secret of its own, shared by every node it starts.
 */
export class Deployment {
  readonly database = `cleanroom_nodes_${process.pid}_${Date.now()}`;
  readonly prefix = `cleanroom-e2e-${process.pid}-${Date.now()}`;
  readonly secret = `the-e2e-deployment-secret-${Date.now()}-of-32-bytes`;
  private readonly started: Spawned[] = [];

  constructor() {
    execFileSync('psql', [POSTGRES, '-qc', `CREATE DATABASE "${this.database}"`]);
  }

  /** Node `id` on `0.0.0.0:<free port>` (loopback media), ready when `/readyz` says so. */
  async node(id: string): Promise<Spawned & { kill(): void }> {
    const bin = process.env.CLEANROOM_BIN;
    if (!bin || !fs.existsSync(bin)) throw new Error(`CLEANROOM_BIN (${bin}) is not the built server; run scripts/test.sh`);
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RUST_LOG: 'info,tower_http=warn,sqlx=warn',
      CLEANROOM_ADDR: `0.0.0.0:${port}`,
      CLEANROOM_PUBLIC_URL: `http://127.0.0.1:${port}`,
      CLEANROOM_ICE_ADDRS: '127.0.0.1',
      CLEANROOM_DEBUG_API: '1',
      CLEANROOM_NODE_ID: id,
      CLEANROOM_SECRET: this.secret,
      CLEANROOM_STORE_PREFIX: this.prefix,
      DATABASE_URL: `${POSTGRES.replace(/\/[^/]*$/, '')}/${this.database}`,
      REDIS_URL: REDIS,
    };
    const proc = spawn(bin, [], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const server = spawned(proc, port, undefined);
    this.started.push(server);
    await until(`node ${id}`, server, proc, async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/readyz`)).ok;
      } catch {
        return false;
      }
    });
    return { ...server, kill: () => void proc.kill('SIGKILL') };
  }

  /** haproxy on a free port in front of `nodes`, round robin, no stickiness. */
  async balancer(nodes: Spawned[]): Promise<Spawned> {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cleanroom-haproxy-'));
    const config = [
      'defaults',
      '  mode http',
      '  timeout connect 2s',
      '  timeout client 60s',
      '  timeout server 60s',
      '  timeout tunnel 1h',
      '  retries 3',
      '  option redispatch',
      'frontend meet',
      `  bind 127.0.0.1:${port}`,
      '  default_backend nodes',
      'backend nodes',
      '  balance roundrobin',
      '  option httpchk GET /readyz',
      ...nodes.map((n, i) => `  server node-${i} 127.0.0.1:${n.port} check inter 500ms fall 1 rise 2`),
      '',
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'haproxy.cfg'), config);
    const proc = spawn('haproxy', ['-db', '-f', path.join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const server = spawned(proc, port, dir);
    this.started.push(server);
    await until('haproxy', server, proc, () => accepts('127.0.0.1', port));
    return server;
  }

  /** Stops everything it started and drops the database. */
  async stop(): Promise<void> {
    for (const s of this.started.splice(0).reverse()) await s.stop();
    execFileSync('psql', [POSTGRES, '-qc', `DROP DATABASE IF EXISTS "${this.database}" WITH (FORCE)`]);
  }
}
