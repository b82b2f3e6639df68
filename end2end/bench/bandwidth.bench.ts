import fs from 'node:fs';
import { chromium, type Page } from '@playwright/test';
import config from '../playwright.config';
import { createRoom, join, open, receivedVideo as inbound, recordMedia, test, tile } from '../tests/helpers';
import { launchInNetns, NETNS_HOST_IP, shapeDownlink } from '../tests/netns';
import { startCleanroom, type Spawned } from '../tests/servers';

// Bandwidth figures (scripts/bench-bandwidth.sh writes them to BENCHMARKS.md).
// One subscriber (Bob, in the test namespace) on a downlink shaped with tc:
// frames decoded per second and freezes (Chromium's own count) while clear
// and at 300 kbit/s, the layer he is sent over time, how long after the
// limit is lifted he is back on the top layer, and at 60 kbit/s how long
// after the lift his paused video plays again. Then the server's CPU with
// simulcast and with a single layer, two people sending cameras, the runs
// interleaved. Figures are printed as `BENCH {...}` lines, the layer
// timelines as `NOTE {...}`.

const RUNS = Number(process.env.BENCH_RUNS ?? '3');

function emit(metric: string, value: number, unit = 'ms') {
  console.log(`BENCH ${JSON.stringify(unit === 'ms' ? { metric, ms: Math.round(value) } : { metric, value, unit })}`);
}

