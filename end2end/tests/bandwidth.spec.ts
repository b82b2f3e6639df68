import type { Page } from '@playwright/test';
import { createRoom, expect, join, mediaFlowing, open, recordMedia, test, tile } from './helpers';
import { startCleanroom, type Spawned } from './servers';

// Simulcast (CONTRACT.md, "Bandwidth"): the camera goes to the SFU in three
// layers (rid q, h, f: quarter, half and full size) and each subscriber is
// sent the one that fits the tile it shows, switched on a keyframe so that
// its video never stops. Starts its own server, so it runs once, with the
// real-network specs.

let server: Spawned | undefined;

test.afterEach(async () => {
  await server?.stop();
  server = undefined;
});

/** The page's outbound camera layers: rid, frame width, bytes sent. */
async function sentLayers(page: Page) {
  return page.evaluate(async () => {
    const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
    const pc = pcs[pcs.length - 1];
    if (!pc) return [];
    const stats = [...(await pc.getStats()).values()] as Record<string, unknown>[];
    return stats
      .filter((s) => s.type === 'outbound-rtp' && s.kind === 'video' && typeof s.rid === 'string')
      .map((s) => ({ rid: String(s.rid), width: Number(s.frameWidth ?? 0), bytes: Number(s.bytesSent ?? 0) }))
      .sort((a, b) => a.width - b.width);
  });
}

/** What the page receives of `participant`'s camera: frame width and frames decoded. */
async function received(page: Page, participant: string) {
  return page.evaluate(async (id) => {
    const video = document.querySelector<HTMLVideoElement>(
      `[data-testid="participant-tile"][data-participant-id="${id}"] video`,
    );
    const track = (video?.srcObject as MediaStream | null)?.getVideoTracks()[0];
    const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
    const pc = pcs[pcs.length - 1];
    if (!track || !pc) return { width: 0, frames: 0 };
    const stats = [...(await pc.getStats()).values()] as Record<string, unknown>[];
    const inbound = stats.find((s) => s.type === 'inbound-rtp' && s.trackIdentifier === track.id);
    return { width: Number(inbound?.frameWidth ?? 0), frames: Number(inbound?.framesDecoded ?? 0) };
  }, participant);
}

interface Layer {
  active: boolean;
  bitrate: number;
  width: number | null;
}

/** The server's view: each video track's layers and each video forwarder's. */
async function layers(base: string) {
  const res = await fetch(`${base}/api/debug/resources?room=aaa-aaaa-aaa`);
  expect(res.status).toBe(200);
  const body = await res.json();
  return {
    tracks: body.video_tracks as { track: string; layers_seen: number; layers: Layer[] }[],
    forwarders: body.video_forwarders as {
      forwarder: string;
      layer: number | null;
      target: number | null;
      switches: number;
      estimate_bps: number;
    }[],
    counts: { tracks: body.tracks as number, forwarders: body.forwarders as number },
  };
}

test('the camera is sent in three layers and each subscriber gets the one its tile needs', async ({ browser }) => {
  test.setTimeout(120_000);
  server = await startCleanroom({});
  const base = `http://127.0.0.1:${server.port}`;
  const contexts = [];
  const pages: Page[] = [];
  for (let i = 0; i < 2; i++) {
    const context = await browser.newContext({ baseURL: base, viewport: { width: 1280, height: 720 } });
    await recordMedia(context);
    contexts.push(context);
    pages.push(await context.newPage());
  }
  const [ada, bob] = pages;
  try {
    const code = await createRoom(ada, 'Ada');
    const a = await join(ada);
    await open(bob, `/r/${code}`);
    const b = await join(bob, 'Bob');
    await expect.poll(() => mediaFlowing(bob, a.participant_id), { timeout: 20_000 }).toEqual({ frames: true, audio: true });

    // Ada's browser sends all three layers, smallest first, and the SFU
    // receives all three.
    await expect
      .poll(async () => (await sentLayers(ada)).map((l) => [l.rid, l.width > 0, l.bytes > 0]), { timeout: 40_000 })
      .toEqual([
        ['q', true, true],
        ['h', true, true],
        ['f', true, true],
      ]);
    const camera = async () => (await layers(base)).tracks.find((t) => t.track.startsWith(`${a.participant_id}-`));
    await expect
      .poll(async () => {
        const t = await camera();
        return t && [t.layers_seen, t.layers.filter((l) => l.active).length];
      })
      .toEqual([3, 3]);
    const adaCamera = (await camera())!.track;
    const toBob = `${adaCamera}>${b.participant_id}`;
    const forwarder = async () => (await layers(base)).forwarders.find((f) => f.forwarder === toBob);

    // Width of the layer `rid` Ada sends now (her browser may adapt it).
    const width = async (rid: string) => (await sentLayers(ada)).find((l) => l.rid === rid)?.width ?? -1;
    // Bob receives the layer the server says it sends him, at its width.
    const receivesLayer = async (rid: string) => {
      const got = await received(bob, a.participant_id);
      return got.width > 0 && got.width === (await width(rid));
    };

    // The grid: the smallest layer at least as wide as the tile (device
    // pixels), or the full one when none is.
    const tileWidth = () => tile(bob, a.participant_id).locator('video').evaluate((v) => v.clientWidth * devicePixelRatio);
    const grid = await tileWidth();
    const sent = await sentLayers(ada);
    const fitting = sent.find((l) => l.width >= grid) ?? sent[sent.length - 1];
    await expect.poll(async () => (await forwarder())?.layer, { timeout: 15_000 }).toBe(['q', 'h', 'f'].indexOf(fitting.rid));

    // Pinned large: the full layer, at its width.
    await tile(bob, a.participant_id).getByTestId('pin').click();
    await expect.poll(async () => (await forwarder())?.layer, { timeout: 15_000 }).toBe(2);
    await expect.poll(() => receivesLayer('f'), { timeout: 15_000 }).toBe(true);
    const switchesBefore = (await forwarder())!.switches;

    // A phone-narrow window: Ada's tile is a thumbnail, which never gets the
    // full layer; the video goes on decoding across the switch.
    await bob.setViewportSize({ width: 240, height: 480 });
    await expect.poll(tileWidth).toBeLessThanOrEqual(240);
    await expect.poll(async () => (await forwarder())?.layer, { timeout: 15_000 }).toBe(0);
    await expect.poll(() => receivesLayer('q'), { timeout: 15_000 }).toBe(true);
    expect((await received(bob, a.participant_id)).width).toBeLessThanOrEqual(320);
    await expect.poll(() => mediaFlowing(bob, a.participant_id)).toEqual({ frames: true, audio: true });

    // Large again: back on the full layer, still one decoding stream.
    await bob.setViewportSize({ width: 1280, height: 720 });
    await expect.poll(async () => (await forwarder())?.layer, { timeout: 15_000 }).toBe(2);
    await expect.poll(() => receivesLayer('f'), { timeout: 15_000 }).toBe(true);
    await expect.poll(() => mediaFlowing(bob, a.participant_id)).toEqual({ frames: true, audio: true });
    expect((await forwarder())!.switches).toBeGreaterThanOrEqual(switchesBefore + 2);

    // Leaving releases every layer's forwarder and the tracks, once.
    await bob.getByTestId('leave-button').click();
    await expect.poll(async () => (await forwarder()) === undefined).toBe(true);
    await ada.getByTestId('leave-button').click();
    await expect.poll(async () => (await layers(base)).counts).toEqual({ tracks: 0, forwarders: 0 });
    const after = await layers(base);
    expect([after.tracks, after.forwarders]).toEqual([[], []]);
  } finally {
    for (const context of contexts) await context.close();
  }
});

