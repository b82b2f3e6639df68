import { test as base, expect, type APIRequestContext, type BrowserContext, type Page } from '@playwright/test';

/**
 * The suite's `test`: `newContext()` opens an isolated browser profile (one
 * person) that is closed after the test, so no test leaves a participant
 * behind for the next one.
 */
export const test = base.extend<{ newContext: () => Promise<BrowserContext>; newPage: () => Promise<Page> }>({
  newContext: async ({ browser }, use) => {
    const contexts: BrowserContext[] = [];
    await use(async () => {
      const context = await browser.newContext();
      contexts.push(context);
      return context;
    });
    for (const context of contexts) await context.close();
  },
  newPage: async ({ newContext }, use) => {
    await use(async () => (await newContext()).newPage());
  },
});
export { expect };

/** What the join server function answered. */
export interface Joined {
  session_id: string;
  participant_id: string;
  role: 'admin' | 'member';
  state: 'active' | 'pending';
}

/** Opens a page and waits until the WASM has hydrated it. */
export async function open(page: Page, path: string): Promise<void> {
  await page.goto(path);
  await expect(page.locator('body[data-hydrated="true"]')).toHaveCount(1);
}

/** Creates a room from the lobby; returns its code. */
export async function createRoom(
  page: Page,
  name: string,
  opts: { private?: boolean; hostUnmutes?: boolean } = {},
): Promise<string> {
  await open(page, '/');
  await page.getByTestId('display-name').fill(name);
  if (opts.private) await page.getByTestId('room-private').check();
  if (opts.hostUnmutes) await page.getByTestId('room-host-unmutes').check();
  await page.getByTestId('create-room').click();
  await page.waitForURL(/\/r\/[a-z]{3}-[a-z]{4}-[a-z]{3}$/);
  await expect(page.locator('body[data-hydrated="true"]')).toHaveCount(1);
  return new URL(page.url()).pathname.split('/').pop()!;
}

/** Joins from the pre-join screen; returns the server's answer. */
export async function join(page: Page, name?: string): Promise<Joined> {
  await expect(page.getByTestId('prejoin')).toBeVisible();
  if (name !== undefined) await page.getByTestId('display-name').fill(name);
  const answer = page.waitForResponse((r) => r.url().endsWith('/api/join') && r.request().method() === 'POST');
  await page.getByTestId('join-button').click();
  const response = await answer;
  expect(response.status()).toBe(200);
  const joined = (await response.json()) as Joined;
  await expect(page.getByTestId('call')).toBeVisible();
  return joined;
}

/**
 * The common start of a call: Ada creates a room and joins it, then Bob opens
 * its link and joins as "Bob". Returns the room's code and both join answers.
 */
export async function twoInRoom(ada: Page, bob: Page): Promise<{ code: string; a: Joined; b: Joined }> {
  const code = await createRoom(ada, 'Ada');
  const a = await join(ada);
  await open(bob, `/r/${code}`);
  const b = await join(bob, 'Bob');
  return { code, a, b };
}

/** Node-wide live counts from `/api/debug/resources`. */
export async function liveCounts(request: APIRequestContext) {
  const res = await request.get('/api/debug/resources?room=aaa-aaaa-aaa');
  expect(res.status()).toBe(200);
  const { sessions, peer_connections, tracks, forwarders, websockets } = await res.json();
  return { sessions, peer_connections, tracks, forwarders, websockets };
}

/** `/api/debug/resources` for one room. */
export async function roomResources(request: APIRequestContext, code: string) {
  const res = await request.get(`/api/debug/resources?room=${code}`);
  expect(res.status()).toBe(200);
  const body = await res.json();
  return { all: body, room: body.rooms[0] };
}

/** `/api/debug/sessions/{id}`: what is left of one session. */
export async function sessionResources(request: APIRequestContext, session: string) {
  const res = await request.get(`/api/debug/sessions/${session}`);
  expect(res.status()).toBe(200);
  return res.json();
}

/**
 * Records every camera/microphone stream and peer connection the page
 * creates, without test code in the app: wraps getUserMedia and
 * RTCPeerConnection before any page script runs.
 */
