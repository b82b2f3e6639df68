import { createRoom, expect, join, liveCounts, mediaFlowing, open, roomResources, test, tile, type Joined } from './helpers';

test('three people see and hear each other through the SFU; a leaver disappears everywhere', async ({
  newPage,
  request,
}) => {
  // Three pages' encoders and decoders share two cores, and the check
  // below samples for 10 s: 46 s of the default 60 on a busy machine.
  test.setTimeout(90_000);
  const base = await liveCounts(request);
  const plus = (n: { sessions: number; peer_connections: number; tracks: number; forwarders: number }) => ({
    sessions: base.sessions + n.sessions,
    peer_connections: base.peer_connections + n.peer_connections,
    tracks: base.tracks + n.tracks,
    forwarders: base.forwarders + n.forwarders,
  });
  const pages = [await newPage(), await newPage(), await newPage()];
  const names = ['Ada', 'Bob', 'Cy'];
  const code = await createRoom(pages[0], names[0]);
  const joined: Joined[] = [await join(pages[0])];
  for (const i of [1, 2]) {
    await open(pages[i], `/r/${code}`);
    joined.push(await join(pages[i], names[i]));
  }

  // Everyone has three tiles, and the two remote videos decode frames and carry audio.
  for (const [i, page] of pages.entries()) {
    await expect(page.getByTestId('participant-tile')).toHaveCount(3);
    for (const [j, other] of joined.entries()) {
      if (i === j) continue;
      await expect
        .poll(async () => mediaFlowing(page, other.participant_id), { timeout: 20_000 })
        .toEqual({ frames: true, audio: true });
    }
  }
  // Stable video: over 10 s, at Ada, each remote <video> (the same element,
  // the same stream) only moves forward: its decoded-frame count and its
  // playback time never fall back, as they do when srcObject is re-assigned
  // (the element reloads). Sampled in the page every 250 ms.
  const samples = await pages[0].evaluate(async (ids) => {
    const videos = ids.map((id) =>
      document.querySelector<HTMLVideoElement>(`[data-testid="participant-tile"][data-participant-id="${id}"] video`),
    );
    const streams = videos.map((v) => v?.srcObject ?? null);
    const seen: { frames: number[]; times: number[]; sameElement: boolean; sameStream: boolean }[] = ids.map(() => ({
      frames: [],
      times: [],
      sameElement: true,
      sameStream: true,
    }));
    for (let t = 0; t < 40; t++) {
      ids.forEach((id, k) => {
        const now = document.querySelector<HTMLVideoElement>(
          `[data-testid="participant-tile"][data-participant-id="${id}"] video`,
        );
        seen[k].sameElement &&= now === videos[k];
        seen[k].sameStream &&= now?.srcObject === streams[k];
        seen[k].frames.push(now?.getVideoPlaybackQuality().totalVideoFrames ?? -1);
        seen[k].times.push(now?.currentTime ?? -1);
      });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return seen;
  }, [joined[1].participant_id, joined[2].participant_id]);
  for (const seen of samples) {
    expect(seen.sameElement && seen.sameStream).toBe(true);
    const never_back = (xs: number[]) => xs.every((x, i) => i === 0 || x >= xs[i - 1]);
    expect(never_back(seen.frames), `frames ${seen.frames.join(',')}`).toBe(true);
    expect(never_back(seen.times), `times ${seen.times.join(',')}`).toBe(true);
    expect(seen.frames[seen.frames.length - 1]).toBeGreaterThan(seen.frames[0]);
    expect(seen.times[seen.times.length - 1]).toBeGreaterThan(seen.times[0]);
  }

  // Each of 3 people publishes 2 tracks, each forwarded to the 2 others.
  expect(await liveCounts(request)).toMatchObject(plus({ sessions: 3, peer_connections: 3, tracks: 6, forwarders: 12 }));
  expect((await roomResources(request, code)).room).toMatchObject({ participants: 3, db_participants: 3 });

  // Cy leaves: the tile goes everywhere, and so do Cy's media resources.
  await pages[2].getByTestId('leave-button').click();
  for (const page of pages.slice(0, 2)) {
    await expect(tile(page, joined[2].participant_id)).toHaveCount(0, { timeout: 1_000 });
    await expect(page.getByTestId('participant-tile')).toHaveCount(2);
  }
  await expect
    .poll(async () => liveCounts(request))
    .toMatchObject(plus({ sessions: 2, peer_connections: 2, tracks: 4, forwarders: 4 }));
  // The two who stay still see each other.
  await expect.poll(async () => mediaFlowing(pages[0], joined[1].participant_id)).toEqual({ frames: true, audio: true });
  await expect.poll(async () => mediaFlowing(pages[1], joined[0].participant_id)).toEqual({ frames: true, audio: true });

  for (const page of pages.slice(0, 2)) await page.getByTestId('leave-button').click();
  await expect.poll(async () => liveCounts(request)).toMatchObject(plus({ sessions: 0, peer_connections: 0, tracks: 0, forwarders: 0 }));
  await expect
    .poll(async () => (await roomResources(request, code)).room)
    .toMatchObject({ participants: 0, store_keys: 0, db_participants: 0 });
});
