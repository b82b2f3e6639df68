import type { Browser, BrowserContext, Page } from '@playwright/test';
import { chromium } from '@playwright/test';
import config from '../playwright.config';
import { createRoom, expect, join, mediaFlowing, open, recordMedia, test } from './helpers';
import {
  blockUdpInNetns,
  launchInNetns,
  moveNetnsAddress,
  NAT_PUBLIC_IP,
  natUp,
  NETNS_HOST_IP,
  requireNetns,
} from './netns';
import { spkiPin, startCleanroom, startCoturn, type Spawned } from './servers';

// Cleanroom as people host it for each other (CONTRACT.md, "Real networks"):
// each test starts its own server (and coturn) with the settings under test.
// Browsers on this host reach it at NETNS_HOST_IP, which is not loopback, so
// only a real secure context (HTTPS) gives them camera and microphone; the
// browser in the test namespace (end2end/netns.sh) gets its network shaped.
// Run once, on its own (scripts/test.sh): these tests start what they need.

const started: Spawned[] = [];
const browsers: Browser[] = [];

test.beforeEach(() => requireNetns());

test.afterEach(async () => {
  for (const b of browsers.splice(0)) await b.close();
  for (const s of started.splice(0).reverse()) await s.stop();
  blockUdpInNetns(false);
  natUp(false);
  moveNetnsAddress(false);
});

async function cleanroom(env: Record<string, string>): Promise<Spawned> {
  const s = await startCleanroom(env);
  started.push(s);
  return s;
}

/** A browser on this host with the suite's flags and `extra`. */
async function hostBrowser(extra: string[] = []): Promise<Browser> {
  const base = config.use?.launchOptions ?? {};
  const b = await chromium.launch({ ...base, args: [...(base.args ?? []), ...extra] });
  browsers.push(b);
  return b;
}

async function person(browser: Browser, baseURL: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ baseURL, ignoreHTTPSErrors: false });
  await recordMedia(context);
  return { context, page: await context.newPage() };
}

/** The selected ICE candidate pair of the page's (last) peer connection. */
async function selectedPair(page: Page) {
  return page.evaluate(async () => {
    const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
    const pc = pcs[pcs.length - 1];
    if (!pc) return null;
    const stats = [...(await pc.getStats()).values()] as Record<string, unknown>[];
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
    if (!pair || pair.state !== 'succeeded') return null;
    const local = stats.find((s) => s.id === pair.localCandidateId);
    const remote = stats.find((s) => s.id === pair.remoteCandidateId);
    return {
      local: String(local?.candidateType),
      localAddress: String(local?.address),
      localProtocol: String(local?.relayProtocol ?? local?.protocol),
      remoteAddress: String(remote?.address),
    };
  });
}

/** Connectivity checks of the page's peer connection: sent, answered. */
async function checks(page: Page) {
  return page.evaluate(async () => {
    const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
    const pc = pcs[pcs.length - 1];
    if (!pc) return { sent: 0, answered: 0, state: 'none' };
    const pairs = [...(await pc.getStats()).values()].filter((s) => s.type === 'candidate-pair');
    return {
      sent: pairs.reduce((n, p) => n + (p.requestsSent ?? 0), 0),
      answered: pairs.reduce((n, p) => n + (p.responsesReceived ?? 0), 0),
      state: pc.iceConnectionState,
    };
  });
}

/** Ada (this host) creates a room and joins; Bob (`bobPage`) joins it. */
async function aCall(ada: Page, bobPage: Page) {
  const code = await createRoom(ada, 'Ada');
  const a = await join(ada);
  await open(bobPage, `/r/${code}`);
  const b = await join(bobPage, 'Bob');
  return { code, a, b };
}

/** Ada on this host (by loopback) and Bob in the namespace, in one call. */
async function hereAndInside(server: Spawned) {
  const ada = await person(await hostBrowser(), `http://127.0.0.1:${server.port}`);
  const inside = await launchInNetns(`http://${NETNS_HOST_IP}:${server.port}`);
  browsers.push(inside);
  const bob = await person(inside, `http://${NETNS_HOST_IP}:${server.port}`);
  const { a, b } = await aCall(ada.page, bob.page);
  return { ada, bob, a, b };
}

async function twoWayVideo(ada: Page, bob: Page, a: { participant_id: string }, b: { participant_id: string }) {
  await expect.poll(async () => (await mediaFlowing(ada, b.participant_id)).frames, { timeout: 30_000 }).toBe(true);
  await expect.poll(async () => (await mediaFlowing(bob, a.participant_id)).frames, { timeout: 30_000 }).toBe(true);
}

