import type { APIRequestContext, Page } from '@playwright/test';
import { expect, join, liveCounts, open, recordMedia, test, twoInRoom } from './helpers';

// CONTRACT.md, "Meeting essentials": `share-screen` (toggle, `aria-pressed`);
// a share shows to everyone as `screen-tile` with `data-participant-id`,
// holding its `<video>`. Stopping it, or its sharer leaving by any exit,
// removes it everywhere at once.

/** Whether the screen tile's video on `page` decodes new frames. */
function screenFrames(page: Page): Promise<boolean> {
  return page.evaluate(async () => {
    const video = document.querySelector<HTMLVideoElement>('[data-testid="screen-tile"] video');
    if (!video?.srcObject) return false;
    const before = video.getVideoPlaybackQuality().totalVideoFrames;
    await new Promise((resolve) => setTimeout(resolve, 700));
    return video.getVideoPlaybackQuality().totalVideoFrames > before;
  });
}

/** The node's published tracks and forwarders. */
async function media(request: APIRequestContext) {
  const { tracks, forwarders } = await liveCounts(request);
  return { tracks, forwarders };
}

test('screen share: seen by everyone, released on every way it stops', async ({ newContext, request }) => {
  // Three browsers and five shares: longer than one call's budget on a busy machine.
  test.setTimeout(180_000);
  const pages: Page[] = [];
  for (let i = 0; i < 3; i++) {
    const context = await newContext();
    await recordMedia(context);
    pages.push(await context.newPage());
  }
  const [ada, bob, cy] = pages;
  const { code, b } = await twoInRoom(ada, bob);
  await open(cy, `/r/${code}`);
  await join(cy, 'Cy');
  // Three people, camera and microphone each, each forwarded to the two others.
  const calm = { tracks: 6, forwarders: 12 };
  // (Long enough for an earlier test's abrupt leavers to be removed.)
  await expect.poll(() => media(request), { timeout: 20_000 }).toEqual(calm);
  const share = async () => {
    await bob.getByTestId('share-screen').click();
    await expect(bob.getByTestId('share-screen')).toHaveAttribute('aria-pressed', 'true');
    for (const page of pages) {
      await expect(page.getByTestId('screen-tile')).toHaveAttribute('data-participant-id', b.participant_id);
    }
    // One more track, forwarded to the two others.
    await expect.poll(() => media(request)).toEqual({ tracks: 7, forwarders: 14 });
  };
  const goneEverywhere = async () => {
    for (const page of pages.filter((p) => !p.isClosed())) await expect(page.getByTestId('screen-tile')).toHaveCount(0);
  };

  // Shared: everybody sees it move, larger than a camera tile; the cameras go on.
  await share();
  // One layer of detail at a low frame rate.
  const capture = await bob.evaluate(() => {
    const track = (window as unknown as { __media: { screens: MediaStream[] } }).__media.screens.at(-1)!.getVideoTracks()[0];
    return { hint: track.contentHint, fps: track.getSettings().frameRate ?? 0 };
  });
  expect(capture.hint).toBe('detail');
  expect(capture.fps).toBeGreaterThan(0);
  expect(capture.fps).toBeLessThanOrEqual(15);
  for (const page of [ada, cy]) await expect.poll(() => screenFrames(page)).toBe(true);
  const screenBox = (await ada.getByTestId('screen-tile').boundingBox())!;
  const cameraBox = (await ada.getByTestId('participant-tile').first().boundingBox())!;
  expect(screenBox.width * screenBox.height).toBeGreaterThan(cameraBox.width * cameraBox.height);
  await expect(ada.getByTestId('participant-tile')).toHaveCount(3);

  // Stopped with the button.
  await bob.getByTestId('share-screen').click();
  await expect(bob.getByTestId('share-screen')).toHaveAttribute('aria-pressed', 'false');
  await goneEverywhere();
  await expect.poll(() => media(request)).toEqual(calm);
  const captureEnded = () =>
    bob.evaluate(() =>
      (window as unknown as { __media: { screens: MediaStream[] } }).__media.screens
        .flatMap((s) => s.getTracks())
        .every((t) => t.readyState === 'ended'),
    );
  expect(await captureEnded()).toBe(true);

  // Stopped by the browser ("Stop sharing" ends the capture's track).
  await share();
  await bob.evaluate(() =>
    (window as unknown as { __media: { screens: MediaStream[] } }).__media.screens.at(-1)!.getTracks()[0].stop(),
  );
  await goneEverywhere();
  await expect(bob.getByTestId('share-screen')).toHaveAttribute('aria-pressed', 'false');
  await expect.poll(() => media(request)).toEqual(calm);

  // Stopped by the host: only she has the button; Bob's capture ends and he is told.
  await share();
  await expect(cy.getByTestId('stop-share')).toHaveCount(0);
  await ada.getByTestId('stop-share').click();
  await goneEverywhere();
  await expect(bob.getByText('The host stopped your screen share.')).toBeVisible();
  await expect.poll(captureEnded).toBe(true);
  await expect.poll(() => media(request)).toEqual(calm);

  // The sharer leaves: his share goes with him, and all he published.
  await share();
  await bob.getByTestId('leave-button').click();
  await goneEverywhere();
  await expect.poll(() => media(request)).toEqual({ tracks: 4, forwarders: 4 });
});
