import { createRoom, expect, join, liveCounts, mediaFlowing, open, roomResources, test, tile, type Joined } from './helpers';

test('three people see and hear each other through the SFU; a leaver disappears everywhere', async ({
  newPage,
  request,
}) => {
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