test('over HTTPS with a self-signed certificate the page is a secure context and joins with camera; plain HTTP gets no answer', async () => {
  const server = await cleanroom({ CLEANROOM_TLS_SELF_SIGNED: '1', CLEANROOM_ICE_ADDRS: `127.0.0.1,${NETNS_HOST_IP}` });
  const url = `https://${NETNS_HOST_IP}:${server.port}`;
  // Trust exactly this certificate (its public key), no "treat as secure" flag.
  const browser = await hostBrowser([`--ignore-certificate-errors-spki-list=${spkiPin(server)}`]);
  const ada = await person(browser, url);
  const bob = await person(browser, url);
  // Over HTTPS the browser takes brotli: the page's WASM comes as the .br copy.
  const wasm = ada.page.waitForResponse((r) => /\/pkg\/cleanroom\.[\w-]{16,}\.wasm$/.test(new URL(r.url()).pathname));
  await open(ada.page, '/');
  expect((await wasm).headers()['content-encoding']).toBe('br');
  expect(await ada.page.evaluate(() => window.isSecureContext && location.protocol)).toBe('https:');
  const { a, b } = await aCall(ada.page, bob.page);
  await expect(ada.page.getByTestId('secure-context-error')).toHaveCount(0);
  await twoWayVideo(ada.page, bob.page, a, b);
  // The identity cookie is Secure.
  const cookies = await ada.context.cookies(url);
  expect(cookies.find((c) => c.name === 'cleanroom_id')?.secure).toBe(true);

  // The same port over plain HTTP: no HTTP answer at all.
  const plain = await person(browser, `http://${NETNS_HOST_IP}:${server.port}`);
  await expect(plain.page.goto('/')).rejects.toThrow(/ERR_/);
});

test('off a secure context the pre-join screen says so and how to fix it', async () => {
  const server = await cleanroom({ CLEANROOM_ICE_ADDRS: `127.0.0.1,${NETNS_HOST_IP}` });
  const browser = await hostBrowser();
  const { page } = await person(browser, `http://${NETNS_HOST_IP}:${server.port}`);
  await open(page, '/');
  expect(await page.evaluate(() => window.isSecureContext)).toBe(false);
  await createRoom(page, 'Ada');
  const error = page.getByTestId('secure-context-error');
  await expect(error).toBeVisible();
  await expect(error).toContainText('https://');
  await expect(error).toContainText('localhost');
});

/** A server on loopback and two people on this host, not yet in a room. */
async function twoOnLoopback() {
  const server = await cleanroom({ CLEANROOM_ICE_ADDRS: '127.0.0.1' });
  const browser = await hostBrowser();
  const base = `http://127.0.0.1:${server.port}`;
  return { ada: await person(browser, base), bob: await person(browser, base) };
}

test('a browser without a camera joins with its microphone: told so, shown camera-off, heard by the peer', async () => {
  const { ada, bob } = await twoOnLoopback();
  // Bob's browser has no camera: every request for video fails as Chromium's does.
  await bob.context.addInitScript(() => {
    const devices = navigator.mediaDevices;
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints?: MediaStreamConstraints) =>
      constraints?.video
        ? Promise.reject(new DOMException('Requested device not found', 'NotFoundError'))
        : original(constraints);
  });
  const { a, b } = await aCall(ada.page, bob.page);
  await expect(bob.page.getByText('No camera found: you join with your microphone only.')).toBeVisible();
  const bobAtAda = ada.page.locator(`[data-testid="participant-tile"][data-participant-id="${b.participant_id}"]`);
  await expect(bobAtAda).toHaveClass(/camera-off/);
  // Ada receives Bob's audio: her inbound audio packets grow.
  const inboundAudio = () =>
    ada.page.evaluate(async () => {
      const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
      const stats = [...(await pcs[pcs.length - 1].getStats()).values()];
      return stats.filter((s) => s.type === 'inbound-rtp' && s.kind === 'audio').reduce((n, s) => n + (s.packetsReceived ?? 0), 0);
    });
  await expect.poll(inboundAudio, { timeout: 20_000 }).toBeGreaterThan(0);
  const first = await inboundAudio();
  await expect.poll(inboundAudio, { timeout: 10_000 }).toBeGreaterThan(first);
  expect((await mediaFlowing(bob.page, a.participant_id)).frames).toBe(true);
});

test('a browser that refuses camera and microphone is told how to allow them and joins listening only', async () => {
  const { ada, bob } = await twoOnLoopback();
  await bob.context.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
  });
  const code = await createRoom(ada.page, 'Ada');
  const a = await join(ada.page);
  await open(bob.page, `/r/${code}`);
  await expect(bob.page.getByTestId('device-note')).toContainText('blocked for this site');
  const b = await join(bob.page, 'Bob');
  await expect(bob.page.getByText('you join listening only').first()).toBeVisible();
  const bobAtAda = ada.page.locator(`[data-testid="participant-tile"][data-participant-id="${b.participant_id}"]`);
  await expect(bobAtAda).toHaveClass(/camera-off/);
  await expect(bobAtAda).toContainText('muted');
  // Listening only still receives: Ada's video reaches Bob.
  await expect.poll(async () => (await mediaFlowing(bob.page, a.participant_id)).frames, { timeout: 30_000 }).toBe(true);
});

