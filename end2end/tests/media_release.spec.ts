import { createRoom, expect, join, mediaState, recordMedia, test } from './helpers';

test('the pre-join preview stops its camera when the screen goes, and Leave releases every track', async ({
  newContext,
}) => {
  const context = await newContext();
  await recordMedia(context);
  const page = await context.newPage();
  await createRoom(page, 'Ada');

  // The preview shows the camera.
  await expect.poll(async () => (await mediaState(page)).videosWithStream).toBe(1);
  const preview = await mediaState(page);
  expect(preview.streams).toBe(1);
  expect(preview.liveTracks).toBe(2);

  await join(page);
  // The preview's stream is stopped once the pre-join screen is gone; the call holds its own.
  await expect.poll(async () => (await mediaState(page)).streams).toBe(2);
  await expect
    .poll(async () => page.evaluate(() => (window as any).__media.streams[0].getTracks().map((t: MediaStreamTrack) => t.readyState)))
    .toEqual(['ended', 'ended']);

  await page.getByTestId('leave-button').click();
  await page.waitForURL((url) => url.pathname === '/');
  await expect.poll(async () => mediaState(page)).toMatchObject({ liveTracks: 0, openPeerConnections: 0, videosWithStream: 0 });
  const after = await mediaState(page);
  expect(after.peerConnections).toBeGreaterThan(0);
});
