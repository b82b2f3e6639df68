import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Page } from '@playwright/test';
import config from '../playwright.config';
import {
  createRoom,
  expect,
  join,
  mediaFlowing,
  microphonesEnabled,
  open,
  recordMedia,
  roomResources,
  sessionResources,
  test,
  tile,
  twoInRoom,
  type Joined,
} from './helpers';

/** Asks to join a private room; returns the server's answer once waiting. */
async function knock(page: Page, name: string): Promise<Joined> {
  await expect(page.getByTestId('prejoin')).toBeVisible();
  await page.getByTestId('display-name').fill(name);
  const answer = page.waitForResponse((r) => r.url().endsWith('/api/join') && r.request().method() === 'POST');
  await page.getByTestId('join-button').click();
  const joined = (await (await answer).json()) as Joined;
  expect(joined.state).toBe('pending');
  await expect(page.getByTestId('waiting-for-approval')).toBeVisible();
  return joined;
}

function request(page: Page, participantId: string) {
  return page.locator(`[data-testid="pending-request"][data-participant-id="${participantId}"]`);
}

function listed(page: Page, participantId: string) {
  return page.getByTestId('participant-list').locator(`[data-participant-id="${participantId}"]`);
}

test('private room: knock, the admin approves, the requester is in the call', async ({ newPage, request: api }) => {
  const ada = await newPage();
  const bob = await newPage();
  const code = await createRoom(ada, 'Ada', { private: true });
  await join(ada);
  await open(bob, `/r/${code}`);
  const b = await knock(bob, 'Bob');

  await expect(request(ada, b.participant_id)).toContainText('Bob');
  expect((await roomResources(api, code)).room).toMatchObject({ participants: 1, pending: 1 });
  await request(ada, b.participant_id).getByTestId('approve').click();

  await expect(bob.getByTestId('call')).toBeVisible();
  for (const page of [ada, bob]) await expect(page.getByTestId('participant-tile')).toHaveCount(2);
  await expect(request(ada, b.participant_id)).toHaveCount(0);
  await expect.poll(async () => (await mediaFlowing(ada, b.participant_id)).frames, { timeout: 15_000 }).toBe(true);
  expect((await roomResources(api, code)).room).toMatchObject({ participants: 2, pending: 0, db_participants: 2 });
});

test('private room: knock, the admin denies, the requester is told', async ({ newPage, request: api }) => {
  const ada = await newPage();
  const bob = await newPage();
  const code = await createRoom(ada, 'Ada', { private: true });
  await join(ada);
  await open(bob, `/r/${code}`);
  const b = await knock(bob, 'Bob');

  await request(ada, b.participant_id).getByTestId('deny').click();
  await expect(bob.getByTestId('prejoin')).toBeVisible();
  await expect(bob.getByTestId('prejoin')).toContainText('declined your request');
  await expect(request(ada, b.participant_id)).toHaveCount(0);
  await expect
    .poll(async () => sessionResources(api, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'denied' });
});

test('private room: the requester closes the tab, the request disappears', async ({ newPage, request: api }) => {
  const ada = await newPage();
  const bob = await newPage();
  const code = await createRoom(ada, 'Ada', { private: true });
  await join(ada);
  await open(bob, `/r/${code}`);
  const b = await knock(bob, 'Bob');
  await expect(request(ada, b.participant_id)).toHaveCount(1);

  await bob.close({ runBeforeUnload: true });
  await expect(request(ada, b.participant_id)).toHaveCount(0, { timeout: 2_000 });
  await expect.poll(async () => (await roomResources(api, code)).room).toMatchObject({ pending: 0, participants: 1 });
  expect(await sessionResources(api, b.session_id)).toMatchObject({ live: false, store_entries: [], db_row: false });
});