export async function recordMedia(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const w = window as unknown as {
      __media: { streams: MediaStream[]; screens: MediaStream[]; pcs: RTCPeerConnection[] };
    };
    w.__media = { streams: [], screens: [], pcs: [] };
    const devices = navigator.mediaDevices;
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = async (constraints?: MediaStreamConstraints) => {
      const stream = await original(constraints);
      w.__media.streams.push(stream);
      return stream;
    };
    const display = devices.getDisplayMedia.bind(devices);
    devices.getDisplayMedia = async (options?: DisplayMediaStreamOptions) => {
      const stream = await display(options);
      w.__media.screens.push(stream);
      return stream;
    };
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(config?: RTCConfiguration) {
        super(config);
        w.__media.pcs.push(this);
      }
    } as typeof RTCPeerConnection;
  });
}

/** Whether each live microphone track the page opened is enabled (needs `recordMedia`). */
export function microphonesEnabled(page: Page): Promise<boolean[]> {
  return page.evaluate(() =>
    (window as unknown as { __media: { streams: MediaStream[] } }).__media.streams
      .flatMap((s) => s.getAudioTracks())
      .filter((t) => t.readyState === 'live')
      .map((t) => t.enabled),
  );
}

/** What the page still holds: track states, peer connection states, videos with a stream. */
export async function mediaState(page: Page) {
  return page.evaluate(() => {
    const m = (window as unknown as { __media: { streams: MediaStream[]; pcs: RTCPeerConnection[] } }).__media;
    return {
      streams: m.streams.length,
      liveTracks: m.streams.flatMap((s) => s.getTracks()).filter((t) => t.readyState !== 'ended').length,
      tracks: m.streams.flatMap((s) => s.getTracks()).length,
      openPeerConnections: m.pcs.filter((pc) => pc.connectionState !== 'closed').length,
      peerConnections: m.pcs.length,
      videosWithStream: [...document.querySelectorAll('video')].filter((v) => v.srcObject !== null).length,
    };
  });
}

/** The tile of one participant (CONTRACT.md: `participant-tile` with `data-participant-id`). */
export function tile(page: Page, participantId: string) {
  return page.locator(`[data-testid="participant-tile"][data-participant-id="${participantId}"]`);
}

/** Whether the video in a participant's tile is decoding new frames (and carries audio). */
export async function mediaFlowing(page: Page, participantId: string): Promise<{ frames: boolean; audio: boolean }> {
  return page.evaluate(async (id) => {
    const video = document.querySelector<HTMLVideoElement>(
      `[data-testid="participant-tile"][data-participant-id="${id}"] video`,
    );
    const stream = video?.srcObject as MediaStream | null;
    if (!video || !stream) return { frames: false, audio: false };
    const audio = stream.getAudioTracks().some((t) => t.readyState === 'live');
    const before = video.getVideoPlaybackQuality().totalVideoFrames;
    await new Promise((resolve) => setTimeout(resolve, 700));
    return { frames: video.getVideoPlaybackQuality().totalVideoFrames > before, audio };
  }, participantId);
}

/**
 * What the page receives of a participant's camera, from its connection's
 * `inbound-rtp` stats: frames decoded, freezes (Chromium's own count) and
 * the frame width now (all 0 before the video is there).
 */
export async function receivedVideo(page: Page, participantId: string) {
  return page.evaluate(async (id) => {
    const video = document.querySelector<HTMLVideoElement>(
      `[data-testid="participant-tile"][data-participant-id="${id}"] video`,
    );
    const track = (video?.srcObject as MediaStream | null)?.getVideoTracks()[0];
    const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
    const pc = pcs[pcs.length - 1];
    if (!track || !pc) return { frames: 0, freezes: 0, width: 0, codec: '' };
    const stats = [...(await pc.getStats()).values()] as Record<string, unknown>[];
    const s = stats.find((x) => x.type === 'inbound-rtp' && x.trackIdentifier === track.id);
    const codec = stats.find((x) => x.type === 'codec' && x.id === s?.codecId);
    return {
      frames: Number(s?.framesDecoded ?? 0),
      freezes: Number(s?.freezeCount ?? 0),
      width: Number(s?.frameWidth ?? 0),
      codec: String(codec?.mimeType ?? ''),
    };
  }, participantId);
}