test('with UDP blocked, a browser joins through coturn over TCP: two-way video on a relay pair, all released on leave', async ({
  request,
}) => {
  const secret = 'a shared secret for coturn and cleanroom';
  const turn = await startCoturn(NETNS_HOST_IP, secret);
  started.push(turn);
  const server = await cleanroom({
    CLEANROOM_ICE_ADDRS: `127.0.0.1,${NETNS_HOST_IP}`,
    CLEANROOM_TURN_URLS: `turn:${NETNS_HOST_IP}:${turn.port}?transport=tcp`,
    CLEANROOM_TURN_SECRET: secret,
  });
  blockUdpInNetns(true);
  const { ada, bob, a, b } = await hereAndInside(server);
  await twoWayVideo(ada.page, bob.page, a, b);
  await expect.poll(() => selectedPair(bob.page), { timeout: 20_000 }).toMatchObject({ local: 'relay', localProtocol: 'tcp' });
  expect(turn.log()).toMatch(/session .*: (new, )?realm <cleanroom.test>|allocation/i);

  // Leaving through TURN leaves nothing behind, as any leave.
  await bob.page.getByTestId('leave-button').click();
  const api = `http://127.0.0.1:${server.port}`;
  await expect
    .poll(async () => (await request.get(`${api}/api/debug/sessions/${b.session_id}`)).json(), { timeout: 10_000 })
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'left' });
  await expect(ada.page.locator(`[data-testid="participant-tile"][data-participant-id="${b.participant_id}"]`)).toHaveCount(0);
});

test('behind 1:1 NAT: no media without CLEANROOM_ICE_PUBLIC_ADDRS, two-way video with it', async () => {
  natUp(true);
  for (const announced of [false, true]) {
    const server = await cleanroom({
      CLEANROOM_ICE_ADDRS: NETNS_HOST_IP,
      CLEANROOM_ICE_ALLOW_NETS: '10.77.0.0/16',
      ...(announced ? { CLEANROOM_ICE_PUBLIC_ADDRS: NAT_PUBLIC_IP } : {}),
    });
    const inside = `http://${NETNS_HOST_IP}:${server.port}`;
    const hostSide = await hostBrowser([`--unsafely-treat-insecure-origin-as-secure=${inside}`]);
    const ada = await person(hostSide, inside);
    const bobBrowser = await launchInNetns(inside);
    browsers.push(bobBrowser);
    const bob = await person(bobBrowser, inside);
    const { a, b } = await aCall(ada.page, bob.page);
    if (announced) {
      await twoWayVideo(ada.page, bob.page, a, b);
      await expect.poll(() => selectedPair(bob.page), { timeout: 20_000 }).toMatchObject({ remoteAddress: NAT_PUBLIC_IP });
    } else {
      // Bob's browser tries the announced (private) address: checks go out
      // and none is ever answered.
      await expect.poll(async () => (await checks(bob.page)).sent, { timeout: 20_000 }).toBeGreaterThanOrEqual(5);
      const seen = await checks(bob.page);
      expect(seen.answered).toBe(0);
      expect(['new', 'checking', 'disconnected', 'failed']).toContain(seen.state);
      expect((await mediaFlowing(ada.page, b.participant_id)).frames).toBe(false);
    }
    for (const br of browsers.splice(0)) await br.close();
    await started.pop()?.stop();
  }
});

test('a browser whose address changes mid-call resumes on the same session by an ICE restart', async ({ request }) => {
  const server = await cleanroom({
    CLEANROOM_ICE_ADDRS: `127.0.0.1,${NETNS_HOST_IP}`,
    CLEANROOM_ICE_ALLOW_NETS: '10.77.0.0/16',
  });
  const { ada, bob, a, b } = await hereAndInside(server);
  await twoWayVideo(ada.page, bob.page, a, b);
  expect((await selectedPair(bob.page))?.localAddress).toBe('10.77.0.2');

  // Bob's laptop moves to another network: its address is replaced.
  moveNetnsAddress(true);
  // Media is back on the new address: an ICE restart gathered it.
  await expect
    .poll(async () => (await selectedPair(bob.page))?.localAddress, { timeout: 20_000 })
    .toBe('10.77.2.2');
  await twoWayVideo(ada.page, bob.page, a, b);
  const api = `http://127.0.0.1:${server.port}`;
  const metrics = await (await request.get(`${api}/metrics`)).text();
  expect(metrics).toMatch(/^cleanroom_ice_restarts_total [1-9]/m);
  // The same session, nobody removed, no duplicate.
  expect(await (await request.get(`${api}/api/debug/sessions/${b.session_id}`)).json()).toMatchObject({
    live: true,
    leave_reason: null,
  });
  await expect(ada.page.getByTestId('participant-tile')).toHaveCount(2);
  await expect(ada.page.locator(`[data-testid="participant-tile"][data-participant-id="${b.participant_id}"]`)).toHaveAttribute(
    'data-state',
    'connected',
  );
});
