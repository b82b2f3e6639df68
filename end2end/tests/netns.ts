import { chromium, type Browser, type BrowserServer, type LaunchOptions, type Page } from '@playwright/test';
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import config from '../playwright.config';

/**
 * The test host in a network namespace (end2end/netns.sh): a browser launched
 * there reaches the server only through a veth pair that `cut()` silences in
 * both directions, like Wi-Fi loss: no close frame, no reset, nothing.
 */
const NETNS_SCRIPT = path.resolve(__dirname, '..', 'netns.sh');
const NETNS_CHROMIUM = path.resolve(__dirname, '..', 'netns-chromium.sh');

/** The server as seen from inside the namespace (the host side of the veth). */
export const NETNS_BASE_URL =
  process.env.NETNS_BASE_URL ?? `http://10.77.0.1:${new URL(String(config.use?.baseURL)).port || '80'}`;

function netns(command: 'check'): void {
  try {
    execFileSync(NETNS_SCRIPT, [command], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`end2end/netns.sh ${command} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** Throws (so the test fails, never skips) unless the namespace is up. */
export function requireNetns(): void {
  netns('check');
}

/**
 * Cut and restore go through one long-lived `nft -i` (the same transaction
 * as `netns.sh cut|restore`, on the table `netns.sh up` made): a few
 * milliseconds each even on a loaded machine, where starting a process can
 * take longer than the blip being tested. Each change is confirmed by
 * listing the chain back.
 */
const TABLE = 'cleanroom_e2e_cut';
const CUT = [
  `flush chain netdev ${TABLE} ingress`,
  `flush chain netdev ${TABLE} egress`,
  `add rule netdev ${TABLE} ingress drop`,
  `add rule netdev ${TABLE} egress drop`,
];
const RESTORE = [`flush chain netdev ${TABLE} ingress`, `flush chain netdev ${TABLE} egress`];
let nft: ChildProcessWithoutNullStreams | undefined;
let nftOut = '';
let nftErr = '';

async function nftApply(commands: string[], dropping: boolean): Promise<void> {
  if (!nft || nft.exitCode !== null) {
    nft = spawn('nft', ['-i']);
    nft.stdout.on('data', (d) => (nftOut += String(d)));
    nft.stderr.on('data', (d) => (nftErr += String(d)));
    nft.unref();
    for (const stream of [nft.stdin, nft.stdout, nft.stderr]) (stream as unknown as { unref?: () => void }).unref?.();
  }
  nftOut = '';
  nftErr = '';
  nft.stdin.write(`${commands.join('\n')}\nlist chain netdev ${TABLE} egress\n`);
  const deadline = Date.now() + 5_000;
  while (!/}\s*}\s*$/.test(nftOut)) {
    if (nftErr || nft.exitCode !== null || Date.now() > deadline) {
      throw new Error(`nft -i failed (is the namespace up? end2end/netns.sh up): ${nftErr.trim() || 'no answer'}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  if (/\bdrop\b/.test(nftOut) !== dropping) throw new Error(`nft did not ${dropping ? 'cut' : 'restore'}: ${nftOut}`);
}

/** Drops every packet crossing the veth, both ways. */
export async function cutNetwork(): Promise<void> {
  await nftApply(CUT, true);
}
/** Lets packets through again. */
export async function restoreNetwork(): Promise<void> {
  await nftApply(RESTORE, false);
}

/**
 * Launch options for Chromium inside the namespace: the suite's flags, plus
 * treating the namespace's server address as a secure origin (it is not
 * loopback, and camera/microphone need a secure context).
 */
export function netnsLaunchOptions(secureOrigin: string | null = NETNS_BASE_URL, extra: string[] = []): LaunchOptions {
  const base = config.use?.launchOptions ?? {};
  const secure = secureOrigin ? [`--unsafely-treat-insecure-origin-as-secure=${secureOrigin}`] : [];
  return {
    ...base,
    executablePath: NETNS_CHROMIUM,
    headless: true,
    args: [...(base.args ?? []), ...secure, ...extra],
  };
}

/** A browser of its own inside the namespace. */
export async function launchInNetns(secureOrigin: string | null = NETNS_BASE_URL, extra: string[] = []): Promise<Browser> {
  requireNetns();
  return chromium.launch(netnsLaunchOptions(secureOrigin, extra));
}

const NS = process.env.NETNS_NAME ?? 'cleanroom-e2e';
/** The host side of the veth, as browsers in the namespace reach it. */
export const NETNS_HOST_IP = '10.77.0.1';
/** The "public" address of the 1:1 NAT test, forwarded to NETNS_HOST_IP. */
export const NAT_PUBLIC_IP = '10.77.1.1';

function nftScript(inNamespace: boolean, script: string): void {
  const [cmd, args] = inNamespace ? ['ip', ['netns', 'exec', NS, 'nft', '-f', '-']] : ['nft', ['-f', '-']];
  execFileSync(cmd as string, args as string[], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Inside the namespace, drop every UDP packet in and out (a hotel or office
 * network that lets only TCP through). `false` removes the rule.
 */
export function blockUdpInNetns(on: boolean): void {
  try {
    nftScript(true, 'delete table inet cleanroom_e2e_udp\n');
  } catch {
    // not there
  }
  if (!on) return;
  nftScript(
    true,
    `table inet cleanroom_e2e_udp {
  chain input { type filter hook input priority -10; policy accept; meta l4proto udp drop; }
  chain output { type filter hook output priority -10; policy accept; meta l4proto udp drop; }
}
`,
  );
}

/**
 * A 1:1 NAT in front of the server's media address: UDP to NAT_PUBLIC_IP is
 * forwarded (DNAT) to NETNS_HOST_IP, from the namespace and from this host;
 * the namespace's UDP straight to NETNS_HOST_IP is dropped, so a browser
 * there reaches the media port only through the public address, as on a
 * cloud VM. (Its page and socket still use TCP to NETNS_HOST_IP.) `false`
 * removes it all.
 */
export function natUp(on: boolean): void {
  try {
    nftScript(false, 'delete table ip cleanroom_e2e_nat\n');
  } catch {
    // not there
  }
  try {
    nftScript(true, 'delete table inet cleanroom_e2e_nat\n');
  } catch {
    // not there
  }
  try {
    ip(['route', 'del', `${NAT_PUBLIC_IP}/32`]);
  } catch {
    // not there
  }
  try {
    ip(['netns', 'exec', NS, 'ip', 'route', 'del', `${NAT_PUBLIC_IP}/32`]);
  } catch {
    // not there
  }
  if (!on) return;
  nftScript(
    false,
    `table ip cleanroom_e2e_nat {
  chain pre { type nat hook prerouting priority -100; ip daddr ${NAT_PUBLIC_IP} meta l4proto udp dnat to ${NETNS_HOST_IP}; }
  chain out { type nat hook output priority -100; ip daddr ${NAT_PUBLIC_IP} meta l4proto udp dnat to ${NETNS_HOST_IP}; }
}
`,
  );
  nftScript(
    true,
    `table inet cleanroom_e2e_nat {
  chain output { type filter hook output priority -10; policy accept; ip daddr ${NETNS_HOST_IP} meta l4proto udp drop; }
  chain input { type filter hook input priority -10; policy accept; ip saddr ${NETNS_HOST_IP} meta l4proto udp drop; }
}
`,
  );
  ip(['route', 'replace', `${NAT_PUBLIC_IP}/32`, 'dev', process.env.NETNS_HOST_IF ?? 'cr-e2e-h']);
  ip(['netns', 'exec', NS, 'ip', 'route', 'replace', `${NAT_PUBLIC_IP}/32`, 'via', NETNS_HOST_IP]);
}

/** A browser server of its own inside the namespace (its process can be killed). */
export async function launchServerInNetns(): Promise<BrowserServer> {
  requireNetns();
  return chromium.launchServer(netnsLaunchOptions());
}

/** What `watchTile` saw, in wall-clock milliseconds (the same clock as node's `Date.now()`). */
export interface TileWatch {
  reconnectingAt: number | null;
  goneAt: number | null;
  /** Went back to `connected` after being `reconnecting`. */
  recoveredAt: number | null;
}

/**
 * Starts watching, in the page, one participant's tile: records the first
 * moment it shows `data-state="reconnecting"`, and the first moment it is
 * gone from the DOM (MutationObserver, `performance.timeOrigin + now()`).
 */
export async function watchTile(page: Page, participantId: string): Promise<void> {
  await page.evaluate((id) => {
    const w = window as unknown as { __tileWatch?: Record<string, TileWatch> };
    w.__tileWatch ??= {};
    const rec: TileWatch = { reconnectingAt: null, goneAt: null, recoveredAt: null };
    w.__tileWatch[id] = rec;
    const selector = `[data-testid="participant-tile"][data-participant-id="${id}"]`;
    const now = () => performance.timeOrigin + performance.now();
    const check = () => {
      const el = document.querySelector(selector);
      if (!el) {
        rec.goneAt ??= now();
        return;
      }
      const state = el.getAttribute('data-state');
      if (state === 'reconnecting') rec.reconnectingAt ??= now();
      else if (state === 'connected' && rec.reconnectingAt !== null) rec.recoveredAt ??= now();
    };
    new MutationObserver(check).observe(document.documentElement, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ['data-state', 'data-participant-id', 'data-testid'],
    });
    check();
  }, participantId);
}

/** What `watchTile` recorded so far. */
export async function tileWatch(page: Page, participantId: string): Promise<TileWatch> {
  return page.evaluate(
    (id) => (window as unknown as { __tileWatch: Record<string, TileWatch> }).__tileWatch[id],
    participantId,
  );
}

const NS_IF = process.env.NETNS_NS_IF ?? 'cr-e2e-n';
const HOST_IF = process.env.NETNS_HOST_IF ?? 'cr-e2e-h';
/** The namespace's address after a move (another network, as a laptop that changed Wi-Fi). */
export const MOVED_IP = '10.77.2.2';

/**
 * Replaces the namespace's address 10.77.0.2 by MOVED_IP (`true`), or puts
 * it back (`false`, idempotent). Open connections from the old address are
 * dead at once, as when a laptop joins another network.
 */
export function moveNetnsAddress(moved: boolean): void {
  const inNs = (args: string[]) => ip(['netns', 'exec', NS, 'ip', ...args]);
  const quiet = (f: () => void) => {
    try {
      f();
    } catch {
      // already so
    }
  };
  const nsMac = () => execFileSync('ip', ['netns', 'exec', NS, 'cat', `/sys/class/net/${NS_IF}/address`]).toString().trim();
  if (moved) {
    ip(['route', 'replace', `${MOVED_IP}/32`, 'dev', HOST_IF]);
    ip(['neigh', 'replace', MOVED_IP, 'lladdr', nsMac(), 'dev', HOST_IF, 'nud', 'permanent']);
    inNs(['addr', 'replace', `${MOVED_IP}/32`, 'dev', NS_IF]);
    inNs(['route', 'replace', `${NETNS_HOST_IP}/32`, 'dev', NS_IF, 'src', MOVED_IP]);
    inNs(['addr', 'del', '10.77.0.2/30', 'dev', NS_IF]);
    return;
  }
  quiet(() => inNs(['addr', 'del', `${MOVED_IP}/32`, 'dev', NS_IF]));
  quiet(() => inNs(['route', 'del', `${NETNS_HOST_IP}/32`, 'dev', NS_IF]));
  quiet(() => inNs(['addr', 'replace', '10.77.0.2/30', 'dev', NS_IF]));
  quiet(() => ip(['neigh', 'del', MOVED_IP, 'dev', HOST_IF]));
  quiet(() => ip(['route', 'del', `${MOVED_IP}/32`]));
}

/**
 * Limits what reaches the namespace (its browser's downlink) to `kbit`
 * kbit/s with a token bucket on the host side of the veth (`tc tbf`, a
 * 400 ms queue, as a slow access link); `null` lifts the limit.
 */
export function shapeDownlink(kbit: number | null): void {
  try {
    execFileSync('tc', ['qdisc', 'del', 'dev', HOST_IF, 'root'], { stdio: 'ignore' });
  } catch {
    // No limit was set.
  }
  if (kbit === null) return;
  execFileSync(
    'tc',
    ['qdisc', 'add', 'dev', HOST_IF, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '8kb', 'latency', '400ms'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
}
