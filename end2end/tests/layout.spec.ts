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
  // The microphone switched from is stopped (released, its light out).
  const liveLabels = () =>
    ada.evaluate(() =>
      (window as unknown as { __media: { streams: MediaStream[] } }).__media.streams
        .flatMap((s) => s.getAudioTracks())
        .filter((t) => t.readyState === 'live')
        .map((t) => t.label),
    );
  await expect.poll(liveLabels).not.toContain(before!.label);
  const speakers = ada.getByTestId('speaker-select');
  const output = await speakers.locator('option').nth(1).getAttribute('value');
  await speakers.selectOption(output!);
  await expect
    .poll(() => tile(ada, b.participant_id).locator('video').evaluate((v) => (v as HTMLMediaElement & { sinkId: string }).sinkId))
    .toBe(output);

  // A device lost mid-call (its track ends without the page stopping it,
  // as when it is unplugged): another takes over, with a notice; the call
  // goes on and the new track is what the server receives.
  const sent = (kind: string) =>
    ada.evaluate((kind) => {
      const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
      const track = pcs[pcs.length - 1].getSenders().find((s) => s.track?.kind === kind)?.track;
      return track ? { id: track.id, live: track.readyState === 'live' } : null;
    }, kind);
  for (const [kind, what] of [['audio', 'microphone'], ['video', 'camera']] as const) {
    const lost = await sent(kind);
    expect(lost?.live).toBe(true);
    await ada.evaluate((kind) => {
      const pcs = (window as unknown as { __media: { pcs: RTCPeerConnection[] } }).__media.pcs;
      pcs[pcs.length - 1].getSenders().find((s) => s.track?.kind === kind)!.track!.stop();
    }, kind);
    await expect(ada.getByText(`Your ${what} was disconnected. Now using`)).toBeVisible();
    await expect.poll(async () => (await sent(kind))?.live).toBe(true);
    expect((await sent(kind))!.id).not.toBe(lost!.id);
  }
  await expect(ada.getByTestId('connection-status')).toHaveAttribute('data-state', 'connected');

  // Speaker view and a pin on a phone (390×844): the featured tile is the large one.
  await ada.setViewportSize({ width: 390, height: 844 });
  await ada.getByTestId('device-settings').click();
  await ada.getByTestId('layout-toggle').click();
  await expect(tiles).toHaveAttribute('data-layout', 'speaker');
  await expect(featured).toHaveAttribute('data-participant-id', b.participant_id);
  const unfeatured = ada.locator('[data-testid="participant-tile"][data-featured="false"]');
  const [big, small] = [(await featured.boundingBox())!, (await unfeatured.boundingBox())!];
  expect(big.width * big.height).toBeGreaterThan(2 * small.width * small.height);
  await tile(ada, a.participant_id).getByTestId('pin').click();
  await expect(featured).toHaveAttribute('data-participant-id', a.participant_id);
});