function note(text: string) {
  console.log(`NOTE ${JSON.stringify({ text })}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Debug {
  tracks: { track: string; layers: { active: boolean; width: number | null }[] }[];
  forwarders: { forwarder: string; layer: number | null; estimate_bps: number }[];
}

async function debug(base: string): Promise<Debug> {
  const body = await (await fetch(`${base}/api/debug/resources?room=aaa-aaaa-aaa`)).json();
  return { tracks: body.video_tracks, forwarders: body.video_forwarders };
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Server CPU time so far (ms), from /proc. */
function cpuMs(server: Spawned): number {
  const stat = fs.readFileSync(`/proc/${server.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

async function weakLinkRun(run: number) {
  // BENCH_LOG=<RUST_LOG filter>: each run's server log is kept in
  // end2end/test-results/bandwidth-run-<n>.log (to see why a run was slow).
  const server = await startCleanroom({
    CLEANROOM_ICE_ADDRS: `127.0.0.1,${NETNS_HOST_IP}`,
    ...(process.env.BENCH_LOG ? { RUST_LOG: process.env.BENCH_LOG } : {}),
  });
  const here = `http://127.0.0.1:${server.port}`;
  const inside = `http://${NETNS_HOST_IP}:${server.port}`;
  const hostBrowser = await chromium.launch(config.use?.launchOptions ?? {});
  const netnsBrowser = await launchInNetns(inside);
  try {
    const contexts = [
      await hostBrowser.newContext({ baseURL: here }),
      await hostBrowser.newContext({ baseURL: here }),
      await netnsBrowser.newContext({ baseURL: inside }),
    ];
    for (const context of contexts) await recordMedia(context);
    const [ada, cy, bob] = await Promise.all(contexts.map((c) => c.newPage()));
    const code = await createRoom(ada, 'Ada');
    const a = await join(ada);
    await open(cy, `/r/${code}`);
    await join(cy, 'Cy');
    await open(bob, `/r/${code}`);
    const b = await join(bob, 'Bob');
    // As in the test: only Ada's camera (three encoders would starve these
    // two cores), Cy's microphone off; both show Ada large.
    await cy.getByTestId('mute-audio').click();
    for (const page of [cy, bob]) {
      await page.getByTestId('mute-video').click();
      await waitFor('Ada visible', async () => (await inbound(page, a.participant_id)).frames > 0, 30_000);
      await tile(page, a.participant_id).getByTestId('pin').click();
    }
    const camera = async () => (await debug(here)).tracks.find((t) => t.track.startsWith(`${a.participant_id}-`));
    const top = async () => {
      const t = await camera();
      return t ? t.layers.map((l) => l.active).lastIndexOf(true) : -1;
    };
    const toBob = async () => {
      const t = await camera();
      return (await debug(here)).forwarders.find((f) => f.forwarder === `${t?.track}>${b.participant_id}`);
    };
    const onTop = async () => {
      const [f, best] = [await toBob(), await top()];
      return best >= 1 && f?.layer === best;
    };
    await waitFor('Bob on the top layer', onTop, 60_000);

    // Samples every 500 ms: frames, freezes, the layer sent.
    const timeline: string[] = [];
    const phase = async (ms: number) => {
      const first = await inbound(bob, a.participant_id);
      const start = Date.now();
      while (Date.now() - start < ms) {
        await sleep(500);
        const f = await toBob();
        timeline.push(f?.layer === null || f?.layer === undefined ? '-' : 'qhf'[f.layer]);
      }
      const last = await inbound(bob, a.participant_id);
      const secs = (Date.now() - start) / 1000;
      return { fps: (last.frames - first.frames) / secs, freezes: last.freezes - first.freezes, width: last.width };
    };

    const clear = await phase(8_000);
    timeline.push('|');
    shapeDownlink(300);
    const weak = await phase(20_000);
    timeline.push('|');
    shapeDownlink(null);
    const lifted = Date.now();
    await waitFor('back on the top layer', onTop, 60_000);
    const recovery = Date.now() - lifted;
    await phase(4_000);
    emit('frames decoded per second, clear link', clear.fps, 'fps');
    emit('frames decoded per second, 300 kbit/s', weak.fps, 'fps');
    emit('freezes in 20 s at 300 kbit/s', weak.freezes, 'freezes');
    emit('frame width at 300 kbit/s', weak.width, 'px');
    emit('300 kbit/s lifted to top layer again', recovery);
    note(`run ${run + 1}, layer to Bob every 500 ms (clear | 300 kbit/s | lifted): ${timeline.join('')}`);

    shapeDownlink(60);
    const cut = Date.now();
    await waitFor('video paused', async () => (await tile(bob, a.participant_id).getAttribute('data-video')) === 'paused', 60_000);
    emit('60 kbit/s to video paused', Date.now() - cut);
    await sleep(10_000);
    shapeDownlink(null);
    const back = Date.now();
    const before = (await inbound(bob, a.participant_id)).frames;
    const resumed = await waitFor(
      'video playing again',
      async () =>
        (await tile(bob, a.participant_id).getAttribute('data-video')) === 'playing' &&
        (await inbound(bob, a.participant_id)).frames > before,
      60_000,
    ).then(
      () => true,
      () => false,
    );
    // A run whose video never came back is counted, not timed.
    if (resumed) emit('60 kbit/s lifted to video playing again', Date.now() - back);
    emit('runs whose video had not resumed 60 s after 60 kbit/s was lifted', resumed ? 0 : 1, 'runs');
    for (const context of contexts) await context.close();
  } finally {
    shapeDownlink(null);
    if (process.env.BENCH_LOG) {
      fs.mkdirSync('end2end/test-results', { recursive: true });
      fs.writeFileSync(`end2end/test-results/bandwidth-run-${run + 1}.log`, server.log());
    }
    await netnsBrowser.close();
    await hostBrowser.close();
    await server.stop();
  }
}

/** Server CPU per second with two people sending their cameras to each other. */
async function cpuRun(simulcast: boolean) {
  const server = await startCleanroom({ CLEANROOM_SIMULCAST: simulcast ? '1' : '0' });
  const base = `http://127.0.0.1:${server.port}`;
  const browser = await chromium.launch(config.use?.launchOptions ?? {});
  try {
    const contexts = [await browser.newContext({ baseURL: base }), await browser.newContext({ baseURL: base })];
    for (const context of contexts) await recordMedia(context);
    const [ada, bob] = await Promise.all(contexts.map((c) => c.newPage()));
    const code = await createRoom(ada, 'Ada');
    const a = await join(ada);
    await open(bob, `/r/${code}`);
    const b = await join(bob, 'Bob');
    await waitFor('both see each other', async () => (await inbound(bob, a.participant_id)).frames > 0 && (await inbound(ada, b.participant_id)).frames > 0, 30_000);
    // Let the encoders ramp up (simulcast's top layer comes last).
    await sleep(15_000);
    const [cpu0, t0] = [cpuMs(server), Date.now()];
    await sleep(20_000);
    const perSecond = (cpuMs(server) - cpu0) / ((Date.now() - t0) / 1000);
    emit(simulcast ? 'server CPU, two cameras, simulcast' : 'server CPU, two cameras, one layer', perSecond, 'ms/s');
    for (const context of contexts) await context.close();
  } finally {
    await browser.close();
    await server.stop();
  }
}

test('bandwidth: a weak downlink, its recovery, and the CPU of simulcast', async () => {
  for (let run = 0; run < RUNS; run++) {
    await weakLinkRun(run);
  }
  for (let run = 0; run < (process.env.BENCH_CPU === '0' ? 0 : RUNS); run++) {
    await cpuRun(run % 2 === 0);
    await cpuRun(run % 2 !== 0);
  }
});