test('the admin removes a participant; others are refused the controls', async ({
  newContext,
  newPage,
  request: api,
}) => {
  const ada = await newPage();
  const bobContext = await newContext();
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  const { code, a, b } = await twoInRoom(ada, bob);

  // Only the admin sees kick and mute on the others' tiles.
  await expect(tile(bob, a.participant_id).getByTestId('kick')).toHaveCount(0);
  await expect(tile(ada, a.participant_id).getByTestId('kick')).toHaveCount(0);
  await tile(ada, b.participant_id).getByTestId('kick').click();

  await expect(bob.getByTestId('prejoin')).toContainText('removed you');
  await expect(tile(ada, b.participant_id)).toHaveCount(0);
  await expect
    .poll(async () => sessionResources(api, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'kicked' });
  expect((await roomResources(api, code)).room).toMatchObject({ participants: 1, db_participants: 1 });

  // Removed, Bob's camera stays off (no camera opened) and he may only ask to
  // come back; the host decides.
  await expect(bob.getByTestId('prejoin-camera')).toHaveAttribute('aria-pressed', 'true');
  await expect(bob.getByTestId('camera-off-note')).toBeVisible();
  // Live camera tracks, each once (a track turned on joins the call's stream too).
  const liveCameras = () =>
    bob.evaluate(
      () =>
        new Set(
          (window as unknown as { __media: { streams: MediaStream[] } }).__media.streams
            .flatMap((s) => s.getVideoTracks())
            .filter((t) => t.readyState === 'live')
            .map((t) => t.id),
        ).size,
    );
  await expect.poll(liveCameras).toBe(0);
  const answer = bob.waitForResponse((r) => r.url().endsWith('/api/join') && r.request().method() === 'POST');
  await bob.getByTestId('join-button').click();
  const again = (await (await answer).json()) as Joined;
  expect(again.state).toBe('pending');
  await expect(bob.getByTestId('waiting-for-approval')).toBeVisible();
  await expect(ada.getByTestId('pending-request')).toHaveCount(1);
  await ada.getByTestId('approve').click();
  await expect(bob.getByTestId('call')).toBeVisible();
  // In the call with the camera off, as chosen: off for everybody; turned on, it is sent.
  await expect(bob.getByTestId('mute-video')).toHaveAttribute('aria-pressed', 'true');
  expect(await liveCameras()).toBe(0);
  await bob.getByTestId('mute-video').click();
  await expect(bob.getByTestId('mute-video')).toHaveAttribute('aria-pressed', 'false');
  await expect.poll(liveCameras).toBe(1);
  await expect.poll(async () => (await mediaFlowing(ada, again.participant_id)).frames).toBe(true);
});

test('the admin mutes a participant; they see it and may unmute', async ({ newContext, newPage }) => {
  const ada = await newPage();
  const bobContext = await newContext();
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  const { b } = await twoInRoom(ada, bob);

  await tile(ada, b.participant_id).getByTestId('mute-participant').click();
  await expect(bob.getByTestId('mute-audio')).toHaveAttribute('aria-pressed', 'true');
  await expect(listed(ada, b.participant_id)).toContainText('muted');
  const enabled = () => microphonesEnabled(bob);
  await expect.poll(enabled).toEqual([false]);

  await bob.getByTestId('mute-audio').click();
  await expect(bob.getByTestId('mute-audio')).toHaveAttribute('aria-pressed', 'false');
  await expect(listed(ada, b.participant_id)).not.toContainText('muted');
  await expect.poll(enabled).toEqual([true]);
});

test('own camera off turns the camera light off; peers see it; on again', async ({ newContext, newPage }) => {
  const ada = await newPage();
  const bobContext = await newContext();
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  const { b } = await twoInRoom(ada, bob);
  await expect.poll(async () => (await mediaFlowing(ada, b.participant_id)).frames, { timeout: 15_000 }).toBe(true);

  // Distinct camera tracks still live (a track may sit in two recorded streams).
  const liveVideo = () =>
    bob.evaluate(
      () =>
        new Set(
          (window as unknown as { __media: { streams: MediaStream[] } }).__media.streams
            .flatMap((s) => s.getVideoTracks())
            .filter((t) => t.readyState === 'live'),
        ).size,
    );
  await bob.getByTestId('mute-video').click();
  await expect(tile(ada, b.participant_id)).toHaveClass(/camera-off/);
  await expect.poll(liveVideo).toBe(0);

  await bob.getByTestId('mute-video').click();
  await expect(tile(ada, b.participant_id)).not.toHaveClass(/camera-off/);
  await expect.poll(liveVideo).toBe(1);
  await expect.poll(async () => (await mediaFlowing(ada, b.participant_id)).frames, { timeout: 30_000 }).toBe(true);
});

