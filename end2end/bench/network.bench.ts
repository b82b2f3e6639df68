import { chromium, type Browser, type Page } from '@playwright/test';
import config from '../playwright.config';
import { createRoom, join, open, recordMedia, test } from '../tests/helpers';
import { blockUdpInNetns, cutNetwork, launchInNetns, NETNS_HOST_IP, restoreNetwork } from '../tests/netns';
import { startCleanroom, startCoturn, type Spawned } from '../tests/servers';

// Real-network figures (scripts/bench-network.sh writes them to BENCHMARKS.md):
// join click to the first remote video frame, direct and through coturn over
// TCP (UDP blocked in the test namespace), and the time from the end of a 3 s
// link flap to the remote video advancing again. Ada publishes from this
// host; Bob joins from the namespace. Each figure is printed as JSON lines
// `BENCH {...}` for the report.

const RUNS = Number(process.env.BENCH_RUNS ?? '5');
const SECRET = 'a shared secret for coturn and cleanroom';

function emit(metric: string, ms: number) {
  console.log(`BENCH ${JSON.stringify({ metric, ms: Math.round(ms) })}`);
}

/** Records, in the page, when the first frame of any remote video was decoded. */
async function watchFirstRemoteFrame(page: Page) {
  await page.evaluate(() => {
    const w = window as unknown as { __firstFrameAt?: number; __joinAt?: number };
    const now = () => performance.timeOrigin + performance.now();
    document.addEventListener('click', (e) => {
      if ((e.target as Element).closest('[data-testid="join-button"]')) w.__joinAt ??= now();
    }, true);
    const tick = () => {
      const remote = [...document.querySelectorAll<HTMLVideoElement>('[data-testid="participant-tile"][data-self="false"] video')];
      if (remote.some((v) => v.getVideoPlaybackQuality().totalVideoFrames > 0)) {
        w.__firstFrameAt = now();
        return;
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}

async function firstFrameDelay(page: Page): Promise<number> {
  await page.waitForFunction(() => (window as unknown as { __firstFrameAt?: number }).__firstFrameAt !== undefined, null, {
    timeout: 60_000,
    polling: 50,
  });
  return page.evaluate(() => {
    const w = window as unknown as { __firstFrameAt: number; __joinAt: number };
    return w.__firstFrameAt - w.__joinAt;
  });
}

async function oneJoin(server: Spawned, viaTurn: boolean, bobBrowser: Browser, adaBrowser: Browser) {
  const inside = `http://${NETNS_HOST_IP}:${server.port}`;
  const adaContext = await adaBrowser.newContext({ baseURL: `http://127.0.0.1:${server.port}` });
  const ada = await adaContext.newPage();
  const code = await createRoom(ada, 'Ada');
  await join(ada);
  const bobContext = await bobBrowser.newContext({ baseURL: inside });
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  await open(bob, `/r/${code}`);
  await watchFirstRemoteFrame(bob);
  await join(bob, 'Bob');
  emit(viaTurn ? 'join-to-first-frame via TURN/TCP' : 'join-to-first-frame direct', await firstFrameDelay(bob));
  await bobContext.close();
  await adaContext.close();
}

test('real networks: join to first remote frame (direct, via TURN/TCP) and recovery after a 3 s flap', async () => {
  const base = config.use?.launchOptions ?? {};
  const turn = await startCoturn(NETNS_HOST_IP, SECRET);
  const server = await startCleanroom({
    CLEANROOM_ICE_ADDRS: `127.0.0.1,${NETNS_HOST_IP}`,
    CLEANROOM_ICE_ALLOW_NETS: '10.77.0.0/16',
    CLEANROOM_TURN_URLS: `turn:${NETNS_HOST_IP}:${turn.port}?transport=tcp`,
    CLEANROOM_TURN_SECRET: SECRET,
  });
  const inside = `http://${NETNS_HOST_IP}:${server.port}`;
  const ada = await chromium.launch(base);
  const bob = await launchInNetns(inside);
  try {
    for (let i = 0; i < RUNS; i++) {
      blockUdpInNetns(false);
      await oneJoin(server, false, bob, ada);
      blockUdpInNetns(true);
      await oneJoin(server, true, bob, ada);
    }
    blockUdpInNetns(false);

    // The flap: Bob's link silent for 3 s, both ways; then how long until
    // Ada's view of Bob decodes new frames again.
    for (let i = 0; i < RUNS; i++) {
      const adaContext = await ada.newContext({ baseURL: `http://127.0.0.1:${server.port}` });
      const adaPage = await adaContext.newPage();
      const code = await createRoom(adaPage, 'Ada');
      await join(adaPage);
      const bobContext = await bob.newContext({ baseURL: inside });
      const bobPage = await bobContext.newPage();
      await open(bobPage, `/r/${code}`);
      await join(bobPage, 'Bob');
      await adaPage.waitForFunction(
        () => [...document.querySelectorAll<HTMLVideoElement>('[data-testid="participant-tile"][data-self="false"] video')]
          .some((v) => v.getVideoPlaybackQuality().totalVideoFrames > 30),
        null,
        { timeout: 60_000, polling: 100 },
      );
      await cutNetwork();
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const frozen = await adaPage.evaluate(() =>
        Math.max(...[...document.querySelectorAll<HTMLVideoElement>('[data-testid="participant-tile"][data-self="false"] video')]
          .map((v) => v.getVideoPlaybackQuality().totalVideoFrames)),
      );
      await restoreNetwork();
      const restoredAt = Date.now();
      await adaPage.waitForFunction(
        (before) => [...document.querySelectorAll<HTMLVideoElement>('[data-testid="participant-tile"][data-self="false"] video')]
          .some((v) => v.getVideoPlaybackQuality().totalVideoFrames > before + 5),
        frozen,
        { timeout: 60_000, polling: 20 },
      );
      emit('3 s flap: restore to frames advancing', Date.now() - restoredAt);
      await bobContext.close();
      await adaContext.close();
    }
  } finally {
    blockUdpInNetns(false);
    await restoreNetwork();
    await ada.close();
    await bob.close();
    await server.stop();
    await turn.stop();
  }
});
