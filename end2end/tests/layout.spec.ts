import { expect, recordMedia, test, tile, twoInRoom } from './helpers';

// CONTRACT.md, "Meeting essentials": `layout-toggle` (grid / speaker view),
// `pin` on a tile, `copy-link`, and `device-settings` with `camera-select`,
// `microphone-select` and `speaker-select` in the call.
test('speaker view, pins, the room link, and devices changed in the call', async ({ newContext }) => {
  const adaContext = await newContext();
  await adaContext.grantPermissions(['clipboard-read', 'clipboard-write']);
  await recordMedia(adaContext);
  const ada = await adaContext.newPage();
  const bob = await (await newContext()).newPage();
  const { code, a, b } = await twoInRoom(ada, bob);
  const tiles = ada.locator('section[data-layout]');
  const featured = ada.locator('[data-testid="participant-tile"][data-featured="true"]');
  await expect(ada.getByTestId('participant-tile')).toHaveCount(2);

  // The grid: nobody featured.
  await expect(tiles).toHaveAttribute('data-layout', 'grid');
  await expect(featured).toHaveCount(0);

  // Speaker view: the other person (nobody is speaking) is featured.
  await ada.getByTestId('layout-toggle').click();
  await expect(ada.getByTestId('layout-toggle')).toHaveAttribute('aria-pressed', 'true');
  await expect(tiles).toHaveAttribute('data-layout', 'speaker');
  await expect(featured).toHaveCount(1);
  await expect(featured).toHaveAttribute('data-participant-id', b.participant_id);

  // Pinning her own tile features it instead; unpinning gives it back.
  const ownPin = tile(ada, a.participant_id).getByTestId('pin');
  await ownPin.click();
  await expect(ownPin).toHaveAttribute('aria-pressed', 'true');
  await expect(featured).toHaveAttribute('data-participant-id', a.participant_id);
  await ownPin.click();
  await expect(ownPin).toHaveAttribute('aria-pressed', 'false');
  await expect(featured).toHaveAttribute('data-participant-id', b.participant_id);

  // A pin holds in the grid too; back to the grid without one: nobody featured.
  await tile(ada, b.participant_id).getByTestId('pin').click();
  await ada.getByTestId('layout-toggle').click();
  await expect(tiles).toHaveAttribute('data-layout', 'grid');
  await expect(featured).toHaveAttribute('data-participant-id', b.participant_id);
  await tile(ada, b.participant_id).getByTestId('pin').click();
  await expect(featured).toHaveCount(0);
  // Bob's page is not affected by Ada's layout.
  await expect(bob.locator('section[data-layout]')).toHaveAttribute('data-layout', 'grid');

  // Copy link: the room's address is on the clipboard, and the page says so.
  await ada.getByTestId('copy-link').click();
  const link = `${new URL(ada.url()).origin}/r/${code}`;
  await expect(ada.getByText(`Link copied: ${link}`)).toBeVisible();
  expect(await ada.evaluate(() => navigator.clipboard.readText())).toBe(link);

  // Devices in the call (Chromium's fake devices: one camera, three
  // microphones, three outputs): another microphone replaces the track the
  // server receives; another output plays the others' sound.
  await ada.getByTestId('device-settings').click();
  await expect(ada.getByTestId('device-settings')).toHaveAttribute('aria-expanded', 'true');
  await expect(ada.getByTestId('camera-select')).toBeVisible();
  const microphones = ada.getByTestId('microphone-select');
  await expect(microphones.locator('option')).toHaveCount(3);
  const sentAudio = () =>
    ada.evaluate(() => {
      const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
      const sender = pcs[pcs.length - 1].getSenders().find((s) => s.track?.kind === 'audio');
      return sender?.track ? { label: sender.track.label, live: sender.track.readyState === 'live' } : null;
    });
  const before = await sentAudio();
  const other = (await microphones.locator('option').allTextContents()).find((l) => l !== before?.label)!;
  await microphones.selectOption({ label: other });
  await expect.poll(sentAudio).toEqual({ label: other, live: true });
  const speakers = ada.getByTestId('speaker-select');
  const output = await speakers.locator('option').nth(1).getAttribute('value');
  await speakers.selectOption(output!);
  await expect
    .poll(() => tile(ada, b.participant_id).locator('video').evaluate((v) => (v as HTMLMediaElement & { sinkId: string }).sinkId))
    .toBe(output);
});