test('the admin ends the meeting for everyone', async ({ newPage, request: api }) => {
  const ada = await newPage();
  const bob = await newPage();
  const { code, b } = await twoInRoom(ada, bob);
  await expect(bob.getByTestId('end-meeting')).toHaveCount(0);

  // "End for all" asks first: Cancel changes nothing, the confirmation ends it.
  await ada.getByTestId('end-meeting').click();
  await expect(ada.getByTestId('confirm-dialog')).toContainText('End the meeting for everyone?');
  await expect(ada.getByTestId('confirm-yes')).toBeFocused();
  await ada.getByTestId('confirm-no').click();
  await expect(ada.getByTestId('confirm-dialog')).toHaveCount(0);
  await expect(bob.getByTestId('call')).toBeVisible();
  await ada.getByTestId('end-meeting').click();
  await ada.getByTestId('confirm-yes').click();
  for (const page of [ada, bob]) await expect(page.getByTestId('prejoin')).toContainText('ended the meeting');
  await expect
    .poll(async () => (await roomResources(api, code)).room)
    .toMatchObject({ participants: 0, pending: 0, store_keys: 0, db_participants: 0 });
  expect((await sessionResources(api, b.session_id)).leave_reason).toBe('room-ended');
  await bob.getByTestId('join-button').click();
  await expect(bob.getByTestId('prejoin')).toContainText('This meeting has ended.');
});

test('admin passes to the longest present on leave and on tab close', async ({ newPage }) => {
  const ada = await newPage();
  const bob = await newPage();
  const cy = await newPage();
  const { code, b } = await twoInRoom(ada, bob);
  await open(cy, `/r/${code}`);
  const c = await join(cy, 'Cy');

  await ada.getByTestId('leave-button').click();
  await expect(listed(cy, b.participant_id)).toContainText('host');
  await expect(bob.getByTestId('end-meeting')).toBeVisible();
  await expect(tile(bob, c.participant_id).getByTestId('kick')).toBeVisible();

  await bob.close({ runBeforeUnload: true });
  await expect(listed(cy, c.participant_id)).toContainText('host');
  await expect(cy.getByTestId('end-meeting')).toBeVisible();
});

test('raised hands queue in order and show on tiles', async ({ newPage }) => {
  const ada = await newPage();
  const bob = await newPage();
  const cy = await newPage();
  const { code, a, b } = await twoInRoom(ada, bob);
  await open(cy, `/r/${code}`);
  const c = await join(cy, 'Cy');

  await cy.getByTestId('raise-hand').click();
  await expect(tile(ada, c.participant_id)).toHaveAttribute('data-hand', 'true');
  await bob.getByTestId('raise-hand').click();
  await expect(tile(ada, b.participant_id)).toHaveAttribute('data-hand', 'true');
  await expect(tile(ada, a.participant_id)).toHaveAttribute('data-hand', 'false');
  const order = () =>
    ada.getByTestId('participant-list').getByTestId('participant').evaluateAll((els) =>
      els.map((e) => e.getAttribute('data-participant-id')),
    );
  await expect.poll(order).toEqual([c.participant_id, b.participant_id, a.participant_id]);

  await cy.getByTestId('raise-hand').click();
  await expect(tile(ada, c.participant_id)).toHaveAttribute('data-hand', 'false');
  await expect.poll(order).toEqual([b.participant_id, a.participant_id, c.participant_id]);
  await bob.getByTestId('leave-button').click();
  await expect(ada.locator('[data-testid="participant-tile"][data-hand="true"]')).toHaveCount(0);
});

test('the call fits a laptop and a phone screen', async ({ newPage }, testInfo) => {
  const ada = await newPage();
  const bob = await newPage();
  const code = await createRoom(ada, 'Ada');
  await join(ada);
  await open(bob, `/r/${code}`);
  await join(bob, 'Bob');
  await bob.getByTestId('raise-hand').click();
  for (const [w, h] of [
    [1280, 720],
    [390, 844],
  ]) {
    await ada.setViewportSize({ width: w, height: h });
    await expect(ada.getByTestId('participant-tile')).toHaveCount(2);
    const layout = await ada.evaluate(() => {
      const box = (el: Element) => el.getBoundingClientRect();
      const controls = [...document.querySelectorAll('.controls button')].map(box);
      const overlaps = controls.some((a, i) =>
        controls.some((b, j) => i < j && a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom),
      );
      const outside = [...document.querySelectorAll('.controls button, .tile, .call-bar > *')]
        .map(box)
        .some((r) => r.left < -1 || r.right > window.innerWidth + 1);
      return { overflowX: document.documentElement.scrollWidth > window.innerWidth, overlaps, outside };
    });
    expect(layout, `${w}x${h}`).toEqual({ overflowX: false, overlaps: false, outside: false });
    await ada.screenshot({ path: testInfo.outputPath(`call-${w}x${h}.png`), fullPage: true });
    await ada.screenshot({ path: `end2end/screenshots/call-${w}x${h}.png`, fullPage: true });
  }
});

/** A 2 s, 440 Hz tone at half scale (16-bit mono WAV): a steady "voice". */
function toneWav(): Buffer {
  const rate = 48_000;
  const samples = rate * 2;
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write('RIFF', 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write('WAVEfmt ', 8);
  wav.writeUInt32LE(16, 16);
  wav.writeUInt16LE(1, 20);
  wav.writeUInt16LE(1, 22);
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28);
  wav.writeUInt16LE(2, 32);
  wav.writeUInt16LE(16, 34);
  wav.write('data', 36);
  wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) wav.writeInt16LE(Math.round(16_000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  return wav;
}

test('the active speaker follows the one who is talking', async ({ request: api }, testInfo) => {
  test.setTimeout(120_000);
  // Chromium's default fake microphone only blips; this browser plays a steady tone.
  const tone = testInfo.outputPath('tone.wav');
  fs.mkdirSync(path.dirname(tone), { recursive: true });
  fs.writeFileSync(tone, toneWav());
  const launch = config.use?.launchOptions ?? {};
  const browser = await chromium.launch({
    ...launch,
    args: [...(launch.args ?? []), `--use-file-for-fake-audio-capture=${tone}`],
  });
  try {
    const ada = await (await browser.newContext({ baseURL: config.use?.baseURL })).newPage();
    const bob = await (await browser.newContext({ baseURL: config.use?.baseURL })).newPage();
    const code = await createRoom(ada, 'Ada');
    const a = await join(ada);
    await open(bob, `/r/${code}`);
    await join(bob, 'Bob');
    const b = (await bob.getByTestId('participant-tile').and(bob.locator('[data-self="true"]')).getAttribute(
      'data-participant-id',
    ))!;

    // Bob is silent (microphone off); Ada talks.
    await bob.getByTestId('mute-audio').click();
    for (const page of [ada, bob]) {
      await expect(tile(page, a.participant_id)).toHaveAttribute('data-speaking', 'true', { timeout: 20_000 });
      await expect(tile(page, b)).toHaveAttribute('data-speaking', 'false');
    }
    await expect(tile(bob, a.participant_id)).toHaveClass(/speaking/);

    // They swap: the speaker follows.
    await ada.getByTestId('mute-audio').click();
    await bob.getByTestId('mute-audio').click();
    for (const page of [ada, bob]) {
      await expect(tile(page, b)).toHaveAttribute('data-speaking', 'true', { timeout: 20_000 });
      await expect(tile(page, a.participant_id)).toHaveAttribute('data-speaking', 'false');
    }

    // The speaker leaves: cleared at once for the others.
    await bob.getByTestId('leave-button').click();
    await expect(ada.locator('[data-testid="participant-tile"][data-speaking="true"]')).toHaveCount(0);
    // Ada leaves too, so no session of this browser outlives the test.
    await ada.getByTestId('leave-button').click();
    await expect
      .poll(async () => (await roomResources(api, code)).room)
      .toMatchObject({ participants: 0, db_participants: 0, store_keys: 0 });
  } finally {
    await browser.close();
  }
});
